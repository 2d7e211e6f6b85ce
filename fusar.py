"""FUSAR-Ship reader: the dataset's zip or folder -> chip records (metadata) and 8-bit chip arrays.

    from archives import open_tree
    import fusar
    for root in fusar.find_roots(open_tree("data/raw/fusar"), forced=True):
        chips, skips, notes = fusar.root_chips(root)
        image = fusar.load_chip(root, chips[0])                # (H, W) uint8

dataset_prep.py reads it through READER (readers.Reader).

Layouts accepted (docs/data-formats.md):
- nested `<Category>/<SubCategory>/Ship_CxxSyyNzzzz.tiff` (FUSAR-Ship 1.0) or flat class folders
  (`Cargo/*.tiff`, `.png`), or one folder of chips whose classes come from the metadata;
- metadata `meta.csv` (tab- or comma-separated; columns id, mmsi, length, width, polarMode, centerLookAngle,
  heightspace, widthspace, path, with backslashes in path), or `meta.xls` (needs the optional xlrd package),
  or none at all.

The class is the top folder under the dataset root (the folder holding meta.csv, else the common folder of the
chips); the metadata's `path` gives it only for chips lying directly in the root (its first component). Folder
and metadata can disagree (reported for the real data): the folder wins, since it is where the file is, and the
disagreements are counted in the notes. Metadata joins the chip on its file stem (the `id` column, or the file
name at the end of `path`); chips without a row keep their class and leave mmsi/length/width/spacing empty.
A stem with two differing rows (a duplicate id) is ambiguous: its chip joins neither and is skipped ("ambiguous
metadata"), and a note names the file and the ids. Skipped, not kept as its own group: one of the rows may carry
its true MMSI, and a chip grouped apart from its own ship could sit across the split from it (leakage); identical
repeated rows are no ambiguity (joined once, counted in a note). A metadata file without an `mmsi` column gets a
note naming it, and so does a root without any metadata file: no chip can then be grouped by ship.

Files the tree refused (a link leaving the input folder, a FIFO: archives.DirTree) are skipped chips or files with
their reason, never read; an archive that cannot be read is one skipped source ("unreadable archive").

Class names are the dataset's own (Cargo, Fishing, Tanker, Tug, Passenger, Other, Dredger, LawEnforce, ...),
matched case-insensitively to that spelling. A FUSAR class and an OpenSARShip class are one class only when
their names are identical (Cargo, Fishing, Tanker, Tug, Passenger): "Other" (FUSAR) and "Other Type"
(OpenSARShip), or "Dredger" and "Dredging", stay distinct, since their definitions differ.

Chips: uint8, single channel; a trailing (or leading) channel axis of size 1 is squeezed; an RGB copy whose
three channels are equal is taken as gray (else converted to luminance); any other pixel type is refused.
"""

import csv
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from archives import (OPENSARSHIP_FOLDERS, SCENE_START_RE, BrokenTree, DataError, archive_names, clean_error, is_junk,
                      is_under, open_member, positive_number, valid_mmsi)
from readers import Chip, Listing, Reader

NAME = "fusar"

CATEGORIES = ("Cargo", "DiveVessel", "Dredger", "Fishing", "HighSpeedCraft", "LawEnforce", "Other", "Passenger",
              "PortTender", "Reserved", "SAR", "Tanker", "Tug", "Unspecified", "WingInGrnd")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MAX_LISTED = 10  # ids named in a note about ambiguous metadata (the chips are each listed as skipped)
META_NAMES = ("meta.csv", "meta.xls")  # meta.csv wins when both are present
NO_META = ("{where}: no meta.csv or meta.xls, so no MMSI: chips cannot be grouped by ship, each chip is its own "
           "group and chips of one ship may sit in both train and test (optimistic scores); put FUSAR-Ship's meta.csv "
           "beside the class folders")
FUSAR_NAME_RE = re.compile(r"Ship_C\d+S\d+N\d+", re.IGNORECASE)


class MetaError(DataError):
    """The metadata file cannot be read as it stands (e.g. meta.xls without xlrd); the message says the fix."""


def canonical_class(name):
    """The FUSAR spelling of a category name, matched case-insensitively; other names unchanged."""
    for c in CATEGORIES:
        if c.lower() == name.strip().lower():
            return c
    return name.strip()


def _parent(name):
    return name.rsplit("/", 1)[0] if "/" in name else ""


def _common_folder(names):
    parts = [n.split("/")[:-1] for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


@dataclass
class FusarRoot:
    tree: object
    prefix: str  # the dataset folder inside the tree ('' = the tree's root)
    label: str
    meta: str = None  # member name of meta.csv / meta.xls, or None
    duplicate_of: object = None  # the FusarRoot with the same chips read instead of this one, if any
    error: tuple = None  # (reason, detail) of an archive that cannot be read (archives.BrokenTree): a skip


def find_roots(tree, forced=False):
    """FUSAR-Ship dataset folders in `tree` (archives inside it searched too), as FusarRoots.

    Recognised by a meta.csv/meta.xls beside FUSAR-named chips (Ship_CxxSyyNzzzz), or by FUSAR-named chips;
    inside a tree or archive whose name says "fusar", or when `forced` (the user named the path with --fusar),
    any chips count, so re-packaged copies with other file names are found too. An archive that cannot be read
    (archives.BrokenTree) is a FusarRoot with its `error`, unless another reader reports it (OpenSARShip reports
    the scene and OpenSARShip archives, and any other it claims first) or `forced`.
    """
    if isinstance(tree, BrokenTree):
        return _error_root(tree) if forced or not _opensarship_archive(tree.label) else []
    fusarish = forced or "fusar" in re.split(r"[/!]", tree.label.rstrip("/"))[-1].lower()
    names = [n for n in tree.names() if not is_junk(n)]
    # OpenSARShip scene folders also hold images (Patch_RGB PNGs...): never FUSAR chips. Refused images count
    # here, so that the root holding them is found and reports them.
    images = [n for n in [*names, *tree.refused] if n.lower().endswith(IMAGE_SUFFIXES) and not is_junk(n)
              and not any(p in OPENSARSHIP_FOLDERS for p in n.split("/")[:-1])]
    metas = {}
    for n in names:
        base = n.rsplit("/", 1)[-1].lower()
        if base in META_NAMES:
            folder = _parent(n)
            if folder not in metas or (base == "meta.csv" and not metas[folder].lower().endswith(".csv")):
                metas[folder] = n
    roots = []
    for folder, meta in sorted(metas.items()):
        inside = [i for i in images if is_under(i, folder)]
        if fusarish or any(FUSAR_NAME_RE.search(i) for i in inside):
            roots.append(FusarRoot(tree, folder, tree.describe(folder) if folder else tree.label, meta))
    leftover = [i for i in images if not any(is_under(i, r.prefix) for r in roots)]
    named = [i for i in leftover if FUSAR_NAME_RE.search(i.rsplit("/", 1)[-1])]
    found = []
    for n in archive_names(tree):
        if not any(is_under(n, r.prefix) for r in roots) and not _opensarship_archive(n):
            sub = open_member(tree, n)
            sub_roots = _error_root(sub) if isinstance(sub, BrokenTree) else find_roots(sub, "fusar" in n.lower())
            found.extend(sub_roots)
            if not sub_roots:
                sub.close()
    # Loose chips (outside a folder with metadata): FUSAR-named ones; or, inside a FUSAR-named tree or a path the
    # user named, any chips, unless a FUSAR dataset was found elsewhere in it (then they are unrelated files).
    loose = leftover if fusarish and not roots and not found else named
    if loose:
        folder = _common_folder(loose)
        # Chips of one category only (a one-class copy): the root is the folder above the category folder.
        parts = folder.split("/") if folder else []
        cat = next((i for i, p in enumerate(parts) if canonical_class(p) in CATEGORIES), None)
        if cat is not None:
            folder = "/".join(parts[:cat])
        roots.append(FusarRoot(tree, folder, tree.describe(folder) if folder else tree.label))
    return roots + found


def _opensarship_archive(name):
    # OpenSARShip's scene or outer archives: the OpenSARShip reader's, never searched here.
    stem = PurePosixPath(name).stem
    return bool(SCENE_START_RE.search(stem)) or "opensarship" in stem.lower()


def _error_root(broken):
    # The FusarRoot reporting an archive that cannot be read, if no other reader reported it yet.
    return [FusarRoot(broken, "", broken.label, error=(broken.reason, broken.detail))] if broken.claim() else []


def root_signature(root):
    """Relative chip names of a root: equal for a zip and its extracted copy (read once)."""
    cut = len(root.prefix) + 1 if root.prefix else 0
    return tuple(sorted(n[cut:] for n in root.tree.names()
                        if is_under(n, root.prefix) and n.lower().endswith(IMAGE_SUFFIXES) and not is_junk(n)))


# ---------------------------------------------------------------------------------------------- metadata


def read_meta(tree, member):
    """Metadata rows as dicts with lower-case keys. meta.csv: tab or comma separated (sniffed from the header)."""
    data = tree.read(member)
    if member.lower().endswith(".xls"):
        try:
            import xlrd  # optional: only the .xls variant of the metadata needs it
        except ImportError as e:
            raise MetaError(f"{tree.describe(member)}: reading meta.xls needs the xlrd package: pip install xlrd "
                            "(or save the sheet as meta.csv beside it, or delete it to take classes from the "
                            "folders)") from e
        sheet = xlrd.open_workbook(file_contents=data).sheet_by_index(0)
        header = [str(v).strip().lower() for v in sheet.row_values(0)]
        rows = [dict(zip(header, (_cell(v) for v in sheet.row_values(i)))) for i in range(1, sheet.nrows)]
        return rows
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0]
    delimiter = "\t" if "\t" in header else ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader]


def _cell(v):
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v).strip()


def _path_parts(text):
    return [p for p in re.split(r"[\\/]+", text or "") if p]


def _row_keys(row):
    # The file stems a row names: its `id`, and the file name ending its `path` when it has one.
    keys = []
    parts = _path_parts(row.get("path"))
    if parts and parts[-1].lower().endswith(IMAGE_SUFFIXES):
        keys.append(PurePosixPath(parts[-1]).stem)
    ident = _path_parts(row.get("id"))
    if ident:
        keys.append(PurePosixPath(ident[-1]).stem if ident[-1].lower().endswith(IMAGE_SUFFIXES) else ident[-1])
    return keys


def meta_index(rows):
    """{file stem (lower case): [row, ...]}: the rows keyed by the stems they name (_row_keys); a stem with two
    rows or more is ambiguous."""
    index = {}
    for row in rows:
        for k in _row_keys(row):
            same = index.setdefault(k.lower(), [])
            if not any(r is row for r in same):
                same.append(row)
    return index


def _listed(items):
    return ", ".join(items[:MAX_LISTED]) + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _meta_checks(root, rows):
    """The distinct rows of the metadata and its notes: rows repeated identically (one is kept: no ambiguity), ids
    with differing rows (root_chips skips their chips), no mmsi column (no grouping by ship)."""
    where = root.tree.describe(root.meta)
    distinct, seen, notes = [], set(), {}
    for row in rows:
        key = tuple(sorted(row.items()))
        if key not in seen:
            seen.add(key)
            distinct.append(row)
    if len(distinct) < len(rows):
        notes[f"{where}: ids listed twice with identical rows (joined once)"] = len(rows) - len(distinct)
    ambiguous = [f"{next(n for n in _row_keys(rs[0]) if n.lower() == k)} ({len(rs)} differing rows, mmsi "
                 f"{'/'.join(r.get('mmsi') or 'none' for r in rs)})"
                 for k, rs in sorted(meta_index(distinct).items()) if len(rs) > 1]
    if ambiguous:
        notes[f"{where}: ids with differing rows, their chips skipped (the wrong row would give a chip another "
              "ship's MMSI and could put it across the split from its own ship; fix the file to keep them)"] = \
            _listed(ambiguous)
    if rows and "mmsi" not in rows[0]:
        notes[f"{where} has no mmsi column (columns: {', '.join(rows[0])})"] = (
            "chips cannot be grouped by ship: each chip is its own group, so chips of one ship may sit in both "
            "train and test and the scores are optimistic; add the mmsi column (FUSAR-Ship 1.0's meta.csv has it)")
    return distinct, notes


# ---------------------------------------------------------------------------------------------- chips


def root_chips(root):
    """Chips of one FUSAR-Ship root, as readers.Chip records (nothing decoded yet).

    Returns (chips, skips, notes): skips are (source, reason, detail) for chips without any class, chips whose id
    has differing metadata rows ("ambiguous metadata": joined to neither), and files the tree refused (links
    leaving the input folder, FIFOs...); notes are counts (or lists) of metadata problems worth reporting
    ({"meta path disagrees with folder": n, ...}).
    """
    rows, notes = _meta_checks(root, read_meta(root.tree, root.meta)) if root.meta else ([], {NO_META.format(
        where=root.label): 1})
    index = meta_index(rows)
    cut = len(root.prefix) + 1 if root.prefix else 0
    chips, skips, used = [], _refused_skips(root), set()
    for member in sorted(n for n in root.tree.names() if is_under(n, root.prefix) and not is_junk(n)
                         and n.lower().endswith(IMAGE_SUFFIXES)):
        rel = member[cut:]
        parts = rel.split("/")
        candidates = index.get(PurePosixPath(parts[-1]).stem.lower(), [])
        used.update(id(r) for r in candidates)
        if len(candidates) > 1:
            mmsis = ", ".join(r.get("mmsi", "") or "none" for r in candidates)
            skips.append((root.tree.describe(member), "ambiguous metadata",
                          f"{root.tree.describe(root.meta)} has {len(candidates)} differing rows for this chip "
                          f"(mmsi {mmsis}): joined to neither"))
            continue
        row = candidates[0] if candidates else None
        meta_parts = _path_parts(row.get("path")) if row else []
        if meta_parts and meta_parts[-1].lower().endswith(IMAGE_SUFFIXES):
            meta_parts = meta_parts[:-1]
        meta_cls = canonical_class(meta_parts[0]) if meta_parts else None
        folder_cls = canonical_class(parts[0]) if len(parts) >= 2 else None
        cls = folder_cls or meta_cls
        if cls is None:
            skips.append((root.tree.describe(member), "no class",
                          "chip directly in the dataset folder and no metadata row naming its class"))
            continue
        if folder_cls and meta_cls and folder_cls != meta_cls:
            notes["meta path disagrees with folder (folder used)"] = notes.get(
                "meta path disagrees with folder (folder used)", 0) + 1
        if row is None and rows:
            notes["chips without a metadata row"] = notes.get("chips without a metadata row", 0) + 1
        chips.append(_chip_record(root, member, rel, cls, row))
    unused = sum(1 for row in rows if id(row) not in used)
    if unused:
        notes["metadata rows without a chip"] = unused
    return chips, skips, notes


def _refused_skips(root):
    # The entries of the root the tree refused (archives.DirTree) that would have been read: chips, the metadata,
    # class folders. Those inside OpenSARShip folders are the OpenSARShip reader's.
    cut = len(root.prefix) + 1 if root.prefix else 0
    return [(root.tree.describe(n), *why) for n, why in sorted(root.tree.refused.items())
            if is_under(n, root.prefix) and not is_junk(n) and not any(p in OPENSARSHIP_FOLDERS for p in n.split("/"))
            and (n.endswith("/") or n.lower().endswith(IMAGE_SUFFIXES) or n[cut:].lower() in META_NAMES)]


def _chip_record(root, member, rel, cls, row):
    chip = Chip(dataset=NAME, cls=cls, name=PurePosixPath(rel).stem, source=root.tree.describe(member),
                member=member, position=f"fusar:{rel}", mask_key=str(PurePosixPath(rel).with_suffix(".png")))
    if row is not None:
        chip.has_record = True
        chip.mmsi = valid_mmsi(row.get("mmsi"))
        chip.pol = (row.get("polarmode") or "").lower()
        chip.ship_length_m = positive_number(row.get("length"))
        chip.ship_width_m = positive_number(row.get("width"))
        chip.spacing_row_m = positive_number(row.get("heightspace"))
        chip.spacing_col_m = positive_number(row.get("widthspace"))
    return chip


def decode(data):
    """Image bytes -> (H, W) uint8. Raises ValueError with the reason when the file is not a usable chip."""
    arr, error = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corrupt file is reported once, as a skipped chip with its reason
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                if img.mode in ("P", "PA"):
                    img = img.convert("RGBA" if img.mode == "PA" else "RGB")
                arr = np.asarray(img).copy()
        except Exception as e:  # noqa: BLE001 - Pillow raises many types; tifffile may still read the file
            error = e
        if arr is None and data[:4] in (b"II*\x00", b"MM\x00*"):
            import tifffile  # TIFFs Pillow rejects (odd sample layouts)
            quiet = logging.getLogger("tifffile")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                arr = tifffile.imread(io.BytesIO(data))
            except Exception:  # noqa: BLE001 - the Pillow error below is the more telling one
                arr = None
            finally:
                quiet.setLevel(level)
            if arr is not None and (arr.ndim < 2 or arr.size == 0):
                arr = None
    if arr is None:
        raise ValueError(f"cannot decode image: {clean_error(error)}")
    # (512, 512, 1) or (1, 512, 512): a channel axis of one.
    while arr.ndim > 2 and (arr.shape[-1] == 1 or arr.shape[0] == 1):
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8:
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = rgb[..., 0]
        else:
            arr = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise ValueError(f"unexpected pixel type {arr.dtype} (FUSAR-Ship chips are 8-bit)")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"unexpected image shape {arr.shape}")
    return np.ascontiguousarray(arr)


def load_chip(root, chip):
    """The chip as an (H, W) uint8 array. Raises ValueError with the reason when it cannot be decoded."""
    return decode(root.tree.read(chip.member))


# ---------------------------------------------------------------------------------------------- the reader


class FusarReader(Reader):
    """FUSAR-Ship for dataset_prep.py: sources are FusarRoots; it has no options."""

    name = NAME
    title = "FUSAR-Ship"
    inputs = "its zip, its folder, or a folder holding it"
    expected = "a FUSAR-Ship zip/folder (<Category>/.../*.tiff)"
    where_to_get = (
        "  FUSAR-Ship 1.0: the resources page of Fudan University's EMW lab (emwlab.fudan.edu.cn, \"FUSAR-Ship\"), on\n"
        "    request, or the study's copy at https://drive.google.com/file/d/1SOEMud9oUq69gxbfcBkOvtUkZ3LWEpZJ/view:\n"
        "    put the zip or its extracted folder in data/raw/fusar/")
    classes = CATEGORIES

    def find_sources(self, trees, forced):
        # A zip and its extracted copy hold the same chips: the first found is read, the others are duplicates.
        roots = [root for tree in trees for root in find_roots(tree, forced=forced)]
        first = {}
        for root in roots:
            if root.error is None:
                kept = first.setdefault(root_signature(root), root)
                root.duplicate_of = None if kept is root else kept
        return roots

    def list_chips(self, root, options):
        if root.error is not None:
            return Listing(skips=[(root.label, *root.error)])
        if root.duplicate_of is not None:
            return Listing(notes=[f"FUSAR-Ship found twice: read {root.duplicate_of.label}, ignored {root.label}"])
        chips, skips, notes = root_chips(root)
        return Listing(chips, skips, [f"FUSAR-Ship ({root.label}): {k}: {v}" for k, v in sorted(notes.items())])

    load_chip = staticmethod(load_chip)


READER = FusarReader()
