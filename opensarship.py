"""OpenSARShip reader: scene archives or folders -> chip records (metadata) and 8-bit chip arrays.

    from archives import open_tree
    import opensarship
    tree = open_tree("data/raw/opensarship")                    # a folder, an outer zip, a scene zip...
    for ref in opensarship.find_scenes(tree):                   # SceneRef: lazily opened scene
        with ref.open() as scene:                               # Scene: the opened tree, Ship.xml records
            chips, skips = opensarship.scene_chips(scene, product="uint8", pol="co")
            image = opensarship.load_chip(scene, chips[0])     # (H, W) uint8

dataset_prep.py reads it through READER (readers.Reader), with --product and --pol as options.

Layouts accepted (docs/data-formats.md): version 1.0 scene zips (a top folder named after the scene,
`Metedata.xml`, `Ship.xml`) and version 2.0 (files at the root, `<scene>.xml`, a `Ship.xml` often closed by the
malformed `<\\ShipList>` and with unescaped `<` in ship names); scene zips or rars, an outer zip of them, extracted
scene folders, or any mix. The same scene found twice (an extracted folder and its zip, a browser's `(1)` copy)
is read once: scenes are keyed by their Sentinel-1 product name. An archive that cannot be read (corrupt,
truncated, not a regular file) is one skipped source with its reason, wherever it lies (named with --opensarship,
directly in data/raw/, inside a folder or an outer zip): "unreadable scene archive" when named after a scene,
else "unreadable archive"; the other scenes are read. In a scene folder, a file the tree refused (a link leaving
the input folder, a FIFO: archives.DirTree) is a skipped chip or file with its reason, never read.

Chip products (`product`):
- `uint8`: `Patch_Uint8/Visual_<Class>_x<X>_y<Y>_<pol>.tif`, the amplitude scaled per chip so that its brightest
  pixel is 255. The default.
- `cal`: `Patch_Cal/<Class>_x<X>_y<Y>.tif`, float32 calibrated backscatter (linear intensity; bands cross, co in
  dual-pol scenes). Converted to dB and mapped linearly from CAL_DB_RANGE onto 0..255 (clipped), the same range
  for every scene, so brightness is comparable across chips and scenes (unlike the per-chip `uint8` scaling).
- `rgb`: `Patch_RGB/<Class>_x<X>_y<Y>_<pol>.png` (a `.tif` ending in version 1.0): NOT a chip but a rendered
  figure (jet colour map, axes, colour bar). Converted to grayscale; kept only to reproduce the published study.

Polarisation (`pol`): `co` (VV or HH, or the only channel of single-pol scenes), `cross` (VH or HV; none in
single-pol scenes), `both` (each channel as its own chip; the grouping keeps the two together), `stack`: the `co`
chips, and each dual-pol one also as a 2-channel (co, cross) chip (Chip.twin, band "stack", pol "vv+vh"), read
from `Patch/` (product uint8) or `Patch_Cal/` (product cal): opensarship_pixels.py says how, stacking.py where they
go. A co chip without a twin says why in Chip.twin_reason (a single-pol scene, no Patch/ file).

Ship.xml: a chip joins its record on (Center_x, Center_y) = (x, y) of its file name. Measured on the real scenes:
the chip is the square of side 2h+1 centred on Center, where h = UpperLeft_x - Center_x = Center_x - LowerRight_x
(the tags are swapped in image terms: "UpperLeft" holds the larger coordinates), so chip pixel (row, col) of scene
pixel (x, y) is (y - (Center_y - h), x - (Center_x - h)); Head/Tail mapped this way lie on the bright hull.
Its numbers are checked (ship_xml.py): an infinite or out-of-range value (a head or tail outside the chip, a
latitude off the globe) is left out of the chip, which is kept, and named in a note of its scene.
"""

import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath


from archives import (OPENSARSHIP_FOLDERS, READ_ERRORS, SCENE_RE, BadArchiveError, BrokenTree, archive_names,
                      is_junk, is_under, open_member, positive_number, scene_name_of)
from opensarship_pixels import CAL_DB_RANGE, STACK, cal_to_uint8, load_chip  # noqa: F401 (re-exported)
from readers import Chip, Listing, Reader
from ship_xml import parse_ship_xml, record_values

NAME = "opensarship"
PRODUCTS = {"uint8": "Patch_Uint8", "cal": "Patch_Cal", "rgb": "Patch_RGB"}
# Class names seen in the real chip names (docs/data-formats.md); the reader takes any name it finds.
CLASSES = ("Cargo", "Dredging", "Dredging or underwater ops", "Fishing", "Law Enforcement", "Other Type",
           "Passenger", "Search and Rescue vessel", "Tanker", "Tug")
POLS = ("co", "cross", "both", "stack")
# Nominal pixel spacing (row = azimuth, col = range) in metres, used only when the scene metadata lacks it:
# Sentinel-1 IW GRDH is 10 m x 10 m; IW SLC about 13.9 m azimuth x 2.33 m slant range (the real scenes' values).
NOMINAL_SPACING_M = {"GRD": (10.0, 10.0), "SLC": (13.9, 2.33)}

# Chip file name; the class may hold spaces and underscores ("Other Type", "Search and Rescue vessel"), so the
# pattern is anchored on _x<X>_y<Y>, never split on "_".
CHIP_RE = re.compile(r"^(?:Visual_)?(?P<cls>.+?)_x(?P<x>\d+)_y(?P<y>\d+)(?:_(?P<pol>[vh][vh]))?\.(?:tiff?|png)$",
                     re.IGNORECASE)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
# A browser's duplicate-download suffix: "...36F7(1).zip", "...36F7 (2).zip".
COPY_SUFFIX_RE = re.compile(r"\s*\(\d+\)$")
MAX_LISTED = 10  # chips named in a scene's note about malformed Ship.xml values (the summary counts them all)


def acquisition_of(scene):
    """Key shared by the GRD and SLC products of one acquisition: mission, absolute orbit, datatake id."""
    m = SCENE_RE.search(scene)
    return f"{m['mission']}_{m['orbit']}_{m['datatake']}" if m else scene


def product_type_of(scene):
    m = SCENE_RE.search(scene)
    if not m:
        return ""
    return "SLC" if m["type"].startswith("SLC") else "GRD" if m["type"].startswith("GRD") else m["type"].strip("_")


def scene_roots(names):
    """Folders (posix, '' = root) that hold a scene: the parent of a Patch* folder or of Ship.xml."""
    roots = set()
    for n in names:
        if is_junk(n):
            continue
        parts = n.split("/")
        for i, p in enumerate(parts[:-1]):
            if p in OPENSARSHIP_FOLDERS:
                roots.add("/".join(parts[:i]))
                break
        else:
            if parts[-1] == "Ship.xml":
                roots.add("/".join(parts[:-1]))
    # A scene folder never nests inside another scene folder: keep the outermost.
    return sorted(r for r in roots if not any(o != r and is_under(r, o) for o in roots))


# ---------------------------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """An opened scene: the tree holding it, its folder in the tree, its Ship.xml records and metadata."""
    name: str
    tree: object
    prefix: str
    label: str
    version: str  # "1.0", "2.0", or "" when neither metadata file is present
    records: dict = field(default_factory=dict)
    spacing: tuple = ("", "")  # (row = azimuth, col = range) in metres, as text
    has_ship_xml: bool = False
    bad_records: list = field(default_factory=list)  # Ship.xml records left out (ship_xml.parse_ship_xml)
    bad_values: list = field(default_factory=list)  # "<chip>: <values left out>" (ship_xml.record_values)

    def member(self, rel):
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def names(self):
        """File names relative to the scene folder."""
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [n[cut:] for n in self.tree.names() if is_under(n, self.prefix) and not is_junk(n)]

    def refused(self):
        """{name relative to the scene folder: (reason, detail)} of the entries the tree refused (archives.DirTree:
        links leaving the input folder, FIFOs...), which names() leaves out."""
        cut = len(self.prefix) + 1 if self.prefix else 0
        return {n[cut:]: why for n, why in self.tree.refused.items() if is_under(n, self.prefix) and not is_junk(n)}


@dataclass
class SceneRef:
    """A scene found by find_scenes, opened with `with ref.open() as scene:` (nested archives read then)."""
    name: str
    label: str
    parent: object  # the tree that holds the scene folder or the scene archive
    member: str = None  # the scene's archive inside `parent`, or None for a folder
    prefix: str = ""  # the scene folder inside `parent` (member is None)
    is_copy: bool = False  # a browser's "(1)" copy: loses against the original when both are present
    duplicate_of: object = None  # the SceneRef read instead of this one (dedupe_scenes), if any
    error: tuple = None  # (reason, detail) of an archive that cannot be read (archives.BrokenTree): a skip

    @contextmanager
    def open(self):
        if self.member is None:
            yield _make_scene(self.name, self.parent, self.prefix)
            return
        tree = self.parent.open(self.member)
        try:
            roots = scene_roots(tree.names())
            if not roots:
                # An archive named like a scene but holding no Patch* folder or Ship.xml: an empty scene.
                yield Scene(self.name, tree, "", tree.label, "")
                return
            # One scene per scene archive; if an archive holds several folders, the one named after it wins.
            root = next((r for r in roots if scene_name_of(r.rsplit("/", 1)[-1]) == self.name), roots[0])
            yield _make_scene(self.name, tree, root)
        finally:
            tree.close()


def _make_scene(name, tree, prefix):
    scene = Scene(name, tree, prefix, tree.describe(prefix) if prefix else tree.label, "")
    rels = set(scene.names())
    meta = None
    if "Metedata.xml" in rels or "Metadata.xml" in rels:
        scene.version = "1.0"
        meta = "Metedata.xml" if "Metedata.xml" in rels else "Metadata.xml"
    elif f"{name}.xml" in rels:
        scene.version = "2.0"
        meta = f"{name}.xml"
    if meta:
        text = tree.read(scene.member(meta)).decode("utf-8", errors="replace")
        scene.spacing = tuple(_attrib(text, a) for a in ("azimuth_spacing", "range_spacing"))
    if not all(scene.spacing):
        nominal = NOMINAL_SPACING_M.get(product_type_of(name))
        if nominal:
            scene.spacing = tuple(positive_number(v) for v in nominal)
    if "Ship.xml" in rels:
        scene.has_ship_xml = True
        scene.records = parse_ship_xml(tree.read(scene.member("Ship.xml")).decode("utf-8", errors="replace"),
                                       scene.bad_records)
    return scene


def _attrib(text, name):
    m = re.search(rf'name="{name}"\s+value="([^"]*)"', text)
    return positive_number(m.group(1)) if m else ""


def find_scenes(tree, _hint=None, claim_all=False):
    """Every scene in `tree` (a folder or archive tree; nested archives included), as SceneRefs (a scene found
    twice is listed twice: dedupe_scenes keeps one).

    Scene archives named after a Sentinel-1 product are not opened here (an outer zip of 40 scene zips is listed,
    not read); other archives are opened and searched (an outer zip under any name, a renamed scene zip). An
    archive that cannot be read (archives.BrokenTree: corrupt, refused) is a SceneRef with its `error`, unless
    another reader reports it: one named after FUSAR is left to that reader, unless `claim_all` (the user named
    the path with --opensarship).
    """
    if isinstance(tree, BrokenTree):
        stem = PurePosixPath(tree.label).stem
        return _error_ref(tree, scene_name_of(stem) or stem) if claim_all or "fusar" not in stem.lower() else []
    refs = []
    names = tree.names()
    roots = scene_roots([*names, *tree.refused])  # a scene whose files were all refused is still reported
    for root in roots:
        base = root.rsplit("/", 1)[-1]
        rels = [n[len(root) + 1:] if root else n for n in names if is_under(n, root)]
        name = (scene_name_of(base)
                or next((scene_name_of(r) for r in rels if "/" not in r and r.endswith(".xml")
                         and scene_name_of(r)), None)
                or (root == "" and _hint and scene_name_of(_hint))
                or COPY_SUFFIX_RE.sub("", base or PurePosixPath(_hint or tree.label).stem))
        label = tree.describe(root) if root else tree.label
        refs.append(SceneRef(name, label, tree, prefix=root, is_copy=bool(COPY_SUFFIX_RE.search(base))))
    for n in archive_names(tree):
        if any(is_under(n, r) for r in roots):
            continue
        stem = PurePosixPath(n).stem
        name = scene_name_of(stem)
        if name and n not in tree.refused:
            refs.append(SceneRef(name, tree.describe(n), tree, member=n,
                                 is_copy=bool(COPY_SUFFIX_RE.search(stem))))
        elif name or "fusar" not in n.lower():  # a FUSAR-Ship archive lying beside the scenes is not searched
            sub = open_member(tree, n)
            if isinstance(sub, BrokenTree):
                refs += _error_ref(sub, name or stem)
                continue
            try:
                refs.extend(find_scenes(sub, _hint=stem, claim_all=claim_all))
            finally:
                if not any(r.parent is sub for r in refs):
                    sub.close()
    return refs


def _error_ref(broken, name):
    # The SceneRef reporting an archive that cannot be read, if no other reader reported it yet. A corrupt scene
    # archive gets the reason it gets when it is found inside a folder and opened later (list_chips).
    if not broken.claim():
        return []
    scene = broken.reason == "unreadable archive" and scene_name_of(name)
    return [SceneRef(name, broken.label, broken, error=("unreadable scene archive" if scene else broken.reason,
                                                        broken.detail))]


def dedupe_scenes(refs):
    """One SceneRef per scene name (originals before "(1)" copies, then by label); returns (kept, dropped)."""
    kept, dropped = {}, []
    for ref in sorted(refs, key=lambda r: (r.name, r.is_copy, r.label)):
        if ref.name in kept:
            ref.duplicate_of = kept[ref.name]
            dropped.append((ref, kept[ref.name]))
        else:
            kept[ref.name] = ref
    return list(kept.values()), dropped


# ---------------------------------------------------------------------------------------------- chips


def scene_pols(scene_name, suffixes):
    """(co, cross, dual) for a scene: from its product name (1SDV, 1SSH...), else from the chip suffixes seen."""
    m = SCENE_RE.search(scene_name)
    if m:
        base = m["pol"].lower()
        return base * 2, base + ("h" if base == "v" else "v"), m["npol"] == "D"
    seen = sorted(s for s in suffixes if s)
    if seen:
        base = "h" if any(s[0] == "h" for s in seen) else "v"
        return base * 2, base + ("h" if base == "v" else "v"), True
    return "", "", False


def scene_chips(scene, product="uint8", pol="co"):
    """Chips of one opened scene for a product (PRODUCTS) and polarisation (POLS) choice, nothing decoded yet.

    Returns (chips, skips): readers.Chip records (name <scene>_x<X>_y<Y>[_<pol>], member: the file in
    scene.tree, band: the Patch_Cal band, mask_key: <scene>/<Class>_x<X>_y<Y>.png, the synthetic sidecar mask;
    Ship.xml's MMSI, size, position and head/tail where it has the chip), and skips as (source, reason, detail)
    for chips that cannot exist under this choice (a missing polarisation file, a cross-pol request on a
    single-pol scene, an unrecognised file name in the product folder) or whose file the tree refused (a link
    leaving the input folder, a FIFO...: Scene.refused).
    """
    folder = PRODUCTS[product]
    positions, skips = {}, []
    refused = scene.refused()
    for rel in sorted([*scene.names(), *refused]):
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] != folder or not rel.lower().endswith(IMAGE_SUFFIXES):
            continue
        m = CHIP_RE.match(parts[1])
        if not m:
            skips.append((scene.tree.describe(scene.member(rel)), "unrecognised file name",
                          "expected <Class>_x<X>_y<Y>[_pol]"))
            continue
        key = (m["cls"], int(m["x"]), int(m["y"]))
        positions.setdefault(key, {})[(m["pol"] or "").lower() or None] = rel
    co, cross, dual = scene_pols(scene.name, {s for files in positions.values() for s in files})
    chips = []
    patch_files = {rel for rel in scene.names() if rel.startswith("Patch/")} if pol == STACK else set()
    for (cls, x, y), files in sorted(positions.items()):
        if not dual and pol == "cross":
            skips.append((scene.tree.describe(scene.member(next(iter(files.values())))), "no cross-pol channel",
                          "single-polarisation scene"))
            continue
        for channel in {"co": [co], "cross": [cross], "both": [co, cross], STACK: [co]}[pol] if dual else [co]:
            if product == "cal" or not dual:
                # Patch_Cal holds every channel as a band of one file; single-pol chips carry no suffix.
                rel = files.get(None) or next(iter(files.values()))
            else:
                rel = files.get(channel)
            if rel is None:
                skips.append((scene.tree.describe(scene.member(next(iter(files.values())))),
                              "missing polarisation", f"no _{channel} file for {cls}_x{x}_y{y}"))
                continue
            if rel in refused:
                skips.append((scene.tree.describe(scene.member(rel)), *refused[rel]))
                continue
            band = ("cross" if channel == cross else "co") if product == "cal" else None
            chips.append(_chip_record(scene, product, cls, x, y, channel, band, rel))
            if pol == STACK:
                _attach_twin(scene, chips[-1], (co, cross) if dual else None, rel, patch_files)
    return chips, skips


def _attach_twin(scene, chip, pols, rel, patch_files):
    """Give a co chip its stacked twin (the same chip as (co, cross) channels), or the reason it has none."""
    if pols is None:
        chip.twin_reason = "single-polarisation scene: no cross channel to stack"
        return
    if chip.product == "uint8":  # Patch_Uint8 scales each channel by its own peak: stacked from Patch/ instead
        stem = PurePosixPath(rel).name.removeprefix("Visual_").rsplit("_", 1)[0]
        rel = next((f"Patch/{stem}{ext}" for ext in (".tif", ".tiff") if f"Patch/{stem}{ext}" in patch_files), None)
        if rel is None:
            chip.twin_reason = f"no Patch/{stem}.tif to stack (the amplitude file of both channels)"
            return
    chip.twin = replace(chip, name=chip.name.removesuffix(f"_{chip.pol}"), pol="+".join(pols), band=STACK,
                        source=scene.tree.describe(scene.member(rel)), member=scene.member(rel),
                        co_member=chip.member if chip.product == "uint8" else "")


def _chip_record(scene, product, cls, x, y, pol, band, rel):
    figure = product == "rgb"  # Patch_RGB figures have no pixel spacing, mask or head/tail in chip pixels
    chip = Chip(dataset=NAME, cls=cls, name=f"{scene.name}_x{x}_y{y}" + (f"_{pol}" if pol else ""),
                source=scene.tree.describe(scene.member(rel)), member=scene.member(rel), band=band,
                scene=scene.name, acquisition=acquisition_of(scene.name), position=f"{scene.name}:x{x}_y{y}",
                pol=pol, product=product, spacing_row_m="" if figure else scene.spacing[0],
                spacing_col_m="" if figure else scene.spacing[1],
                mask_key=None if figure else f"{scene.name}/{cls}_x{x}_y{y}.png")
    rec = scene.records.get((x, y))
    if rec is None:
        return chip
    chip.has_record = True
    values, problems = record_values(rec, x, y, figure)
    for key, value in values.items():
        setattr(chip, key, value)
    if problems:
        scene.bad_values.append(f"{chip.name.removeprefix(scene.name + '_')}: {', '.join(problems)}")
    return chip


def chip_coords(chip, h, w):
    """Head and tail in chip pixel coordinates {head_row, head_col, tail_row, tail_col} ({} when unknown)."""
    g = chip.geometry
    if not g:
        return {}
    x0 = g.x0 if g.x0 is not None else g.cx - (w - 1) // 2
    y0 = g.y0 if g.y0 is not None else g.cy - (h - 1) // 2
    coords = {"head_row": g.head[1] - y0, "head_col": g.head[0] - x0,
              "tail_row": g.tail[1] - y0, "tail_col": g.tail[0] - x0}
    # Without corners in Ship.xml, only the decoded size tells whether head and tail lie in the chip.
    inside = all(0 <= coords[f"{e}_row"] < h and 0 <= coords[f"{e}_col"] < w for e in ("head", "tail"))
    return coords if inside else {}


# ---------------------------------------------------------------------------------------------- the reader


class OpenSARShipReader(Reader):
    """OpenSARShip for dataset_prep.py: sources are SceneRefs; options `product` and `pol` choose the chips."""

    name = NAME
    title = "OpenSARShip"
    inputs = "an outer zip, scene zips/rars, scene folders, or folders holding them"
    expected = "OpenSARShip scene zips/rars/folders (S1A_..._Patch_Uint8/...)"
    where_to_get = (
        "  OpenSARShip: the OpenSAR platform of Shanghai Jiao Tong University (opensar.sjtu.edu.cn), after\n"
        "    registration (the study used OpenSARShip_2.zip): put the zip, its scene zips or extracted scene\n"
        "    folders in data/raw/opensarship/")
    classes = CLASSES

    def find_sources(self, trees, forced):
        # Every scene once: the archives that cannot be read and the duplicates (their skips and notes) first,
        # then the scenes read, in dedupe_scenes' order.
        refs = [ref for tree in trees for ref in find_scenes(tree, claim_all=forced)]
        kept, dropped = dedupe_scenes([ref for ref in refs if ref.error is None])
        return [ref for ref in refs if ref.error] + [ref for ref, _ in dropped] + kept

    def list_chips(self, ref, options):
        if ref.error is not None:
            return Listing(skips=[(ref.label, *ref.error)])
        if ref.duplicate_of is not None:
            return Listing(notes=[f"OpenSARShip scene {ref.name} found twice: read {ref.duplicate_of.label}, "
                                  f"ignored {ref.label}"])
        try:
            with ref.open() as scene:
                chips, skips = scene_chips(scene, options.product, options.pol)
                # Refused chips are skipped by scene_chips; refused scene files (Ship.xml, metadata) and folders
                # (a product folder linked elsewhere) here.
                skips += [(scene.tree.describe(scene.member(rel)), *why)
                          for rel, why in sorted(scene.refused().items()) if "/" not in rel.rstrip("/")]
                without_xml = 0 if scene.has_ship_xml else 1
        except (BadArchiveError, *READ_ERRORS) as e:
            return Listing(skips=[(ref.label, "unreadable scene archive", str(e))])
        notes = [] if chips or skips else [
            f"OpenSARShip scene {ref.name} ({ref.label}): no {PRODUCTS[options.product]} chips"]
        bad = scene.bad_records + scene.bad_values  # one item per chip; the first MAX_LISTED of them named
        if bad:
            more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
            notes.append(f"OpenSARShip scene {ref.name} ({scene.tree.describe(scene.member('Ship.xml'))}): values "
                         "left out (non-finite or out of range; the chips are kept without them): "
                         f"{'; '.join(bad[:MAX_LISTED])}{more}")
        tallies = {"without_xml": without_xml, "without_record": sum(1 for c in chips if not c.has_record),
                   "bad_values": len(scene.bad_values), "bad_records": len(scene.bad_records)}
        return Listing(chips, skips, notes, tallies)

    def open(self, ref):
        return ref.open()

    load_chip = staticmethod(load_chip)
    chip_coords = staticmethod(chip_coords)

    def summary_notes(self, tallies):
        notes = {"without_xml": "scene(s) without Ship.xml (chips kept, class from the file name)",
                 "without_record": "chip(s) without a Ship.xml record (kept, class from the name)",
                 "bad_values": "chip(s) with non-finite or out-of-range Ship.xml values (chips kept without those "
                               "values; the scene notes name them)",
                 "bad_records": "Ship.xml record(s) without a usable centre (left out: no chip joins them)"}
        return [f"OpenSARShip: {tallies[k]} {text}" for k, text in notes.items() if tallies.get(k)]

    def option_warnings(self, options):
        return ["--product rgb uses OpenSARShip's Patch_RGB images, which are rendered figures (colour map, axes, "
                "colour bar), not SAR chips; use them only to reproduce the published study"] \
            if options.product == "rgb" else []


READER = OpenSARShipReader()
