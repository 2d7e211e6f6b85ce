"""Raw-data fixtures the reader and preparation tests share: the real OpenSARShip scenes (when present) and a small
FUSAR-Ship copy written in every layout the FUSAR reader accepts (docs/data-formats.md).

The real scenes are the three zips in ../shared/data/opensarship (relative to the repository root: 1.0 GRD, 2.0
GRD, 2.0 SLC); the tests that need them are marked `real` and skip without them.
"""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import fusar

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
