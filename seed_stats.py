"""Statistics over seeds and how the report writes them: mean ± sample std per group, paired differences,
and the markdown cells that never show a single seed as a mean (report.py and published.py use them).

    agg = aggregate_seeds(per_run, ["train_set", "test_set", "model", "imbalance"], ["f1_macro"])
    fmt(agg["f1_macro_mean"][0], agg["f1_macro_std"][0], agg["n_seeds"][0])    # '71.2 ± 1.3' or '71.2'
"""
import math

import pandas as pd


def aggregate_seeds(per_run, keys, values):
    """Mean and sample standard deviation (ddof = 1; NaN for a single seed) of `values` over the seeds of each
    group of `keys`, with `n_seeds` (how many seeds) and `seeds` (which); groups in first-seen order."""
    grouped = per_run.groupby(list(keys), sort=False)
    out = grouped[list(values)].agg(["mean", "std"])  # pandas' std is the sample standard deviation, ddof = 1
    out.columns = [f"{v}_{stat}" for v, stat in out.columns]
    out["n_seeds"] = grouped["seed"].nunique()
    out["seeds"] = grouped["seed"].agg(lambda s: " ".join(str(k) for k in sorted(set(s))))
    return out.reset_index()


def paired_differences(a, b, on, values, keep=()):
    """a - b per seed for the rows of `a` and `b` that agree on `on` and on the seed: a seed missing from
    either side drops out. Returns the rows of `a` that found a partner, `values` replaced by the
    differences, and the columns `keep` of the partner in b as <column>_base."""
    on, values, keep = list(on), list(values), [k for k in keep if k not in on]
    merged = a.merge(b[[*on, "seed", *values, *keep]], on=[*on, "seed"], suffixes=("", "_base"))
    for v in values:
        merged[v] = merged[v] - merged.pop(f"{v}_base")
    return merged


def imbalance_pairs(per_run, baseline, on=(), keep=()):
    """Each imbalance strategy minus `baseline` (macro-F1, and the rare class's recall, precision and F1 where
    `per_run` has them): same train set, test set, model and seed, and the same values of the further columns
    `on` (report.py: the protocol and the learning rate's pairing key); `keep`: columns of the baseline run kept
    as <column>_base."""
    base = per_run["imbalance"] == baseline
    values = ["f1_macro", *[v for v in ("rare_recall", "rare_precision", "rare_f1") if v in per_run]]
    return paired_differences(per_run[~base], per_run[base], ["train_set", "test_set", "model", *on], values, keep)


def transfer_pairs(per_run, on=(), keep=()):
    """Macro-F1 on a test set when trained on another set minus when trained on that test set itself: same
    model, imbalance strategy and seed (and further columns `on`; `keep` as in imbalance_pairs). What training
    on the other dataset costs."""
    own = per_run["train_set"] == per_run["test_set"]
    return paired_differences(per_run[~own], per_run[own], ["test_set", "model", "imbalance", *on], ["f1_macro"],
                              keep)


def fmt(mean, std=math.nan, n=1, signed=False, digits=1):
    """'71.2 ± 1.3' for a mean over n > 1 seeds, the plain number for a single value, '–' when absent."""
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
    if n > 1 and not pd.isna(std):
        text += f" ± {std:.{digits}f}"
    return text


def seeds_cell(n):
    """A seed count as a table cell: one seed is named as such, so its number is never read as a mean."""
    return "1 (single seed)" if n == 1 else f"n = {n}"


def seed_note(n_values):
    """How to read a table whose rows have these seed counts (no ± is promised where there is none)."""
    n_values = {int(n) for n in n_values}
    if n_values == {1}:
        return "Single seed: every number is one run's result, not a mean, and no spread can be given."
    note = "Mean ± sample standard deviation (ddof = 1) over the n seeds."
    return note + (" Rows marked single seed are one run's result." if 1 in n_values else "")


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
