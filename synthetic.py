"""Synthetic OpenSARShip and FUSAR-Ship in the real on-disk layouts, so that the real readers read them.

Usual entry (writes data/raw/synthetic/, then prepares the splits through the real readers):

    python dataset_prep.py --synthetic [--synthetic-chips 600]

Only the raw synthetic datasets:

    python synthetic.py --raw-dir data/raw --chips 600 --seed 0

From Python: `synthetic.generate(raw_dir, n_chips=None, seed=0, progress=True) -> dict` (notes/INTERFACES.md).
It replaces <raw_dir>/synthetic/ with (real layouts: shared/design/data-formats.md):

    opensarship/<scene>.zip   Sentinel-1 scene archives, version 1.0 (top folder, Metedata.xml, ReadMe.pdf)
                              and 2.0 (flat, <scene>.xml, GRD Ship.xml closed by a malformed <\\ShipList>);
                              GRD 1SDV, GRD 1SSV, SLC twins; Patch/, Patch_Cal/, Patch_Uint8/, Patch_RGB/
    fusar/FUSAR-Ship1.0/<Category>/<SubCategory>/Ship_CxxSyyNzzzz.tiff, fusar/FUSAR-Ship1.0/meta.csv
    masks/opensarship/<scene>/<Class>_x<X>_y<Y>.png, masks/fusar/<Category>/<SubCategory>/Ship_CxxSyyNzzzz.png

Physics, with sources:
- Sea clutter is K-distributed: intensity mu * T * S, a unit-mean Gamma(nu) texture T, spatially correlated
  (long-wave modulation), times unit-mean Gamma(L) speckle S with the product's number of looks [Ward, Tough &
  Watts, "Sea Clutter", IET 2013, ch. 4; Oliver & Quegan, "Understanding SAR Images", 1998, ch. 4-5].
- Sensors: Sentinel-1 IW GRDH 10 m pixels, ~20 m x 22 m resolution, ENL 4.4; IW SLC 2.33 m slant range x
  13.9 m azimuth pixels, single look [ESA Sentinel-1 User Handbook, 2013]; Gaofen-3 UFS ~1.12 m x 1.70 m
  pixels, ~3 m resolution, single-look L1A [Hou et al., Sci. China Inf. Sci. 2020 (FUSAR-Ship); Zhang, Remote
  Sens. 2017].
- Sea level: VV sigma0 -18 to -12 dB, VH 6.5-9.5 dB lower over a -24 dB noise floor [CMOD5 trends, Hersbach et
  al. 2007; measured on the real Patch_Cal chips: VV -17 to -11 dB, VH -26 to -20 dB].
- Ships: hulls of AIS-like length and beam per class, seen as deck clutter (many weak scatterers: a mean
  backscatter at 20 m, speckled points at 3 m), a faint hull/sea dihedral outline and class-specific strong
  scatterers (hatch coamings or container stacks on cargo ships; a centre-line pipe rack, a manifold and a
  bright aft superstructure on tankers; compact mast, wheelhouse and gear on fishing vessels), the strongest
  of RCS ~ L^1.5 [RCS grows with ship size: Skolnik, Radar Handbook, 3rd ed., ch. 15].
- Imaging: separable sinc^2 point spread function with a Hamming-type window, hence cross-shaped sidelobes
  [Cumming & Wong, "Digital Processing of SAR Data", 2005, ch. 2]; strong scatterers fluctuate less than
  speckle.
- Products as measured on the real archives: Patch = integer amplitude DN (SLC: integer Re/Im), Patch_Cal =
  k DN^2 (linear sigma0), Patch_Uint8 = round(255 A / max A). FUSAR-Ship does not document its 8-bit scaling:
  here the amplitude is scaled linearly and clipped at FUSAR_CLIP x the chip median (sea ~20/255, ships
  saturate).
"""

import argparse
import functools
import io
import math
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import fft as sp_fft
from scipy import special
from tqdm import tqdm

# -------------------------------------------------------------------------------- defaults, all in one place
DEFAULT_CHIPS = 600  # chips per dataset: the demo grid (5 models x 3 sets) trains on a 2-core CPU in ~15 min
REAL_COUNTS = {  # ships per study class in the real datasets (data-formats.md): the proportions copied
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
SIDE_PER_LENGTH = 3.0  # chip side / ship length in pixels (median, x lognormal 0.3), as on the real chips
SIDE_RANGE = (17, 185)  # chip sides seen in the real archives
FUSAR_SIDE = 512
FUSAR_CLIP = 12.0  # FUSAR uint8 = 255 A / (FUSAR_CLIP median A), clipped
FUSAR_SECOND_SHIP = 0.08  # FUSAR chips with another ship nearby, as the FUSAR readme warns
RCS_150M = 4.5e3  # m^2, strongest scatterer of a 150 m ship: tuned so that chips match the real contrast
FLICKER = 0.12  # sd of log10 RCS of each scatterer between sightings (aspect, sea state)
ZIP_TIME = (2017, 9, 7, 21, 40, 0)  # fixed archive timestamps: same seed, same bytes
FIGURE_SIZE = (560, 420)  # Patch_RGB figures (real: 875x656 or 1200x900; smaller is faster to write)


@dataclass(frozen=True)
class Sensor:
    spacing: tuple  # (row = azimuth, col = range) ground pixel spacing, m
    resolution: tuple  # (azimuth, ground range) -3 dB resolution, m
    looks: float  # equivalent number of looks of the speckle
    window: float  # Hamming-type window coefficient (1: no weighting, sidelobes -13 dB)


S1_GRD = Sensor((10.0, 10.0), (22.0, 20.0), 4.4, 0.75)
SLC_SPACING = (13.927533, 2.329562)  # (azimuth, slant range) m of IW SLC, as its scene metadata states
GF3_RESOLUTION, GF3_WINDOW = (3.0, 3.0), 0.85


def s1_slc(incidence_deg):
    """Sentinel-1 IW SLC at one incidence: a slant-range step dr is dr / sin(theta) on the ground."""
    s = math.sin(math.radians(incidence_deg))
    return Sensor((SLC_SPACING[0], SLC_SPACING[1] / s), (22.0, 2.7 / s), 1.0, 0.75)


# Ship size per class: (median length m, log-sd, min, max, beam/length mean, sd), resembling AIS statistics.
# Cargo and Tanker overlap, so size alone does not separate them; Fishing is far smaller.
SHIP_SIZE = {
    "Cargo": (170, 0.30, 80, 300, 0.155, 0.015),
    "Tanker": (150, 0.45, 60, 330, 0.175, 0.015),
    "Fishing": (30, 0.40, 12, 60, 0.22, 0.03),
    "Tug": (30, 0.25, 18, 45, 0.30, 0.03),
    "Passenger": (110, 0.50, 30, 230, 0.17, 0.02),
    "Other": (70, 0.70, 15, 250, 0.18, 0.04),
}
AIS_TYPES = {"Cargo": (70, 70, 70, 71, 79), "Tanker": (80, 80, 84, 89), "Fishing": (30,), "Tug": (52,),
             "Passenger": (60, 69), "Other": (0, 90, 99)}
ELABORATED = {"Cargo": ("Bulk Carrier", "Container Ship", "General Cargo", "Cargo"),
              "Tanker": ("Crude Oil Tanker", "Oil Products Tanker", "Chemical Tanker", "LPG Tanker"),
              "Fishing": ("Fishing Vessel", "Trawler"), "Tug": ("Tug",),
              "Passenger": ("Passenger Ship", "Ro-Ro/Passenger Ship"),
              "Other": ("Dredger", "Research Vessel")}
FLAGS = {413: "China [CN]", 412: "China [CN]", 477: "Hong Kong [HK]", 563: "Singapore [SG]",
         636: "Liberia [LR]", 538: "Marshall Is [MH]", 357: "Panama [PA]", 311: "Bahamas [BS]",
         440: "Korea [KR]", 431: "Japan [JP]"}  # MMSI prefix (MID) -> flag
NAME_WORDS = ("HAI", "YANG", "XIN", "DA", "TONG", "HUA", "MING", "ZHONG", "OCEAN", "STAR", "GLORY", "PACIFIC",
              "CSCL", "WAN", "FU", "JIN", "SEA", "LUCKY", "GOLDEN", "ORIENT", "BULK", "ASIA", "EVER", "CHANG")
# ship class -> the class in OpenSARShip chip names (from the AIS code)
OSS_NAME = {"Cargo": "Cargo", "Tanker": "Tanker", "Fishing": "Fishing", "Tug": "Tug",
            "Passenger": "Passenger", "Other": "Other Type"}
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


def _rng(seed, *keys):
    """An independent stream per scene and chip: the output never depends on the order of the work."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


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


# -------------------------------------------------------------------------------- sea clutter
@functools.lru_cache(maxsize=64)
def _gamma_quantiles(nu):
    # Unit-mean Gamma(nu) quantiles tabulated against a standard normal z: np.interp then turns a Gaussian
    # field into an exactly Gamma-distributed one (Gaussian copula), ~30x faster than gammaincinv per pixel.
    z = np.linspace(-6.5, 6.5, 2049)
    return z, special.gammaincinv(nu, special.ndtr(z)) / nu


def gamma_texture(rng, shape, nu, corr_px=0.0, cell=1):
    """Unit-mean Gamma(nu) texture correlated over ~corr_px pixels, drawn on a grid of cell x cell blocks."""
    coarse = (-(-shape[0] // cell), -(-shape[1] // cell))
    g = rng.standard_normal(coarse)
    s = corr_px / cell
    if s > 0:  # Gaussian low-pass, scaled so that the field keeps unit variance exactly (Parseval)
        f2 = np.fft.fftfreq(coarse[0])[:, None] ** 2 + np.fft.fftfreq(coarse[1])[None, :] ** 2
        h = np.exp(-2.0 * (np.pi * s) ** 2 * f2)
        g = np.fft.ifft2(np.fft.fft2(g) * (h / np.sqrt(np.mean(h**2)))).real
    t = np.interp(g, *_gamma_quantiles(float(nu))).astype(np.float32)
    if cell > 1:
        t = np.repeat(np.repeat(t, cell, axis=0), cell, axis=1)[: shape[0], : shape[1]]
    return t


def speckle(rng, shape, looks):
    """Unit-mean Gamma(L) intensity speckle of an L-look image (exponential for L = 1)."""
    if looks == 1:
        return rng.standard_exponential(size=shape, dtype=np.float32)
    return rng.gamma(looks, 1.0 / looks, size=shape)


def k_clutter(rng, shape, mu, looks, nu, corr_px=0.0, cell=1):
    """K-distributed clutter intensity: mean mu, E[I^2] = mu^2 (1 + 1/L)(1 + 1/nu), so
    variance mu^2 (1/L + 1/nu + 1/(L nu))."""
    return mu * gamma_texture(rng, shape, nu, corr_px, cell) * speckle(rng, shape, looks)


# -------------------------------------------------------------------------------- ships
@dataclass
class Vessel:
    """What AIS and MarineTraffic know about one ship: the same object at every sighting of its MMSI."""

    mmsi: int
    cls: str  # Cargo, Tanker, Fishing, Tug, Passenger, Other
    ais_type: int
    length: int
    width: int
    name: str
    imo: int
    callsign: str
    draught: int  # decimetres, as AIS
    elaborated: str
    gross: str
    deadweight: str
    year: str
    layout_seed: int  # the deck layout belongs to the ship: a recurring ship looks alike in every scene


def _truncated_lognormal(rng, median, sd, lo, hi):
    a, b = special.ndtr(math.log(lo / median) / sd), special.ndtr(math.log(hi / median) / sd)
    return median * math.exp(sd * special.ndtri(rng.uniform(a, b)))


def new_vessel(rng, cls, mmsis):
    median, sd, lo, hi, ratio, ratio_sd = SHIP_SIZE[cls]
    length = round(_truncated_lognormal(rng, median, sd, lo, hi))
    width = max(3, round(length * float(np.clip(rng.normal(ratio, ratio_sd), 0.08, 0.4))))
    mmsi = int(rng.choice(list(FLAGS))) * 1_000_000 + int(rng.integers(0, 1_000_000))
    while mmsi in mmsis:
        mmsi += 1
    mmsis.add(mmsi)
    words = rng.choice(NAME_WORDS, size=2, replace=False)
    draught = float(np.clip(0.055 * length + rng.normal(0, 1), 2, 22))
    gross = length * width * draught * 0.4
    big = length >= 60  # small craft have no IMO number and no MarineTraffic particulars
    return Vessel(
        mmsi=mmsi, cls=cls, ais_type=int(rng.choice(AIS_TYPES[cls])), length=length, width=width,
        name=f"{words[0]} {words[1]} {int(rng.integers(1, 99))}",
        imo=int(rng.integers(9_000_000, 9_800_000)) if big else 0,
        callsign="".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), size=5)),
        draught=round(draught * 10), elaborated=str(rng.choice(ELABORATED[cls])),
        gross=f"{gross:.0f}" if big else "NaN", deadweight=f"{gross * 1.6:.0f}" if big else "NaN",
        year=str(int(rng.integers(1990, 2016))) if big else "NaN", layout_seed=int(rng.integers(2**31)))


def _hull_halfwidth(x):
    """Half-beam (fraction of B/2) at x = u / L in [-0.5, 0.5]: transom stern, parallel body, pointed bow."""
    w = np.ones_like(x)
    bow, stern = x > 0.3, x < -0.42
    w[bow] = np.sqrt(np.clip(1 - ((x[bow] - 0.3) / 0.2) ** 2, 0, 1))
    w[stern] = 0.75 + 0.25 * np.sqrt(np.clip(1 - ((x[stern] + 0.42) / 0.08) ** 2, 0, 1))
    return np.where(np.abs(x) <= 0.5, w, 0.0)


def _line(u0, v0, u1, v1, level, step=1.5):
    """A line scatterer as points every `step` m; level = RCS per 10 m of line, relative to the strongest."""
    length = math.hypot(u1 - u0, v1 - v0)
    n = max(2, int(length / step) + 1)
    t = np.linspace(0.0, 1.0, n)
    return np.stack([u0 + t * (u1 - u0), v0 + t * (v1 - v0), np.full(n, level * length / 10.0 / n)], axis=1)


def ship_layout(vessel):
    """The ship's scatterers in its own frame (u m along, bow > 0; v m across): (deck clutter (m, 3) with RCS
    in m^2, strong scatterers (n, 3) with RCS relative to the strongest)."""
    rng = np.random.default_rng(vessel.layout_seed)
    L, B, cls = float(vessel.length), float(vessel.width), vessel.cls
    hb = B / 2
    pts = []

    def cluster(u, n, lo, hi, spread=0.03):
        pts.append(np.stack([u * L + rng.normal(0, spread * L, n), rng.uniform(-0.7, 0.7, n) * hb,
                             rng.uniform(lo, hi, n)], axis=1))

    if cls == "Cargo":  # aft superstructure, then a periodic row of hatch coamings / container stacks
        deck = 10 ** rng.uniform(-1.3, -0.7)
        cluster(-0.41, 3, 0.6, 1.0, 0.02)
        period, level = rng.uniform(14.0, 24.0), rng.uniform(0.1, 0.3)
        for u in np.arange(-0.32 * L, 0.40 * L, period):
            pts.append(_line(u, -0.85 * hb, u, 0.85 * hb, level * rng.uniform(0.6, 1.3)))
        cluster(0.46, 1, 0.2, 0.4, 0.005)
    elif cls == "Tanker":  # smooth deck, centre-line pipe rack, manifold midships, strong aft superstructure
        deck = 10 ** rng.uniform(-1.8, -1.2)
        cluster(-0.42, 4, 0.8, 1.0, 0.015)
        pts.append(_line(-0.36 * L, 0.0, 0.42 * L, 0.0, rng.uniform(0.15, 0.35)))
        pts.append(_line(rng.normal(0, 0.03) * L, -0.9 * hb, 0.0, 0.9 * hb, rng.uniform(0.3, 0.6)))
        cluster(0.45, 1, 0.2, 0.5, 0.005)
    elif cls == "Fishing":  # compact: wheelhouse forward of midships, mast, gear at the stern corners
        deck = 10 ** rng.uniform(-1.0, -0.4)
        cluster(0.2, 2, 0.6, 1.0, 0.04)
        cluster(0.0, 1, 0.5, 1.0, 0.03)
        pts.append(np.array([[-0.45 * L, s * 0.85 * hb, rng.uniform(0.3, 0.7)] for s in (-1, 1)]))
    elif cls == "Tug":  # short, high superstructure amidships, fendered bow
        deck = 10 ** rng.uniform(-1.0, -0.4)
        cluster(0.05, 3, 0.7, 1.0, 0.04)
        cluster(0.46, 1, 0.3, 0.5, 0.005)
    elif cls == "Passenger":  # superstructure along most of the length
        deck = 10 ** rng.uniform(-0.8, -0.2)
        for v in (-0.7 * hb, 0.7 * hb):
            pts.append(_line(-0.4 * L, v, 0.3 * L, v, rng.uniform(0.6, 1.0)))
        cluster(-0.1, 4, 0.6, 1.0, 0.15)
    else:  # Other: a random handful of scatterers
        deck = 10 ** rng.uniform(-1.5, -0.7)
        n = int(rng.integers(3, 9))
        pts.append(np.stack([rng.uniform(-0.45, 0.45, n) * L, rng.uniform(-0.8, 0.8, n) * hb,
                             rng.uniform(0.3, 1.0, n)], axis=1))
    # The hull side and the sea form a dihedral: a faint bright outline, the ship's shape at high resolution.
    u = np.linspace(-0.5 * L, 0.5 * L, max(int(L / 1.5), 4))
    level = rng.uniform(0.004, 0.01) * (L / len(u)) / 10.0
    pts += [np.stack([u, s * hb * _hull_halfwidth(u / L), np.full(len(u), level)], axis=1) for s in (-1, 1)]
    pts = np.concatenate(pts)
    pts[:, 0] = np.clip(pts[:, 0], -0.49 * L, 0.49 * L)
    pts[:, 2] /= pts[:, 2].max()
    # Deck clutter: small structures all over the deck, one per ~25 m^2, exponential RCS of mean sigma0 area.
    m = max(int(0.8 * L * B / 25.0), 1)
    cu = rng.uniform(-0.5, 0.5, m) * L
    cv = rng.uniform(-1, 1, m) * hb * _hull_halfwidth(cu / L)
    return np.stack([cu, cv, rng.exponential(deck * 0.8 * L * B / m, m)], axis=1), pts


def rasterise_hull(length, beam, heading, centre, shape, spacing, q=4):
    """The ship's mask on a chip grid: rows are azimuth (y), columns range (x), heading the bow direction
    (rad) from +x towards +y on the ground, centre its (row, col). A pixel is ship when at least half of it
    is hull (q x q sub-samples) or when the keel crosses it: hulls narrower than a pixel stay connected and
    the mask spans the ship's length (its pixel centres lie within half a pixel of the hull)."""
    dy, dx = spacing
    R = 0.5 * math.hypot(length, beam)
    r0, r1 = max(int(centre[0] - R / dy) - 1, 0), min(int(centre[0] + R / dy) + 2, shape[0])
    c0, c1 = max(int(centre[1] - R / dx) - 1, 0), min(int(centre[1] + R / dx) + 2, shape[1])
    sub = (np.arange(q) + 0.5) / q - 0.5
    Y = ((np.arange(r0, r1)[:, None] + sub).ravel()[:, None] - centre[0]) * dy
    X = ((np.arange(c0, c1)[:, None] + sub).ravel()[None, :] - centre[1]) * dx
    cos, sin = math.cos(heading), math.sin(heading)
    inside = np.abs(Y * cos - X * sin) <= 0.5 * beam * _hull_halfwidth((X * cos + Y * sin) / length)
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = inside.reshape(r1 - r0, q, c1 - c0, q).mean(axis=(1, 3)) >= 0.5
    t = np.arange(-0.5 * length, 0.5 * length + 1e-9, min(dx, dy) / 4)
    kr = np.floor(centre[0] + t * sin / dy + 0.5).astype(int)
    kc = np.floor(centre[1] + t * cos / dx + 0.5).astype(int)
    ok = (kr >= 0) & (kr < shape[0]) & (kc >= 0) & (kc < shape[1])
    mask[kr[ok], kc[ok]] = True
    return mask


def deposit(uv, rcs, heading, centre, shape, spacing):
    """RCS (m^2) at ship coordinates (u, v) -> sigma0-equivalent density on the chip grid, bilinear."""
    dy, dx = spacing
    cos, sin = math.cos(heading), math.sin(heading)
    r = centre[0] + (uv[:, 0] * sin + uv[:, 1] * cos) / dy
    c = centre[1] + (uv[:, 0] * cos - uv[:, 1] * sin) / dx
    out = np.zeros(shape)
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    fr, fc = r - r0, c - c0
    for rr, cc, w in ((r0, c0, (1 - fr) * (1 - fc)), (r0 + 1, c0, fr * (1 - fc)),
                      (r0, c0 + 1, (1 - fr) * fc), (r0 + 1, c0 + 1, fr * fc)):
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        np.add.at(out, (rr[ok], cc[ok]), (rcs * w)[ok] / (dx * dy))
    return out


def _transfer_1d(n, spacing, resolution, window):
    """FFT of the 1-D intensity PSF |h|^2 (unit sum) on n samples: the autocorrelation of the windowed
    spectrum W(f) = a + (1 - a) cos(pi f / fc), |f| <= fc, in closed form."""
    fc = 0.58 / resolution  # band half-width giving a -3 dB width of about `resolution` with these windows
    a, b, k = window, 1.0 - window, np.pi / fc
    tau = np.minimum(np.abs(np.fft.fftfreq(n, d=spacing)), 2 * fc)
    ell, s = 2 * fc - tau, np.sin(k * tau) / k
    t = a * a * ell + 2 * a * b * s + b * b * (0.5 * ell * np.cos(k * tau) - 0.5 * s)
    return t / t[0]


def blur(deck, points, sensor, pad):
    """Both density maps convolved with the sensor's separable PSF by one complex FFT: the transfer function
    is real and even, so the real and imaginary parts stay apart. `pad` zeros after the chip stop the circular
    convolution from wrapping (0: far sidelobes wrap round, as the FUSAR chips are large)."""
    h, w = deck.shape
    n0, n1 = sp_fft.next_fast_len(h + pad), sp_fft.next_fast_len(w + pad)
    z = np.zeros((n0, n1), np.complex64)
    z.real[:h, :w], z.imag[:h, :w] = deck, points
    f = sp_fft.fft2(z, overwrite_x=True)
    f *= _transfer_1d(n0, sensor.spacing[0], sensor.resolution[0], sensor.window).astype(np.float32)[:, None]
    f *= _transfer_1d(n1, sensor.spacing[1], sensor.resolution[1], sensor.window).astype(np.float32)[None, :]
    out = sp_fft.ifft2(f, overwrite_x=True)[:h, :w]
    return np.maximum(out.real, 0.0), np.maximum(out.imag, 0.0)


def ship_returns(rng, vessel, heading, centre, shape, sensor, pols=("vv",), q=4, pad=0):
    """One sighting: blurred (deck, strong scatterers) sigma0 maps per polarisation, and the ship's mask.
    Cross-pol loses 6-9 dB on the deck and 3-12 dB on each scatterer (depolarisation varies by structure)."""
    clutter, pts = ship_layout(vessel)
    scale = RCS_150M * (vessel.length / 150.0) ** 1.5 * 10 ** rng.normal(0, 0.2)
    rcs = pts[:, 2] * scale * 10 ** rng.normal(0, FLICKER, len(pts))
    maps = {}
    for pol in pols:
        deck, strong = clutter[:, 2], rcs
        if pol == "vh":
            deck = deck * 10 ** (-rng.uniform(6, 9) / 10)
            strong = rcs * 10 ** (-rng.uniform(3, 12, len(rcs)) / 10)
        d = deposit(clutter[:, :2], deck, heading, centre, shape, sensor.spacing)
        p = deposit(pts[:, :2], strong, heading, centre, shape, sensor.spacing)
        maps[pol] = blur(d, p, sensor, pad)
    return maps, rasterise_hull(vessel.length, vessel.width, heading, centre, shape, sensor.spacing, q)


def sar_intensity(rng, mu, texture, deck, points, looks):
    """Sea and deck (distributed) share the speckle; dominant scatterers fluctuate less (twice the looks)."""
    out = texture * np.float32(mu)
    out += deck
    out *= speckle(rng, texture.shape, looks)
    strong = points > 1e-3 * mu  # elsewhere the strong scatterers are far below the clutter
    out[strong] += points[strong] * rng.gamma(2 * looks, 0.5 / looks, size=int(strong.sum()))
    return out


# -------------------------------------------------------------------------------- file encoders
def _tiff_float(bands):
    # Patch / Patch_Cal: float32, bands interleaved (contig), uncompressed, "MATLAB" as on the real files
    buf = io.BytesIO()
    a = bands[0] if len(bands) == 1 else np.stack(bands, axis=-1)
    tifffile.imwrite(buf, a.astype(np.float32), metadata=None, software="MATLAB", photometric="minisblack")
    return buf.getvalue()


def _tiff_uint8_packbits(a):
    # Patch_Uint8: PackBits at 72 dpi, the real files' tags (tifffile needs imagecodecs to write PackBits)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="TIFF", compression="packbits", dpi=(72, 72))
    return buf.getvalue()


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _jet(x):
    """MATLAB's jet colour map: x in [0, 1] -> uint8 RGB."""
    rgb = np.clip(1.5 - np.abs(4 * np.asarray(x)[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).round().astype(np.uint8)


# Patch_RGB palette: 254 jet colours, the axes grey, the white background. A palette PNG encodes ~3x faster
# than an RGB one and opens the same in any reader.
_FIGURE_PALETTE = np.concatenate([_jet(np.linspace(0, 1, 254)), [[38, 38, 38], [255, 255, 255]]])
_FIGURE_PALETTE = _FIGURE_PALETTE.astype(np.uint8)


def render_figure(values):
    """Patch_RGB: a rendered figure (imagesc with the jet map, axes, colour bar), not a chip, as in the real
    archives."""
    W, H = FIGURE_SIZE
    # axes and colour bar boxes as fractions of the figure, measured on a real 875 x 656 Patch_RGB figure
    x0, x1, b0, b1 = (round(f * W) for f in (0.1143, 0.7977, 0.8206, 0.8674))
    y0, y1 = round(0.0732 * H), round(0.8918 * H)
    canvas = np.full((H, W), 255, np.uint8)
    vmax = float(values.max()) or 1.0
    rows = np.arange(y1 - y0) * values.shape[0] // (y1 - y0)
    cols = np.arange(x1 - x0) * values.shape[1] // (x1 - x0)
    canvas[y0:y1, x0:x1] = np.round(values / vmax * 253).astype(np.uint8)[rows][:, cols]
    canvas[y0:y1, b0:b1] = np.round(np.linspace(253, 0, y1 - y0)).astype(np.uint8)[:, None]
    im = Image.fromarray(canvas, mode="P")
    im.putpalette(_FIGURE_PALETTE.tobytes())
    draw = ImageDraw.Draw(im)
    for box in ((x0, y0, x1, y1), (b0, y0, b1, y1)):
        draw.rectangle(box, outline=254)
    step = 10 ** math.floor(math.log10(vmax / 4))
    step *= 5 if vmax / step > 20 else 2 if vmax / step > 8 else 1
    for t in np.arange(step, vmax, step):
        y = round(y1 - t / vmax * (y1 - y0))
        draw.line([(b1 - 3, y), (b1, y)], fill=254)
        draw.text((b1 + 6, y - 5), f"{t:g}", fill=254)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _readme_pdf(scene):
    """A one-page PDF in place of the 1.0 archives' ReadMe.pdf."""
    text = f"Synthetic OpenSARShip scene {scene}, written by synthetic.py."
    stream = f"BT /F1 9 Tf 40 800 Td ({text}) Tj ET".encode()
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font "
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            page + b"<< /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, o)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def write_zip(path, entries):
    """Deterministic zip: sorted names (the real archives' order), folder entries, fixed time, FAT flags."""
    dirs = {"/".join(n.split("/")[: i + 1]) + "/" for n in entries for i in range(n.count("/"))}
    with zipfile.ZipFile(path, "w") as zf:
        for name in sorted(set(entries) | dirs):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 0  # FAT, as the real archives: also the same bytes on every platform
            if name.endswith("/"):
                info.external_attr = 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = 0x20
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, entries[name], compresslevel=1)  # fast; float noise barely compresses


# -------------------------------------------------------------------------------- OpenSARShip
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
GRD_SIZE = (16700, 25650)  # (lines, samples) of an IW GRDH scene


@dataclass
class Sighting:
    vessel: Vessel
    x: int  # GRD scene sample (range) of the chip centre
    y: int  # GRD scene line (azimuth)
    heading: float  # bow direction, rad on the ground


@dataclass
class Acquisition:
    index: int
    version: str  # "1.0" or "2.0"
    pol: str  # "1SDV" or "1SSV"
    start: datetime
    orbit: int
    datatake: int
    grd_id: int
    slc_id: int | None  # product id of the SLC twin, None without one
    ascending: bool
    sea_vv_db: float
    vh_drop_db: float
    nu: float
    corr_px: float
    k_grd: float  # calibration: sigma0 = k DN^2
    k_slc: float
    sightings: list = field(default_factory=list)

    def name(self, product):
        start, stop = self.start, self.start + timedelta(seconds=25)
        if product == "GRD":
            kind, pid = "GRDH", self.grd_id
        else:
            kind, pid, start = "SLC_", self.slc_id, start - timedelta(seconds=2)
        return (f"S1A_IW_{kind}_{self.pol}_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{self.orbit:06d}_"
                f"{self.datatake:06X}_{pid:04X}")


def incidence(x):
    """IW incidence across the swath: ~30.6 deg at near range to ~46 deg at far range."""
    return 30.6 + 15.4 * x / GRD_SIZE[1]


def plan_opensarship(seed, n_chips):
    """Acquisitions and their sightings, with chip counts per class exactly as class_counts()."""
    rng = _rng(seed, 1, 0)
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
                sea_vv_db=float(rng.uniform(-22, -16) if single else rng.uniform(-18.5, -12.5)),
                vh_drop_db=float(rng.uniform(6.5, 9.5)), nu=float(rng.integers(8, 41)) / 2,
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


def render_oss_chip(seed, acq, s, k, product):
    """Sighting k of an acquisition as a GRD or SLC chip: products per polarisation, mask, geometry."""
    rng = _rng(seed, 1, 1, acq.index, k, product == "SLC")
    v, inc = s.vessel, incidence(s.x)
    sensor = s1_slc(inc) if product == "SLC" else S1_GRD
    side_rng = _rng(seed, 1, 2, acq.index, k)  # the same draws for a GRD chip and its SLC twin
    half = 0.5 * SIDE_PER_LENGTH * v.length / S1_GRD.spacing[1] * math.exp(0.3 * side_rng.normal())
    # ... never smaller than the ship: SLC range pixels are ~3.5 m on the ground, long ships along range
    extent = max(abs(v.length * math.cos(s.heading)) / sensor.spacing[1],
                 abs(v.length * math.sin(s.heading)) / sensor.spacing[0])
    half = int(np.clip(max(round(half), math.ceil(0.6 * extent) + 2), SIDE_RANGE[0] // 2, SIDE_RANGE[1] // 2))
    side = 2 * half + 1  # odd: the centre pixel is the named (x, y)
    if product == "SLC":  # the SLC raster counts slant-range samples and 13.9 m lines
        x, y = round(s.x * 10 / sensor.spacing[1]), round(s.y * 10 / sensor.spacing[0])
    else:
        x, y = s.x, s.y
    centre = (half + side_rng.uniform(-1, 1), half + side_rng.uniform(-1, 1))
    pols = ("vv",) if acq.pol == "1SSV" else ("vh", "vv")  # Patch band order: VH, VV
    mu_vv = 10 ** (acq.sea_vv_db / 10 - 0.02 * (inc - 38))  # sigma0 falls with incidence
    mu = {"vv": mu_vv, "vh": mu_vv * 10 ** (-acq.vh_drop_db / 10) + 10**-2.4}  # VH over the noise floor
    texture = gamma_texture(rng, (side, side), acq.nu, acq.corr_px * 10 / sensor.spacing[1])
    maps, mask = ship_returns(rng, v, s.heading, centre, (side, side), sensor, pols, q=4, pad=side)
    k_cal = acq.k_slc if product == "SLC" else acq.k_grd
    patch, cal, uint8 = [], [], {}
    for pol in pols:
        inten = sar_intensity(rng, mu[pol], texture, *maps[pol], sensor.looks)
        if product == "SLC":  # complex samples: integer Re, Im with a random phase
            phase = rng.uniform(0, 2 * np.pi, (side, side))
            re, im = (np.round(np.sqrt(inten / k_cal) * f(phase)) for f in (np.cos, np.sin))
            patch += [re, im]
            dn2 = re**2 + im**2
        else:  # detected amplitude: integer DN
            dn = np.minimum(np.round(np.sqrt(inten / k_cal)), 65535)
            patch.append(dn)
            dn2 = dn**2
        cal.append(k_cal * dn2)
        amp = np.sqrt(dn2)
        uint8[pol] = np.round(255 * amp / max(amp.max(), 1e-9)).astype(np.uint8)
    dy, dx = sensor.spacing
    dr, dc = 0.5 * v.length * math.sin(s.heading) / dy, 0.5 * v.length * math.cos(s.heading) / dx
    return {"x": x, "y": y, "half": half, "patch": patch, "cal": cal, "uint8": uint8, "mask": mask,
            "pols": pols, "head": (centre[0] + dr, centre[1] + dc), "tail": (centre[0] - dr, centre[1] - dc),
            "spacing": sensor.spacing, "incidence": inc}


def ship_record(acq, s, product, chip, name, rng):
    """One <ship> record with the real element names, order and nesting (1.0: Slant_Range_Time; 2.0:
    SlantRangeTime and ChipNoise)."""
    v, inc = s.vessel, chip["incidence"]
    look = math.degrees(math.asin(math.sin(math.radians(inc)) * 6371.0 / (6371.0 + 693.0)))  # 693 km orbit
    when = acq.start + timedelta(seconds=s.y * 0.0015)  # ~1.5 ms per GRD line
    lat0, lon0 = (22.0, 114.0) if acq.index % 2 else (38.9, 118.5)
    lon = lon0 + s.x * 10 / 111e3 / math.cos(math.radians(lat0))
    lat = lat0 + (GRD_SIZE[0] - s.y) * 10 / 111e3
    ox, oy, half = chip["x"] - chip["half"], chip["y"] - chip["half"], chip["half"]
    head_x, head_y = ox + round(chip["head"][1]), oy + round(chip["head"][0])
    tail_x, tail_y = ox + round(chip["tail"][1]), oy + round(chip["tail"][0])
    dy, dx = chip["spacing"]
    manual = round(math.hypot((head_x - tail_x) * dx, (head_y - tail_y) * dy))  # as measured on the image
    heading_deg = (90 - math.degrees(s.heading)) % 360
    e = "{:e}".format  # Ship.xml's scientific format, e.g. 1.191583e+02
    sar = [("Time_UTC", f"{when.year}/{when.month}/{when.day}.{when:%H:%M:%S}"),
           ("Head_x", head_x), ("Head_y", head_y), ("Tail_x", tail_x), ("Tail_y", tail_y),
           ("UpperLeft_x", chip["x"] + half), ("UpperLeft_y", chip["y"] + half),  # sic: as the real files
           ("LowerRight_x", chip["x"] - half), ("LowerRight_y", chip["y"] - half),
           ("Center_x", chip["x"]), ("Center_y", chip["y"]), ("Center_longitude", e(lon)),
           ("Center_latitude", e(lat)), ("Manual_Length", manual),
           ("North_Direction", e(rng.uniform(0, 360))),
           ("Chip_Direction", e(math.degrees(math.atan2(head_y - tail_y, head_x - tail_x)) % 180 - 90)),
           ("Incidence", f"{inc:.6f}"), ("Elevation", "NaN" if product == "SLC" else f"{look:.6f}"),
           ("Slant_Range_Time" if acq.version == "1.0" else "SlantRangeTime",
            f"{2 * 693e3 / math.cos(math.radians(inc)) / 299792458.0 * 1e9:.6f}")]
    ais = [("Time", int(when.replace(tzinfo=timezone.utc).timestamp()) + int(rng.integers(-600, 600))),
           ("MMSI", v.mmsi), ("Nav_Status", int(rng.choice([0, 1, 5]))), ("Rot", 0),
           ("Sog", int(rng.integers(0, 150))), ("Pos_Acc", 0),
           ("Longitude", f"{lon + rng.normal(0, 1e-3):.6f}"),
           ("Latitude", f"{lat + rng.normal(0, 1e-3):.6f}"), ("Projected_Longitude", f"{lon:.6f}"),
           ("Projected_Latitude", f"{lat:.6f}"), ("Cog", f"{heading_deg * 10:.2f}"),
           ("True_Head", f"{round(heading_deg):.2f}"), ("Name", name), ("Ship_Type", v.ais_type),
           ("IMO", v.imo),
           ("Callsign", v.callsign), ("Length", v.length), ("Width", v.width), ("Draught", v.draught),
           ("Msgid", 1)]
    err = abs(manual - v.length)
    match = [("Length_error", f"{err:.6f}"), ("Length_error_rate", f"{err / v.length:.6f}"),
             ("Distance_error", f"{rng.uniform(20, 300):.6f}")]
    traffic = [("Length_overall", f"{v.length:.6f}"), ("Breadth_extreme", f"{v.width:.6f}"),
               ("Elaborated_type", v.elaborated), ("Gross_tonnage", v.gross), ("Deadweight", v.deadweight),
               ("Flag", FLAGS[v.mmsi // 1_000_000]), ("Year_built", v.year)]
    groups = [("SARShipInformation", sar), ("AISShipInformation", ais), ("MatchInformation", match),
              ("MarineTrafficInformation", traffic)]
    if acq.version == "2.0":
        groups.append(("ChipNoise", [("Interference", int(rng.random() < 0.1))]))
    lines = ["\t<ship>"]
    for tag, items in groups:
        lines += [f"\t\t<{tag}>", *(f"\t\t\t<{k}>{val}</{k}>" for k, val in items), f"\t\t</{tag}>"]
    return lines + ["\t</ship>"]


def _attr(name, value, typ, unit="", desc=""):
    return f'<attrib name="{name}" value="{value}" type="{typ}" unit="{unit}" desc="{desc}" />'


def _snap_time(t):
    return f"{t:%d}-{MONTHS[t.month - 1]}-{t:%Y %H:%M:%S}.{t.microsecond:06d}"


def scene_metadata(acq, product, name):
    """Metedata.xml (1.0) / <scene>.xml (2.0): SNAP abstracted metadata, the fields a reader may look at."""
    slc = product == "SLC"
    t0, t1 = _snap_time(acq.start), _snap_time(acq.start + timedelta(seconds=25))
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<Metadata>", "  <Abstracted_Metadata>",
             "    <Orbit_State_Vectors>"]
    for i in range(1, 4):
        when = _snap_time(acq.start + timedelta(seconds=i - 1))
        lines += [f"      <orbit_vector{i}>", f'        <attrib name="time" value="{when}" type="51" />',
                  f"      </orbit_vector{i}>"]
    lines += ["    </Orbit_State_Vectors>", "    <SRGR_Coefficients />",
              "    <Doppler_Centroid_Coefficients />"]
    for sw in ("IW1", "IW2", "IW3") if slc else ("IW",):
        for p in ("VV",) if acq.pol == "1SSV" else ("VH", "VV"):
            band = f"i_{sw}_{p} q_{sw}_{p}" if slc else f"Amplitude_{p}"
            lines += [f"    <Band_{sw}_{p}>", "      " + _attr("swath", sw, 41, desc="Swath name"),
                      "      " + _attr("polarization", p, 41, desc="Polarization"),
                      "      " + _attr("band_names", band, 41, desc="corresponding bands"),
                      "      " + _attr("first_line_time", t0, 51, "utc", "First zero doppler azimuth time"),
                      f"    </Band_{sw}_{p}>"]
    rg, az = (SLC_SPACING[1], SLC_SPACING[0]) if slc else (10.0, 10.0)
    height, width = (13600, 71685) if slc else GRD_SIZE
    for args in (("PRODUCT", name, 41, "", "Product name"), ("PRODUCT_TYPE", product, 41, "", "Product type"),
                 ("SPH_DESCRIPTOR", f"Sentinel-1 IW Level-1 {product} Product", 41, "", "Description"),
                 ("MISSION", "SENTINEL-1A", 41, "", "Satellite mission"),
                 ("ACQUISITION_MODE", "IW", 41, "", "Acquisition mode"),
                 ("antenna_pointing", "right", 41, "", "Right or left facing"),
                 ("ABS_ORBIT", acq.orbit, 12, "", "Orbit"),
                 ("data_take_id", acq.datatake, 12, "", "Data take identifier"),
                 ("first_line_time", t0, 51, "utc", "First zero doppler azimuth time"),
                 ("last_line_time", t1, 51, "utc", "Last zero doppler azimuth time"),
                 ("PASS", "ASCENDING" if acq.ascending else "DESCENDING", 41, "", "ASCENDING or DESCENDING"),
                 ("SAMPLE_TYPE", "COMPLEX" if slc else "DETECTED", 41, "", "DETECTED or COMPLEX"),
                 ("azimuth_looks", "1.0", 31), ("range_looks", "1.0" if slc else "5.0", 31),
                 ("range_spacing", rg, 31, "m", "Range sample spacing"),
                 ("azimuth_spacing", az, 31, "m", "Azimuth sample spacing"),
                 ("radar_frequency", "5405.000454334349", 31, "MHz", "Radar frequency"),
                 ("num_output_lines", height, 22, "lines", "Raster height"),
                 ("num_samples_per_line", width, 22, "samples", "Raster width"),
                 ("incidence_near", "30.6", 31, "deg"), ("incidence_far", "46.0", 31, "deg"),
                 ("metadata_version", "6.0", 41, "", "AbsMetadata version")):
        lines.append("    " + _attr(*args))
    row = ",".join(f"{incidence(x):.6f}" for x in np.linspace(0, GRD_SIZE[1], 6))
    lines += ["  </Abstracted_Metadata>", "  <tie-point-grids>", '    <incident_angle unit="deg" desc="">',
              f'      <row value="{row}" />', f'      <row value="{row}" />', "    </incident_angle>",
              "  </tie-point-grids>", "</Metadata>"]
    return "\r\n".join(lines) + "\r\n"


def write_oss_scene(seed, acq, product, out_dir, mask_dir, bar):
    """One scene archive in its version's layout, and its masks."""
    name = acq.name(product)
    rng = _rng(seed, 1, 3, acq.index, product == "SLC")
    top = f"{name}/" if acq.version == "1.0" else ""
    entries, records = {}, []
    (mask_dir / name).mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(acq.sightings):
        chip = render_oss_chip(seed, acq, s, k, product)
        base = f"{OSS_NAME[s.vessel.cls]}_x{chip['x']}_y{chip['y']}"
        entries[f"{top}Patch/{base}.tif"] = _tiff_float(chip["patch"])
        entries[f"{top}Patch_Cal/{base}.tif"] = _tiff_float(chip["cal"])
        for pol, cal in zip(chip["pols"], chip["cal"]):
            suffix = "" if acq.pol == "1SSV" else f"_{pol}"
            entries[f"{top}Patch_Uint8/Visual_{base}{suffix}.tif"] = _tiff_uint8_packbits(chip["uint8"][pol])
            ext = ".tif" if acq.version == "1.0" else ".png"  # 1.0: PNG bytes behind a .tif name
            entries[f"{top}Patch_RGB/{base}{suffix}{ext}"] = render_figure(cal)
        (mask_dir / name / f"{base}.png").write_bytes(_png(chip["mask"].astype(np.uint8) * 255))
        ship_name = s.vessel.name
        # an unescaped "<" in a name, as in real 2.0 files (at least once: in the first 2.0 scene)
        if acq.version == "2.0" and (rng.random() < 0.03 or (acq.index == 1 and k == 0)):
            ship_name += f" <{int(rng.integers(1, 9))}>"
        records += ship_record(acq, s, product, chip, ship_name, rng)
        bar.update(1)
    close = "<\\ShipList>" if acq.version == "2.0" and product == "GRD" else "</ShipList>"  # sic, as real
    entries[f"{top}Ship.xml"] = "\r\n".join(['<?xml version="1.0" encoding="UTF-8"?>', "<ShipList>", *records,
                                             close]).encode("utf-8")
    meta = scene_metadata(acq, product, name).encode()
    if acq.version == "1.0":
        entries[f"{top}Metedata.xml"], entries[f"{top}ReadMe.pdf"] = meta, _readme_pdf(name)
    else:
        entries[f"{name}.xml"] = meta
    write_zip(out_dir / f"{name}.zip", entries)


# -------------------------------------------------------------------------------- FUSAR-Ship
def plan_fusar(seed, n_chips):
    """(category, Syy, sub-category, sample index, vessel) per chip, counts as class_counts("fusar")."""
    rng = _rng(seed, 2, 0)
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
    rng = _rng(seed, 2, 1, k)
    height, width = float(rng.uniform(1.69, 1.73)), 1.124222  # heightspace (azimuth), widthspace, as meta.csv
    sensor = Sensor((height, width), GF3_RESOLUTION, 1.0, GF3_WINDOW)
    shape = (FUSAR_SIDE, FUSAR_SIDE)
    centre = ((FUSAR_SIDE - 1) / 2 + rng.uniform(-2, 2), (FUSAR_SIDE - 1) / 2 + rng.uniform(-2, 2))
    mu = 10 ** (rng.uniform(-20, -13) / 10)
    texture = gamma_texture(rng, shape, float(rng.integers(6, 25)) / 2, rng.uniform(6, 16), cell=4)
    maps, mask = ship_returns(rng, vessel, float(rng.uniform(0, 2 * math.pi)), centre, shape, sensor, q=2)
    d, p = maps["vv"]
    if rng.random() < FUSAR_SECOND_SHIP:  # another ship nearby: not in the mask, it is not the labelled one
        other = others[int(rng.integers(len(others)))]
        dist, ang = 0.5 * (vessel.length + other.length) + rng.uniform(30, 150), rng.uniform(0, 2 * math.pi)
        c2 = (centre[0] + dist * math.sin(ang) / height, centre[1] + dist * math.cos(ang) / width)
        maps2, _ = ship_returns(rng, other, float(rng.uniform(0, 2 * math.pi)), c2, shape, sensor, q=2)
        d, p = d + maps2["vv"][0], p + maps2["vv"][1]
    amp = np.sqrt(sar_intensity(rng, mu, texture, d, p, sensor.looks))
    u8 = np.clip(np.round(255 * amp / (FUSAR_CLIP * np.median(amp[::4, ::4]))), 0, 255).astype(np.uint8)
    meta = [str(rng.choice(["DH", "DV"])), f"{rng.uniform(20, 45):.2f}", f"{height:.6f}", f"{width:.6f}"]
    return u8, mask, meta


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
        (mask_dir / cat / sub / f"{cid}.png").write_bytes(_png(mask.astype(np.uint8) * 255))
        rows.append("\t".join([cid, str(vessel.mmsi), str(vessel.length), str(vessel.width), *meta,
                               f"{cat}\\{sub}"]))
        bar.update(1)
    header = "id\tmmsi\tlength\twidth\tpolarMode\tcenterLookAngle\theightspace\twidthspace\tpath"
    text = "\r\n".join([header, *sorted(rows)]) + "\r\n"
    (root / "meta.csv").write_text(text, encoding="utf-8", newline="")


# -------------------------------------------------------------------------------- entry points
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
    main(get_args_parser().parse_args())
