"""Raw OpenSARShip and FUSAR-Ship -> leakage-free train/val/test splits, per dataset and merged, ImageFolder-ready.

    python dataset_prep.py --synthetic                  # demo: write synthetic raw data, then prepare it
    python dataset_prep.py --synthetic --synthetic-chips 300
    python dataset_prep.py                              # real downloads under data/raw/ (see data/README.md)
    python dataset_prep.py --opensarship ~/dl/OpenSARShip_2.zip --fusar ~/dl/FUSAR-Ship1.0.zip
    python dataset_prep.py --product cal --pol both --classes Cargo,Fishing,Tanker,Tug --force
    python dataset_prep.py --pol stack                  # also opensarship-stack: dual-pol chips as (co, cross)
    python dataset_prep.py --val-size 0                 # the study's two splits: train and test, no val
    python dataset_prep.py --split-seed 7 --output-dir data/prepared-split7   # same chips, another split
    python dataset_prep.py --export-splits paper-split.csv     # also write the split as a small CSV (no imagery)
    python dataset_prep.py --split-file paper-split.csv        # prepare exactly that split from your own copy

Inputs. Each dataset has its reader (readers.READERS: opensarship.py, fusar.py), which adds its flag --<dataset>.
By default both datasets are looked for under --raw-dir (data/raw/), in any folder, zip or rar there: OpenSARShip
as scene zips or rars (version 1.0 or 2.0), an outer zip of them, or extracted scene folders, in any mix;
FUSAR-Ship as its zip or folder (nested or flat class folders; meta.csv, meta.xls or no metadata). The synthetic
data under data/raw/synthetic/ is never picked up by this search, so it cannot mix with real data: it is used by
--synthetic, or when named with --opensarship/--fusar. Naming either flag replaces the search:
only the named datasets are prepared (the sets of the others already in --output-dir: see Other sets). With one
dataset found and no other set kept, that one is prepared and there is no mixed set.

Outputs, under --output-dir (data/prepared/), for <set> in fusar, opensarship, mixed:
    <set>/{train,val,test}/<Class>/<dataset>_<chip>.png  single-channel 8-bit PNG at native resolution (val/:
                                                         only with --val-size > 0)
    <set>/masks/{train,val,test}/<Class>/<same name>.png exact ship masks (synthetic data only)
    <set>/manifest.csv                                   one row per chip (MANIFEST_COLUMNS), sorted by path
    <set>/summary.{json,txt}, summary.{json,txt}         counts per split and class, skipped chips with reasons,
                                                         warnings, notes; <set>/summary.json lists every file
                                                         of the set with its size and sha1 ("files")
File names carry the dataset, so `mixed` holds exactly the per-dataset files under the same relative paths.
With --pol stack (stacking.py) the sets above are those of a --pol co run, byte for byte, and opensarship-stack
holds every dual-pol OpenSARShip chip as a 2-channel (co, cross) 8-bit TIFF, <same name without the
polarisation>.tif, in its co chip's split and group; the co chips of single-pol scenes are its skipped chips. It is
never part of mixed, and a split file lists only the co chips (the stacked set follows them).

Refusals and warnings. A set that would hold fewer than two classes stops the run before anything is written
(choose classes with --classes). Printed and written to summary.txt: a class with a single group (ship) in a set,
which gets no test chips; sets with different class lists, between which test_models.py refuses to evaluate.

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

Other sets. A per-dataset set already in --output-dir whose dataset this run does not prepare (not named, or its
raw data gone) is kept untouched, its decoded cache too, when its summary.json records the same options and seed
(--force rebuilds only what this run prepares); one made with other options, or damaged, stops the run with a
message, and --remove-other-sets removes every such set instead. `mixed` is always the union of the per-dataset
sets present after the run, rebuilt with them; when a ship group sits in two splits across sets split by
different runs, no mixed set is written (a warning says so; prepare every dataset in one run).

Split seed. The split is itself a source of variance: --split-seed N chooses the split alone (default: --seed,
which also seeds the synthetic data), so `--synthetic --seed 42 --split-seed 7` writes the raw data of --seed 42
and splits it with 7; omitted, the output is that of --split-seed equal to --seed. To pool results over split
seeds, prepare several copies, one --output-dir each (data/prepared-split1, data/prepared-split2, ...). Every
summary.json, mixed's included, records it as `split_seed`; summary.txt names it when it is not --seed.

Split files (split_files.py: the columns, the checks). --export-splits FILE writes, after preparing (or finding
the sets up to date: nothing is rebuilt), one row per chip of the per-dataset sets: dataset, a stable chip id
(OpenSARShip: scene, chip centre, polarisation; FUSAR-Ship: the file id), product, polarisation, class, group,
split, and the sha1 of the chip's source file as the raw data stores it, so that the file can be published
beside a paper. --split-file FILE prepares exactly that split from another copy of the data: every chip gets the
file's group and split (--group-by, --test-size, --val-size and --split-seed are not used; --product, --pol and
--classes must be the file's); chips of the file not in the data, chips of the data not in the file and chips
whose source sha1 or class differs are counted and named on stdout, in summary.txt (the first ten of each) and in
summary.json (all), and the last two are left out of every split, never reassigned. Preparing from an exported
file gives the same manifests, byte for byte. summary.json records the file's path and sha1 (report.md prints
it). A missing or malformed file stops the run before anything is written, with the line and the fix.

Reruns: the run is skipped when the inputs (paths, sizes, modification times), the options and this code are
unchanged and every file the summaries list is there at its size (--verify: and its sha1); a damaged set is
named file by file and rebuilt. --force rebuilds; a rebuild gives byte-identical files and manifests. With
--synthetic the generator is not rerun either while its raw data and the prepared sets are as the last run left
them (another --split-seed rebuilds the sets from the same raw data). Writes are atomic: everything is built in
<output-dir>/.prep-tmp/ and each set folder is swapped in whole at the end.
"""

import argparse
import hashlib
import inspect
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import archives
import opensarship
import opensarship_pixels
import prep_classes
import prep_output
import readers
import sets
import ship_xml
import split_files
import splits
import stacking
from archives import DataError, is_archive, open_tree
from cli import HelpFormatter, float_in, int_at_least, run_main, writable
from sets import MIXED, SETS, SUMMARY_JSON, SUMMARY_TXT

# Defaults. The study's: Cargo, Fishing, Tanker; Patch_Uint8 co-polarised chips; 20 % of each class for testing.
# Ours on top (docs/CHANGELOG.md): the split grouped by ship (MMSI); 10 % of the training ships for validation.
CLASSES, PRODUCT, POL, GROUP_BY, TEST_SIZE, VAL_SIZE, SEED = "Cargo,Fishing,Tanker", "uint8", "co", "mmsi", 0.2, 0.1, 42
def all_sets():
    """Every set this script can write with the registered readers: one per dataset, `mixed`, and the stacked sets
    of the datasets that have them (--pol stack)."""
    names = [r.name for r in readers.READERS]
    return sets.ordered([*names, MIXED, *(s for s, base in sets.STACKED.items() if base in names)], SETS)


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
                        "= VH or HV; both = each as its own chip, in one group; stack = the co sets, and the "
                        "dual-pol chips again as 2-channel (co, cross) TIFFs in the set opensarship-stack, each in "
                        "its co chip's split (--product uint8: the co chip and the Patch/ cross amplitude on its "
                        "scale; --product cal: both Patch_Cal/ bands in dB)")
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
    p.add_argument("--remove-other-sets", action="store_true",
                   help="remove the prepared sets in --output-dir of datasets this run does not prepare (without "
                        "it, one made with the same options and seed is kept and any other stops the run)")
    p.add_argument("--verify", action="store_true",
                   help="check the sha1 of every prepared file against its summary.json before calling the sets "
                        "up to date (without it: every file there, at its recorded size)")
    p.add_argument("--export-splits", metavar="FILE", help="then write the split as a CSV, one row per chip "
                   "(dataset, chip id, product, pol, class, group, split, sha1 of its source file)")
    p.add_argument("--split-file", metavar="FILE",
                   help="prepare exactly the split of FILE (written by --export-splits) from this data: chips "
                        "missing, extra or changed are counted, named and left out, never reassigned; replaces "
                        "--group-by, --test-size, --val-size and --split-seed")
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
    last_seed = prep_output.last_summary(out).get("split_seed", args.split_seed)
    last = argparse.Namespace(**dict(vars(args), split_seed=last_seed))
    if not args.force and prep_output.up_to_date(out, fingerprint(last, inputs.paths)):
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
    if getattr(args, "split_plan", None):  # the key only with a split file: else the fingerprints of before
        opts["split_file"] = args.split_plan.sha1
    h.update(json.dumps(opts, sort_keys=True).encode())
    for path in sorted(set(paths)):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    modules = [__file__, archives.__file__, readers.__file__, splits.__file__, sets.__file__, prep_classes.__file__,
               prep_output.__file__, ship_xml.__file__, split_files.__file__, stacking.__file__,
               opensarship_pixels.__file__]
    modules += [inspect.getfile(type(r)) for r in readers.READERS]
    if args.synthetic:
        modules += sys.modules["synthetic"].SOURCES  # the generator's modules
    for module in modules:
        h.update(Path(module).read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- main


def main(args):
    if args.pol == opensarship.STACK and args.product == "rgb":
        raise SystemExit("error: --pol stack needs chips with both channels on one scale: Patch_RGB figures are "
                         "rendered per polarisation; use --product uint8 (from Patch/) or --product cal")
    if not 0.0 < args.test_size < 1.0:
        raise SystemExit(f"error: --test-size must be between 0 and 1 (exclusive), got {args.test_size}")
    if getattr(args, "split_seed", None) is None:
        args.split_seed = args.seed  # --split-seed omitted: the split of --seed, as before the option existed
    try:  # a bad split file (or --export-splits target) stops the run before anything is written
        args.split_plan = split_files.plan_for(args)
    except split_files.SplitFileError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.output_dir)
    progress = sys.stderr.isatty()
    created = not out.exists()
    if args.synthetic:  # a file in the way, or a read-only disk, stops the run now
        writable(Path(args.raw_dir) / "synthetic", "--raw-dir", create=False)
    writable(out, "--output-dir")  # made here
    work = out / ".prep-tmp"
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted run
    (work / "staging").mkdir(parents=True)
    try:
        try:
            summary = _prepare(args, out, work, progress)
            if getattr(args, "export_splits", None):
                info = split_files.export(out, args.export_splits)
                print(f"wrote split file {info['path']}: {info['chips']} chips, {info['bytes']} bytes, sha1 "
                      f"{info['sha1']}")
                summary = dict(summary, exported=info)
            return summary
        except (DataError, split_files.SplitFileError) as e:
            raise SystemExit(f"error: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that stopped with an error leaves no empty output folder behind


def _prepare(args, out, work, progress):
    inputs = find_inputs(args, scratch=work, progress=progress)
    t0 = time.time()  # the preparation alone (the synthetic generator reports its own time)
    prep_output.guard_output(out, inputs.paths, all_sets())
    fp = fingerprint(args, inputs.paths)
    if _current(args, out, fp):
        print((out / SUMMARY_TXT).read_text().rstrip())
        return json.loads((out / SUMMARY_JSON).read_text())

    jobs, skips, notes = splits.list_all(inputs.trees, inputs.forced, args, progress)
    available = {r.name: Counter(c.cls for rr, _, chips in jobs if rr is r for c in chips) for r in readers.READERS}
    prep_classes.check_found(args, available, inputs.forced)
    present = [r for r in readers.READERS if available[r.name]]
    classes = prep_classes.choose_classes(args, available, present, notes)
    names = sets.ordered([r.name for r in present], SETS)
    stack = [sets.stacked_set(n) for n in names if args.pol == opensarship.STACK and sets.stacked_set(n) in SETS]
    prep_classes.refuse_one_class({n: Counter({k: available[n][k] for k in classes}) for n in names}, available)
    common = {"fingerprint": fp, "classes": classes, "synthetic": bool(args.synthetic), "split_seed": args.split_seed,
              "options": {k: getattr(args, k) for k in ("classes", "product", "pol", "group_by", "test_size",
                                                        "val_size", "seed", "synthetic_chips")},
              "notes": notes}
    split_files.record(common, args.split_plan)
    # Before decoding: a set in the way stops the run at once.
    kept, removed = prep_output.other_sets(out, names + stack, all_sets(), common, args.remove_other_sets,
                                           args.verify)
    chips, check = _split_chips(args, inputs, jobs, classes, work, progress, skips, notes, present)
    prep_classes.refuse_one_class({n: Counter(c.cls for c in chips if c.dataset == n) for n in names}, available)
    produced, warnings, conflict = _plan(out, names, kept, chips)
    stacked = _stacked(stack, chips, skips, notes, removed)
    produced += list(stacked)
    if MIXED not in produced:
        removed[MIXED] = "no leakage-free union of the sets present: see the warning below" if conflict \
            else "one per-dataset set: nothing to merge"
    if warnings:  # the key only where there is something to say: else the bytes of a run without warnings
        common["warnings"] = warnings
    if not check:  # a split file decides val itself
        notes += splits.val_notes(chips, [n for n in produced if n != MIXED or not kept], args.val_size)
    split_names = args.split_plan.split_names if args.split_plan else splits.split_names(args.val_size)
    tables, table_classes = prep_output.write_sets(out, work, produced, kept, chips, skips, classes, common,
                                                   split_names, stacked)
    table = splits.format_table(tables, table_classes)
    seconds = time.time() - t0
    # No timings or dates in the written summaries: a rebuild from the same inputs gives identical bytes.
    summary = dict(common, sets=tables, **({"kept": kept} if kept else {}),
                   skipped=dict(sorted(Counter(f"{d}: {r}" for d, _, r, _ in skips).items())),
                   skipped_items=prep_output.skip_items(skips), **({"split_file": check} if check else {}))
    prep_output.write_summary(work, summary, table + "\n" + splits.format_skips(skips))
    prep_output.swap_in(out, work, produced, kept, all_sets(), removed)

    split = f"seed {args.seed}; split from {args.split_plan.path}" if args.split_plan else (
        f"group by {args.group_by}; test size {args.test_size}; val size {args.val_size}; seed {args.seed}; split "
        f"seed {args.split_seed}")
    print(f"prepared sets in {out} in {seconds:.1f} s (classes {', '.join(classes)}; product {args.product}, "
          f"pol {args.pol}; {split})")
    print(table)
    print(splits.format_skips(skips) + (f" (listed in {out}/{SUMMARY_TXT})" if skips else ""))
    for line in split_files.check_lines(check) if check else ():
        print(line)
    for n in notes:
        print(f"note: {n}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return dict(summary, seconds=seconds)


def _current(args, out, fp):
    """True when `out` holds this run's sets, intact: nothing to do. A damaged set is named, then rebuilt."""
    last = prep_output.last_summary(out)
    if args.force or not prep_output.up_to_date(out, fp) or (args.remove_other_sets and last.get("kept")):
        return False
    problems = prep_output.damage(out, list(last["sets"]), args.verify)
    if problems:
        print(f"warning: the prepared sets in {out} are damaged ({len(problems)} file(s): "
              f"{prep_output.describe(problems)}): rebuilding them", file=sys.stderr)
        return False
    checked = "every file's size and sha1 checked" if args.verify else \
        "every file there at its size; --verify compares content"
    print(f"{out}: up to date (same inputs, options and code; {checked}); --force rebuilds")
    return True


def _split_chips(args, inputs, jobs, classes, work, progress, skips, notes, present):
    """Decode the chosen chips, drop identical images, group and split them (or take both from the split file);
    extends `skips` and `notes`. Returns (chips, the split file's check or None)."""
    chips, more_skips, more_notes = splits.decode_all(jobs, set(classes), inputs.masks, work / "staging", progress)
    check = None
    if args.split_plan:
        chips, duplicates, check = split_files.assign(chips, args.split_plan)
    else:
        chips, duplicates = splits.drop_duplicates(chips)
        splits.assign_groups(chips, args.group_by)
        splits.split_groups(chips, args.test_size, args.split_seed, args.val_size)
    skips += more_skips + duplicates
    splits.name_files(chips)
    notes += more_notes + splits.shared_group_notes(chips, present)
    return chips, check


def _stacked(stack, chips, skips, notes, removed):
    """{stacked set: its chips} (stacking.stacked_chips) of a --pol stack run; extends `skips` with the co chips not
    stacked. A dataset without a dual-pol chip gets no stacked set: a note, and an old one is removed."""
    out = {}
    for name in stack:
        base = sets.STACKED[name]
        twins, more = stacking.stacked_chips(chips, base)
        skips += more
        if twins:
            out[name] = twins
            notes.append(f"{name}: {len(twins)} dual-pol chips of {base} as 2-channel (co, cross) TIFFs, each in "
                         f"its co chip's split; never part of {MIXED} (FUSAR-Ship and single-pol scenes have one "
                         "channel)")
        else:
            notes.append(f"{name} not written: none of the {base} chips has a cross channel to stack")
            removed[name] = "no dual-pol chips to stack"
    return out


def _plan(out, names, kept, chips):
    """(the sets this run writes, warnings, whether mixed is left out for a ship in two splits): the per-dataset
    sets of `names`, and mixed when the sets present after this run (kept ones too) make a leakage-free union."""
    records = {n: [(c.cls, c.group, c.split) for c in chips if c.dataset == n] for n in names}
    records.update(prep_output.set_records(out, [n for n in kept if n not in sets.STACKED]))
    records = {n: records[n] for n in sets.ordered(list(records), SETS)}
    mixed, conflict = prep_output.mixed_plan(records)
    if mixed is not None:
        records[MIXED] = mixed
    class_lists = {n: sorted({k for k, _, _ in recs}) for n, recs in records.items()}
    warnings = splits.single_group_warnings(records) + prep_classes.class_list_warnings(class_lists)
    return names + ([MIXED] if mixed is not None else []), warnings + ([conflict] if conflict else []), bool(conflict)


if __name__ == "__main__":
    run_main("dataset_prep.py", lambda: main(get_args_parser().parse_args()),
                   kept="the prepared sets already in place are kept unchanged")
