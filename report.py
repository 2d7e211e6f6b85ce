"""Report: the study's three questions answered from a finished grid's records, with honest statistics.

    python report.py --output-dir . --data-dir data/prepared --exp-dir Exp_images
    python test_models.py ... --aggregate-only     # the grid rebuilds the report together with its tables

Reads, never changes: the prepared manifests (<data-dir>/<set>/manifest.csv, summary.json), the finished grid
cells (<output-dir>/runs/<train_set>/<model>/<imbalance>/seed<k>/record.json), the grid's figures
(<output-dir>/figures/) and, when present, grad_cams.py's results (<exp-dir>/cam_summary.csv, cam_scores.csv,
figures/*.png). Writes into <output-dir>:
    report.md                             the report; figures are linked relative to it
    report_main_table.csv                 the numbers behind the main table, unrounded (percent)
    report_effects.csv                    the paired differences behind the imbalance and transfer tables
    report_figures/imbalance_effects.png  each strategy minus `none` per seed pair, on the training set's test

The three questions of Awais & Reggiannini (ICEAA 2024), in the order the report answers them:
1. How well does each model tell Cargo, Fishing and Tanker apart, and does it clear the floor of predicting
   the majority class for every chip?
2. Does an imbalance strategy help the rare class? Each strategy is compared with `none` seed by seed.
3. Does a model trained on one dataset work on the other? Train x test heat maps and paired transfer gaps.

Statistics: the per-cell metrics are the ones the grid recorded (metrics.score_row: scikit-learn on the
saved per-chip predictions, percent). Over seeds the report gives mean ± sample standard deviation (ddof = 1)
and the number of seeds n; a cell with one seed shows its plain number marked "single seed", never as a mean.
Differences are paired: a seed enters only when both runs of the pair have it. The rarest class of a training
set is the one with the fewest training chips in its manifest (the records' train_counts without a manifest).

Synthetic data: a set counts as synthetic when its summary.json says `"synthetic": true` (dataset_prep.py
--synthetic) or, for sets prepared otherwise, when its manifest shows it: a chip's `source` path has a folder
named `synthetic` (where the generator writes the raw data) or a chip has a `mask` (exact ship masks exist
only for synthetic chips; the real datasets ship none). The report then says so at the top, naming the sets.
"""
import argparse
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path, PurePosixPath

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import pandas as pd

from metrics import score_row
from models import MODEL_NAMES

SET_ORDER = ("fusar", "opensarship", "mixed")  # the prepared sets in the order the study presents them
BASELINE = "none"  # the imbalance strategy every other one is compared with
FIGURES = "report_figures"
MAIN_CSV = "report_main_table.csv"
EFFECTS_CSV = "report_effects.csv"
METRICS = {"f1_macro": "Macro-F1", "balanced_accuracy": "Bal. acc.", "f1_weighted": "Weighted F1"}
SEED_DIR = re.compile(r"^seed(\d+)$")  # finished cells only: temporary sibling folders carry other names

# The only numbers typed into this file: the published results, from Awais & Reggiannini, "Deep Learning for
# SAR Ship classification: Focus on Unbalanced Datasets and Inter-Dataset Generalization", ICEAA 2024,
# doi 10.1109/ICEAA61917.2024.10701968 (shared/design/reference-study.md). Percent, weighted averages, one
# seed, trained and tested on the same dataset; the best model was the fine-tuned VGG16 on each dataset;
# their "merged" set is our `mixed`.
PUBLISHED_BEST = {
    "fusar": {"accuracy": 73.05, "f1_weighted": 70.54,
              "recall": {"Cargo": 90.2, "Fishing": 31.2, "Tanker": 60.3}},
    "opensarship": {"accuracy": 74.56, "f1_weighted": 67.47,
                    "recall": {"Cargo": 98.2, "Fishing": 26.3, "Tanker": 12.6}},
    "mixed": {"accuracy": 79.08, "f1_weighted": 76.76,
              "recall": {"Cargo": 94.6, "Fishing": 27.3, "Tanker": 40.9}},
}
PUBLISHED_MODEL = "fine_vgg"
# Same paper: several of its models predicted Cargo for every chip; (accuracy, weighted F1) of doing so.
PUBLISHED_ALL_CARGO = {"fusar": (67.06, 53.84), "opensarship": (72.14, 60.46), "mixed": (71.92, 60.18)}
PUBLISHED_WHY = (
    "its code split 20 % train / 80 % test (the index used the wrong way round), kept training one model "
    "object across datasets, reported a per-class precision that is always 100 % and weighted (never "
    "macro) F1, built VGG/ResNet without ImageNet weights, tested on other geometry than it trained on, fed "
    "OpenSARShip as rendered Patch_RGB figures and ran one seed; here every cell is a fresh model on a "
    "grouped 80/20 split, scored with scikit-learn from saved predictions"
)


# ----------------------------------------------------------------------------------------------------------
# reading the inputs

def _set_key(name):
    return (SET_ORDER.index(name), name) if name in SET_ORDER else (len(SET_ORDER), name)


def _model_key(name):
    return (MODEL_NAMES.index(name), name) if name in MODEL_NAMES else (len(MODEL_NAMES), name)


def _imbalance_key(name):
    return (name != BASELINE, name)


_KEYS = {"train_set": _set_key, "test_set": _set_key, "set": _set_key, "model": _model_key,
         "imbalance": _imbalance_key}


def sort_cells(frame, columns):
    """Rows in the study's order: sets fusar, opensarship, mixed; models as MODEL_NAMES; `none` first."""
    return frame.sort_values(list(columns), key=lambda c: c.map(_KEYS[c.name]) if c.name in _KEYS else c,
                             kind="stable").reset_index(drop=True)


def load_manifests(data_dir):
    """{set name: manifest DataFrame (all strings)} per <data_dir>/<set>/manifest.csv, in study order."""
    found = {p.parent.name: p for p in Path(data_dir).glob("*/manifest.csv")}
    return {name: pd.read_csv(found[name], dtype=str, keep_default_na=False)
            for name in sorted(found, key=_set_key)}


def load_summary(data_dir, name):
    """The set's summary.json as a dict ({} when absent)."""
    path = Path(data_dir, name, "summary.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def is_synthetic(manifest, summary=None):
    """True when the set's chips come from the synthetic generator (the rule is in the module docstring);
    `summary` is the set's summary.json as a dict, or None."""
    if summary and summary.get("synthetic") is True:
        return True

    def in_synthetic_folder(source):
        return "synthetic" in PurePosixPath(str(source).replace("\\", "/")).parts

    sources = manifest["source"] if "source" in manifest else pd.Series(dtype=str)
    masks = manifest["mask"] if "mask" in manifest else pd.Series(dtype=str)
    return bool(sources.map(in_synthetic_folder).any() or masks.str.strip().ne("").any())


def class_counts(manifests):
    """Chips per set, split and class: one row per (set, split), a column per class and `total`."""
    rows = [{"set": name, "split": split, **part["class"].value_counts().to_dict()}
            for name, m in manifests.items() for split, part in m.groupby("split")]
    if not rows:
        return pd.DataFrame()
    counts = pd.DataFrame(rows).fillna(0)
    classes = sorted(c for c in counts.columns if c not in ("set", "split"))
    counts = counts[["set", "split", *classes]].astype({c: int for c in classes})
    counts["total"] = counts[classes].sum(axis=1)
    counts["_train_first"] = counts["split"] != "train"
    return sort_cells(counts, ["set", "_train_first", "split"]).drop(columns="_train_first")


def rarest_classes(counts, runs):
    """{train set: the class with the fewest training chips} (ties: the first in class order), from the
    manifests' counts, else from the records' train_counts."""
    rarest = {}
    if len(counts):
        classes = [c for c in counts.columns if c not in ("set", "split", "total")]
        for _, row in counts[counts["split"] == "train"].iterrows():
            rarest[row["set"]] = min(classes, key=lambda c: row[c])
    for _, rec in runs:
        train_counts = rec.get("train_counts")
        if rec["train_set"] not in rarest and train_counts:
            rarest[rec["train_set"]] = min(sorted(train_counts), key=lambda c: train_counts[c])
    return rarest


def load_runs(output_dir):
    """The finished grid cells: [(cell folder, record dict)]."""
    return [(path.parent, json.loads(path.read_text()))
            for path in sorted(Path(output_dir, "runs").glob("*/*/*/seed*/record.json"))
            if SEED_DIR.match(path.parent.name)]


def per_run_metrics(runs, rarest):
    """One row per finished cell and test set: the cell's keys, the metrics its record holds
    (metrics.score_row, percent) and the recall of its training set's rarest class (`rare_recall`)."""
    rows = []
    for _, rec in runs:
        rare = rarest.get(rec["train_set"], "")
        for test_set, result in rec["test_sets"].items():
            scores = result["metrics"]
            rows.append({"train_set": rec["train_set"], "test_set": test_set, "model": rec["model"],
                         "imbalance": rec["imbalance"], "seed": int(rec["seed"]), **scores,
                         "rare_class": rare, "rare_recall": scores.get(f"{rare}_recall", math.nan)})
    return sort_cells(pd.DataFrame(rows), ["train_set", "test_set", "model", "imbalance", "seed"])


# ----------------------------------------------------------------------------------------------------------
# statistics over seeds

def aggregate_seeds(per_run, keys, values):
    """Mean and sample standard deviation (ddof = 1; NaN for a single seed) of `values` over the seeds of each
    group of `keys`, with `n_seeds` (how many seeds) and `seeds` (which); groups in first-seen order."""
    grouped = per_run.groupby(list(keys), sort=False)
    out = grouped[list(values)].agg(["mean", "std"])  # pandas' std is the sample standard deviation, ddof = 1
    out.columns = [f"{v}_{stat}" for v, stat in out.columns]
    out["n_seeds"] = grouped["seed"].nunique()
    out["seeds"] = grouped["seed"].agg(lambda s: " ".join(str(k) for k in sorted(set(s))))
    return out.reset_index()


def paired_differences(a, b, on, values):
    """a - b per seed for the rows of `a` and `b` that agree on `on` and on the seed: a seed missing from
    either side drops out. Returns the rows of `a` that found a partner, `values` replaced by the
    differences."""
    on, values = list(on), list(values)
    merged = a.merge(b[[*on, "seed", *values]], on=[*on, "seed"], suffixes=("", "_base"))
    for v in values:
        merged[v] = merged[v] - merged.pop(f"{v}_base")
    return merged


def imbalance_pairs(per_run):
    """Each imbalance strategy minus `none`: same train set, test set, model and seed."""
    base = per_run["imbalance"] == BASELINE
    return paired_differences(per_run[~base], per_run[base], ["train_set", "test_set", "model"],
                              ["f1_macro", "rare_recall"])


def transfer_pairs(per_run):
    """Macro-F1 on a test set when trained on another set minus when trained on that test set itself: same
    model, imbalance strategy and seed. What training on the other dataset costs."""
    own = per_run["train_set"] == per_run["test_set"]
    return paired_differences(per_run[~own], per_run[own], ["test_set", "model", "imbalance"], ["f1_macro"])


def majority_floors(manifests):
    """Per set: the scores (metrics.score_row) of predicting the test split's most frequent class for every
    test chip."""
    rows = []
    for name, m in manifests.items():
        y_true = m.loc[m["split"] == "test", "class"].tolist()
        if y_true:
            majority = pd.Series(y_true).value_counts().sort_index().idxmax()
            rows.append({"set": name, "majority": majority,
                         **score_row(y_true, [majority] * len(y_true), sorted(m["class"].unique()))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# formatting

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


def relative(path, report_dir):
    """`path` as seen from the folder of report.md, with forward slashes (what markdown links want)."""
    return Path(os.path.relpath(path, report_dir)).as_posix()


def image_lines(paths, report_dir):
    """A markdown image link per path, relative to the folder of report.md, each in its own paragraph."""
    return [line for p in paths for line in (f"![{Path(p).stem}]({relative(p, report_dir)})", "")]


# ----------------------------------------------------------------------------------------------------------
# the report's own figure

def plot_imbalance_effects(pairs, rarest, path):
    """Each strategy minus `none` on the training set's own test split: macro-F1 (top row) and the recall of
    the rarest class (bottom row), a column per training set, a dot per seed pair, a bar for their mean and
    the sample std as error bar."""
    own = pairs[pairs["train_set"] == pairs["test_set"]]
    train_sets = sorted(set(own["train_set"]), key=_set_key)
    models = sorted(set(own["model"]), key=_model_key)
    strategies = sorted(set(own["imbalance"]), key=_imbalance_key)
    width = 0.8 / len(strategies)
    panel_width = max(2.6, 0.5 * len(models) * len(strategies))
    fig, axes = plt.subplots(2, len(train_sets), squeeze=False, sharey="row", layout="constrained",
                             figsize=(1.0 + panel_width * len(train_sets), 5.2))
    rows = [("f1_macro", "Δ macro-F1 (points)"), ("rare_recall", "Δ recall of the rarest class (points)")]
    for j, train_set in enumerate(train_sets):
        for i, (value, label) in enumerate(rows):
            ax = axes[i][j]
            ax.axhline(0, color="grey", lw=0.8)
            for k, strategy in enumerate(strategies):
                part = own[(own["train_set"] == train_set) & (own["imbalance"] == strategy)]
                for m, model in enumerate(models):
                    d = part.loc[part["model"] == model, value].dropna()
                    if d.empty:
                        continue
                    x = m + (k - (len(strategies) - 1) / 2) * width
                    ax.bar(x, d.mean(), width * 0.9, color=f"C{k}", alpha=0.5, capsize=3,
                           yerr=d.std() if len(d) > 1 else None,
                           label=strategy if (i, j, m) == (0, 0, 0) else None)
                    ax.plot([x] * len(d), d, "o", color=f"C{k}", ms=3)
            ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"trained and tested on {train_set}" if i == 0 else
                         f"rarest class of {train_set}: {rarest.get(train_set, 'unknown')}", fontsize=8)
    fig.legend(loc="outside lower center", ncols=len(strategies), fontsize=8, title_fontsize=8,
               title=f"strategy minus {BASELINE}")
    n = own.groupby(["train_set", "model", "imbalance"])["seed"].nunique()
    if n.max() == 1:
        title = "dot: the single seed pair (single seed: no spread)"
    else:
        pairs_n = f"{n.min()}" if n.min() == n.max() else f"{n.min()} to {n.max()}"
        title = f"dot: one seed pair; bar: their mean; error bar: sample std (n = {pairs_n} pairs)"
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# sections

def section_data(manifests, counts, rarest):
    lines = ["## Data", ""]
    if not manifests:
        return lines + ["No prepared manifests were found, so the chip counts are unknown.", ""]
    classes = [c for c in counts.columns if c not in ("set", "split", "total")]
    lines += ["Chips per prepared set, split and class (from each set's `manifest.csv`):", "",
              md_table(["Set", "Split", *classes, "Total"],
                       [[r["set"], r["split"], *[r[c] for c in classes], r["total"]]
                        for _, r in counts.iterrows()]), ""]
    if rarest:
        named = sorted(rarest.items(), key=lambda kv: _set_key(kv[0]))
        lines += ["Rarest class (fewest training chips) per training set: "
                  + "; ".join(f"{s}: {c}" for s, c in named) + ".", ""]
    return lines


def section_main(main, floors, classes):
    lines = ["## 1. How well does each model classify?", "",
             "Percent (scikit-learn on each run's saved per-chip predictions), every model tested on every "
             "set. " + seed_note(main["n_seeds"]), ""]
    own = main[main["train_set"] == main["test_set"]]
    floor = floors.set_index("set")["f1_macro"] if len(floors) else pd.Series(dtype=float)
    best = []
    for s in sorted(set(own["test_set"]), key=_set_key):
        r = own[own["test_set"] == s].sort_values("f1_macro_mean", ascending=False, kind="stable").iloc[0]
        n = int(r["n_seeds"])
        below = " (not above it)" if r["f1_macro_mean"] <= floor.get(s, -math.inf) else ""
        best.append(f"{s}: {r['model']} ({r['imbalance']}) {fmt(r['f1_macro_mean'], r['f1_macro_std'], n)} "
                    f"({'single seed' if n == 1 else f'n = {n}'}; majority-class floor {fmt(floor.get(s))}"
                    f"{below})")
    if best:
        lines += ["Best macro-F1 trained and tested on the same set: " + "; ".join(best) + ".", ""]
    values = [*METRICS, *[f"{c}_f1" for c in classes]]
    header = ["Train", "Test", "Model", "Imbalance", "Seeds", *METRICS.values(),
              *[f"F1 {c}" for c in classes]]
    rows = [[r["train_set"], r["test_set"], r["model"], r["imbalance"], seeds_cell(int(r["n_seeds"])),
             *[fmt(r[f"{v}_mean"], r[f"{v}_std"], int(r["n_seeds"])) for v in values]]
            for _, r in main.iterrows()]
    lines += [md_table(header, rows), "", f"Unrounded values: [`{MAIN_CSV}`]({MAIN_CSV}).", ""]
    if len(floors):
        lines += [("Floor: predicting the test split's most frequent class for every chip (from the "
                   "manifests); a model below it has learnt nothing useful:"), "",
                  md_table(["Test set", "Majority class", "Accuracy", *METRICS.values()],
                           [[f["set"], f["majority"], *[fmt(f[k]) for k in ("accuracy", *METRICS)]]
                            for _, f in floors.iterrows()]), ""]
    return lines


def section_published(per_run, floors):
    lines = ["## The published study beside this run", "",
             (f"Published: the best model of Awais & Reggiannini (ICEAA 2024), a fine-tuned VGG16, trained "
              f"and tested on the same set, one seed, percent; and the scores its weaker models reached by "
              f"predicting Cargo for everything. Ours: `{PUBLISHED_MODEL}` with imbalance `{BASELINE}` (the "
              f"study's setting), and the majority-class floor of our test splits. They differ because "
              f"{PUBLISHED_WHY}."),
             ""]
    recall_classes = list(PUBLISHED_BEST["fusar"]["recall"])
    ours = per_run[(per_run["train_set"] == per_run["test_set"]) & (per_run["model"] == PUBLISHED_MODEL)
                   & (per_run["imbalance"] == BASELINE)]
    floors = floors.set_index("set") if len(floors) else pd.DataFrame()
    columns = ["accuracy", "f1_weighted", *[f"{c}_recall" for c in recall_classes]]
    dashes = ["–"] * len(recall_classes)
    rows = []
    for s, pub in PUBLISHED_BEST.items():
        rows.append([s, "published, fine-tuned VGG16", seeds_cell(1), f"{pub['accuracy']:.2f}",
                     f"{pub['f1_weighted']:.2f}", *[f"{pub['recall'][c]:.1f}" for c in recall_classes]])
        mine = ours[ours["test_set"] == s]
        if len(mine):
            agg = aggregate_seeds(mine, ["test_set"], [c for c in columns if c in mine]).iloc[0]
            n = int(agg["n_seeds"])
            rows.append([s, f"ours, `{PUBLISHED_MODEL}`", seeds_cell(n),
                         *[fmt(agg.get(f"{c}_mean"), agg.get(f"{c}_std"), n) for c in columns]])
        else:
            rows.append([s, f"ours, `{PUBLISHED_MODEL}`", "no run", "–", "–", *dashes])
        acc, wf1 = PUBLISHED_ALL_CARGO[s]
        rows.append([s, "published, all Cargo", "–", f"{acc:.2f}", f"{wf1:.2f}", *dashes])
        if s in floors.index:
            f = floors.loc[s]
            rows.append([s, f"ours, all {f['majority']}", "–", *[fmt(f.get(c)) for c in columns]])
    header = ["Set", "Source", "Seeds", "Accuracy", "Weighted F1", *[f"Recall {c}" for c in recall_classes]]
    return lines + [md_table(header, rows), ""]


def section_imbalance(per_run, pairs, effects, rarest, figure, report_dir):
    lines = ["## 2. Does an imbalance strategy help the rare class?", ""]
    if pairs.empty:
        strategies = ", ".join(sorted(set(per_run["imbalance"]), key=_imbalance_key))
        return lines + [(f"Not answerable from this grid: it needs runs with `{BASELINE}` and with another "
                         f"imbalance strategy for the same seeds (strategies run: {strategies})."), ""]
    lines += [f"Each strategy minus `{BASELINE}` in percentage points, paired by seed (a seed counts only "
              f"when both runs have it; n = number of pairs), for macro-F1 and for the recall of the "
              f"training set's rarest class. " + seed_note(effects["n_seeds"]), "",
              *image_lines([figure], report_dir)]
    tests = sorted(set(effects["test_set"]), key=_set_key)
    for train_set in sorted(set(effects["train_set"]), key=_set_key):
        part = effects[effects["train_set"] == train_set]
        rare = rarest.get(train_set, "the rarest class")
        rows = []
        for (model, strategy), g in part.groupby(["model", "imbalance"], sort=False):
            g = g.set_index("test_set")
            cells = [fmt(g.loc[t, f"{v}_mean"], g.loc[t, f"{v}_std"], int(g.loc[t, "n_seeds"]), signed=True)
                     if t in g.index else "–" for v in ("f1_macro", "rare_recall") for t in tests]
            pairs_n = ", ".join(seeds_cell(n) for n in sorted(set(g["n_seeds"])))
            rows.append([model, strategy, pairs_n, *cells])
        header = ["Model", "Strategy", "Pairs", *[f"Δ macro-F1 on {t}" for t in tests],
                  *[f"Δ recall {rare} on {t}" for t in tests]]
        lines += [f"### Trained on {train_set} (rarest class: {rare})", "", md_table(header, rows), ""]
    return lines + [f"Unrounded values: [`{EFFECTS_CSV}`]({EFFECTS_CSV}) (kind `imbalance_vs_{BASELINE}`).",
                    ""]


def section_transfer(output_dir, per_run, gaps):
    lines = ["## 3. Does a model trained on one dataset work on the other?", "",
             ("Macro-F1, training set (rows) x test set (columns), a panel per model, mean over the seeds "
              "(the grid's figures; the spread over seeds is in the main table):"), ""]
    heatmaps = [Path(output_dir, "figures", f"cross_dataset_f1_macro_{s}.png")
                for s in sorted(set(per_run["imbalance"]), key=_imbalance_key)]
    lines += image_lines([p for p in heatmaps if p.is_file()], output_dir)
    missing = [p.name for p in heatmaps if not p.is_file()]
    if missing:
        lines += [(f"Missing heat map(s): {', '.join(missing)} (rebuild them with `python test_models.py "
                   f"--aggregate-only --output-dir {output_dir}`)."), ""]
    if gaps.empty:
        return lines + [("No transfer gap: it needs, for the same model, strategy and seed, a run trained on "
                         "the test set itself and one trained on another set."), ""]
    rows = [[r["train_set"], r["test_set"], r["model"], r["imbalance"], seeds_cell(int(r["n_seeds"])),
             fmt(r["f1_macro_mean"], r["f1_macro_std"], int(r["n_seeds"]), signed=True)]
            for _, r in gaps.iterrows()]
    return lines + ["Transfer gap: macro-F1 on a test set when trained on another set, minus when trained on "
                    "that test set itself (same model, strategy and seed), percentage points. "
                    + seed_note(gaps["n_seeds"]), "",
                    md_table(["Train", "Test", "Model", "Imbalance", "Pairs",
                              "Δ macro-F1 vs trained on the test set"], rows),
                    "", f"Unrounded values: [`{EFFECTS_CSV}`]({EFFECTS_CSV}) (kind `transfer_vs_own`).", ""]


def section_gradcam(exp_dir, report_dir):
    """grad_cams.py's per set and model summary (cam_summary.csv), the grid cell it explained (cam_scores.csv
    `cell`) and its figures, linked where they lie."""
    lines = ["## Where do the models look? (Grad-CAM)", ""]
    summary_path, scores_path = Path(exp_dir, "cam_summary.csv"), Path(exp_dir, "cam_scores.csv")
    if not summary_path.is_file():
        return lines + [f"No Grad-CAM results: `{summary_path}` is absent (run grad_cams.py after the grid).",
                        ""]
    summary = sort_cells(pd.read_csv(summary_path), ["set", "model"])
    cells = pd.Series(dtype=str)
    if scores_path.is_file():
        scores = pd.read_csv(scores_path, dtype=str, keep_default_na=False)
        cells = scores.groupby(["set", "model"])["cell"].agg(
            lambda c: ", ".join(sorted({relative(p, report_dir) for p in c})))
    rows = [[r["set"], r["model"], f"{int(r['n'])} ({int(r['n_scored'])})", fmt(100 * r["on_ship_energy"]),
             fmt(100 * r["ship_area_fraction"]), fmt(r["lift"], digits=2), fmt(100 * r["peak_on_ship"]),
             cells.get((r["set"], r["model"]), "not recorded")] for _, r in summary.iterrows()]
    lines += [("Share of the Grad-CAM map's energy that falls on the ship, averaged over the explained test "
               "chips of each set, for the model trained on that set, against what a uniform map scores "
               "(the ship's share of the chip's area). Lift = on-ship energy / uniform baseline: 1 means the "
               "model looks at the ship no more than at the sea. Peak on ship: share of maps whose maximum "
               "lies on the ship. Scored chips have a known ship region and a non-empty map. Means over "
               "chips, for one trained model each."), "",
              md_table(["Set", "Model", "Chips (scored)", "On-ship energy %", "Uniform baseline %", "Lift",
                        "Peak on ship %", "Grid cell explained"], rows), ""]
    figures = sorted(Path(exp_dir, "figures").glob("*.png"))
    if not figures:
        return lines + [f"No Grad-CAM figures under `{Path(exp_dir, 'figures')}`.", ""]
    return lines + [f"Figures of grad_cams.py (in `{Path(exp_dir, 'figures')}`):", "",
                    *image_lines(figures, report_dir)]


def section_hardware(runs):
    records = [rec for _, rec in runs]

    def distinct(key):
        values = sorted({str(r[key]) for r in records if r.get(key) not in (None, "")})
        return ", ".join(f"`{v}`" for v in values) if values else "not recorded in the run records"

    def secs(v):
        return "not recorded" if pd.isna(v) else f"{v:.1f}"

    times = pd.DataFrame([{"train_set": r["train_set"], "model": r["model"], "train": r.get("train_seconds"),
                           "eval": r.get("eval_seconds")} for r in records])
    times[["train", "eval"]] = times[["train", "eval"]].astype(float)
    grouped = times.groupby(["train_set", "model"], sort=False)
    table = pd.DataFrame({"runs": grouped.size(), "train": grouped["train"].sum(min_count=1),
                          "eval": grouped["eval"].sum(min_count=1)}).reset_index()
    rows = [[r["train_set"], r["model"], r["runs"], secs(r["train"]), secs(r["eval"])]
            for _, r in sort_cells(table, ["train_set", "model"]).iterrows()]
    return ["## Hardware and time", "",
            f"- Device: {distinct('device')}", f"- Platform: {distinct('platform')}",
            f"- CPU count: {distinct('cpu_count')}", f"- torch: {distinct('torch_version')}", "",
            ("Seconds from the run records, summed over every finished run (all strategies and seeds) of a "
             "training set and model:"), "",
            md_table(["Train set", "Model", "Runs", "Training s", "Evaluation s"], rows), "",
            (f"Total over {len(records)} runs: training {secs(times['train'].sum(min_count=1))} s, "
             f"evaluation {secs(times['eval'].sum(min_count=1))} s."), "",
            ("- Data preparation: time not recorded (dataset_prep.py prints it but keeps timings out of its "
             "summaries, so that a rebuild gives identical files)"),
            "- Grad-CAM: time not recorded (grad_cams.py writes no timing)", ""]


# ----------------------------------------------------------------------------------------------------------
# entry points

def build_report(output_dir, data_dir, exp_dir):
    """Write report.md, report_main_table.csv, report_effects.csv and report_figures/ into output_dir from
    the finished cells under output_dir/runs, the manifests under data_dir and the Grad-CAM results under
    exp_dir. Returns the path of report.md."""
    output_dir, data_dir, exp_dir = Path(output_dir), Path(data_dir), Path(exp_dir)
    runs = load_runs(output_dir)
    if not runs:
        raise FileNotFoundError(f"no finished cells under {output_dir / 'runs'} (<train_set>/<model>/"
                                "<imbalance>/seed<k>/record.json): run python test_models.py first, or pass "
                                "--output-dir where it wrote them")
    manifests = load_manifests(data_dir)
    counts = class_counts(manifests)
    rarest = rarest_classes(counts, runs)
    floors = majority_floors(manifests)
    per_run = per_run_metrics(runs, rarest)
    classes = sorted({c for _, rec in runs for c in rec["classes"]})
    keys = ["train_set", "test_set", "model", "imbalance"]
    per_class = [f"{c}_{m}" for c in classes for m in ("f1", "recall")]
    main = aggregate_seeds(per_run, keys, ["accuracy", *METRICS, *per_class, "rare_recall"])
    pairs, gap_pairs = imbalance_pairs(per_run), transfer_pairs(per_run)
    effects = (sort_cells(aggregate_seeds(pairs, keys, ["f1_macro", "rare_recall"]), keys)
               if len(pairs) else pd.DataFrame())
    gaps = (sort_cells(aggregate_seeds(gap_pairs, keys, ["f1_macro"]), keys)
            if len(gap_pairs) else pd.DataFrame())

    fig_dir = output_dir / FIGURES
    shutil.rmtree(fig_dir, ignore_errors=True)  # the report's own figures only: none of an earlier grid stays
    fig_dir.mkdir(parents=True)
    figure = fig_dir / "imbalance_effects.png"
    if len(pairs):
        plot_imbalance_effects(pairs, rarest, figure)

    synthetic = [s for s, m in manifests.items() if is_synthetic(m, load_summary(data_dir, s))]
    seeds = sorted(set(per_run["seed"]))
    lines = ["# SAR ship classification: imbalance and cross-dataset generalisation", ""]
    if synthetic:
        lines += [(f"> **SYNTHETIC DATA.** The prepared set(s) {', '.join(synthetic)} come from the "
                   "synthetic generator (`dataset_prep.py --synthetic`), not from OpenSARShip or FUSAR-Ship: "
                   "the numbers below test the pipeline and say nothing about real SAR ships."), ""]
    elif not manifests:
        lines += [f"> No manifests under `{data_dir}`: whether the data is real or synthetic is unknown.", ""]
    lines += [(f"Generated by `report.py` from {len(runs)} finished runs under `runs/`: training sets "
              f"{', '.join(sorted(set(per_run['train_set']), key=_set_key))}; models "
              f"{', '.join(sorted(set(per_run['model']), key=_model_key))}; imbalance strategies "
              f"{', '.join(sorted(set(per_run['imbalance']), key=_imbalance_key))}; seeds "
              f"{', '.join(map(str, seeds))}{' (single seed)' if len(seeds) == 1 else ''}."), ""]
    lines += section_data(manifests, counts, rarest)
    lines += section_main(main, floors, classes)
    lines += section_published(per_run, floors)
    lines += section_imbalance(per_run, pairs, effects, rarest, figure, output_dir)
    lines += section_transfer(output_dir, per_run, gaps)
    lines += section_gradcam(exp_dir, output_dir)
    lines += section_hardware(runs)

    main.to_csv(output_dir / MAIN_CSV, index=False)
    tables = [t.assign(kind=kind) for t, kind in ((effects, f"imbalance_vs_{BASELINE}"),
                                                   (gaps, "transfer_vs_own")) if len(t)]
    (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()).to_csv(output_dir / EFFECTS_CSV,
                                                                                 index=False)
    report = output_dir / "report.md"
    tmp = report.with_name(f".report.md.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    os.replace(tmp, report)  # readers see the old report or the new one, never half of one
    return report


def get_args_parser():
    parser = argparse.ArgumentParser(description="Write report.md from a finished grid's records",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output-dir", default=".",
                        help="the grid's output folder (holds runs/); the report is written there")
    parser.add_argument("--data-dir", default="data/prepared", help="the prepared sets (their manifest.csv)")
    parser.add_argument("--exp-dir", default="Exp_images", help="grad_cams.py's output folder")
    return parser


def main(args):
    try:
        path = build_report(args.output_dir, args.data_dir, args.exp_dir)
    except FileNotFoundError as e:
        raise SystemExit(f"report.py: {e}") from None
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(get_args_parser().parse_args(sys.argv[1:]))
