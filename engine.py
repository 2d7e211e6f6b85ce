"""The training engine the grid, the benchmark and the explanations share: one code path for CPU and CUDA.

    from engine import Precision, make_criterion, train_one_epoch, evaluate, resolve_device
    device = resolve_device("auto")                      # torch.device; cuda without CUDA is an error
    precision = Precision("auto", device)                # autocast (bf16, else fp16 + GradScaler) or off
    criterion, weights = make_criterion("weighted", train_labels, num_classes)
    loss, acc = train_one_epoch(model, criterion, optimizer, precision.scaler(), batches, device, precision, "")
    probs = evaluate(model, test_batches, device, precision)       # (N, K) float32 softmax, in batch order

Imbalance strategies (IMBALANCE): none; weighted (cross-entropy weighted by inverse class frequency of the
training split, w_c = N / (K n_c): the weights average to 1 over the training samples, every class carries the
same total weight); sampler (each epoch draws N training chips with replacement, every class equally likely:
data.balanced_sample_weights; the loss is plain); focal (focal loss, gamma 2, with the same class weights as
alpha). Seeding: seed_everything right before a model is built, cell_generators for the data order and the
augmentation, so a cell depends only on its seed; generator_states / set_generator_states save and restore all of
them between epochs (resume.py: a killed cell resumes exactly).
"""

import os
import platform
import random
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import distributed
import metrics
from cli import DEVICE_CHOICES

IMBALANCE = ("none", "weighted", "sampler", "focal")
FOCAL_GAMMA = 2.0  # Lin et al. 2017, the value their experiments settle on
AMP_CHOICES = ("auto", "on", "off")
SELECT = ("last", "best")
TRAIN_EVAL_CHIPS = 512  # the fixed subset of the training split measured in eval mode after every epoch


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


def make_optimizer(model, lr):
    """Adam over the parameters that train. fused: one kernel over all of them; on the CPU about 12x faster
    than the default for VGG's 117 M weights (its step otherwise costs as much as a forward pass at 48 px);
    the same update rule."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True)


def model_input(x, device):
    """uint8 batch (B, S, S) or (B, 1, S, S) on the device -> float32 (B, 1, S, S) in [0, 1]: what every model
    takes; channels-last on CUDA (faster convs).
    Cached backbone features (float, features.FeatureBatches) are the head's input already: passed through.
    The one conversion from stored chips to model input: training, evaluation, the feature cache, Grad-CAM."""
    if x.is_floating_point():
        return x
    x = (x.unsqueeze(1) if x.dim() == 3 else x).float().div_(255.0)  # (B, 1, S, S) in [0, 1]
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
# batch-norm statistics that belong to the weights

def bn_layers(module, trainable_only=True):
    """The batch-norm layers of `module` that keep running statistics; with trainable_only, those whose weights
    train (a frozen backbone's statistics are part of its frozen weights and stay as they are)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and (not trainable_only or any(p.requires_grad for p in m.parameters()))]


@torch.no_grad()
def recalibrate_bn(module, layers, batches, device, precision):
    """Precise batch-norm statistics (fvcore's and detectron2's "precise BN"): the running mean and variance of
    every layer in `layers` recomputed with the current weights as a cumulative average over `batches` (torch's
    momentum=None definition: the mean of the per-batch means and of the unbiased per-batch variances).

    Only those layers run in train mode (dropout stays off); nothing else changes and nothing random is drawn, so
    the training that follows is the same with or without this. The running statistics that training leaves
    (an exponential average, momentum 0.1, over the last steps of weights that kept moving) do not belong to the
    final weights: with them a model can predict one class for every chip in eval mode. `batches`: the training
    split in a fixed order, no augmentation (data.Batches(..., shuffle=False)). Under torchrun each rank passes its
    own share and the statistics are averaged over the ranks, so every rank evaluates the same model.
    """
    if not layers:
        return
    was_training = module.training
    momenta = [m.momentum for m in layers]
    module.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x, _ in batches:
            with precision.autocast():
                module(model_input(x, device))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
            m.eval()
        module.train(was_training)
    distributed.average_buffers([b for m in layers for b in (m.running_mean, m.running_var)])


# ------------------------------------------------------------------------------------------------------------
# validation and the epoch a cell keeps

def split_scores(probs, labels, classes):
    """Macro-F1, balanced accuracy (percent) and the mean cross-entropy of predictions on a labelled split."""
    labels = np.asarray(labels)
    with warnings.catch_warnings():  # a class without chips in a small split: said once, at preparation
        warnings.simplefilter("ignore", UserWarning)
        row = metrics.score_row(labels, probs.argmax(1), classes)
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
    return {"f1_macro": row["f1_macro"], "balanced_accuracy": row["balanced_accuracy"], "loss": round(float(loss), 6)}


class Selection:
    """Which epoch's weights a cell keeps. `last`: the last epoch's. `best`: the epoch with the highest
    validation macro-F1 (ties: the earlier epoch), its weights (and recalibrated statistics) copied when it
    comes; with `patience` N, training stops after N epochs without improvement."""

    def __init__(self, mode, patience=None):
        if mode not in SELECT:
            raise ValueError(f"unknown selection {mode!r}; valid: {', '.join(SELECT)}")
        self.mode, self.patience = mode, patience
        self.epoch, self.score, self.state, self.stopped_early = None, None, None, False

    def update(self, epoch, model, score):
        """Note the epoch's validation score; returns True when training should stop (patience)."""
        if self.mode == "last":
            self.epoch, self.score = epoch, score
            return False
        if self.score is None or score > self.score:
            self.epoch, self.score = epoch, score
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.stopped_early = self.patience is not None and epoch - self.epoch >= self.patience
        return self.stopped_early

    def restore(self, model):
        """Load the kept epoch's weights into `model` (nothing to do for `last`)."""
        if self.state is not None:
            model.load_state_dict(self.state)

    def describe(self):
        return {"select": self.mode, "epoch": self.epoch, "val_f1_macro": self.score, "patience": self.patience,
                "stopped_early": self.stopped_early}

    def state_dict(self):
        """What an epoch checkpoint keeps of the selection (resume.py); mode and patience come from the args."""
        return {"epoch": self.epoch, "score": self.score, "state": self.state, "stopped_early": self.stopped_early}

    def load_state_dict(self, state):
        self.epoch, self.score, self.state = state["epoch"], state["score"], state["state"]
        self.stopped_early = state["stopped_early"]


# ------------------------------------------------------------------------------------------------------------
# seeds and devices

def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def cell_generators(seed):
    """Two independent CPU generators from the seed: data order (and sampler), augmentation."""
    order_seed, aug_seed = np.random.SeedSequence(seed).generate_state(2)
    return torch.Generator().manual_seed(int(order_seed)), torch.Generator().manual_seed(int(aug_seed))


def generator_states(generators, device):
    """The state of every random generator a cell draws from: torch's global one (dropout; CUDA's too on a GPU),
    NumPy's and Python's global ones (seeded by seed_everything), and `generators` ({name: torch.Generator or
    None}: the data order and the augmentation). Tensors, numbers and strings only: torch.load(weights_only=True)
    reads them back."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # ("MT19937", 624 uint32 words, ...)
    version, internal, gauss_next = random.getstate()  # (3, 625 ints below 2**32, None or a float)
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)},
              "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                         "gauss_next": gauss_next},
              "generators": {name: g.get_state() for name, g in generators.items() if g is not None}}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_generator_states(states, generators, device):
    """Put back what generator_states saved: every later draw is the one the saved run would have made."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    for name, g in generators.items():
        if g is not None:
            g.set_state(states["generators"][name])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def resolve_device(name):
    """--device (auto, cpu, cuda) -> torch.device; cuda without CUDA is an error naming the fix."""
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
    """What a record says about where it was trained."""
    name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    return {"device": name, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "processes": distributed.world_size()}  # > 1: trained by that many DDP processes (torchrun)

