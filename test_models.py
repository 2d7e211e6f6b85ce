"""The experiment grid: train every model on every prepared set, test it on every prepared set.

    python test_models.py                                  # the study: 3 sets x 5 models, Adam 1e-3,
                                                           # 10 epochs, batch 64, 224 px, flip, seed 42
    python test_models.py --models cnn,fine_vgg --datasets fusar --imbalance none,weighted,sampler,focal \\
        --seeds 0,1,2                                      # imbalance strategies and seeds as grid axes
    python test_models.py --aggregate-only                 # rebuild scores.csv, predictions.csv, results.txt,
                                                           # figures/ from the records found under runs/
    python test_models.py --device cpu --img-size 32 --epochs 1 --weights none --models cnn   # a quick look
    torchrun --nproc_per_node=4 test_models.py             # each cell trained on 4 GPUs (DDP), batch 64 total
    python test_models.py --shard 3/8                      # the 3rd of 8 disjoint slices of the grid (job
                                                           # arrays); then --aggregate-only for the tables

The grid is training set x model x imbalance strategy x seed. Every cell builds a fresh model and optimiser
from its own seed (the published code kept training one model object across datasets: defect 3), trains, and
is tested on the test split of every prepared set (within- and cross-dataset). Inputs: the prepared splits of
dataset_prep.py under --data-dir (<set>/{train,test}/<Class>/*.png and manifest.csv).

Outputs, under --output-dir:
    runs/<train_set>/<model>/<imbalance>/seed<k>/     one finished cell, written atomically (built in a hidden
        record.json                                   sibling folder, renamed when complete): args, classes,
        checkpoint.pt                                 per-epoch loss/accuracy, times, metrics per test set;
        predictions_<test_set>.csv                    the model + optimiser; per-chip predictions;
        confusion_<test_set>.csv / .png               confusion matrices (rows true, columns predicted)
    scores.csv          one row per (train_set, test_set, model, imbalance, seed): accuracy, balanced
                        accuracy, weighted and macro precision/recall/F1, per-class precision/recall/F1
                        (percent, two decimals) and support (count), recomputed with scikit-learn from
                        the predictions
    predictions.csv     one row per evaluated chip: the cell, path (as in the set's manifest), true, pred,
                        prob_<Class> for every class
    results.txt         the human-readable log: configuration, epochs, metrics and confusion matrices per cell
    figures/cross_dataset_f1_macro_<imbalance>.png   macro-F1 heat map train set x test set, a panel per model
    figures/per_class_f1_<imbalance>.png             per-class F1 bars, a panel per (train set, test set)
    report.md, report_*.csv, report_figures/        the study answered (report.py): counts, mean +- std over
                                                     seeds, imbalance effects, cross-dataset, Grad-CAM scores
The tables are rebuilt from every record found (also records of earlier runs with other seeds or strategies).

Rerunning skips finished cells (--force retrains them). A run killed mid-cell leaves only its hidden temporary
folder, removed by the next run. A finished cell whose record lacks a requested test set (or whose test set
was prepared again since) is evaluated from its checkpoint and its record completed; a finished cell trained
with other settings (epochs, lr, ...) or on another version of its training set stops the run: rerun with
--force, or use another --output-dir.

Imbalance strategies (--imbalance): none; weighted (cross-entropy weighted by inverse class frequency of the
training split, w_c = N / (K n_c): the weights average to 1 over the training samples, every class carries the
same total weight); sampler (each epoch draws N training chips with replacement, every class equally likely,
seeded); focal (focal loss, gamma 2, with the same class weights as alpha). See class_weights and FocalLoss.

Reproducibility: a cell depends only on its settings and seed. Python, NumPy and torch are seeded right before
the model is built; the data order, the sampler and the augmentation draw from per-cell torch generators
derived from the seed. On the CPU a cell alone or inside a larger grid gives identical predictions; on CUDA,
cuDNN autotuning (cudnn.benchmark) and atomics make runs close but not bitwise equal. Each record keeps its
args and the command line that reruns exactly that cell.

Several GPUs or a cluster (distributed.py): under torchrun each cell is trained with DistributedDataParallel
(NCCL on CUDA, gloo on the CPU); --batch-size stays the global batch, every rank draws the same seeded epoch
order and takes its share of each batch, ranks > 0 draw augmentation and dropout from seeds derived from the
cell's seed; every test chip is evaluated once, by one rank; rank 0 alone prints and writes. --shard k/n runs
cells[k-1::n] of the grid (independent jobs, e.g. a SLURM array, cover it exactly once); each shard's own
end-of-run tables cover only the records it finds, the final ones come from --aggregate-only over the union of
the shards' runs/ folders.

CUDA and CPU run one code path: autocast (bfloat16 where supported, else float16 with a GradScaler) when --amp
is on (auto: on for CUDA, off on the CPU), channels-last tensors, pinned memory and cudnn.benchmark on CUDA;
--compile adds torch.compile. Each split is decoded once per prepared set and size into <set>/.cache/ (data.py;
reused by every cell and every later run, --cache-on-disk keeps it memory-mapped rather than in RAM), held on
the training device as uint8 (N x S x S bytes: 50 KB a chip at 224 px) and augmented there in batches.
fine_vgg and fine_resnet train their head on backbone features computed once per chip and augmentation view
(features.py), replaying the uncached draws exactly; --no-feature-cache pushes every chip through the frozen
backbone in every epoch instead (for checking). bench.py measures all of this.
"""

import argparse
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import data
import distributed
import features
import metrics
import report
from models import MODEL_NAMES, WEIGHT_CHOICES, WeightsUnavailableError, build_model, load_trained

# Defaults of the study (reference-study.md): Adam, lr 0.001, 10 epochs, batch 64, 224 x 224, horizontal flip.
DEFAULT_SETS = ("fusar", "opensarship", "mixed")  # the sets dataset_prep.py writes, in the study's order
IMBALANCE = ("none", "weighted", "sampler", "focal")
FOCAL_GAMMA = 2.0  # Lin et al. 2017, the value their experiments settle on
AMP_CHOICES = ("auto", "on", "off")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# The args a finished cell's results depend on besides its four keys: a rerun with other values must not
# silently reuse it. Device, amp and workers are left out: a grid may be finished on another machine.
TRAIN_SETTINGS = ("epochs", "batch_size", "lr", "img_size", "augment", "weights")
SEED_DIR = re.compile(r"^seed(\d+)$")
# Temporary names end in -<host>-<pid>-<8 hex> (temp_suffix): unique per process, and they say whose they are.
# Hidden folders: .seed<k>.tmp-* (a cell being built), .seed<k>.old-* (a record being replaced, --force),
# seed<k>/.complete-* (test sets being added); hidden files: .<name>.tmp-* (a table or figure being written).
TEMP_SUFFIX = re.compile(r"-(?P<host>[^/]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


# ------------------------------------------------------------------------------------------------------------
# arguments

def _comma_list(valid=None, cast=str):
    """argparse type for comma-separated values; an invalid one raises an error naming the valid ones."""

    def parse(text):
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        bad = [v for v in values if valid is not None and v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid {', '.join(map(str, bad))}; valid: {', '.join(valid)}")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"repeated value in {text!r}")
        return values

    return parse


def _seed_list(text):
    try:
        return _comma_list(cast=int)(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, e.g. 0,1,2; got {text!r}") from None


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Train and test every model on every prepared set",
                                     add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="data/prepared",
                        help="prepared sets written by dataset_prep.py")
    parser.add_argument("--output-dir", default=".", help="where runs/, the tables and figures/ go")
    parser.add_argument("--datasets", type=_comma_list(), default=None,
                        help="training sets, comma-separated (default: fusar,opensarship,mixed; those not "
                             "prepared are skipped with a message; a named one that is missing is an error)")
    parser.add_argument("--test-sets", type=_comma_list(), default=None,
                        help="sets whose test split every cell is evaluated on (default: all prepared)")
    parser.add_argument("--models", type=_comma_list(MODEL_NAMES), default=list(MODEL_NAMES),
                        help=f"models, comma-separated, from {', '.join(MODEL_NAMES)}")
    parser.add_argument("--imbalance", type=_comma_list(IMBALANCE), default=["none"],
                        help=f"imbalance strategies, comma-separated, from {', '.join(IMBALANCE)}")
    parser.add_argument("--seeds", type=_seed_list, default=[42], help="seeds, comma-separated")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="the global batch: under torchrun each of the N processes trains on batch / N "
                             "chips a step (N must divide it)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate")
    parser.add_argument("--img-size", type=int, default=224,
                        help="every chip is resized whole to this square")
    parser.add_argument("--augment", default="flip", choices=data.AUGMENTATIONS,
                        help="training augmentation: none, flip (random horizontal flip, the study), "
                             "flip+rot90 (also a random multiple of 90 degrees)")
    parser.add_argument("--weights", default="imagenet", choices=WEIGHT_CHOICES,
                        help="start of the VGG/ResNet backbones (the cnn is always random)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="auto: CUDA if available, else CPU; cuda without CUDA is an error")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads decoding the PNGs of a split (once per run; 0: in the main thread); "
                             "the decoded arrays do not depend on it")
    parser.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                        help="mixed precision: auto = on for CUDA, off on the CPU")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the trained module (minutes of compilation per cell; pays off for "
                             "long CUDA runs)")
    parser.add_argument("--cache-on-disk", action="store_true",
                        help="keep the decoded splits memory-mapped from <set>/.cache/ instead of reading them "
                             "into RAM (for machines with less memory than the data)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="push every chip through the frozen backbones of fine_vgg/fine_resnet in every "
                             "epoch instead of training their head on cached features (for checking: the "
                             "results agree within float rounding)")
    parser.add_argument("--shard", type=distributed.parse_shard, default=None, metavar="K/N",
                        help="run only the K-th of N disjoint slices of the grid's cells (cells[K-1::N]), "
                             "e.g. one per job of a SLURM array; the final tables come from --aggregate-only "
                             "once every shard is done")
    parser.add_argument("--force", action="store_true", help="retrain cells that are already finished")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="train nothing: rebuild the tables, figures and report from the records found")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: rebuild report.md, report_*.csv and report_figures/ only")
    parser.add_argument("--exp-dir", default="Exp_images",
                        help="grad_cams.py's output folder, read by the report's Grad-CAM section")
    return parser


# ------------------------------------------------------------------------------------------------------------
# imbalance strategies

def class_weights(labels, num_classes):
    """Inverse class frequency w_c = N / (K n_c) over the K classes present in `labels` (absent classes: 0).

    Normalised so the weights average to 1 over the training samples (sum_i w_{y_i} = N): every class carries
    the same total weight N / K, and a loss weighted by them has the scale of the unweighted one.
    """
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = len(labels) / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., ICCV 2017) with class weights as alpha:

        loss = sum_i w_{y_i} (1 - p_i)^gamma (-log p_i) / sum_i w_{y_i},   p_i = softmax(logits_i)[y_i]

    normalised by the batch's total weight exactly as torch's weighted cross-entropy is, so gamma = 0 gives
    CrossEntropyLoss(weight=w). Computed in float32 from log-softmax (no log of a rounded probability).
    """

    def __init__(self, weight=None, gamma=FOCAL_GAMMA):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)  # (B,)
        w = self.weight[target] if self.weight is not None else torch.ones_like(log_p)
        return (w * (1.0 - log_p.exp()).pow(self.gamma) * -log_p).sum() / w.sum()


def make_criterion(imbalance, train_labels, num_classes):
    """(loss module, class weights as a list or None) for an imbalance strategy."""
    if imbalance in ("none", "sampler"):  # the sampler balances the data, not the loss
        return nn.CrossEntropyLoss(), None
    w = class_weights(train_labels, num_classes)
    if imbalance == "weighted":
        return nn.CrossEntropyLoss(weight=w), w.tolist()
    if imbalance == "focal":
        return FocalLoss(weight=w, gamma=FOCAL_GAMMA), w.tolist()
    raise ValueError(f"unknown imbalance strategy {imbalance!r}; valid: {', '.join(IMBALANCE)}")


# ------------------------------------------------------------------------------------------------------------
# training and evaluation

class Precision:
    """Mixed precision: torch.autocast(device.type, dtype, enabled), a GradScaler only for float16."""

    def __init__(self, amp, device):
        self.device_type = device.type
        self.enabled = amp == "on" or (amp == "auto" and device.type == "cuda")
        bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else True  # the CPU autocasts to bf16
        self.dtype = torch.bfloat16 if bf16 else torch.float16

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self):
        return torch.amp.GradScaler(self.device_type, enabled=self.enabled and self.dtype == torch.float16)

    def describe(self):
        return f"autocast {str(self.dtype).removeprefix('torch.')}" if self.enabled else "off (float32)"


def model_input(x, device):
    """uint8 batch on the device -> float (B, 1, S, S) in [0, 1]; channels-last on CUDA (faster convs).
    Cached backbone features (float, features.FeatureBatches) are the head's input already: passed through."""
    if x.is_floating_point():
        return x
    x = data.to_model_input(x)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train_one_epoch(model, criterion, optimizer, scaler, batches, device, precision, desc):
    """One pass over `batches`; returns (mean loss, accuracy in percent) over the samples seen (by every
    rank under torchrun: the sums are all-reduced, the bar shows rank 0's share)."""
    model.train()  # frozen backbones stay in eval mode by themselves (models.FrozenBackbone)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(batches, desc=desc, unit="batch", leave=True, dynamic_ncols=True,
               disable=not distributed.is_main())
    for step, (x, y) in enumerate(bar):
        with precision.autocast():
            logits = model(model_input(x, device))  # (B, K)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if step % 10 == 0 or step == len(batches) - 1:  # .item() waits for the GPU: not at every step
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{100 * correct.item() / seen:.1f}")
    bar.close()
    seen = torch.tensor(seen, device=device)
    distributed.all_reduce_sum(loss_sum, correct, seen)
    seen = seen.item()
    return loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1)


@torch.inference_mode()
def evaluate(model, batches, device, precision):
    """Softmax probabilities (N, K) float32 numpy, in the order of `batches`."""
    model.eval()
    probs = []
    for x, _ in batches:
        with precision.autocast():
            logits = model(model_input(x, device))
        probs.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(probs).cpu().numpy()


# ------------------------------------------------------------------------------------------------------------
# data held for the whole grid

class SplitCache:
    """Each split read once per run and moved once to the training device. data.load_split decodes a split
    once per prepared set and size into <set>/.cache/ (every later cell and run reads it back); on_disk keeps
    it memory-mapped there rather than in RAM. `features`: the run's frozen-backbone features (features.py)."""

    def __init__(self, data_dir, img_size, device, num_workers, on_disk=False, feature_cache=None):
        self.data_dir, self.img_size = Path(data_dir), img_size
        self.device, self.num_workers, self.on_disk = device, num_workers, on_disk
        self.features = feature_cache or features.FeatureCache(device, None, 1, enabled=False)
        self._cache = {}

    def get(self, set_name, split):
        """(SplitArrays, images uint8 (N, S, S) on the device, labels int64 (N,) on the device)."""
        key = (set_name, split)
        if key not in self._cache:
            arrays = data.load_split(self.data_dir / set_name, split, self.img_size, self.num_workers,
                                     mmap=self.on_disk)
            print(f"{set_name}/{split}: {arrays.describe()}", flush=True)
            images, labels = torch.from_numpy(arrays.images), torch.from_numpy(arrays.labels)
            # pinned host memory: an asynchronous copy, once (not from the memory map: pinning would copy
            # the whole split into RAM, which --cache-on-disk is there to avoid)
            if self.device.type == "cuda" and not self.on_disk:
                images, labels = images.pin_memory(), labels.pin_memory()
            self._cache[key] = (arrays, images.to(self.device, non_blocking=True),
                                labels.to(self.device, non_blocking=True))
        return self._cache[key]


# ------------------------------------------------------------------------------------------------------------
# one cell

def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def cell_generators(seed):
    """Two independent CPU generators from the seed: data order (and sampler), augmentation."""
    order_seed, aug_seed = np.random.SeedSequence(seed).generate_state(2)
    return torch.Generator().manual_seed(int(order_seed)), torch.Generator().manual_seed(int(aug_seed))


def cell_name(cell):
    train_set, model_name, imbalance, seed = cell
    return f"{train_set}/{model_name}/{imbalance}/seed{seed}"


def cell_dir(output_dir, cell):
    return Path(output_dir) / "runs" / cell_name(cell)


def cell_args(args, cell, test_sets):
    """The args of one cell, JSON-safe: the grid's args with the four axes narrowed to this cell."""
    train_set, model_name, imbalance, seed = cell
    # a cell is the same in any shard: --shard is not one of its args
    out = {k: v for k, v in vars(args).items()
           if k not in ("force", "aggregate_only", "report", "exp_dir", "shard")}
    out.update(datasets=[train_set], models=[model_name], imbalance=[imbalance], seeds=[seed],
               test_sets=list(test_sets))
    return out


def cell_command(a):
    """The command line that reruns exactly this cell (with --force if it is already finished)."""
    parts = ["python", "test_models.py"]
    for key in ("data_dir", "output_dir", "datasets", "test_sets", "models", "imbalance", "seeds", "epochs",
                "batch_size", "lr", "img_size", "augment", "weights", "device", "num_workers", "amp"):
        value = a[key]
        value = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts += ["--" + key.replace("_", "-"), value]
    return shlex.join(parts)


def _write_csv(frame, path, float_format):
    frame.to_csv(path, index=False, float_format=float_format, lineterminator="\n")


def write_test_results(folder, title, test_set, classes, paths, true, probs):
    """predictions_<test_set>.csv, confusion_<test_set>.csv/.png in `folder`; returns the score row."""
    pred = probs.argmax(1)
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame({"path": paths, "true": names[true], "pred": names[pred]})
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, k]
    _write_csv(table, folder / f"predictions_{test_set}.csv", "%.6f")
    matrix = metrics.confusion(true, pred, classes)
    pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes).to_csv(
        folder / f"confusion_{test_set}.csv", lineterminator="\n")
    row = metrics.score_row(true, pred, classes)
    metrics.plot_confusion(matrix, classes, f"{title} on {test_set}: accuracy {row['accuracy']:.1f} %, "
                           f"macro F1 {row['f1_macro']:.1f} %",
                           folder / f"confusion_{test_set}.png")
    return row


def evaluate_sets(model, folder, title, test_sets, classes, cache, args, device, precision):
    """Evaluate on every test set, writing its files into `folder`: {name: {n, metrics}}.

    Under torchrun each rank evaluates its own chips (rank, rank + W, ...: every chip exactly once), rank 0
    gathers them back into the split's order and alone writes; every rank returns rank 0's results.
    """
    results = {}
    part, world = distributed.rank_slice(), distributed.world_size()
    for name in test_sets:
        arrays, images, labels = cache.get(name, "test")
        # frozen backbones: the head over this set's backbone features, computed once (features.py)
        net, batches = cache.features.wrap(model, data.Batches(images[part], labels[part],
                                                               args.batch_size // world), (name, "test"))
        probs = evaluate(net, batches, device, precision)
        probs = distributed.gather_rows(probs, len(labels))
        if distributed.is_main():
            row = write_test_results(folder, title, name, classes, arrays.paths, arrays.labels, probs)
            results[name] = {"n": row["n"], "metrics": row}
    return distributed.broadcast(results)


def run_cell(cell, args, test_sets, cache, manifests, device, precision, env):
    """Train one cell from scratch and write its record folder atomically; returns the record."""
    train_set, model_name, imbalance, seed = cell
    final = cell_dir(args.output_dir, cell)
    tag = temp_suffix()
    tmp = final.parent / f".{final.name}.tmp{tag}"
    rank, world = distributed.rank(), distributed.world_size()
    if rank == 0:  # under torchrun rank 0 alone writes
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        arrays, images, labels = cache.get(train_set, "train")
        classes = arrays.classes
        seed_everything(seed)  # right before the model is built: the cell depends on nothing that ran before
        model = build_model(model_name, len(classes), args.weights)
        init_sha1 = features.state_sha1(model)
        # channels-last on CUDA: the layout tensor cores want; on the CPU the default layout
        if device.type == "cuda":
            model = model.to(device, memory_format=torch.channels_last)
        else:
            model = model.to(device)
        # fused: one kernel over all parameters; on the CPU about 12x faster than the default for VGG's 117 M
        # weights (its Adam step otherwise costs as much as a forward pass at 48 px); same update rule
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, fused=True)
        scaler = precision.scaler()
        criterion, weights = make_criterion(imbalance, arrays.labels, len(classes))
        criterion = criterion.to(device)
        order_gen, aug_gen = cell_generators(seed)
        if rank:  # the same order on every rank, its own augmentation and dropout draws (distributed.py)
            aug_seed, torch_seed = distributed.rank_seeds(seed, rank)
            aug_gen = torch.Generator().manual_seed(aug_seed)
            torch.manual_seed(torch_seed)
        sample_weights = data.balanced_sample_weights(arrays.labels, len(classes)) if imbalance == "sampler" \
            else None
        batches = data.Batches(images, labels, args.batch_size, shuffle=True, generator=order_gen,
                               sample_weights=sample_weights, augment=args.augment, aug_generator=aug_gen,
                               rank=rank, world_size=world)
        if not len(batches):
            raise SystemExit(f"the {train_set} training split has {len(labels)} chips: too few for {world} "
                             "processes to get at least 2 each; start torchrun with fewer processes")
        history = []
        start = time.perf_counter()  # the training time includes computing cached backbone features
        # frozen backbones: the head trains on backbone features computed once per chip and view, replaying
        # the same draws (features.py); every other model trains whole
        net, batches = cache.features.wrap(model, batches, (train_set, "train"))
        net = distributed.wrap(net, device)  # `net` itself in one process, DDP under torchrun
        if args.compile:
            net = torch.compile(net)
        for epoch in range(1, args.epochs + 1):
            loss, acc = train_one_epoch(net, criterion, optimizer, scaler, batches, device, precision,
                                        f"{cell_name(cell)} epoch {epoch}/{args.epochs}")
            history.append({"epoch": epoch, "loss": round(loss, 6), "accuracy": round(acc, 2)})
        distributed.broadcast_buffers(model)  # every rank evaluates the model rank 0 saves (batch-norm stats)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - start

        a = cell_args(args, cell, test_sets)
        if rank == 0:  # `model` is the module inside DDP: its state_dict has no "module." prefix
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": args.epochs, "args": a, "classes": classes, "model_name": model_name,
                        "img_size": args.img_size}, tmp / "checkpoint.pt")
        start = time.perf_counter()
        results = evaluate_sets(model, tmp, cell_name(cell), test_sets, classes, cache, args, device,
                                precision)
        eval_seconds = time.perf_counter() - start
        record = {
            "train_set": train_set, "model": model_name, "imbalance": imbalance, "seed": seed,
            "classes": classes, "args": a, "command": cell_command(a), "history": history,
            "train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
            **env, "amp": precision.describe(), "init_sha1": init_sha1,
            "n_train": len(arrays.labels),
            "train_counts": {c: int((arrays.labels == k).sum()) for k, c in enumerate(classes)},
            "class_weights": weights, "focal_gamma": FOCAL_GAMMA if imbalance == "focal" else None,
            "manifests": {s: manifests[s] for s in dict.fromkeys([train_set, *test_sets])},
            "feature_cache": cache.features.info.get((train_set, "train"))
            if cache.features.applies(model, args.augment) else None,
            "test_sets": results, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if rank == 0:
            (tmp / "record.json").write_text(json.dumps(record, indent=1) + "\n")
            publish(tmp, final, tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def publish(tmp, final, tag):
    """Rename the finished temporary folder into place; an older record (--force) is moved aside first, so at
    every instant the cell folder is either the old complete record, absent, or the new complete record."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old{tag}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def complete_record(folder, cell, record, missing, cache, manifests, args, device, precision):
    """Evaluate a finished cell's checkpoint on test sets its record lacks (or whose set was prepared again).

    The new files are written in a hidden folder, moved in one by one (os.replace), and record.json is
    replaced last: an interruption leaves the old record valid, and it lists only test sets whose files are
    complete. Under torchrun every rank evaluates its share (evaluate_sets) and rank 0 alone writes.
    """
    model, _ = load_trained(folder / "checkpoint.pt", map_location=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    tmp = folder / f".complete{temp_suffix()}"
    main = distributed.is_main()
    if main:
        tmp.mkdir()
    try:
        start = time.perf_counter()
        results = evaluate_sets(model, tmp, cell_name(cell), missing, record["classes"], cache, args, device,
                                precision)
        record["eval_seconds"] = round(record["eval_seconds"] + time.perf_counter() - start, 3)
        for path in tmp.iterdir() if main else ():
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["test_sets"].update(results)
    record["manifests"].update({s: manifests[s] for s in missing})
    if main:
        write_atomic(folder / "record.json", lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))


def check_finished(record, args, cell, manifests):
    """Stop if a finished cell was trained with other settings or on another version of its training set."""
    differ = [f"{k}={record['args'].get(k)!r} (now {getattr(args, k)!r})" for k in TRAIN_SETTINGS
              if record["args"].get(k) != getattr(args, k)]
    train_set = cell[0]
    if record.get("manifests", {}).get(train_set) != manifests[train_set]:
        differ.append(f"the {train_set} set was prepared again since (its manifest.csv changed)")
    if differ:
        raise SystemExit(f"runs/{cell_name(cell)} is finished but was trained with {'; '.join(differ)}: "
                         "rerun with --force to retrain it, or choose another --output-dir")


def temp_suffix():
    return f"-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def clean_stale(output_dir):
    """Remove the temporary folders and files left by killed runs on this host (their process is gone)."""
    removed = []
    out, runs = Path(output_dir), Path(output_dir, "runs")
    candidates = [*runs.glob("*/*/*/.seed*"), *runs.glob("*/*/*/seed*/.*"), *out.glob(".*.tmp-*"),
                  *out.glob("figures/.*.tmp-*")]
    for path in candidates:
        m = TEMP_SUFFIX.search(path.name)
        if m is None or m["host"] != socket.gethostname():
            continue  # another machine's run (shared file system) may still be working on it
        pid = int(m["pid"])
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:  # exists, owned by someone else
            alive = True
        if not alive:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        print(f"removed {len(removed)} temporary file(s)/folder(s) left by interrupted runs "
              "(their cells will be redone)")
    return removed


# ------------------------------------------------------------------------------------------------------------
# tables and figures from the records

def _order(values, preferred):
    values = list(dict.fromkeys(values))
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def _rank(value, preferred):
    return (preferred.index(value), "") if value in preferred else (len(preferred), str(value))


def _sort_key(record):
    return (_rank(record["train_set"], DEFAULT_SETS), _rank(record["model"], MODEL_NAMES),
            _rank(record["imbalance"], IMBALANCE), record["seed"])


def find_records(output_dir):
    """Finished cells under <output_dir>/runs: [(folder, record)] in grid order."""
    found = []
    for path in Path(output_dir, "runs").glob("*/*/*/seed*/record.json"):
        if SEED_DIR.match(path.parent.name):
            found.append((path.parent, json.loads(path.read_text())))
    return sorted(found, key=lambda item: _sort_key(item[1]))


def write_atomic(path, write):
    """write(temporary path) then os.replace: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{temp_suffix()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def aggregate(output_dir, data_dir, exp_dir):
    """Rebuild scores.csv, predictions.csv, results.txt, figures/ and report.md from every record found."""
    output_dir = Path(output_dir)
    records = find_records(output_dir)
    if not records:
        raise SystemExit(f"no finished cells under {output_dir / 'runs'} "
                         "(runs/<train_set>/<model>/<imbalance>/seed<k>/record.json): "
                         "run python test_models.py first")
    keys = ("train_set", "test_set", "model", "imbalance", "seed")
    classes = _order([c for _, r in records for c in r["classes"]], [])
    scores, predictions = [], []
    test_order = _order([t for _, r in records for t in r["test_sets"]], DEFAULT_SETS)
    for folder, rec in records:
        for test_set in sorted(rec["test_sets"], key=test_order.index):
            pred = pd.read_csv(folder / f"predictions_{test_set}.csv", keep_default_na=False,
                               dtype={"path": str, "true": str, "pred": str})
            cell = {"train_set": rec["train_set"], "test_set": test_set, "model": rec["model"],
                    "imbalance": rec["imbalance"], "seed": rec["seed"]}
            scores.append({**cell, **metrics.score_row(pred["true"], pred["pred"], rec["classes"])})
            predictions.append(pd.concat([pd.DataFrame(cell, index=pred.index), pred], axis=1))
    scores = pd.DataFrame(scores).reindex(columns=list(keys) + metrics.score_columns(classes))
    for c in classes:  # counts stay integers even where a record lacks a class
        scores[f"{c}_support"] = scores[f"{c}_support"].astype("Int64")
    predictions = pd.concat(predictions, ignore_index=True).reindex(
        columns=list(keys) + ["path", "true", "pred"] + [f"prob_{c}" for c in classes])
    write_atomic(output_dir / "scores.csv", lambda p: _write_csv(scores, p, "%.2f"))
    write_atomic(output_dir / "predictions.csv", lambda p: _write_csv(predictions, p, "%.6f"))
    text = results_text(records, scores, output_dir)
    write_atomic(output_dir / "results.txt", lambda p: p.write_text(text))
    figures = plot_figures(scores, classes, output_dir / "figures")
    print(f"tables: {output_dir / 'scores.csv'} ({len(scores)} rows), {output_dir / 'predictions.csv'} "
          f"({len(predictions)} rows), {output_dir / 'results.txt'}; figures: "
          f"{', '.join(str(f) for f in figures)}")
    print(f"report: {report.build_report(output_dir, data_dir, exp_dir)}")
    return scores


def results_text(records, scores, output_dir):
    """The human-readable log, rebuilt from the records."""
    def distinct(f):
        return ", ".join(map(str, dict.fromkeys(f(r) for _, r in records)))

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"Experiment grid: {len(records)} finished cells under {Path(output_dir) / 'runs'}, "
             + f"tables rebuilt {now}",
             f"training sets: {distinct(lambda r: r['train_set'])}; "
             + f"models: {distinct(lambda r: r['model'])}; "
             + f"imbalance: {distinct(lambda r: r['imbalance'])}; seeds: {distinct(lambda r: r['seed'])}",
             "settings: " + "; ".join(f"{k}={distinct(lambda r, k=k: r['args'].get(k))}"
                                      for k in TRAIN_SETTINGS),
             f"devices: {distinct(lambda r: r.get('device'))}; "
             + f"mixed precision: {distinct(lambda r: r.get('amp'))}",
             "Metrics in percent (scikit-learn, from the per-chip predictions); confusion rows are the true "
             + "classes, columns the predicted ones.", ""]
    for folder, rec in records:
        a = rec["args"]
        lines += [f"== train {rec['train_set']} | model {rec['model']} | imbalance {rec['imbalance']} | "
                  + f"seed {rec['seed']} ==",
                  "configuration: " + " ".join(f"{k}={a.get(k)}" for k in TRAIN_SETTINGS)
                  + f" device={rec.get('device')} amp={rec.get('amp')}",
                  f"training chips: {rec.get('n_train')} ("
                  + ", ".join(f"{c} {n}" for c, n in rec.get("train_counts", {}).items()) + ")"
                  + (f"; class weights {[round(w, 3) for w in rec['class_weights']]}"
                     if rec.get("class_weights") else ""),
                  f"reproduce: {rec.get('command', '')}"]
        for h in rec["history"]:
            lines.append(f"epoch {h['epoch']:>3}/{a.get('epochs')}  loss {h['loss']:.4f}  "
                         f"accuracy {h['accuracy']:.2f}")
        lines.append(f"training {rec['train_seconds']:.1f} s, evaluation {rec['eval_seconds']:.1f} s, "
                     f"finished {rec['finished']}")
        for test_set in rec["test_sets"]:
            row = scores[(scores.train_set == rec["train_set"]) & (scores.test_set == test_set)
                         & (scores.model == rec["model"]) & (scores.imbalance == rec["imbalance"])
                         & (scores.seed == rec["seed"])].iloc[0]
            lines.append(f"-- test {test_set} (n={row['n']}): accuracy {row['accuracy']:.2f}, balanced "
                         f"accuracy {row['balanced_accuracy']:.2f}, F1 weighted {row['f1_weighted']:.2f}, "
                         f"F1 macro {row['f1_macro']:.2f}")
            width = max(len(c) for c in rec["classes"]) + 2
            lines.append("   " + "class".ljust(width) + "precision   recall       F1  support")
            for c in rec["classes"]:
                lines.append("   " + c.ljust(width) + f"{row[f'{c}_precision']:9.2f} "
                             f"{row[f'{c}_recall']:8.2f} {row[f'{c}_f1']:8.2f} {row[f'{c}_support']:8d}")
            matrix = pd.read_csv(folder / f"confusion_{test_set}.csv", index_col=0)
            lines.append("   confusion (rows true, columns predicted):")
            lines += ["   " + line for line in matrix.to_string().splitlines()]
        lines.append("")
    return "\n".join(lines)


def _save_figure(fig, path):
    write_atomic(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def _layout(fig, left, right, bottom, top, wspace=0.35, hspace=0.6):
    """Margins in inches (fixed: constrained layout would cost a second render of every figure)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace,
                        hspace=hspace)


def plot_cross_dataset(mean, models, train_sets, test_sets, note, path):
    """Macro-F1 heat map, training set (rows) x test set (columns), one panel per model."""
    label = max(len(s) for s in train_sets + test_sets)
    side = 0.75  # inches per matrix cell
    margin_l, margin_b = 0.45 + 0.07 * label, 0.45 + 0.06 * label
    fig, axes = plt.subplots(1, len(models), squeeze=False,
                             figsize=(margin_l + len(models) * (side * len(test_sets) + 0.35) + 1.0,
                                      margin_b + side * len(train_sets) + 0.75))
    _layout(fig, margin_l, 1.0, margin_b, 0.75, wspace=0.12)
    for ax, model_name in zip(axes[0], models):
        values = np.full((len(train_sets), len(test_sets)), np.nan)
        for i, tr in enumerate(train_sets):
            for j, te in enumerate(test_sets):
                if (model_name, tr, te) in mean.index:
                    values[i, j] = mean.loc[(model_name, tr, te), "f1_macro"]
        mesh = ax.pcolormesh(np.ma.masked_invalid(values), vmin=0, vmax=100, cmap="viridis")
        for i in range(len(train_sets)):
            for j in range(len(test_sets)):
                v = values[i, j]
                ax.text(j + 0.5, i + 0.5, "-" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                        fontsize=8, color="black" if not np.isnan(v) and v > 60 else "white")
        ax.set_facecolor("0.3")  # cells with no result
        ax.set_xlim(0, len(test_sets))
        ax.set_ylim(len(train_sets), 0)
        ax.set_aspect("equal")
        ax.set_xticks(np.arange(len(test_sets)) + 0.5, test_sets, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(train_sets)) + 0.5, train_sets if ax is axes[0][0] else [], fontsize=8)
        ax.set_xlabel("test set", fontsize=8)
        ax.set_title(model_name, fontsize=9)
    axes[0][0].set_ylabel("training set", fontsize=8)
    w, h = fig.get_size_inches()
    cax = fig.add_axes((1 - 0.8 / w, margin_b / h, 0.15 / w, side * len(train_sets) / h))
    fig.colorbar(mesh, cax=cax).set_label("macro F1 (%)", fontsize=8)
    cax.tick_params(labelsize=7)
    fig.suptitle(f"Macro F1, training set x test set ({note})", fontsize=9)
    _save_figure(fig, path)


def plot_per_class(mean, models, train_sets, test_sets, classes, note, path):
    """Per-class F1 bars, a panel per (training set, test set), a bar per model."""
    panel_w = 0.3 + 0.22 * len(classes) * len(models)
    fig, axes = plt.subplots(len(train_sets), len(test_sets), squeeze=False, sharey=True,
                             figsize=(0.7 + len(test_sets) * (panel_w + 0.3),
                                      0.45 + len(train_sets) * 1.9 + 0.5))
    _layout(fig, 0.7, 0.15, 0.75, 0.5)
    width = 0.8 / len(models)
    for i, tr in enumerate(train_sets):
        for j, te in enumerate(test_sets):
            ax = axes[i][j]
            for k, model_name in enumerate(models):
                if (model_name, tr, te) in mean.index:
                    values = [mean.loc[(model_name, tr, te)].get(f"{c}_f1", np.nan) for c in classes]
                    ax.bar(np.arange(len(classes)) + (k - (len(models) - 1) / 2) * width, values, width,
                           color=f"C{k}")
            ax.set_xticks(range(len(classes)), classes, fontsize=7)
            ax.set_ylim(0, 100)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"train {tr} / test {te}", fontsize=8)
            if j == 0:
                ax.set_ylabel("F1 (%)", fontsize=8)
    handles = [matplotlib.patches.Patch(color=f"C{k}", label=m) for k, m in enumerate(models)]
    fig.legend(handles=handles, loc="lower center", ncols=len(models), fontsize=8, frameon=False)
    fig.suptitle(f"Per-class F1 ({note})", fontsize=9)
    _save_figure(fig, path)


def plot_figures(scores, classes, figure_dir):
    """Per imbalance strategy, mean over seeds: figures/cross_dataset_f1_macro_<imbalance>.png and
    figures/per_class_f1_<imbalance>.png. Returns the paths written."""
    figure_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for imbalance in _order(scores["imbalance"], IMBALANCE):
        sub = scores[scores.imbalance == imbalance]
        models = _order(sub["model"], MODEL_NAMES)
        train_sets = _order(sub["train_set"], DEFAULT_SETS)
        test_sets = _order(sub["test_set"], DEFAULT_SETS)
        mean = sub.groupby(["model", "train_set", "test_set"]).mean(numeric_only=True)
        seeds = sub.groupby(["model", "train_set", "test_set"])["seed"].nunique()
        n_seeds = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
        note = f"imbalance: {imbalance}; mean over {n_seeds} seed(s)"
        path = figure_dir / f"cross_dataset_f1_macro_{imbalance}.png"
        plot_cross_dataset(mean, models, train_sets, test_sets, note, path)
        written.append(path)
        path = figure_dir / f"per_class_f1_{imbalance}.png"
        plot_per_class(mean, models, train_sets, test_sets, classes, note, path)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------------------
# main

def prepared_sets(data_dir):
    """Names of the prepared sets under data_dir (folders with a manifest.csv), in the study's order."""
    found = [p.parent.name for p in Path(data_dir).glob("*/manifest.csv")]
    return _order(found, DEFAULT_SETS)


def resolve_sets(requested, default, available, data_dir, what):
    """The sets to use: a missing set named explicitly is an error, missing defaults are skipped (a line)."""
    names = requested if requested is not None else list(default)
    missing = [s for s in names if s not in available]
    hint = "run python dataset_prep.py first (or python dataset_prep.py --synthetic for the synthetic demo)"
    if missing and requested is not None:
        raise SystemExit(f"{what} {', '.join(missing)} not prepared under {data_dir} "
                         f"(no <set>/manifest.csv): {hint}")
    if missing:
        print(f"skipping {what} not prepared under {data_dir}: {', '.join(missing)} ({hint} to add them)")
    present = [s for s in names if s in available]
    if not present:
        raise SystemExit(f"none of the {what} {', '.join(names)} is prepared under {data_dir}: {hint}")
    return present


def resolve_device(name):
    if name not in DEVICE_CHOICES:
        raise SystemExit(f"unknown --device {name!r}; valid: {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available here "
                         "(torch.cuda.is_available() is False: no GPU, or a CPU-only torch): "
                         "use --device cpu or --device auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def environment(device):
    name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    return {"device": name, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "processes": distributed.world_size()}  # > 1: trained by that many DDP processes (torchrun)


def main(args):
    output_dir = Path(args.output_dir)
    if distributed.env_rank() != 0 and (args.report or args.aggregate_only):
        return None  # under torchrun rank 0 alone rebuilds the tables
    if distributed.env_rank() == 0:
        clean_stale(output_dir)
    if args.report:
        return report.build_report(output_dir, args.data_dir, args.exp_dir)
    if args.aggregate_only:
        return aggregate(output_dir, args.data_dir, args.exp_dir)

    for flag, least in (("epochs", 1), ("batch_size", 2), ("img_size", 1), ("num_workers", 0)):
        if getattr(args, flag) < least:
            raise SystemExit(f"--{flag.replace('_', '-')} must be at least {least}, "
                             f"got {getattr(args, flag)}")
    device = distributed.setup(resolve_device(args.device))  # under torchrun: joins the process group
    distributed.local_batch(args.batch_size, distributed.world_size())  # --batch-size is the global batch
    precision = Precision(args.amp, device)
    data_dir = Path(args.data_dir)
    available = prepared_sets(data_dir)
    if not available:
        raise SystemExit(f"nothing is prepared under {data_dir} (no <set>/manifest.csv): run python "
                         "dataset_prep.py (or python dataset_prep.py --synthetic for the synthetic demo), or "
                         "point --data-dir at the prepared sets")
    train_sets = resolve_sets(args.datasets, DEFAULT_SETS, available, data_dir, "training sets")
    test_sets = resolve_sets(args.test_sets, available, available, data_dir, "test sets")
    classes = {s: data.set_classes(data_dir / s) for s in dict.fromkeys(train_sets + test_sets)}
    mismatched = [f"test set {te} has classes {classes[te]} but training set {tr} has {classes[tr]}"
                  for tr in train_sets for te in test_sets if classes[te] != classes[tr]]
    if mismatched:
        raise SystemExit("; ".join(mismatched) + ": prepare every set with the same classes "
                         "(dataset_prep.py), or leave the odd set out with --datasets / --test-sets")
    manifests = {s: data.manifest_sha1(data_dir / s) for s in classes}

    grid = list(itertools.product(train_sets, args.models, args.imbalance, args.seeds))
    cells = distributed.shard_cells(grid, args.shard)
    shard = f" (shard {args.shard[0]}/{args.shard[1]}: {len(cells)} of them)" if args.shard else ""
    if not cells:
        print(f"shard {args.shard[0]}/{args.shard[1]} has no cells: the grid has {len(grid)}, fewer than "
              f"{args.shard[1]} shards; nothing to do")
        return None
    finished = {} if args.force else {c: json.loads((cell_dir(output_dir, c) / "record.json").read_text())
                                      for c in cells if (cell_dir(output_dir, c) / "record.json").is_file()}
    finished = distributed.broadcast(finished)  # under torchrun every rank follows rank 0's view
    for cell, record in finished.items():  # before anything trains: fail fast
        check_finished(record, args, cell, manifests)
    todo = len(cells) - len(finished)
    print(f"grid: {len(train_sets)} training set(s) x {len(args.models)} model(s) x {len(args.imbalance)} "
          f"imbalance strateg{'y' if len(args.imbalance) == 1 else 'ies'} x {len(args.seeds)} seed(s) = "
          f"{len(grid)} cells{shard}, {todo} to train; tested on {', '.join(test_sets)}")
    print(f"settings: epochs={args.epochs} batch_size={args.batch_size} Adam lr={args.lr} "
          f"img_size={args.img_size} augment={args.augment} weights={args.weights}; device {device}, "
          f"mixed precision {precision.describe()}; output {output_dir}"
          + (f"; {distributed.world_size()} processes (DDP)" if distributed.world_size() > 1 else ""))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    feature_cache = features.FeatureCache(device, precision, args.batch_size, enabled=not args.no_feature_cache)
    cache = SplitCache(data_dir, args.img_size, device, args.num_workers, on_disk=args.cache_on_disk,
                       feature_cache=feature_cache)
    env = environment(device)
    durations = []
    for index, cell in enumerate(cells, 1):
        folder = cell_dir(output_dir, cell)
        if cell in finished:
            record = finished[cell]
            missing = [t for t in test_sets if t not in record["test_sets"]
                       or record.get("manifests", {}).get(t) != manifests[t]]
            if missing:
                complete_record(folder, cell, record, missing, cache, manifests, args, device, precision)
            print(f"[{index}/{len(cells)}] {cell_name(cell)}: finished earlier, skipped (--force retrains it)"
                  + (f"; evaluated on {', '.join(missing)}" if missing else ""), flush=True)
            continue
        start = time.perf_counter()
        try:
            record = run_cell(cell, args, test_sets, cache, manifests, device, precision, env)
        except WeightsUnavailableError as e:
            raise SystemExit(str(e)) from None
        durations.append(time.perf_counter() - start)
        left = todo - len(durations)
        eta = f"about {_duration(np.mean(durations) * left)} left" if left else "grid trained"
        last = record["history"][-1]
        tests = ", ".join(f"{t} {r['metrics']['accuracy']:.1f}/{r['metrics']['f1_macro']:.1f}"
                          for t, r in record["test_sets"].items())
        print(f"[{index}/{len(cells)}] {cell_name(cell)}: {args.epochs} epoch(s) in "
              f"{record['train_seconds']:.1f} s, loss {last['loss']:.3f}, train acc {last['accuracy']:.1f}; "
              f"test acc/macro-F1 {tests} | {len(durations)}/{todo} trained, {eta}", flush=True)
    # with --shard: the tables of the records found so far; the final ones come from --aggregate-only
    return aggregate(output_dir, args.data_dir, args.exp_dir) if distributed.is_main() else None


def _duration(seconds):
    seconds = round(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args(sys.argv[1:]))
    finally:
        distributed.teardown()
