"""Report: the study's three questions answered from a finished grid's records, with honest statistics.

    python report.py                                              # grid in ., sets under data/prepared
    python report.py --output-dir demo --data-dir data/prepared   # reads demo/Exp_images (grad_cams.py)
    python report.py --output-dir demo --exp-dir cams             # Grad-CAM results elsewhere
    python report.py --output-dir demo --bootstrap 2000           # more ship-bootstrap replicates (default 1000)
    python report.py --pool grid_split0 grid_split1 --output-dir pooled --data-dir data/split0   # several splits

report.py is the one entry point for report.md: run it after test_models.py (and grad_cams.py, whose results
get their own section when present); rerun it whenever the grid has grown.

Reads, never changes (it only removes the hidden temporaries of killed runs, runs.clean_stale): the prepared
manifests (<data-dir>/<set>/manifest.csv, summary.json), the finished grid cells
(<output-dir>/runs/<train_set>/<model>/<imbalance>/lr<lr>/seed<k>/record.json, and the earlier layout without the
lr level, read as LEGACY records by runs.read_record), the grid's tables (<output-dir>/scores.csv with its ship
intervals, `selected` and the baselines' rows; predictions.csv with each chip's ship in `group`), its figures
(<output-dir>/figures/) and, when present, grad_cams.py's results (<exp-dir>/cam_summary.csv, cam_scores.csv,
figures/*.png; --exp-dir defaults to <output-dir>/Exp_images). Writes into <output-dir>, each file atomically
(runs.write_atomic):
    report.md                             the report; figures are linked relative to it
    report_main_table.csv                 the numbers behind the main table, unrounded (percent), the models' rows
                                          with their intervals, then the baselines' rows
    report_effects.csv                    the paired differences behind the imbalance and transfer tables
    report_figures/imbalance_effects.png  each strategy minus `none` per seed pair, on the training set's test
    report_figures/curves_<set>.png       the training curves of every run shown, per training set (curves.py)
    report_cross_sensor.csv, report_figures/cross_sensor.png   the cross-sensor section's rows (cross_section.py)
    report_pol.csv, report_figures/co_vs_stack.png     co against stacked co + cross chips (pol_section.py)

The three questions of Awais & Reggiannini (ICEAA 2024), in the order the report answers them:
1. How well does each model tell Cargo, Fishing and Tanker apart, and does it clear the floor of predicting
   the majority class for every chip?
2. Does an imbalance strategy help the rare class? Each strategy is compared with `none` seed by seed.
3. Does a model trained on one dataset work on the other? Train x test heat maps and paired transfer gaps; then,
   between FUSAR-Ship and OpenSARShip, what physical scale, clutter radiometry and label-free adaptation change
   (cross_section.py: every input variant and adaptation against raw, paired). The other sections hold the
   study's inputs (raw) without adaptation; cells of other input variants sit under runs/.../<inputs>/lr<lr>/.

Learning rates and protocols (protocols.py): every table shows, per training set, model, imbalance strategy and
protocol, the learning rate chosen on validation (the grid's rule, tables.selected_lrs: the highest mean
validation macro-F1 over seeds, ties the smaller rate; a single rate is that rate); where several rates were
trained without a validation split none is chosen and each gets its own row. The protocol (batch-norm
statistics recalibrated or not, the epoch kept, validation split or not) is a column of every table, so runs of
different protocols are never averaged together; the earlier LEGACY records are labelled as such. The best model
is named on validation macro-F1 only, never on a test score; without validation no best model is named.
A run is degenerate when it predicts one class for more than 95 % of a test set's chips (tables.degenerate).

Statistics: the per-cell metrics are the ones the grid recorded (metrics.score_row: scikit-learn on the
saved per-chip predictions, percent). Over seeds the report gives mean ± sample standard deviation (ddof = 1)
and the number of seeds n; a cell with one seed shows its plain number marked "single seed", never as a mean.
Differences are paired: a seed enters only when both runs of the pair have it. The rarest class of a training
set is the one with the fewest training chips in its manifest (the records' train_counts without a manifest).

Intervals (ship_stats.py; a bootstrap over each test set's ships, all chips of a ship together): every row of the
main table gets the 95 % interval of macro-F1 and balanced accuracy (main_section.py: one seed, scores.csv's;
several, the interval of the mean over the seeds, the ships drawn once per replicate for every seed), and every
paired difference (effects_section.py: each strategy against `none`, macro-F1 and the rarest class's recall,
precision and F1; a model trained elsewhere against one trained on the test set) a paired bootstrap interval
(bootstrap.paired_difference, the same ships for both arms and every seed), the share of seeds whose difference
has its sign, and "no evidence of a difference" where the interval covers 0. Rows of fewer than three seeds are
marked preliminary. The baselines floor, size_only and shortcut (baselines.py; rows of scores.csv) stand beside
the models in the main and transfer tables, and a sentence says where `shortcut` comes within 5 macro-F1 points of
the best model. The report opens with a box (report_box.py) on what the numbers can and cannot say: seeds and
splits, ships per test set, the widest interval, the best model beside the baselines, degenerate models.
Without predictions.csv and scores.csv (or where they are older than a record) the rows keep their numbers and
say they have no interval.

Split seeds (pooling.py): --pool names grid folders trained on copies of the data prepared with different
--split-seed (one copy per grid); the report then pools them, a run being one split and one training seed, so
every mean, spread and interval includes the split's variance. The pool's tables go to --output-dir (never into a
pooled grid), calibration is measured on the pool's predictions, the Grad-CAM section is the first grid's, and
--data-dir names the copy whose chip counts the Data section shows.

Synthetic data: a set counts as synthetic when its summary.json says `"synthetic": true` (dataset_prep.py
--synthetic) or, for sets prepared otherwise, when its manifest shows it: a chip's `source` path has a folder
named `synthetic` (where the generator writes the raw data) or a chip has a `mask` (exact ship masks exist
only for synthetic chips; the real datasets ship none). The report then says so at the top, naming the sets.
"""
import argparse
import math
import sys
from pathlib import Path, PurePosixPath

import pandas as pd

import protocols
from cam_section import image_lines, section_calibration, section_gradcam
import runs
from cli import HelpFormatter, add_shared, int_at_least, run_main, writable
from cross_section import section_cross
from pol_section import section_pol
from curves import section_curves
from effect_figures import plot_imbalance_effects
from effects_section import (BASELINE, EFFECTS_CSV, add_paired_intervals, baseline_gaps, imbalance_arms,
                             imbalance_metrics, section_imbalance, section_transfer, transfer_arms)
from engine import IMBALANCE
from main_section import (MAIN_CSV, METRICS, baseline_rows, interval_note, main_intervals, section_main,
                          shortcut_lines)
from metrics import score_row
from models import MODEL_NAMES
from published import section_published
from protocols import DROPPED
from report_box import box_lines
from seed_stats import aggregate_seeds, imbalance_pairs, md_table, transfer_pairs
from sets import SETS, SPLITS, load_manifests, load_summary, ordered, rank
from pooling import PoolError, pool, seeds_text
from ship_stats import Chips
from tables import BOOTSTRAP_SEED, N_BOOTSTRAP

# ----------------------------------------------------------------------------------------------------------
# Study defaults
# a cell of the grid less its seed, with its protocol and how its learning rate was chosen
KEYS = ["train_set", "test_set", "model", "imbalance", "protocol", "lr", "lr_status"]
# What the report writes into --output-dir.
REPORT = "report.md"  # besides MAIN_CSV (main_section.py) and EFFECTS_CSV (effects_section.py)
FIGURES = "report_figures"


# ----------------------------------------------------------------------------------------------------------
# reading the inputs

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
    """Chips per set, split and class: one row per (set, split) in the order train, val, test, a column per
    class and `total`."""
    rows = [{"set": name, "split": split, **part["class"].value_counts().to_dict()}
            for name, m in manifests.items() for split, part in m.groupby("split")]
    if not rows:
        return pd.DataFrame()
    counts = pd.DataFrame(rows).fillna(0)
    classes = sorted(c for c in counts.columns if c not in ("set", "split"))
    counts = counts[["set", "split", *classes]].astype({c: int for c in classes})
    counts["total"] = counts[classes].sum(axis=1)
    counts["_split"] = counts["split"].map(lambda v: rank(v, SPLITS))
    return runs.sort_frame(counts, ["set", "_split", "split"]).drop(columns="_split")


def rarest_classes(counts, records):
    """{train set: the class with the fewest training chips} (ties: the first in class order), from the
    manifests' counts, else from the records' train_counts."""
    rarest = {}
    if len(counts):
        classes = [c for c in counts.columns if c not in ("set", "split", "total")]
        for _, row in counts[counts["split"] == "train"].iterrows():
            rarest[row["set"]] = min(classes, key=lambda c: row[c])
    for _, rec in records:
        train_counts = rec.get("train_counts")
        if rec["train_set"] not in rarest and train_counts:
            rarest[rec["train_set"]] = min(sorted(train_counts), key=lambda c: train_counts[c])
    return rarest


def per_run_metrics(records, rarest):
    """One row per finished cell and test set: the cell's keys, the metrics its record holds
    (metrics.score_row, percent), the recall, precision and F1 of its training set's rarest class (`rare_recall`,
    `rare_precision`, `rare_f1`), its learning
    rate, protocol, validation score and degenerate flag (protocols.run_columns) and how its learning rate
    stands (`lr_status`, protocols.lr_status)."""
    rows = []
    for folder, rec in records:
        rare = rarest.get(rec["train_set"], "")
        for test_set, result in rec["test_sets"].items():
            scores = result["metrics"]
            rows.append({"train_set": rec["train_set"], "test_set": test_set, "model": rec["model"],
                         "imbalance": rec["imbalance"], "seed": int(rec["seed"]), **scores,
                         "rare_class": rare, **{f"rare_{m}": scores.get(f"{rare}_{m}", math.nan)
                                                for m in ("recall", "precision", "f1")},
                         **protocols.run_columns(folder, rec, test_set, result)})
    per_run = runs.sort_frame(pd.DataFrame(rows), ["train_set", "test_set", "model", "imbalance", "protocol", "lr",
                                                   "seed"])
    per_run["lr_status"] = protocols.lr_status(per_run)
    return per_run


# ----------------------------------------------------------------------------------------------------------
# the majority-class floor and links

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
    with_val = ordered(counts.loc[counts["split"] == "val", "set"], SETS)
    without = [s for s in ordered(counts["set"], SETS) if s not in with_val]
    lines += [("Validation split (`val`, carved from the training data; learning rates and the kept epoch are "
               f"chosen on it): {', '.join(with_val) if with_val else 'none'}"
               + (f"; none in {', '.join(without)} (prepared with `--val-size 0` or before the split existed)"
                  if without else "") + "."), ""]
    if rarest:
        named = sorted(rarest.items(), key=lambda kv: rank(kv[0], SETS))
        lines += ["Rarest class (fewest training chips) per training set: "
                  + "; ".join(f"{s}: {c}" for s, c in named) + ".", ""]
    return lines


def heatmap_paths(output_dir, per_run):
    """The grid's heat maps (tables.plot_figures) of the configurations whose rate is chosen or the only one: one
    per imbalance strategy, and one more (suffix _legacy) per strategy with LEGACY records."""
    chosen = per_run[per_run["lr_status"].isin([protocols.CHOSEN, protocols.ONLY])]
    legacy = chosen["protocol"] == runs.LEGACY
    suffixes = [s + suffix for s in ordered(chosen["imbalance"], IMBALANCE)
                for suffix, present in (("", ~legacy), ("_legacy", legacy))
                if (present & (chosen["imbalance"] == s)).any()]
    return [Path(output_dir, "figures", f"cross_dataset_f1_macro_{s}.png") for s in suffixes]


def heatmap_lines(output_dir, per_run):
    """Section 3's heat maps: the text above them, their links and a line for any that is missing."""
    lines = [("Macro-F1, training set (rows) x test set (columns), a panel per model, mean over the seeds at the "
              "learning rate chosen on validation, with the baselines' panels (the grid's figures, one per "
              f"imbalance strategy; `_legacy`: the {protocols.LEGACY_LABEL}; the spread over seeds and the "
              "intervals are in the main table):"), ""]
    heatmaps = heatmap_paths(output_dir, per_run)
    lines += image_lines([p for p in heatmaps if p.is_file()], output_dir)
    missing = [p.name for p in heatmaps if not p.is_file()]
    if missing:
        lines += [(f"Missing heat map(s): {', '.join(missing)} (rebuild them with `python test_models.py "
                   f"--aggregate-only --output-dir {output_dir}`)."), ""]
    if (per_run["lr_status"] == protocols.UNCHOSEN).any():
        lines += ["The heat maps leave out the configurations trained with several learning rates and no "
                  "validation split (no rate is chosen for them); the main table shows each of their rates.", ""]
    return lines


def section_hardware(found):
    records = [rec for _, rec in found]

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
            for _, r in runs.sort_frame(table, ["train_set", "model"]).iterrows()]
    return ["## Hardware and time", "",
            f"- Device: {distinct('device')}", f"- Platform: {distinct('platform')}",
            f"- CPU count: {distinct('cpu_count')}", f"- torch: {distinct('torch_version')}", "",
            ("Seconds from the run records, summed over every finished run (all strategies, learning rates, "
             "protocols and seeds) of a training set and model:"), "",
            md_table(["Train set", "Model", "Runs", "Training s", "Evaluation s"], rows), "",
            (f"Total over {len(records)} runs: training {secs(times['train'].sum(min_count=1))} s, "
             f"evaluation {secs(times['eval'].sum(min_count=1))} s."), "",
            ("- Data preparation: time not recorded (dataset_prep.py prints it but keeps timings out of its "
             "summaries, so that a rebuild gives identical files)"),
            "- Grad-CAM: time not recorded (grad_cams.py writes no timing)", ""]


# ----------------------------------------------------------------------------------------------------------
# entry points

def gather(output_dir, data_dir, n_boot=N_BOOTSTRAP, found=None):
    """Every input and statistic the report shows, as a dict: found (the finished cells, [(folder, record)]:
    `found`, as pooling.pool returns them, or those under output_dir),
    manifests, counts, rarest, floors, per_run (every run), shown (the runs at the learning rates the tables
    show), classes, main, pairs, effects, gaps, and (add_intervals) chips, baselines, n_boot."""
    found = runs.find_records(output_dir) if found is None else found
    if not found:
        raise FileNotFoundError(f"no finished cells under {Path(output_dir, runs.RUNS)} (<train_set>/<model>/"
                                "<imbalance>/lr<lr>/seed<k>/record.json): run python test_models.py first, or pass "
                                "--output-dir where it wrote them")
    g = {"found": found, "manifests": load_manifests(data_dir)}
    g["counts"] = class_counts(g["manifests"])
    g["rarest"] = rarest_classes(g["counts"], found)
    g["floors"] = majority_floors(g["manifests"])
    # the main sections hold the study's inputs (raw); section_cross (cross_section.py) compares the variants
    g["raw_found"] = [(folder, rec) for folder, rec in found if rec.get("inputs", runs.RAW) == runs.RAW]
    if not g["raw_found"]:
        raise FileNotFoundError(f"the cells under {Path(output_dir, runs.RUNS)} are all of other input variants than "
                                "raw: the report compares them against the study's inputs; train those too (python "
                                "test_models.py with --inputs raw and the same other options)")
    g["per_run"] = per_run = per_run_metrics(g["raw_found"], g["rarest"])
    g["shown"] = shown = per_run[per_run["lr_status"] != DROPPED].assign(lr_pair=protocols.pairing_key)
    g["classes"] = classes = sorted({c for _, rec in found for c in rec["classes"]})
    per_class = [f"{c}_{m}" for c in classes for m in ("f1", "recall")]
    main = aggregate_seeds(shown, KEYS, ["accuracy", *METRICS, *per_class, "rare_recall", "val_f1_macro"])
    g["main"] = main.merge(protocols.degenerate_counts(shown, KEYS), on=KEYS, how="left")
    on, keep = ["protocol", "lr_pair"], ["lr"]
    g["pairs"] = imbalance_pairs(shown, BASELINE, on, keep)
    gap_pairs = transfer_pairs(shown, on, keep)
    effect_keys = [*KEYS, "lr_base"]
    rare = ["rare_recall", "rare_precision", "rare_f1"]
    g["effects"] = (runs.sort_frame(aggregate_seeds(g["pairs"], effect_keys, ["f1_macro", *rare]), KEYS)
                    if len(g["pairs"]) else pd.DataFrame())
    g["gaps"] = (runs.sort_frame(aggregate_seeds(gap_pairs, effect_keys, ["f1_macro"]), KEYS)
                 if len(gap_pairs) else pd.DataFrame())
    return add_intervals(g, output_dir, n_boot)


def add_intervals(g, output_dir, n_boot):
    """The ship-bootstrap intervals (ship_stats.py) from predictions.csv and scores.csv: the main table's
    (main_section.main_intervals), the baselines' rows of scores.csv beside the models, and the paired intervals
    of the imbalance effects and transfer gaps (effects_section.add_paired_intervals), the baselines' gaps
    among the latter. Without those files every row keeps its numbers and gets no interval."""
    g["chips"] = chips = Chips.read(output_dir)
    chosen = (protocols.CHOSEN, protocols.ONLY)  # must be scores.csv's `selected` rows
    g["n_stale"] = chips.check(g["per_run"], chosen) if chips.scores is not None else 0
    g["n_boot"], classes = n_boot, g["classes"]
    g["main"] = main_intervals(g["main"], chips, classes, n_boot, BOOTSTRAP_SEED)
    g["baselines"] = baselines = baseline_rows(chips.scores, g["main"])
    if len(baselines):  # a pool of splits (pooling.py) has a fit per split: their mean's interval
        g["baselines"] = main_intervals(baselines, chips, classes, n_boot, BOOTSTRAP_SEED)
    g["effects"] = add_paired_intervals(g["effects"], chips, classes, imbalance_arms, imbalance_metrics(g["rarest"]),
                                        n_boot, BOOTSTRAP_SEED)
    gaps = [t for t in (g["gaps"], baseline_gaps(g["baselines"])) if len(t)]
    gaps = pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame()
    g["gaps"] = add_paired_intervals(gaps, chips, classes, transfer_arms, {"f1_macro": lambda r: "f1_macro"},
                                     n_boot, BOOTSTRAP_SEED)
    return g


def write_figures(output_dir, g):
    """report_figures/imbalance_effects.png when there are pairs; any other file there (of an earlier grid)
    is removed. Returns the figure's path (linked only when it exists)."""
    fig_dir = Path(output_dir) / FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    figure = fig_dir / "imbalance_effects.png"
    written = set()
    if len(g["pairs"]):
        plot_imbalance_effects(g["pairs"], g["rarest"], figure, BASELINE)
        written.add(figure)
    for path in fig_dir.iterdir():  # the report's own figures only; hidden names are others' temporaries
        if path not in written and path.is_file() and not path.name.startswith("."):
            path.unlink()
    return figure


def header_lines(data_dir, g):
    """Title, the synthetic-data warning where it applies, the box (report_box.py) and what the report was built
    from."""
    manifests, per_run = g["manifests"], g["per_run"]
    synthetic = [s for s, m in manifests.items() if is_synthetic(m, load_summary(data_dir, s))]
    lines = ["# SAR ship classification: imbalance and cross-dataset generalisation", ""]
    if synthetic:
        lines += [(f"> **SYNTHETIC DATA.** The prepared set(s) {', '.join(synthetic)} come from the "
                   "synthetic generator (`dataset_prep.py --synthetic`), not from OpenSARShip or FUSAR-Ship: "
                   "the numbers below test the pipeline and say nothing about real SAR ships."), ""]
    elif not manifests:
        lines += [f"> No manifests under `{data_dir}`: whether the data is real or synthetic is unknown.", ""]
    lines += box_lines(g, data_dir, bool(synthetic))
    grids = list(dict.fromkeys(r["grid"] for _, r in g["found"] if "grid" in r))  # pooling.py's
    where = f"the `runs/` of the pooled grids {', '.join(grids)}" if grids else "`runs/`"
    others = len(g["found"]) - len(g["raw_found"])
    variants = f" ({others} of them on other input variants than raw: the cross-sensor section)" if others else ""
    return lines + [(f"Generated by `report.py` from {len(g['found'])} finished runs{variants} under {where}: training "
                     f"sets {', '.join(ordered(per_run['train_set'], SETS))}; models "
                     f"{', '.join(ordered(per_run['model'], MODEL_NAMES))}; imbalance strategies "
                     f"{', '.join(ordered(per_run['imbalance'], IMBALANCE))}; {seeds_text(g['found'])}."), "",
                    weights_line(g["found"]), "", protocols.protocol_line(per_run), ""]


def weights_line(found):
    """The weights each model started from, as the records keep them (--weights auto resolved: never "auto")."""
    got = {}
    for _, rec in found:
        asked = rec.get("args", {}).get("weights")
        got.setdefault(rec["model"], set()).add(rec.get("weights") or asked)
    parts = [f"{m} {'/'.join(sorted(map(str, got[m])))}" for m in ordered(got, MODEL_NAMES) if m in MODEL_NAMES]
    return ("Weights the models started from (imagenet: ImageNet-pretrained backbone; none: random; --weights auto "
            "takes ImageNet where the file is at hand): " + "; ".join(parts) + ".")


def write_tables(output_dir, g):
    """report_main_table.csv (the models' rows, then the baselines') and report_effects.csv (the imbalance
    effects and transfer gaps, by `kind`)."""
    main = pd.concat([t for t in (g["main"], g["baselines"]) if len(t)], ignore_index=True)
    runs.write_atomic(Path(output_dir) / MAIN_CSV, lambda tmp: main.to_csv(tmp, index=False))
    tables = [t.assign(kind=kind) for t, kind in ((g["effects"], f"imbalance_vs_{BASELINE}"),
                                                   (g["gaps"], "transfer_vs_own")) if len(t)]
    effects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    runs.write_atomic(Path(output_dir) / EFFECTS_CSV, lambda tmp: effects.to_csv(tmp, index=False))


def build_report(output_dir, data_dir, exp_dir=None, n_boot=N_BOOTSTRAP, grids=None):
    """Write report.md, report_main_table.csv, report_effects.csv and report_figures/ into output_dir from
    the finished cells under output_dir/runs, the manifests under data_dir and the Grad-CAM results under
    exp_dir (None: output_dir/Exp_images); n_boot: ship-bootstrap replicates of the intervals the report
    computes itself (pooled seeds, paired differences); grids: the grid folders to pool (pooling.py; their
    tables are written into output_dir, and the Grad-CAM section is the first grid's). Returns the path of
    report.md."""
    output_dir, data_dir = Path(output_dir), Path(data_dir)
    found = pool(grids, output_dir) if grids else None
    first = Path(grids[0]) if grids else output_dir  # where the Grad-CAM maps are
    exp_dir = Path(exp_dir) if exp_dir is not None else first / runs.EXP_IMAGES
    g = gather(output_dir, data_dir, n_boot, found)
    figure = write_figures(output_dir, g)
    lines = header_lines(data_dir, g)
    lines += section_data(g["manifests"], g["counts"], g["rarest"])
    note = interval_note(g["main"], n_boot, BOOTSTRAP_SEED)
    lines += section_main(g["main"], g["baselines"], g["floors"], g["classes"], g["per_run"], note)
    lines += shortcut_lines(g["main"], g["baselines"], g["rarest"])
    lines += section_published(g["shown"], g["floors"], g["chips"], g["classes"], n_boot, BOOTSTRAP_SEED)
    figure_lines = image_lines([figure], output_dir) if len(g["pairs"]) else []
    lines += section_imbalance(g["shown"], g["effects"], g["rarest"], figure_lines, n_boot)
    lines += section_transfer(g["gaps"], heatmap_lines(output_dir, g["shown"]), n_boot)
    lines += section_cross(output_dir, g["classes"], n_boot, BOOTSTRAP_SEED, output_dir, [r for _, r in g["found"]])
    lines += section_pol(output_dir, g["classes"], n_boot, BOOTSTRAP_SEED)
    lines += section_curves(output_dir / FIGURES, output_dir, g["raw_found"], g["shown"])
    lines += section_gradcam(exp_dir, output_dir)
    lines += section_calibration(output_dir, output_dir)
    lines += section_hardware(g["found"])
    write_tables(output_dir, g)
    report = output_dir / REPORT
    runs.write_text_atomic(report, "\n".join(lines).rstrip() + "\n")  # the old report or the new one
    return report


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Write report.md from a finished grid's records",
                                     add_help=add_help, formatter_class=HelpFormatter)
    add_shared(parser, "output_dir", "data_dir")
    parser.add_argument("--exp-dir", default=None,
                        help=f"grad_cams.py's output folder, read by the Grad-CAM section (default: "
                             f"<output-dir>/{runs.EXP_IMAGES})")
    parser.add_argument("--bootstrap", type=int_at_least(1), default=N_BOOTSTRAP, metavar="N",
                        help="replicates of the ship bootstrap behind the intervals the report computes (rows "
                             "pooling several seeds, paired differences; seed tables.BOOTSTRAP_SEED)")
    parser.add_argument("--pool", nargs="+", default=None, metavar="GRID",
                        help="grid folders trained on copies prepared with different --split-seed, pooled into one "
                             "report in --output-dir (a run: one split, one training seed)")
    return parser


def clean_stale(output_dir):
    """Remove what killed runs left in the grid folder (a folder that cannot be cleaned is left as it is)."""
    try:
        runs.clean_stale(output_dir)
    except OSError as err:
        print(f"report.py: could not remove stale temporaries under {output_dir} ({err})")


def main(args):
    writable(args.output_dir, "--output-dir", create=False)  # report.md goes there: say so before any work
    clean_stale(args.output_dir)
    try:
        path = build_report(args.output_dir, args.data_dir, args.exp_dir, args.bootstrap, args.pool)
    except (FileNotFoundError, runs.RecordError, PoolError) as e:
        raise SystemExit(f"report.py: {e}") from None
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_main("report.py", lambda: main(get_args_parser().parse_args(sys.argv[1:])),
                   kept="the earlier report.md is kept unchanged")
