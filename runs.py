"""The grid's on-disk contract: where cells live, how records are found, and how every stage writes atomically.

    import runs
    folder = runs.cell_dir("demo", runs.Cell("fusar", "cnn", "none", "raw", 0.001, 42))  # .../lr0.001/seed42
    for folder, record in runs.find_records("demo"): ...             # finished cells, in grid order
    runs.write_atomic(path, lambda tmp: frame.to_csv(tmp))           # readers see the old file or the new one
    runs.check_writable(output_dir)                                  # NotWritableError, at a stage's start

Layout under a grid folder (test_models.py --output-dir):
    runs/<train_set>/<model>/<imbalance>/lr<lr>/seed<k>/   one finished cell: record.json, checkpoint.pt,
                                                           predictions_<test_set>.csv, confusion_<test_set>.csv/.png
    runs/<train_set>/<model>/<imbalance>/<inputs>/lr<lr>/seed<k>/   the same for an input variant other than raw
                                                           (inputs.py: m10, m10-clutter, ...)
A cell is Cell(train_set, model, imbalance, inputs, lr, seed); the input variant's level is left out for the
study's inputs (raw), so grids from before input variants are read and extended as they are. The learning rate is
written with Python's "g" format (lr0.001, lr0.0001, lr3e-05). Records of the earlier layout,
runs/<train_set>/<model>/<imbalance>/seed<k>/ (before the learning rate was a grid axis), are found too and marked
LEGACY: they were made with the study's protocol (stored batch-norm statistics, the last epoch, no validation split)
and the tables never mix them silently.
A cell is finished when its folder exists: it is built in the cell's working folder .seed<k>.tmp-train/ (a
stable name, so that a rerun resumes it from its epoch checkpoint; its lease says which run trains it: resume.py,
leases.py) and renamed into place (publish). Other temporary names end in -<host>-<pid>-<8 hex> (temp_suffix):
unique per process, and they say whose they are, so clean_stale removes those of dead processes on this host and
leaves another machine's alone (a shared file system may hold a run still working elsewhere); it never removes a
working folder (the run that takes the cell's lease clears it). Hidden temporaries:
    runs/.../.seed<k>.tmp-train  a cell being trained      runs/.../.seed<k>.old-*    a record being replaced
    runs/.../seed<k>/.complete-* test sets being added     <folder>/.<name>.tmp-*     a file being written
"""

import json
import os
import re
import shlex
import shutil
import socket
import uuid
from collections import namedtuple
from pathlib import Path

from engine import IMBALANCE
from models import MODEL_CHOICES
from sets import SETS, rank

RUNS = "runs"
RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"
EXP_IMAGES = "Exp_images"  # grad_cams.py's output under the grid folder (the study's name), read by report.py
SEED_DIR = re.compile(r"^seed(\d+)$")
LR_DIR = re.compile(r"^lr(.+)$")
LEGACY = "legacy"  # the protocol of records without one: stored BN statistics, last epoch, no validation
TEMP_SUFFIX = re.compile(r"-(?P<host>[^/]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
# The order every table, figure and report lists cells in: sets and models as the study presents them.
ORDERS = {"train_set": SETS, "test_set": SETS, "set": SETS, "model": MODEL_CHOICES, "imbalance": IMBALANCE}
KEYS = ("train_set", "model", "imbalance", "inputs", "lr", "seed")  # a cell, in grid order
Cell = namedtuple("Cell", KEYS)
RAW = "raw"  # the study's inputs (inputs.RAW): cells of this variant keep the layout without an inputs level


class RecordError(Exception):
    """A record.json (or another file of a finished cell) that cannot be read; the message names the cell folder and
    the fix."""

    @classmethod
    def damaged(cls, folder, problem):
        return cls(f"{problem}: delete the cell folder {folder} and rerun test_models.py to train that cell again")


class NotWritableError(Exception):
    """An output folder that cannot be made or written (check_writable); the message names it and why."""


# What the readers of a record (test_models.py, tables.py, report.py, calibration.py) rely on: a record.json lacking
# a field, or holding another type, was damaged or edited by hand, and would stop them with a KeyError.
RECORD_FIELDS = {"train_set": str, "model": str, "imbalance": str, "seed": int, "classes": list, "test_sets": object}
RECORD_TYPES = {**RECORD_FIELDS, "args": dict, "protocol": dict, "history": list}  # those present, of the right type


# ------------------------------------------------------------------------------------------------------------
# cells and records

def lr_text(lr):
    """A learning rate as the grid writes it everywhere ("g" format: 0.001, 3e-05); "" where there is none, as
    for the baselines."""
    return "" if lr is None or lr == "" or lr != lr else f"{float(lr):g}"  # lr != lr: NaN


def lr_name(lr):
    return f"lr{lr_text(lr)}"


def cell_name(cell):
    """Cell (train_set, model, imbalance, inputs, lr, seed) -> 'train_set/model/imbalance/lr<lr>/seed<k>' for the
    study's inputs (raw), 'train_set/model/imbalance/<inputs>/lr<lr>/seed<k>' for another input variant."""
    train_set, model_name, imbalance, inputs, lr, seed = cell
    level = "" if inputs == RAW else f"{inputs}/"
    return f"{train_set}/{model_name}/{imbalance}/{level}{lr_name(lr)}/seed{seed}"


def cell_dir(output_dir, cell):
    return Path(output_dir) / RUNS / cell_name(cell)


def cell_args(args, cell, test_sets, not_cell_args):
    """The args of one cell, JSON-safe: the grid's args with its axes narrowed to this cell (lists of one, the
    learning rate a number); `not_cell_args`: the grid's args that are no part of a cell (--shard, --force...)."""
    train_set, model_name, imbalance, inputs, lr, seed = cell
    out = {k: v for k, v in vars(args).items() if k not in not_cell_args}
    out.update(datasets=[train_set], models=[model_name], imbalance=[imbalance], inputs=[inputs], lr=lr,
               seeds=[seed], test_sets=list(test_sets))
    return out


def cell_command(a):
    """The test_models.py command line that reruns exactly this cell (with --force if it is already finished)."""
    parts = ["python", "test_models.py"]
    for key in ("data_dir", "output_dir", "datasets", "test_sets", "models", "imbalance", "inputs", "lr", "seeds",
                "epochs",
                "batch_size", "img_size", "augment", "weights", "bn_recalibrate", "select", "patience", "device",
                "num_workers", "amp"):
        value = a.get(key)
        if value is None:
            continue
        value = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts += ["--" + key.replace("_", "-"), value]
    return shlex.join(parts)


def read_record(folder):
    """The record.json of a finished cell folder; a record of the earlier layout gets its `lr` (from its args)
    and `protocol` LEGACY."""
    path = Path(folder) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8 (an empty or zeroed file included)
        raise RecordError.damaged(folder, f"cannot read {path} ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict):
        raise RecordError.damaged(folder, f"{path} is not a record of test_models.py (a JSON {type(record).__name__})")
    missing = [k for k in RECORD_FIELDS if k not in record]
    wrong = [f"{k} ({type(record[k]).__name__})" for k, kind in RECORD_TYPES.items()
             if k in record and not isinstance(record[k], kind)]
    if missing or wrong:
        problem = "; ".join(([f"lacks {', '.join(missing)}"] if missing else [])
                            + ([f"has the wrong type of {', '.join(wrong)}"] if wrong else []))
        raise RecordError.damaged(folder, f"{path} {problem}")
    if "protocol" not in record:
        record["protocol"] = {"name": LEGACY, "bn_recalibrate": "off", "select": "last", "val": False,
                              "epoch": record.get("args", {}).get("epochs")}
        record.setdefault("lr", record.get("args", {}).get("lr"))
    record.setdefault("inputs", RAW)  # records from before input variants: the study's whole-chip resize
    return record


def record_cell(record):
    """The cell key of a record: Cell(train_set, model, imbalance, inputs, lr, seed)."""
    return Cell(*(record.get(k, RAW) if k == "inputs" else record[k] for k in KEYS))


def sort_key(record):
    """Grid order of a record: training set, model, imbalance strategy, seed."""
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise RecordError(f"a record.json under runs/ lacks {', '.join(missing)}: it was not written by "
                          "test_models.py; delete its cell folder and rerun test_models.py")
    return (rank(record["train_set"], SETS), rank(record["model"], MODEL_CHOICES),
            rank(record["imbalance"], IMBALANCE), rank(record.get("inputs", RAW), [RAW]), record["lr"],
            record["protocol"]["name"] == LEGACY, record["seed"])


def find_records(output_dir):
    """Finished cells under <output_dir>/runs: [(folder, record)] in grid order."""
    runs = Path(output_dir, RUNS)
    paths = [p for p in runs.glob(f"*/*/*/seed*/{RECORD}") if SEED_DIR.match(p.parent.name)]  # legacy layout
    paths += [p for pattern in (f"*/*/*/lr*/seed*/{RECORD}", f"*/*/*/*/lr*/seed*/{RECORD}")  # raw, other inputs
              for p in runs.glob(pattern) if SEED_DIR.match(p.parent.name) and LR_DIR.match(p.parent.parent.name)]
    found = [(path.parent, read_record(path.parent)) for path in paths]
    return sorted(found, key=lambda item: sort_key(item[1]))


def sort_frame(frame, columns):
    """Rows in the grid's order (ORDERS) by `columns`; other columns sort by value."""
    def key(column):
        if column.name in ORDERS:
            return column.map(lambda v: rank(v, ORDERS[column.name]))
        return column
    return frame.sort_values(list(columns), key=key, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------------
# atomic writes and temporaries

def temp_suffix():
    return f"-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temp_path(path):
    """A hidden sibling of `path` that clean_stale recognises: .<name>.tmp-<host>-<pid>-<hex>."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{temp_suffix()}")


def write_atomic(path, write):
    """write(temporary path) then os.replace: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def json_text(obj):
    """How records and other JSON files of the grid are written: indented, one trailing newline."""
    return json.dumps(obj, indent=1) + "\n"


def write_json_atomic(path, obj):
    write_text_atomic(path, json_text(obj))


def check_writable(folder):
    """Make `folder` (and its parents) and write and remove a probe file in it, so that a read-only, misnamed or
    full output folder stops a stage at its start, not after hours of training. Raises NotWritableError."""
    folder = Path(folder)
    check_creatable(folder)  # a file in the way, or a read-only parent, named as such
    probe = temp_path(folder / "write-probe")  # a name clean_stale removes, should this process die right here
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as e:  # what access() cannot tell: a full disk, a read-only file system, a quota
        raise NotWritableError(f"the output folder {folder} cannot be made or written ({e.strerror})") from None


def check_creatable(folder):
    """check_writable without making anything: `folder`, or the nearest of its parents that exists, is a folder
    this process may write into (for stages that make their output folder only once they have something to put
    there). Raises NotWritableError."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at worst
    if not existing.is_dir():
        raise NotWritableError(f"the output folder {folder} is a file, not a folder" if existing == folder else
                               f"the output folder {folder} cannot be made ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NotWritableError(f"the output folder {folder} cannot be made or written ({existing} is read-only)")


def publish(tmp, final, tag):
    """Rename a finished temporary folder into place; an older one (--force) is moved aside first, so at every
    instant `final` is either the old complete folder, absent, or the new complete folder."""
    old = final.parent / f".{final.name}.old{tag}"
    try:
        os.rename(final, old)
    except FileNotFoundError:  # the usual case: nothing to replace
        old = None
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(path):
    """True for a temporary name of a process of this host that is gone."""
    m = TEMP_SUFFIX.search(Path(path).name)
    return m is not None and m["host"] == socket.gethostname() and not pid_alive(int(m["pid"]))


def remove_stale(candidates):
    """Remove the temporaries among `candidates` whose process is gone (is_stale); returns those removed."""
    removed = []
    for path in candidates:
        if is_stale(path):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def clean_stale(output_dir):
    """Remove what killed runs of any stage left in a grid folder on this host: temporary cell folders and the
    hidden temporary files of tables, figures, the report and Grad-CAM output."""
    out, runs = Path(output_dir), Path(output_dir, RUNS)
    candidates = [*runs.glob("*/*/*/.seed*"), *runs.glob("*/*/*/seed*/.*"), *runs.glob("*/*/*/lr*/.seed*"),
                  *runs.glob("*/*/*/lr*/seed*/.*"), *runs.glob("*/*/*/*/lr*/.seed*"),
                  *runs.glob("*/*/*/*/lr*/seed*/.*"), *out.glob(".*.tmp-*"),
                  *out.glob("*/.*.tmp-*"), *out.glob("*/*/.*.tmp-*"), *out.glob("*/*/*/.*.tmp-*")]
    removed = remove_stale(list(dict.fromkeys(candidates)))
    if removed:
        print(f"removed {len(removed)} temporary file(s)/folder(s) left by interrupted runs "
              "(their cells will be redone)")
    return removed
