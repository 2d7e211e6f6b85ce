"""Raw OpenSARShip and FUSAR-Ship -> leakage-free train/test splits, per dataset and merged, ImageFolder-ready.

    python dataset_prep.py --synthetic                  # demo: write synthetic raw data, then prepare it
    python dataset_prep.py --synthetic --synthetic-chips 300
    python dataset_prep.py                              # real downloads under data/raw/ (see data/README.md)
    python dataset_prep.py --opensarship ~/dl/OpenSARShip_2.zip --fusar ~/dl/FUSAR-Ship1.0.zip
    python dataset_prep.py --product cal --pol both --classes Cargo,Fishing,Tanker,Tug --force

Inputs. By default both datasets are looked for under --raw-dir (data/raw/), in any folder, zip or rar there:
OpenSARShip as scene zips or rars (version 1.0 or 2.0), an outer zip of them, or extracted scene folders, in any
mix; FUSAR-Ship as its zip or folder (nested or flat class folders; meta.csv, meta.xls or no metadata). The
synthetic data under data/raw/synthetic/ is never picked up by this search, so it cannot mix with real data:
it is used by --synthetic, or when named with --opensarship/--fusar. Naming either flag replaces the search:
only the named datasets are prepared. With one dataset found, that one is prepared and there is no mixed set.

Outputs, under --output-dir (data/prepared/), for <set> in fusar, opensarship, mixed:
    <set>/{train,test}/<Class>/<dataset>_<chip>.png   single-channel 8-bit PNG at native resolution
    <set>/masks/{train,test}/<Class>/<same name>.png  exact ship masks (synthetic data only)
    <set>/manifest.csv                                one row per chip (columns: MANIFEST_COLUMNS), sorted by path
    <set>/summary.{json,txt}, summary.{json,txt}      counts per split and class, skipped chips with reasons
File names carry the dataset, so `mixed` holds exactly the per-dataset files under the same relative paths.

Split. Stratified by (dataset, class) and grouped: with --group-by mmsi (default) every chip of one MMSI (both
polarisations, the GRD and SLC products, every scene, and both datasets) is on one side; a chip without MMSI is
grouped by its scene position, linked to the same ship in the other products of its acquisition when Ship.xml
gives its position (within 300 m); a FUSAR chip without MMSI is its own group (FUSAR has no scene id).
--group-by scene groups OpenSARShip by acquisition (GRD and SLC twins together) and FUSAR by MMSI as above;
--group-by none makes every chip its own group (leaky: the two polarisations of a ship may be split; for
comparison with the published study only). Groups are shuffled with --seed and moved to test while that brings
every (dataset, class) count closer to --test-size of it; a class with two or more groups gets at least one in
each split. Groups span datasets (one MMSI), so `mixed`, the union of the per-dataset splits (train with train,
test with test, never re-split), is leakage-free too. Images with identical content are kept once.

Reruns: the run is skipped when the inputs (paths, sizes, modification times), the options and this code are
unchanged (--force rebuilds); a rebuild gives byte-identical files and manifests. With --synthetic the generator
is not rerun either while its raw data and the prepared sets are as the last run left them. Writes are atomic: everything
is built in <output-dir>/.prep-tmp/ and each set folder is swapped in whole at the end.
"""

import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import fusar
import opensarship

DATASETS = ("opensarship", "fusar")
SETS = ("fusar", "opensarship", "mixed")
MANIFEST_COLUMNS = (
    "path", "dataset", "class", "split", "group", "source", "sha1", "scene", "mmsi", "pol", "product",
    "chip_h", "chip_w", "ship_length_m", "ship_width_m", "spacing_row_m", "spacing_col_m",
    "head_row", "head_col", "tail_row", "tail_col", "mask",
)
NICE = {"opensarship": "OpenSARShip", "fusar": "FUSAR-Ship"}
# Two chips without MMSI in the GRD and SLC products of one acquisition are one ship when Ship.xml puts their
# centres this close (GRD pixels are 10 m; AIS-to-SAR match errors in Ship.xml are tens of metres).
SAME_SHIP_M = 300.0
WHERE_TO_GET = (
    "  OpenSARShip: the OpenSAR platform of Shanghai Jiao Tong University (opensar.sjtu.edu.cn), after\n"
    "    registration (the study used OpenSARShip_2.zip): put the zip, its scene zips or extracted scene\n"
    "    folders in data/raw/opensarship/\n"
    "  FUSAR-Ship 1.0: the resources page of Fudan University's EMW lab (emwlab.fudan.edu.cn, \"FUSAR-Ship\"), on\n"
    "    request, or the study's copy at https://drive.google.com/file/d/1SOEMud9oUq69gxbfcBkOvtUkZ3LWEpZJ/view:\n"
    "    put the zip or its extracted folder in data/raw/fusar/\n"
    "  Or run the demo on synthetic data: python dataset_prep.py --synthetic"
)


class DataError(Exception):
    """A problem with the input data the user must fix; main() turns it into an error message, not a traceback."""


class BadArchiveError(DataError):
    """An archive that cannot be read (corrupt, truncated, not an archive)."""


# ---------------------------------------------------------------------------------------------- archive trees
# A "tree" is a read-only file tree: a folder, a zip (read in memory, nested zips too) or a rar. Readers see only
# names(), read(name), open(name) (a member archive as a tree), describe(name) and close(). Members are never
# extracted next to the data, and an archive holding an absolute or climbing member path is refused whole.


def check_member(name, label):
    """Refuse an archive member whose path is absolute or climbs out of its folder (zip-slip)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in norm.split("/"):
        raise DataError(f"refusing archive {label}: member {name!r} has an absolute path or climbs out of its "
                        "folder (a zip-slip archive); nothing was read from it. Check where it came from and "
                        "re-download it from the dataset's provider")
    return "/".join(p for p in norm.split("/") if p not in ("", "."))  # "./Patch/x.tif" -> "Patch/x.tif"


class DirTree:
    def __init__(self, path, label=None, scratch=None):
        self.path = Path(path)
        self.label = label or str(path)
        self.scratch = scratch
        self._names = None

    def names(self):
        if self._names is None:
            found = []
            for folder, _, files in os.walk(self.path):
                rel = Path(folder).relative_to(self.path).as_posix()
                found += [f if rel == "." else f"{rel}/{f}" for f in files]
            self._names = sorted(found)
        return self._names

    def read(self, name):
        return (self.path / name).read_bytes()

    def open(self, name):
        return open_tree(self.path / name, label=self.describe(name), scratch=self.scratch)

    def describe(self, name):
        return f"{self.label}/{name}"

    def close(self):
        pass


class ZipTree:
    def __init__(self, file, label, scratch=None):
        self.label = label
        self.scratch = scratch
        try:
            self.zf = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise BadArchiveError(f"cannot read {label}: not a readable zip ({e}); a corrupt or incomplete "
                                  "download? Download it again") from e
        self._map = {}
        for info in self.zf.infolist():
            norm = check_member(info.filename, label)
            if not info.is_dir():
                self._map[norm] = info
        self._names = sorted(self._map)

    def names(self):
        return self._names

    def read(self, name):
        return self.zf.read(self._map[name])

    def open(self, name):
        try:
            data = self.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise BadArchiveError(f"cannot read {self.describe(name)}: {e}") from e
        return tree_from_bytes(data, name, self.describe(name), self.scratch)

    def describe(self, name):
        return f"{self.label}!{name}"

    def close(self):
        self.zf.close()


RAR_TOOLS = ("unrar", "7z", "7zz", "bsdtar", "unar")


def rar_tool():
    """The first rar extraction tool on PATH, or 'rarfile' when only that package is importable."""
    for tool in RAR_TOOLS:
        if shutil.which(tool):
            return tool
    try:
        import rarfile  # noqa: F401 - optional; it still needs one of the tools above for compressed members
        return "rarfile"
    except ImportError:
        return None


def _no_rar_tool(label, detail=""):
    return DataError(f"cannot read {label}: .rar archives need an extraction tool and none was found{detail}. "
                     "Install one of: unrar (apt-get install unrar), unar, 7-Zip (apt-get install 7zip, "
                     "brew install sevenzip), or bsdtar (apt-get install libarchive-tools); or extract the rar "
                     "yourself and point --opensarship/--fusar at the folder")


class RarTree(DirTree):
    """A rar listed with the first available tool, checked member by member, then extracted into a private
    scratch folder (inside the output's temporary folder) and read from there; the scratch folder goes on close."""

    def __init__(self, path, label, scratch=None):
        tool = rar_tool()
        if tool is None:
            raise _no_rar_tool(label)
        self._rf = None
        if tool == "rarfile":
            import rarfile
            try:
                self._rf = rarfile.RarFile(str(path))
                members = self._rf.namelist()
            except rarfile.Error as e:
                raise _no_rar_tool(label, f" (rarfile: {e})") from e
            for m in members:
                check_member(m, label)
            super().__init__(path, label, scratch)
            self._names = sorted(m.replace("\\", "/") for m in members if not m.endswith(("/", "\\")))
            self._orig = {m.replace("\\", "/"): m for m in members}
            return
        listing = {
            "unrar": ["unrar", "lb", "-p-", str(path)],
            "7z": ["7z", "l", "-slt", "-p-", str(path)],
            "7zz": ["7zz", "l", "-slt", "-p-", str(path)],
            "bsdtar": ["bsdtar", "-tf", str(path)],
            "unar": ["lsar", str(path)],
        }[tool]
        out = _run(listing, label)
        if tool in ("7z", "7zz"):
            members = [line[7:] for line in out.splitlines() if line.startswith("Path = ")][1:]
        elif tool == "unar":
            members = out.splitlines()[1:]
        else:
            members = out.splitlines()
        for m in members:
            if m.strip():
                check_member(m.strip(), label)
        dest = Path(tempfile.mkdtemp(prefix="rar-", dir=scratch))
        extract = {
            "unrar": ["unrar", "x", "-o+", "-p-", "-idq", str(path), f"{dest}/"],
            "7z": ["7z", "x", "-y", "-p-", f"-o{dest}", str(path)],
            "7zz": ["7zz", "x", "-y", "-p-", f"-o{dest}", str(path)],
            "bsdtar": ["bsdtar", "-xf", str(path), "-C", str(dest)],
            "unar": ["unar", "-q", "-f", "-D", "-o", str(dest), str(path)],
        }[tool]
        _run(extract, label)
        root = dest.resolve()
        for p in dest.rglob("*"):
            if p.is_symlink() or not p.resolve().is_relative_to(root):
                shutil.rmtree(dest, ignore_errors=True)
                raise DataError(f"refusing archive {label}: member {p.relative_to(dest)} is a link or lies "
                                "outside its folder")
        super().__init__(dest, label, scratch)
        self._dest = dest

    def read(self, name):
        if self._rf is not None:
            return self._rf.read(self._orig[name])
        return super().read(name)

    def open(self, name):
        return tree_from_bytes(self.read(name), name, self.describe(name), self.scratch)

    def describe(self, name):
        return f"{self.label}!{name}"

    def close(self):
        if self._rf is not None:
            self._rf.close()
        else:
            shutil.rmtree(self._dest, ignore_errors=True)


def _run(cmd, label):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise _no_rar_tool(label, f" ({cmd[0]}: {e})") from e
    if done.returncode != 0:
        raise BadArchiveError(f"cannot read {label}: {cmd[0]} failed ({done.stderr.strip()[:300]})")
    return done.stdout


def tree_from_bytes(data, name, label, scratch):
    if name.lower().endswith(".rar"):
        fd, tmp = tempfile.mkstemp(suffix=".rar", dir=scratch)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return RarTree(tmp, label, scratch)
    return ZipTree(io.BytesIO(data), label, scratch)


def open_tree(path, label=None, scratch=None):
    """A folder, zip or rar on disk as a tree."""
    path = Path(path)
    label = label or str(path)
    if path.is_dir():
        return DirTree(path, label, scratch)
    if path.suffix.lower() == ".rar":
        return RarTree(path, label, scratch)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return ZipTree(path, label, scratch)
    raise DataError(f"{label} is neither a folder, a zip nor a rar")


# ---------------------------------------------------------------------------------------------- arguments


class _Help(argparse.HelpFormatter):
    # Shows a default only where there is one to show (not for flags and empty options).
    def _get_help_string(self, action):
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in action.help:
            return action.help + " (default: %(default)s)"
        return action.help


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(
        description="Prepare leakage-free train/test splits (fusar, opensarship, mixed) from the raw OpenSARShip "
                    "and FUSAR-Ship downloads, or from synthetic data (--synthetic). Commands and details: the "
                    "docstring at the top of dataset_prep.py.",
        formatter_class=_Help, add_help=add_help)
    p.add_argument("--raw-dir", default="data/raw",
                   help="where to look for both datasets (folders, zips, rars; data/raw/synthetic is skipped); "
                        "--synthetic writes its raw data to <raw-dir>/synthetic/")
    p.add_argument("--opensarship", nargs="+", metavar="PATH",
                   help="OpenSARShip: an outer zip, scene zips/rars, scene folders, or folders holding them; "
                        "naming this (or --fusar) replaces the search under --raw-dir")
    p.add_argument("--fusar", nargs="+", metavar="PATH",
                   help="FUSAR-Ship: its zip, its folder, or a folder holding it")
    p.add_argument("--output-dir", default="data/prepared", help="where the prepared sets go")
    p.add_argument("--classes", default="Cargo,Fishing,Tanker",
                   help="comma-separated class names of either dataset (case-insensitive); a FUSAR and an "
                        "OpenSARShip class are one class only when the names are identical")
    p.add_argument("--product", default="uint8", choices=tuple(opensarship.PRODUCTS),
                   help="OpenSARShip chip product: uint8 = Patch_Uint8 (amplitude scaled per chip); cal = "
                        f"Patch_Cal in dB, clipped to {opensarship.CAL_DB_RANGE[0]:g}..{opensarship.CAL_DB_RANGE[1]:g}"
                        " dB for every scene, 8 bits; rgb = the study's Patch_RGB rendered figures in grayscale "
                        "(not chips: only to reproduce the study)")
    p.add_argument("--pol", default="co", choices=opensarship.POLS,
                   help="OpenSARShip polarisation: co = VV or HH (the only channel of single-pol scenes); cross "
                        "= VH or HV; both = each as its own chip, in one group")
    p.add_argument("--group-by", default="mmsi", choices=("mmsi", "scene", "none"),
                   help="what the split never divides: mmsi = one ship (both polarisations, GRD and SLC, every "
                        "scene; by scene position where no MMSI is known); scene = one acquisition (FUSAR: by "
                        "MMSI); none = nothing (chip-level split: leaky, only to compare with the study)")
    p.add_argument("--test-size", type=float, default=0.2, help="fraction of each class in the test split")
    p.add_argument("--seed", type=int, default=42, help="seed of the split (and of the synthetic data)")
    p.add_argument("--synthetic", action="store_true",
                   help="write synthetic OpenSARShip and FUSAR-Ship raw data to <raw-dir>/synthetic/, then "
                        "prepare only that")
    p.add_argument("--synthetic-chips", type=int, default=None, metavar="N",
                   help="approximate chips per synthetic dataset (default: synthetic.DEFAULT_CHIPS)")
    p.add_argument("--force", action="store_true", help="rebuild even when inputs and options are unchanged")
    return p


# ---------------------------------------------------------------------------------------------- inputs


def _masks_beside(path, dataset):
    # The synthetic layout: <dir>/{opensarship,fusar,masks}; the real datasets have no masks.
    path = Path(path)
    for p in (path.parent, path.parent.parent):
        if (p / "masks" / dataset).is_dir():
            return p / "masks" / dataset
    return None


def find_inputs(args, scratch, progress=False):
    """Trees to search per dataset, the paths they come from (fingerprint, guard), mask folders per dataset,
    and which datasets the user named (searched with `forced`)."""
    trees = {"opensarship": [], "fusar": []}
    masks = {}
    paths = []
    forced = {"opensarship": False, "fusar": False}
    if args.synthetic:
        if args.opensarship or args.fusar:
            raise SystemExit("error: --synthetic prepares only the synthetic data; drop --opensarship/--fusar "
                             "(synthetic and real data must not mix)")
        import synthetic  # only the demo needs the generator
        syn = Path(args.raw_dir) / "synthetic"
        made = {d: syn / d for d in (*DATASETS, "masks")}
        if not args.force and up_to_date(Path(args.output_dir), fingerprint(args, list(made.values()))):
            print(f"{syn}: synthetic raw data as the last run left it (same size and seed): not regenerated")
        else:
            t0 = time.time()
            print(f"writing synthetic raw data to {syn} ...")
            made = synthetic.generate(args.raw_dir, n_chips=args.synthetic_chips, seed=args.seed, progress=progress)
            print(f"  done in {time.time() - t0:.1f} s")
        for d in DATASETS:
            trees[d].append(open_tree(made[d], scratch=scratch))
            masks[d] = Path(made["masks"]) / d
            forced[d] = True
        return trees, [Path(made[d]) for d in (*DATASETS, "masks")], masks, forced
    if args.opensarship or args.fusar:
        for d in DATASETS:
            for given in getattr(args, d) or ():
                path = Path(given).expanduser()
                if not path.exists():
                    raise SystemExit(f"error: --{d} {given}: no such file or folder")
                trees[d].append(open_tree(path, scratch=scratch))
                paths.append(path)
                masks.setdefault(d, _masks_beside(path, d))
                forced[d] = True
        return trees, paths, masks, forced
    raw = Path(args.raw_dir)
    entries = sorted(p for p in raw.iterdir() if not p.name.startswith(".") and p.name != "synthetic") \
        if raw.is_dir() else []
    for p in entries:
        if not (p.is_dir() or opensarship.is_archive(p.name)):
            print(f"ignoring {p}: not a folder, zip or rar")
            continue
        tree = open_tree(p, scratch=scratch)
        trees["opensarship"].append(tree)
        trees["fusar"].append(tree)
        paths.append(p)
    return trees, paths, masks, forced


def _missing_data_message(args):
    where = (f"--opensarship {' '.join(args.opensarship)}" if args.opensarship else "") + \
            (f" --fusar {' '.join(args.fusar)}" if args.fusar else "")
    searched = where.strip() or f"{args.raw_dir}/ (the synthetic data in {args.raw_dir}/synthetic/ is not searched)"
    return (f"error: no OpenSARShip or FUSAR-Ship data found in {searched}.\n"
            f"Put the downloads under {args.raw_dir}/ (any folder, zip or rar there), or name them with "
            "--opensarship PATH and --fusar PATH. Where to get them:\n" + WHERE_TO_GET)


def fingerprint(args, paths):
    """Hash of the options, every input file's path, size and modification time, and this code."""
    h = hashlib.sha1()
    opts = {k: getattr(args, k) for k in ("classes", "product", "pol", "group_by", "test_size", "seed",
                                          "synthetic", "synthetic_chips")}
    h.update(json.dumps(opts, sort_keys=True).encode())
    for path in sorted(set(paths)):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    modules = [__file__, opensarship.__file__, fusar.__file__]
    if args.synthetic:
        modules.append(sys.modules["synthetic"].__file__)
    for module in modules:
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def up_to_date(out, fp):
    """The summary of `out` was written for this fingerprint and every set it lists is still there."""
    previous = out / "summary.json"
    if not previous.is_file():
        return False
    old = json.loads(previous.read_text())
    return old.get("fingerprint") == fp and all((out / s / "manifest.csv").is_file() for s in old.get("sets", {}))


# ---------------------------------------------------------------------------------------------- classes


def resolve_classes(text, available):
    """Requested class names -> the datasets' spelling. `available`: {dataset: Counter(class)} of the data found.

    A name is known when the data holds it or when it is a class name of either dataset (so Fishing is accepted
    on data that happens to have none; the caller warns); anything else is an error listing what is there.
    """
    found = sorted({c for counts in available.values() for c in counts})
    known = found + sorted(set(opensarship.CLASSES + fusar.CATEGORIES) - set(found))
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
        lines = [f"  {n}: " + ", ".join(f"{d} {available[d][n]}" for d in DATASETS if available.get(d, {}).get(n))
                 for n in found]
        what = f"unknown class{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}" if unknown \
            else "no class given"
        raise SystemExit(f"error: {what} in --classes. Available classes (chips per dataset):\n" + "\n".join(lines))
    return sorted(wanted)


# ---------------------------------------------------------------------------------------------- split


def _distance_m(a, b):
    lat = math.radians((a[0] + b[0]) / 2)
    return 6371000.0 * math.hypot(math.radians(a[0] - b[0]), math.radians(a[1] - b[1]) * math.cos(lat))


def assign_groups(chips, group_by):
    """Set chip["group"]: what the split may not divide (see the module docstring)."""
    if group_by == "none":
        for c in chips:
            c["group"] = f"chip:{c['dataset']}:{c['name']}"
        return
    # Ships without MMSI: their scene position, merged across the products of one acquisition by location.
    parent = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if group_by == "mmsi":
        located = defaultdict(dict)
        for c in chips:
            if c["dataset"] == "opensarship" and not c["mmsi"] and c["latlon"]:
                located[c["acquisition"]][c["position"]] = c["latlon"]
        for positions in located.values():
            items = sorted(positions.items())
            for i, (pa, la) in enumerate(items):
                for pb, lb in items[i + 1:]:
                    if pa.split(":")[0] != pb.split(":")[0] and _distance_m(la, lb) < SAME_SHIP_M:
                        ra, rb = find(pa), find(pb)
                        parent[max(ra, rb)] = min(ra, rb)
    for c in chips:
        if c["dataset"] == "opensarship" and group_by == "scene":
            c["group"] = f"scene:{c['acquisition']}"
        elif c["mmsi"]:
            c["group"] = f"mmsi:{c['mmsi']}"
        else:
            c["group"] = f"pos:{find(c['position'])}"


def split_groups(chips, test_size, seed):
    """Set chip["split"]: a seeded, grouped split stratified by (dataset, class).

    Groups are visited in a seeded random order; a group goes to test when that lowers the summed distance of
    every (dataset, class) test count from its target (test_size of the cell, at least one chip when the cell
    has two groups or more). A group holding several classes or both datasets moves as one.
    """
    by_group = defaultdict(Counter)
    for c in chips:
        by_group[c["group"]][(c["dataset"], c["class"])] += 1
    totals, n_groups = Counter(), Counter()
    for counts in by_group.values():
        for cell, n in counts.items():
            totals[cell] += n
            n_groups[cell] += 1
    target = {cell: (max(1, round(test_size * n)) if n_groups[cell] >= 2 else 0) for cell, n in totals.items()}
    order = sorted(by_group)
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    test, side = Counter(), {}
    for g in order:
        counts = by_group[g]
        gain = sum(abs(test[cell] + n - target[cell]) - abs(test[cell] - target[cell]) for cell, n in counts.items())
        side[g] = "test" if gain < 0 else "train"
        if gain < 0:
            test.update(counts)
    # Every cell with two groups or more gets at least one group on each side: a test split without a class
    # measures nothing for it, a train split without it cannot learn it.
    for cell in sorted(totals):
        if n_groups[cell] < 2:
            continue
        for want, have in (("test", test[cell]), ("train", totals[cell] - test[cell])):
            if have == 0:
                other = "train" if want == "test" else "test"
                g = min((g for g in order if side[g] == other and cell in by_group[g]),
                        key=lambda g: by_group[g][cell])
                side[g] = want
                sign = 1 if want == "test" else -1
                for k, n in by_group[g].items():
                    test[k] += sign * n
    for c in chips:
        c["split"] = side[c["group"]]


# ---------------------------------------------------------------------------------------------- decoding


def encode_png(arr):
    """Deterministic PNG bytes of an (H, W) uint8 array (no timestamps or text chunks)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


DECODE_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError)


def _read_mask(masks_dir, chip, shape):
    if masks_dir is None or not chip.get("mask_key"):
        return None
    path = Path(masks_dir) / chip["mask_key"]
    if not path.is_file():
        return None
    with Image.open(path) as img:
        mask = np.asarray(img.convert("L"))
    return mask if mask.shape == shape else None


def list_all(trees, forced, product, pol, progress):
    """Phase 1: every chip record of both datasets (all classes, nothing decoded), skips, notes, jobs."""
    jobs, skips, notes = [], [], []
    refs = [r for tree in trees["opensarship"] for r in opensarship.find_scenes(tree)]
    refs, dropped = opensarship.dedupe_scenes(refs)
    for ref, kept in dropped:
        notes.append(f"OpenSARShip scene {ref.name} found twice: read {kept.label}, ignored {ref.label}")
    no_record = no_xml = 0
    for ref in tqdm(refs, desc="OpenSARShip scenes", unit="scene", disable=not progress, leave=False):
        try:
            with ref.open() as scene:
                chips, sk = opensarship.list_chips(scene, product, pol)
                no_xml += 0 if scene.has_ship_xml else 1
        except (BadArchiveError, *DECODE_ERRORS) as e:
            skips.append(("opensarship", ref.label, "unreadable scene archive", str(e)))
            continue
        skips += [("opensarship", *s) for s in sk]
        if not chips and not sk:
            notes.append(f"OpenSARShip scene {ref.name} ({ref.label}): no {opensarship.PRODUCTS[product]} chips")
        no_record += sum(1 for c in chips if not c["has_record"])
        jobs.append(("opensarship", ref, chips))
    if no_xml:
        notes.append(f"OpenSARShip: {no_xml} scene(s) without Ship.xml (chips kept, class from the file name)")
    if no_record:
        notes.append(f"OpenSARShip: {no_record} chip(s) without a Ship.xml record (kept, class from the name)")
    roots = [r for tree in trees["fusar"] for r in fusar.find_roots(tree, forced=forced["fusar"])]
    seen = {}
    for root in roots:
        sig = fusar.root_signature(root)
        if sig in seen:
            notes.append(f"FUSAR-Ship found twice: read {seen[sig].label}, ignored {root.label}")
            continue
        seen[sig] = root
        chips, sk, nt = fusar.list_chips(root)
        skips += [("fusar", *s) for s in sk]
        notes += [f"FUSAR-Ship ({root.label}): {k}: {v}" for k, v in sorted(nt.items())]
        jobs.append(("fusar", root, chips))
    return jobs, skips, notes


def _decode_one(dataset, handle, chip, masks_dir):
    # Runs in a worker thread: the decoders and zlib release the GIL, so chips decode and encode in parallel.
    try:
        arr = (opensarship.load_chip if dataset == "opensarship" else fusar.load_chip)(handle, chip)
    except DECODE_ERRORS as e:
        return None, None, str(e)  # the reason rides in the third slot
    mask = _read_mask(masks_dir, chip, arr.shape)
    return arr.shape, encode_png(arr), None if mask is None else encode_png(mask)


def decode_all(jobs, classes, masks, staging, progress):
    """Phase 2: decode the chosen chips once, stage their PNG (and mask) bytes; returns (chips, skips, notes).

    Chips are staged in job order whatever the thread timing, so the output does not depend on it."""
    out, skips = [], []
    mask_missing = 0
    total = sum(1 for _, _, chips in jobs for c in chips if c["class"] in classes)
    bar = tqdm(total=total, desc="decoding chips", unit="chip", disable=not progress, leave=False)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for dataset, source, chips in jobs:
            chosen = [c for c in chips if c["class"] in classes]
            if not chosen:
                continue
            try:
                with (source.open() if dataset == "opensarship" else nullcontext(source)) as handle:
                    for start in range(0, len(chosen), 256):  # bounded: at most 256 encoded chips in memory
                        batch = chosen[start:start + 256]
                        results = pool.map(_decode_one, [dataset] * len(batch), [handle] * len(batch), batch,
                                           [masks.get(dataset)] * len(batch))
                        for chip, (shape, png, mask_png) in zip(batch, results):
                            bar.update(1)
                            if png is None:
                                skips.append((dataset, chip["source"], "unreadable image", mask_png))
                                continue
                            chip["sha1"] = hashlib.sha1(png).hexdigest()
                            chip["chip_h"], chip["chip_w"] = shape
                            chip["staged"] = staging / f"{len(out):07d}.png"
                            chip["staged"].write_bytes(png)
                            chip.update(opensarship.chip_coords(chip, *shape))
                            chip["staged_mask"] = None
                            if mask_png is not None:
                                chip["staged_mask"] = staging / f"{len(out):07d}_mask.png"
                                chip["staged_mask"].write_bytes(mask_png)
                            elif masks.get(dataset) and chip.get("mask_key"):
                                mask_missing += 1
                            out.append(chip)
            except (BadArchiveError, *DECODE_ERRORS) as e:
                skips.append((dataset, source.label, "unreadable scene archive", str(e)))
    bar.close()
    notes = [f"{mask_missing} chip(s) without a matching mask in the masks folder"] if mask_missing else []
    return out, skips, notes


def drop_duplicates(chips):
    """Identical images (same PNG hash) within a dataset are kept once; copies under different classes are
    dropped altogether (their label is ambiguous). Returns (kept, skips)."""
    by_hash = defaultdict(list)
    for c in chips:
        by_hash[(c["dataset"], c["sha1"])].append(c)
    kept, skips = [], []
    for c in chips:
        same = by_hash[(c["dataset"], c["sha1"])]
        if len({s["class"] for s in same}) > 1:
            skips.append((c["dataset"], c["source"], "identical image under different classes",
                          ", ".join(f"{s['class']}: {s['source']}" for s in same if s is not c)))
        elif same[0] is c:
            kept.append(c)
        else:
            skips.append((c["dataset"], c["source"], "duplicate image", f"same content as {same[0]['source']}"))
    return kept, skips


# ---------------------------------------------------------------------------------------------- writing


def _place(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the sets share one copy of each file (mixed = the per-dataset files)
    except OSError:
        shutil.copyfile(src, dst)


def name_files(chips):
    """chip["file"] = <dataset>_<chip name>.png, unique within its split and class folder."""
    taken = set()
    for c in sorted(chips, key=lambda c: (c["dataset"], c["name"], c["sha1"])):
        base = f"{c['dataset']}_{c['name']}"
        if (c["split"], c["class"], base) in taken:
            base = f"{base}_{c['sha1'][:8]}"
        taken.add((c["split"], c["class"], base))
        c["file"] = base + ".png"


def manifest_row(c):
    rel = f"{c['split']}/{c['class']}/{c['file']}"
    row = {k: c.get(k, "") for k in MANIFEST_COLUMNS}
    row.update(path=rel, mask=f"masks/{rel}" if c.get("staged_mask") else "")
    return {k: "" if row[k] is None else str(row[k]) for k in MANIFEST_COLUMNS}


def counts_of(chips, classes):
    counts = {s: {k: 0 for k in classes} for s in ("train", "test")}
    for c in chips:
        counts[c["split"]][c["class"]] += 1
    return counts


def format_table(sets, classes):
    width = max([len(k) for k in classes] + [5])
    head = f"{'set':<12} {'split':<6}" + "".join(f" {k:>{width}}" for k in classes) + f" {'total':>7}"
    lines = [head, "-" * len(head)]
    for name, info in sets.items():
        for split in ("train", "test"):
            row = info["counts"][split]
            lines.append(f"{name if split == 'train' else '':<12} {split:<6}" +
                         "".join(f" {row.get(k, 0):>{width}}" for k in classes) + f" {sum(row.values()):>7}")
    return "\n".join(lines)


def format_skips(skips):
    if not skips:
        return "skipped chips: none"
    by = Counter((d, r) for d, _, r, _ in skips)
    return "skipped chips: " + "; ".join(f"{d} {r}: {n}" for (d, r), n in sorted(by.items()))


def write_set(work, name, chips, classes, skips, summary_common):
    set_dir = work / name
    set_dir.mkdir(parents=True)
    rows = []
    for c in chips:
        row = manifest_row(c)
        _place(c["staged"], set_dir / row["path"])
        if c.get("staged_mask"):
            _place(c["staged_mask"], set_dir / row["mask"])
        rows.append(row)
    rows.sort(key=lambda r: r["path"])
    with open(set_dir / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    info = {"counts": counts_of(chips, classes), "classes": sorted({c["class"] for c in chips}),
            "groups": {s: len({c["group"] for c in chips if c["split"] == s}) for s in ("train", "test")}}
    summary = dict(summary_common, set=name, **info,
                   skipped=dict(sorted(Counter(r for _, _, r, _ in skips).items())),
                   skipped_items=[{"dataset": d, "source": s, "reason": r, "detail": t} for d, s, r, t in skips])
    _write_summary(set_dir, summary, format_table({name: info}, classes) + "\n" + format_skips(skips))
    return info


def _write_summary(folder, summary, table):
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    lines = [table]
    items = summary.get("skipped_items") or []
    if items:
        lines += ["", "skipped chips (source: reason, detail):"]
        lines += [f"  {i['source']}: {i['reason']} ({i['detail']})" for i in items]
    if summary.get("notes"):
        lines += ["", "notes:"] + [f"  {n}" for n in summary["notes"]]
    (folder / "summary.txt").write_text("\n".join(lines) + "\n")


def _guard_output(out, paths):
    o = out.resolve()
    for p in (Path(p).resolve() for p in paths):
        # Inputs inside a set folder would be replaced; an output inside the inputs would be read back as input.
        if p == o or p in o.parents or any(p == o / s or (o / s) in p.parents for s in SETS):
            raise SystemExit(f"error: --output-dir {out} overlaps the input {p}: choose an --output-dir outside "
                             "the raw data")
    for s in SETS:
        target = o / s
        if target.exists() and not (target / "manifest.csv").is_file():
            raise SystemExit(f"error: {target} exists and is not a prepared set (no manifest.csv); move it away "
                             "or choose another --output-dir")


# ---------------------------------------------------------------------------------------------- main


def main(args):
    if not 0.0 < args.test_size < 1.0:
        raise SystemExit(f"error: --test-size must be between 0 and 1 (exclusive), got {args.test_size}")
    if args.synthetic_chips is not None and args.synthetic_chips < 1:
        raise SystemExit(f"error: --synthetic-chips must be a positive number, got {args.synthetic_chips}")
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
        except (DataError, fusar.MetaError) as e:
            raise SystemExit(f"error: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that stopped with an error leaves no empty output folder behind


def _prepare(args, out, work, progress):
    trees, paths, masks, forced = find_inputs(args, scratch=work, progress=progress)
    t0 = time.time()  # the preparation alone (the synthetic generator reports its own time)
    _guard_output(out, paths)
    fp = fingerprint(args, paths)
    if not args.force and up_to_date(out, fp):
        print(f"{out}: up to date (same inputs, options and code); --force rebuilds")
        print((out / "summary.txt").read_text().rstrip())
        return json.loads((out / "summary.json").read_text())

    jobs, skips, notes = list_all(trees, forced, args.product, args.pol, progress)
    available = {d: Counter(c["class"] for dd, _, chips in jobs if dd == d for c in chips) for d in DATASETS}
    present = [d for d in DATASETS if available[d]]
    if not present:
        if any(forced.values()):
            named = " ".join(f"--{d} {' '.join(getattr(args, d) or [])}" for d in DATASETS if forced[d])
            raise SystemExit(f"error: no chips found in {named}: expected OpenSARShip scene zips/rars/folders "
                             "(S1A_..._Patch_Uint8/...) or a FUSAR-Ship zip/folder (<Category>/.../*.tiff)\n"
                             "Where to get them:\n" + WHERE_TO_GET)
        raise SystemExit(_missing_data_message(args))
    for d in DATASETS:
        if forced[d] and not available[d]:
            raise SystemExit(f"error: no {NICE[d]} chips found in --{d} {' '.join(getattr(args, d) or [])}")
    classes = resolve_classes(args.classes, available)
    empty = [k for k in classes if not any(available[d][k] for d in DATASETS)]
    if len(empty) == len(classes):
        raise SystemExit(f"error: none of the classes {', '.join(classes)} has chips in the data found; "
                         f"available: {', '.join(sorted(set(available['opensarship']) | set(available['fusar'])))}")
    for k in empty:
        print(f"warning: no {k} chips in the data found: the prepared sets have no {k} class", file=sys.stderr)
    classes = [k for k in classes if k not in empty]
    if len(present) == 1:
        other = next(d for d in DATASETS if d not in present)
        print(f"only {NICE[present[0]]} found (no {NICE[other]}): preparing the {present[0]} set, no mixed set")
    notes += [f"no {k} chips in the data found (class dropped)" for k in empty]
    for d in present:
        for k in classes:
            if not available[d][k]:
                notes.append(f"{NICE[d]} has no {k} chips")
    if args.product == "rgb" and available["opensarship"]:
        print("warning: --product rgb uses OpenSARShip's Patch_RGB images, which are rendered figures (colour "
              "map, axes, colour bar), not SAR chips; use them only to reproduce the published study",
              file=sys.stderr)

    chips, dskips, dnotes = decode_all(jobs, set(classes), masks, work / "staging", progress)
    skips += dskips
    notes += dnotes
    chips, dup = drop_duplicates(chips)
    skips += dup
    assign_groups(chips, args.group_by)
    split_groups(chips, args.test_size, args.seed)
    name_files(chips)
    shared = sorted({c["group"] for c in chips if c["dataset"] == "fusar"} &
                    {c["group"] for c in chips if c["dataset"] == "opensarship"})
    if shared:
        notes.append(f"{len(shared)} group(s) (MMSIs) in both datasets: each kept on one side of the split")

    produced = [d for d in ("fusar", "opensarship") if d in present]
    if len(produced) == 2:
        produced.append("mixed")
    common = {"fingerprint": fp, "classes": classes, "synthetic": bool(args.synthetic),
              "options": {k: getattr(args, k) for k in ("classes", "product", "pol", "group_by", "test_size",
                                                        "seed", "synthetic_chips")},
              "notes": notes}
    sets = {}
    for name in produced:
        members = [c for c in chips if name == "mixed" or c["dataset"] == name]
        set_skips = [s for s in skips if name == "mixed" or s[0] == name]
        sets[name] = write_set(work, name, members, classes, set_skips, common)
    table = format_table(sets, classes)
    seconds = time.time() - t0
    # No timings or dates in the written summaries: a rebuild from the same inputs gives identical bytes.
    summary = dict(common, sets=sets,
                   skipped=dict(sorted(Counter(f"{d}: {r}" for d, _, r, _ in skips).items())),
                   skipped_items=[{"dataset": d, "source": s, "reason": r, "detail": t} for d, s, r, t in skips])
    _write_summary(work, summary, table + "\n" + format_skips(skips))

    # Swap each set in whole; sets this run did not produce are removed (they would not match the others).
    for name in SETS:
        final = out / name
        if final.exists():
            final.rename(work / f"old-{name}")
            if name not in produced:
                print(f"removed {final} (not produced by this run)")
        if name in produced:
            (work / name).rename(final)
    for f in ("summary.txt", "summary.json"):
        os.replace(work / f, out / f)

    print(f"prepared sets in {out} in {seconds:.1f} s (classes {', '.join(classes)}; product {args.product}, "
          f"pol {args.pol}; group by {args.group_by}; test size {args.test_size}; seed {args.seed})")
    print(table)
    print(format_skips(skips) + (f" (listed in {out}/summary.txt)" if skips else ""))
    for n in notes:
        print(f"note: {n}")
    return dict(summary, seconds=seconds)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
