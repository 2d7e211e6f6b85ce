"""The prepared-set contract between dataset_prep.py and every later stage: set names, layout, manifest.

    import sets
    sets.prepared_sets("data/prepared")                 # ['fusar', 'opensarship', 'mixed'] (those present)
    rows = sets.read_manifest("data/prepared/fusar")    # [{'path': 'test/Cargo/x.png', 'class': ..., ...}]
    frame = sets.manifest_frame("data/prepared/fusar")  # the same as a DataFrame of strings ('' = unknown)

A prepared set is a folder <data-dir>/<set>/ holding
    train/<Class>/*.png, test/<Class>/*.png   single-channel 8-bit PNGs (torchvision ImageFolder reads them);
                                              in a stacked set (below) 2-channel 8-bit TIFFs (co, cross)
    val/<Class>/*.png                         the validation split, when prepared with --val-size > 0 (the
                                              default); --val-size 0 gives the study's two splits and no val/
    masks/<split>/<Class>/*.png               exact ship masks, where the data has them (synthetic chips)
    manifest.csv                              one row per chip, MANIFEST_COLUMNS, sorted by path (split:
                                              train, val or test)
    summary.json, summary.txt                 counts per split and class, skipped chips with reasons, warnings;
                                              summary.json also lists every file with its size and sha1
                                              ("files": {path: [bytes, sha1]}, checked by dataset_prep.py), each
                                              chip's id and raw-file sha1 ("source_chips", what --export-splits
                                              writes) and, prepared with --split-file, that file ("split_file")
<set> is one per dataset (fusar, opensarship), `mixed`, the union of the per-dataset splits (train with
train, val with val, test with test, never re-split), and with dataset_prep.py --pol stack `opensarship-stack`:
the dual-pol chips of the opensarship set as 2-channel chips, each in its co chip's split and group (the same ships
in test). No group (ship) is in two splits. A stacked set is never part of mixed and is never trained or tested
with a single-channel set (check_channels): FUSAR-Ship and single-pol scenes have no cross channel. The manifest is the
set's identity: it lists every chip with its sha1, so its own sha1 (manifest_sha1) changes when any chip does;
records and caches are keyed by it.
"""

import csv
import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from cli import PREP_HINT

SETS = ("fusar", "opensarship", "mixed", "opensarship-stack")  # every set dataset_prep.py can write, in order
MIXED = "mixed"
STACKED = {"opensarship-stack": "opensarship"}  # stacked set -> the set of its co chips (the same split)
STACK_POL_SEP = "+"  # a stacked chip's manifest pol: "vv+vh", "hh+hv" (co first)
SPLITS = ("train", "val", "test")  # val only in sets prepared with --val-size > 0
MANIFEST = "manifest.csv"
SUMMARY_JSON, SUMMARY_TXT = "summary.json", "summary.txt"
MANIFEST_COLUMNS = (
    "path", "dataset", "class", "split", "group", "source", "sha1", "scene", "mmsi", "pol", "product",
    "chip_h", "chip_w", "ship_length_m", "ship_width_m", "spacing_row_m", "spacing_col_m",
    "incidence_deg", "head_row", "head_col", "tail_row", "tail_col", "mask",
)


def ordered(values, preferred):
    """Distinct values, those in `preferred` first in its order, then the others sorted."""
    values = list(dict.fromkeys(values))
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def rank(value, preferred):
    """Sort key of `value` in the order `ordered` gives."""
    return (preferred.index(value), "") if value in preferred else (len(preferred), str(value))


def prepared_sets(data_dir):
    """Names of the prepared sets under data_dir (folders with a manifest.csv), in the study's order."""
    return ordered([p.parent.name for p in Path(data_dir).glob(f"*/{MANIFEST}")], SETS)


def resolve_sets(requested, default, available, data_dir, what):
    """The sets to use: a missing set named explicitly is an error, missing defaults are skipped (a line)."""
    names = requested if requested is not None else list(default)
    missing = [s for s in names if s not in available]
    if missing and requested is not None:
        raise SystemExit(f"{what} {', '.join(missing)} not prepared under {data_dir} "
                         f"(no <set>/{MANIFEST}): {PREP_HINT}")
    if missing:
        print(f"skipping {what} not prepared under {data_dir}: {', '.join(missing)} ({PREP_HINT} to add them)")
    present = [s for s in names if s in available]
    if not present:
        raise SystemExit(f"none of the {what} {', '.join(names)} is prepared under {data_dir}: {PREP_HINT}")
    return present


def grid_sets(data_dir, datasets, test_sets):
    """(training sets, test sets, {set: manifest sha1}) of a grid: the sets asked for, checked to exist, to share
    one class list and one channel count (check_channels). None: every prepared single-channel set for training
    (a stacked set is trained when named), and every prepared set of the training sets' channel count for testing."""
    data_dir = Path(data_dir)
    available = prepared_sets(data_dir)
    if not available:
        raise SystemExit(f"nothing is prepared under {data_dir} (no <set>/{MANIFEST}): run python "
                         "dataset_prep.py (or python dataset_prep.py --synthetic for the synthetic demo), or "
                         "point --data-dir at the prepared sets")
    # Stacked sets are gridded when named: a default grid is the study's single-channel one.
    train_sets = resolve_sets(datasets, [s for s in SETS if s not in STACKED], available, data_dir, "training sets")
    channels = {s: set_channels(data_dir / s) for s in available}
    kinds = {channels[s] for s in train_sets}
    if len(kinds) > 1:
        raise SystemExit(f"error: the training sets {', '.join(train_sets)} hold chips of different channel counts "
                         f"({', '.join(f'{s}: {channels[s]}' for s in train_sets)}) and a grid tests every cell on one "
                         "list of test sets: grid the stacked set on its own (--datasets opensarship-stack)")
    test_sets = resolve_sets(test_sets, [s for s in available if channels[s] in kinds], available, data_dir,
                             "test sets")
    check_channels(data_dir, train_sets, test_sets, channels)
    classes = {s: set_classes(data_dir / s) for s in dict.fromkeys(train_sets + test_sets)}
    mismatched = [f"test set {te} has classes {classes[te]} but training set {tr} has {classes[tr]}"
                  for tr in train_sets for te in test_sets if classes[te] != classes[tr]]
    if mismatched:
        raise SystemExit("; ".join(mismatched) + ": prepare every set with the same classes "
                         "(dataset_prep.py), or leave the odd set out with --datasets / --test-sets")
    return train_sets, test_sets, {s: manifest_sha1(data_dir / s) for s in classes}


def stacked_set(dataset):
    """The name of a dataset's stacked set (dataset_prep.py --pol stack)."""
    return f"{dataset}-stack"


def row_channels(row):
    """Channels of one manifest row's chip: 2 for a stacked chip (pol "vv+vh"), else 1."""
    return 2 if STACK_POL_SEP in row.get("pol", "") else 1


def set_channels(set_dir):
    """Channels of a prepared set's chips (its manifest's first row: a set holds one kind)."""
    rows = read_manifest(set_dir)
    return row_channels(rows[0]) if rows else 1


def check_channels(data_dir, train_sets, test_sets, channels=None):
    """Every set's channel count ({set: 1 or 2}); SystemExit naming the sets when a training set would be tested on
    a set of another channel count (a stacked set against a single-channel one)."""
    channels = channels or {s: set_channels(Path(data_dir) / s) for s in dict.fromkeys([*train_sets, *test_sets])}
    pairs = [f"{tr} ({channels[tr]} channel{'s' * (channels[tr] > 1)}) on {te} ({channels[te]})"
             for tr in train_sets for te in test_sets if channels[tr] != channels[te]]
    if pairs:
        raise SystemExit("error: a model cannot be tested on chips with another number of channels: "
                         f"{'; '.join(pairs)}. Stacked sets (co + cross, dataset_prep.py --pol stack) exist only for "
                         "OpenSARShip's dual-pol scenes (FUSAR-Ship and single-pol scenes have one channel): grid the "
                         "stacked set on its own (--datasets opensarship-stack --test-sets opensarship-stack)")
    return channels


def has_split(set_dir, split):
    """True when the set's manifest lists chips of `split` (a set prepared with --val-size 0 has no val)."""
    return any(row["split"] == split for row in read_manifest(set_dir))


def read_manifest_bytes(set_dir):
    path = Path(set_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no prepared set at {set_dir} (missing {MANIFEST}): {PREP_HINT}")
    return path.read_bytes()


def parse_manifest(content):
    """Manifest bytes -> rows as dicts of strings, in file order."""
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


def read_manifest(set_dir):
    """Rows of `<set_dir>/manifest.csv` as dicts of strings, in file order (sorted by path)."""
    return parse_manifest(read_manifest_bytes(set_dir))


def manifest_frame(set_dir):
    """The manifest as a DataFrame of strings ('' where unknown, so empty numeric cells stay recognisable)."""
    return pd.read_csv(io.BytesIO(read_manifest_bytes(set_dir)), dtype=str, keep_default_na=False)


def load_manifests(data_dir):
    """{set name: manifest_frame} for every prepared set under data_dir, in the study's order."""
    return {name: manifest_frame(Path(data_dir) / name) for name in prepared_sets(data_dir)}


def manifest_sha1(set_dir):
    """Content hash of a set's manifest.csv (it lists every chip with its own hash): the set's identity."""
    return hashlib.sha1(read_manifest_bytes(set_dir)).hexdigest()


def set_classes(set_dir):
    """Sorted class names of a prepared set, from its manifest (every split).

    Taken over every split, not from the folders of one split: if a test split happened to lack a class, an
    ImageFolder over it would renumber the remaining classes and every label after the gap would be wrong.
    """
    return sorted({row["class"] for row in read_manifest(set_dir)})


def split_seed(set_dir):
    """The seed that chose a prepared set's split (dataset_prep.py --split-seed; sets prepared before it existed:
    --seed, which chose the split then), or None when the summary does not say."""
    summary = load_summary(Path(set_dir).parent, Path(set_dir).name)
    return summary.get("split_seed", summary.get("options", {}).get("seed"))


def load_summary(data_dir, name):
    """The set's summary.json as a dict ({} when absent)."""
    path = Path(data_dir, name, SUMMARY_JSON)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_manifest(path, rows):
    """Write manifest rows (dicts with MANIFEST_COLUMNS) as the contract's CSV: header, '\\n' line ends."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
