"""What test_models.py checks before the first cell trains, and how it words a failed write: a user's mistake is a
message naming the flag or file and the fix, never a traceback from torch or numpy in the middle of a grid.

    grid_checks.check_output(args)                         # --output-dir can be made and written
    n_classes = grid_checks.check_grid(args, train_sets)   # --img-size per model, two classes a set, --select best
    grid_checks.check_finished(record, args, cell, manifests)   # a finished cell was trained like this grid
    grid_checks.checkpoint_failure(err, folder, cell, missing)  # a finished cell's unreadable checkpoint
    grid_checks.stop_on_write_failure(err, args, n_classes)     # SystemExit: what ran out, what a cell needs

The smallest --img-size each model runs at (MIN_IMG_SIZE; tests/test_reliability_grid.py checks it with forward
passes): the cnn 8 px (three 2 x 2 max pools take 8 px to 1), the VGG16 models 32 px (five take 32 px to 1), the
ResNet50 models 1 px (their strided convolutions are padded, so any size reaches the last block as at least 1 x 1).
Resizing whole chips that small throws the ship's shape away; the study trains at 224 px.

What a cell writes (cell_needs, from the model's shapes alone): checkpoint.pt, the trained weights (a frozen
backbone: its head and batch-norm statistics); while it trains, the epoch checkpoint of resume.py: every weight,
those of the best epoch kept so far, and Adam's two moments of every trained weight, written beside the previous
one before replacing it.
"""

import errno
import shutil
from pathlib import Path

import torch

import adaptation
import runs
from pretrained import SENTINEL1_MODELS
import sets
import tables
from models import build_model

MIN_IMG_SIZE = {"cnn": 8, "vgg": 32, "resnet": 1, "fine_vgg": 32, "fine_resnet": 1, "fine_vgg_gap": 32}
SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, a quota, a file-size limit (ulimit -f)
DENIED_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS}
# torch.save reports a failed write as a RuntimeError without an errno: "unexpected pos 704 vs 598" (its zip
# writer), "basic_ios::clear: iostream error", "PytorchStreamWriter failed writing file ..."
TORCH_WRITE_ERRORS = ("unexpected pos", "iostream error", "PytorchStreamWriter failed")


def check_output(args):
    """Stop unless --output-dir is a folder this process can write (made when missing). --aggregate-only makes no
    folder that is not there: it says itself that there are no records."""
    if args.aggregate_only and not Path(args.output_dir).exists():
        return
    try:
        runs.check_writable(args.output_dir)
    except runs.NotWritableError as e:
        raise SystemExit(f"{e}: choose another --output-dir, or make this one writable") from None


def check_grid(args, train_sets):
    """Stop on what would fail inside the grid: an --img-size below a model's minimum, a training set with fewer
    than two classes, --select best without a val split. Returns the number of classes (one list: sets.grid_sets)."""
    small = {m: MIN_IMG_SIZE[m] for m in args.models if args.img_size < MIN_IMG_SIZE[m]}
    if small:
        needs = ", ".join(f"{m} needs at least {least} px" for m, least in small.items())
        raise SystemExit(f"--img-size {args.img_size} is too small: {needs} (their pooling would shrink a smaller "
                         f"chip to nothing); use --img-size {max(small.values())} or more, or leave "
                         f"{', '.join(small)} out of --models")
    for name in train_sets:
        if len(classes := sets.set_classes(Path(args.data_dir) / name)) < 2:
            has = f"only one class, {classes[0]}" if classes else "no class"
            raise SystemExit(f"the {name} set ({Path(args.data_dir) / name}) has {has}: a classifier needs at "
                             "least two classes; prepare it again with at least two (python dataset_prep.py "
                             "--classes Cargo,Fishing,Tanker, the study's), or leave it out with --datasets")
    no_val = [s for s in train_sets if not sets.has_split(Path(args.data_dir) / s, "val")]
    if args.select == "best" and no_val:
        raise SystemExit(f"--select best needs a validation split, and {', '.join(no_val)} has none: prepare it "
                         "with dataset_prep.py --val-size 0.1 (the default), or use --select last")
    return len(classes)


def check_weights(args, train_sets, test_sets):
    """--weights sentinel1 means something only for the ResNets on calibrated backscatter: refuse other models, sets
    with chips of another product than OpenSARShip's `cal`, and the clutter radiometry (dB over the sea, not the
    calibrated dB the weights were trained on)."""
    if args.weights != "sentinel1":
        return
    others = [m for m in args.models if m not in SENTINEL1_MODELS]
    if others:
        raise SystemExit(f"--weights sentinel1 are ResNet50 weights: {', '.join(others)} cannot take them; pass "
                         f"--models {','.join(SENTINEL1_MODELS)} (or another --weights for the other models)")
    for name in dict.fromkeys([*train_sets, *test_sets]):
        products = {row["product"] or "unknown" for row in sets.read_manifest(Path(args.data_dir) / name)}
        if products != {"cal"}:
            raise SystemExit(f"--weights sentinel1 expects calibrated Sentinel-1 backscatter in dB, and the {name} set "
                             f"({Path(args.data_dir) / name}) holds {', '.join(sorted(products))} chips: prepare "
                             "OpenSARShip with python dataset_prep.py --product cal (FUSAR-Ship has no calibrated "
                             "chips) and train and test on it alone (--datasets opensarship --test-sets opensarship), "
                             "or use --weights imagenet or none")
    clutter = [v for v in args.inputs if "clutter" in v]
    if clutter:
        raise SystemExit(f"--weights sentinel1 expects calibrated dB, not the clutter radiometry "
                         f"({', '.join(clutter)}: dB over each chip's sea); leave it out of --inputs")


def check_stacked(args, train_sets):
    """Stacked (co, cross) sets are shown raw: the harmonised input variants resample and rescale one channel."""
    stacked = [s for s in train_sets if sets.set_channels(Path(args.data_dir) / s) > 1]
    others = [v for v in args.inputs if v != "raw"]
    if stacked and others:
        raise SystemExit(f"--inputs {','.join(others)} is defined for single-channel chips and {', '.join(stacked)} "
                         "holds stacked (co, cross) chips: grid the stacked set with --inputs raw")


def check_finished(record, args, cell, manifests):
    """Stop if a finished cell was trained with other settings (tables.TRAIN_SETTINGS) or on another version of its
    training set, or if its record lacks the args it was trained with."""
    folder = runs.cell_dir(args.output_dir, cell)
    if "args" not in record:
        raise SystemExit(str(runs.RecordError.damaged(folder, f"{folder / runs.RECORD} lacks args")))
    differ = [f"{k}={record['args'].get(k)!r} (now {getattr(args, k)!r})" for k in tables.TRAIN_SETTINGS
              if record["args"].get(k) != getattr(args, k)]
    train_set = cell[0]
    if record.get("manifests", {}).get(train_set) != manifests[train_set]:
        differ.append(f"the {train_set} set was prepared again since (its manifest.csv changed)")
    if differ:
        raise SystemExit(f"runs/{runs.cell_name(cell)} is finished but was trained with {'; '.join(differ)}: "
                         "rerun with --force to retrain it, or choose another --output-dir")


def missing_tests(record, cell, test_sets, manifests):
    """The test sets a finished cell must still be evaluated on: those its record lacks, those prepared again since,
    and those between FUSAR-Ship and OpenSARShip without the label-free adaptations (records made before them)."""
    return [t for t in test_sets if t not in record["test_sets"]
            or record.get("manifests", {}).get(t) != manifests[t]
            or (adaptation.applies(cell.train_set, t) and "adaptation" not in record["test_sets"][t])]


def checkpoint_failure(err, folder, cell, missing):
    """The message when a finished cell's checkpoint, needed to evaluate it on the test sets `missing`, cannot be
    read (models.CheckpointError `err`)."""
    return (f"{err}; runs/{runs.cell_name(cell)} must be evaluated on {', '.join(missing)} (its record lacks it, or "
            f"the set was prepared again since), which needs its checkpoint: delete the cell folder {folder} and "
            "rerun to train that cell again, or leave those sets out with --test-sets")


def cell_needs(model_name, n_classes):
    """Bytes a cell of `model_name` writes (module docstring): {checkpoint, epoch (the epoch checkpoint), total (the
    most it holds at once while it trains)}. The model is built on the meta device: shapes, no memory, no time."""
    with torch.device("meta"):
        model = build_model(model_name, n_classes, weights="none")
    trained = _bytes(p for p in model.parameters() if p.requires_grad)
    state = _bytes(model.parameters()) + _bytes(model.buffers())
    checkpoint = trained + _bytes(model.buffers())
    epoch = 2 * state + 2 * trained
    return {"checkpoint": checkpoint, "epoch": epoch, "total": 2 * epoch}


def _bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def _size(n):
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def write_failure(err, output_dir, models, n_classes):
    """The message for `err` when it is a failed write (a full disk, a quota, a file-size limit, or a folder that
    stopped being writable), else None."""
    out = Path(output_dir)
    filename = getattr(err, "filename", None)
    if isinstance(err, OSError) and err.errno in DENIED_ERRORS and filename and out.resolve() in \
            Path(filename).resolve().parents:
        return (f"cannot write {filename} ({err.strerror}): the output folder {out} stopped being writable while "
                "the grid ran; make it writable again or choose another --output-dir, then rerun the same command "
                "(finished cells are kept)")
    space = isinstance(err, OSError) and err.errno in SPACE_ERRORS
    if not space and not (isinstance(err, RuntimeError) and any(s in str(err) for s in TORCH_WRITE_ERRORS)):
        return None
    where = Path(filename) if space and filename else out
    what = f"writing {where} failed ({err.strerror})" if space else \
        f"torch.save could not write a checkpoint under {out} (it says only: {str(err).splitlines()[0]})"
    folder = next((p for p in (where, *where.parents) if p.is_dir()), Path("."))
    needs = "; ".join(f"a {m} cell needs about {_size(n['total'])} free while it trains (epoch checkpoints of "
                      f"{_size(n['epoch'])}) and keeps {_size(n['checkpoint'])}"
                      for m, n in ((m, cell_needs(m, n_classes)) for m in models))
    return (f"{what}: space ran out (a full disk, a quota or a file-size limit; {_size(shutil.disk_usage(folder).free)}"
            f" free in {folder} now). {needs[0].upper()}{needs[1:]}. Free some space or choose another --output-dir, "
            "then rerun the same command: finished cells are kept, and the cell that stopped resumes from its last "
            "saved epoch, if it saved one")


def stop_on_write_failure(err, args, n_classes):
    """Turn a failed write into a SystemExit with write_failure's message; any other error is left to propagate."""
    message = write_failure(err, args.output_dir, args.models, n_classes)
    if message is not None:
        raise SystemExit(message) from None


def stop_on_tables_failure(err, output_dir):
    """A failed write of the tables (a full disk, a quota, a folder made read-only) as a SystemExit naming the file
    and the fix; any other error is left to propagate."""
    if isinstance(err, OSError) and err.errno in SPACE_ERRORS | DENIED_ERRORS:
        raise SystemExit(f"writing the tables failed: {err.filename or output_dir} ({err.strerror}); free some space "
                         f"or make {output_dir} writable, then rerun python test_models.py --aggregate-only "
                         f"--output-dir {output_dir} (the records under runs/ are untouched, and every table is "
                         "written atomically: the earlier ones stand)") from None
