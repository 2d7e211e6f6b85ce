"""95 % confidence intervals of the test metrics from a bootstrap over SHIPS, and paired bootstrap intervals of
differences between two arms (an imbalance strategy against its baseline, a cross-dataset against a
within-dataset test, ...).

    from bootstrap import ship_intervals, paired_difference
    ci = ship_intervals(y_true, y_pred, groups, classes=["Cargo", "Fishing", "Tanker"])     # n=1000, seed=0
    ci["f1_macro_ci_low"], ci["f1_macro_ci_high"], ci["Fishing_recall_ci_low"]
    d = paired_difference([((t, p_base, g), (t, p_new, g)) for p_base, p_new in runs_per_seed], classes,
                          "f1_macro")
    d["diff"], d["ci_low"], d["ci_high"], d["covers_zero"], d["sign_share"], d["n_pairs"]

Why ships. The chips of one ship (one MMSI: the manifest column `group`) look alike and are mostly right or
wrong together, and a rare class may come from a handful of ships. A bootstrap over chips treats 30 chips of
one ship as 30 independent pieces of evidence and gives intervals far too narrow. Here the unit that is
resampled is the ship: each resample draws as many ships as the test set has, with replacement, and all the
chips of a drawn ship go in (a ship drawn twice counts twice). A ship with many identical chips thus weighs as
one uncertain observation, not as many.

What the interval means. The percentile interval ((1 - level) / 2, 1 - (1 - level) / 2) of the metric over
`n` resamples: how much the number could change with another test set of as many ships drawn from the same
population, for the SAME trained model. The metrics are those of metrics.score_row (percent; scikit-learn's
definitions: precision with zero_division=0, F1 = 2PR / (P + R) and 0 where P + R = 0, balanced accuracy and
the macro averages over the classes present in the (resampled) test set). A class absent from a resample has
no recall or F1 there: its per-class intervals are over the resamples that hold it (NaN if none does), so a
rare class's interval is not dragged to 0 by the resamples that happen to miss it.

What it does not cover. The training seed (initialisation, data order, augmentation) and the split (which ships
went to training and which to test) are other sources of variance: they are handled by repeating the runs over
seeds and split seeds (seed_stats.py), and paired_difference pools the pairs of every seed. The interval says
nothing about another population (another satellite, port or year).

Speed and exactness. Each ship's confusion matrix (K x K counts) is computed once; a resample is a vector of
ship weights (how often each ship was drawn, np.bincount of the drawn indices), and the (n, K, K) confusion
matrices of all resamples are one matrix product of the (n, G) weights with the (G, K x K) counts. Every metric
is then computed, vectorised, from the confusion matrices: exactly what scikit-learn returns on the resampled
chips (tests/test_bootstrap.py checks it), in about a millisecond for 1,000 resamples of 60 ships.

Reproducible: every draw comes from numpy.random.default_rng(seed); the same inputs and seed give the same
numbers.
"""

import numpy as np

import metrics

METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
PER_CLASS = ("f1", "recall")


def interval_metrics(classes):
    """Names of the metrics that get an interval: METRICS, then <Class>_f1 and <Class>_recall per class."""
    return list(METRICS) + [f"{c}_{m}" for c in classes for m in PER_CLASS]


def interval_columns(classes):
    """Column names of ship_intervals: <metric>_ci_low, <metric>_ci_high for each interval metric."""
    return [f"{m}_ci_{side}" for m in interval_metrics(classes) for side in ("low", "high")]


def _label_index(y, classes):
    """Labels (class names or indices into `classes`) as int indices into `classes`."""
    names = metrics.as_names(y, classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    return np.fromiter((index[c] for c in names), dtype=np.int64, count=len(names))


def _ships(groups):
    """(ship ids sorted, index of each chip's ship). A missing group (None, NaN) is an error: no ship to draw."""
    groups = np.asarray(groups)
    missing = np.isnan(groups).any() if groups.dtype.kind == "f" else (
        groups.dtype.kind == "O" and any(g is None or g != g for g in groups))
    if missing:
        raise ValueError("groups must name a ship for every chip (found None or NaN)")
    if groups.dtype.kind == "O":
        groups = groups.astype(str)
    return np.unique(groups, return_inverse=True)


def ship_confusions(true, pred, groups, classes):
    """(ships, counts): the sorted ship ids and their confusion matrices, counts (G, K, K) int (rows true,
    columns predicted, in `classes` order); counts.sum(0) is metrics.confusion of all chips."""
    classes = list(classes)
    t, p = _label_index(true, classes), _label_index(pred, classes)
    if not len(t) == len(p) == len(groups):
        raise ValueError(f"true, pred and groups differ in length: {len(t)}, {len(p)}, {len(groups)}")
    if not len(t):
        raise ValueError("no chips")
    ships, ship = _ships(groups)
    k, g = len(classes), len(ships)
    counts = np.bincount((ship * k + t) * k + p, minlength=g * k * k).reshape(g, k, k)
    return ships, counts


def draw_weights(rng, n_ships, n):
    """(n, n_ships) int: how often each ship is drawn in each of n resamples of n_ships ships with replacement."""
    drawn = rng.integers(0, n_ships, size=(n, n_ships)) + n_ships * np.arange(n)[:, None]
    return np.bincount(drawn.ravel(), minlength=n * n_ships).reshape(n, n_ships)


def resampled_confusions(weights, counts):
    """(n, K, K) float: the confusion matrix of each resample, sum over ships of weight x ship's matrix
    (einsum "ng,gij->nij" written as one matrix product)."""
    g, k, _ = counts.shape
    return (np.asarray(weights, dtype=float) @ counts.reshape(g, k * k).astype(float)).reshape(-1, k, k)


def _ratio(num, den):
    """num / den, 0 where den == 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_metrics(cm, classes):
    """Every interval metric (fractions, not percent) of confusion matrices cm (..., K, K), scikit-learn's
    definitions: dict name -> array (...). Per class: recall = TP / support, F1 = 2TP / (support + predicted)
    (= 2PR / (P + R), precision with zero_division=0), 0 where undefined; balanced_accuracy and f1_macro are
    means over the classes with support > 0 in that matrix. Also "support", "tp", "predicted": (..., K)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    present = support > 0
    recall, f1 = _ratio(tp, support), _ratio(2 * tp, support + predicted)
    n_present = present.sum(-1)
    out = {"accuracy": _ratio(tp.sum(-1), support.sum(-1)),
           "balanced_accuracy": _ratio((recall * present).sum(-1), n_present),
           "f1_macro": _ratio((f1 * present).sum(-1), n_present)}
    for i, c in enumerate(classes):
        out[f"{c}_f1"], out[f"{c}_recall"] = f1[..., i], recall[..., i]
    out["support"], out["tp"], out["predicted"] = support, tp, predicted
    return out


def _metric(values, classes, name):
    """One metric, percent, from confusion_metrics' `values`: interval_metrics' names, and for the report's paired
    differences also <Class>_precision (TP / predicted, 0 where nothing is predicted as the class) and f1_weighted
    (the classes' F1 weighted by their support). NaN for a per-class metric where the class is absent."""
    classes = list(classes)
    if name == "f1_weighted":
        f1 = np.stack([values[f"{c}_f1"] for c in classes], axis=-1)
        support = values["support"]
        return 100.0 * _ratio((f1 * support).sum(-1), support.sum(-1))
    cls, _, kind = name.rpartition("_")
    if kind == "precision":
        k = classes.index(cls)
        value = 100.0 * _ratio(values["tp"][..., k], values["predicted"][..., k])
    else:
        value = 100.0 * values[name]
    if name not in METRICS:
        value = np.where(values["support"][..., classes.index(cls)] > 0, value, np.nan)
    return value


def metric_of(cm, classes, name):
    """Metric `name` (percent; _metric's names) of confusion matrices cm (..., K, K)."""
    return _metric(confusion_metrics(cm, classes), classes, name)


def paired_metrics(classes):
    """The metrics paired_difference takes: interval_metrics, f1_weighted and each class's precision."""
    return [*interval_metrics(classes), "f1_weighted", *(f"{c}_precision" for c in classes)]


def percentile_interval(values, level=0.95):
    """Percentile interval of the finite values, rounded to two decimals; (NaN, NaN) when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return np.nan, np.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return round(float(low), 2), round(float(high), 2)


def _check(n, level):
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")


def ship_intervals(true, pred, groups, classes, n=1000, seed=0, level=0.95):
    """Ship-bootstrap percentile intervals of one model on one test set: dict interval_columns(classes) ->
    percent, two decimals (like metrics.score_row). `groups`: each chip's ship (manifest column `group`); n
    resamples of the ships with replacement from numpy.random.default_rng(seed). Per-class intervals are over
    the resamples holding the class (NaN when the test set has no chip of it)."""
    _check(n, level)
    classes = list(classes)
    _, counts = ship_confusions(true, pred, groups, classes)
    weights = draw_weights(np.random.default_rng(seed), len(counts), int(n))
    values = confusion_metrics(resampled_confusions(weights, counts), classes)
    out = {}
    for name in interval_metrics(classes):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = percentile_interval(_metric(values, classes, name), level)
    return out


def _test_set_key(groups):
    """A test set is known by its groups array contents (same ships in the same chip order)."""
    return tuple(str(g) for g in np.asarray(groups).tolist())


def paired_difference(pairs, classes, metric, n=1000, seed=0, level=0.95, share_draws=True):
    """Paired ship-bootstrap interval of metric(arm b) - metric(arm a), pooled over pairs (seeds, split seeds).

    pairs: [(arm_a, arm_b), ...], an arm being (true, pred, groups); metric: one of paired_metrics(classes).
    Arms on the same test set (the same groups array) are resampled with ONE draw of ships per resample, shared
    by both arms and by every pair on that test set; different test sets (a within- against a cross-dataset
    test) get independent draws. The statistic of a resample is the mean over pairs of the per-pair difference.
    share_draws=False gives every arm its own draw (only to show what the pairing buys).

    Returns dict: diff (the mean difference on the data, percentage points), ci_low, ci_high (percentile
    interval at `level`), covers_zero (ci_low <= 0 <= ci_high; False when the interval is undefined), n_pairs,
    sign_share (share of pairs whose own difference has the sign of diff; a 0 difference never counts).
    """
    _check(n, level)
    classes = list(classes)
    if metric not in paired_metrics(classes):
        raise ValueError(f"metric {metric!r} is not one of {paired_metrics(classes)}")
    if not len(pairs):
        raise ValueError("no pairs")
    rng, draws = np.random.default_rng(seed), {}
    point, boot = [], []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError("each pair must be (arm_a, arm_b), an arm being (true, pred, groups)")
        values = []
        for true, pred, groups in pair:
            _, counts = ship_confusions(true, pred, groups, classes)
            key = _test_set_key(groups) if share_draws else len(draws)
            if key not in draws:
                draws[key] = draw_weights(rng, len(counts), int(n))
            values.append((_metric(confusion_metrics(counts.sum(0), classes), classes, metric),
                           _metric(confusion_metrics(resampled_confusions(draws[key], counts), classes), classes,
                                   metric)))
        (point_a, boot_a), (point_b, boot_b) = values
        point.append(float(point_b - point_a))
        boot.append(boot_b - boot_a)
    point = np.asarray(point)
    diff = float(point.mean())
    low, high = percentile_interval(np.mean(boot, axis=0), level)
    holds = np.sign(point) == np.sign(diff) if diff != 0 else np.zeros(len(point), dtype=bool)
    return {"diff": round(diff, 2), "ci_low": low, "ci_high": high, "covers_zero": bool(low <= 0.0 <= high),
            "n_pairs": len(pairs), "sign_share": float(holds.mean())}
