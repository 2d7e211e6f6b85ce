"""Where the ship lies in a chip, and how much of a heat map falls there (grad_cams.py's on-ship scores).

    import ship_regions
    native, source = ship_regions.native_region(row, set_dir)     # bool (H, W) at the chip's native size
    region = ship_regions.resize_region(native, 64)                # the geometry of data.load_split at 64 px
    energy, peak, area = ship_regions.on_ship_scores(cam, region)  # cam: (64, 64) map >= 0

On-ship score of a map M (the [0, 1] map pytorch-grad-cam returns, at the model's input size) and the
ship region R: on_ship_energy = sum(M on R) / sum(M); peak_on_ship = whether argmax(M) lies in R;
ship_area_fraction = |R| / |chip|, which is what a uniform map scores (lift = on_ship_energy /
ship_area_fraction; 1 = no better than uniform). An all-zero map (a CAM negative everywhere, or constant)
has no energy: on_ship_scores leaves its scores empty, and grad_cams.py scores it as the uniform map it is
equivalent to (cam_scores.py, which also holds the centre-prior baseline).
region_to_hull(row, native) = the region's area / (ship_length_m x ship_width_m), both in m^2 at native size:
about 1 for exact masks (pi/4 for an elliptic hull) and head-tail segments (a little more: round ends, the
half-pixel minimum width), about 5 for FUSAR-Ship's centre disc (pi/4 (L^2 + W^2) / (L W) = 4.8 for L = 6 W),
which is why its scores are approximate.
R is built at the chip's native resolution, then box-resized to the map size (a pixel is ship if at
least half of it is), from the best source the manifest row offers (the columns of docs/data-formats.md),
named by its region_source:
  mask          the exact sidecar mask (synthetic chips; manifest `mask` column)
  head_tail     OpenSARShip: the segment from the Ship.xml head to tail (head_row/col, tail_row/col),
                widened to the AIS width (ship_width_m), measured in metres with the pixel spacing
                (spacing_row_m, spacing_col_m) so anisotropic SLC pixels are handled; a pixel is ship if
                its centre lies within half the width, or within half a pixel diagonal (so every pixel
                the centre line crosses counts)
  head_tail_est_width   the same where the AIS width is unknown or zero: width = EST_WIDTH_RATIO x the
                head-tail length (beam / length of merchant ships is about 1/7 to 1/6)
  centre_disc   FUSAR-Ship (ships sit at the chip centre, heading unknown): a disc around the chip
                centre, in metres, of diameter sqrt(length^2 + width^2) (ship_length_m, ship_width_m),
                the smallest centred shape that holds the ship whatever its heading
  none          nothing known: scores left empty
"""
from pathlib import Path

import numpy as np
from PIL import Image

EST_WIDTH_RATIO = 0.15  # width / length where OpenSARShip gives no AIS width


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def segment_region(shape, head, tail, width_m, spacing):
    """Pixels (H, W) within width_m/2 of the head-tail segment, measured in metres; head/tail = (row, col)."""
    sr, sc = spacing
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    py, px = rows * sr, cols * sc                                     # pixel centres in metres
    ay, ax, by, bx = head[0] * sr, head[1] * sc, tail[0] * sr, tail[1] * sc
    dy, dx = by - ay, bx - ax
    length2 = dy * dy + dx * dx
    if length2 == 0:   # head == tail: a point, the region is a disc of the ship's width
        t = np.zeros_like(py, dtype=float)
    else:              # position of each pixel's projection along the segment, clipped to its ends
        t = np.clip(((py - ay) * dy + (px - ax) * dx) / length2, 0, 1)
    dist = np.hypot(py - (ay + t * dy), px - (ax + t * dx))
    # Half a pixel diagonal: every pixel the centre line crosses has its centre that close to the line.
    return dist <= max(width_m / 2, 0.5 * np.hypot(sr, sc))


def disc_region(shape, diameter_m, spacing):
    """Pixels (H, W) within diameter_m/2 of the chip centre, measured in metres."""
    sr, sc = spacing
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    dist = np.hypot((rows - (shape[0] - 1) / 2) * sr, (cols - (shape[1] - 1) / 2) * sc)
    return dist <= max(diameter_m / 2, 0.5 * np.hypot(sr, sc))


def _chip_shape(row, set_dir):
    """(H, W) of the chip at its native size: from the manifest, else from the PNG itself."""
    h, w = _num(row.get("chip_h")), _num(row.get("chip_w"))
    if not (h > 0 and w > 0):
        with Image.open(Path(set_dir) / row["path"]) as im:
            w, h = im.size
    return int(h), int(w)


def native_region(row, set_dir):
    """(region bool (H, W) at the chip's native size or None, region_source) for one manifest row."""
    set_dir = Path(set_dir)
    if row.get("mask", ""):
        with Image.open(set_dir / row["mask"]) as m:
            return np.asarray(m.convert("L")) >= 128, "mask"
    shape = _chip_shape(row, set_dir)
    spacing = (_num(row.get("spacing_row_m")), _num(row.get("spacing_col_m")))
    spacing_ok = all(s > 0 for s in spacing)
    length, width = _num(row.get("ship_length_m")), _num(row.get("ship_width_m"))
    head = (_num(row.get("head_row")), _num(row.get("head_col")))
    tail = (_num(row.get("tail_row")), _num(row.get("tail_col")))
    if spacing_ok and not np.isnan(head + tail).any():
        if width > 0:
            return segment_region(shape, head, tail, width, spacing), "head_tail"
        seg_len = np.hypot((head[0] - tail[0]) * spacing[0], (head[1] - tail[1]) * spacing[1])
        return segment_region(shape, head, tail, EST_WIDTH_RATIO * seg_len, spacing), "head_tail_est_width"
    if spacing_ok and length > 0:
        return disc_region(shape, np.hypot(length, width if width > 0 else 0.0), spacing), "centre_disc"
    return None, "none"


def region_to_hull(row, native):
    """The native region's area over the hull's (ship_length_m x ship_width_m), in m^2 with the manifest's pixel
    spacing; NaN without a region, spacing, length or width."""
    spacing = (_num(row.get("spacing_row_m")), _num(row.get("spacing_col_m")))
    length, width = _num(row.get("ship_length_m")), _num(row.get("ship_width_m"))
    if native is None or not all(v > 0 for v in (*spacing, length, width)):
        return float("nan")
    return float(np.asarray(native).sum() * spacing[0] * spacing[1] / (length * width))


def resize_region(region, size):
    """Box-resize a native region to (size, size), the geometry of data.load_split; a pixel is ship if at
    least half of it is. A ship below half an output pixel keeps its best-covered pixel, not none."""
    cover = np.asarray(Image.fromarray(region.astype(np.float32)).resize((size, size), Image.BOX))
    out = cover >= 0.5
    if not out.any() and region.any():
        out.flat[int(np.argmax(cover))] = True
    return out


def on_ship_scores(cam, region):
    """(on_ship_energy, peak_on_ship, ship_area_fraction) of a map (H, W) >= 0 and a region (H, W) bool.

    A map equal to the region scores 1; a uniform map scores the area fraction; an all-zero map has no energy
    and scores (nan, nan, area fraction)."""
    region = np.asarray(region, dtype=bool)
    cam = np.asarray(cam, dtype=np.float64)
    area = float(region.mean())
    total = cam.sum()
    if not total > 0:
        return float("nan"), float("nan"), area
    return float(cam[region].sum() / total), bool(region.flat[int(np.argmax(cam))]), area


def chip_scores(native, size, cam):
    """(on_ship_energy, peak_on_ship, ship_area_fraction, region at `size` or None) of one chip's map, from
    its native region (None: nothing known, scores NaN)."""
    if native is None:
        return np.nan, np.nan, np.nan, None
    region = resize_region(native, size)
    return (*on_ship_scores(cam, region), region)
