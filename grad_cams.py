"""Stage 3: Grad-CAM heat maps of the models of a finished grid, and how much of each map falls on the ship.

Commands (after dataset_prep.py and test_models.py):

    python grad_cams.py                                     # grid under ./runs, sets under data/prepared
    python grad_cams.py --run-dir . --data-dir data/prepared --exp-dir Exp_images --per-class 15
    python grad_cams.py --datasets fusar --models vgg,resnet --method gradcam++ --device cuda
    python grad_cams.py --imbalance weighted --train-seed 1  # explain another cell of the grid

For every prepared set (`<data-dir>/<set>/manifest.csv`) and every model trained on that same set (the
grid cell `<run-dir>/runs/<set>/<model>/<imbalance>/seed<k>/` with record.json and checkpoint.pt; by
default imbalance `none` and the smallest seed there), it explains `--per-class` test chips per class.
The chips are drawn from the manifest (seeded, one chip per ship group first, the same for every model
and every rerun), decoded with data.load_split at the checkpoint's img_size (exactly the training
preprocessing) and explained for the class the model predicts, at the target layer the model declares
(models.py `cam_target_layer`; for ResNet the last bottleneck block, never the final pooling, whose 1x1
map gives uniform heat maps: defect 11 of the published code).

Outputs under --exp-dir (default Exp_images):
  <set>/<model>/<Class>_o<i>.png   the chip as the model saw it (i = 0, 1, ... within the class)
  <set>/<model>/<Class>_hm<i>.png  the heat map over the chip (pytorch-grad-cam show_cam_on_image)
  cam_scores.csv                   one row per chip and model: set, model, path, true, pred,
                                   on_ship_energy, peak_on_ship, ship_area_fraction, region_source, then
                                   the file index i, the grid cell, and whether pred agrees with the
                                   cell's own predictions_<set>.csv (it does when preprocessing matches)
  cam_summary.csv                  per set and model: mean on-ship energy, uniform baseline, lift, peaks
  figures/cam_grid_<set>.png       chips in rows (--figure-per-class per class), a column per model, each
                                   cell titled with the true and predicted class; ship region outlined
  figures/cam_on_ship.png          mean on-ship energy per model and set against the uniform baseline
Exit status 1 when nothing could be explained (every problem is printed).

On-ship score of a map M (the [0, 1] map pytorch-grad-cam returns, at the model's input size) and the
ship region R: on_ship_energy = sum(M on R) / sum(M); peak_on_ship = whether argmax(M) lies in R;
ship_area_fraction = |R| / |chip|, which is what a uniform map scores (lift = on_ship_energy /
ship_area_fraction; 1 = no better than uniform). An all-zero map (a CAM negative everywhere, or constant)
has no energy: its scores are left empty and it is not counted in n_scored.
R is built at the chip's native resolution, then box-resized to the map size (a pixel is ship if at
least half of it is), from the best source the manifest offers, recorded in region_source:
  mask          the exact sidecar mask (synthetic chips; manifest `mask` column)
  head_tail     OpenSARShip: the segment from the Ship.xml head to tail (head_row/col, tail_row/col),
                widened to the AIS width (ship_width_m), measured in metres with the pixel spacing
                (spacing_row_m, spacing_col_m) so anisotropic SLC pixels are handled; a pixel is ship if
                its centre lies within half the width, or within half a pixel diagonal (so every pixel
                the centre line crosses counts)
  head_tail_est_width   the same where the AIS width is unknown or zero: width = 0.15 x the head-tail
                length (beam / length of merchant ships is about 1/7 to 1/6)
  centre_disc   FUSAR-Ship (ships sit at the chip centre, heading unknown): a disc around the chip
                centre, in metres, of diameter sqrt(length^2 + width^2) (ship_length_m, ship_width_m),
                the smallest centred shape that holds the ship whatever its heading
  none          nothing known: scores left empty
"""
import argparse
import re
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tqdm import tqdm

import data
import models

# ----------------------------------------------------------------------------------------------------------
# Defaults
PER_CLASS = 15              # test chips explained per class, per set, per model (the study's 15)
FIGURE_PER_CLASS = 4        # chips per class in the per-set figure (every chip still gets its PNGs)
STUDY_SETS = ("fusar", "opensarship", "mixed")   # the order the study (and test_models.py) presents them
IMBALANCE = "none"          # which grid cell to explain by default (the study trained without rebalancing)
EST_WIDTH_RATIO = 0.15      # width / length where OpenSARShip gives no AIS width
# pytorch-grad-cam methods that explain one declared target layer of a classifier. Left out: fullgrad
# (ignores the target layer and uses every bias), refinecam and sess (meta-methods over several layers
# or rescaled crops).
METHODS = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "gradcamelementwise": GradCAMElementWise,
    "eigencam": EigenCAM,           # class-agnostic: first principal component of the activations
    "eigengradcam": EigenGradCAM,
    "kpcacam": KPCA_CAM,            # class-agnostic
    "fem": FEM,                     # class-agnostic
    "scorecam": ScoreCAM,           # one forward pass per channel: slow on CPU
    "ablationcam": AblationCAM,     # one forward pass per channel: slow on CPU
    "shapleycam": ShapleyCAM,
    "finercam": FinerCAM,           # predicted class contrasted with the classes the model finds most similar
    "randomcam": RandomCAM,         # random channel weights: a sanity baseline for the on-ship score
}
SCORE_COLUMNS = ["set", "model", "path", "true", "pred", "on_ship_energy", "peak_on_ship",
                 "ship_area_fraction", "region_source", "index", "cell", "agrees_with_grid"]
# ----------------------------------------------------------------------------------------------------------


def _comma_list(valid=None):
    """argparse type for comma-separated values (as in test_models.py); a bad one names the valid ones."""

    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if valid is not None and v not in valid]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"invalid {text!r}; valid: {', '.join(valid or ['any names'])}")
        return list(dict.fromkeys(values))

    return parse


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description="Grad-CAM heat maps of a finished grid, scored on the ship",
                                add_help=add_help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", default=".", help="where test_models.py wrote its records (its --output-dir)")
    p.add_argument("--data-dir", default="data/prepared", help="prepared sets written by dataset_prep.py")
    p.add_argument("--exp-dir", default="Exp_images", help="output folder for images, scores and figures")
    p.add_argument("--datasets", type=_comma_list(), default=None,
                   help="prepared sets to explain, comma-separated (default: every set under --data-dir)")
    p.add_argument("--models", type=_comma_list(models.MODEL_NAMES), default=list(models.MODEL_NAMES),
                   help=f"models, comma-separated, from {', '.join(models.MODEL_NAMES)}")
    p.add_argument("--per-class", type=int, default=PER_CLASS, help="test chips explained per class")
    p.add_argument("--method", default="gradcam", choices=list(METHODS), help="pytorch-grad-cam method")
    p.add_argument("--imbalance", default=IMBALANCE,
                   help="imbalance strategy of the grid cell to explain (folder under runs/<set>/<model>/)")
    p.add_argument("--train-seed", type=int, default=None,
                   help="training seed of the grid cell to explain (default: the smallest seed found)")
    p.add_argument("--figure-per-class", type=int, default=FIGURE_PER_CLASS,
                   help="chips per class shown in figures/cam_grid_<set>.png")
    p.add_argument("--batch-size", type=int, default=16, help="chips per CAM batch")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA if available, else CPU")
    p.add_argument("--seed", type=int, default=0, help="seed of the chip selection (and of randomcam)")
    return p


def resolve_device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available here: use --device cpu or "
                         "--device auto")
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


# -------------------------------------------------------------------------------------------- chip selection
def read_manifest(set_dir):
    """The set's manifest as strings ('' where unknown), so empty numeric cells stay recognisable."""
    return pd.read_csv(Path(set_dir) / "manifest.csv", dtype=str, keep_default_na=False)


def select_chips(manifest, per_class, seed):
    """{class: [manifest rows]}: `per_class` test chips per class, chosen from the manifest alone.

    Seeded per class (by the class name, so adding a class does not reshuffle the others); within a class
    the shuffled chips are taken one per ship group first (group = MMSI or scene position), so twin chips
    of one ship (GRD and SLC of one acquisition) appear only when a class has fewer groups than asked.
    Returns (selection, messages) where messages name classes with fewer chips than asked.
    """
    test = manifest[manifest["split"] == "test"].sort_values("path")
    selection, messages = {}, []
    for cls in sorted(test["class"].unique()):
        rows = test[test["class"] == cls].reset_index(drop=True)
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode())])
        order = rng.permutation(len(rows))
        shuffled = rows.iloc[order].reset_index(drop=True)
        group = shuffled["group"].where(shuffled["group"] != "", shuffled["path"])
        rank_in_group = group.groupby(group).cumcount()
        chosen = shuffled.assign(_r=rank_in_group, _o=np.arange(len(shuffled)))
        chosen = chosen.sort_values(["_r", "_o"]).head(per_class).drop(columns=["_r", "_o"])
        if len(chosen) < per_class:
            messages.append(f"class {cls} has only {len(chosen)} test chips (asked {per_class}): "
                            "using all of them")
        selection[cls] = [row for _, row in chosen.iterrows()]
    return selection, messages


# ----------------------------------------------------------------------------------------------- ship region
def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def segment_region(shape, head, tail, width_m, spacing):
    """Pixels (H, W) within width_m/2 of the head-tail segment, measured in metres; head/tail = (row, col)."""
    sr, sc = spacing
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    py, px = rows * sr, cols * sc                                     # pixel centres in metres
    ay, ax, by, bx = head[0] * sr, head[1] * sc, tail[0] * sr, tail[1] * sc
    dy, dx = by - ay, bx - ax
    length2 = dy * dy + dx * dx
    if length2 == 0:   # head == tail: a point, the region is a disc of the ship's width
        t = np.zeros_like(py, dtype=float)
    else:              # position of each pixel's projection along the segment, clipped to its ends
        t = np.clip(((py - ay) * dy + (px - ax) * dx) / length2, 0, 1)
    dist = np.hypot(py - (ay + t * dy), px - (ax + t * dx))
    # Half a pixel diagonal: every pixel the centre line crosses has its centre that close to the line.
    return dist <= max(width_m / 2, 0.5 * np.hypot(sr, sc))


def disc_region(shape, diameter_m, spacing):
    """Pixels (H, W) within diameter_m/2 of the chip centre, measured in metres."""
    sr, sc = spacing
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    dist = np.hypot((rows - (shape[0] - 1) / 2) * sr, (cols - (shape[1] - 1) / 2) * sc)
    return dist <= max(diameter_m / 2, 0.5 * np.hypot(sr, sc))


def native_region(row, set_dir):
    """(region bool (H, W) at the chip's native size or None, region_source) for one manifest row."""
    set_dir = Path(set_dir)
    if row.get("mask", ""):
        with Image.open(set_dir / row["mask"]) as m:
            return np.asarray(m.convert("L")) >= 128, "mask"
    h, w = _num(row.get("chip_h")), _num(row.get("chip_w"))
    if not (h > 0 and w > 0):
        with Image.open(set_dir / row["path"]) as im:
            w, h = im.size
    shape = (int(h), int(w))
    spacing = (_num(row.get("spacing_row_m")), _num(row.get("spacing_col_m")))
    spacing_ok = all(s > 0 for s in spacing)
    length, width = _num(row.get("ship_length_m")), _num(row.get("ship_width_m"))
    head = (_num(row.get("head_row")), _num(row.get("head_col")))
    tail = (_num(row.get("tail_row")), _num(row.get("tail_col")))
    if spacing_ok and not np.isnan(head + tail).any():
        if width > 0:
            return segment_region(shape, head, tail, width, spacing), "head_tail"
        seg_len = np.hypot((head[0] - tail[0]) * spacing[0], (head[1] - tail[1]) * spacing[1])
        return segment_region(shape, head, tail, EST_WIDTH_RATIO * seg_len, spacing), "head_tail_est_width"
    if spacing_ok and length > 0:
        return disc_region(shape, np.hypot(length, width if width > 0 else 0.0), spacing), "centre_disc"
    return None, "none"


def resize_region(region, size):
    """Box-resize a native region to (size, size), the geometry of data.load_split; a pixel is ship if at
    least half of it is. A ship below half an output pixel keeps its best-covered pixel, not none."""
    cover = np.asarray(Image.fromarray(region.astype(np.float32)).resize((size, size), Image.BOX))
    out = cover >= 0.5
    if not out.any() and region.any():
        out.flat[int(np.argmax(cover))] = True
    return out


def on_ship_scores(cam, region):
    """(on_ship_energy, peak_on_ship, ship_area_fraction) of a map (H, W) >= 0 and a region (H, W) bool.

    A map equal to the region scores 1; a uniform map scores the area fraction; an all-zero map has no energy
    and scores (nan, nan, area fraction)."""
    region = np.asarray(region, dtype=bool)
    cam = np.asarray(cam, dtype=np.float64)
    area = float(region.mean())
    total = cam.sum()
    if not total > 0:
        return float("nan"), float("nan"), area
    return float(cam[region].sum() / total), bool(region.flat[int(np.argmax(cam))]), area


# ------------------------------------------------------------------------------------------------ grid cells
def find_cell(run_dir, train_set, model_name, imbalance, train_seed):
    """(cell dir or None, message or None) of the cell to explain; a finished cell has record.json."""
    model_dir = Path(run_dir) / "runs" / train_set / model_name
    if not model_dir.is_dir():
        return None, f"no grid records for model {model_name} trained on {train_set} (no {model_dir})"
    imb_dir = model_dir / imbalance
    found = sorted(d.name for d in model_dir.iterdir() if d.is_dir())
    if not imb_dir.is_dir():
        return None, (f"{model_name} on {train_set}: no cell with imbalance '{imbalance}' (found: "
                      f"{', '.join(found) or 'none'}); pass --imbalance")
    seeds = sorted(int(m.group(1)) for d in imb_dir.iterdir()
                   if (m := re.fullmatch(r"seed(\d+)", d.name)) and (d / "record.json").is_file())
    if not seeds:
        return None, (f"{model_name} on {train_set}/{imbalance}: no finished cell (no seed*/record.json "
                      f"in {imb_dir})")
    seed = seeds[0] if train_seed is None else train_seed
    if seed not in seeds:
        return None, (f"{model_name} on {train_set}/{imbalance}: no finished cell for seed {seed} "
                      f"(found seeds {seeds}); pass --train-seed")
    cell = imb_dir / f"seed{seed}"
    if not (cell / "checkpoint.pt").is_file():
        return None, (f"{model_name} on {train_set}/{imbalance}/seed{seed}: checkpoint.pt is missing in "
                      f"{cell}; rerun that cell of test_models.py (delete the cell folder so it is not "
                      "skipped)")
    return cell, None


# ------------------------------------------------------------------------------------------------------ CAMs
def compute_cams(model, images, method="gradcam", device="cpu", batch_size=16):
    """Explain the predicted class of each chip. images: uint8 (N, S, S) as data.load_split gives them.

    Returns (maps float32 (N, S, S) in [0, 1], preds int64 (N,), probs float32 (N, C))."""
    model = model.to(device).eval()
    maps, preds, probs = [], [], []
    with METHODS[method](model=model, target_layers=[model.cam_target_layer]) as cam:
        for start in range(0, len(images), batch_size):
            x = data.to_model_input(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])))
            x = x.to(device)
            with torch.no_grad():
                logits = model(x)
            pred = logits.argmax(1)
            # Frozen backbones have no parameter that requires grad, so without a grad-requiring input no
            # gradient would reach their target layer and Grad-CAM would have nothing to weight.
            x.requires_grad_(True)
            targets = None if method == "finercam" else [ClassifierOutputTarget(int(c)) for c in pred]
            try:
                batch_maps = cam(input_tensor=x, targets=targets)
            except IndexError as err:
                # pytorch-grad-cam's __exit__ swallows IndexError; re-raise it as something it lets through.
                raise RuntimeError(f"{method} failed on this model: {err!r}") from err
            maps.append(np.asarray(batch_maps, dtype=np.float32))
            preds.append(pred.cpu().numpy())
            probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return np.concatenate(maps), np.concatenate(preds).astype(np.int64), np.concatenate(probs)


def _grid_predictions(cell, set_name):
    """{path: pred} from the grid's own predictions file of this cell, or {} when it has none."""
    path = Path(cell) / f"predictions_{set_name}.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(df["path"], df["pred"]))


def explain_model(set_name, set_dir, model_name, cell, model, ckpt, chosen, regions_native, args, device,
                  split_cache):
    """Explain the chosen chips with one trained model, write its PNGs; return (rows, figure record)."""
    size = int(ckpt["img_size"])
    classes = list(ckpt["classes"])
    if (set_name, size) not in split_cache:
        split_cache[(set_name, size)] = data.load_split(set_dir, "test", size)
    split = split_cache[(set_name, size)]
    index = {p: i for i, p in enumerate(split.paths)}   # load_split keeps the manifest's relative paths
    missing = [r["path"] for r in chosen if r["path"] not in index]
    if missing:
        raise RuntimeError(f"{len(missing)} chosen chips (e.g. {missing[0]}) are in {set_dir}/manifest.csv "
                           "but not in its test split: the prepared set is inconsistent, rerun "
                           "dataset_prep.py")
    images = split.images[[index[r["path"]] for r in chosen]]
    maps, preds, _ = compute_cams(model, images, args.method, device, args.batch_size)
    grid_pred = _grid_predictions(cell, set_name)

    out_dir = Path(args.exp_dir) / set_name / model_name
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, regions, per_class_i = [], [], {}
    for row, chip, cam_map, p in zip(chosen, images, maps, preds):
        cls, pred = row["class"], classes[int(p)]
        i = per_class_i[cls] = per_class_i.get(cls, -1) + 1
        Image.fromarray(chip).save(out_dir / f"{cls}_o{i}.png")
        rgb = np.repeat(chip[..., None].astype(np.float32) / 255.0, 3, axis=2)
        Image.fromarray(show_cam_on_image(rgb, cam_map, use_rgb=True)).save(out_dir / f"{cls}_hm{i}.png")
        native, source = regions_native[row["path"]]
        region = resize_region(native, size) if native is not None else None
        energy, peak, area = (np.nan, np.nan, np.nan) if region is None else on_ship_scores(cam_map, region)
        regions.append(region)
        agrees = (grid_pred[row["path"]] == pred) if row["path"] in grid_pred else ""
        rows.append({"set": set_name, "model": model_name, "path": row["path"], "true": cls, "pred": pred,
                     "on_ship_energy": energy, "peak_on_ship": peak, "ship_area_fraction": area,
                     "region_source": source, "index": i, "cell": Path(cell).as_posix(),
                     "agrees_with_grid": agrees})
    record = {"chips": images, "maps": maps, "regions": regions, "rows": rows}
    return rows, record


# --------------------------------------------------------------------------------------------------- figures
def plot_set_grid(set_name, records, per_class, path, method="gradcam"):
    """Rows of chips (first `per_class` of each class), a chip column, then one overlay column per model."""
    model_names = list(records)
    first = records[model_names[0]]
    keep, seen = [], {}
    for k, row in enumerate(first["rows"]):
        seen[row["true"]] = seen.get(row["true"], 0) + 1
        if seen[row["true"]] <= per_class:
            keep.append(k)
    ncol = 1 + len(model_names)
    # Figure, not pyplot: no global figure state, no GUI backend needed on a headless machine.
    fig = Figure(figsize=(1.9 * ncol, 2.0 * len(keep)))
    axes = fig.subplots(len(keep), ncol, squeeze=False)
    for r, k in enumerate(keep):
        row = first["rows"][k]
        ax = axes[r, 0]
        ax.imshow(first["chips"][k], cmap="gray", vmin=0, vmax=255)
        if first["regions"][k] is not None:
            ax.contour(first["regions"][k], levels=[0.5], colors="lime", linewidths=0.8)
        head = "chip, ship region\n" if r == 0 else ""
        ax.set_title(f"{head}{row['true']}\n{Path(row['path']).stem[:24]}", fontsize=7)
        for c, name in enumerate(model_names, start=1):
            rec = records[name]
            mrow = rec["rows"][k]
            chip = rec["chips"][k]
            rgb = np.repeat(chip[..., None].astype(np.float32) / 255.0, 3, axis=2)
            axes[r, c].imshow(show_cam_on_image(rgb, rec["maps"][k], use_rgb=True))
            energy = mrow["on_ship_energy"]
            score = "" if np.isnan(energy) else f"\non ship {energy:.2f}"
            head = f"{name}\n" if r == 0 else ""
            axes[r, c].set_title(f"{head}true {mrow['true']} / pred {mrow['pred']}{score}", fontsize=7,
                                 color="black" if mrow["pred"] == mrow["true"] else "crimson")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method} on the {set_name} test set (models trained on {set_name}); red = misclassified",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_on_ship(summary, path):
    """Mean on-ship energy per model, a panel per set, against the uniform-map baseline (area fraction)."""
    sets = list(dict.fromkeys(summary["set"]))
    fig = Figure(figsize=(0.6 + (0.8 + 0.7 * summary["model"].nunique()) * len(sets), 3.4))
    axes = fig.subplots(1, len(sets), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        s = summary[summary["set"] == set_name]
        x = np.arange(len(s))
        ax.bar(x - 0.2, s["on_ship_energy"], 0.4, label="CAM energy on ship", color="tab:red")
        ax.bar(x + 0.2, s["ship_area_fraction"], 0.4, label="uniform map (ship area)", color="tab:gray")
        ax.set_xticks(x, s["model"], rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(set_name)
    axes[0, 0].set_ylabel("share of the map's energy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarise(scores):
    """Per set and model: chips, mean on-ship energy, uniform baseline, lift, share of peaks on the ship."""
    out = []
    for (set_name, model_name), g in scores.groupby(["set", "model"], sort=False):
        scored = g[pd.to_numeric(g["on_ship_energy"], errors="coerce").notna()]
        energy = float(scored["on_ship_energy"].astype(float).mean()) if len(scored) else np.nan
        area = float(scored["ship_area_fraction"].astype(float).mean()) if len(scored) else np.nan
        peak = float(scored["peak_on_ship"].astype(bool).mean()) if len(scored) else np.nan
        out.append({"set": set_name, "model": model_name, "n": len(g), "n_scored": len(scored),
                    "accuracy": float((g["true"] == g["pred"]).mean()),
                    "on_ship_energy": energy, "ship_area_fraction": area,
                    "lift": energy / area if area > 0 else np.nan, "peak_on_ship": peak})
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------------ main
def main(args):
    """Explain every (prepared set, model trained on it) pair found. Returns a dict: scores and summary
    (DataFrames), maps {(set, model): (N, S, S)}, selection {set: [paths]}, problems (messages)."""
    for flag in ("per_class", "figure_per_class", "batch_size"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    start = time.time()
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    problems = []

    def report(msg):
        problems.append(msg)
        tqdm.write(f"grad_cams: {msg}")

    result = {"scores": pd.DataFrame(columns=SCORE_COLUMNS), "summary": pd.DataFrame(), "maps": {},
              "selection": {}, "problems": problems}
    data_dir, run_dir, exp_dir = Path(args.data_dir), Path(args.run_dir), Path(args.exp_dir)
    found = [p.parent.name for p in data_dir.glob("*/manifest.csv")]
    available = [s for s in STUDY_SETS if s in found] + sorted(s for s in found if s not in STUDY_SETS)
    sets = args.datasets or available
    for s in [s for s in sets if s not in available]:
        report(f"no prepared set '{s}' under {data_dir} (no {data_dir / s / 'manifest.csv'}): run "
               f"`python dataset_prep.py --output-dir {data_dir}` (or --synthetic), or pass --data-dir")
    sets = [s for s in sets if s in available]
    if not available:
        report(f"no prepared sets under {data_dir} (no <set>/manifest.csv): run python dataset_prep.py (or "
               "python dataset_prep.py --synthetic for the demo), or pass --data-dir")
    elif not (run_dir / "runs").is_dir():
        report(f"no grid under {run_dir} (no {run_dir / 'runs'}): run python test_models.py --output-dir "
               f"{run_dir} first, or pass --run-dir where it wrote its records")
        sets = []

    jobs = []   # (set, model, cell)
    for set_name in sets:
        for model_name in args.models:
            cell, msg = find_cell(run_dir, set_name, model_name, args.imbalance, args.train_seed)
            if msg:
                report(msg)
            else:
                jobs.append((set_name, model_name, cell))

    selections, regions_native, split_cache, records, rows = {}, {}, {}, {}, []
    for set_name in dict.fromkeys(s for s, _, _ in jobs):
        set_dir = data_dir / set_name
        selection, msgs = select_chips(read_manifest(set_dir), args.per_class, args.seed)
        for m in msgs:
            report(f"{set_name}: {m}")
        selections[set_name] = [r for cls in sorted(selection) for r in selection[cls]]
        regions_native[set_name] = {r["path"]: native_region(r, set_dir) for r in selections[set_name]}
        result["selection"][set_name] = [r["path"] for r in selections[set_name]]

    bar = tqdm(jobs, desc="grad-cam", unit="model", disable=not jobs)
    for set_name, model_name, cell in bar:
        bar.set_postfix_str(f"{set_name}/{model_name}")
        if not selections[set_name]:
            report(f"{set_name}: no test chips in its manifest; nothing to explain")
            continue
        try:
            model, ckpt = models.load_trained(cell / "checkpoint.pt", map_location="cpu")
        except Exception as err:  # noqa: BLE001 - torch.load fails on a damaged file with many error types
            # e.g. a truncated checkpoint.pt (an interrupted copy) or one of another project: skip the model
            first_line = (str(err).splitlines() or [""])[0]
            report(f"{model_name} on {set_name}: cannot read {cell / 'checkpoint.pt'} ({type(err).__name__}: "
                   f"{first_line}); rerun that cell of test_models.py (delete its folder first)")
            continue
        model_rows, record = explain_model(set_name, data_dir / set_name, model_name, cell, model, ckpt,
                                           selections[set_name], regions_native[set_name], args, device,
                                           split_cache)
        rows += model_rows
        records.setdefault(set_name, {})[model_name] = record
        result["maps"][(set_name, model_name)] = record["maps"]
        split_cache = {k: v for k, v in split_cache.items() if k[0] == set_name}   # free finished sets
    bar.close()

    if not rows:
        print("grad_cams: nothing explained" + (f" ({len(problems)} problems above)" if problems else ""))
        return result
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "figures").mkdir(exist_ok=True)
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    scores.to_csv(exp_dir / "cam_scores.csv", index=False)
    summary = summarise(scores)
    summary.to_csv(exp_dir / "cam_summary.csv", index=False)
    for set_name, recs in records.items():
        plot_set_grid(set_name, recs, args.figure_per_class, exp_dir / "figures" / f"cam_grid_{set_name}.png",
                      args.method)
    plot_on_ship(summary, exp_dir / "figures" / "cam_on_ship.png")
    result["scores"], result["summary"] = scores, summary

    agree = scores[scores["agrees_with_grid"] != ""]["agrees_with_grid"].astype(bool)
    print(f"\nGrad-CAM ({args.method}) scores: share of the map's energy on the ship vs a uniform map "
          f"(lift = energy / uniform)")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    regions = ", ".join(f"{k} {v}" for k, v in scores["region_source"].value_counts().items())
    print(f"\nexplained {len(scores)} chips with {len(result['maps'])} trained model(s) on {len(records)} "
          f"set(s) in {time.time() - start:.0f} s; ship regions: {regions}")
    if len(agree):
        print(f"predictions agree with the grid's predictions files for {int(agree.sum())}/{len(agree)} "
              "chips")
    print(f"wrote {exp_dir}/<set>/<model>/<Class>_o<i>.png and _hm<i>.png, {exp_dir / 'cam_scores.csv'}, "
          f"{exp_dir / 'cam_summary.csv'}, {exp_dir / 'figures'}/cam_grid_<set>.png and cam_on_ship.png")
    if problems:
        print(f"{len(problems)} problem(s) met; everything else was done:")
        for m in problems:
            print(f"  - {m}")
    return result


if __name__ == "__main__":
    res = main(get_args_parser().parse_args())
    raise SystemExit(0 if len(res["scores"]) else 1)
