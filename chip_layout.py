"""What an image file given to predict.py holds: its layout (channels, pages), its pixel type, its pixels.

    problem, depth, pixels = chip_layout.image_layout(content)   # bytes of a PNG or TIFF
    # problem: "3 channels (RGB)", "2 pages (a multi-page TIFF)" or None; depth: "16-bit pixels" or None;
    # pixels: the (H, W) uint8 array when both are None. Unreadable when nothing decodes the bytes.
"""

import io
import warnings

import numpy as np
from PIL import Image

import archives

TIFF_SAMPLES_PER_PIXEL = 277  # Pillow opens some 2-band TIFFs as mode L: the tag says how many bands there are
MODE_KINDS = {"1": "1-bit pixels", "P": "palette (colour-indexed) pixels", "I": "32-bit integer pixels",
              "F": "32-bit float pixels", "I;16": "16-bit pixels", "I;16B": "16-bit pixels", "I;16L": "16-bit pixels"}


class Unreadable(Exception):
    """A chip file that cannot be read or decoded: skipped and counted, with the reason."""


def image_layout(content):
    """(what is wrong with the file's layout or None, what is wrong with its pixel type or None, 2-D uint8 array or
    None) of an image file's bytes. Pillow first; a TIFF it cannot open (a 2-band planar TIFF, for one) through
    tifffile. Unreadable when neither decodes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged file is reported once, as a skipped chip
        try:
            with Image.open(io.BytesIO(content)) as im:
                im.load()
                tiff = im.format == "TIFF"
                samples = int(getattr(im, "tag_v2", {}).get(TIFF_SAMPLES_PER_PIXEL, 1))
                channels = max(len(im.getbands()), samples)
                depth = None if im.mode == "L" else MODE_KINDS.get(im.mode, f"Pillow mode {im.mode}")
                pixels = np.asarray(im) if depth is None else None
                return layout_problem(channels, getattr(im, "n_frames", 1), im.mode, tiff), depth, pixels
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            error = e
        if content[:4] in (b"II*\x00", b"MM\x00*"):
            import tifffile  # the TIFFs Pillow rejects (odd sample layouts)
            try:
                with tifffile.TiffFile(io.BytesIO(content)) as tif:
                    page = tif.pages[0]
                    dtype = np.dtype(page.dtype)
                    problem = layout_problem(page.samplesperpixel, len(tif.pages), "", True)
                    depth = None if dtype == np.uint8 else f"{dtype.name} pixels"
                    pixels = page.asarray().reshape(page.shape[:2]) if problem is None and depth is None else None
                    return problem, depth, pixels
            except Exception:  # noqa: BLE001 - tifffile raises many types; Pillow's error is the more telling one
                pass
    raise Unreadable(f"cannot decode image: {archives.clean_error(error)}")


def layout_problem(channels, pages, mode, tiff):
    """What makes a file other than one single-channel image ("3 channels (RGB)", "2 pages"), or None."""
    if channels != 1:
        return f"{channels} channels ({mode if mode not in ('', 'L') else f'a {channels}-band TIFF'})"
    if pages != 1:
        return f"{pages} pages (a multi-page {'TIFF' if tiff else 'image'})"
    return None
