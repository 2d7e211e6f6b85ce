"""The data path of the grid: prepared splits decoded once into memory, batches drawn from tensors.

    from data import load_split, Batches, to_model_input
    train = load_split("data/prepared/fusar", "train", img_size=224)     # SplitArrays
    train.images.shape                                                    # (N, 224, 224) uint8

Why not ImageFolder + PIL per epoch: every epoch would decode and resize every PNG again (that is most of the
run time for the small models). Here each chip is decoded and resized exactly once, the split lives in memory
as one uint8 array (N x S x S bytes: 50 KB a chip at 224 px), batches are index permutations over that tensor,
and augmentation runs batched on tensors, on the training device.

Geometry: the whole chip is resized to S x S (bilinear with antialiasing), for training and testing alike (the
published code trained on the whole chip and tested on a centre crop of a larger resize).

Randomness: the order of the chips, the class-balanced sampler and the augmentation each draw from a
torch.Generator the caller seeds (on the CPU, so CPU and GPU runs make the same draws); decoding is
deterministic.
"""

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

AUGMENTATIONS = ("none", "flip", "flip+rot90")


@dataclass
class SplitArrays:
    images: np.ndarray  # (N, S, S) uint8
    labels: np.ndarray  # (N,) int64, index into classes
    paths: list  # relative to the set folder, exactly as in its manifest.csv (e.g. "test/Cargo/x.png")
    classes: list  # sorted class names of the whole set (train and test), the ImageFolder order


def read_manifest(set_dir):
    """Rows of `<set_dir>/manifest.csv` as dicts, in file order (sorted by path)."""
    manifest = Path(set_dir) / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"no prepared set at {set_dir} (missing manifest.csv): run python "
                                "dataset_prep.py first (or python dataset_prep.py --synthetic for the "
                                "synthetic demo)")
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def set_classes(set_dir):
    """Sorted class names of a prepared set, from its manifest (both splits).

    Taken over both splits, not from the folders of one split: if a test split happened to lack a class, an
    ImageFolder over it would renumber the remaining classes and every label after the gap would be wrong.
    """
    return sorted({row["class"] for row in read_manifest(set_dir)})


def manifest_sha1(set_dir):
    """Content hash of a set's manifest.csv (it lists every chip with its own hash): the set's identity."""
    return hashlib.sha1((Path(set_dir) / "manifest.csv").read_bytes()).hexdigest()


def _decode(path, img_size):
    with Image.open(path) as im:
        im = im.convert("L")
        # Pillow's resize antialiases when it shrinks (the filter support widens with the scale), so large
        # FUSAR chips are averaged down rather than aliased; small OpenSARShip chips are interpolated up.
        im = im.resize((img_size, img_size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def load_split(set_dir, split, img_size, num_workers=0):
    """Decode every chip of one split of a prepared set once, resized whole to img_size x img_size.

    Returns SplitArrays in manifest order. num_workers > 0 decodes with that many threads (Pillow releases the
    GIL while it decodes and resizes, so threads scale without the start-up cost of processes); the result
    does not depend on it.
    """
    set_dir = Path(set_dir)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    rows = read_manifest(set_dir)
    classes = sorted({row["class"] for row in rows})
    rows = [row for row in rows if row["split"] == split]
    if not rows:
        raise ValueError(f"{set_dir} has no {split} chips in its manifest.csv: rerun python dataset_prep.py")
    files = [set_dir / row["path"] for row in rows]
    if num_workers > 0:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            decoded = list(pool.map(_decode, files, [img_size] * len(files)))
    else:
        decoded = [_decode(f, img_size) for f in files]
    images = np.stack(decoded) if decoded else np.zeros((0, img_size, img_size), np.uint8)
    labels = np.array([classes.index(row["class"]) for row in rows], dtype=np.int64)
    return SplitArrays(images=images, labels=labels, paths=[row["path"] for row in rows], classes=classes)


def to_model_input(x):
    """uint8 batch (B, S, S) or (B, 1, S, S) -> float32 (B, 1, S, S) in [0, 1]: what every model takes."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().div_(255.0)


def augment(x, mode, generator):
    """Random augmentation of a batch (B, ..., S, S) on its own device, one independent draw per sample.

    mode: "none"; "flip" (horizontal flip with probability 1/2, as in the study); "flip+rot90" (the flip, then
    a rotation by a random multiple of 90 degrees: the 8 symmetries of the square, as a ship may point
    anywhere). The draws come from `generator` (a CPU torch.Generator) so they do not depend on the device.
    """
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {mode!r}: valid are {', '.join(AUGMENTATIONS)}")
    if mode == "none":
        return x
    b = x.shape[0]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device, non_blocking=True)
    x = torch.where(flip.view(b, *[1] * (x.dim() - 1)), x.flip(-1), x)
    if mode == "flip+rot90":
        k = torch.randint(0, 4, (b,), generator=generator)
        out = x.clone()
        for turns in (1, 2, 3):
            idx = (k == turns).nonzero().squeeze(1)  # on the CPU: no device synchronisation to test emptiness
            if len(idx):
                idx = idx.to(x.device)
                out[idx] = torch.rot90(x[idx], turns, dims=(-2, -1))
        x = out
    return x


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
    draws with replacement (the class-balanced sampler); augmentation `augment` drawn from `aug_generator`. A
    last batch of a single sample is dropped in training, because batch norm cannot train on one sample.
    Evaluation (shuffle=False): the split in order, no augmentation, nothing dropped.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, generator=None, sample_weights=None,
                 augment="none", aug_generator=None):
        if shuffle and generator is None:
            raise ValueError("shuffled batches need a seeded generator")
        if augment != "none" and aug_generator is None:
            raise ValueError("augmented batches need a seeded aug_generator")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.generator, self.sample_weights = shuffle, generator, sample_weights
        self.augment, self.aug_generator = augment, aug_generator

    def _sizes(self):
        n, bs = len(self.labels), self.batch_size
        sizes = [min(bs, n - start) for start in range(0, n, bs)]
        if self.shuffle and len(sizes) > 1 and sizes[-1] == 1:
            sizes.pop()
        return sizes

    def __len__(self):
        return len(self._sizes())

    def __iter__(self):
        n = len(self.labels)
        order = None
        if self.shuffle:
            order = epoch_order(n, self.generator, self.sample_weights).to(self.images.device)
        start = 0
        for size in self._sizes():
            if order is None:  # evaluation: contiguous slices, no gather
                yield self.images[start:start + size], self.labels[start:start + size]
            else:
                idx = order[start:start + size]
                yield augment(self.images[idx], self.augment, self.aug_generator), self.labels[idx]
            start += size
