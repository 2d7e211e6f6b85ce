"""Tiny prepared sets in the exact layout dataset_prep.py writes (the contract in sets.py).

    from tiny_data import write_tiny_prepared
    data_dir = write_tiny_prepared(tmp_path / "prepared")      # fusar, opensarship, mixed

Each set holds `train/<Class>/<name>.png` and `test/<Class>/<name>.png` (single-channel 8-bit PNGs at native
size), `masks/<split>/<Class>/<name>.png` (exact ship masks, 0 sea / 255 ship), `manifest.csv` (every column
of the interface, sorted by path) and `summary.json` / `summary.txt`. The merged set is the union of the
per-dataset splits (train with train, test with test), as dataset_prep.py makes it.

Chips are deterministic for a given seed and slightly learnable: a bright ellipse (the ship) on speckled sea,
its length, width and brightness set by the class. FUSAR-like chips are 32-40 px, OpenSARShip-like 16-28 px.
Counts are unbalanced like the real data (Cargo the majority).
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

import sets

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
    for split in ("train", "test"):
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


def _write_set(set_dir, items, classes):
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
              for s in ("train", "test")}
    (set_dir / "summary.json").write_text(json.dumps({"counts": counts, "skipped": {}}, indent=2) + "\n")
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
        _write_set(root / name, items, classes)
    return root
