"""What a model sees of a chip: the input variant (raw, physical scale, resolution match, clutter radiometry).

    import inputs
    variant = inputs.Inputs.parse("m10-match-clutter")      # Inputs(m_per_px=10.0, match=True, radiometry="clutter")
    geometry = inputs.chip_geometry(manifest_row)          # ((row_m, col_m) spacing, resolution or None) | reason
    spacing, resolution = geometry
    chip = inputs.transform(image, spacing, resolution, 64, variant, seed=7)   # (64, 64) uint8

Names: "raw" (the study's inputs: the prepared 8 bits, the whole chip resized to the image size), "clutter"
(the same geometry, clutter radiometry), and m<metres>[-match][-clutter] ("m10", "m2.5-match-clutter"): every
chip resampled to square pixels of that many metres on the ground, then centre-cropped or padded to the image
size, so one image shows the same field of view for every chip of every sensor.

Geometry (chip_geometry): the row (azimuth) and column (range) ground spacing of a chip from its manifest row.
OpenSARShip SLC chips count slant-range samples: ground = slant / sin(incidence), with the ship's incidence
angle (incidence_deg); an SLC chip without one, and any chip without spacing, is left out of the physical-scale
variants, with the reason. The resolution (-3 dB width, row x col on the ground) comes from the sensor mode.

The pipeline of one chip (transform):
  1. radiometry: "uint8" keeps the prepared 8 bits as they are (amplitude scaled per chip, or the fixed dB
     window of Patch_Cal); "clutter" divides the amplitude by the median of the chip's border ring (the sea:
     border_ring, the shortcut baseline's ring), so a chip's brightness no longer depends on its strongest
     scatterer or on the sensor's scaling; zeros are floored at half a level first.
  2. match (-match): a Gaussian blur per axis that brings a finer resolution to Sentinel-1 IW GRDH's
     (sigma = sqrt(target^2 - own^2) / 2.355 pixels of the chip's spacing; nothing on an axis already as coarse).
  3. resample to square m_per_px pixels: Pillow's BILINEAR resize on 32-bit floats, whose triangle filter widens
     with the reduction (antialiased) and has no negative lobes (Lanczos would ring around bright point
     scatterers), with a source box that makes the scale exact per axis and keeps the chip's centre.
  4. centre crop, or pad with values drawn at random (seeded per chip) from the resampled chip's border ring:
     padding looks like the chip's own sea, not like a black frame whose size gives the ship's length away.
Steps 2-4 act on linear amplitude; clutter decibels (20 log10 of the ratio to the sea, clipped to
CLUTTER_DB_RANGE and mapped linearly onto 0..255) are taken only at the end, because averaging decibels is a
geometric mean that would dim bright scatterers against the sea. Everything runs in floats and is rounded to
uint8 once. Without m_per_px the whole chip is resized to the image size (bilinear), as data.py does for raw.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from opensarship import CAL_DB_RANGE, product_type_of

RAW = "raw"
RADIOMETRIES = ("uint8", "clutter")
# Clutter radiometry: decibels of amplitude over the sea-border median, this window mapped onto 0..255 (0.2 dB a
# level). Fixed from the real chips' numbers (docs/data-formats.md), never fitted: on co-polarised Patch_Uint8
# chips the sea border is 7-10 of 255, the 99th percentile 90-110 and the maximum 255, i.e. the ship stands
# +19..+24 dB (99th percentile) and +28..+31 dB (brightest pixel) above the sea. The top at +40 dB keeps that with
# about 10 dB of headroom for a finer-resolution sensor, whose point scatterers stand higher above a clutter
# averaged over a smaller cell; brighter pixels clip. The bottom at -10 dB: below a tenth of the sea's median
# amplitude is dark speckle, not structure, and an 8-bit chip whose sea lies at 7-10 hardly resolves it anyway
# (its levels 1 and 2 lie 11 to 20 dB below the sea).
CLUTTER_DB_RANGE = (-10.0, 40.0)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.355: the -3 dB width of a Gaussian over its sigma
# Resolutions (row = azimuth, col = range; -3 dB widths on the ground, metres).
# Sentinel-1 IW GRDH: 20 m range x 22 m azimuth, at 10 m x 10 m pixels (ESA Sentinel-1 SAR User Guide, Level-1
# GRD products, IW high resolution; confirmed on the ESA STEP forum, "actual resolution of Sentinel-1").
S1_IW_RESOLUTION_M = (22.0, 20.0)
# Sentinel-1 IW SLC: ~22 m azimuth; slant range 2.7 m (IW1) to 3.5 m (IW3) from the range bandwidths 56.5 to
# 42.8 MHz (ESA User Guide "Interferometric Wide Swath": 5 m x 20 m single look; per-swath values: c / 2B with
# the SLC annotation's range bandwidths). The middle swath's 3.1 m is taken; on the ground it is
# slant / sin(incidence), 4-6 m, so the blur to 20 m barely depends on the choice.
S1_IW_SLC_RESOLUTION_M = (22.0, 3.1)  # (azimuth, SLANT range): chip_geometry puts the range on the ground
# Gaofen-3 ultra-fine stripmap (UFS, FUSAR-Ship's mode): 3 m nominal resolution, 30 km swath, single polarisation
# (Table 4 "Sensor configurations for GF-3" of "An Introduction to the Chinese High-Resolution Earth Observation
# System: Gaofen-1~7 Civilian Satellites", Journal of Remote Sensing, 2022). Not its ~1.1 m x 1.7 m pixel spacing.
GF3_UFS_RESOLUTION_M = (3.0, 3.0)
NAME_FORM = "raw, or m<metres>[-match][-clutter], or clutter"
_NAME_RE = re.compile(r"^(?:m(?P<m>\d+(?:\.\d+)?)(?P<match>-match)?(?P<mclutter>-clutter)?|(?P<clutter>clutter)|raw)$")


@dataclass(frozen=True)
class Inputs:
    """One input variant. m_per_px None: the study's whole-chip resize; match needs m_per_px."""
    m_per_px: float | None = None
    match: bool = False
    radiometry: str = "uint8"

    def __post_init__(self):
        if self.radiometry not in RADIOMETRIES:
            raise ValueError(f"radiometry must be one of {', '.join(RADIOMETRIES)}, not {self.radiometry!r}")
        if self.m_per_px is not None and not (math.isfinite(self.m_per_px) and self.m_per_px > 0):
            raise ValueError(f"metres per pixel must be a positive number, not {self.m_per_px!r}")
        if self.match and self.m_per_px is None:
            raise ValueError("matching the resolution needs metres per pixel (m<metres>-match)")

    @property
    def name(self):
        """'raw', 'clutter', 'm10', 'm10-match', 'm2.5-match-clutter', ...: the form parse() reads back."""
        parts = [] if self.m_per_px is None else [f"m{self.m_per_px:g}"]
        parts += ["match"] * self.match + ["clutter"] * (self.radiometry == "clutter")
        return "-".join(parts) or RAW

    @property
    def harmonised(self):
        return self.name != RAW

    @classmethod
    def parse(cls, name):
        """The variant of a name (its own `name` reads back to it); ValueError naming the valid form."""
        m = _NAME_RE.match(str(name).strip())
        if not m or (m["m"] is not None and float(m["m"]) <= 0):
            raise ValueError(f"unknown input variant {name!r}: valid is {NAME_FORM} (e.g. m10-match-clutter)")
        clutter = bool(m["clutter"] or m["mclutter"])
        return cls(m_per_px=float(m["m"]) if m["m"] is not None else None, match=bool(m["match"]),
                   radiometry="clutter" if clutter else "uint8")

    def describe(self):
        """One line for people."""
        if self.m_per_px is None:
            geometry = "every chip resized whole to the image size"
        else:
            geometry = (f"every chip resampled to square {self.m_per_px:g} m pixels, centre-cropped or padded with "
                        "its own border sea")
            if self.match:
                geometry += (", finer sensors blurred to Sentinel-1 IW's "
                             f"{S1_IW_RESOLUTION_M[0]:g} m x {S1_IW_RESOLUTION_M[1]:g} m resolution first")
        if self.radiometry == "clutter":
            lo, hi = CLUTTER_DB_RANGE
            radiometry = f"dB over the sea-border median, {lo:g}..{hi:g} dB onto 0..255"
        else:
            radiometry = "the prepared 8 bits as they are"
        study = " (the study's inputs)" if not self.harmonised else ""
        return f"{self.name}{study}: {geometry}; {radiometry}"


def border_ring(h, w):
    """Boolean (h, w) mask of a chip's border ring, where its sea is: max(1, h // 8) rows top and bottom,
    max(1, w // 8) columns left and right (the whole chip where the ring covers it). The same ring as the
    shortcut baseline's border median (baselines.py), whose module imports data.py and so cannot be imported
    here."""
    bh, bw = max(1, h // 8), max(1, w // 8)
    ring = np.ones((h, w), dtype=bool)
    ring[bh:h - bh, bw:w - bw] = False
    return ring


def _positive(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def chip_geometry(row):
    """((row_m, col_m) ground spacing, (row_m, col_m) resolution or None) of a manifest row, or the reason
    (a string) why the chip has no usable ground spacing. A missing key counts as empty."""
    def get(key):
        return (row.get(key) or "").strip()
    spacing = (_positive(get("spacing_row_m")), _positive(get("spacing_col_m")))
    dataset = get("dataset")
    if None in spacing:
        hint = " (a FUSAR-Ship chip without a meta.csv row)" if dataset == "fusar" else ""
        return f"no pixel spacing in the manifest{hint}"
    if dataset == "opensarship":
        if product_type_of(get("scene")) != "SLC":  # GRD (or a scene name that does not say): ground spacing
            return spacing, S1_IW_RESOLUTION_M
        incidence = _positive(get("incidence_deg"))
        if incidence is None or incidence >= 90:
            return "SLC chip without a usable incidence angle (incidence_deg): its slant-range spacing has no " \
                   "ground equivalent"
        sin = math.sin(math.radians(incidence))
        return (spacing[0], spacing[1] / sin), (S1_IW_SLC_RESOLUTION_M[0], S1_IW_SLC_RESOLUTION_M[1] / sin)
    if dataset == "fusar":
        # meta.csv's heightspace / widthspace are taken as ground spacing, as the FUSAR-Ship readme gives them
        # ("GF-3 SAR image pixel size"). Unverified caveat: the chips are cut from GF-3 L1A images, which are in
        # slant range, and widthspace (~1.124 m) looks like a slant-range step; on the ground, at the readme's
        # centerLookAngle of ~42 deg, it would be ~1.5-1.7 m.
        return spacing, GF3_UFS_RESOLUTION_M
    return spacing, None


def geometry_for(row, inputs):
    """What transform needs of a chip under `inputs`: (spacing, resolution), (None, None) where the variant keeps
    the whole-chip geometry, or the reason (a string) why the variant cannot show the chip."""
    if inputs.m_per_px is None:
        return None, None
    geometry = chip_geometry(row)
    if not isinstance(geometry, str) and inputs.match and geometry[1] is None:
        return f"no known resolution for dataset {row.get('dataset') or '(none)'!r} to match to Sentinel-1 IW's"
    return geometry


def _amplitude(image, radiometry, product):
    """Linear amplitude (float64): the 8 bits as they are, or (clutter) relative to the border ring's median."""
    a = image.astype(np.float64)
    if radiometry == "uint8":
        return a
    a = np.maximum(a, 0.5)  # zeros floored at half a level: a finite decibel value
    ring = border_ring(*a.shape)
    if product == "cal":  # Patch_Cal prepared as CAL_DB_RANGE onto 0..255: back to dB, relative to the sea's
        lo, hi = CAL_DB_RANGE
        db = lo + a * ((hi - lo) / 255.0)
        return 10.0 ** ((db - np.median(db[ring])) / 20.0)  # intensity dB = amplitude dB
    if product != "uint8":
        raise ValueError(f"product must be uint8 or cal, not {product!r}")
    return a / np.median(a[ring])


def _match(a, spacing, resolution):
    """Blur each axis whose resolution is finer than Sentinel-1 IW GRDH's to it (Gaussian, in pixels)."""
    if resolution is None:
        raise ValueError("matching the resolution needs the chip's resolution (chip_geometry gave None)")
    sigma = [math.sqrt(max(target ** 2 - own ** 2, 0.0)) / FWHM_PER_SIGMA / step
             for target, own, step in zip(S1_IW_RESOLUTION_M, resolution, spacing)]
    return ndimage.gaussian_filter(a, sigma, mode="reflect") if any(sigma) else a


def _resample(a, spacing, m_per_px):
    """(h, w) at `spacing` -> square m_per_px pixels: floor(extent / m_per_px) pixels per axis, from a centred
    source box of exactly that extent (the scale is exact; under one output pixel of margin is dropped)."""
    h, w = a.shape
    scale_r, scale_c = spacing[0] / m_per_px, spacing[1] / m_per_px  # output pixels per source pixel
    nh, nw = max(1, math.floor(h * scale_r + 1e-9)), max(1, math.floor(w * scale_c + 1e-9))
    bh, bw = min(h, nh / scale_r), min(w, nw / scale_c)
    box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR, box=box, reducing_gap=None), np.float64)


def _span(n, size):
    """(source start, destination start, length) of the centred crop (n >= size) or placement (n < size)."""
    return ((n - size) // 2, 0, size) if n >= size else (0, (size - n) // 2, n)


def _fit(a, size, fill):
    """Centre-crop or pad `a` to (size, size); `fill`: the (size, size) array it is pasted into."""
    (sr, dr, nr), (sc, dc, nc) = _span(a.shape[0], size), _span(a.shape[1], size)
    fill[dr:dr + nr, dc:dc + nc] = a[sr:sr + nr, sc:sc + nc]
    return fill


def _resize_whole(a, size):
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.float64)


def transform(image, spacing, resolution, out_size, inputs, seed, product="uint8"):
    """The chip (2-D uint8, as decoded) as a model sees it under `inputs`: (out_size, out_size) uint8.

    spacing, resolution: chip_geometry's (needed with m_per_px; resolution with match). seed: an int or a numpy
    Generator for the padding draws (same seed, same pixels). product: "cal" for Patch_Cal chips (clutter
    radiometry decodes their dB window), else "uint8" (amplitude)."""
    if inputs.m_per_px is None and inputs.radiometry == "uint8":  # raw: exactly data.py's decode
        return np.asarray(Image.fromarray(image).resize((out_size, out_size), Image.Resampling.BILINEAR))
    a = _amplitude(image, inputs.radiometry, product)
    if inputs.m_per_px is None:
        a = _resize_whole(a, out_size)
    else:
        if inputs.match:
            a = _match(a, spacing, resolution)
        a = _resample(a, spacing, inputs.m_per_px)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        a = _fit(a, out_size, rng.choice(a[border_ring(*a.shape)], size=(out_size, out_size)))
    if inputs.radiometry == "clutter":
        lo, hi = CLUTTER_DB_RANGE
        db = 20.0 * np.log10(np.maximum(a, 1e-12))
        a = (np.clip(db, lo, hi) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def transform_mask(mask, spacing, out_size, m_per_px):
    """A ship mask (2-D, nonzero = ship) under the geometry of transform: bool (out_size, out_size), resampled
    and thresholded at 0.5, cropped or padded with False (m_per_px None: resized whole)."""
    a = (np.asarray(mask) > 0).astype(np.float64)
    if m_per_px is None:
        return _resize_whole(a, out_size) >= 0.5
    return _fit(_resample(a, spacing, m_per_px) >= 0.5, out_size, np.zeros((out_size, out_size), bool))
