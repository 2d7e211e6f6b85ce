"""The report's cross-sensor section: does a model trained on one sensor work on the other, and what do physical
scale, clutter radiometry and label-free adaptation change? (report.py calls section_cross.)

    lines = cross_section.section_cross(output_dir, classes, n_boot, seed, report_dir)

From the grid's tables (scores.csv, predictions.csv: tables.py), both directions, FUSAR-Ship -> OpenSARShip and
OpenSARShip -> FUSAR-Ship, for every model trained without rebalancing (imbalance none) at the learning rate chosen
on validation, every input variant of the grid (inputs.py: raw, m<M>, m<M>-clutter, ...) and every adaptation
(adaptation.py: none, adabn, prior): balanced accuracy and macro-F1, the mean over seeds with a 95 % ship-bootstrap
interval (ship_stats.pooled_interval), and the paired difference against the same model's raw, unadapted run of
the same seed (ship_stats.paired: one draw of the test set's ships shared by both arms where they hold the same
chips). The baselines size_only and shortcut stand beside them on the same inputs (baselines.py fits them per
input variant), with the shortcut's per-class F1: what size and shape-free statistics alone give on each input.
Written beside the report: report_cross_sensor.csv (every row of the tables) and report_figures/cross_sensor.png.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import runs  # noqa: E402
from models import MODEL_CHOICES  # noqa: E402
from seed_stats import fmt, md_table  # noqa: E402
from ship_stats import Chips, paired, pooled_interval, read_scores, run_key, view  # noqa: E402

DIRECTIONS = (("fusar", "opensarship"), ("opensarship", "fusar"))
METRICS = {"balanced_accuracy": "Balanced accuracy", "f1_macro": "Macro-F1"}
BASELINES = ("size_only", "shortcut")
ADAPTATION_ORDER = ("none", "adabn", "prior")
CSV = "report_cross_sensor.csv"
FIGURE = "report_figures/cross_sensor.png"


def cross_rows(scores):
    """The rows of scores.csv the section shows: both directions, models at imbalance none and the baselines,
    selected learning rates, no LEGACY records."""
    direction = pd.Series([p in DIRECTIONS for p in zip(scores["train_set"], scores["test_set"])], index=scores.index)
    rows = scores[direction & (scores["protocol"] != runs.LEGACY)
                  & scores["selected"].astype(str).eq("True")]
    keep = rows["model"].isin(BASELINES) | (rows["imbalance"] == "none")
    rows = rows[keep & (rows["model"] != "floor")].copy()
    rows["inputs"] = rows["inputs"].fillna(runs.RAW).replace("", runs.RAW)
    rows["adaptation"] = rows["adaptation"].fillna("none").replace("", "none")
    return rows


def variant_order(values):
    """Input variants: raw first, then by name."""
    return sorted(set(values), key=lambda v: (v != runs.RAW, v))


class Arms:
    """Per-chip arms (true, pred, groups) of the runs: the tables read once, a Chips per (inputs, adaptation)."""

    def __init__(self, output_dir, scores):
        path = Path(output_dir, "predictions.csv")
        self.predictions = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None
        self.scores, self._views = scores, {}

    def of(self, row):
        key = (row["inputs"], row["adaptation"])
        if key not in self._views:
            self._views[key] = Chips(view(self.predictions, *key), view(self.scores, *key))
        return self._views[key].arm(run_key(row))


def summarise(rows, arms, classes, n_boot, seed):
    """One line per (direction, model, inputs, adaptation): n seeds, each metric's mean with its pooled interval and
    its paired difference against raw, unadapted runs of the same seeds."""
    out = []
    keys = ["train_set", "test_set", "model", "imbalance", "inputs", "adaptation"]
    for key, group in rows.groupby(keys, sort=False):
        line = dict(zip(keys, key), n=group["seed"].nunique())
        base = rows[(rows["train_set"] == key[0]) & (rows["test_set"] == key[1]) & (rows["model"] == key[2])
                    & (rows["imbalance"] == key[3]) & (rows["inputs"] == runs.RAW) & (rows["adaptation"] == "none")]
        base = {int(r["seed"]): r for r in base.to_dict("records")}
        records = group.to_dict("records")
        own = [arms.of(r) for r in records]
        pairs = [(arms.of(base[int(r["seed"])]), arms.of(r)) for r in records if int(r["seed"]) in base]
        for metric in METRICS:
            line[metric] = group[metric].mean()
            line[f"{metric}_low"] = line[f"{metric}_high"] = np.nan
            if n_boot and own and all(a is not None for a in own):
                _, (line[f"{metric}_low"], line[f"{metric}_high"]) = pooled_interval(own, classes, metric, n_boot,
                                                                                    seed)
            is_base = key[4] == runs.RAW and key[5] == "none"
            usable = pairs and all(a is not None and b is not None for a, b in pairs) and not is_base
            diff = paired(pairs, classes, metric, n_boot, seed) if usable and n_boot else None
            line[f"{metric}_diff"] = diff["diff"] if diff else np.nan
            line[f"{metric}_diff_low"] = diff["ci_low"] if diff else np.nan
            line[f"{metric}_diff_high"] = diff["ci_high"] if diff else np.nan
        out.append(line)
    return pd.DataFrame(out)


def _order(table):
    order = {m: i for i, m in enumerate([*MODEL_CHOICES, *BASELINES])}
    variants = {v: i for i, v in enumerate(variant_order(table["inputs"]))}
    return table.assign(_d=[DIRECTIONS.index(p) for p in zip(table["train_set"], table["test_set"])],
                        _m=table["model"].map(lambda m: order.get(m, len(order))),
                        _i=table["inputs"].map(variants),
                        _a=table["adaptation"].map(lambda a: ADAPTATION_ORDER.index(a)
                                                   if a in ADAPTATION_ORDER else 9)
                        ).sort_values(["_d", "_m", "_i", "_a"]).drop(columns=["_d", "_m", "_i", "_a"])


def _cell(row, metric):
    text = fmt(row[metric])
    if not pd.isna(row[f"{metric}_low"]):
        text += f" [{row[f'{metric}_low']:.1f}, {row[f'{metric}_high']:.1f}]"
    return text


def _diff(row, metric):
    if pd.isna(row[f"{metric}_diff"]):
        return "–"
    return f"{row[f'{metric}_diff']:+.1f} [{row[f'{metric}_diff_low']:+.1f}, {row[f'{metric}_diff_high']:+.1f}]"


def table_lines(table):
    """A markdown table per direction."""
    lines = []
    for train_set, test_set in DIRECTIONS:
        part = table[(table["train_set"] == train_set) & (table["test_set"] == test_set)]
        if not len(part):
            continue
        rows = [[r["model"], r["inputs"], r["adaptation"], str(int(r["n"])), _cell(r, "balanced_accuracy"),
                 _cell(r, "f1_macro"), _diff(r, "balanced_accuracy"), _diff(r, "f1_macro")]
                for r in part.to_dict("records")]
        lines += [f"**{train_set} → {test_set}**", "",
                  md_table(["Model", "Inputs", "Adaptation", "Seeds", "Balanced acc. [95 % CI]",
                            "Macro-F1 [95 % CI]", "Δ bal. acc. vs raw", "Δ macro-F1 vs raw"], rows), ""]
    return lines


def shortcut_lines(rows, classes):
    """The shortcut baseline's per-class F1 on each cross-sensor test, by input variant."""
    part = rows[(rows["model"] == "shortcut") & (rows["adaptation"] == "none")]
    if not len(part):
        return []
    out = []
    for r in _order(part.assign(n=1)).to_dict("records"):
        out.append([f"{r['train_set']} → {r['test_set']}", r["inputs"],
                    *(fmt(r.get(f"{c}_f1")) for c in classes), fmt(r["f1_macro"])])
    return ["The shortcut baseline (a random forest on shape-free image statistics: chip size, mean, median, "
            "spread, 99th percentile, sea border) per class, F1 in percent, by input variant:", "",
            md_table(["Train → test", "Inputs", *classes, "Macro-F1"], out), ""]


def plot(table, path):
    """Macro-F1 per model and variant, a panel per direction, with the 95 % intervals."""
    models = [m for m in [*MODEL_CHOICES, *BASELINES] if m in set(table["model"])]
    variants = list(dict.fromkeys(f"{i}/{a}" for i, a in zip(table["inputs"], table["adaptation"])))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.2 * len(models) * 2 + 3), 4.2), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(variants))
    for ax, (train_set, test_set) in zip(axes[0], DIRECTIONS):
        part = table[(table["train_set"] == train_set) & (table["test_set"] == test_set)]
        for j, variant in enumerate(variants):
            inputs, adaptation = variant.split("/")
            sub = part[(part["inputs"] == inputs) & (part["adaptation"] == adaptation)].set_index("model")
            x = np.arange(len(models)) + (j - (len(variants) - 1) / 2) * width
            y = [sub["f1_macro"].get(m, np.nan) for m in models]
            low = [sub["f1_macro_low"].get(m, np.nan) for m in models]
            high = [sub["f1_macro_high"].get(m, np.nan) for m in models]
            err = np.nan_to_num([np.subtract(y, low), np.subtract(high, y)])
            ax.bar(x, y, width, yerr=np.clip(err, 0, None), capsize=2, label=variant)
        ax.set_xticks(np.arange(len(models)), models, rotation=30, ha="right")
        ax.set_title(f"{train_set} → {test_set}")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("macro-F1 (%)")
    axes[0][1].legend(title="inputs / adaptation", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def left_out_lines(records):
    """What each input variant left out, from the records' input_variant (the same for every cell of a variant)."""
    found = {}
    for rec in records:
        variant = rec.get("input_variant") or {}
        for where, reasons in (variant.get("left_out") or {}).items():
            found.setdefault(variant.get("name"), {})[where] = reasons
    lines = []
    for name, per_split in sorted(found.items()):
        parts = [f"{sum(r.values())} of {where} ({'; '.join(f'{n} {why}' for why, n in r.items())})"
                 for where, r in sorted(per_split.items())]
        lines.append(f"- {name} leaves out {', '.join(parts)}: its scores are on the chips it keeps.")
    return lines + [""] if lines else []


def section_cross(output_dir, classes, n_boot, seed, report_dir, records=()):
    """The section's markdown lines; writes CSV and FIGURE under output_dir. records: the grid's, whose
    input_variant says which chips each variant left out."""
    output_dir = Path(output_dir)
    lines = ["## Across sensors: inputs and adaptation", ""]
    scores = read_scores(output_dir / "scores.csv")
    rows = cross_rows(scores) if scores is not None and "inputs" in scores else pd.DataFrame()
    if not len(rows):
        return lines + ["No model was trained on FUSAR-Ship or OpenSARShip and tested on the other (or the tables "
                        "predate input variants: rerun test_models.py --aggregate-only).", ""]
    table = _order(summarise(rows, Arms(output_dir, scores), classes, n_boot, seed))
    runs.write_atomic(output_dir / CSV, lambda p: table.to_csv(p, index=False, float_format="%.2f",
                                                               lineterminator="\n"))
    plot(table, output_dir / FIGURE)
    variants = ", ".join(variant_order(table["inputs"]))
    lines += [(f"Each model trained on one sensor's set and tested on the other's, for the input variants {variants} "
               "(raw: the study's whole-chip resize; m<M>: square M-metre pixels, one field of view for every chip; "
               "-clutter: amplitude over the sea-border median in dB; -match: blurred to Sentinel-1 IW resolution) "
               "and the label-free adaptations (adabn: batch-norm statistics re-estimated on the target test images; "
               "prior: the target class priors re-estimated by EM from the model's own probabilities). Mean over "
               "seeds with a 95 % ship-bootstrap interval; Δ: the paired difference against the same model's raw, "
               "unadapted runs of the same seeds, with its interval (an interval that excludes 0 is a change the "
               "test ships support). Models at imbalance none and the learning rate chosen on validation; "
               f"size_only and shortcut are fitted on the same inputs. Every row is in [{CSV}]({CSV})."), ""]
    lines += left_out_lines(records)
    lines += table_lines(table)
    lines += shortcut_lines(rows, classes)
    return lines + [f"![cross-sensor macro-F1]({Path(FIGURE).as_posix()})", ""]
