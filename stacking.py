"""Stacked dual-pol chips on their way to the prepared set (dataset_prep.py --pol stack).

    twin = stacking.decode_twin(reader, handle, chip.twin, co)   # in splits.decode_all's workers; co: the co pixels
    stacking.stage_twin(reader, chip, twin, staging, index)       # after the co chip is staged
    chips, skips = stacking.stacked_chips(chips, "opensarship")   # after the split: the stacked set's chips

A reader that can stack (OpenSARShip) gives each dual-pol co chip a twin (readers.Chip.twin): the same chip as an
(H, W, 2) array, channels (co, cross) (opensarship_pixels.py says how they are scaled). The split is made on the co
chips alone and every twin takes its co chip's group and split, so the stacked set `<dataset>-stack`
(sets.stacked_set) holds exactly the ships of the co set that have both channels, on the same side of the split:
co and stack compare on the same test ships (report.py). Twins are written as 2-channel 8-bit TIFFs (PNG has no
2-channel mode that ImageFolder keeps), named as their co chip without the polarisation suffix, with the co chip's
mask. A co chip without a twin (a single-pol scene, a missing Patch/ file, an unreadable one) is a skipped chip of
the stacked set, with its reason.
"""

import hashlib
import io
import re

import numpy as np

from archives import READ_ERRORS
from sets import stacked_set

SUFFIX = ".tif"
# a co chip file's polarisation suffix, before the sha1 prefix name_files adds to a name taken twice
POL_SUFFIX = re.compile(r"_(?:vv|vh|hh|hv)(?=(?:_[0-9a-f]{8})?$)")


def twin_key(path):
    """The key a chip file's path shares with its twin (its co chip, or its stacked version): the path without its
    extension and, for a co chip, without the polarisation suffix the twin's name lacks (stacked_chips' naming)."""
    return POL_SUFFIX.sub("", str(path).rsplit(".", 1)[0])


def encode_tiff(arr):
    """Deterministic bytes of an (H, W, C) uint8 array as an uncompressed TIFF, samples interleaved (no dates)."""
    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(arr, dtype=np.uint8), photometric="minisblack",
                     planarconfig="contig", metadata=None)
    return buf.getvalue()


class NotStacked(ValueError):
    """A readable image that is not a stacked chip (another channel count or pixel type)."""


def read_tiff(path_or_bytes):
    """A stacked chip file (a path or its bytes) -> (2, H, W) uint8. ValueError with the reason when it cannot be
    decoded; NotStacked when it is an image of another layout."""
    import tifffile
    try:
        arr = tifffile.imread(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    except FileNotFoundError:
        raise
    except Exception as e:  # tifffile raises many types for a damaged file
        raise ValueError(f"not a readable TIFF ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[-1] != 2 or arr.dtype != np.uint8:
        raise NotStacked(f"not a 2-channel 8-bit chip (shape {arr.shape}, {arr.dtype})")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def decode_twin(reader, handle, twin, co):
    """(shape, TIFF bytes, sha1 of its raw file) of a twin, or (None, reason, None). co: its co chip as decoded, which
    the reader takes instead of decoding it again (readers.Reader.load_chip)."""
    try:
        source = hashlib.sha1(getattr(handle, "tree", handle).read(twin.member)).hexdigest()
        arr = reader.load_chip(handle, twin, co=co)
    except READ_ERRORS as e:
        return None, str(e), None
    return arr.shape, encode_tiff(arr), source


def stage_twin(reader, chip, result, staging, index):
    """Stage a decoded twin beside its co chip (size, hash, head/tail, the co chip's mask); a twin that could not
    be decoded, or whose size differs from its co chip's, is dropped with the reason."""
    shape, content, source = result
    twin = chip.twin
    if shape is None or shape[:2] != (chip.chip_h, chip.chip_w):
        chip.twin = None
        chip.twin_reason = f"unreadable image: {content}" if shape is None else \
            f"its channels are {shape[0]}x{shape[1]} px but the co chip is {chip.chip_h}x{chip.chip_w}"
        return
    twin.sha1, twin.source_sha1 = hashlib.sha1(content).hexdigest(), source
    twin.chip_h, twin.chip_w = shape[:2]
    for key, value in reader.chip_coords(twin, *shape[:2]).items():
        setattr(twin, key, value)
    twin.staged = staging / f"{index:07d}_stack{SUFFIX}"
    twin.staged.write_bytes(content)
    twin.staged_mask = chip.staged_mask


def stacked_chips(chips, dataset):
    """(the stacked set's chips, its skips) from the split, named co chips of `dataset`: each twin in its co chip's
    group and split, its file the co chip's name without the polarisation suffix."""
    name = stacked_set(dataset)
    out, skips = [], []
    for chip in chips:
        if chip.dataset != dataset:
            continue
        twin = chip.twin
        if twin is None:
            skips.append((name, chip.source, chip.twin_reason or "no twin", f"co chip {chip.file} not stacked"))
            continue
        twin.group, twin.split = chip.group, chip.split
        stem = chip.file.rsplit(".", 1)[0]
        twin.file = stem.replace(f"_{chip.name}", f"_{twin.name}", 1) + SUFFIX
        out.append(twin)
    return out, skips
