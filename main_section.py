"""Section 1 of report.md: the main table with each row's 95 % ship-bootstrap interval, the baselines floor,
size_only and shortcut as rows beside the models, and what the shortcut baseline says about the models.

    main = main_intervals(main, chips, classes, n=1000, seed=0)      # adds <metric>_ci_low/_ci_high, ci_from
    rows = baseline_rows(chips.scores, main)                          # scores.csv's baseline rows, as main rows
    lines = section_main(main, rows, floors, classes, per_run, interval_note(main, 1000, 0))
    lines += shortcut_lines(main, rows, rarest)                      # the shortcut baseline against the best model

Intervals (ship_stats.py): a single seed's row has the interval scores.csv gives it (bootstrap.ship_intervals,
computed when the grid's tables were rebuilt); a row pooling several seeds has the interval of the mean over the
seeds, from draws of the test set's ships shared by the seeds (ship_stats.pooled_interval). The baselines are
fitted once (baselines.py, seed 0): their rows are scores.csv's, interval included.
"""
import math

import pandas as pd

import protocols
import runs
from protocols import lr_cell, protocol_label
from seed_stats import fmt, md_table, seed_note, seeds_cell
from sets import SETS, ordered
from runs import lr_text
from ship_stats import pooled_interval
from tables import PROTOCOL_COLUMNS

METRICS = {"f1_macro": "Macro-F1", "balanced_accuracy": "Bal. acc.", "f1_weighted": "Weighted F1"}
CI_METRICS = ("f1_macro", "balanced_accuracy")  # the main table's columns that get an interval
MAIN_CSV = "report_main_table.csv"
BASELINE_PROTOCOL = "baseline"  # scores.csv's protocol of the baselines' rows (baselines.py)
BASELINE_NAMES = ("floor", "size_only", "shortcut")
PRELIMINARY, MIN_SEEDS = "†", 3  # a row with fewer seeds is marked preliminary
SHORTCUT_MARGIN = 5.0  # macro-F1 points: a shortcut this close to the best model (or above) is named
SHORTCUT_WORDS = "the models may be learning the same shortcuts (chip size, brightness)"


def ci_cell(low, high):
    """An interval as a table cell: '[27.6, 77.9]'; '–' when there is none."""
    return "–" if pd.isna(low) or pd.isna(high) else f"[{low:.1f}, {high:.1f}]"


def _seed_keys(row):
    seeds = [int(s) for s in str(row["seeds"]).split()]
    base = (row["train_set"], row["test_set"], row["model"], row["imbalance"], row["protocol"], lr_text(row["lr"]))
    return [(*base, s) for s in seeds]


def main_intervals(main, chips, classes, n, seed):
    """`main` with <m>_ci_low, <m>_ci_high for CI_METRICS and `ci_from` (how the row's interval was made: "scores.csv"
    for one seed, "pooled" for several, "" for none: a run without ships in predictions.csv or with stale tables)."""
    main = main.copy()
    out = {f"{m}_ci_{side}": [] for m in CI_METRICS for side in ("low", "high")}
    how = []
    for _, row in main.iterrows():
        keys = _seed_keys(row)
        arms = [chips.arm(k) for k in keys] if chips is not None else [None]
        from_scores = len(keys) == 1 and chips is not None and not any(
            pd.isna(chips.score(keys[0], f"{m}_ci_low")) for m in CI_METRICS)
        for m in CI_METRICS:
            if from_scores:
                low, high = chips.score(keys[0], f"{m}_ci_low"), chips.score(keys[0], f"{m}_ci_high")
            elif all(a is not None for a in arms):
                low, high = pooled_interval(arms, classes, m, n, seed)[1]
            else:
                low, high = math.nan, math.nan
            out[f"{m}_ci_low"].append(low)
            out[f"{m}_ci_high"].append(high)
        how.append("scores.csv" if from_scores else "pooled" if all(a is not None for a in arms) else "")
    return main.assign(**out, ci_from=how)


def baseline_rows(scores, main):
    """The baselines' rows of scores.csv for the (training set, test set) pairs of `main`, in main's columns
    (<metric>_mean; one fit: n_seeds 1, no spread), with their intervals and degenerate flags."""
    if scores is None or main.empty:
        return pd.DataFrame()
    rows = scores[(scores["protocol"] == BASELINE_PROTOCOL) & scores["model"].isin(BASELINE_NAMES)]
    pairs = set(zip(main["train_set"], main["test_set"]))
    rows = rows[[p in pairs for p in zip(rows["train_set"], rows["test_set"])]]
    if rows.empty:
        return pd.DataFrame()
    keys = ("train_set", "test_set", "model", "imbalance", "lr", "seed")
    values = [c for c in rows.columns if c not in keys and c not in PROTOCOL_COLUMNS and "_ci_" not in c]
    out = rows[["train_set", "test_set", "model", "imbalance", "protocol", "seed",
                *[c for c in rows.columns if "_ci_" in c]]].copy()
    for v in values:
        out[f"{v}_mean"] = pd.to_numeric(rows[v], errors="coerce")
    out["n_degenerate"] = rows["degenerate"].map(lambda v: float(str(v) == "True"))
    out = out.assign(lr=math.nan, lr_status="", val_f1_macro_mean=math.nan, n_seeds=1, seeds=rows["seed"].astype(str),
                     ci_from="scores.csv")
    out = _pool_fits(out, values)
    order = {b: i for i, b in enumerate(BASELINE_NAMES)}
    return runs.sort_frame(out.assign(_b=out["model"].map(order)), ["train_set", "test_set", "_b"]).drop(columns="_b")


def _pool_fits(out, values):
    """One row per baseline and (training set, test set): a pool of split seeds (pooling.py) has one fit per split,
    averaged here (mean, sample std, n_seeds fits, their seeds; the interval is main_intervals' over the fits)."""
    keys = ["train_set", "test_set", "model", "imbalance", "protocol"]
    grouped = out.groupby(keys, sort=False)
    if (grouped.size() == 1).all():
        return out
    means = [f"{v}_mean" for v in values]
    pooled = grouped[means].mean()
    pooled[[f"{v}_std" for v in values]] = grouped[means].std(ddof=1).to_numpy()
    pooled["n_degenerate"] = grouped["n_degenerate"].sum()
    pooled["n_seeds"] = grouped.size()
    pooled["seeds"] = grouped["seed"].agg(lambda s: " ".join(str(k) for k in sorted(set(s), key=int)))
    return pooled.reset_index().assign(lr=math.nan, lr_status="", val_f1_macro_mean=math.nan, ci_from="")


def best_config(main, train_set):
    """The row of `main` (trained and tested on train_set) of the highest mean validation macro-F1 (ties: the first
    in table order), as protocols.best_line names it; None without validation scores."""
    rows = main[(main["train_set"] == train_set) & (main["test_set"] == train_set) & main["val_f1_macro_mean"].notna()]
    if rows.empty:
        return None
    return rows.sort_values("val_f1_macro_mean", ascending=False, kind="stable").iloc[0]


def config_of(row):
    return row["model"], row["imbalance"], row["protocol"], row["lr"]


def describe(row):
    return f"{row['model']} ({row['imbalance']}, lr {row['lr']:g}, {protocol_label(row['protocol'])})"


def fits_cell(n):
    """A baseline's seeds cell: fitted once, or once per split of a pool (pooling.py)."""
    return "fitted once" if n == 1 else f"one fit per split, n = {n}"


def _seeds_cell(n):
    return seeds_cell(n) + (f" {PRELIMINARY}" if n < MIN_SEEDS else "")


def _row_cells(r, classes, baseline):
    n = int(r["n_seeds"])
    values = [*METRICS, *[f"{c}_f1" for c in classes]]
    cells = [fmt(r[f"{v}_mean"], r.get(f"{v}_std", math.nan), n) for v in values]
    for i, m in ((1, "balanced_accuracy"), (0, "f1_macro")):  # each interval right after its metric
        cells.insert(i + 1, ci_cell(r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")))
    degenerate = protocols.degenerate_cell(r["n_degenerate"], n)
    if baseline:
        return [r["train_set"], r["test_set"], r["model"], r["imbalance"], BASELINE_PROTOCOL, "–",
                fits_cell(n), "–", *cells, degenerate]
    return [r["train_set"], r["test_set"], r["model"], r["imbalance"], protocol_label(r["protocol"]),
            lr_cell(r["lr"], r["lr_status"]), _seeds_cell(n),
            fmt(r["val_f1_macro_mean"], r["val_f1_macro_std"], n), *cells, degenerate]


def table_rows(main, baselines, classes):
    """The main table's rows: per training and test set, the models, then the baselines."""
    frames = [main.assign(_kind=0)] + ([baselines.assign(_kind=1)] if len(baselines) else [])
    both = runs.sort_frame(pd.concat(frames, ignore_index=True), ["train_set", "test_set", "_kind"])
    return [_row_cells(r, classes, r["_kind"] == 1) for _, r in both.iterrows()]


def interval_note(main, n, seed):
    """The method note under the main table: what the intervals are and how they were computed."""
    pooled = (main["n_seeds"] > 1).any()
    text = ("Intervals: 95 % percentile intervals from a bootstrap over the test set's ships (all chips of a ship "
            "drawn together: the ship, not the chip, is the unit of evidence). A single seed's row, and each "
            "baseline's, has the interval of scores.csv (bootstrap.ship_intervals, as the grid's tables were "
            "built).")
    if pooled:
        text += (f" A row pooling several seeds has the interval of the mean over its seeds: {n} replicates "
                 f"(numpy.random.default_rng({seed}), report.py --bootstrap), each drawing the test set's ships "
                 "once with replacement and scoring every seed's predictions on that same resample, the statistic "
                 "being the mean of the seeds' scores (a helper sharing the draws like bootstrap.paired_difference, "
                 "not ship_intervals on the seeds' concatenated predictions). It covers which ships happened to be "
                 "in the test set, not the spread between seeds, which the sample standard deviation gives.")
    missing = main["ci_from"].eq("").sum()
    if missing:
        text += (f" {missing} row(s) have no interval: their runs' chips are not in predictions.csv with their "
                 "ships, or the tables are older than the records (rebuild them with `python test_models.py "
                 "--aggregate-only`).")
    return text


def section_main(main, baselines, floors, classes, per_run, note):
    """The main table (the learning rate chosen on validation, protocol, intervals and degenerate flag per row, the
    baselines beside the models), the best model per training set chosen on validation (protocols.best_line), and
    the majority-class floor where the grid has no baseline rows."""
    lines = ["## 1. How well does each model classify?", "",
             "Percent (scikit-learn on each run's saved per-chip predictions), every model tested on every "
             "set, at the learning rate chosen on validation (column LR says how it was chosen)"
             + (", with the baselines of baselines.py beside the models (protocol `baseline`: fitted on the "
                "training split, no learning rate). " if len(baselines) else ". ")
             + seed_note(main["n_seeds"]), "", *protocols.best_line(main, floors),
             protocols.degenerate_line(per_run), ""]
    header = ["Train", "Test", "Model", "Imbalance", "Protocol", "LR", "Seeds", "Val. macro-F1",
              "Macro-F1", "Macro-F1 95 % CI", "Bal. acc.", "Bal. acc. 95 % CI", "Weighted F1",
              *[f"F1 {c}" for c in classes], "Degenerate"]
    lines += [md_table(header, table_rows(main, baselines, classes)), ""]
    if (main["n_seeds"] < MIN_SEEDS).any():
        lines += [f"{PRELIMINARY} Preliminary: fewer than {MIN_SEEDS} seeds; the mean, its spread and its interval "
                  "may still move with more seeds.", ""]
    lines += [note, "", f"Unrounded values: [`{MAIN_CSV}`]({MAIN_CSV}).", ""]
    if len(baselines):
        lines += ["Baselines (rows `baseline`): `floor` predicts the training split's majority class for every "
                  "chip (a model not above it has learnt nothing useful); `size_only` sees only the ship's AIS "
                  "length and width; `shortcut` sees only image statistics without ship shape (chip size, "
                  "brightness, the sea). A model that does no better than `shortcut` may use the same shortcuts.",
                  ""]
    elif len(floors):
        lines += [("Floor: predicting the test split's most frequent class for every chip (from the "
                   "manifests); a model below it has learnt nothing useful:"), "",
                  md_table(["Test set", "Majority class", "Accuracy", *METRICS.values()],
                           [[f["set"], f["majority"], *[fmt(f[k]) for k in ("accuracy", *METRICS)]]
                            for _, f in floors.iterrows()]), ""]
    return lines


def _best_on(main, train_set, test_set):
    """(the best model's row on test_set, how it was chosen): the row of the configuration chosen on validation
    (best_config), else the highest test macro-F1 of the training set's models on that test set."""
    best = best_config(main, train_set)
    rows = main[(main["train_set"] == train_set) & (main["test_set"] == test_set)]
    if best is not None:
        same = rows[[config_of(r) == config_of(best) for _, r in rows.iterrows()]]
        if len(same):
            return same.iloc[0], "chosen on validation"
    if rows.empty:
        return None, ""
    top = rows.sort_values("f1_macro_mean", ascending=False, kind="stable").iloc[0]
    return top, "the highest test macro-F1, no validation split to choose on (this flatters the models)"


def shortcut_lines(main, baselines, rarest):
    """Per training and test set: the shortcut baseline's macro-F1 against the best model's, in words, and the F1
    of the rarest class for size_only, shortcut and the best model."""
    if baselines.empty or "shortcut" not in set(baselines["model"]):
        return []
    by = baselines.set_index(["train_set", "test_set", "model"])
    lines = []
    for train_set in ordered(main["train_set"], SETS):
        rare = rarest.get(train_set)
        for test_set in ordered(main.loc[main["train_set"] == train_set, "test_set"], SETS):
            best, how = _best_on(main, train_set, test_set)
            if best is None or (train_set, test_set, "shortcut") not in by.index:
                continue
            s, b = by.loc[(train_set, test_set, "shortcut"), "f1_macro_mean"], best["f1_macro_mean"]
            line = f"- Trained on {train_set}, tested on {test_set}: `shortcut` macro-F1 {fmt(s)} against {fmt(b)} " \
                f"for the best model, {describe(best)} ({how}): "
            if s >= b - SHORTCUT_MARGIN:
                line += (("above it" if s > b else f"within {b - s:.1f} points of it")
                         + f", so {SHORTCUT_WORDS} rather than the ships' shape.")
            else:
                line += f"{b - s:.1f} points below it."
            if rare is not None and f"{rare}_f1_mean" in by.columns:
                f1 = {m: by.loc[(train_set, test_set, m), f"{rare}_f1_mean"] if (train_set, test_set, m) in by.index
                      else math.nan for m in ("size_only", "shortcut")}
                line += (f" F1 of the rarest class ({rare}): size_only {fmt(f1['size_only'])}, shortcut "
                         f"{fmt(f1['shortcut'])}, the best model {fmt(best.get(f'{rare}_f1_mean'))}.")
            lines.append(line)
    if not lines:
        return []
    return [f"Shortcut check: where `shortcut` comes within {SHORTCUT_MARGIN:g} macro-F1 points of the best model "
            "(or above it), the models' score may rest on the same cues:", "", *lines, ""]
