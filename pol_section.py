"""The report's polarisation section: does the cross-polarised channel help? (report.py calls section_pol.)

    lines = pol_section.section_pol(output_dir, classes, n_boot, seed)

A stacked set (dataset_prep.py --pol stack: `opensarship-stack`) holds the dual-pol chips of its co set as
(co, cross) chips, each in its co chip's split (stacking.py). For every model, imbalance strategy and learning rate
trained on both sets (within-set tests, raw inputs, the learning rate chosen on validation), this section compares
the two on the SAME test chips: the co runs' predictions restricted to the chips that have a stacked twin
(stacking.twin_key), against the stacked runs' on those twins. Balanced accuracy and macro-F1: the mean over seeds
with a 95 % ship-bootstrap interval (ship_stats.pooled_interval), and the paired difference stack - co over the
seeds both arms have, one draw of the test ships shared by both arms (ship_stats.paired). Written beside the report:
report_pol.csv and report_figures/co_vs_stack.png.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import runs  # noqa: E402
from runs import lr_text  # noqa: E402
from models import MODEL_CHOICES  # noqa: E402
from seed_stats import md_table  # noqa: E402
from sets import STACKED  # noqa: E402
from ship_stats import paired, pooled_interval, read_scores, view  # noqa: E402
from stacking import twin_key  # noqa: E402

METRICS = {"balanced_accuracy": "Balanced accuracy", "f1_macro": "Macro-F1"}
ARM_KEYS = ("model", "imbalance", "protocol", "lr", "seed")
CSV = "report_pol.csv"
FIGURE = "report_figures/co_vs_stack.png"


def within_rows(scores, name):
    """scores.csv rows of the models trained and tested on `name`: selected learning rate, no LEGACY records."""
    rows = scores[(scores["train_set"] == name) & (scores["test_set"] == name) & (scores["protocol"] != runs.LEGACY)
                  & scores["selected"].astype(str).eq("True") & ~scores["model"].isin(("floor", "size_only",
                                                                                         "shortcut"))]
    return rows.assign(lr=rows["lr"].map(lr_text))


def arms_of(predictions, name):
    """{ARM_KEYS: DataFrame of path, key, true, pred, group} of the within-set runs on `name`."""
    part = predictions[(predictions["train_set"] == name) & (predictions["test_set"] == name)]
    part = part.assign(key=[twin_key(p) for p in part["path"]], lr=part["lr"].map(lr_text))
    return {(k[0], k[1], k[2], k[3], int(k[4])): g.sort_values("key", kind="stable")
            for k, g in part.groupby(list(ARM_KEYS), sort=False)}


def paired_arms(co_run, stack_run):
    """((true, pred, groups) of the co run on the stacked run's chips, the same of the stacked run), or None when the
    co run lacks a twin of some stacked chip or a ship is missing."""
    co = co_run.set_index("key").reindex(stack_run["key"])
    if co["pred"].isna().any() or (stack_run["group"] == "").any():
        return None
    return tuple((f["true"].to_numpy(), f["pred"].to_numpy(), f["group"].to_numpy())
                 for f in (co.reset_index(), stack_run))


def compare(scores, predictions, base, stacked, classes, n_boot, seed):
    """One row per (model, imbalance, lr) trained on both sets: metrics of both arms on the stacked chips and the
    paired difference stack - co."""
    co_arms, stack_arms = arms_of(predictions, base), arms_of(predictions, stacked)
    rows = within_rows(scores, stacked)
    out = []
    for (model, imbalance, lr), group in rows.groupby(["model", "imbalance", "lr"], sort=False):
        pairs = []
        for r in group.to_dict("records"):
            key = (model, imbalance, r["protocol"], lr, int(r["seed"]))
            if key in co_arms and key in stack_arms:
                arms = paired_arms(co_arms[key], stack_arms[key])
                pairs += [arms] if arms is not None else []
        if not pairs:
            continue
        line = {"co_set": base, "stack_set": stacked, "model": model, "imbalance": imbalance, "lr": lr,
                "n": len(pairs), "chips": len(pairs[0][1][0]), "ships": len(set(pairs[0][1][2]))}
        for metric in METRICS:
            for side, k in (("co", 0), ("stack", 1)):
                point, (low, high) = pooled_interval([p[k] for p in pairs], classes, metric, max(n_boot, 1), seed)
                low, high = (low, high) if n_boot else (np.nan, np.nan)  # --bootstrap 0: no intervals
                line.update({f"{side}_{metric}": point, f"{side}_{metric}_low": low, f"{side}_{metric}_high": high})
            diff = paired(pairs, classes, metric, n_boot, seed) if n_boot else None
            line.update({f"diff_{metric}": diff["diff"] if diff else np.nan,
                         f"diff_{metric}_low": diff["ci_low"] if diff else np.nan,
                         f"diff_{metric}_high": diff["ci_high"] if diff else np.nan})
        out.append(line)
    return pd.DataFrame(out)


def _cell(row, name):
    text = f"{row[name]:.1f}"
    return text if pd.isna(row[f"{name}_low"]) else f"{text} [{row[f'{name}_low']:.1f}, {row[f'{name}_high']:.1f}]"


def _signed(row, name):
    text = f"{row[name]:+.1f}"
    return text if pd.isna(row[f"{name}_low"]) else \
        f"{text} [{row[f'{name}_low']:+.1f}, {row[f'{name}_high']:+.1f}]"


def plot(table, path):
    """Macro-F1 of co and stack per model (and imbalance), with the 95 % intervals."""
    labels = [f"{m}\n{i}" for m, i in zip(table["model"], table["imbalance"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(table) + 2), 3.8))
    for j, side in enumerate(("co", "stack")):
        y = table[f"{side}_f1_macro"].to_numpy(float)
        err = np.nan_to_num([y - table[f"{side}_f1_macro_low"].to_numpy(float),
                             table[f"{side}_f1_macro_high"].to_numpy(float) - y])
        ax.bar(x + (j - 0.5) * 0.38, y, 0.38, yerr=np.clip(err, 0, None), capsize=3,
               label={"co": "co (one channel)", "stack": "stack (co + cross)"}[side])
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("macro-F1 (%) on the same test chips")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def section_pol(output_dir, classes, n_boot, seed):
    """The section's markdown lines (none when the grid has no stacked cells); writes CSV and FIGURE."""
    output_dir = Path(output_dir)
    scores = read_scores(output_dir / "scores.csv")
    path = output_dir / "predictions.csv"
    if scores is None or not path.is_file() or not scores["train_set"].isin(list(STACKED)).any():
        return []
    predictions = view(pd.read_csv(path, dtype=str, keep_default_na=False))
    scores = view(scores)
    order = {m: i for i, m in enumerate(MODEL_CHOICES)}
    tables = [compare(scores, predictions, base, stacked, classes, n_boot, seed) for stacked, base in STACKED.items()]
    table = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) else None
    lines = ["## Polarisation: co against stack", ""]
    if table is None:
        return lines + ["The grid has stacked cells but no co cell of the same model, imbalance strategy, learning "
                        "rate and seed to pair them with: train both (test_models.py --datasets opensarship and "
                        "--datasets opensarship-stack, same options).", ""]
    table = table.sort_values(["stack_set", "model", "imbalance"], key=lambda s: s.map(order) if s.name == "model"
                              else s, kind="stable")
    runs.write_atomic(output_dir / CSV, lambda p: table.to_csv(p, index=False, float_format="%.2f",
                                                               lineterminator="\n"))
    plot(table, output_dir / FIGURE)
    rows = [[r["stack_set"], r["model"], r["imbalance"], str(int(r["n"])), f"{int(r['chips'])} / {int(r['ships'])}",
             _cell(r, "co_f1_macro"), _cell(r, "stack_f1_macro"), _signed(r, "diff_f1_macro"),
             _signed(r, "diff_balanced_accuracy")] for r in table.to_dict("records")]
    return lines + [
        "The same models trained on the co-polarised chips (one channel) and on the stacked co + cross chips of the "
        "dual-pol scenes, both tested on the stacked set's test chips (the co runs' predictions on the twins of "
        "those chips; the same ships, the same split). Mean over seeds with a 95 % ship-bootstrap interval; Δ: the "
        "paired difference stack - co with its interval (one draw of the test ships for both arms). Single-pol "
        f"scenes have no stacked chips, so the co numbers here differ from the main table's. Every row is in [{CSV}]"
        f"({CSV}).", "",
        md_table(["Stacked set", "Model", "Imbalance", "Seeds", "Test chips / ships", "Co macro-F1 [95 % CI]",
                  "Stack macro-F1 [95 % CI]", "Δ macro-F1", "Δ bal. acc."], rows), "",
        f"![co against stack]({Path(FIGURE).as_posix()})", ""]
