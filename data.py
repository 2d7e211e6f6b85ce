"""The data path of the grid: prepared splits decoded once into a cache on disk, batches drawn from tensors.

    from data import load_split, Batches, SplitCache
    train = load_split("data/prepared/fusar", "train", img_size=224)     # SplitArrays
    train.images.shape                                                    # (N, 224, 224) uint8
    load_split("data/prepared/opensarship-stack", "test", 64).images.shape   # (N, 2, 64, 64): co, cross
    print(train.describe())          # 2410 chips at 224 px = 120.9 MB uint8, in RAM (reused .cache/train_...)
    scaled = load_split("data/prepared/opensarship", "test", 64, inputs="m10-clutter")   # inputs.py's variants
    scaled.left_out                  # [(path, reason)]: chips without usable pixel spacing

Why not ImageFolder + PIL per epoch: every epoch would decode and resize every PNG again (that is most of the
run time for the small models). Here each chip is decoded and resized once per prepared split and size, the
split is kept as one uint8 array (N x S x S bytes: 50 KB a chip at 224 px), batches are index
permutations over that tensor, and augmentation runs batched on tensors, on the training device.

Decoded cache: `<set>/.cache/<split>_<size>_<key>.npy`, key = the first 16 hex digits of the sha1 of the set's
manifest.csv (which lists every chip with its own sha1, so any change of any chip changes the key). Built on
the first use by any run or cell, written atomically (a temporary file renamed into place, so concurrent runs
and an interruption never leave a partial cache), reused by every later cell and run; caches of an earlier
manifest are removed when a new one is written. dataset_prep.py replaces a set folder whole, carrying its cache
over only when the new manifest is the old one byte for byte.
`mmap=True` (test_models.py --cache-on-disk) keeps it memory-mapped: the operating system pages chips in as
batches touch them, for machines with less RAM than the split. A set folder that cannot be written (read-only
data) is decoded in memory each run, with a message. A chip the manifest lists that is missing or cannot be
decoded (a damaged set) raises ChipReadError, whose message names the file and the fix (prepare the set again).

Geometry and radiometry: the input variant (inputs.py, `inputs=`). Raw (the default, the study's): the whole chip
is resized to S x S (bilinear with antialiasing), for training and testing alike (the published code trained on
the whole chip and tested on a centre crop of a larger resize), so chips of different extents and sensors get
different metres per pixel. Harmonised (e.g. "m10", "m10-match-clutter"): every chip is resampled from its own
ground spacing (the manifest's, SLC slant range put on the ground with its incidence angle) to square M-metre
pixels and centre-cropped or padded with its own border sea to S x S, one field of view for every sensor; a chip
without usable spacing is left out of the split, with its reason (SplitArrays.left_out). "clutter" radiometry
(sea-relative dB) needs no spacing and leaves nothing out. Their caches are <split>_<size>_<inputs>_<key>.npy,
beside the raw <split>_<size>_<key>.npy, and hold the kept chips only (their number is checked on reading).

Augmentation as views: an augmentation mode has a fixed, finite set of views of a chip (NUM_VIEWS: 1 for none,
identity and horizontal flip for flip, the 8 symmetries of the square for flip+rot90). A batch draws one view
index per sample (draw_views) and applies it (apply_views). The indices are explicit so that the frozen-
feature cache (features.py), which holds the backbone's features of every view, replays exactly the draws of
the uncached path: same seed, same chip order, same view per sample.

Randomness: the order of the chips, the class-balanced sampler and the view draws each come from a
torch.Generator the caller seeds (on the CPU, so CPU and GPU runs make the same draws); decoding is
deterministic.
"""

import hashlib
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import inputs as chip_inputs
import runs
import sets
import stacking

AUGMENTATIONS = ("none", "flip", "flip+rot90")
# Views an augmentation can produce. View v of a chip: horizontally flipped if v is odd, then rotated by
# v // 2 quarter turns (counter-clockwise, torch.rot90): 0 identity, 1 flip, 2 rot90, 3 flip+rot90, ...
NUM_VIEWS = {"none": 1, "flip": 2, "flip+rot90": 8}
CACHE_DIR = ".cache"
DAMAGED = "the prepared set is damaged; rerun python dataset_prep.py --force (with the options that prepared it)"
KEY_CHARS = 16  # hex digits of the manifest sha1 in a cache file name: collisions are out of reach


@dataclass
class SplitArrays:
    images: np.ndarray  # (N, S, S) uint8, (N, 2, S, S) for a stacked set (an np.memmap with mmap=True)
    labels: np.ndarray  # (N,) int64, index into classes
    paths: list  # relative to the set folder, exactly as in its manifest.csv (e.g. "test/Cargo/x.png")
    classes: list  # sorted class names of the whole set (train and test), the ImageFolder order
    cache_path: Path | None = None  # the decoded cache file, None when not cached
    cache_status: str = "off"  # "built" (decoded now), "reused" (read back), "off" (not asked), "unwritable"
    cache_error: str = ""  # why the cache could not be written, when cache_status is "unwritable"
    seconds: float = 0.0  # time spent decoding or reading the cache
    inputs: str = chip_inputs.RAW  # the input variant's name (inputs.Inputs.name)
    left_out: list = field(default_factory=list)  # (path, reason) of the split's chips the variant cannot show

    @property
    def nbytes(self):
        return int(self.images.nbytes)

    def describe(self):
        """One line: size of the decoded split, where it lives, and whether the cache was built or reused."""
        n, size = self.images.shape[0], self.images.shape[-1]
        where = "memory-mapped from disk" if isinstance(self.images, np.memmap) else "in RAM"
        how = {"built": f"decoded in {self.seconds:.1f} s, cached as {self.cache_path}",
               "reused": f"read in {self.seconds:.1f} s from {self.cache_path}",
               "off": f"decoded in {self.seconds:.1f} s, not cached",
               "unwritable": f"decoded in {self.seconds:.1f} s; not cached ({self.cache_error}), so every "
                             "run decodes again: make the set folder writable"}[self.cache_status]
        line = f"{n} chips at {size} px = {self.nbytes / 1e6:.1f} MB uint8, {where} ({how})"
        if self.inputs != chip_inputs.RAW:
            line += f"; inputs {self.inputs}"
        if self.left_out:
            reasons = Counter(reason for _, reason in self.left_out)
            n = len(self.left_out)
            line += f"; {n} chip{'s' * (n != 1)} left out: " + "; ".join(
                f"{count} {reason}" for reason, count in reasons.most_common())
        return line


class ChipReadError(Exception):
    """A chip of a prepared set is missing or cannot be decoded, or a split has no chip an input variant can show;
    the message names the file and the fix."""


def resize_whole(image, img_size):
    """An (H, W) uint8 chip resized whole to (S, S): the raw inputs' geometry."""
    # Pillow's resize antialiases when it shrinks (the filter support widens with the scale), so large FUSAR chips
    # are averaged down rather than aliased; small OpenSARShip chips are interpolated up.
    im = Image.fromarray(image).resize((img_size, img_size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _decode_stacked(path, img_size):
    """A stacked (co, cross) chip at img_size: (2, S, S), each channel resized whole as a single-channel chip."""
    try:
        channels = stacking.read_tiff(path)
    except FileNotFoundError:
        raise ChipReadError(f"{path}: no such file, but the set's manifest.csv lists it: {DAMAGED}") from None
    except ValueError as e:
        raise ChipReadError(f"{path}: cannot decode this chip ({e}): {DAMAGED}") from None
    return np.stack([resize_whole(c, img_size) for c in channels])


def _decode(path, img_size, inputs=None, chip=None):
    """One chip at img_size: resized whole (inputs None: raw), or through inputs.transform with `chip` =
    (spacing, resolution, seed, product)."""
    if Path(path).suffix == stacking.SUFFIX:
        return _decode_stacked(path, img_size)
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if inputs is not None:
                image = np.asarray(im, dtype=np.uint8)
            else:
                return resize_whole(np.asarray(im, dtype=np.uint8), img_size)
    except FileNotFoundError:
        raise ChipReadError(f"{path}: no such file, but the set's manifest.csv lists it: {DAMAGED}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # Pillow's decode errors
        raise ChipReadError(f"{path}: cannot decode this chip ({e}): {DAMAGED}") from None
    spacing, resolution, seed, product = chip
    return chip_inputs.transform(image, spacing, resolution, img_size, inputs, seed, product)


def decode_files(files, img_size, num_workers=0, inputs=None, chips=None, channels=1):
    """(N, S, S) uint8 ((N, C, S, S) for stacked chips, channels C > 1): every file decoded and resized whole, or
    (a harmonised inputs.Inputs) transformed with chips[i] = (spacing, resolution, seed, product). num_workers > 0
    decodes with that many threads (Pillow, NumPy and SciPy release the GIL in their loops, so threads scale
    without the start-up cost of processes); the result does not depend on it."""
    images = np.zeros(image_shape(len(files), img_size, channels), np.uint8)  # filled in place: no second copy
    inputs = inputs if inputs is not None and inputs.harmonised else None

    def one(i):
        images[i] = _decode(files[i], img_size, inputs, chips[i] if inputs is not None else None)

    if num_workers > 0:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            list(pool.map(one, range(len(files))))
    else:
        for i in range(len(files)):
            one(i)
    return images


def image_shape(n, img_size, channels=1):
    """The shape of n decoded chips: (N, S, S), or (N, C, S, S) for stacked chips."""
    return (n, img_size, img_size) if channels == 1 else (n, channels, img_size, img_size)


def cache_file(set_dir, split, img_size, manifest_sha, inputs_name=chip_inputs.RAW):
    """Where the decoded cache of one split at one size and input variant lives: <set>/.cache/
    <split>_<size>_<key>.npy for raw inputs (the name caches had before variants), else
    <split>_<size>_<inputs name>_<key>.npy."""
    variant = "" if inputs_name == chip_inputs.RAW else f"{inputs_name}_"
    return Path(set_dir) / CACHE_DIR / f"{split}_{img_size}_{variant}{manifest_sha[:KEY_CHARS]}.npy"


def _remove_stale(folder, manifest_sha):
    """Remove caches of other manifests (never usable again) and temporaries of dead processes on this host.
    Caches of the current manifest at other sizes stay: another grid may run at that size."""
    key = manifest_sha[:KEY_CHARS]
    removed = []
    for path in folder.iterdir():
        name = path.name
        if name.endswith(".npy") and not name.startswith(".") and not name.endswith(f"_{key}.npy"):
            removed.append(path)
        elif name.startswith(".") and runs.is_stale(path):
            removed.append(path)
    for path in removed:
        path.unlink(missing_ok=True)  # another process may have removed it first
    return removed


def _write_cache(path, images):
    """np.save into a temporary sibling, fsync, rename: a reader sees no file or the complete one."""
    tmp = runs.temp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, images)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(path, shape, mmap):
    """The cached array, or None when absent, unreadable or of another shape (then it is rebuilt)."""
    try:
        # "c" (copy-on-write) rather than "r": the array is writable, so torch.from_numpy takes it without a
        # warning, and nothing is ever written back to the file
        images = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return images if images.shape == shape and images.dtype == np.uint8 else None


def _as_inputs(inputs):
    """None, a variant name ("raw", "m10-clutter") or an inputs.Inputs -> inputs.Inputs (ValueError if unknown)."""
    if inputs is None:
        return chip_inputs.Inputs()
    return inputs if isinstance(inputs, chip_inputs.Inputs) else chip_inputs.Inputs.parse(inputs)


def chip_args(row, variant):
    """What inputs.transform needs of one manifest row under `variant`, besides the pixels: (spacing, resolution,
    seed, product), or the reason (a string) why the variant cannot show the chip. The one rule for the grid's
    splits (_keep) and predict.py's new chips."""
    geometry = chip_inputs.geometry_for(row, variant)
    if isinstance(geometry, str):
        return geometry
    # the padding's draws are seeded by the chip's own sha1: the same chip gets the same pixels in any split, set or
    # order
    seed = int((row.get("sha1") or "0")[:8], 16)
    return (*geometry, seed, "cal" if row.get("product") == "cal" else "uint8")


def _keep(rows, variant, set_dir, split):
    """(rows kept, their transform arguments (spacing, resolution, seed, product) or None for raw, left out as
    (path, reason)): a harmonised variant leaves out the chips it cannot show. Recomputed from the manifest on
    every load (cheap), so a cache needs only the number of chips it holds checked."""
    if not variant.harmonised:
        return rows, None, []
    kept, chips, left_out = [], [], []
    for row in rows:
        chip = chip_args(row, variant)
        if isinstance(chip, str):
            left_out.append((row["path"], chip))
            continue
        kept.append(row)
        chips.append(chip)
    if not kept:
        reasons = "; ".join(f"{n} {r}" for r, n in Counter(r for _, r in left_out).most_common())
        raise ChipReadError(f"{set_dir}: none of its {len(rows)} {split} chips can be shown as {variant.name} "
                            f"({reasons}): use other inputs, or prepare the set with the metadata they need")
    return kept, chips, left_out


def load_split(set_dir, split, img_size, num_workers=0, cache=True, mmap=False, inputs=None):
    """Every chip of one split of a prepared set at img_size x img_size, in manifest order: resized whole (inputs
    None or "raw"), or as the input variant `inputs` (an inputs.Inputs or its name) shows it, without the chips
    it leaves out (SplitArrays.left_out).

    cache=True: read the decoded cache of this manifest, size and variant if there is one, else decode and write
    it (module docstring). mmap=True: keep the cached array memory-mapped instead of reading it into RAM.
    cache=False: decode in memory, touch nothing on disk. The pixels are the same in every case.
    """
    variant = _as_inputs(inputs)
    set_dir = Path(set_dir)
    if split not in sets.SPLITS:
        raise ValueError(f"split must be one of {', '.join(sets.SPLITS)}, not {split!r}")
    content = sets.read_manifest_bytes(set_dir)  # hashed and parsed from the same bytes: the key fits the rows
    sha = hashlib.sha1(content).hexdigest()
    rows = sets.parse_manifest(content)
    classes = sorted({row["class"] for row in rows})
    rows = [row for row in rows if row["split"] == split]
    if not rows:
        hint = " with --val-size above 0" if split == "val" else ""
        raise ValueError(f"{set_dir} has no {split} chips in its manifest.csv: rerun python dataset_prep.py{hint}")
    channels = sets.row_channels(rows[0])
    if channels > 1 and variant.name != chip_inputs.RAW:
        raise ValueError(f"{set_dir} holds stacked {channels}-channel chips, which only the raw inputs show (the "
                         f"{variant.name} resampling and radiometry are defined for one channel): use --inputs raw")
    rows, chips, left_out = _keep(rows, variant, set_dir, split)
    files = [set_dir / row["path"] for row in rows]
    labels = np.array([classes.index(row["class"]) for row in rows], dtype=np.int64)
    out = SplitArrays(images=None, labels=labels, paths=[row["path"] for row in rows], classes=classes,
                      inputs=variant.name, left_out=left_out)
    start = time.perf_counter()
    if cache:
        out.cache_path = cache_file(set_dir, split, img_size, sha, variant.name)
        out.images = _read_cache(out.cache_path, image_shape(len(files), img_size, channels), mmap)  # kept chips
        out.cache_status = "reused"
    if out.images is None:
        out.images = decode_files(files, img_size, num_workers, variant, chips, channels)
        if cache:
            try:
                out.cache_path.parent.mkdir(exist_ok=True)
                _write_cache(out.cache_path, out.images)
                _remove_stale(out.cache_path.parent, sha)
                out.cache_status = "built"
                if mmap:  # from now on the pages belong to the file, not to this process
                    out.images = _read_cache(out.cache_path, out.images.shape, mmap=True)
            except OSError as e:  # read-only data, a full disk: still correct, only slower on the next run
                out.cache_path, out.cache_status, out.cache_error = None, "unwritable", str(e)
    out.seconds = time.perf_counter() - start
    return out


def draw_views(n, mode, generator):
    """One view index per sample, (n,) int64 on the CPU, drawn from `generator` (a CPU torch.Generator).

    flip: 0 or 1, each with probability 1/2 (the study's random horizontal flip); flip+rot90: flip + 2 k with
    k uniform in 0..3 (the 8 symmetries of the square: a ship may point anywhere). none draws nothing.
    """
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {mode!r}: valid are {', '.join(AUGMENTATIONS)}")
    if mode == "none":
        return torch.zeros(n, dtype=torch.long)
    views = (torch.rand(n, generator=generator) < 0.5).long()
    if mode == "flip+rot90":
        views += 2 * torch.randint(0, 4, (n,), generator=generator)
    return views


def view(x, v):
    """View v (NUM_VIEWS) of a batch (..., S, S): flipped horizontally if v is odd, then v // 2 quarter
    turns."""
    if v % 2:
        x = x.flip(-1)
    return torch.rot90(x, v // 2, dims=(-2, -1)) if v // 2 else x


def apply_views(x, views):
    """Batch (B, ..., S, S) on any device, views (B,) on the CPU: sample i becomes view(x[i], views[i])."""
    present = torch.unique(views).tolist()  # on the CPU: no device synchronisation
    if present == [0]:
        return x
    b = x.shape[0]
    if set(present) <= {0, 1}:  # the study's flip: whole-batch operations, no gather
        flip = views.to(x.dtype).to(x.device, non_blocking=True).view(b, *[1] * (x.dim() - 1))
        if x.is_floating_point():
            return torch.where(flip.bool(), x.flip(-1), x)
        # integers (uint8 images): x + flip * (flipped - x) is exact in wrapping integer arithmetic, and on
        # the CPU about 10x faster than torch.where with a broadcast mask
        return x.flip(-1).sub_(x).mul_(flip).add_(x)
    out = x.clone()
    for v in present:
        if v:
            idx = (views == v).nonzero().squeeze(1).to(x.device, non_blocking=True)
            out[idx] = view(x.index_select(0, idx), v)
    return out


def balanced_sample_weights(labels, num_classes):
    """Per-sample weights 1 / count(class): every class is drawn equally often on average."""
    labels = torch.as_tensor(labels)
    counts = torch.bincount(labels, minlength=num_classes).double()
    return 1.0 / counts[labels]


def epoch_order(n, generator, sample_weights=None):
    """Indices of one epoch: a permutation of range(n), or n draws with replacement by sample_weights."""
    if sample_weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(sample_weights, n, replacement=True, generator=generator)


class Batches:
    """Mini-batches (uint8 images, labels) over a split held as tensors on the training device.

    Training (shuffle=True): a fresh order every epoch from `generator`; with `sample_weights` the order is n
    draws with replacement (the class-balanced sampler); a view per sample of augmentation `augment` drawn
    from `aug_generator`. A last batch of a single sample is dropped in training, because batch norm cannot
    train on one sample. Evaluation (shuffle=False): the split in order, no augmentation, nothing dropped.
    plan() gives the draws alone; features.FeatureBatches replays them over cached features.

    Under DistributedDataParallel (distributed.py) every rank builds the same Batches with its `rank` and the
    `world_size` W: the epoch order (same generator, same seed on every rank) is cut into global batches of
    `batch_size` exactly as in one process, and rank r takes the r-th of W equal contiguous shares of each.
    The last global batch is trimmed to a multiple of W, and dropped where a rank would get a single chip of
    it. Each rank draws the views of its own share from its own `aug_generator`. W = 1: one process, as above.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, generator=None, sample_weights=None,
                 augment="none", aug_generator=None, rank=0, world_size=1):
        if shuffle and generator is None:
            raise ValueError("shuffled batches need a seeded generator")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}: valid are {', '.join(AUGMENTATIONS)}")
        if augment != "none" and aug_generator is None:
            raise ValueError("augmented batches need a seeded aug_generator")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.generator, self.sample_weights = shuffle, generator, sample_weights
        self.augment, self.aug_generator = augment, aug_generator
        self.rank, self.world_size = rank, world_size

    def _sizes(self):
        """Global batch sizes of one epoch (every rank's shares together)."""
        n, bs, w = len(self.labels), self.batch_size, self.world_size
        sizes = [min(bs, n - start) for start in range(0, n, bs)]
        if self.shuffle and sizes:
            last = sizes[-1] - sizes[-1] % w
            if last // w < 2 and (len(sizes) > 1 or w > 1):
                sizes.pop()
            else:
                sizes[-1] = last
        return sizes

    def __len__(self):
        return len(self._sizes())

    def plan(self):
        """One epoch's draws, batch by batch: (index, views). index: a slice (evaluation) or int64 indices on
        the labels' device (this rank's share); views: (B,) int64 on the CPU, or None for no augmentation."""
        order = None
        if self.shuffle:
            order = epoch_order(len(self.labels), self.generator, self.sample_weights).to(self.labels.device)
        start = 0
        for size in self._sizes():
            if order is None:  # evaluation: contiguous slices, no gather
                yield slice(start, start + size), None
            else:
                share = size // self.world_size
                index = order[start + self.rank * share:start + (self.rank + 1) * share]
                views = None if self.augment == "none" else \
                    draw_views(share, self.augment, self.aug_generator)
                yield index, views
            start += size

    def __iter__(self):
        for index, views in self.plan():
            if isinstance(index, slice):
                x, y = self.images[index], self.labels[index]
            else:  # index_select: on the CPU about 10x faster than advanced indexing (images[index])
                x, y = self.images.index_select(0, index), self.labels.index_select(0, index)
            yield (x if views is None else apply_views(x, views)), y


class SplitCache:
    """Each split read once per run and moved once to the training device. load_split decodes a split once per
    prepared set, size and input variant (`inputs`: None or "raw", an inputs.Inputs or its name) into
    <set>/.cache/ (every later cell and run reads it back); on_disk keeps it memory-mapped there rather than in
    RAM. The line printed per split names the variant and the chips it left out. `features`: the run's
    frozen-backbone features (a features.FeatureCache, which the grid's cells share with the splits), or None."""

    def __init__(self, data_dir, img_size, device, num_workers, on_disk=False, feature_cache=None, inputs=None):
        self.data_dir, self.img_size = Path(data_dir), img_size
        self.device, self.num_workers, self.on_disk = device, num_workers, on_disk
        self.features = feature_cache
        self.inputs = _as_inputs(inputs)
        self._cache = {}

    def get(self, set_name, split):
        """(SplitArrays, images uint8 (N, S, S) on the device, labels int64 (N,) on the device)."""
        key = (set_name, split)
        if key not in self._cache:
            arrays = load_split(self.data_dir / set_name, split, self.img_size, self.num_workers,
                                mmap=self.on_disk, inputs=self.inputs)
            print(f"{set_name}/{split}: {arrays.describe()}", flush=True)
            images, labels = torch.from_numpy(arrays.images), torch.from_numpy(arrays.labels)
            # pinned host memory: an asynchronous copy, once (not from the memory map: pinning would copy
            # the whole split into RAM, which --cache-on-disk is there to avoid)
            if self.device.type == "cuda" and not self.on_disk:
                images, labels = images.pin_memory(), labels.pin_memory()
            self._cache[key] = (arrays, images.to(self.device, non_blocking=True),
                                labels.to(self.device, non_blocking=True))
        return self._cache[key]
