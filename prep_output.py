"""dataset_prep.py's output folder: what is there, what a run keeps, checks and writes, and the swap at the end.

    prep_output.guard_output(out, input_paths, set_names)          # exits when the output overlaps the inputs
    prep_output.up_to_date(out, fingerprint)                       # the last run's summary is for these inputs
    prep_output.damage(out, ["fusar"], verify=False)               # ['fusar/test/Cargo/x.png: missing', ...]
    kept, removed = prep_output.other_sets(out, produced, set_names, options, remove=False, verify=False)
    info = prep_output.write_set_folder(work / "fusar", items, classes, skips, common, split_names)
    prep_output.swap_in(out, work, produced, kept, set_names, removed)

Everything is built in <output-dir>/.prep-tmp/ and renamed into place at the end, one set folder at a time.

Other sets. A per-dataset set already in the output folder that this run does not prepare (its dataset not named,
or its raw data gone) is kept, untouched with its decoded cache, when its summary.json records the same options
(OPTION_KEYS: the options, the split seed, synthetic or not); one made with other options, or damaged, stops the
run, unless --remove-other-sets, which removes every such set. `mixed` is then the union of the per-dataset sets
present, never an older union: rebuilt whenever they change, and not written (an old one removed) when a ship
group sits in two splits across sets split by different runs.

File check. Each set's summary.json lists its files (chips and masks) under "files" as {path: [bytes, sha1]};
`damage` compares every size, and with verify every sha1. A set prepared before the list existed is checked
against its manifest (each chip there; sha1 with verify). Beside them, "source_chips" keeps each chip's id and the
sha1 of its raw file (split_files.py: what --export-splits writes); a set's summary.txt names the split file it was
prepared from, if any.
"""

import hashlib
import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import split_files
import splits
from sets import (MANIFEST, MANIFEST_COLUMNS, MIXED, SETS, STACKED, SUMMARY_JSON, SUMMARY_TXT, load_summary, ordered,
                  read_manifest, write_manifest)

OPTION_KEYS = ("options", "split_seed", "synthetic")  # what must match for another dataset's set to be kept
SHOWN = 5  # damaged files named in a message; the others counted


def last_summary(out):
    """The summary.json the last run wrote in `out` ({} when there is none or it cannot be read)."""
    previous = Path(out) / SUMMARY_JSON
    try:
        return json.loads(previous.read_text()) if previous.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged summary: not up to date, so the run rebuilds and rewrites it


def up_to_date(out, fp):
    """The summary of `out` was written for this fingerprint and every set it lists is still there."""
    old = last_summary(out)
    return old.get("fingerprint") == fp and all((out / s / MANIFEST).is_file() for s in old.get("sets", {}))


# ---------------------------------------------------------------------------------------------- checks


def set_damage(set_dir, verify=False):
    """What is wrong with the files of one prepared set: ["<set>/<path>: missing", ...], [] when intact."""
    set_dir = Path(set_dir)
    try:
        files = load_summary(set_dir.parent, set_dir.name).get("files")
        if files is None:  # prepared before sizes were recorded: the manifest's chips and their sha1
            files = {r["path"]: [None, r["sha1"]] for r in read_manifest(set_dir)}
    except (OSError, ValueError, KeyError) as e:
        return [f"{set_dir.name}/{SUMMARY_JSON} or {MANIFEST}: unreadable ({e})"]
    problems = []
    for rel, (size, sha1) in files.items():
        path = set_dir / rel
        if not path.is_file():
            problems.append(f"{set_dir.name}/{rel}: missing")
        elif size is not None and path.stat().st_size != size:
            problems.append(f"{set_dir.name}/{rel}: {path.stat().st_size} bytes, expected {size}")
        elif verify and sha1 and hashlib.sha1(path.read_bytes()).hexdigest() != sha1:
            problems.append(f"{set_dir.name}/{rel}: content differs (sha1)")
    return problems


def damage(out, names, verify=False):
    """set_damage of every set `names` under `out`, in one list."""
    return [p for name in names for p in set_damage(Path(out) / name, verify)]


def describe(problems):
    """The first SHOWN problems, joined, and how many more."""
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return "; ".join(problems[:SHOWN]) + more


def option_differences(summary, options, ignore=()):
    """What differs between a set's summary.json and this run's options ({OPTION_KEYS: ...}), as text; the option
    names in `ignore` aside."""
    if "options" not in summary:
        return ["no options recorded (prepared by an earlier version)"]
    old = dict(summary["options"], split_seed=summary.get("split_seed"), synthetic=summary.get("synthetic"))
    new = dict(options["options"], split_seed=options["split_seed"], synthetic=options["synthetic"])
    return [f"{k} {old.get(k)} (this run: {new.get(k)})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in ignore]


def other_sets(out, produced, names, options, remove=False, verify=False):
    """The sets of `names` (mixed aside) in `out` that this run does not produce: ([names to keep], {name: why}
    to remove). Kept: those made with the same options (a stacked set: --pol stack or co), intact. Any other stops
    the run, unless `remove` (--remove-other-sets), which removes them all."""
    kept, removed = [], {}
    for name in names:
        set_dir = Path(out) / name
        if name == "mixed" or name in produced or not (set_dir / MANIFEST).is_file():
            continue
        if remove:
            removed[name] = "--remove-other-sets"
            continue
        again = f"prepare it again with this run's options (name its data too: --{name} PATH)"
        try:
            # a stacked set is the dual-pol part of a co set split with the same options: a co run keeps it
            co_run = name in STACKED and options["options"].get("pol") == "co"
            differences = option_differences(load_summary(out, name), options, ("pol",) if co_run else ())
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {set_dir / SUMMARY_JSON} cannot be read ({e}), so whether {name} was "
                             f"prepared like this run is unknown: {again}, or remove it with --remove-other-sets"
                             ) from None
        if differences:
            raise SystemExit(f"error: {set_dir} was prepared with other options ({'; '.join(differences)}) and this "
                             f"run does not prepare {name}, so the folder would hold sets of two preparations: "
                             f"{again}, remove it with --remove-other-sets, or choose another --output-dir")
        problems = set_damage(set_dir, verify)
        if problems:
            raise SystemExit(f"error: {set_dir} is damaged ({describe(problems)}) and this run does not prepare "
                             f"{name}, so it cannot rebuild it: {again}, or remove it with --remove-other-sets")
        kept.append(name)
        print(f"kept {set_dir}: made earlier with the same options and seed, not prepared by this run "
              "(--remove-other-sets removes it)")
    return kept, removed


def set_records(out, names):
    """{name: [(class, group, split), ...]} of prepared sets under `out`, from their manifests."""
    return {n: [(r["class"], r["group"], r["split"]) for r in read_manifest(Path(out) / n)] for n in names}


def mixed_plan(records):
    """(records of mixed or None, warning or None). records: {per-dataset set: [(class, group, split)]} of every
    set present after this run. Mixed is their union, unless fewer than two, or a group in two splits across them
    (sets split by different runs: their union would put one ship on both sides)."""
    if len(records) < 2:
        return None, None
    union = [rec for recs in records.values() for rec in recs]
    sides = defaultdict(set)
    for _, group, split in union:
        sides[group].add(split)
    conflicts = sorted(g for g, s in sides.items() if len(s) > 1)
    if not conflicts:
        return union, None
    flags = " ".join(f"--{n} PATH" for n in records)
    return None, (f"mixed not written: {len(conflicts)} ship group(s) ({', '.join(conflicts[:SHOWN])}) are on "
                  f"different sides of the split in {', '.join(records)}, split by different runs: their union "
                  "would put a ship in two splits, and a model trained on one of these sets has seen ships of "
                  f"another's test split. Prepare every dataset in one run ({flags}) for a leakage-free mixed set")


# ---------------------------------------------------------------------------------------------- writing


def place(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the sets share one copy of each file (mixed = the per-dataset files)
    except OSError:
        shutil.copyfile(src, dst)


def file_record(set_dir, rows):
    """{path: [bytes, sha1]} of every chip (sha1 from its manifest row) and mask of a written set, sorted."""
    files = {}
    for row in rows:
        files[row["path"]] = [(set_dir / row["path"]).stat().st_size, row["sha1"]]
        if row["mask"]:
            content = (set_dir / row["mask"]).read_bytes()
            files[row["mask"]] = [len(content), hashlib.sha1(content).hexdigest()]
    return dict(sorted(files.items()))


def write_set_folder(set_dir, items, classes, skips, common, split_names, sources=None):
    """Write one set: items are (manifest row, chip file, mask file or None); skips (dataset, source, reason,
    detail); sources {path: [chip id, source sha1]} (split_files.SOURCE_CHIPS, what --export-splits reads). Returns
    its info for the summaries: counts per split and class, classes, groups per split."""
    set_dir.mkdir(parents=True)
    for row, chip, mask in items:
        place(chip, set_dir / row["path"])
        if mask:
            place(mask, set_dir / row["mask"])
    rows = sorted((row for row, _, _ in items), key=lambda r: r["path"])
    write_manifest(set_dir / MANIFEST, rows)
    counts = {s: {k: 0 for k in classes} for s in split_names}
    for r in rows:
        counts[r["split"]][r["class"]] += 1
    info = {"counts": counts, "classes": sorted({r["class"] for r in rows}),
            "groups": {s: len({r["group"] for r in rows if r["split"] == s}) for s in split_names}}
    summary = dict(common, set=set_dir.name, **info, files=file_record(set_dir, rows),
                   skipped=dict(sorted(Counter(r for _, _, r, _ in skips).items())),
                   skipped_items=skip_items(skips),
                   **({split_files.SOURCE_CHIPS: dict(sorted(sources.items()))} if sources is not None else {}))
    table = splits.format_table({set_dir.name: info}, classes)
    write_summary(set_dir, summary, table + "\n" + splits.format_skips(skips))
    return info


def skip_items(skips):
    """Skipped chips (dataset, source, reason, detail) as summary.json lists them (write_union reads them back)."""
    return [{"dataset": d, "source": s, "reason": r, "detail": t} for d, s, r, t in skips]


def write_union(set_dir, parts, classes, common, split_names):
    """Write `set_dir` (mixed) as the union of the set folders `parts`, file for file, with their skipped chips."""
    items, skips, sources = [], [], {}
    for part in parts:
        items += [(row, part / row["path"], part / row["mask"] if row["mask"] else None)
                  for row in read_manifest(part)]
        summary = load_summary(part.parent, part.name)
        skips += [(i["dataset"], i["source"], i["reason"], i["detail"]) for i in summary.get("skipped_items", [])]
        # A part prepared before the source chips were recorded leaves mixed without them too.
        sources = None if sources is None or split_files.SOURCE_CHIPS not in summary else \
            {**sources, **summary[split_files.SOURCE_CHIPS]}
    return write_set_folder(set_dir, items, classes, skips, common, split_names, sources)


def set_info(set_dir):
    """A prepared set's info for the summaries (counts, classes, groups), from its summary.json."""
    summary = load_summary(Path(set_dir).parent, Path(set_dir).name)
    return {k: summary[k] for k in ("counts", "classes", "groups")}


def write_summary(folder, summary, table):
    (folder / SUMMARY_JSON).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    lines = [table]
    items = summary.get("skipped_items") or []
    if items:
        lines += ["", "skipped chips (source: reason, detail):"]
        lines += [f"  {i['source']}: {i['reason']} ({i['detail']})" for i in items]
    # Named only where it differs (else the bytes of before), and not where a split file chose the split.
    if summary["split_seed"] != summary["options"]["seed"] and not summary.get("split_file"):
        lines += ["", f"split seed {summary['split_seed']} (--split-seed; --seed {summary['options']['seed']})"]
    if summary.get("split_file"):
        lines += ["", *split_files.check_lines(summary["split_file"])]
    if summary.get("kept"):
        lines += ["", "kept from an earlier run with the same options: " + ", ".join(summary["kept"])]
    if summary.get("warnings"):
        lines += ["", "warnings:"] + [f"  {w}" for w in summary["warnings"]]
    if summary.get("notes"):
        lines += ["", "notes:"] + [f"  {n}" for n in summary["notes"]]
    (folder / SUMMARY_TXT).write_text("\n".join(lines) + "\n")


def guard_output(out, paths, names):
    """Exit when --output-dir overlaps an input, or when a set folder of `names` is there but is no prepared set."""
    o = out.resolve()
    for p in (Path(p).resolve() for p in paths):
        # Inputs inside a set folder would be replaced; an output inside the inputs would be read back as input.
        if p == o or p in o.parents or any(p == o / s or (o / s) in p.parents for s in names):
            raise SystemExit(f"error: --output-dir {out} overlaps the input {p}: choose an --output-dir outside "
                             "the raw data")
    for s in names:
        target = o / s
        if target.exists() and not (target / MANIFEST).is_file():
            raise SystemExit(f"error: {target} exists and is not a prepared set (no {MANIFEST}); move it away "
                             "or choose another --output-dir")


def swap_in(out, work, produced, kept, names, removed):
    """Rename each produced set into place whole (its decoded cache carried over when its manifest is unchanged),
    leave the kept ones alone, remove any other (`removed`: {name: why}, printed)."""
    for name in names:
        final, old = out / name, work / f"old-{name}"
        if name in kept or (name not in produced and not final.exists()):
            continue
        if final.exists():
            final.rename(old)
        if name in produced:
            (work / name).rename(final)
            _carry_cache(old, final)
        else:
            print(f"removed {final} ({removed.get(name, 'not produced by this run')})")
    for f in (SUMMARY_TXT, SUMMARY_JSON):
        os.replace(work / f, out / f)


def _carry_cache(old, new):
    # The decoded cache (data.py) is keyed by the manifest: the same manifest, the same chips, still valid.
    cache = old / ".cache"
    if cache.is_dir() and not (new / ".cache").exists() and \
            (old / MANIFEST).read_bytes() == (new / MANIFEST).read_bytes():
        cache.rename(new / ".cache")


# ---------------------------------------------------------------------------------------------- the sets of a run


def manifest_row(c):
    """A staged readers.Chip as its manifest row (MANIFEST_COLUMNS, text)."""
    rel = f"{c.split}/{c.cls}/{c.file}"
    row = {k: c[k] for k in MANIFEST_COLUMNS if k not in ("path", "mask")}
    row.update(path=rel, mask=f"masks/{rel.rsplit('.', 1)[0]}.png" if c.staged_mask else "")  # masks are PNGs
    return {k: "" if row[k] is None else str(row[k]) for k in MANIFEST_COLUMNS}


def write_set(work, name, chips, classes, skips, summary_common, split_names):
    rows = [manifest_row(c) for c in chips]
    items = [(row, c.staged, c.staged_mask) for row, c in zip(rows, chips)]
    sources = {row["path"]: [c.name, c.source_sha1] for row, c in zip(rows, chips)}  # what --export-splits reads
    return write_set_folder(work / name, items, classes, skips, summary_common, split_names, sources)


def write_sets(out, work, produced, kept, chips, skips, classes, common, split_names, stacked):
    """Write the produced sets in `work` (mixed last: from the chips, or with kept sets as the union of the
    single-channel set folders; stacked sets ({name: chips}, stacking.py) are never part of it); returns ({set:
    info} with the kept sets' too, the classes of the table)."""
    kept_info = {n: set_info(Path(out) / n) for n in kept}
    table_classes = sorted(set(classes).union(*(info["classes"] for info in kept_info.values())))
    tables = {}
    for name in ordered([n for n in produced if n != MIXED] + kept, SETS):
        if name in kept:
            tables[name] = kept_info[name]
        else:
            own = stacked[name] if name in stacked else [c for c in chips if c.dataset == name]
            tables[name] = write_set(work, name, own, table_classes, [s for s in skips if s[0] == name], common,
                                     split_names)
    if MIXED in produced and kept:
        parts = [Path(out) / n if n in kept else work / n for n in tables if n not in STACKED]
        tables[MIXED] = write_union(work / MIXED, parts, table_classes, common, split_names)
    elif MIXED in produced:
        tables[MIXED] = write_set(work, MIXED, chips, table_classes, [s for s in skips if s[0] not in STACKED],
                                  common, split_names)
    return tables, table_classes
