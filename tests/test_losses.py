"""engine.py's losses, class weights and precision: the imbalance strategies' losses checked against hand
computation, and the one training code path under autocast on the CPU."""

import math

import numpy as np
import pytest
import torch

import data
import engine
from models import build_model

torch.set_num_threads(1)

LOGITS = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.3, 0.2, 0.1]]
TARGET = [0, 1, 2, 1]


def _hand_terms():
    """(weights, -log p_i, p_i) by hand for LOGITS/TARGET with training labels 0,0,0,1,2,2."""
    w = [6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)]  # N / (K n_c)
    nll, p = [], []
    for row, t in zip(LOGITS, TARGET):
        z = sum(math.exp(v) for v in row)
        p.append(math.exp(row[t]) / z)
        nll.append(-math.log(p[-1]))
    return w, nll, p


def test_class_weights_are_inverse_frequency_averaging_one_over_samples():
    w = engine.class_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    assert w.tolist() == pytest.approx([2 / 3, 2.0, 1.0])
    labels = np.array([0, 0, 0, 1, 2, 2])
    assert w[labels].mean().item() == pytest.approx(1.0)
    # a class absent from the training split gets weight 0, the others still average 1 over the samples
    assert engine.class_weights(np.array([0, 0, 0, 1]), 3).tolist() == pytest.approx([2 / 3, 2.0, 0.0])


def test_weighted_loss_matches_hand_computation():
    criterion, weights = engine.make_criterion("weighted", np.array([0, 0, 0, 1, 2, 2]), 3)
    w, nll, _ = _hand_terms()
    expected = sum(w[t] * n for t, n in zip(TARGET, nll)) / sum(w[t] for t in TARGET)
    assert weights == pytest.approx(w)
    assert criterion(torch.tensor(LOGITS), torch.tensor(TARGET)).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_matches_hand_computation():
    criterion, weights = engine.make_criterion("focal", np.array([0, 0, 0, 1, 2, 2]), 3)
    w, nll, p = _hand_terms()
    expected = sum(w[t] * (1 - pi) ** 2 * n for t, pi, n in zip(TARGET, p, nll)) / sum(w[t] for t in TARGET)
    assert criterion.gamma == 2.0 and weights == pytest.approx(w)
    assert criterion(torch.tensor(LOGITS), torch.tensor(TARGET)).item() == pytest.approx(expected, rel=1e-6)
    # gamma 0 is the weighted cross-entropy exactly
    w = torch.tensor(w, dtype=torch.float32)
    ce = torch.nn.CrossEntropyLoss(weight=w)(torch.tensor(LOGITS), torch.tensor(TARGET)).item()
    focal0 = engine.FocalLoss(w, gamma=0.0)(torch.tensor(LOGITS), torch.tensor(TARGET)).item()
    assert focal0 == pytest.approx(ce, rel=1e-6)


def test_none_and_sampler_use_the_plain_loss():
    for strategy in ("none", "sampler"):
        criterion, weights = engine.make_criterion(strategy, np.array([0, 0, 1]), 3)
        assert weights is None and isinstance(criterion, torch.nn.CrossEntropyLoss)
        assert criterion.weight is None


def test_one_code_path_with_autocast_on_the_cpu():
    cpu = torch.device("cpu")
    assert not engine.Precision("auto", cpu).enabled and not engine.Precision("off", cpu).enabled  # auto: off on CPU
    precision = engine.Precision("on", cpu)
    assert precision.enabled and precision.dtype == torch.bfloat16
    assert not precision.scaler().is_enabled()  # a GradScaler only for float16
    engine.seed_everything(0)
    model = build_model("cnn", 3, "none")
    images = torch.randint(0, 256, (6, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    batches = data.Batches(images, labels, 3, shuffle=True, generator=torch.Generator().manual_seed(0),
                           augment="flip", aug_generator=torch.Generator().manual_seed(1))
    loss, acc = engine.train_one_epoch(model, torch.nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters()),
                                   precision.scaler(), batches, cpu, precision, "bf16 on the CPU")
    assert math.isfinite(loss) and 0 <= acc <= 100
    probs = engine.evaluate(model, data.Batches(images, labels, 4), cpu, precision)
    assert probs.shape == (6, 3) and probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-5)
