"""Tests of adaptation.py: AdaBN changes batch-norm statistics alone, EM recovers a known prior shift.

    python -m pytest tests/test_adaptation.py -q

Models at 32 px on 8 random chips in batches of 4 (weights="none"); the prior fixture is three 1-D Gaussian
classes whose exact Bayes posteriors stand for a classifier's, sampled under a known target prior.
"""
import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

import adaptation
import data
import engine
import models

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
CPU = torch.device("cpu")
PRECISION = engine.Precision("off", CPU)
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _batches(labels_seed=0, n=8, size=32, batch_size=4):
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(labels_seed))
    return data.Batches(images, labels, batch_size)


def _model(name):
    torch.manual_seed(0)
    return models.build_model(name, 3, "none").eval()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check_only_bn_buffers_change(model, adapted, n_batches):
    for (name, p), (name2, p2) in zip(model.named_parameters(), adapted.named_parameters()):
        assert name == name2 and torch.equal(p, p2), f"{name}: a weight changed"
        assert p.requires_grad == p2.requires_grad
    before, after = model.state_dict(), adapted.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert all(k.rsplit(".", 1)[1] in BN_BUFFERS for k in changed), changed
    for prefix, m in adapted.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert f"{prefix}.running_mean" in changed and f"{prefix}.running_var" in changed, prefix
            assert m.num_batches_tracked.item() == n_batches
    return changed


def test_adabn_cnn_changes_only_batch_norm_buffers_and_leaves_the_original_alone():
    model = _model("cnn")
    original = _snapshot(model)
    adapted, n_layers = adaptation.adabn(model, _batches(), CPU, PRECISION)
    assert n_layers == 3 and adapted is not model and not adapted.training
    changed = _check_only_bn_buffers_change(model, adapted, n_batches=2)
    assert len(changed) == 3 * 3
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_adabn_reaches_the_frozen_backbone_batch_norm():
    model = _model("fine_resnet")
    original = _snapshot(model)
    adapted, n_layers = adaptation.adabn(model, _batches(), CPU, PRECISION)
    assert n_layers == len(engine.bn_layers(model, trainable_only=False)) == 53
    assert engine.bn_layers(model) == []  # every one of them is frozen: trainable_only would have found none
    changed = _check_only_bn_buffers_change(model, adapted, n_batches=2)
    assert "backbone.bn1.running_mean" in changed and "backbone.layer4.2.bn3.running_var" in changed
    assert isinstance(adapted.backbone, models.FrozenBackbone) and not adapted.backbone.training
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    # the adapted statistics are those of the target images: the model now predicts differently
    assert not np.allclose(engine.evaluate(model, _batches(), CPU, PRECISION),
                           engine.evaluate(adapted, _batches(), CPU, PRECISION))


def test_adabn_never_reads_labels_and_is_deterministic():
    model = _model("cnn")
    a, _ = adaptation.adabn(model, _batches(labels_seed=0), CPU, PRECISION)
    b, _ = adaptation.adabn(model, _batches(labels_seed=1), CPU, PRECISION)
    assert not torch.equal(_batches(labels_seed=0).labels, _batches(labels_seed=1).labels)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_adabn_without_batch_norm_is_the_model_unchanged():
    assert engine.bn_layers(models._vgg_features("none"), trainable_only=False) == []  # why VGG says so
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    adapted, n_layers = adaptation.adabn(model, _batches(), CPU, PRECISION)
    assert n_layers == 0 and adapted is not model
    assert all(torch.equal(v, adapted.state_dict()[k]) for k, v in model.state_dict().items())
    assert np.array_equal(engine.evaluate(model, _batches(), CPU, PRECISION),
                          engine.evaluate(adapted, _batches(), CPU, PRECISION))
    assert "no batch-norm layer" in adaptation.describe("adabn", n_layers=0)


# ------------------------------------------------------------------------------------------------------------
# prior shift by EM

MEANS = np.array([-2.5, 0.0, 2.5])


def _gaussian_fixture(source, target, n=5000, seed=0):
    """Exact Bayes posteriors under `source` of n samples drawn under `target` from N(MEANS[k], 1)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(target), size=n, p=target)
    x = rng.normal(MEANS[y], 1.0)
    joint = norm.pdf(x[:, None], MEANS[None, :], 1.0) * np.asarray(source)[None, :]  # (N, K)
    return (joint / joint.sum(1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize("source", [(1 / 3, 1 / 3, 1 / 3), (0.2, 0.3, 0.5)])
def test_em_prior_recovers_a_known_shift(source):
    target = np.array([0.6, 0.3, 0.1])
    probs, _ = _gaussian_fixture(source, target)
    adjusted, prior, iterations = adaptation.em_prior(probs, np.array(source))
    assert np.abs(prior - target).max() < 0.03, prior
    assert 1 < iterations < 1000
    assert np.allclose(adjusted.sum(1), 1.0) and (adjusted >= 0).all()
    assert np.allclose(adjusted.mean(0), prior, atol=1e-5)  # the EM fixed point
    assert np.allclose(adjusted, adaptation.adjust_posteriors(probs, source, prior))
    # the adjusted posteriors are the exact ones under the target prior, up to the estimate's error
    exact, _ = _gaussian_fixture(target, target)
    assert np.abs(adjusted - exact).max() < 0.05


def test_em_prior_without_shift_stays_at_the_source_prior():
    source = np.array([0.5, 0.3, 0.2])
    probs, _ = _gaussian_fixture(source, source, seed=1)
    adjusted, prior, _ = adaptation.em_prior(probs, source)
    assert np.abs(prior - source).max() < 0.03
    assert np.allclose(adjusted.sum(1), 1.0)


def test_em_prior_is_safe_with_zeros_and_an_untrained_class():
    probs = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.9, 0.0, 0.1]], np.float32)
    adjusted, prior, _ = adaptation.em_prior(probs, np.array([0.5, 0.5, 0.0]))
    assert np.isfinite(adjusted).all() and np.isfinite(prior).all()
    assert prior[2] == 0.0 and np.isclose(prior.sum(), 1.0)
    assert np.allclose(adjusted.sum(1), 1.0) and (adjusted[:, 2] == 0).all()
    assert np.allclose(adjusted[2], prior)  # all its mass on the untrained class: no evidence, the prior
    with pytest.raises(ValueError, match="classes"):
        adaptation.em_prior(probs, np.array([0.5, 0.5]))


def test_em_prior_is_deterministic():
    probs, _ = _gaussian_fixture((0.2, 0.3, 0.5), (0.6, 0.3, 0.1), n=500)
    a = adaptation.em_prior(probs, np.array([0.2, 0.3, 0.5]))
    b = adaptation.em_prior(probs.copy(), np.array([0.2, 0.3, 0.5]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


# ------------------------------------------------------------------------------------------------------------
# the training prior and where adaptation applies

def test_train_prior_follows_the_imbalance_strategy():
    labels = np.array([0, 0, 0, 1, 2, 2])
    assert np.allclose(adaptation.train_prior(labels, 3, "none"), [0.5, 1 / 6, 1 / 3])
    for balanced in ("weighted", "sampler", "focal"):  # focal's alpha is weighted's class weights
        assert np.allclose(adaptation.train_prior(labels, 3, balanced), [1 / 3] * 3)
    assert np.allclose(adaptation.train_prior([0, 0, 2], 3, "weighted"), [0.5, 0.0, 0.5])
    assert np.allclose(adaptation.train_prior([0, 0, 2], 3, "none"), [2 / 3, 0.0, 1 / 3])
    assert set(engine.IMBALANCE) == {"none", *adaptation.BALANCED_IMBALANCE}
    with pytest.raises(ValueError, match="valid: none, weighted"):
        adaptation.train_prior(labels, 3, "balanced")


def test_applies_only_across_the_two_datasets():
    assert adaptation.applies("fusar", "opensarship") and adaptation.applies("opensarship", "fusar")
    for train, test in (("fusar", "fusar"), ("mixed", "fusar"), ("fusar", "mixed"), ("mixed", "mixed")):
        assert not adaptation.applies(train, test)
