"""Label-free adaptation at test time, for a model evaluated on another dataset than it was trained on.

    from adaptation import ADAPTATIONS, applies, train_prior, em_prior, adabn
    if applies("fusar", "opensarship"):                               # True only across the two datasets
        adapted, n_layers = adabn(model, test_batches, device, precision)     # n_layers 0: no batch norm (VGG)
        probs_adabn = engine.evaluate(adapted, test_batches, device, precision)
        source = train_prior(train_labels, num_classes, imbalance)    # (K,) the prior the model learned under
        probs_prior, target, iterations = em_prior(probs, source)     # probs: the unadapted model's (N, K)

Variants (ADAPTATIONS), each an evaluation of the same trained model on the same target test split:
- none: the model as trained.
- adabn: AdaBN (Li, Wang, Shi, Liu & Hou, "Revisiting batch normalization for practical domain adaptation",
  arXiv:1603.04779, 2016; Pattern Recognition 80, 2018). Every batch-norm layer's running mean and variance are
  re-estimated on the target test images (engine.recalibrate_bn: a cumulative average over the batches, the same
  "precise BN" the grid applies to the training split), the weights stay as trained. Every layer means frozen
  backbones' too (fine_resnet): their ImageNet statistics are as foreign to the target sensor as trained ones.
  The statistics are a mean of per-batch means and unbiased per-batch variances, so they depend on the batch
  size (pass the batches the evaluation uses) and, within rounding, not on the order. VGG16 (vgg, fine_vgg,
  fine_vgg_gap) has no batch norm: adabn returns it unchanged with n_layers 0, and the caller says so.
- prior: the EM procedure of Saerens, Latinne & Decaestecker ("Adjusting the outputs of a classifier to new a
  priori probabilities: a simple procedure", Neural Computation 14(1), 21-41, 2002). Under label shift (the
  class-conditional image distributions unchanged, only the class frequencies differ) the target posteriors are
  the model's posteriors reweighted by target prior / training prior and renormalised; the target prior is the
  mean of those adjusted posteriors over the test split. EM alternates the two from the training prior to a fixed
  point, which is the maximum-likelihood target prior. The training prior is the one the model learned under
  (train_prior): the training split's class frequencies for plain cross-entropy (`none`), uniform over the
  trained classes where the loss or the sampler balanced them (`weighted`, `sampler`, and `focal`, whose alpha
  is the same inverse-frequency class weights as `weighted`: engine.make_criterion).

Neither variant reads a target label: adabn drops the labels from the batches before the model sees them, and
em_prior takes probabilities alone. Both are deterministic, and `prior` is a pure function of the unadapted
model's saved probabilities and the training labels, so it is recomputable from the saved predictions.

What they can and cannot fix: adabn aligns the first two moments of each feature channel across sensors; prior
corrects only a change of class frequencies. Between FUSAR-Ship and OpenSARShip the images of one class also
differ (resolution, radiometry), which neither assumes away; that is what the cross-sensor rows measure.

Where they apply (applies): only from one dataset to the other, FUSAR-Ship <-> OpenSARShip. Never to `mixed`,
whose test split holds chips of the training distribution itself, nor to a model tested on its own dataset.
"""

import copy

import numpy as np

import engine

ADAPTATIONS = ("none", "adabn", "prior")
CROSS_DATASETS = ("fusar", "opensarship")
# Strategies that train as if the classes were balanced: the weighted losses (weighted; focal, whose alpha is the
# same w_c = N / (K n_c), so each class carries the same total weight) and the class-balanced sampler.
BALANCED_IMBALANCE = ("weighted", "sampler", "focal")


def applies(train_set, test_set):
    """True when a model trained on `train_set` and tested on `test_set` gets the adapted rows: only across the
    two datasets (fusar -> opensarship, opensarship -> fusar), never for `mixed` or within one dataset."""
    return train_set in CROSS_DATASETS and test_set in CROSS_DATASETS and train_set != test_set


def train_prior(labels, num_classes, imbalance):
    """(K,) float64: the class prior the model was trained under. `none`: the training split's class frequencies;
    `weighted`, `sampler`, `focal`: uniform over the classes present in the training split (BALANCED_IMBALANCE).
    A class without training chips gets 0 either way (no loss term or draw ever saw it)."""
    if imbalance not in engine.IMBALANCE:
        raise ValueError(f"unknown imbalance strategy {imbalance!r}; valid: {', '.join(engine.IMBALANCE)}")
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("train_prior needs the training split's labels; got none")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if len(counts) != num_classes:
        raise ValueError(f"labels go up to {len(counts) - 1} but there are {num_classes} classes")
    if imbalance in BALANCED_IMBALANCE:
        counts = (counts > 0).astype(np.float64)
    return counts / counts.sum()


def adjust_posteriors(probs, source_prior, target_prior):
    """Posteriors under `source_prior` -> posteriors under `target_prior` (Saerens et al. 2002, eq. 2.4):
    p_t(k|x) = (t_k / s_k) p_s(k|x) / sum_j (t_j / s_j) p_s(j|x). Float64 (N, K), rows summing to 1.

    A class with source prior 0 gets ratio 0 (the model never learned it: its output carries no evidence). A row
    whose reweighted mass is 0 (the model put all of it on such classes, or on classes whose target prior is 0)
    carries no evidence either, so it becomes the target prior itself."""
    probs = np.asarray(probs, dtype=np.float64)
    source, target = np.asarray(source_prior, np.float64), np.asarray(target_prior, np.float64)
    ratio = np.divide(target, source, out=np.zeros_like(target), where=source > 0)
    weighted = probs * ratio  # (N, K)
    mass = weighted.sum(1, keepdims=True)  # (N, 1)
    empty = mass[:, 0] <= 0
    out = np.divide(weighted, mass, out=np.zeros_like(weighted), where=mass > 0)
    out[empty] = target / target.sum()
    return out


def _check_probs(probs, prior):
    probs = np.asarray(probs, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be (N, K) with N >= 1, got shape {probs.shape}")
    if prior.shape != (probs.shape[1],):
        raise ValueError(f"train_prior has shape {prior.shape}, the probabilities have {probs.shape[1]} classes")
    if not (np.isfinite(probs).all() and (probs >= 0).all()):
        raise ValueError("probs must be finite and non-negative (softmax outputs)")
    if not (np.isfinite(prior).all() and (prior >= 0).all() and prior.sum() > 0):
        raise ValueError(f"train_prior must be non-negative with a positive sum, got {prior.tolist()}")
    rows = probs.sum(1, keepdims=True)
    # float32 softmax rows sum to 1 within rounding; an all-zero row (underflow) is left for adjust_posteriors
    probs = np.divide(probs, rows, out=np.zeros_like(probs), where=rows > 0)
    return probs, prior / prior.sum()


def em_prior(probs, train_prior, tol=1e-6, max_iter=1000):
    """Saerens, Latinne & Decaestecker 2002: the target class prior re-estimated by EM from the model's posteriors
    `probs` (N, K) on the target split, starting from `train_prior` (K,), the prior those posteriors assume.

    E step: the posteriors adjusted to the current prior estimate (adjust_posteriors); M step: the new estimate is
    their mean over the N samples. Stops when no class's prior moves by tol or more, or after max_iter steps.
    Returns (adjusted posteriors (N, K) float64 under the final prior, the final prior (K,), iterations run).
    No labels, no randomness: the same input gives the same output. A class with training prior 0 ends with
    target prior 0; probabilities of exactly 0 are safe."""
    probs, source = _check_probs(probs, train_prior)
    prior, iterations, moved = source.copy(), 0, np.inf
    while moved >= tol and iterations < max_iter:
        new = adjust_posteriors(probs, source, prior).mean(0)
        moved = np.abs(new - prior).max()
        prior, iterations = new, iterations + 1
    return adjust_posteriors(probs, source, prior), prior, iterations


class _ImagesOnly:
    """The batches' images alone, each paired with None: what adabn lets the model see of the target split."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for x, _ in self.batches:
            yield x, None


def adabn(model, batches, device, precision):
    """AdaBN: (a deep copy of `model` whose every batch-norm layer, frozen backbones' included, has its running
    statistics re-estimated on `batches`, the number of such layers).

    `batches`: the target test images in a fixed order, as the evaluation batches them (data.Batches(...,
    shuffle=False)); their labels are dropped unread. Under torchrun each rank passes its share and the statistics
    are averaged over the ranks (engine.recalibrate_bn). The weights, and `model` itself, are untouched; the copy is
    returned in eval mode. n_layers 0 (VGG16: no batch norm): the copy is the model unchanged."""
    adapted = copy.deepcopy(model)
    layers = engine.bn_layers(adapted, trainable_only=False)
    engine.recalibrate_bn(adapted, layers, _ImagesOnly(batches), device, precision)
    return adapted.eval(), len(layers)


def describe(adaptation, n_layers=None, prior=None, iterations=None, classes=None):
    """One line for a log or a record about what an adaptation did."""
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"unknown adaptation {adaptation!r}; valid: {', '.join(ADAPTATIONS)}")
    if adaptation == "none":
        return "no adaptation: the model as trained"
    if adaptation == "adabn":
        if not n_layers:
            return "adabn: the model has no batch-norm layer (VGG16), so adabn is the unadapted model"
        return f"adabn: running statistics of {n_layers} batch-norm layers re-estimated on the target test images"
    names = classes if classes is not None else [str(k) for k in range(len(prior))]
    shares = ", ".join(f"{name} {p:.3f}" for name, p in zip(names, prior))
    return f"prior: target prior estimated by EM in {iterations} iterations: {shares}"
