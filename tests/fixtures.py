"""The test suite's one fixture module: inputs the tests build themselves, in the exact real layouts.

    from fixtures import write_tiny_prepared, CLASSES      # prepared sets as dataset_prep.py writes them
    from fixtures import write_fusar, ZIPS, real, GRD_V1   # raw FUSAR-Ship copies; the real OpenSARShip scenes
    from fixtures import expected_scores                   # a scores.csv row recomputed with scikit-learn alone

Prepared sets (write_tiny_prepared): each set holds `train/<Class>/<name>.png` and `test/<Class>/<name>.png`
(single-channel 8-bit PNGs at native size), `masks/<split>/<Class>/<name>.png` (exact ship masks, 0 sea / 255
ship), `manifest.csv` (sets.MANIFEST_COLUMNS, sorted by path) and `summary.json` / `summary.txt`. The merged set
is the union of the per-dataset splits. Chips are deterministic for a given seed and slightly learnable: a bright
ellipse (the ship) on speckled sea, its length, width and brightness set by the class. FUSAR-like chips are
32-40 px, OpenSARShip-like 16-28 px; counts are unbalanced like the real data (Cargo the majority).

Raw data: the real scenes are the three zips in ../shared/data/opensarship (relative to the repository root: 1.0
GRD, 2.0 GRD, 2.0 SLC); tests that need them are marked `real` and skip without them. write_fusar writes a small
FUSAR-Ship copy in every layout the FUSAR reader accepts (docs/data-formats.md).

Scores (expected_scores): the scores.csv row of one set of predictions, recomputed with scikit-learn alone (not
metrics.py), so that tests check the grid's metrics against an independent computation.
"""

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

import fusar
import sets

# ------------------------------------------------------------------------------------------------------------
# prepared sets

CLASSES = ("Cargo", "Fishing", "Tanker")
COUNTS = {"train": {"Cargo": 8, "Fishing": 4, "Tanker": 4}, "test": {"Cargo": 6, "Fishing": 3, "Tanker": 3}}
# (length, width as fractions of the chip side, peak brightness): what makes the classes learnable.
_SHAPES = {"Cargo": (0.62, 0.16, 230), "Fishing": (0.28, 0.12, 190), "Tanker": (0.55, 0.26, 150)}
_SIDES = {"fusar": (32, 40), "opensarship": (16, 28)}
_SPACING_M = {"fusar": 1.1, "opensarship": 10.0}


def _shape(cls):
    # Classes beyond the three of the study get a shape derived from their name, still deterministic.
    if cls in _SHAPES:
        return _SHAPES[cls]
    h = int(hashlib.sha1(cls.encode()).hexdigest(), 16)
    return 0.25 + (h % 40) / 100, 0.1 + (h // 40 % 15) / 100, 140 + h // 600 % 100


def _chip(rng, side, cls):
    """One chip: (image uint8 (side, side), mask uint8, head (row, col), tail (row, col), length, width)."""
    frac_len, frac_wid, peak = _shape(cls)
    length, width = frac_len * side, max(frac_wid * side, 2.0)
    angle = rng.uniform(0, math.pi)
    cy, cx = (side - 1) / 2 + rng.uniform(-1, 1), (side - 1) / 2 + rng.uniform(-1, 1)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float64)
    along = (cols - cx) * math.cos(angle) + (rows - cy) * math.sin(angle)
    across = -(cols - cx) * math.sin(angle) + (rows - cy) * math.cos(angle)
    inside = (along / (length / 2)) ** 2 + (across / (width / 2)) ** 2 <= 1.0
    sea = rng.gamma(shape=2.0, scale=8.0, size=(side, side))  # speckle-like sea clutter, mean 16
    ship = peak * rng.uniform(0.8, 1.0, size=(side, side))
    image = np.clip(np.where(inside, ship, sea), 0, 255).round().astype(np.uint8)
    mask = np.where(inside, 255, 0).astype(np.uint8)
    dy, dx = math.sin(angle) * length / 2, math.cos(angle) * length / 2
    head, tail = (cy - dy, cx - dx), (cy + dy, cx + dx)
    return image, mask, head, tail, length, width


def _dataset_rows(dataset, style, classes, counts, rng):
    """Generate the chips of one dataset: list of (row dict, image, mask)."""
    out = []
    lo, hi = _SIDES[style]
    spacing = _SPACING_M[style]
    for split in [s for s in sets.SPLITS if s in counts]:  # a val split where `counts` has one
        for cls in classes:
            for i in range(counts[split][cls]):
                side = int(rng.integers(lo, hi + 1))
                image, mask, head, tail, length, width = _chip(rng, side, cls)
                name = f"{dataset}_{cls}_{split}{i:03d}.png"
                mmsi = str(412000000 + len(out)) if style == "opensarship" else ""
                row = dict.fromkeys(sets.MANIFEST_COLUMNS, "")
                row.update(
                    path=f"{split}/{cls}/{name}", dataset=style, split=split,
                    group=mmsi or f"{dataset}-{cls}-{i}", source=f"tiny/{dataset}/{cls}/{name}",
                    scene="tiny_scene" if style == "opensarship" else "",
                    mmsi=mmsi, pol="vv" if style == "opensarship" else "DH", product="Patch_Uint8",
                    chip_h=str(side), chip_w=str(side), ship_length_m=f"{length * spacing:.1f}",
                    ship_width_m=f"{width * spacing:.1f}", spacing_row_m=str(spacing),
                    spacing_col_m=str(spacing),
                    mask=f"masks/{split}/{cls}/{name}",
                )
                row["class"] = cls
                if style == "opensarship":  # head/tail are known for OpenSARShip only (from Ship.xml)
                    row.update(head_row=f"{head[0]:.1f}", head_col=f"{head[1]:.1f}",
                               tail_row=f"{tail[0]:.1f}", tail_col=f"{tail[1]:.1f}")
                out.append((row, image, mask))
    return out


def _write_set(set_dir, items, classes, seed):
    set_dir.mkdir(parents=True, exist_ok=True)
    for row, image, mask in items:
        chip_path = set_dir / row["path"]
        chip_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(chip_path)
        row["sha1"] = hashlib.sha1(chip_path.read_bytes()).hexdigest()
        mask_path = set_dir / row["mask"]
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").save(mask_path)
    rows = sorted((row for row, _, _ in items), key=lambda r: r["path"])
    sets.write_manifest(set_dir / sets.MANIFEST, rows)
    counts = {s: {c: sum(r["split"] == s and r["class"] == c for r in rows) for c in classes}
              for s in sets.SPLITS if any(r["split"] == s for r in rows)}
    summary = {"counts": counts, "skipped": {}, "split_seed": seed}
    (set_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"{s}: " + ", ".join(f"{c} {n}" for c, n in counts[s].items()) for s in counts]
    (set_dir / "summary.txt").write_text("\n".join(lines) + "\n")


def write_tiny_prepared(root, sets=("fusar", "opensarship", "mixed"), classes=CLASSES, counts=None, seed=0):
    """Write tiny prepared sets under `root` (created) and return it as a Path.

    `sets` may name fusar, opensarship, mixed (the union of the other two; both are generated for it, written
    only if named) and any other name (a FUSAR-like set of that name, e.g. one with different `classes`).
    `counts` maps split -> class -> number of chips; default COUNTS, with 4 train / 2 test chips for any class
    not in it. Same arguments, same bytes.
    """
    root = Path(root)
    counts = counts or {s: {c: COUNTS[s].get(c, 4 if s == "train" else 2) for c in classes} for s in COUNTS}
    generated = {}
    for offset, name in enumerate(("fusar", "opensarship")):
        if name in sets or "mixed" in sets:
            rng = np.random.default_rng([seed, offset])
            generated[name] = _dataset_rows(name, name, classes, counts, rng)
    for offset, name in enumerate(sets):
        if name == "mixed":
            items = [(dict(row), image, mask) for n in ("fusar", "opensarship")
                     for row, image, mask in generated[n]]
        elif name in generated:
            items = generated[name]
        else:
            items = _dataset_rows(name, "fusar", classes, counts, np.random.default_rng([seed, 100 + offset]))
        _write_set(root / name, items, classes, seed)
    return root


# ------------------------------------------------------------------------------------------------------------
# raw data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "opensarship"
ZIPS = sorted(DATA.glob("*.zip")) if DATA.is_dir() else []
real = pytest.mark.skipif(not ZIPS, reason=f"no real OpenSARShip scenes in {DATA}")

GRD_V1 = "S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0"
GRD_V2 = "S1A_IW_GRDH_1SDV_20150902T102505_20150902T102534_007535_00A699_2D00"
SLC_V2 = "S1A_IW_SLC__1SDV_20160606T221231_20160606T221258_011596_011B8A_3FF3"

# FUSAR-Ship: category -> sub-category -> number of chips (FUSAR indices: C01 Cargo, C04 Fishing, C12 Tanker, ...).
SPEC = {"Cargo": {"BulkCarrier": 3, "ContainerShip": 2}, "Fishing": {"Fishing": 2}, "Tanker": {"Tanker": 2},
        "Tug": {"Tug": 1}, "Other": {"Other": 1}, "Dredger": {"Dredger": 1}}
INDEX = {c: i + 1 for i, c in enumerate(fusar.CATEGORIES)}
CORRUPT = "Ship_C01S01N0099"  # garbage bytes in Cargo/BulkCarrier
CHANNEL_AXIS = "Ship_C04S01N0002"  # a (H, W, 1) TIFF in Fishing
META_COLUMNS = ("id", "mmsi", "length", "width", "polarMode", "centerLookAngle", "heightspace", "widthspace", "path")


def chip_pixels(stem):
    rng = np.random.default_rng([ord(ch) for ch in stem])  # distinct, reproducible content per chip
    return rng.integers(0, 256, size=(20, 24), dtype=np.uint8)


def write_fusar(root, layout="nested", sep="\t", meta=True, id_style="stem"):
    """A small FUSAR-Ship copy under `root`; returns {stem: class} of the chips that decode."""
    rows, classes = [], {}
    for cat, subs in SPEC.items():
        for s, (sub, n) in enumerate(subs.items(), start=1):
            folder = root / cat / sub if layout == "nested" else root / cat if layout == "flat" else root
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(1, n + 1):
                stem = f"Ship_C{INDEX[cat]:02d}S{s:02d}N{k:04d}"
                if stem == CHANNEL_AXIS:
                    tifffile.imwrite(folder / f"{stem}.tiff", chip_pixels(stem)[..., None], photometric="minisblack")
                else:
                    Image.fromarray(chip_pixels(stem)).save(folder / f"{stem}.tiff")
                classes[stem] = cat
                path = f"{cat}\\{sub}" if id_style == "stem" else f"{cat}\\{sub}\\{stem}.tiff"
                rows.append({"id": stem if id_style == "stem" else str(len(rows) + 1),
                             "mmsi": str(412000000 + len(rows)), "length": "120", "width": "20.5", "polarMode": "DH",
                             "centerLookAngle": "30", "heightspace": "1.124", "widthspace": "1.7", "path": path})
    bulk = root / "Cargo" / "BulkCarrier" if layout == "nested" else root / "Cargo" if layout == "flat" else root
    (bulk / f"{CORRUPT}.tiff").write_bytes(b"II*\x00 this is not a tiff")
    if meta:
        lines = [sep.join(META_COLUMNS)] + [sep.join(r[c] for c in META_COLUMNS) for r in rows]
        (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return classes


# ------------------------------------------------------------------------------------------------------------
# scores recomputed independently

def expected_scores(true, pred, classes):
    """Percent, as in scores.csv; support is a count."""
    out = {"n": len(true), "accuracy": 100 * (true == pred).mean(),
           "balanced_accuracy": 100 * balanced_accuracy_score(true, pred)}
    present = [c for c in classes if c in set(true)]  # macro: over the classes with test chips
    for average, labels in (("weighted", classes), ("macro", present)):
        pr, rc, f1, _ = precision_recall_fscore_support(true, pred, labels=labels, average=average,
                                                        zero_division=0)
        out.update({f"precision_{average}": 100 * pr, f"recall_{average}": 100 * rc, f"f1_{average}": 100 * f1})
    pr, rc, f1, sup = precision_recall_fscore_support(true, pred, labels=classes, zero_division=0)
    for i, c in enumerate(classes):
        out.update({f"{c}_precision": 100 * pr[i], f"{c}_recall": 100 * rc[i], f"{c}_f1": 100 * f1[i],
                    f"{c}_support": sup[i]})
    return out


def model_rows(frame):
    """The rows of trained cells in scores.csv or predictions.csv: the baselines' rows (protocol `baseline`,
    models floor, size_only, shortcut, no learning rate) left out, the learning rate as a number."""
    frame = frame[frame["protocol"] != "baseline"].reset_index(drop=True)
    return frame.assign(lr=frame["lr"].astype(float))


def small_synthetic_raw(root, n_chips, seed=5):
    """Small synthetic raw data of both datasets in their real layouts under `root` (a per-class floor of 8 chips,
    so that many ships make up each class); returns the folder holding opensarship/ and fusar/."""
    import synthetic  # the generator: only the tests that need raw data pay for importing it

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "MIN_CHIPS_PER_CLASS", 8)
        synthetic.generate(root, n_chips=n_chips, seed=seed, progress=False)
    return Path(root) / "synthetic"


def md_row(text, first_cells):
    """The cells of the one markdown table row of `text` that starts with first_cells (a report.md table)."""
    prefix = "| " + " | ".join(first_cells) + " |"
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one row starting {prefix!r}, found {lines}"
    return [c.strip() for c in lines[0].strip("|").split("|")]


def manifest(set_dir):
    """A prepared set's manifest.csv as a list of dicts (strings, as written)."""
    with open(Path(set_dir) / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def set_manifest_values(set_dir, values):
    """Rewrite a prepared set's manifest.csv with values[path] = {column: text} set on those rows (columns the
    manifest lacks are added as the contract's)."""
    rows = manifest(set_dir)
    for row in rows:
        row.update(values.get(row["path"], {}))
    sets.write_manifest(Path(set_dir) / sets.MANIFEST, [{c: row.get(c, "") for c in sets.MANIFEST_COLUMNS}
                                                        for row in rows])


def offline_torch_cache(tmp_path, monkeypatch):
    """TORCH_HOME under tmp_path, and an unreachable proxy so that any download fails at once, also on a machine
    with internet (an offline machine, as the project's CI is). Returns the weights cache folder
    (<TORCH_HOME>/hub/checkpoints), not yet made."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"
