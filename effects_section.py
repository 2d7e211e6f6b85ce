"""Sections 2 and 3 of report.md: each imbalance strategy against `none`, and a model trained on another set
against one trained on the test set itself, as paired ship-bootstrap differences pooled over seeds.

    effects = add_paired_intervals(effects, chips, classes, imbalance_arms(), imbalance_metrics(rarest), n, seed)
    lines = section_imbalance(per_run, effects, rarest, figure_lines, n_boot)

A difference of a row of `effects` (seed_stats.imbalance_pairs or transfer_pairs, aggregated over seeds with the
seeds kept) is ship_stats.paired over its seeds: arm a the reference run (the strategy `none`, or the run trained
on the test set), arm b the other, the same seed; both arms are on one test set, so one draw of its ships per
replicate serves both arms and every seed (bootstrap.paired_difference). A row gets <v>_diff, <v>_ci_low,
<v>_ci_high, <v>_covers_zero and <v>_sign_share per measure v, and n_pairs; where a run's chips are not at hand
(ship_stats.Chips.arm) the row keeps its mean ± std over seeds from the records and no interval.
"""
import math

import pandas as pd

from engine import IMBALANCE
from main_section import BASELINE_NAMES, BASELINE_PROTOCOL, fits_cell
from protocols import lr_cell, protocol_label
from seed_stats import fmt, md_table, seed_note, seeds_cell
from sets import SETS, ordered
from runs import lr_text
from ship_stats import paired

BASELINE = "none"  # the imbalance strategy every other one is compared with
EFFECTS_CSV = "report_effects.csv"
NO_EVIDENCE = "no evidence of a difference"
RARE_MEASURES = ("rare_recall", "rare_precision", "rare_f1")


def imbalance_metrics(rarest):
    """{measure: row -> metric name}: macro-F1, and the recall, precision and F1 of the training set's rarest
    class (None where it has none)."""
    def rare(kind):
        return lambda r: f"{rarest[r['train_set']]}_{kind}" if rarest.get(r["train_set"]) else None
    return {"f1_macro": lambda r: "f1_macro", **{f"rare_{k}": rare(k) for k in ("recall", "precision", "f1")}}


def imbalance_arms(row, seed):
    """(run of `none`, run of the strategy) of one seed of an imbalance effect row (ship_stats.RUN keys)."""
    base = (row["train_set"], row["test_set"], row["model"])
    return ((*base, BASELINE, row["protocol"], lr_text(row["lr_base"]), seed),
            (*base, row["imbalance"], row["protocol"], lr_text(row["lr"]), seed))


def transfer_arms(row, seed):
    """(run trained on the test set, run trained elsewhere) of one seed of a transfer gap row."""
    rest = (row["model"], row["imbalance"], row["protocol"])
    return ((row["test_set"], row["test_set"], *rest, lr_text(row["lr_base"]), seed),
            (row["train_set"], row["test_set"], *rest, lr_text(row["lr"]), seed))


def add_paired_intervals(effects, chips, classes, arms_of, measures, n, seed):
    """`effects` with the paired interval columns (module docstring) of every measure; NaN where a run's chips
    are missing."""
    if effects.empty:
        return effects
    out = {k: [] for v in measures for k in (f"{v}_diff", f"{v}_ci_low", f"{v}_ci_high", f"{v}_covers_zero",
                                              f"{v}_sign_share")}
    n_pairs = []
    for _, row in effects.iterrows():
        seeds = [int(s) for s in str(row["seeds"]).split()]
        keys = [arms_of(row, s) for s in seeds]
        pairs = [(chips.arm(a), chips.arm(b)) for a, b in keys] if chips is not None else []
        ok = bool(pairs) and all(a is not None and b is not None for a, b in pairs)
        n_pairs.append(len(pairs) if ok else math.nan)
        for v, name_of in measures.items():
            name = name_of(row)
            known = name == "f1_macro" or (name or "").rpartition("_")[0] in classes
            d = paired(pairs, classes, name, n, seed) if ok and known else {}
            for k in ("diff", "ci_low", "ci_high", "covers_zero", "sign_share"):
                out[f"{v}_{k}"].append(d.get(k, math.nan))
    return effects.assign(**out, n_pairs=n_pairs)


def diff_cell(row, v):
    """A paired difference as a table cell: '+3.2 [-1.0, +7.5]; sign in 2 of 2 seeds' and, where the interval
    covers 0, '; no evidence of a difference'; without an interval the records' mean ± std over seeds."""
    low, high = row.get(f"{v}_ci_low", math.nan), row.get(f"{v}_ci_high", math.nan)
    if pd.isna(low) or pd.isna(high):
        mean = row.get(f"{v}_mean", math.nan)
        return "–" if pd.isna(mean) else \
            f"{fmt(mean, row.get(f'{v}_std', math.nan), int(row['n_seeds']), signed=True)} (no interval)"
    n = int(row["n_pairs"])
    text = (f"{row[f'{v}_diff']:+.1f} [{low:+.1f}, {high:+.1f}]; sign in {round(row[f'{v}_sign_share'] * n)} of "
            f"{n} seed{'s' if n > 1 else ''}")
    return text + (f"; {NO_EVIDENCE}" if row[f"{v}_covers_zero"] else "")


def spread_note(rows, measures):
    """For cells without an interval (no chips at hand): how to read the records' numbers they show instead."""
    if all(rows[f"{v}_ci_low"].notna().all() for v in measures if f"{v}_ci_low" in rows) and \
            all(f"{v}_ci_low" in rows for v in measures):
        return ""
    return (" Cells marked (no interval) show the records' difference instead (predictions.csv with the chips' "
            "ships is not at hand or is older than the records): " + seed_note(rows["n_seeds"]))


def _lr_pair(r):
    if r["protocol"] == BASELINE_PROTOCOL:
        return "–"
    return f"{lr_cell(r['lr'], r['lr_status'])} / {r['lr_base']:g}"


def _reading(rows, rarest):
    """Sentences naming the rows where the rare class's recall rises and its precision falls, both intervals
    clear of 0: more predictions of the class, not better ones."""
    out = []
    for _, r in rows.iterrows():
        if r.get("rare_recall_ci_low", math.nan) > 0 and r.get("rare_precision_ci_high", math.nan) < 0:
            rare = rarest.get(r["train_set"])
            out.append(f"- {r['model']} with `{r['imbalance']}` on {r['test_set']}: recall of {rare} "
                       f"{r['rare_recall_diff']:+.1f}, precision {r['rare_precision_diff']:+.1f}: it predicts "
                       f"{rare} more often, not better (F1 {r['rare_f1_diff']:+.1f}).")
    return out


def section_imbalance(per_run, effects, rarest, figure_lines, n_boot):
    lines = ["## 2. Does an imbalance strategy help the rare class?", ""]
    if effects.empty:
        strategies = ", ".join(ordered(per_run["imbalance"], IMBALANCE))
        return lines + [(f"Not answerable from this grid: it needs runs with `{BASELINE}` and with another "
                         f"imbalance strategy for the same seeds and protocol (strategies run: {strategies})."), ""]
    lines += [f"Each strategy minus `{BASELINE}` in percentage points, paired by seed within one protocol (a seed "
              f"counts only when both runs have it; Pairs = number of seeds), each at the learning rate chosen on "
              f"validation for it (LR: strategy's rate / `{BASELINE}`'s rate): macro-F1, and the recall, precision "
              "and F1 of the training set's rarest class (a strategy that only makes a model predict the rare "
              "class more often raises its recall and lowers its precision; F1 says whether it helped). Each cell: "
              f"the mean difference over the seeds, its 95 % paired bootstrap interval ({n_boot} replicates of the "
              "test set's ships, the same ships for both arms and every seed: bootstrap.paired_difference), and in "
              f"how many seeds the difference has that sign; \"{NO_EVIDENCE}\" where the interval covers 0. The "
              "rows tested on the training set's own test split come first: they are the headline."
              + spread_note(effects, ("f1_macro", *RARE_MEASURES)), "", *figure_lines]
    for train_set in ordered(effects["train_set"], SETS):
        part = effects[effects["train_set"] == train_set]
        part = part.assign(_own=(part["test_set"] != train_set).astype(int))
        part = part.sort_values("_own", kind="stable")
        rare = rarest.get(train_set, "the rarest class")
        rows = [[r["test_set"], r["model"], r["imbalance"], protocol_label(r["protocol"]), _lr_pair(r),
                 seeds_cell(int(r["n_seeds"])), *[diff_cell(r, v) for v in ("f1_macro", *RARE_MEASURES)]]
                for _, r in part.iterrows()]
        header = ["Test", "Model", "Strategy", "Protocol", "LR", "Pairs", "Δ macro-F1", f"Δ recall {rare}",
                  f"Δ precision {rare}", f"Δ F1 {rare}"]
        lines += [f"### Trained on {train_set} (rarest class: {rare})", "", md_table(header, rows), ""]
        reading = _reading(part, rarest)
        if reading:
            lines += [f"More predictions of {rare}, not better ones (recall up and precision down, both intervals "
                      "clear of 0):", "", *reading, ""]
    return lines + [f"Unrounded values: [`{EFFECTS_CSV}`]({EFFECTS_CSV}) (kind `imbalance_vs_{BASELINE}`).",
                    ""]


def baseline_gaps(baselines):
    """The baselines' transfer gaps from their scores.csv rows (main_section.baseline_rows): macro-F1 on a test set
    when fitted on another set minus when fitted on the test set itself, one fit each (seed 0; in a pool of
    split seeds the mean over the splits' fits, paired split by split)."""
    if baselines.empty:
        return pd.DataFrame()
    own = baselines[baselines["train_set"] == baselines["test_set"]].set_index(["test_set", "model"])
    rows = []
    for _, r in baselines[baselines["train_set"] != baselines["test_set"]].iterrows():
        if (r["test_set"], r["model"]) in own.index and r["model"] in BASELINE_NAMES:
            base = own.loc[(r["test_set"], r["model"])]
            rows.append({"train_set": r["train_set"], "test_set": r["test_set"], "model": r["model"],
                         "imbalance": r["imbalance"], "protocol": BASELINE_PROTOCOL, "lr": math.nan,
                         "lr_status": "", "lr_base": math.nan, "f1_macro_mean": r["f1_macro_mean"]
                         - base["f1_macro_mean"], "f1_macro_std": math.nan, "n_seeds": r["n_seeds"],
                         "seeds": str(r["seeds"])})
    return pd.DataFrame(rows)


def section_transfer(gaps, heatmap_lines, n_boot):
    lines = ["## 3. Does a model trained on one dataset work on the other?", "", *heatmap_lines]
    if gaps.empty:
        return lines + [("No transfer gap: it needs, for the same model, strategy, protocol and seed, a run "
                         "trained on the test set itself and one trained on another set."), ""]
    rows = [[r["train_set"], r["test_set"], r["model"], r["imbalance"], protocol_label(r["protocol"]), _lr_pair(r),
             fits_cell(int(r["n_seeds"])) if r["protocol"] == BASELINE_PROTOCOL else seeds_cell(int(r["n_seeds"])),
             diff_cell(r, "f1_macro")] for _, r in gaps.iterrows()]
    return lines + ["Transfer gap: macro-F1 on a test set when trained on another set, minus when trained on "
                    "that test set itself (same model, strategy, protocol and seed; LR: the rate of the run trained "
                    "elsewhere / of the run trained on the test set, each chosen on validation), percentage "
                    "points, with the baselines (rows `baseline`, fitted once) beside the models. Each cell: the "
                    f"mean difference over the seeds, its 95 % paired bootstrap interval ({n_boot} replicates of the "
                    "test set's ships, shared by both arms and every seed) and in how many seeds the difference has "
                    f"that sign; \"{NO_EVIDENCE}\" where the interval covers 0." + spread_note(gaps, ("f1_macro",)),
                    "",
                    md_table(["Train", "Test", "Model", "Imbalance", "Protocol", "LR", "Pairs",
                              "Δ macro-F1 vs trained on the test set"], rows),
                    "", f"Unrounded values: [`{EFFECTS_CSV}`]({EFFECTS_CSV}) (kind `transfer_vs_own`).", ""]
