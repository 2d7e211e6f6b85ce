"""The SAR physics of the synthetic data: sensor profiles, sea clutter, vessels and their scatterers, the
ship's mask, the sensor's point spread function and the intensity of a chip. Nothing here writes a file:
synthetic.py plans the datasets and writes them in their real layouts (the OpenSARShip scene archives through
synthetic_opensarship.py).

Physics, with sources:
- Sea backscatter: the mean NRCS of each chip's sea from the wind at the chip, the incidence and the
  polarisation alone, never from the ship's class: VV from CMOD5.N [Hersbach, ECMWF Tech. Memo. 554, 2008], HH
  through the polarisation ratio of Thompson et al. [JGR 1998], VH 0.580 U - 35.652 dB [Vachon & Wolfe, IEEE GRSL
  2011], each over the sensor's noise floor.
- Sea clutter is K-distributed: intensity mu * T * S, a unit-mean Gamma(nu) texture T, spatially correlated
  (long-wave modulation), times unit-mean Gamma(L) speckle S with the product's number of looks [Ward, Tough &
  Watts, "Sea Clutter", IET 2013, ch. 4; Oliver & Quegan, "Understanding SAR Images", 1998, ch. 4-5]. Its
  moments: mean mu, E[I^2] = mu^2 (1 + 1/L)(1 + 1/nu).
- Sensors: Sentinel-1 IW GRDH 10 m pixels, ~20 m x 22 m resolution, ENL 4.4; IW SLC 2.33 m slant range x
  13.9 m azimuth pixels, single look [ESA Sentinel-1 User Handbook, 2013]; Gaofen-3 UFS ~1.12 m x 1.70 m
  pixels, ~3 m resolution, single-look L1A [Hou et al., Sci. China Inf. Sci. 2020 (FUSAR-Ship); Zhang, Remote
  Sens. 2017].
- Ships: hulls of AIS-like length and beam per class, seen as deck clutter (many weak scatterers, one sigma0
  distribution for every class: a mean backscatter at 20 m, speckled points at 3 m), a faint hull/sea dihedral
  outline and class-specific structures (cargo ships: a periodic row of container bays or hatch coamings, cranes;
  tankers: a uniform deck with a centre-line pipe rack, a midship manifold, an aft superstructure; compact mast,
  wheelhouse and gear on fishing vessels), laid out in metres whatever the sensor, so that its resolution decides
  what survives. The strongest scatterer has RCS ~ L^1.5 [RCS grows with ship size: Skolnik, Radar Handbook, 3rd
  ed., ch. 15], its level and spread between sightings matched to the real GRD chips (RCS_150M, RCS_SPREAD).
- Imaging: separable sinc^2 point spread function with a Hamming-type window, hence cross-shaped sidelobes
  [Cumming & Wong, "Digital Processing of SAR Data", 2005, ch. 2]; strong scatterers fluctuate less than
  speckle.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import special

# The ship's brightness, matched to the 25 GRD chips of the real sample scenes (shared/data/opensarship): their
# peak Patch_Cal x pixel area, fitted against log AIS length, is ~2.8e3 m^2 at 150 m and scatters about the fit
# with an sd of 0.45-0.5 in log10 (robust and plain estimates); the simulated chips give the same on that measure.
# The exponent of L^1.5 is not checked by them: their lengths (63-304 m, most 130-250 m) fit 0.3 +- 0.8.
RCS_150M = 3.9e3  # m^2, strongest scatterer of a 150 m ship (the blur spreads it: peak x pixel area is lower)
RCS_SPREAD = 0.45  # sd of log10 of a ship's overall RCS from one sighting to the next (aspect, trim, load)
FLICKER = 0.12  # sd of log10 RCS of each scatterer between sightings (aspect, sea state)


def rng_for(seed, *keys):
    """An independent stream per scene and chip: the output never depends on the order of the work."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


# -------------------------------------------------------------------------------- sensors
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


GRD_SIZE = (16700, 25650)  # (lines, samples) of an IW GRDH scene


def incidence(x):
    """IW incidence across the swath: ~30.6 deg at near range to ~46 deg at far range (x: GRD sample)."""
    return 30.6 + 15.4 * x / GRD_SIZE[1]


# -------------------------------------------------------------------------------- sea backscatter
# The sea's mean NRCS comes from the wind, the incidence and the polarisation alone, whatever ship sits in the
# chip: C-band VV from CMOD5.N [Hersbach, "CMOD5.N: A C-band geophysical model function for equivalent neutral
# wind", ECMWF Tech. Memo. 554, 2008], its 28 published coefficients c1..c28 (c0 pads the 1-based numbering).
CMOD5N = (0.0, -0.6878, -0.7957, 0.3380, -0.1728, 0.0, 0.0040, 0.1103, 0.0159, 6.7329, 2.7713, -2.2885, 0.4971,
          -0.7250, 0.0450, 0.0066, 0.3222, 0.0120, 22.7, 2.0813, 3.0, 8.3659, -3.3428, 1.3236, 6.2437, 2.3893,
          0.3249, 4.1590, 1.6930)


def cmod5n(wind, phi_deg, theta_deg):
    """Linear VV sigma0 of the sea at 10 m neutral wind `wind` (m/s), wind direction relative to the radar look
    `phi_deg` (0: the radar looks into the wind) and incidence `theta_deg`."""
    c, x = CMOD5N, (theta_deg - 40.0) / 25.0
    a0 = c[1] + c[2] * x + c[3] * x**2 + c[4] * x**3
    a1, a2 = c[5] + c[6] * x, c[7] + c[8] * x
    gam, s0 = c[9] + c[10] * x + c[11] * x**2, c[12] + c[13] * x
    s = a2 * wind
    a3 = 1.0 / (1.0 + math.exp(-max(s, s0)))
    if s < s0:
        a3 *= (s / s0) ** (s0 * (1.0 - a3))
    b0 = a3**gam * 10 ** (a0 + a1 * wind)
    b1 = c[14] * (1 + x) - c[15] * wind * (0.5 + x - math.tanh(4 * (x + c[16] + c[17] * wind)))
    b1 /= math.exp(0.34 * (wind - c[18])) + 1.0
    v0, d1, d2 = c[21] + c[22] * x + c[23] * x**2, c[24] + c[25] * x + c[26] * x**2, c[27] + c[28] * x
    y0, pn = c[19], c[20]
    v2 = wind / v0 + 1.0
    if v2 < y0:
        v2 = y0 - (y0 - 1) / pn + (v2 - 1) ** pn / (pn * (y0 - 1) ** (pn - 1))
    b2 = (-d1 + d2 * v2) * math.exp(-v2)
    phi = math.radians(phi_deg)
    return b0 * (1.0 + b1 * math.cos(phi) + b2 * math.cos(2 * phi)) ** 1.6


def sea_sigma0(pol, wind, phi_deg, theta_deg, nesz_db):
    """Mean linear NRCS of the sea as the product records it, the sensor's noise floor (NESZ) included.
    HH: VV times the Bragg/Kirchhoff polarisation ratio (1 + 0.6 tan^2)^2 / (1 + 2 tan^2)^2 [Thompson et al.,
    JGR 1998]; cross-pol: 0.580 U - 35.652 dB, flat in incidence [Vachon & Wolfe, IEEE GRSL 2011]."""
    if pol in ("vh", "hv"):
        sea = 10 ** ((0.580 * wind - 35.652) / 10)
    else:
        sea = cmod5n(wind, phi_deg, theta_deg)
        if pol == "hh":
            t2 = math.tan(math.radians(theta_deg)) ** 2
            sea *= (1 + 0.6 * t2) ** 2 / (1 + 2 * t2) ** 2
    return sea + 10 ** (nesz_db / 10)


def local_wind(rng, wind, wind_dir):
    """The wind at one chip of a scene: the scene's wind varies from place to place (sd ~15 % in speed, 20 deg
    in direction), so ships of one scene sit on seas of different brightness."""
    return wind * math.exp(rng.normal(0, 0.15)), wind_dir + rng.normal(0, 20)


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


# -------------------------------------------------------------------------------- ships
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


DECK_SIGMA0_DB = (-13.0, -7.0)  # diffuse deck sigma0 (dB), assumed, alike for every class: structures tell them apart


def _cluster(rng, L, hb, u, n, lo, hi, spread=0.03):
    """n compact scatterers near u * L along the hull, relative RCS in [lo, hi]."""
    return np.stack([u * L + rng.normal(0, spread * L, n), rng.uniform(-0.7, 0.7, n) * hb,
                     rng.uniform(lo, hi, n)], axis=1)


def _across(u, hb, level):
    return _line(u, -0.85 * hb, u, 0.85 * hb, level)


def _cargo(rng, L, hb, kind):
    """Aft accommodation block, then the cargo deck as a periodic row of bays whose faces are lines across the
    beam: container bays every ~13 m (a 40 ft box and the gap to the next bay), bulk-carrier hatch
    covers every 16-24 m with side coamings, general-cargo hatches every 18-30 m with a crane between them."""
    pts = [_cluster(rng, L, hb, -0.41, 2, 0.6, 1.0, 0.02), _across(-0.37 * L, hb, rng.uniform(0.3, 0.6))]
    period = {"Container Ship": (12.5, 14.5), "Bulk Carrier": (16.0, 24.0)}.get(kind, (18.0, 30.0))
    period, level = rng.uniform(*period), rng.uniform(0.12, 0.3)
    for u in np.arange(-0.33 * L, 0.40 * L - 0.6 * period, period):
        lv = level * rng.uniform(0.6, 1.3)
        if kind == "Container Ship":  # the faces of adjacent stacks and their lashing bridge: one line per bay
            pts.append(_across(u, hb, lv))
            continue
        pts += [_across(u, hb, lv), _across(u + 0.6 * period, hb, 0.5 * lv)]  # a hatch's aft and fore coaming
        if kind == "Bulk Carrier":
            pts += [_line(u, s * 0.75 * hb, u + 0.6 * period, s * 0.75 * hb, 0.25 * lv) for s in (-1, 1)]
        else:  # a crane pedestal and jib between hatches
            pts.append(np.array([[u - 0.2 * period, rng.uniform(-0.3, 0.3) * hb, rng.uniform(0.2, 0.5)]]))
    pts.append(_cluster(rng, L, hb, 0.46, 1, 0.2, 0.4, 0.005))
    return pts


def _tanker(rng, L, hb):
    """Aft superstructure, then a long uniform deck: a pipe rack and catwalk on the centre line and deck pipes
    beside it (continuous, no period), a midship manifold across the beam with its hose crane, a forecastle."""
    um = rng.normal(0, 0.03) * L
    pts = [_cluster(rng, L, hb, -0.42, 2, 0.8, 1.0, 0.015), _across(-0.38 * L, hb, rng.uniform(0.3, 0.6)),
           _line(-0.36 * L, 0.0, 0.42 * L, 0.0, rng.uniform(0.15, 0.35))]
    pts += [_line(-0.36 * L, s * 0.3 * hb, 0.42 * L, s * 0.3 * hb, rng.uniform(0.03, 0.08)) for s in (-1, 1)]
    pts += [_across(um + du, hb, rng.uniform(0.2, 0.4)) for du in (-2.5, 0.0, 2.5)]
    pts += [_cluster(rng, L, hb, um / L, 2, 0.3, 0.6, 0.005), _cluster(rng, L, hb, 0.45, 1, 0.2, 0.5, 0.005)]
    return pts


def _small_or_other(rng, L, hb, cls):
    """Fishing vessels, tugs, passenger ships and the rest: compact structures, no deck pattern."""
    if cls == "Fishing":  # compact: wheelhouse forward of midships, mast, gear at the stern corners
        return [_cluster(rng, L, hb, 0.2, 2, 0.6, 1.0, 0.04), _cluster(rng, L, hb, 0.0, 1, 0.5, 1.0, 0.03),
                np.array([[-0.45 * L, s * 0.85 * hb, rng.uniform(0.3, 0.7)] for s in (-1, 1)])]
    if cls == "Tug":  # short, high superstructure amidships, fendered bow
        return [_cluster(rng, L, hb, 0.05, 3, 0.7, 1.0, 0.04), _cluster(rng, L, hb, 0.46, 1, 0.3, 0.5, 0.005)]
    if cls == "Passenger":  # superstructure along most of the length
        return [*(_line(-0.4 * L, v, 0.3 * L, v, rng.uniform(0.6, 1.0)) for v in (-0.7 * hb, 0.7 * hb)),
                _cluster(rng, L, hb, -0.1, 4, 0.6, 1.0, 0.15)]
    n = int(rng.integers(3, 9))  # Other: a random handful of scatterers
    return [np.stack([rng.uniform(-0.45, 0.45, n) * L, rng.uniform(-0.8, 0.8, n) * hb, rng.uniform(0.3, 1.0, n)],
                     axis=1)]


def ship_layout(vessel):
    """The ship's scatterers in its own frame (u m along, bow > 0; v m across): (deck clutter (m, 3) with RCS
    in m^2, strong scatterers (n, 3) with RCS relative to the strongest). The deck detail lives here, at any
    scale: the sensor's resolution decides what of it survives (Cargo's period of bays at 3 m, not at 20 m)."""
    rng = np.random.default_rng(vessel.layout_seed)
    L, B, cls = float(vessel.length), float(vessel.width), vessel.cls
    hb = B / 2
    deck = 10 ** (rng.uniform(*DECK_SIGMA0_DB) / 10)
    if cls == "Cargo":
        pts = _cargo(rng, L, hb, vessel.elaborated)
    elif cls == "Tanker":
        pts = _tanker(rng, L, hb)
    else:
        pts = _small_or_other(rng, L, hb, cls)
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


# -------------------------------------------------------------------------------- imaging
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
    scale = RCS_150M * (vessel.length / 150.0) ** 1.5 * 10 ** rng.normal(0, RCS_SPREAD)
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


def sar_intensity(rng, mu, texture, deck, points, looks, ship_rng=None):
    """Sea and deck (distributed) share the speckle; dominant scatterers fluctuate less (twice the looks).
    `rng` draws the speckle, `ship_rng` (default: rng) the scatterers' fluctuation: with two streams the sea's
    pixels do not depend on the ship in the chip."""
    out = texture * np.float32(mu)
    out += deck
    out *= speckle(rng, texture.shape, looks)
    strong = points > 1e-3 * mu  # elsewhere the strong scatterers are far below the clutter
    fluct = (rng if ship_rng is None else ship_rng).gamma(2 * looks, 0.5 / looks, size=int(strong.sum()))
    out[strong] += points[strong] * fluct
    return out
