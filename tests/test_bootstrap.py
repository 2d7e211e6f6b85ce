"""bootstrap.py: the vectorised metrics against scikit-learn, the ship (not chip) bootstrap, reproducibility, and
the paired intervals (one shared draw of ships for arms on the same test chips)."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

import bootstrap
import metrics

CLASSES = ["Cargo", "Fishing", "Tanker"]


def make_test_set(rng, n_ships, chips=(1, 4), share=(0.6, 0.25, 0.15), skill=0.7):
    """(true, pred, groups) as class indices: ships of one class each, 1-4 chips; a ship is recognised (all its
    chips right) with probability `skill`, otherwise its chips are mostly wrong: chips of a ship are correlated."""
    true, pred, groups = [], [], []
    for s in range(n_ships):
        cls = rng.choice(len(share), p=share)
        good = rng.random() < skill
        for _ in range(rng.integers(chips[0], chips[1] + 1)):
            right = rng.random() < (0.95 if good else 0.2)
            true.append(cls)
            pred.append(cls if right else (cls + rng.integers(1, len(share))) % len(share))
            groups.append(f"mmsi:{1000 + s}")
    return np.array(true), np.array(pred), np.array(groups)


def width(ci, name):
    return ci[f"{name}_ci_high"] - ci[f"{name}_ci_low"]


def test_interval_names():
    assert bootstrap.interval_metrics(["A", "B"]) == ["accuracy", "balanced_accuracy", "f1_macro", "A_f1",
                                                      "A_recall", "B_f1", "B_recall"]
    assert bootstrap.interval_columns(["A"])[:2] == ["accuracy_ci_low", "accuracy_ci_high"]
    assert len(bootstrap.interval_columns(CLASSES)) == 2 * (3 + 2 * len(CLASSES))


def test_vectorised_metrics_equal_sklearn_on_random_resamples():
    rng = np.random.default_rng(3)
    classes = ["A", "B", "C", "D"]
    n_ships = 12
    ship_class = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 0])  # D: one ship, often missing from a resample
    groups = np.repeat(np.arange(n_ships), rng.integers(1, 6, size=n_ships))
    true = ship_class[groups]
    pred = np.where(rng.random(len(true)) < 0.55, true, rng.integers(0, 4, size=len(true)))
    _, counts = bootstrap.ship_confusions(true, pred, groups, classes)
    weights = bootstrap.draw_weights(rng, n_ships, 50)
    values = bootstrap.confusion_metrics(bootstrap.resampled_confusions(weights, counts), classes)
    absent = absent_but_predicted = 0
    for r in range(50):
        chips = np.repeat(np.arange(len(true)), weights[r][groups])  # each drawn ship's chips, as often as drawn
        t, p = true[chips], pred[chips]
        present = sorted(set(t.tolist()))
        absent += len(present) < 4
        absent_but_predicted += bool(set(p.tolist()) - set(present))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # y_pred has classes not in y_true: sklearn warns, the value stands
            assert values["balanced_accuracy"][r] == pytest.approx(balanced_accuracy_score(t, p), abs=1e-12)
        assert values["accuracy"][r] == pytest.approx(accuracy_score(t, p), abs=1e-12)
        assert values["f1_macro"][r] == pytest.approx(
            f1_score(t, p, labels=present, average="macro", zero_division=0), abs=1e-12)
        f1 = f1_score(t, p, labels=[0, 1, 2, 3], average=None, zero_division=0)
        recall = recall_score(t, p, labels=[0, 1, 2, 3], average=None, zero_division=0)
        for i, c in enumerate(classes):
            assert values[f"{c}_f1"][r] == pytest.approx(f1[i], abs=1e-12)
            assert values[f"{c}_recall"][r] == pytest.approx(recall[i], abs=1e-12)
    assert absent >= 5 and absent_but_predicted >= 3  # the absent-class cases were exercised


def test_full_weights_give_score_row():
    true, pred, groups = make_test_set(np.random.default_rng(1), 60)
    _, counts = bootstrap.ship_confusions(true, pred, groups, CLASSES)
    assert (counts.sum(0) == metrics.confusion(true, pred, CLASSES)).all()
    values = bootstrap.confusion_metrics(counts.sum(0), CLASSES)
    row = metrics.score_row(true, pred, CLASSES)
    for name in bootstrap.interval_metrics(CLASSES):
        assert round(100 * float(values[name]), 2) == row[name]


def test_identical_chips_of_a_ship_weigh_as_one_chip():
    rng = np.random.default_rng(2)
    true, pred, _ = make_test_set(rng, 50, chips=(1, 1))
    groups = np.array([f"s{i}" for i in range(50)])
    many = 12  # every ship has 12 identical chips (same true, same pred)
    ci_one = bootstrap.ship_intervals(true, pred, groups, CLASSES)
    ci_many = bootstrap.ship_intervals(np.repeat(true, many), np.repeat(pred, many), np.repeat(groups, many),
                                       CLASSES)
    chips = bootstrap.ship_intervals(np.repeat(true, many), np.repeat(pred, many), np.arange(50 * many),
                                     CLASSES)  # a chip bootstrap: one group per chip
    for name in ("accuracy", "balanced_accuracy", "f1_macro", "Cargo_recall"):
        assert ci_many[f"{name}_ci_low"] == pytest.approx(ci_one[f"{name}_ci_low"], abs=1.5)
        assert ci_many[f"{name}_ci_high"] == pytest.approx(ci_one[f"{name}_ci_high"], abs=1.5)
        assert width(ci_many, name) > 2 * width(chips, name)


def test_reproducible_from_the_seed():
    true, pred, groups = make_test_set(np.random.default_rng(4), 60)
    a = bootstrap.ship_intervals(true, pred, groups, CLASSES, seed=7)
    assert a == bootstrap.ship_intervals(list(true), list(pred), list(groups), CLASSES, seed=7)
    assert a != bootstrap.ship_intervals(true, pred, groups, CLASSES, seed=8)
    names = np.asarray(CLASSES)
    assert a == bootstrap.ship_intervals(names[true], names[pred], groups, CLASSES, seed=7)  # names or indices


def test_intervals_contain_the_point_estimate():
    for s in range(5):
        true, pred, groups = make_test_set(np.random.default_rng(10 + s), 60)
        row = metrics.score_row(true, pred, CLASSES)
        ci = bootstrap.ship_intervals(true, pred, groups, CLASSES, seed=s)
        for name in bootstrap.interval_metrics(CLASSES):
            assert ci[f"{name}_ci_low"] <= row[name] <= ci[f"{name}_ci_high"], (s, name)
            assert width(ci, name) > 0


def test_intervals_narrow_as_ships_increase():
    rng = np.random.default_rng(5)
    small = bootstrap.ship_intervals(*make_test_set(rng, 30), CLASSES)
    large = bootstrap.ship_intervals(*make_test_set(rng, 600), CLASSES)
    for name in ("accuracy", "balanced_accuracy", "f1_macro", "Cargo_f1", "Tanker_recall"):
        assert width(large, name) < 0.6 * width(small, name), name


def test_level_and_absent_class():
    true, pred, groups = make_test_set(np.random.default_rng(6), 60)
    wide = bootstrap.ship_intervals(true, pred, groups, CLASSES, level=0.99)
    narrow = bootstrap.ship_intervals(true, pred, groups, CLASSES, level=0.5)
    assert width(narrow, "f1_macro") < width(wide, "f1_macro")
    keep = true != 2  # no Tanker chips: no Tanker interval, the others still there
    ci = bootstrap.ship_intervals(true[keep], pred[keep], groups[keep], CLASSES)
    assert np.isnan(ci["Tanker_recall_ci_low"]) and np.isnan(ci["Tanker_f1_ci_high"])
    assert ci["f1_macro_ci_low"] < ci["f1_macro_ci_high"]
    with pytest.raises(ValueError, match="not among the classes"):
        bootstrap.ship_intervals(["Cargo", "Ferry"], ["Cargo", "Cargo"], ["a", "b"], CLASSES)
    with pytest.raises(ValueError, match="None or NaN"):
        bootstrap.ship_intervals([0, 1], [0, 1], np.array(["a", None], dtype=object), CLASSES)


def test_paired_identical_arms():
    arm = make_test_set(np.random.default_rng(8), 60)
    d = bootstrap.paired_difference([(arm, arm), (arm, arm)], CLASSES, "f1_macro")
    assert d == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "covers_zero": True, "n_pairs": 2,
                 "sign_share": 0.0}


def test_paired_strictly_better_on_every_ship():
    pairs = []
    for s in range(3):  # three seeds: arm a wrong on one chip of every ship, arm b right everywhere
        true, _, groups = make_test_set(np.random.default_rng(20 + s), 60)
        pred_a = true.copy()
        first = np.unique(groups, return_index=True)[1]
        pred_a[first] = (true[first] + 1) % 3
        pairs.append(((true, pred_a, groups), (true, true, groups)))
    for metric in ("accuracy", "f1_macro", "balanced_accuracy"):
        d = bootstrap.paired_difference(pairs, CLASSES, metric)
        assert d["diff"] > 0 and d["ci_low"] > 0 and not d["covers_zero"], metric
        assert d["sign_share"] == 1.0 and d["n_pairs"] == 3


def test_paired_arms_on_the_same_chips_share_the_draw():
    true, pred, groups = make_test_set(np.random.default_rng(9), 60)
    better = pred.copy()
    one = groups == groups[np.flatnonzero(pred != true)[0]]
    better[one] = true[one]  # arm b: arm a with one ship's errors corrected
    pair = [((true, pred, groups), (true, better, groups))]
    shared = bootstrap.paired_difference(pair, CLASSES, "accuracy")
    independent = bootstrap.paired_difference(pair, CLASSES, "accuracy", share_draws=False)
    assert shared["diff"] == independent["diff"] > 0 and shared["ci_low"] >= 0
    assert shared["ci_high"] - shared["ci_low"] < 0.25 * (independent["ci_high"] - independent["ci_low"])
    assert independent["covers_zero"]  # independent draws: the one-ship change is lost in the noise


def test_paired_draw_is_per_test_set():
    arm = make_test_set(np.random.default_rng(11), 60)
    true, pred, groups = arm
    renamed = (true, pred, np.char.add("other:", groups))  # the same chips as another test set
    same = bootstrap.paired_difference([(arm, arm)], CLASSES, "f1_macro")
    other = bootstrap.paired_difference([(arm, renamed)], CLASSES, "f1_macro")
    assert same["ci_low"] == same["ci_high"] == 0
    assert other["diff"] == 0 and other["ci_low"] < -1 and other["ci_high"] > 1  # independent draws per test set
    # one draw per test set shared by every pair using it: a repeated pair adds nothing
    assert bootstrap.paired_difference([(arm, renamed)] * 3, CLASSES, "f1_macro") == {**other, "n_pairs": 3}
    with pytest.raises(ValueError, match="is not one of"):
        bootstrap.paired_difference([(arm, arm)], CLASSES, "precision_macro")


def test_paired_is_reproducible_and_per_class():
    rng = np.random.default_rng(12)
    pairs = []
    for _ in range(3):
        true, pred, groups = make_test_set(rng, 60)
        worse = np.where(rng.random(len(pred)) < 0.2, (pred + 1) % 3, pred)
        pairs.append(((true, worse, groups), (true, pred, groups)))
    d = bootstrap.paired_difference(pairs, CLASSES, "Fishing_recall", seed=3)
    assert d == bootstrap.paired_difference(pairs, CLASSES, "Fishing_recall", seed=3)
    assert d != bootstrap.paired_difference(pairs, CLASSES, "Fishing_recall", seed=4)
    per_pair = [metrics.score_row(*b[:2], CLASSES)["Fishing_recall"] - metrics.score_row(*a[:2], CLASSES)[
        "Fishing_recall"] for a, b in pairs]
    assert d["diff"] == pytest.approx(np.mean(per_pair), abs=0.01)
    assert d["sign_share"] == np.mean(np.sign(per_pair) == np.sign(d["diff"]))
    assert d["ci_low"] <= d["diff"] <= d["ci_high"]
