"""Raw OpenSARShip and FUSAR-Ship -> leakage-free train/val/test splits, per dataset and merged, ImageFolder-ready.

    python dataset_prep.py --synthetic                  # demo: write synthetic raw data, then prepare it
    python dataset_prep.py --synthetic --synthetic-chips 300
    python dataset_prep.py                              # real downloads under data/raw/ (see data/README.md)
    python dataset_prep.py --opensarship ~/dl/OpenSARShip_2.zip --fusar ~/dl/FUSAR-Ship1.0.zip
    python dataset_prep.py --product cal --pol both --classes Cargo,Fishing,Tanker,Tug --force
    python dataset_prep.py --val-size 0                 # the study's two splits: train and test, no val
    python dataset_prep.py --split-seed 7 --output-dir data/prepared-split7   # same chips, another split

Inputs. Each dataset has its reader (readers.READERS: opensarship.py, fusar.py), which adds its flag --<dataset>.
By default both datasets are looked for under --raw-dir (data/raw/), in any folder, zip or rar there: OpenSARShip
as scene zips or rars (version 1.0 or 2.0), an outer zip of them, or extracted scene folders, in any mix;
FUSAR-Ship as its zip or folder (nested or flat class folders; meta.csv, meta.xls or no metadata). The synthetic
data under data/raw/synthetic/ is never picked up by this search, so it cannot mix with real data: it is used by
--synthetic, or when named with --opensarship/--fusar. Naming either flag replaces the search:
only the named datasets are prepared. With one dataset found, that one is prepared and there is no mixed set.

Outputs, under --output-dir (data/prepared/), for <set> in fusar, opensarship, mixed:
    <set>/{train,val,test}/<Class>/<dataset>_<chip>.png  single-channel 8-bit PNG at native resolution (val/:
                                                         only with --val-size > 0)
    <set>/masks/{train,val,test}/<Class>/<same name>.png exact ship masks (synthetic data only)
    <set>/manifest.csv                                   one row per chip (MANIFEST_COLUMNS), sorted by path
    <set>/summary.{json,txt}, summary.{json,txt}         counts per split and class, skipped chips with reasons
File names carry the dataset, so `mixed` holds exactly the per-dataset files under the same relative paths.

Split. Stratified by (dataset, class) and grouped: with --group-by mmsi (default) every chip of one MMSI (both
polarisations, the GRD and SLC products, every scene, and both datasets) is on one side; a chip without MMSI is
grouped by its scene position, linked to the same ship in the other products of its acquisition when Ship.xml
gives its position (within 300 m); a FUSAR chip without MMSI is its own group (FUSAR has no scene id).
--group-by scene groups OpenSARShip by acquisition (GRD and SLC twins together) and FUSAR by MMSI as above;
--group-by none makes every chip its own group (leaky: the two polarisations of a ship may be split; for
comparison with the published study only). Groups are shuffled with --split-seed and moved to test while that
brings every (dataset, class) count closer to --test-size of it; a class with two or more groups gets at least one
in each split. Validation (--val-size F, default 0.1) is then carved out of the training groups alone by the same
rule (F of each (dataset, class)'s training chips, its own seeded order), so the test split is exactly the one
--val-size 0 gives; --val-size 0 writes the study's two splits (no val/), byte for byte as before validation
existed. A class with fewer than two training groups in a dataset gets no val chips (a note says so). Groups
span datasets (one MMSI), so `mixed`, the union of the per-dataset splits (train with train, val with val, test
with test, never re-split), is leakage-free too. Images with identical content are kept once.

Split seed. The split is itself a source of variance: --split-seed N chooses the split alone (default: --seed,
which also seeds the synthetic data), so `--synthetic --seed 42 --split-seed 7` writes the raw data of --seed 42
and splits it with 7; omitted, the output is that of --split-seed equal to --seed. To pool results over split
seeds, prepare several copies, one --output-dir each (data/prepared-split1, data/prepared-split2, ...). Every
summary.json, mixed's included, records it as `split_seed`; summary.txt names it when it is not --seed.

Reruns: the run is skipped when the inputs (paths, sizes, modification times), the options and this code are
unchanged (--force rebuilds); a rebuild gives byte-identical files and manifests. With --synthetic the generator
is not rerun either while its raw data and the prepared sets are as the last run left them (another --split-seed
rebuilds the sets from the same raw data). Writes are atomic: everything is built in <output-dir>/.prep-tmp/ and
each set folder is swapped in whole at the end.
"""

import argparse
import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import archives
import opensarship
import readers
import sets
import splits
from archives import DataError, is_archive, open_tree
from cli import HelpFormatter, float_in, int_at_least, run_main
from sets import MANIFEST, MANIFEST_COLUMNS, MIXED, SETS, SUMMARY_JSON, SUMMARY_TXT

# Defaults. The study's: Cargo, Fishing, Tanker; Patch_Uint8 co-polarised chips; 20 % of each class for testing.
# Ours on top (docs/CHANGELOG.md): the split grouped by ship (MMSI); 10 % of the training ships for validation.
CLASSES, PRODUCT, POL, GROUP_BY, TEST_SIZE, VAL_SIZE, SEED = "Cargo,Fishing,Tanker", "uint8", "co", "mmsi", 0.2, 0.1, 42
DEMO_HINT = "  Or run the demo on synthetic data: python dataset_prep.py --synthetic"


def all_sets():
    """Every set this script can write with the registered readers: one per dataset and `mixed`."""
    return sets.ordered([*(r.name for r in readers.READERS), MIXED], SETS)


def where_to_get():
    return "\n".join([*(r.where_to_get for r in readers.READERS), DEMO_HINT])


# ---------------------------------------------------------------------------------------------- arguments


def get_args_parser(add_help=True):
    titles = " and ".join(r.title for r in readers.READERS)
    p = argparse.ArgumentParser(
        description=f"Prepare leakage-free train/val/test splits ({', '.join(all_sets())}) from the raw {titles} "
                    "downloads, or from synthetic data (--synthetic). Commands and details: the docstring at the "
                    "top of dataset_prep.py.",
        formatter_class=HelpFormatter, add_help=add_help)
    p.add_argument("--raw-dir", default="data/raw",
                   help="where to look for every dataset (folders, zips, rars; data/raw/synthetic is skipped); "
                        "--synthetic writes its raw data to <raw-dir>/synthetic/")
    for i, reader in enumerate(readers.READERS):
        others = " or ".join(f"--{r.name}" for r in readers.READERS if r is not reader)
        search = f"; naming this (or {others}) replaces the search under --raw-dir" if i == 0 and others else ""
        p.add_argument(f"--{reader.name}", nargs="+", metavar="PATH", help=f"{reader.title}: {reader.inputs}{search}")
    p.add_argument("--output-dir", default="data/prepared", help="where the prepared sets go")
    p.add_argument("--classes", default=CLASSES,
                   help="comma-separated class names of any dataset (case-insensitive); classes of two datasets "
                        "are one class only when the names are identical")
    p.add_argument("--product", default=PRODUCT, choices=tuple(opensarship.PRODUCTS),
                   help="OpenSARShip chip product: uint8 = Patch_Uint8 (amplitude scaled per chip); cal = "
                        f"Patch_Cal in dB, clipped to {opensarship.CAL_DB_RANGE[0]:g}..{opensarship.CAL_DB_RANGE[1]:g}"
                        " dB for every scene, 8 bits; rgb = the study's Patch_RGB rendered figures in grayscale "
                        "(not chips: only to reproduce the study)")
    p.add_argument("--pol", default=POL, choices=opensarship.POLS,
                   help="OpenSARShip polarisation: co = VV or HH (the only channel of single-pol scenes); cross "
                        "= VH or HV; both = each as its own chip, in one group")
    p.add_argument("--group-by", default=GROUP_BY, choices=("mmsi", "scene", "none"),
                   help="what the split never divides: mmsi = one ship (both polarisations, GRD and SLC, every "
                        "scene; by scene position where no MMSI is known); scene = one acquisition (FUSAR: by "
                        "MMSI); none = nothing (chip-level split: leaky, only to compare with the study)")
    p.add_argument("--test-size", type=float, default=TEST_SIZE, help="fraction of each class in the test split")
    p.add_argument("--val-size", type=float_in(0, 1, high_open=True), default=VAL_SIZE, metavar="F",
                   help="fraction of each class's training chips moved to a val split (grouped by ship and "
                        "stratified like the test split, which it leaves unchanged); 0 = no val split: the "
                        "study's train and test splits")
    p.add_argument("--seed", type=int, default=SEED,
                   help="seed of the synthetic data (with --synthetic) and, unless --split-seed is given, of the split")
    p.add_argument("--split-seed", type=int_at_least(0), default=None, metavar="N",
                   help="seed of the split alone (default: --seed): the same chips (and synthetic data), another "
                        "grouped split; prepare several copies, one --output-dir each, to pool over split seeds")
    p.add_argument("--synthetic", action="store_true",
                   help="write synthetic OpenSARShip and FUSAR-Ship raw data to <raw-dir>/synthetic/, then "
                        "prepare only that")
    p.add_argument("--synthetic-chips", type=int_at_least(1), default=None, metavar="N",
                   help="approximate chips per synthetic dataset (default: synthetic.DEFAULT_CHIPS)")
    p.add_argument("--force", action="store_true", help="rebuild even when inputs and options are unchanged")
    return p


# ---------------------------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """What find_inputs found, per reader name: the trees to search, whether the user named them (`forced`), the
    masks folder (synthetic data); and every path read (for the fingerprint and the output guard)."""
    trees: dict = field(default_factory=lambda: {r.name: [] for r in readers.READERS})
    forced: dict = field(default_factory=lambda: {r.name: False for r in readers.READERS})
    masks: dict = field(default_factory=dict)
    paths: list = field(default_factory=list)


def _masks_beside(path, dataset):
    # The synthetic layout: <dir>/{<dataset>..., masks/<dataset>}; the real datasets have no masks.
    path = Path(path)
    for p in (path.parent, path.parent.parent):
        if (p / "masks" / dataset).is_dir():
            return p / "masks" / dataset
    return None


def find_inputs(args, scratch, progress=False):
    """The Inputs of this run: the synthetic data (--synthetic), the paths named with --<dataset>, or the search
    under --raw-dir."""
    if args.synthetic:
        return _synthetic_inputs(args, scratch, progress)
    if any(getattr(args, r.name) for r in readers.READERS):
        return _named_inputs(args, scratch)
    return _searched_inputs(args, scratch)


def _synthetic_inputs(args, scratch, progress):
    if any(getattr(args, r.name) for r in readers.READERS):
        flags = "/".join(f"--{r.name}" for r in readers.READERS)
        raise SystemExit(f"error: --synthetic prepares only the synthetic data; drop {flags} (synthetic and real "
                         "data must not mix)")
    import synthetic  # only the demo needs the generator
    syn = Path(args.raw_dir) / "synthetic"
    inputs = Inputs(paths=[*(syn / r.name for r in readers.READERS), syn / "masks"])
    # As the last run left it whatever its split seed: another split seed re-splits the same raw data.
    out = Path(args.output_dir)
    last = argparse.Namespace(**dict(vars(args), split_seed=last_summary(out).get("split_seed", args.split_seed)))
    if not args.force and up_to_date(out, fingerprint(last, inputs.paths)):
        print(f"{syn}: synthetic raw data as the last run left it (same size and seed): not regenerated")
    else:
        t0 = time.time()
        print(f"writing synthetic raw data to {syn} ...")
        synthetic.generate(args.raw_dir, n_chips=args.synthetic_chips, seed=args.seed, progress=progress)
        print(f"  done in {time.time() - t0:.1f} s")
    for reader in readers.READERS:
        if (syn / reader.name).is_dir():  # the generator writes <dataset>/ and masks/<dataset>/ per dataset
            inputs.trees[reader.name].append(open_tree(syn / reader.name, scratch=scratch))
            inputs.masks[reader.name] = syn / "masks" / reader.name
            inputs.forced[reader.name] = True
    return inputs


def _named_inputs(args, scratch):
    inputs = Inputs()
    for reader in readers.READERS:
        for given in getattr(args, reader.name) or ():
            path = Path(given).expanduser()
            if not path.exists():
                raise SystemExit(f"error: --{reader.name} {given}: no such file or folder")
            inputs.trees[reader.name].append(open_tree(path, scratch=scratch))
            inputs.paths.append(path)
            inputs.masks.setdefault(reader.name, _masks_beside(path, reader.name))
            inputs.forced[reader.name] = True
    return inputs


def _searched_inputs(args, scratch):
    inputs = Inputs()
    raw = Path(args.raw_dir)
    entries = sorted(p for p in raw.iterdir() if not p.name.startswith(".") and p.name != "synthetic") \
        if raw.is_dir() else []
    for p in entries:
        if not (p.is_dir() or is_archive(p.name)):
            print(f"ignoring {p}: not a folder, zip or rar")
            continue
        tree = open_tree(p, scratch=scratch)
        for reader in readers.READERS:
            inputs.trees[reader.name].append(tree)
        inputs.paths.append(p)
    return inputs


def fingerprint(args, paths):
    """Hash of the options, every input file's path, size and modification time, and the code that prepares
    (this script, its helper modules, the readers)."""
    h = hashlib.sha1()
    opts = {k: getattr(args, k) for k in ("classes", "product", "pol", "group_by", "test_size", "val_size",
                                          "seed", "split_seed", "synthetic", "synthetic_chips")}
    h.update(json.dumps(opts, sort_keys=True).encode())
    for path in sorted(set(paths)):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    modules = [__file__, archives.__file__, readers.__file__, splits.__file__, sets.__file__]
    modules += [inspect.getfile(type(r)) for r in readers.READERS]
    if args.synthetic:
        modules += sys.modules["synthetic"].SOURCES  # the generator's modules
    for module in modules:
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def last_summary(out):
    """The summary.json the last run wrote in `out` ({} when there is none)."""
    previous = out / SUMMARY_JSON
    return json.loads(previous.read_text()) if previous.is_file() else {}


def up_to_date(out, fp):
    """The summary of `out` was written for this fingerprint and every set it lists is still there."""
    old = last_summary(out)
    return old.get("fingerprint") == fp and all((out / s / MANIFEST).is_file() for s in old.get("sets", {}))


# ---------------------------------------------------------------------------------------------- classes


def resolve_classes(text, available):
    """Requested class names -> the datasets' spelling. `available`: {dataset: Counter(class)} of the data found.

    A name is known when the data holds it or when it is a class name of any dataset (so Fishing is accepted on
    data that happens to have none; the caller warns); anything else is an error listing what is there.
    """
    found = sorted({c for counts in available.values() for c in counts})
    known = found + sorted({c for r in readers.READERS for c in r.classes} - set(found))
    wanted, unknown = [], []
    for raw in (c.strip() for c in text.split(",")):
        if not raw:
            continue
        match = [n for n in known if n == raw] or [n for n in known if n.lower() == raw.lower()]
        if match:
            if match[0] not in wanted:
                wanted.append(match[0])
        else:
            unknown.append(raw)
    if unknown or not wanted:
        lines = [f"  {n}: " + ", ".join(f"{r.name} {available[r.name][n]}" for r in readers.READERS
                                         if available.get(r.name, {}).get(n))
                 for n in found]
        what = f"unknown class{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}" if unknown \
            else "no class given"
        raise SystemExit(f"error: {what} in --classes. Available classes (chips per dataset):\n" + "\n".join(lines))
    return sorted(wanted)


def check_found(args, available, forced):
    """Exit with a message when no chips were found, or none in a path the user named."""
    if not any(available.values()):
        if any(forced.values()):
            named = " ".join(f"--{r.name} {' '.join(getattr(args, r.name) or [])}" for r in readers.READERS
                             if forced[r.name])
            expected = " or ".join(r.expected for r in readers.READERS)
            raise SystemExit(f"error: no chips found in {named}: expected {expected}\nWhere to get them:\n"
                             + where_to_get())
        titles = " or ".join(r.title for r in readers.READERS)
        flags = " and ".join(f"--{r.name} PATH" for r in readers.READERS)
        raise SystemExit(f"error: no {titles} data found in {args.raw_dir}/ (the synthetic data in "
                         f"{args.raw_dir}/synthetic/ is not searched).\nPut the downloads under {args.raw_dir}/ (any "
                         f"folder, zip or rar there), or name them with {flags}. Where to get them:\n" + where_to_get())
    for r in readers.READERS:
        if forced[r.name] and not available[r.name]:
            raise SystemExit(f"error: no {r.title} chips found in --{r.name} {' '.join(getattr(args, r.name) or [])}")


def choose_classes(args, available, present, notes):
    """The classes to prepare (those with chips), warning about and noting the others; appends to `notes`."""
    classes = resolve_classes(args.classes, available)
    empty = [k for k in classes if not any(counts[k] for counts in available.values())]
    if len(empty) == len(classes):
        raise SystemExit(f"error: none of the classes {', '.join(classes)} has chips in the data found; "
                         f"available: {', '.join(sorted({k for counts in available.values() for k in counts}))}")
    for k in empty:
        print(f"warning: no {k} chips in the data found: the prepared sets have no {k} class", file=sys.stderr)
    classes = [k for k in classes if k not in empty]
    if len(present) == 1:
        absent = " or ".join(r.title for r in readers.READERS if r not in present)
        print(f"only {present[0].title} found (no {absent}): preparing the {present[0].name} set, no mixed set")
    notes += [f"no {k} chips in the data found (class dropped)" for k in empty]
    notes += [f"{r.title} has no {k} chips" for r in present for k in classes if not available[r.name][k]]
    for r in present:
        for warning in r.option_warnings(args):
            print(f"warning: {warning}", file=sys.stderr)
    return classes


# ---------------------------------------------------------------------------------------------- writing


def _place(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the sets share one copy of each file (mixed = the per-dataset files)
    except OSError:
        shutil.copyfile(src, dst)


def manifest_row(c):
    rel = f"{c.split}/{c.cls}/{c.file}"
    row = {k: c[k] for k in MANIFEST_COLUMNS if k not in ("path", "mask")}
    row.update(path=rel, mask=f"masks/{rel}" if c.staged_mask else "")
    return {k: "" if row[k] is None else str(row[k]) for k in MANIFEST_COLUMNS}


def write_set(work, name, chips, classes, skips, summary_common, split_names):
    set_dir = work / name
    set_dir.mkdir(parents=True)
    rows = []
    for c in chips:
        row = manifest_row(c)
        _place(c.staged, set_dir / row["path"])
        if c.staged_mask:
            _place(c.staged_mask, set_dir / row["mask"])
        rows.append(row)
    sets.write_manifest(set_dir / MANIFEST, sorted(rows, key=lambda r: r["path"]))
    counts = {s: {k: 0 for k in classes} for s in split_names}
    for c in chips:
        counts[c.split][c.cls] += 1
    info = {"counts": counts, "classes": sorted({c.cls for c in chips}),
            "groups": {s: len({c.group for c in chips if c.split == s}) for s in split_names}}
    summary = dict(summary_common, set=name, **info,
                   skipped=dict(sorted(Counter(r for _, _, r, _ in skips).items())),
                   skipped_items=[{"dataset": d, "source": s, "reason": r, "detail": t} for d, s, r, t in skips])
    table = splits.format_table({name: info}, classes)
    _write_summary(set_dir, summary, table + "\n" + splits.format_skips(skips))
    return info


def _write_summary(folder, summary, table):
    (folder / SUMMARY_JSON).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    lines = [table]
    items = summary.get("skipped_items") or []
    if items:
        lines += ["", "skipped chips (source: reason, detail):"]
        lines += [f"  {i['source']}: {i['reason']} ({i['detail']})" for i in items]
    if summary["split_seed"] != summary["options"]["seed"]:  # named only where it differs: else bytes as before
        lines += ["", f"split seed {summary['split_seed']} (--split-seed; --seed {summary['options']['seed']})"]
    if summary.get("notes"):
        lines += ["", "notes:"] + [f"  {n}" for n in summary["notes"]]
    (folder / SUMMARY_TXT).write_text("\n".join(lines) + "\n")


def _guard_output(out, paths):
    o = out.resolve()
    names = all_sets()
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


def _swap_in(out, work, produced):
    # Each set is swapped in whole; sets this run did not produce are removed (they would not match the others).
    for name in all_sets():
        final = out / name
        if final.exists():
            final.rename(work / f"old-{name}")
            if name not in produced:
                print(f"removed {final} (not produced by this run)")
        if name in produced:
            (work / name).rename(final)
    for f in (SUMMARY_TXT, SUMMARY_JSON):
        os.replace(work / f, out / f)


# ---------------------------------------------------------------------------------------------- main


def main(args):
    if not 0.0 < args.test_size < 1.0:
        raise SystemExit(f"error: --test-size must be between 0 and 1 (exclusive), got {args.test_size}")
    if getattr(args, "split_seed", None) is None:
        args.split_seed = args.seed  # --split-seed omitted: the split of --seed, as before the option existed
    out = Path(args.output_dir)
    progress = sys.stderr.isatty()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".prep-tmp"
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted run
    (work / "staging").mkdir(parents=True)
    try:
        try:
            return _prepare(args, out, work, progress)
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that stopped with an error leaves no empty output folder behind


def _prepare(args, out, work, progress):
    inputs = find_inputs(args, scratch=work, progress=progress)
    t0 = time.time()  # the preparation alone (the synthetic generator reports its own time)
    _guard_output(out, inputs.paths)
    fp = fingerprint(args, inputs.paths)
    if not args.force and up_to_date(out, fp):
        print(f"{out}: up to date (same inputs, options and code); --force rebuilds")
        print((out / SUMMARY_TXT).read_text().rstrip())
        return json.loads((out / SUMMARY_JSON).read_text())

    jobs, skips, notes = splits.list_all(inputs.trees, inputs.forced, args, progress)
    available = {r.name: Counter(c.cls for rr, _, chips in jobs if rr is r for c in chips) for r in readers.READERS}
    check_found(args, available, inputs.forced)
    present = [r for r in readers.READERS if available[r.name]]
    classes = choose_classes(args, available, present, notes)
    chips, more_skips, more_notes = splits.decode_all(jobs, set(classes), inputs.masks, work / "staging", progress)
    chips, duplicates = splits.drop_duplicates(chips)
    skips += more_skips + duplicates
    splits.assign_groups(chips, args.group_by)
    splits.split_groups(chips, args.test_size, args.split_seed, args.val_size)
    splits.name_files(chips)
    produced = sets.ordered([r.name for r in present], SETS) + ([MIXED] if len(present) > 1 else [])
    notes += more_notes + splits.shared_group_notes(chips, present) + splits.val_notes(chips, produced,
                                                                                         args.val_size)
    common = {"fingerprint": fp, "classes": classes, "synthetic": bool(args.synthetic), "split_seed": args.split_seed,
              "options": {k: getattr(args, k) for k in ("classes", "product", "pol", "group_by", "test_size",
                                                        "val_size", "seed", "synthetic_chips")},
              "notes": notes}
    tables = {name: write_set(work, name, [c for c in chips if name == MIXED or c.dataset == name], classes,
                              [s for s in skips if name == MIXED or s[0] == name], common,
                              splits.split_names(args.val_size)) for name in produced}
    table = splits.format_table(tables, classes)
    seconds = time.time() - t0
    # No timings or dates in the written summaries: a rebuild from the same inputs gives identical bytes.
    summary = dict(common, sets=tables,
                   skipped=dict(sorted(Counter(f"{d}: {r}" for d, _, r, _ in skips).items())),
                   skipped_items=[{"dataset": d, "source": s, "reason": r, "detail": t} for d, s, r, t in skips])
    _write_summary(work, summary, table + "\n" + splits.format_skips(skips))
    _swap_in(out, work, produced)

    print(f"prepared sets in {out} in {seconds:.1f} s (classes {', '.join(classes)}; product {args.product}, "
          f"pol {args.pol}; group by {args.group_by}; test size {args.test_size}; val size {args.val_size}; "
          f"seed {args.seed}; split seed {args.split_seed})")
    print(table)
    print(splits.format_skips(skips) + (f" (listed in {out}/{SUMMARY_TXT})" if skips else ""))
    for n in notes:
        print(f"note: {n}")
    return dict(summary, seconds=seconds)


if __name__ == "__main__":
    run_main("dataset_prep.py", lambda: main(get_args_parser().parse_args()),
                   kept="the prepared sets already in place are kept unchanged")
