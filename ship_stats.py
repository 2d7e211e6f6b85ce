"""The report's ship-bootstrap statistics, from the grid's per-chip predictions (predictions.csv, with each chip's
ship in `group`) and scores.csv: the interval of a mean over seeds and paired differences (report.py uses them).

    chips = ship_stats.Chips.read("demo")                           # None-safe: .usable is False without the files
    arm = chips.arm(("fusar", "fusar", "cnn", "none", "bn on, best", "0.001", 0))   # (true, pred, groups) or None
    point, (low, high) = pooled_interval([arm0, arm1], classes, "f1_macro", n=1000, seed=0)
    d = paired([(arm_none, arm_weighted), ...], classes, "Tanker_precision", n=1000, seed=0)

A run is (train_set, test_set, model, imbalance, protocol, lr as written in the tables ("" for the baselines), seed).

Mean over seeds (pooled_interval). The interval of the mean over the seeds of one configuration on one test set
is a bootstrap over the test set's ships with draws SHARED by the seeds: in each of n replicates the ships are
drawn once with replacement (bootstrap.draw_weights, from numpy.random.default_rng(seed)), every seed's
predictions are scored on that same resample (its confusion matrix: the drawn ships' matrices summed), and the
statistic is the mean of the seeds' scores; the interval is the 2.5th to 97.5th percentile over the replicates.
With one seed it is exactly bootstrap.ship_intervals with the same n and seed. Seeds drawn together keep what the
test set's ships do to every seed at once in the interval, which resampling each seed alone would average away.

Paired differences (paired): bootstrap.paired_difference (one draw of ships per test set, shared by both arms
and every pair on it), for bootstrap.paired_metrics: the interval metrics, per-class precision and weighted F1.
Metrics are percent with scikit-learn's definitions, as in bootstrap.confusion_metrics; a per-class metric is
undefined (NaN) in a resample without a chip of its class.
"""
from pathlib import Path

import numpy as np
import pandas as pd

import bootstrap
from runs import RAW, lr_text

RUN = ("train_set", "test_set", "model", "imbalance", "protocol", "lr", "seed")
LEVEL = 0.95
SCORE_SLACK = 0.011  # a run whose scores.csv macro-F1 differs more from its record's is stale (both two decimals)


def run_key(row):
    """The RUN key of a row (a dict or a pandas row holding RUN's columns)."""
    return (row["train_set"], row["test_set"], row["model"], row["imbalance"], row["protocol"], lr_text(row["lr"]),
            int(row["seed"]))


# ------------------------------------------------------------------------------------------------------------
# intervals

def _aligned_counts(arms, classes):
    """(ships, [counts (G, K, K) per arm]): every arm's per-ship confusion matrices over the union of the arms'
    ships (sorted as bootstrap.py sorts them), zero for a ship an arm lacks."""
    per_arm = [bootstrap.ship_confusions(true, pred, groups, classes) for true, pred, groups in arms]
    ships = np.unique(np.concatenate([s.astype(str) for s, _ in per_arm]))
    out = []
    for arm_ships, counts in per_arm:
        full = np.zeros((len(ships), *counts.shape[1:]), dtype=counts.dtype)
        full[np.searchsorted(ships, arm_ships.astype(str))] = counts
        out.append(full)
    return ships, out


def pooled_interval(arms, classes, name, n, seed, level=LEVEL):
    """(point, (low, high)) of the mean of metric `name` over `arms` (one (true, pred, groups) per seed, all on
    one test set): point on the data, the interval from n replicates of the test set's ships drawn once per
    replicate for every arm (numpy.random.default_rng(seed)). Two decimals."""
    ships, counts = _aligned_counts(arms, classes)
    weights = bootstrap.draw_weights(np.random.default_rng(seed), len(ships), int(n))
    point = np.mean([bootstrap.metric_of(c.sum(0), classes, name) for c in counts])
    boot = np.mean([bootstrap.metric_of(bootstrap.resampled_confusions(weights, c), classes, name) for c in counts],
                   axis=0)
    return round(float(point), 2), bootstrap.percentile_interval(boot, level)


def paired(pairs, classes, name, n, seed, level=LEVEL):
    """Paired ship-bootstrap difference metric(arm b) - metric(arm a), pooled over the pairs (seeds):
    bootstrap.paired_difference's dict (diff, ci_low, ci_high, covers_zero, n_pairs, sign_share)."""
    return bootstrap.paired_difference(pairs, classes, name, n=int(n), seed=seed, level=level)


# ------------------------------------------------------------------------------------------------------------
# the grid's tables

def read_scores(path):
    """scores.csv with `lr` as the tables write it ("" for the baselines), or None when absent."""
    if not Path(path).is_file():
        return None
    scores = pd.read_csv(path, dtype={"lr": str})
    return scores.assign(lr=scores["lr"].fillna(""))


def view(frame, inputs=RAW, adaptation="none"):
    """The rows of scores.csv or predictions.csv of one input variant and adaptation (None stays None)."""
    if frame is None:
        return None
    for column, value in (("inputs", inputs), ("adaptation", adaptation)):
        if column in frame:
            frame = frame[frame[column].replace("", np.nan).fillna(RAW if column == "inputs" else "none") == value]
    return frame


class Chips:
    """The per-chip predictions of every run (predictions.csv) and its score row (scores.csv), by RUN key.

    A run's chips are usable when predictions.csv names the ship of every chip and the run's scores.csv row agrees
    with its record (check): otherwise the tables were not rebuilt since the grid changed, and the run gets no
    interval."""

    def __init__(self, predictions=None, scores=None):
        self.scores = scores
        self.runs, self.stale = {}, set()
        if predictions is not None and len(predictions):
            columns = [c for c in ("true", "pred", "group") if c in predictions]
            for key, part in predictions.sort_values("path", kind="stable").groupby(list(RUN), sort=False):
                self.runs[(*key[:-1], int(key[-1]))] = tuple(part[c].to_numpy() for c in columns)
        self.score_rows = {} if scores is None else {run_key(r): r for r in scores.to_dict("records")}

    @classmethod
    def read(cls, output_dir, inputs=RAW, adaptation="none"):
        """From <output_dir>/predictions.csv and scores.csv (either may be absent): the rows of one input variant
        and adaptation (default: the study's inputs, unadapted; tables written before those columns hold only
        them)."""
        path = Path(output_dir, "predictions.csv")
        predictions = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None
        return cls(view(predictions, inputs, adaptation), view(read_scores(Path(output_dir, "scores.csv")), inputs,
                                                               adaptation))

    @property
    def usable(self):
        return bool(self.runs)

    def check(self, per_run, chosen=()):
        """Mark stale the runs of `per_run` (report.py's rows from the records) whose scores.csv row is missing or
        differs from the record (macro-F1), or is not `selected` there while the row's lr_status is in `chosen`
        (the rate report.py shows as chosen on validation): the tables were written before that record."""
        for row in per_run.to_dict("records"):
            key = run_key(row)
            found = self.score_rows.get(key)
            if found is None or abs(float(found["f1_macro"]) - float(row["f1_macro"])) > SCORE_SLACK or (
                    row.get("lr_status") in chosen and str(found.get("selected")) != "True"):
                self.stale.add(key)
        return len(self.stale)

    def arm(self, key):
        """(true, pred, groups) of the run `key` (RUN), chips sorted by path; None when absent, stale or without
        ships."""
        found = None if key in self.stale else self.runs.get(key)
        if found is None or len(found) < 3 or (found[2] == "").any():
            return None
        return found

    def score(self, key, column):
        """A run's value in scores.csv (NaN when absent)."""
        row = self.score_rows.get(key)
        return np.nan if row is None or key in self.stale else row.get(column, np.nan)


def ships_per_test_set(manifests, chips):
    """{test set: (ships, chips)} of every test split: distinct `group` in the manifest's test split, or, for a set
    without a manifest at hand, in predictions.csv (the chips of one run)."""
    out = {}
    for name, m in manifests.items():
        test = m[m["split"] == "test"]
        if len(test):
            out[name] = (int(test["group"].nunique()), len(test))
    for key, (_, _, groups) in chips.runs.items() if chips is not None else ():
        if key[1] not in out and (groups != "").all():
            out[key[1]] = (len(set(groups)), len(groups))
    return out
