"""Split files: a prepared split as a small CSV that can be published beside a paper, and preparing from one.

    info = split_files.export("data/prepared", "paper-split.csv")   # {path, chips, bytes, sha1}
    plan = split_files.read("paper-split.csv")                       # SplitFileError naming the line and the fix
    split_files.check_options(plan, args)                            # the file's --product, --pol, --classes
    plan = split_files.plan_for(args)                                # both, from dataset_prep.py's arguments
    chips, duplicates, check = split_files.assign(chips, plan)       # group and split from the file
    lines = split_files.check_lines(check)                           # for stdout and summary.txt

dataset_prep.py --export-splits FILE writes one row per chip of the per-dataset sets (not mixed, their union),
SPLIT_COLUMNS, sorted by dataset and chip, no imagery:
    dataset      the reader's name (opensarship, fusar)
    chip         a stable chip id: OpenSARShip <scene>_x<X>_y<Y>_<pol> (the Sentinel-1 product name, the chip's
                 centre in the scene, the polarisation); FUSAR-Ship the file id (Ship_C01S02N0003)
    product      OpenSARShip's --product (uint8, cal, rgb); empty for FUSAR-Ship, which has one product
    pol          the chip's polarisation (vv, vh, hh, hv; FUSAR-Ship: its metadata's polarMode, or empty)
    class        the class name, as the dataset spells it
    group        what the split never divides: mmsi:<MMSI>, or its fallback (pos:<scene position>, chip:...)
    split        train, val or test
    source_sha1  sha1 of the chip's file as the raw data stores it (the .tif inside the scene zip, the FUSAR
                 .tiff), not of the PNG written here, which depends on the encoder: anyone with a copy of the raw
                 data can check that a chip is the one the file names (sha1sum of the extracted file)
The stacked set of --pol stack is not listed: each of its chips is in its co chip's split (stacking.py), so a file
of co chips prepares it too (--split-file FILE --pol stack). A chip is identified by (dataset, chip, product).
Each set's summary.json keeps {manifest path: [chip id, source sha1]} under SOURCE_CHIPS, so a prepared folder can
be exported again without decoding anything.

dataset_prep.py --split-file FILE gives every chip of the data found the group and split the file gives it. The
file replaces --group-by, --test-size, --val-size and --split-seed (val exists when the file has val rows); it
must agree with --product, --pol and --classes (a message names the option to add otherwise). Chips of the file
not in the data, chips of the data not in the file and chips whose source sha1 (or class) differs are counted and
named, the first SHOWN of each on stdout and in summary.txt, all in summary.json ("split_file"); the last two are
left out of every split, never reassigned. Identical images are dropped as without a file, the file's chip kept.
"""

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import readers
import splits
from sets import MIXED, SPLITS, STACKED, load_summary, prepared_sets, read_manifest

SPLIT_COLUMNS = ("dataset", "chip", "product", "pol", "class", "group", "split", "source_sha1")
SOURCE_CHIPS = "source_chips"  # a set's summary.json: {manifest path: [chip id, source sha1]}
SHOWN = 10  # chips named per kind in summary.txt and on stdout; summary.json lists them all
CO, CROSS = {"vv", "hh"}, {"vh", "hv"}
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
INTACT = ("use the file exactly as dataset_prep.py --export-splits wrote it (a split file is not meant to be "
          "edited), or ask its authors for an intact copy")


class SplitFileError(Exception):
    """A split file that cannot be used (missing, malformed, made with other options) or cannot be written."""


@dataclass
class Plan:
    """A read split file: its path and sha1, its rows by chip key, in file order."""
    path: str
    sha1: str
    rows: dict = field(default_factory=dict)  # {(dataset, chip, product): row dict, with "line"}

    @property
    def split_names(self):
        """The splits the file's sets have, in order: train, val (when the file has val rows), test."""
        present = {r["split"] for r in self.rows.values()}
        return tuple(s for s in SPLITS if s in present or s != "val")


def chip_key(dataset, chip, product):
    return dataset, chip, product


def describe_key(key):
    dataset, chip, product = key
    return f"{dataset} {chip}" + (f" ({product})" if product else "")


# ---------------------------------------------------------------------------------------------- export


def check_target(path, split_file=None):
    """SplitFileError unless --export-splits `path` can be written (checked before preparing anything)."""
    path = Path(path)
    if path.is_dir():
        raise SplitFileError(f"--export-splits {path}: is a folder; give a file name (e.g. {path}/split.csv)")
    if not path.parent.is_dir():
        raise SplitFileError(f"--export-splits {path}: the folder {path.parent} does not exist; create it or "
                             "choose another path")
    if split_file is not None and path.resolve() == Path(split_file).resolve():
        raise SplitFileError(f"--export-splits {path} is the --split-file this run reads; export to another file "
                             "so that the split file stays as published")


def export_rows(out):
    """The split file's rows for the per-dataset sets prepared under `out`, sorted by dataset and chip."""
    names = [n for n in prepared_sets(out) if n != MIXED and n not in STACKED]  # stacked chips follow their co chip
    if not names:
        raise SplitFileError(f"nothing prepared under {out} (no <set>/manifest.csv) to export: run dataset_prep.py "
                             "with the same --output-dir first")
    rows = []
    for name in names:
        sources = load_summary(out, name).get(SOURCE_CHIPS)
        if sources is None:
            raise SplitFileError(f"{Path(out, name)} was prepared by an earlier version, which did not record the "
                                 "source chips' ids and hashes: prepare it again (dataset_prep.py with the same "
                                 "options and --force), then export")
        for r in read_manifest(Path(out, name)):
            chip, sha1 = sources[r["path"]]
            rows.append({"dataset": r["dataset"], "chip": chip, "product": r["product"], "pol": r["pol"],
                         "class": r["class"], "group": r["group"], "split": r["split"], "source_sha1": sha1})
    return sorted(rows, key=lambda r: (r["dataset"], r["chip"], r["product"]))


def export(out, path):
    """Write the split file of the sets under `out` to `path` (atomically); returns {path, chips, bytes, sha1}."""
    import runs  # the one owner of atomic writes

    rows = export_rows(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SPLIT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buf.getvalue()
    runs.write_text_atomic(path, text)
    data = text.encode("utf-8")
    return {"path": str(path), "chips": len(rows), "bytes": len(data), "sha1": hashlib.sha1(data).hexdigest()}


# ---------------------------------------------------------------------------------------------- reading


def read(path):
    """The Plan of split file `path`; SplitFileError naming the file, the problem (and line) and the fix."""
    path = Path(path)
    where = f"split file {path}"
    if not path.exists():
        raise SplitFileError(f"{where}: no such file; give the path of a CSV written by dataset_prep.py "
                             "--export-splits FILE")
    if not path.is_file():
        raise SplitFileError(f"{where}: not a file; give the path of a CSV written by dataset_prep.py "
                             "--export-splits FILE")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SplitFileError(f"{where}: not a UTF-8 text file (a CSV written by dataset_prep.py --export-splits "
                             f"is one): {INTACT}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in SPLIT_COLUMNS if c not in header]
    if missing:
        raise SplitFileError(f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} (the "
                             f"header must be {','.join(SPLIT_COLUMNS)}): {INTACT}")
    plan = Plan(str(path), hashlib.sha1(data).hexdigest())
    for row in reader:
        _add_row(plan, row, reader.line_num, where, len(header))
    if not plan.rows:
        raise SplitFileError(f"{where}: no chips listed (only a header): {INTACT}")
    _check_groups(plan, where)
    return plan


def _add_row(plan, row, line, where, width):
    problem = _row_problem(row, width)
    if problem:
        raise SplitFileError(f"{where}, line {line}: {problem}: {INTACT}")
    key = chip_key(row["dataset"], row["chip"], row["product"])
    if key in plan.rows:
        raise SplitFileError(f"{where}: lines {plan.rows[key]['line']} and {line} both list {describe_key(key)}: "
                             f"{INTACT}")
    plan.rows[key] = dict(row, line=line)


def _row_problem(row, width):
    if None in row or None in row.values():  # csv.DictReader: surplus fields under None, missing ones None
        fields = sum(1 for k, v in row.items() if k is not None and v is not None) + len(row.get(None) or [])
        return f"{fields} fields, expected {width} (one per header column)"
    names = [r.name for r in readers.READERS]
    if row["dataset"] not in names:
        return f"unknown dataset {row['dataset']!r} (this version reads {', '.join(names)})"
    empty = [c for c in ("chip", "class", "group", "split") if not row[c]]
    if empty:
        return f"empty {', '.join(empty)}"
    if row["split"] not in SPLITS:
        return f"split {row['split']!r} is not one of {', '.join(SPLITS)}"
    if not SHA1_RE.match(row["source_sha1"]):
        return f"source_sha1 {row['source_sha1']!r} is not a sha1 (40 lowercase hexadecimal digits)"
    return None


def _check_groups(plan, where):
    # One group on two sides would make every set prepared from the file leak (one ship in train and test).
    first = {}
    for row in plan.rows.values():
        seen = first.setdefault(row["group"], row)
        if seen["split"] != row["split"]:
            raise SplitFileError(f"{where}: group {row['group']} is in {seen['split']} (line {seen['line']}) and "
                                 f"{row['split']} (line {row['line']}), so one ship would be on both sides of the "
                                 f"split: {INTACT}")


def plan_for(args):
    """The Plan of args.split_file (None without one), checked against the options; args.export_splits, the
    export's target, checked too. SplitFileError when either cannot be used."""
    given = getattr(args, "split_file", None)
    plan = read(given) if given else None
    if plan:
        check_options(plan, args)
    if getattr(args, "export_splits", None):
        check_target(args.export_splits, given)
    return plan


def check_options(plan, args):
    """SplitFileError when --product, --pol or --classes would prepare other chips than the file lists."""
    where = f"split file {plan.path}"
    rows = plan.rows.values()
    products = sorted({r["product"] for r in rows if r["product"]})
    if len(products) > 1:
        raise SplitFileError(f"{where} lists chips of several products ({', '.join(products)}): {INTACT}")
    if products and products != [args.product]:
        raise SplitFileError(f"{where} lists --product {products[0]} chips but this run prepares --product "
                             f"{args.product}: run with --product {products[0]}")
    pols = {r["pol"] for r in rows if r["dataset"] == "opensarship"}
    wanted = "both" if pols & CO and pols & CROSS else "cross" if pols & CROSS else "co"
    if pols and args.pol != wanted and not (wanted == "co" and args.pol == "stack"):  # stack: the co chips too
        raise SplitFileError(f"{where} lists OpenSARShip chips of polarisations {', '.join(sorted(pols))} but this "
                             f"run prepares --pol {args.pol}: run with --pol {wanted}")
    classes = sorted({r["class"] for r in rows})
    asked = {c.strip().lower() for c in args.classes.split(",") if c.strip()}
    if asked != {c.lower() for c in classes}:
        raise SplitFileError(f"{where} lists the classes {', '.join(classes)} but this run prepares --classes "
                             f"{args.classes}: run with --classes {','.join(classes)} (a split file fixes the "
                             "classes as well as the split)")


# ---------------------------------------------------------------------------------------------- assigning


def record(common, plan):
    """Add the split file's path and sha1 to the summaries' common part (its sha1 to the options that must match
    for another set to be kept); nothing without a file, so that those summaries keep their bytes."""
    if plan:
        common["options"]["split_file"] = plan.sha1
        common["split_file"] = {"path": plan.path, "sha1": plan.sha1}


def _status(chip, plan):
    """(the file's row or None, why the chip differs from it or None)."""
    row = plan.rows.get(chip_key(chip.dataset, chip.name, chip.product))
    if row is None:
        return None, None
    if row["source_sha1"] != chip.source_sha1:
        return row, f"source file differs (sha1 {chip.source_sha1[:12]} in the data, {row['source_sha1'][:12]} in " \
                    "the split file)"
    if row["class"] != chip.cls:
        return row, f"class {chip.cls} in the data, {row['class']} in the split file"
    return row, None


def assign(chips, plan):
    """Give the decoded chips the file's group and split. Returns (kept chips, duplicate skips, check): chips not
    in the file or changed are left out; identical images are dropped as splits.drop_duplicates does, the chip
    the file lists kept first. check: {path, sha1, chips, matched, missing, extra, changed} (summary.json)."""
    status = {id(c): _status(c, plan) for c in chips}
    # File chips first, so that of two identical images the one the file lists is kept.
    order = sorted(chips, key=lambda c: status[id(c)][0] is None or status[id(c)][1] is not None)
    kept, duplicates = splits.drop_duplicates(order)
    kept_ids = {id(c) for c in kept}
    matched, extra, changed = [], [], []
    for c in (c for c in chips if id(c) in kept_ids):  # the decoding order, as without a file
        row, why = status[id(c)]
        key = chip_key(c.dataset, c.name, c.product)
        if row is None:
            extra.append(describe_key(key))
        elif why:
            changed.append({"chip": describe_key(key), "reason": why})
        else:
            c.group, c.split = row["group"], row["split"]
            matched.append(c)
    # Missing: no chip of the data has its id (a chip there but dropped as an identical image is a skipped chip).
    found = {chip_key(c.dataset, c.name, c.product) for c in chips}
    missing = [describe_key(k) for k in plan.rows if k not in found]
    if not matched:
        raise SplitFileError(f"none of the {len(plan.rows)} chips of split file {plan.path} is in the data found "
                             f"({len(extra)} chip(s) there are not in it, {len(changed)} differ): name the data "
                             "the file was made from (--opensarship PATH, --fusar PATH, or --raw-dir)")
    check = {"path": plan.path, "sha1": plan.sha1, "chips": len(plan.rows), "matched": len(matched),
             "missing": missing, "extra": extra, "changed": changed}
    return matched, duplicates, check


def _named(items):
    more = f"; and {len(items) - SHOWN} more (summary.json lists them all)" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def check_lines(check):
    """Lines for stdout and summary.txt: the file and its hash; with a check (assign's), what did not match."""
    head = f"split file {check['path']} (sha1 {check['sha1']})"
    if "matched" not in check:
        return [f"{head}: the split and groups come from it"]
    lines = [f"{head}: {check['matched']} of its {check['chips']} chips found in the data and given its split "
             "and group"]
    kinds = (("missing", "in the split file but not in the data"),
             ("extra", "in the data but not in the split file, left out of every split"),
             ("changed", "differ from the split file, left out of every split"))
    for key, text in kinds:
        items = [f"{i['chip']}: {i['reason']}" if isinstance(i, dict) else i for i in check[key]]
        if items:
            lines.append(f"  {len(items)} chip(s) {text}: {_named(items)}")
    return lines
