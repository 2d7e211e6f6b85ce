"""Synthetic OpenSARShip and FUSAR-Ship in the real on-disk layouts, so that the real readers read them.

Usual entry (writes data/raw/synthetic/, then prepares the splits through the real readers):

    python dataset_prep.py --synthetic [--synthetic-chips 600]

Only the raw synthetic datasets:

    python synthetic.py --raw-dir data/raw --chips 600 --seed 0

From Python: `synthetic.generate(raw_dir, n_chips=None, seed=0, progress=True) -> dict`. It replaces
<raw_dir>/synthetic/ with (the real layouts: docs/data-formats.md):

    opensarship/<scene>.zip   Sentinel-1 scene archives, version 1.0 (top folder, Metedata.xml, ReadMe.pdf)
                              and 2.0 (flat, <scene>.xml, GRD Ship.xml closed by a malformed <\\ShipList>);
                              GRD 1SDV, GRD 1SSV, SLC twins; Patch/, Patch_Cal/, Patch_Uint8/, Patch_RGB/
    fusar/FUSAR-Ship1.0/<Category>/<SubCategory>/Ship_CxxSyyNzzzz.tiff, fusar/FUSAR-Ship1.0/meta.csv
    masks/opensarship/<scene>/<Class>_x<X>_y<Y>.png, masks/fusar/<Category>/<SubCategory>/Ship_CxxSyyNzzzz.png

Three modules: this one plans both datasets (classes, ships, scenes) and writes FUSAR-Ship;
synthetic_opensarship.py renders and writes the OpenSARShip scene archives; simulator.py holds the physics
(sensors, sea backscatter, K-distributed clutter, vessels, the point spread function), with its sources. The
writers' choices:
- Sea level: from each scene's wind (Weibull, WIND_SCALE), varied from chip to chip, the chip's incidence and
  polarisation, by the same physics (simulator.sea_sigma0) whatever the ship's class; measured on the real
  Patch_Cal chips: VV -20 to -11 dB (median -16.5), VH -27 to -23 dB per scene (mostly noise floor). The 8-bit sea level
  then follows from each chip's max scaling: a small, weak ship leaves its sea bright, as in the real data.
- Chip extent: 3.9 AIS lengths along azimuth (synthetic_opensarship.SIDE_PER_LENGTH, measured), 17 px at least.
- Products as measured on the real archives: Patch = integer amplitude DN (SLC: integer Re/Im), Patch_Cal =
  k DN^2 (linear sigma0), Patch_Uint8 = round(255 A / max A). FUSAR-Ship does not document its 8-bit scaling:
  here the amplitude is scaled linearly and clipped at FUSAR_CLIP x the chip median (sea ~20/255, ships
  saturate).
"""

import argparse
import math
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

import simulator
import synthetic_opensarship
from simulator import (GF3_RESOLUTION, GF3_WINDOW, GRD_SIZE, Sensor, gamma_texture, new_vessel, rng_for,
                       sar_intensity, sea_sigma0, ship_returns)
from synthetic_opensarship import Acquisition, Sighting, png_bytes, write_oss_scene
from cli import run_main

# -------------------------------------------------------------------------------- the datasets' defaults
# (the physics' constants are in simulator.py, the OpenSARShip chip sides and file details in
# synthetic_opensarship.py)
DEFAULT_CHIPS = 600  # chips per dataset when no size is given; `make demo` passes its own (DEMO_CHIPS)
REAL_COUNTS = {  # ships per study class in the real datasets (docs/data-formats.md): the proportions copied
    "opensarship": {"Cargo": 4120, "Tanker": 835, "Fishing": 63},
    "fusar": {"Cargo": 2114, "Fishing": 789, "Tanker": 248},
}
OTHER_CLASSES = {"opensarship": ("Other Type", "Passenger", "Tug"), "fusar": ("Other", "Passenger", "Tug")}
OTHER_SHARE = 0.04  # a few chips of other classes, so that the readers' class filter is exercised
MIN_CHIPS_PER_CLASS = 32  # floor of chips per study class
MIN_SHIPS_PER_CLASS = 25  # distinct ships (MMSIs) per class at least, repeats and SLC twins come on top
REPEAT_SHARE = 0.12  # sightings of a ship seen before (same MMSI, another scene): the real leakage trap
TWIN_SHARE = 0.15  # acquisitions delivered both as GRD and as SLC (the same ships twice), as in OpenSARShip
SINGLE_POL_SHARE = 0.15  # 1SSV scenes: VV only, no polarisation suffix in the file names
V1_SHARE = 0.5  # scene archives in the version 1.0 layout, the others 2.0
SHIPS_PER_SCENE = (6, 18)
FUSAR_SIDE = 512
# The sea state of a scene, the same for every class (simulator.sea_sigma0 turns it into NRCS): 10 m winds Weibull
# distributed (shape 2, as ocean winds are) with scales that put the co-pol sea of the GRD chips at the real
# Patch_Cal levels (VV -20 to -11 dB at 31-38 deg, median -16.5); the real single-pol (1SSV) chips are darker
# (docs/data-formats.md), their scenes get lighter winds. Noise floors: the real VH sea, -27 to -23 dB, is mostly
# Sentinel-1's NESZ; Gaofen-3 UFS's is an assumed range around its design value.
WIND_SHAPE, WIND_SCALE = 2.0, {False: 8.75, True: 5.5}  # Weibull scale (m/s) by single-pol; FUSAR: False's
S1_NESZ_DB, GF3_NESZ_DB = (-27.0, -23.0), (-25.0, -19.0)
GF3_ORBIT_KM = 755.0  # look angle (meta.csv centerLookAngle) -> incidence on the curved Earth
FUSAR_CLIP = 12.0  # FUSAR uint8 = 255 A / (FUSAR_CLIP median A), clipped
FUSAR_SECOND_SHIP = 0.08  # FUSAR chips with another ship nearby, as the FUSAR readme warns
# FUSAR-Ship categories in alphabetical order give the Cxx index (C01 = Cargo). Of the sub-categories only
# C01S01 AggregatesCarrier and C01S02 BulkCarrier are confirmed by the official readme; the others illustrate.
FUSAR_CATEGORIES = ("Cargo", "DiveVessel", "Dredger", "Fishing", "HighSpeedCraft", "LawEnforce", "Other",
                    "Passenger", "PortTender", "Reserved", "SAR", "Tanker", "Tug", "Unspecified",
                    "WingInGrnd")
FUSAR_SUBCATEGORIES = {  # (Syy, name, relative frequency)
    "Cargo": ((1, "AggregatesCarrier", 1), (2, "BulkCarrier", 4), (4, "ContainerShip", 3),
              (7, "GeneralCargo", 8)),
    "Fishing": ((2, "Fishing", 1),),
    "Tanker": ((2, "ChemicalTanker", 1), (5, "CrudeOilTanker", 1), (9, "OilProductsTanker", 2)),
    "Other": ((1, "Other", 1),), "Passenger": ((1, "Passenger", 1),), "Tug": ((1, "Tug", 1),),
}


def _spare(remaining, ships, total):
    """Chips of a class beyond those still needed for new ships: the budget for repeats and SLC twins."""
    return remaining - max(0, min(MIN_SHIPS_PER_CLASS, total) - ships)


def class_counts(dataset, n_chips=None):
    """Chips per class of "opensarship" or "fusar": real proportions, the floor, a few other classes."""
    n = DEFAULT_CHIPS if n_chips is None else int(n_chips)
    others = OTHER_CLASSES[dataset]
    n_other = max(len(others), round(OTHER_SHARE * n))
    counts = {c: n_other // len(others) + (i < n_other % len(others)) for i, c in enumerate(others)}
    real = REAL_COUNTS[dataset]
    n_main, total = n - n_other, sum(real.values())
    for c in ("Fishing", "Tanker"):
        counts[c] = max(MIN_CHIPS_PER_CLASS, round(n_main * real[c] / total))
    counts["Cargo"] = max(MIN_CHIPS_PER_CLASS, n_main - counts["Fishing"] - counts["Tanker"])
    return dict(sorted(counts.items()))


# -------------------------------------------------------------------------------- OpenSARShip
def plan_opensarship(seed, n_chips):
    """Acquisitions and their sightings, with chip counts per class exactly as class_counts()."""
    rng = rng_for(seed, 1, 0)
    counts = class_counts("opensarship", n_chips)
    counts_m = {("Other" if c == "Other Type" else c): n for c, n in counts.items()}  # by ship class
    remaining = dict(counts_m)
    mmsis, vessels, acqs, names = set(), {c: [] for c in remaining}, [], set()
    # The first acquisitions cover every layout variant, (version, single-pol, SLC twin), even in a tiny run.
    forced = [("1.0", False, False), ("2.0", False, True), ("2.0", True, False), ("1.0", False, True)]
    while sum(remaining.values()):
        if len(acqs) < len(forced):
            version, single, twin = forced[len(acqs)]
        else:
            version = "1.0" if rng.random() < V1_SHARE else "2.0"
            single, twin = rng.random() < SINGLE_POL_SHARE, rng.random() < TWIN_SHARE
        twin = twin and any(n >= 2 and _spare(n, len(vessels[c]), counts_m[c]) >= 1
                            for c, n in remaining.items())
        ascending = bool(rng.random() < 0.5)
        start = datetime(2015, 6, 1) + timedelta(
            days=int(rng.integers(0, 760)), hours=10 if ascending else 22, minutes=int(rng.integers(0, 60)),
            seconds=int(rng.integers(0, 60)))
        while True:  # product names must be unique
            acq = Acquisition(
                index=len(acqs), version=version, pol="1SSV" if single else "1SDV", start=start,
                orbit=7396 + (start - datetime(2015, 8, 23)).days * 175 // 12,
                datatake=int(rng.integers(0x9000, 0x12000)), grd_id=int(rng.integers(0, 0x10000)),
                slc_id=int(rng.integers(0, 0x10000)) if twin else None, ascending=ascending,
                wind=float(WIND_SCALE[single] * rng.weibull(WIND_SHAPE)), wind_dir=float(rng.uniform(0, 360)),
                nesz_db=float(rng.uniform(*S1_NESZ_DB)), nu=float(rng.integers(8, 41)) / 2,
                corr_px=float(rng.uniform(1, 4)), k_grd=float(rng.uniform(2.2e-6, 2.8e-6)),
                k_slc=float(rng.uniform(0.8e-5, 1.3e-5)))
            new = {acq.name("GRD"), acq.name("SLC")} if twin else {acq.name("GRD")}
            if not new & names:
                names |= new
                break
        need = 2 if twin else 1  # an SLC twin shows every ship twice
        for _ in range(int(rng.integers(SHIPS_PER_SCENE[0], SHIPS_PER_SCENE[1] + 1))):
            # a twin sighting (2 chips, at most one new ship) and a repeat must leave the chips reserved
            # for the ships still needed
            spare = {c: _spare(n, len(vessels[c]), counts_m[c]) for c, n in remaining.items()}
            avail = [c for c, n in remaining.items() if n >= need and spare[c] >= need - 1]
            if not avail:
                break
            w = np.array([remaining[c] for c in avail], float)
            cls = avail[int(rng.choice(len(avail), p=w / w.sum()))]
            remaining[cls] -= need
            seen = [v for v in vessels[cls] if all(v is not s.vessel for s in acq.sightings)]
            if seen and spare[cls] >= need and rng.random() < REPEAT_SHARE:
                vessel = seen[int(rng.integers(len(seen)))]
            else:
                vessel = new_vessel(rng, cls, mmsis)
                vessels[cls].append(vessel)
            while True:  # chip centres apart, away from the scene edges
                x, y = int(rng.integers(200, GRD_SIZE[1] - 200)), int(rng.integers(200, GRD_SIZE[0] - 200))
                if all(abs(x - s.x) + abs(y - s.y) > 100 for s in acq.sightings):
                    break
            acq.sightings.append(Sighting(vessel, x, y, float(rng.uniform(0, 2 * math.pi))))
        if acq.sightings:
            acqs.append(acq)
    return acqs


# -------------------------------------------------------------------------------- FUSAR-Ship
def plan_fusar(seed, n_chips):
    """(category, Syy, sub-category, sample index, vessel) per chip, counts as class_counts("fusar")."""
    rng = rng_for(seed, 2, 0)
    mmsis, seen, chips, index = set(), {}, [], {}
    for cat, n in class_counts("fusar", n_chips).items():
        subs = FUSAR_SUBCATEGORIES[cat]
        w = np.array([s[2] for s in subs], float)
        for i in range(n):
            sub_i, sub = subs[int(rng.choice(len(subs), p=w / w.sum()))][:2]
            if seen.get(cat) and _spare(n - i, len(seen[cat]), n) >= 1 and rng.random() < REPEAT_SHARE:
                vessel = seen[cat][int(rng.integers(len(seen[cat])))]
            else:
                vessel = new_vessel(rng, cat, mmsis)
                seen.setdefault(cat, []).append(vessel)
            index[(cat, sub_i)] = index.get((cat, sub_i), 0) + 1
            chips.append((cat, sub_i, sub, index[(cat, sub_i)], vessel))
    return chips


def render_fusar_chip(seed, k, vessel, others):
    """A 512 x 512 Gaofen-3 UFS chip, the ship at the centre, sometimes another nearby: (uint8, mask,
    meta)."""
    rng, ship_rng = rng_for(seed, 2, 1, k), rng_for(seed, 2, 3, k)  # the sea's draws apart from the ship's
    height, width = float(rng.uniform(1.69, 1.73)), 1.124222  # heightspace (azimuth), widthspace, as meta.csv
    sensor = Sensor((height, width), GF3_RESOLUTION, 1.0, GF3_WINDOW)
    shape = (FUSAR_SIDE, FUSAR_SIDE)
    centre = ((FUSAR_SIDE - 1) / 2 + rng.uniform(-2, 2), (FUSAR_SIDE - 1) / 2 + rng.uniform(-2, 2))
    pol, look = str(rng.choice(["DH", "DV"])), float(rng.uniform(20, 45))
    theta = math.degrees(math.asin(math.sin(math.radians(look)) * (6371.0 + GF3_ORBIT_KM) / 6371.0))
    wind = float(WIND_SCALE[False] * rng.weibull(WIND_SHAPE))
    mu = sea_sigma0({"DH": "hh", "DV": "vv"}[pol], wind, rng.uniform(0, 360), theta, rng.uniform(*GF3_NESZ_DB))
    texture = gamma_texture(rng, shape, float(rng.integers(6, 25)) / 2, rng.uniform(6, 16), cell=4)
    maps, mask = ship_returns(ship_rng, vessel, float(rng.uniform(0, 2 * math.pi)), centre, shape, sensor, q=2)
    d, p = maps["vv"]
    if rng.random() < FUSAR_SECOND_SHIP:  # another ship nearby: not in the mask, it is not the labelled one
        other = others[int(rng.integers(len(others)))]
        dist, ang = 0.5 * (vessel.length + other.length) + rng.uniform(30, 150), rng.uniform(0, 2 * math.pi)
        c2 = (centre[0] + dist * math.sin(ang) / height, centre[1] + dist * math.cos(ang) / width)
        maps2, _ = ship_returns(ship_rng, other, float(rng.uniform(0, 2 * math.pi)), c2, shape, sensor, q=2)
        d, p = d + maps2["vv"][0], p + maps2["vv"][1]
    amp = np.sqrt(sar_intensity(rng, mu, texture, d, p, sensor.looks, ship_rng))
    u8 = np.clip(np.round(255 * amp / (FUSAR_CLIP * np.median(amp[::4, ::4]))), 0, 255).astype(np.uint8)
    return u8, mask, [pol, f"{look:.2f}", f"{height:.6f}", f"{width:.6f}"]


def write_fusar(seed, n_chips, root, mask_dir, bar):
    chips = plan_fusar(seed, n_chips)
    others = [c[4] for c in chips]
    rows = []
    for k, (cat, sub_i, sub, n, vessel) in enumerate(chips):
        cid = f"Ship_C{FUSAR_CATEGORIES.index(cat) + 1:02d}S{sub_i:02d}N{n:04d}"
        u8, mask, meta = render_fusar_chip(seed, k, vessel, others)
        for d in (root / cat / sub, mask_dir / cat / sub):
            d.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / cat / sub / f"{cid}.tiff", u8, metadata=None, photometric="minisblack")
        (mask_dir / cat / sub / f"{cid}.png").write_bytes(png_bytes(mask.astype(np.uint8) * 255))
        rows.append("\t".join([cid, str(vessel.mmsi), str(vessel.length), str(vessel.width), *meta,
                               f"{cat}\\{sub}"]))
        bar.update(1)
    header = "id\tmmsi\tlength\twidth\tpolarMode\tcenterLookAngle\theightspace\twidthspace\tpath"
    text = "\r\n".join([header, *sorted(rows)]) + "\r\n"
    (root / "meta.csv").write_text(text, encoding="utf-8", newline="")


# -------------------------------------------------------------------------------- entry points
# the generator's source files: a cache of its output must hash them all (dataset_prep.py's fingerprint)
SOURCES = tuple(Path(m.__file__) for m in (simulator, synthetic_opensarship)) + (Path(__file__),)


def generate(raw_dir, n_chips=None, seed=0, progress=True):
    """Write synthetic OpenSARShip and FUSAR-Ship, about n_chips chips each (default DEFAULT_CHIPS), under
    <raw_dir>/synthetic/, replacing what was there: its content is exactly what this seed and size produce.
    Returns {"opensarship", "fusar", "masks": Path, "chips": {dataset: n}, "counts": {dataset: {class: n}},
    "seconds": float, "bytes": int}."""
    t0 = time.perf_counter()
    n = DEFAULT_CHIPS if n_chips is None else int(n_chips)
    if n < 1:
        raise ValueError(f"n_chips must be a positive number of chips per dataset, got {n_chips}")
    out = Path(raw_dir) / "synthetic"
    if out.exists():
        shutil.rmtree(out)
    oss_dir, fusar_root, masks = out / "opensarship", out / "fusar" / "FUSAR-Ship1.0", out / "masks"
    for d in (oss_dir, fusar_root, masks / "opensarship", masks / "fusar"):
        d.mkdir(parents=True)
    acqs = plan_opensarship(seed, n)
    n_oss = sum(len(a.sightings) * (2 if a.slc_id is not None else 1) for a in acqs)
    n_fusar = sum(class_counts("fusar", n).values())
    with tqdm(total=n_oss + n_fusar, desc="synthetic chips", unit="chip", disable=not progress) as bar:
        for acq in acqs:
            for product in ("GRD", "SLC") if acq.slc_id is not None else ("GRD",):
                write_oss_scene(seed, acq, product, oss_dir, masks / "opensarship", bar)
        write_fusar(seed, n, fusar_root, masks / "fusar", bar)
    return {"opensarship": oss_dir, "fusar": out / "fusar", "masks": masks,
            "chips": {"opensarship": n_oss, "fusar": n_fusar},
            "counts": {d: class_counts(d, n) for d in ("opensarship", "fusar")},
            "seconds": time.perf_counter() - t0,
            "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}


def get_args_parser():
    parser = argparse.ArgumentParser(description="Synthetic OpenSARShip and FUSAR-Ship, real layouts.")
    parser.add_argument("--raw-dir", default="data/raw", help="writes <raw-dir>/synthetic/, replacing it")
    parser.add_argument("--chips", type=int, default=DEFAULT_CHIPS, help="approximate chips per dataset")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(args):
    if args.chips < 1:
        raise SystemExit(f"error: --chips must be a positive number of chips per dataset, got {args.chips}")
    info = generate(args.raw_dir, args.chips, args.seed)
    print(f"wrote {info['chips']['opensarship']} OpenSARShip and {info['chips']['fusar']} FUSAR-Ship chips "
          f"({info['bytes'] / 1e6:.1f} MB) in {Path(args.raw_dir) / 'synthetic'}, {info['seconds']:.1f} s")
    return info


if __name__ == "__main__":
    run_main("synthetic.py", lambda: main(get_args_parser().parse_args()))
