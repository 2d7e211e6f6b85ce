"""OpenSARShip chip files -> pixels: the 8-bit single-channel chip of each product, and the 2-channel stacked chip.

    import opensarship_pixels as pixels
    pixels.load_chip(scene, chip)        # (H, W) uint8; a stacked chip (chip.band == "stack"): (H, W, 2), co first
                                         # (product uint8: chip.member the Patch/ file, chip.co_member the co chip)

Single channel (opensarship.PRODUCTS): `uint8` is the Patch_Uint8 file as it is; `cal` the Patch_Cal band in dB
over CAL_DB_RANGE (cal_to_uint8); `rgb` the Patch_RGB figure in grayscale.

Stacked (`--pol stack`, dual-pol scenes only), channels (co, cross) = (VV, VH) or (HH, HV):
- `uint8`: the co channel is the Patch_Uint8 co chip itself; the cross channel is the cross amplitude of `Patch/`
  (GRD: amplitude bands VH, VV; SLC: Re VH, Im VH, Re VV, Im VV, amplitude |Re + i Im|) times the factor the
  Patch_Uint8 co file applied to the co amplitude, rounded and clipped to 0..255, so it keeps its true ratio to
  co. The factor is fitted by least squares over the co file's pixels strictly between 0 and 255: the real files
  are round(255 A / A_ref), clipped, with A_ref often the second-brightest amplitude (the brightest pixel or two
  saturate), so 255 / max A would be off by up to 16 % (measured on the three real scenes: the fitted factor
  gives back every co file within 1 grey level). Patch_Uint8 alone cannot be stacked: each polarisation is
  scaled by its own reference, which destroys the co/cross ratio.
- `cal`: both Patch_Cal bands (linear intensity VH, VV) through cal_to_uint8, the one dB window for both, so the
  co channel is the `cal` co chip and the difference of the channels is the co/cross ratio in dB.
"""

import io
import warnings

import numpy as np
from PIL import Image

from archives import clean_error

# Fixed dB window for the `cal` product, the same for every scene. Measured on the real chips (VV and VH, GRD
# and SLC): sea clutter 0.1th percentile about -33 dB (VH), ship cores up to about +20 dB (VV 99.9th percentile
# 11-22 dB). 55 dB over 255 levels is about 0.2 dB a level.
CAL_DB_RANGE = (-35.0, 20.0)
STACK = "stack"  # Chip.band of a stacked chip


def cal_to_uint8(intensity):
    """Linear calibrated intensity -> dB -> 8 bits over CAL_DB_RANGE (clipped), the same mapping everywhere."""
    lo, hi = CAL_DB_RANGE
    db = 10.0 * np.log10(np.maximum(np.nan_to_num(intensity.astype(np.float64), nan=0.0), 1e-12))
    return np.round((np.clip(db, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def load_chip(scene, chip, co=None):
    """The chip as an (H, W) uint8 array, or (H, W, 2) for a stacked chip. co: a stacked uint8 chip's co chip as
    already decoded (else it is read from chip.co_member). Raises ValueError with the reason when it cannot be
    decoded."""
    data = scene.tree.read(chip.member)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corrupt file is reported once, as a skipped chip with its reason
        if chip.band == STACK:
            if co is None and chip.product != "cal":
                co = _decode(scene.tree.read(chip.co_member), chip)
            return _decode_stack(data, chip, co)
        return _decode(data, chip)


def _float_bands(data, what):
    """The bands of a float32 Patch / Patch_Cal TIFF as (H, W, bands)."""
    import tifffile  # only the float32 Patch / Patch_Cal files need it (Pillow cannot read them)
    try:
        arr = tifffile.imread(io.BytesIO(data))
    except Exception as e:  # any decoder failure is a corrupt file, reported with its text
        raise ValueError(f"cannot decode TIFF: {clean_error(e)}") from e
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3 and arr.shape[-1] <= 4:
        return arr
    raise ValueError(f"unexpected {what} shape {arr.shape}")


def _decode_stack(data, chip, co_chip=None):
    """(H, W, 2) uint8, channels (co, cross): module docstring. co_chip: the Patch_Uint8 co chip (product uint8)."""
    if chip.product == "cal":
        bands = _float_bands(data, "Patch_Cal")
        if bands.shape[-1] != 2:
            raise ValueError(f"Patch_Cal has {bands.shape[-1]} band(s); a stacked chip needs 2 (cross, co)")
        return np.stack([cal_to_uint8(bands[..., 1]), cal_to_uint8(bands[..., 0])], axis=-1)
    bands = _float_bands(data, "Patch").astype(np.float64)
    if bands.shape[-1] == 4:  # SLC: Re VH, Im VH, Re VV, Im VV
        cross, co = np.hypot(bands[..., 0], bands[..., 1]), np.hypot(bands[..., 2], bands[..., 3])
    elif bands.shape[-1] == 2:  # GRD: amplitude VH, VV
        cross, co = np.abs(bands[..., 0]), np.abs(bands[..., 1])
    else:
        raise ValueError(f"Patch has {bands.shape[-1]} band(s); a stacked chip needs 2 (GRD) or 4 (SLC)")
    cross, co = np.nan_to_num(cross), np.nan_to_num(co)
    if co_chip.shape != co.shape:
        raise ValueError(f"Patch/ is {co.shape[0]}x{co.shape[1]} px but its Patch_Uint8 co chip "
                         f"{co_chip.shape[0]}x{co_chip.shape[1]}")
    return np.stack([co_chip, np.clip(np.round(cross * uint8_scale(co, co_chip)), 0, 255)], axis=-1).astype(np.uint8)


def uint8_scale(amplitude, chip):
    """The factor s of chip = round(s * amplitude), clipped to 0..255: least squares over the unclipped pixels
    (255 / the brightest amplitude when none is)."""
    a, u = amplitude.astype(np.float64), chip.astype(np.float64)
    inside = (u > 0) & (u < 255)
    if inside.any() and (a[inside] ** 2).sum() > 0:
        return float((a[inside] * u[inside]).sum() / (a[inside] ** 2).sum())
    if not a.max() > 0:
        raise ValueError("the co-polarised amplitude is zero everywhere")
    return 255.0 / a.max()


def _decode(data, chip):
    if chip.product == "cal":
        bands = _float_bands(data, "Patch_Cal")
        if bands.shape[-1] == 1:
            if chip.band == "cross":
                raise ValueError("Patch_Cal has one band: no cross-pol channel")
            band = bands[..., 0]
        elif bands.shape[-1] == 2:
            band = bands[..., 0 if chip.band == "cross" else 1]  # band order: cross, co (VH, VV)
        else:
            raise ValueError(f"Patch_Cal has {bands.shape[-1]} bands, expected 1 or 2")
        return cal_to_uint8(band)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if chip.product == "rgb" or img.mode in ("RGB", "RGBA", "P", "LA"):
                img = img.convert("L")
            if img.mode != "L":
                raise ValueError(f"unexpected image mode {img.mode} (8-bit expected)")
            arr = np.asarray(img, dtype=np.uint8).copy()
    except ValueError:
        raise
    except Exception as e:  # Pillow raises many types for a corrupt file
        raise ValueError(f"cannot decode image: {clean_error(e)}") from e
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"unexpected image shape {arr.shape}")
    return arr
