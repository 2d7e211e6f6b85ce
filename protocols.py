"""How report.py reads each run's learning rate and protocol, which learning rate it shows, and how it says so.

    rows = protocols.run_columns(folder, record, test_set, result)  # lr, protocol, val score, degenerate flag
    per_run["lr_status"] = protocols.lr_status(per_run)            # CHOSEN, ONLY, UNCHOSEN or DROPPED
    shown = per_run[per_run["lr_status"] != protocols.DROPPED]      # what every table of the report uses

The learning rate of a (training set, model, imbalance strategy, protocol) is chosen on validation by the grid's
own rule, tables.selected_lrs (the `selected` column of scores.csv): the highest mean validation macro-F1 over
seeds, ties the smaller rate; a single rate is that rate; several rates without validation scores: none is
chosen, and each is shown as its own row. Nothing here picks by a test score. Runs of different protocols (the
earlier LEGACY records among them) are never averaged together: the protocol is part of every table's key.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd

import runs
import tables
from seed_stats import fmt
from sets import SETS, ordered

LEGACY_LABEL = "earlier records: stored batch-norm statistics, last epoch, no validation"
# How a row's learning rate stands (`lr_status`); DROPPED rows (rates not chosen on validation) are not shown.
CHOSEN, ONLY, UNCHOSEN, DROPPED = "chosen on validation", "only rate", "none chosen: no validation", "not chosen"
GROUP = ["train_set", "model", "imbalance", "protocol"]  # the configuration a learning rate is chosen for
RUN = [*GROUP, "lr", "seed"]  # one trained model
SHARE = f"{100 * tables.DEGENERATE_SHARE:g} %"


def protocol_label(name):
    """The protocol as the report's tables name it: LEGACY records get LEGACY_LABEL."""
    return LEGACY_LABEL if name == runs.LEGACY else name


def lr_cell(lr, status):
    """A learning rate as a table cell, with how it was chosen."""
    return f"{lr:g} ({status})"


def run_columns(folder, record, test_set, result):
    """The learning rate, protocol, validation score and degenerate flag of one run on one test set. The flag
    and the top class's share (percent) come from the record, or, for records written before they were (LEGACY),
    from the run's predictions_<test_set>.csv (tables.degenerate); NaN when neither is there."""
    p = record["protocol"]
    flag, share = result.get("degenerate"), result.get("top_share")
    predictions = Path(folder) / f"predictions_{test_set}.csv"
    if flag is None and predictions.is_file():
        pred = pd.read_csv(predictions, dtype=str, keep_default_na=False)["pred"]
        flag, share = tables.degenerate(pred, record["classes"])
    val = p.get("val_f1_macro")
    return {"lr": float(record["lr"]), "protocol": p["name"], "bn_recalibrate": p.get("bn_recalibrate"),
            "select": p.get("select"), "val": bool(p.get("val")),
            "val_f1_macro": math.nan if val is None else float(val),
            "degenerate": math.nan if flag is None else float(bool(flag)),
            "top_share": math.nan if share is None else float(share)}


def lr_status(per_run):
    """Per row of `per_run` (one per run and test set, with GROUP, lr, seed and val_f1_macro): CHOSEN (its rate
    won on validation), ONLY (the configuration has one rate), UNCHOSEN (several rates, no validation: each is
    shown) or DROPPED (another rate won on validation). The choice is tables.selected_lrs on one row per run."""
    cells = per_run.drop_duplicates(RUN).reset_index(drop=True)
    cells["selected"] = tables.selected_lrs(cells)
    cells["n_lrs"] = cells.groupby(GROUP, dropna=False)["lr"].transform("nunique")
    cells["any_selected"] = cells.groupby(GROUP, dropna=False)["selected"].transform("any")
    cells["lr_status"] = np.select([cells["n_lrs"] == 1, cells["selected"], ~cells["any_selected"]],
                                   [ONLY, CHOSEN, UNCHOSEN], DROPPED)
    status = cells.drop_duplicates([*GROUP, "lr"]).set_index([*GROUP, "lr"])["lr_status"]
    return [status[key] for key in per_run[[*GROUP, "lr"]].itertuples(index=False, name=None)]


def pairing_key(per_run):
    """What paired differences match besides the seed: a chosen (or only) rate pairs with the chosen rate of the
    other configuration; a rate that was not chosen (several rates, no validation) only with the same rate."""
    chosen = per_run["lr_status"].isin([CHOSEN, ONLY])
    return per_run["lr"].map(lambda v: f"{v:g}").where(~chosen, "chosen")


def degenerate_counts(rows, keys):
    """Per group of `keys`: how many seeds predict one class for more than SHARE of the test chips
    (`n_degenerate`; NaN where no run says), in first-seen order like seed_stats.aggregate_seeds."""
    return rows.groupby(list(keys), sort=False)["degenerate"].sum(min_count=1).rename("n_degenerate").reset_index()


def degenerate_cell(n_degenerate, n_seeds):
    if pd.isna(n_degenerate):
        return "not recorded"
    n = int(n_degenerate)
    if n == 0:
        return "no"
    return "**yes**" if n_seeds == 1 else f"**{n} of {n_seeds} seeds**"


def degenerate_line(per_run):
    """The sentence counting degenerate cells: a cell (one trained model) counts when, on at least one test set,
    it predicts one class for more than SHARE of the chips."""
    known = per_run[per_run["degenerate"].notna()]
    if known.empty:
        return "Whether any cell predicts a single class is not recorded (no predictions files)."
    cells = known.groupby(RUN, dropna=False)["degenerate"].max()
    n, m = int(cells.sum()), len(cells)
    line = (f"{n} of {m} cells predict one class for more than {SHARE} of a test set's chips "
            "(column Degenerate; such a model has learnt no more than the class frequencies).")
    unknown = per_run.drop_duplicates(RUN).shape[0] - m
    return line + (f" {unknown} cell(s) have no record of it." if unknown else "")


def protocol_line(per_run):
    """The report header's line on how the records were trained and kept, per protocol, and the learning rates."""
    parts = []
    for name, g in per_run.groupby("protocol", sort=True):
        n_runs = len(g.drop_duplicates(RUN))
        n_runs = f"{n_runs} run{'' if n_runs == 1 else 's'}"
        lrs = ", ".join(f"{v:g}" for v in sorted(g["lr"].unique()))
        if name == runs.LEGACY:
            parts.append(f"`{name}` ({LEGACY_LABEL} split; learning rate(s) {lrs}; {n_runs})")
            continue
        val = "yes" if g["val"].all() else "no" if not g["val"].any() else "on some training sets"
        bn = "/".join(sorted(set(g["bn_recalibrate"].dropna())))
        select = "/".join(sorted(set(g["select"].dropna())))
        parts.append(f"`{name}` (batch-norm recalibration {bn}, epoch kept: {select}"
                     f"{' (validation macro-F1)' if select == 'best' else ''}, validation split {val}; learning "
                     f"rate(s) {lrs}; {n_runs})")
    lrs = ", ".join(f"{v:g}" for v in sorted(per_run["lr"].unique()))
    return (f"Protocol of the records: {'; '.join(parts)}. Learning rates trained: {lrs}; where several were "
            "trained, each table shows the one chosen on validation (mean validation macro-F1 over seeds).")


def interval(row):
    """' [low, high]' of the row's macro-F1 interval (main_section.main_intervals), '' where it has none."""
    low, high = row.get("f1_macro_ci_low", math.nan), row.get("f1_macro_ci_high", math.nan)
    return "" if pd.isna(low) or pd.isna(high) else f" [{low:.1f}, {high:.1f}]"


def best_line(main, floors):
    """Per training set, the model (with its strategy, rate and protocol) of the highest mean validation
    macro-F1, trained and tested on that set, with its test macro-F1 (and its 95 % interval where `main` has one)
    and the majority-class floor; a set without
    validation scores gets no best model, and the line says why. Never chosen by a test score."""
    own = main[main["train_set"] == main["test_set"]]
    floor = floors.set_index("set")["f1_macro"] if len(floors) else pd.Series(dtype=float)
    parts = []
    for s in ordered(own["test_set"], SETS):
        rows = own[(own["test_set"] == s) & own["val_f1_macro_mean"].notna()]
        if rows.empty:
            parts.append(f"{s}: no best model named, since its runs have no validation split (a best model "
                         "picked by test score would be tuned on the test set; dataset_prep.py --val-size gives "
                         "one)")
            continue
        r = rows.sort_values("val_f1_macro_mean", ascending=False, kind="stable").iloc[0]
        n = int(r["n_seeds"])
        below = " (not above it)" if r["f1_macro_mean"] <= floor.get(s, -math.inf) else ""
        parts.append(f"{s}: {r['model']} ({r['imbalance']}, lr {r['lr']:g}, {protocol_label(r['protocol'])}), "
                     f"validation macro-F1 {fmt(r['val_f1_macro_mean'], r['val_f1_macro_std'], n)}; test "
                     f"macro-F1 {fmt(r['f1_macro_mean'], r['f1_macro_std'], n)}{interval(r)} "
                     f"({'single seed' if n == 1 else f'n = {n}'}; majority-class floor {fmt(floor.get(s))}{below})")
    if not parts:
        return []
    return ["Best model per training set, chosen on validation (the highest mean validation macro-F1 over seeds, "
            "never a test score), trained and tested on that set: " + "; ".join(parts) + ".", ""]
