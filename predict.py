"""Class probabilities for new chips from one trained cell, with exactly the preprocessing the cell was trained with.

    python predict.py --cell runs/fusar/cnn/none/lr0.001/seed42 --input new_chips/          # a folder (or a .zip)
    python predict.py --cell runs/fusar/cnn/none/m10-clutter/lr0.001/seed42 \\
        --input data/prepared/opensarship/manifest.csv --split test                       # a prepared set's chips
    python predict.py --cell runs/.../m10/lr0.001/seed42 --input chips/ --spacing 10,10    # a folder, harmonised

Writes one CSV (atomically; default predictions_<input name>.csv in the current folder) in the format of a cell's
predictions_<set>.csv: path (as the manifest lists it, or inside the folder or zip), true (a manifest's class
column, when it has one), pred, prob_<Class> for every class of the cell.

The preprocessing is the cell's (its checkpoint.pt and record.json): its image size, its input variant (inputs.py),
its channels (single-channel 8-bit chips; a stacked cell's 2-channel (co, cross) TIFFs, dataset_prep.py --pol stack,
each channel resized whole). Every chip goes through inputs.transform with the per-chip arguments the grid's splits
get (data.chip_args: spacing, resolution, the padding's seed from the chip's sha1, the product), and the model runs
as in the grid's evaluation (engine.evaluate, the cell's --amp), so a prepared chip gets the grid's probabilities.
  raw, clutter     the whole chip resized to the image size: nothing else is needed.
  m<M>[-match]...  resampled from the chip's ground pixel spacing to square M-metre pixels: a manifest gives each
                   chip's own (spacing_row_m, spacing_col_m; dataset, scene, incidence_deg for SLC chips); a folder
                   or zip needs --spacing ROW_M,COL_M (one for all its chips), and -match also --dataset (the sensor).
  ...clutter       decibels over the chip's sea, read apart for Patch_Cal (dB) and amplitude chips: a folder or zip
                   needs --product uint8 or cal (a manifest's product column says it). Sentinel-1 weights: cal only.
Refused, with a message naming the file and the fix: a --cell that is not a finished cell; a chip of another channel
count than the cell's (RGB, a 2-band or multi-page TIFF) or not 8-bit (16-bit, float: prepare such chips with
dataset_prep.py); an input without the spacing or product the cell needs. A manifest's chips without spacing are
left out and counted, as the grid leaves them out of its splits. A file that cannot be decoded at all (damaged,
missing) is skipped, counted and named: one bad file must not cost the predictions of the others. The summary gives
the chips, the predicted class counts and the time.
"""

import argparse
import csv
import hashlib
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

import archives
import data
import engine
import inputs
import runs
import sets
import stacking
from chip_layout import Unreadable, image_layout
from cli import HelpFormatter, add_shared, int_at_least, run_main, writable
from models import CheckpointError, load_trained
from pretrained import WeightsUnavailableError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
DATASETS = ("opensarship", "fusar")  # the sensors inputs.chip_geometry knows the resolution of
PRODUCTS = ("uint8", "cal")  # what clutter radiometry tells apart (inputs._amplitude)
SPACING_COLUMNS = ("spacing_row_m", "spacing_col_m")
PROGRESS_MIN = 256  # chips from which a progress bar is shown
SHOWN = 5  # names listed per kind of problem in the summary
@dataclass
class Chip:
    path: str  # as written in the CSV
    label: str  # where it is, for messages
    read: object  # () -> bytes
    row: dict  # what data.chip_args reads: a manifest row, or the flags' row for a folder's chip
    true: str = ""


@dataclass
class Cell:
    folder: Path
    model: nn.Module
    classes: list
    img_size: int
    variant: inputs.Inputs
    record: dict
    amp: str


@dataclass
class Source:
    """The chips of an input, those the variant cannot show (left_out: (path, reason)), what was ignored."""
    chips: list
    has_true: bool = False
    left_out: list = field(default_factory=list)
    ignored: int = 0
    tree: object = None  # the folder or archive read, closed at the end


# ------------------------------------------------------------------------------------------------------------
# the cell

def cell_hint(folder):
    """Where the finished cells are, when `folder` holds a grid (or part of one) rather than one cell."""
    if not folder.is_dir():
        return ""
    found = sorted(p.parent for p in folder.rglob(runs.CHECKPOINT) if (p.parent / runs.RECORD).is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))  # no working folders
    return f" ({len(found)} under it, e.g. {found[0]})" if found else ""


def load_cell(folder, device):
    """The trained model of a finished cell folder and how it saw its chips; SystemExit naming what is wrong."""
    folder = Path(folder)
    missing = [name for name in (runs.CHECKPOINT, runs.RECORD) if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"--cell {folder} is not a finished cell of test_models.py (no {' or '.join(missing)} in "
                         "it): name one cell folder, runs/<train_set>/<model>/<imbalance>/[<inputs>/]lr<lr>/seed<k>"
                         + cell_hint(folder))
    try:
        record = runs.read_record(folder)
        model, ckpt = load_trained(folder / runs.CHECKPOINT, map_location=device)
    except (runs.RecordError, CheckpointError, WeightsUnavailableError) as e:
        raise SystemExit(str(e)) from None
    try:
        variant = inputs.Inputs.parse(record.get("inputs", inputs.RAW))
    except ValueError as e:
        raise SystemExit(f"{folder / runs.RECORD}: {e}: the record is damaged; retrain the cell (test_models.py "
                         "--force)") from None
    return Cell(folder, model, list(ckpt["classes"]), int(ckpt["img_size"]), variant, record,
                ckpt.get("args", {}).get("amp", "off"))


def needs_cal(cell):
    """Sentinel-1 weights read every chip as calibrated dB (models.Sentinel1Input): only Patch_Cal chips fit."""
    return cell.record.get("weights") == "sentinel1"


# ------------------------------------------------------------------------------------------------------------
# the input: a manifest, or a folder or zip of images

def read_manifest_rows(path, split):
    """The rows of a manifest (a CSV with a path column), those of `split` when given."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SystemExit(f"cannot read the manifest {path} ({type(e).__name__}: {e}): give a UTF-8 CSV with a "
                         "path column (dataset_prep.py's manifest.csv)") from None
    if "path" not in columns:
        raise SystemExit(f"{path} has no path column (columns: {', '.join(columns) or 'none'}): a manifest lists each "
                         "chip's path relative to its folder, as dataset_prep.py's manifest.csv does")
    if split is not None:
        if "split" not in columns:
            raise SystemExit(f"--split {split}: {path} has no split column; leave out --split")
        rows = [row for row in rows if row["split"] == split]
    if not rows:
        raise SystemExit(f"{path} lists no chips" + (f" of the {split} split: choose another --split, or leave it "
                                                     "out" if split else ""))
    return rows, columns


def manifest_chips(path, args, cell):
    """The chips a manifest lists (paths relative to its folder), without those the cell's inputs cannot show."""
    variant = cell.variant
    flags = [f for f, v in (("--spacing", args.spacing), ("--dataset", args.dataset), ("--product", args.product))
             if v is not None]
    if flags:
        one = len(flags) == 1
        raise SystemExit(f"{', '.join(flags)} {'is' if one else 'are'} for the chips of a folder or zip; the manifest "
                         f"{path} gives each chip's own ({', '.join(SPACING_COLUMNS)}, dataset, product columns): "
                         f"leave {'it' if one else 'them'} out")
    rows, columns = read_manifest_rows(path, args.split)
    needed = [c for c in SPACING_COLUMNS if c not in columns] if variant.m_per_px is not None else []
    needed += ["product"] if variant.radiometry == "clutter" and "product" not in columns else []
    if needed:
        raise SystemExit(f"{path} has no {', '.join(needed)} column(s), which the cell's inputs {variant.name} need "
                         f"({variant.describe()}): add them (ground pixel spacing in metres; product uint8 or cal), "
                         "or prepare the chips with dataset_prep.py")
    other = [row["path"] for row in rows if row.get("product") != "cal"]
    if needs_cal(cell) and other:
        raise SystemExit(f"{path}: {len(other)} chip(s) are not calibrated Patch_Cal chips (product column not cal, "
                         f"e.g. {other[0]}), and the cell's sentinel1 backbone reads every chip as calibrated dB: "
                         "prepare them with python dataset_prep.py --product cal")
    source = Source([], has_true="class" in columns and any(row["class"] for row in rows))
    for row in rows:
        reason = data.chip_args(row, variant)
        if isinstance(reason, str):
            source.left_out.append((row["path"], reason))
            continue
        file = path.parent / row["path"]
        source.chips.append(Chip(row["path"], str(file), file.read_bytes, row, row.get("class") or ""))
    if not source.chips:
        raise SystemExit(f"none of the {len(rows)} chips of {path} can be shown as {variant.name} "
                         f"({reason_counts(source.left_out)}): fill in their {', '.join(SPACING_COLUMNS)} (and "
                         "incidence_deg for SLC chips), or use a cell trained on raw inputs")
    return source


def folder_row(args, cell, where):
    """The manifest fields data.chip_args reads, for every chip of a folder or zip, from the flags; SystemExit
    naming the flag the cell's inputs need."""
    variant, m = cell.variant, cell.variant.m_per_px
    if m is not None and args.spacing is None:
        raise SystemExit(f"the cell's inputs {variant.name} resample every chip from its ground pixel spacing to "
                         f"square {m:g} m pixels, and {where} says nothing of its chips' spacing: give --spacing "
                         "ROW_M,COL_M (azimuth, range; e.g. --spacing 10,10 for Sentinel-1 IW GRD chips), or pass a "
                         f"manifest.csv with {' and '.join(SPACING_COLUMNS)} columns")
    if variant.match and args.dataset is None:
        raise SystemExit(f"the cell's inputs {variant.name} blur finer sensors to Sentinel-1 IW's resolution: say "
                         f"which sensor made the chips of {where} with --dataset {' or --dataset '.join(DATASETS)}")
    if variant.radiometry == "clutter" and args.product is None:
        raise SystemExit(f"the cell's inputs {variant.name} take decibels over the sea, which Patch_Cal chips (dB) and "
                         f"amplitude chips encode differently: say which the chips of {where} are with --product "
                         "uint8 (amplitude, Patch_Uint8 or FUSAR-Ship) or --product cal")
    if needs_cal(cell) and args.product != "cal":
        raise SystemExit(f"the cell's sentinel1 backbone reads every chip as calibrated dB (Patch_Cal): give "
                         f"--product cal if the chips of {where} are such chips (python dataset_prep.py --product cal "
                         "makes them)")
    row = {"dataset": args.dataset or "", "product": args.product or "uint8"}
    if args.spacing is not None:
        row.update(zip(SPACING_COLUMNS, map(str, args.spacing)))
    reason = data.chip_args(row, variant)
    if isinstance(reason, str):
        raise SystemExit(f"the chips of {where} cannot be shown as {variant.name}: {reason}")
    return row


def tree_chips(path, args, cell):
    """The image files of a folder or zip, every one with the flags' spacing, dataset and product."""
    if args.split is not None:
        raise SystemExit(f"--split selects rows of a manifest; {path} is a folder or archive: leave it out")
    tree = archives.open_tree(path)
    if isinstance(tree, archives.BrokenTree):
        raise SystemExit(f"--input: {tree.detail}")
    names = tree.names()
    if sets.MANIFEST in names:
        raise SystemExit(f"{path} is a prepared set (it holds {sets.MANIFEST}): pass --input "
                         f"{Path(path) / sets.MANIFEST}, which gives each chip's class and pixel spacing too"
                         + (" (unzip it first)" if Path(path).is_file() else ""))
    row = folder_row(args, cell, path)
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES) and not archives.is_junk(n)]
    refused = [n for n in tree.refused if n.lower().endswith(IMAGE_SUFFIXES)]
    if not images and not refused:
        raise SystemExit(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")

    def reader(name):
        def read():
            if name in tree.refused:
                raise Unreadable(tree.refused[name][1])
            return tree.read(name)
        return read

    chips = [Chip(n, tree.describe(n), reader(n), row) for n in sorted(images + refused)]
    return Source(chips, ignored=len(names) - len(images), tree=tree)


def input_chips(args, cell):
    path = Path(args.input)
    if not path.exists():
        raise SystemExit(f"--input {path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".csv":
        return manifest_chips(path, args, cell)
    try:
        return tree_chips(path, args, cell)
    except archives.DataError as e:
        raise SystemExit(f"{e}: give a folder or a zip of chip images, or a manifest.csv") from None


# ------------------------------------------------------------------------------------------------------------
# one chip

def chip_pixels(chip, cell):
    """The chip as the cell's model sees it: (S, S) uint8. Unreadable (skipped) or SystemExit (refused)."""
    try:
        content = chip.read()
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except archives.READ_ERRORS as e:
        raise Unreadable(f"cannot read it: {archives.clean_error(e)}") from None
    if cell.model.in_channels > 1:
        return stacked_pixels(chip, content, cell)
    problem, depth, pixels = image_layout(content)
    fix = ("save each chip as a single-channel 8-bit image (PNG or TIFF), as dataset_prep.py writes them, or "
           "prepare the chips with dataset_prep.py")
    if problem is not None:
        raise SystemExit(f"{chip.label}: {problem}, but the cell {cell.folder} takes single-channel chips: {fix} "
                         "(one polarisation per chip: dataset_prep.py --pol co or cross)")
    if depth is not None:
        raise SystemExit(f"{chip.label}: {depth}, but the cell {cell.folder} was trained on 8-bit chips: {fix}")
    row = chip.row if "sha1" in chip.row else {**chip.row, "sha1": hashlib.sha1(content).hexdigest()}
    spacing, resolution, seed, product = data.chip_args(row, cell.variant)
    return inputs.transform(pixels, spacing, resolution, cell.img_size, cell.variant, seed, product)


def stacked_pixels(chip, content, cell):
    """A stacked cell's chip, a 2-channel 8-bit TIFF (co, cross), as its model sees it: (2, S, S) uint8, each channel
    resized whole (stacked cells take raw inputs only)."""
    try:
        channels = stacking.read_tiff(content)
    except ValueError as e:
        if not isinstance(e, stacking.NotStacked):  # an image of another kind than TIFF, or a damaged file
            problem, _, _ = image_layout(content)  # Unreadable (skipped) when nothing decodes it
            e = problem or "a single-channel image"
        raise SystemExit(f"{chip.label}: {e}, but the cell {cell.folder} takes stacked (co, cross) chips: give the "
                         "chips of a set prepared with dataset_prep.py --pol stack") from None
    return np.stack([data.resize_whole(c, cell.img_size) for c in channels])


# ------------------------------------------------------------------------------------------------------------
# predicting and writing

def predict(cell, chips, batch_size, device):
    """(probabilities (N, K) of the chips read, those chips, [(path, reason)] of the chips skipped)."""
    precision = engine.Precision(cell.amp, device)
    kept, skipped, probs, batch = [], [], [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).to(device)  # (B, S, S) or (B, 2, S, S) uint8
        probs.append(engine.evaluate(cell.model, [(x, None)], device, precision))
        batch.clear()

    with tqdm(chips, unit="chip", disable=len(chips) < PROGRESS_MIN, dynamic_ncols=True) as bar:
        for chip in bar:
            try:
                batch.append(chip_pixels(chip, cell))
            except Unreadable as e:
                skipped.append((chip.path, str(e)))
                continue
            kept.append(chip)
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    return (np.concatenate(probs) if probs else np.zeros((0, len(cell.classes)), np.float32)), kept, skipped


def predictions_frame(chips, probs, classes, has_true):
    """The predictions_<set>.csv format of tables.write_test_results: path, [true], pred, prob_<Class>."""
    table = pd.DataFrame({"path": [c.path for c in chips]})
    if has_true:
        table["true"] = [c.true for c in chips]
    table["pred"] = np.asarray(classes, dtype=object)[probs.argmax(1)]
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, k]
    return table


def reason_counts(items):
    return "; ".join(f"{n} {reason}" for reason, n in Counter(r for _, r in items).most_common())


def named(items):
    shown = ", ".join(f"{path} ({reason})" for path, reason in items[:SHOWN])
    return shown + (f", and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def summary(args, cell, source, table, skipped, seconds, output):
    n = len(table)
    counts = table["pred"].value_counts()
    r = cell.record
    lines = [f"predict.py: {n} chip{'s' * (n != 1)} of {args.input} through {cell.folder} ({r['model']} trained on "
             f"{r['train_set']}, inputs {cell.variant.name}, {cell.img_size} px) in {seconds:.1f} s",
             "predicted: " + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in cell.classes)]
    if source.has_true:
        agree = int((table["true"] == table["pred"]).sum())
        lines.append(f"the manifest's class column agrees on {agree} of {n} ({100 * agree / n:.1f} %)")
    if source.left_out:
        lines.append(f"left out {len(source.left_out)} chip(s) the inputs {cell.variant.name} cannot show "
                     f"({reason_counts(source.left_out)}): {named(source.left_out)}")
    if skipped:
        lines.append(f"skipped {len(skipped)} file(s) that cannot be read (not in the CSV): {named(skipped)}")
    if source.ignored:
        lines.append(f"ignored {source.ignored} file(s) that are not images ({', '.join(IMAGE_SUFFIXES)})")
    lines.append(f"wrote {output} ({n} rows)")
    return "\n".join(lines)


def default_output(path):
    """predictions_<name>.csv: the input folder's or zip's name, or the name of the folder holding a manifest."""
    path = Path(path).resolve()
    name = path.parent.name if path.suffix.lower() == ".csv" else path.stem
    return Path(f"predictions_{name or 'input'}.csv")


def output_path(args):
    output = Path(args.output) if args.output else default_output(args.input)
    if output.resolve().parent == Path(args.cell).resolve():
        raise SystemExit(f"--output {output} lies in the cell folder, whose files are the grid's own (its "
                         "predictions_<set>.csv included): write it elsewhere")
    writable(output.resolve().parent, "--output")
    return output


# ------------------------------------------------------------------------------------------------------------
# command line

def spacing_type(text):
    """argparse type: ROW_M,COL_M, two positive numbers of metres."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected ROW_M,COL_M, two positive numbers of metres (e.g. 10,10), got "
                                         f"{text!r}")
    return tuple(values)


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Class probabilities for new chips from one trained cell",
                                     add_help=add_help, formatter_class=HelpFormatter)
    parser.add_argument("--cell", required=True,
                        help="a finished cell folder: runs/<train_set>/<model>/<imbalance>/[<inputs>/]lr<lr>/seed<k>")
    parser.add_argument("--input", required=True,
                        help="the chips: a folder or zip of single-channel 8-bit images, or a manifest.csv (paths "
                             "relative to its folder; a class column gives the true column)")
    parser.add_argument("--output", default=None,
                        help="the CSV to write (default: predictions_<input name>.csv in the current folder)")
    parser.add_argument("--split", default=None, choices=sets.SPLITS,
                        help="with a manifest: only its chips of this split (default: every row)")
    parser.add_argument("--spacing", type=spacing_type, default=None, metavar="ROW_M,COL_M",
                        help="a folder's or zip's chips: their ground pixel spacing in metres (azimuth, range), "
                             "which m<M> inputs need")
    parser.add_argument("--dataset", default=None, choices=DATASETS,
                        help="a folder's or zip's chips: the sensor (Sentinel-1 or Gaofen-3), which -match inputs need")
    parser.add_argument("--product", default=None, choices=PRODUCTS,
                        help="a folder's or zip's chips: uint8 (amplitude) or cal (Patch_Cal dB), which clutter "
                             "inputs and Sentinel-1 weights need")
    add_shared(parser, "device")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64,
                        help="chips per forward pass (the probabilities do not depend on it)")
    return parser


def main(args):
    start = time.perf_counter()
    device = engine.resolve_device(args.device)
    output = output_path(args)
    cell = load_cell(args.cell, device)
    source = input_chips(args, cell)
    try:
        probs, kept, skipped = predict(cell, source.chips, args.batch_size, device)
    finally:
        if source.tree is not None:
            source.tree.close()
    if not kept:
        raise SystemExit(f"none of the {len(source.chips)} chips of {args.input} could be read: {named(skipped)}")
    table = predictions_frame(kept, probs, cell.classes, source.has_true)
    # six decimals, as the grid writes its predictions
    runs.write_atomic(output, lambda p: table.to_csv(p, index=False, float_format="%.6f", lineterminator="\n"))
    print(summary(args, cell, source, table, skipped, time.perf_counter() - start, output), flush=True)
    return table


if __name__ == "__main__":
    run_main("predict.py", lambda: main(get_args_parser().parse_args(sys.argv[1:])),
             kept="nothing was written (the CSV is written at the end)")
