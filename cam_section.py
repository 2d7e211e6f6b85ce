"""The report's Grad-CAM and calibration sections (report.py calls them).

    lines = section_gradcam(exp_dir, report_dir)          # from grad_cams.py's cam_summary.csv, road_scores.csv
    lines = section_calibration(output_dir, report_dir)   # ECE and reliability diagrams from predictions_*.csv

Grad-CAM: the on-ship score of each map is compared with a centre prior (cam_scores.py: a centred Gaussian
whose width is fitted to the mean of the model's maps on the set), because every chip is centred on its ship
and a model-free centred blob scores far above a uniform map. The lift over the prior is the main number; the
lift over a uniform map stays beside it. All-zero maps count (as uniform maps, n_zero beside); correct and wrong
predictions are split; regions that are not exact (FUSAR-Ship's centred disc) are marked approximate, with the
region's area against the hull's; the confidence change when the image is multiplied by the map, and ROAD on a
few chips, say whether the model uses the region.

Calibration: expected calibration error (equal-width confidence bins, calibration.BINS) of every cell and test
set, from the saved probabilities, written to calibration.csv beside the report, with a reliability diagram per
cell and test set under figures/reliability/.
"""

import os
from pathlib import Path

import pandas as pd

import calibration
import cam_scores
import runs
from seed_stats import fmt, md_table


def relative(path, report_dir):
    """`path` as seen from the folder of report.md, with forward slashes (what markdown links want)."""
    return Path(os.path.relpath(path, report_dir)).as_posix()


def image_lines(paths, report_dir):
    """A markdown image link per path, relative to the folder of report.md, each in its own paragraph."""
    return [line for p in paths for line in (f"![{Path(p).stem}]({relative(p, report_dir)})", "")]


def _explained_cells(scores_path, report_dir):
    """{(set, model): the grid cell(s) explained and how its learning rate was chosen}, from cam_scores.csv."""
    if not scores_path.is_file():
        return pd.Series(dtype=str)
    scores = pd.read_csv(scores_path, dtype=str, keep_default_na=False)
    choice = scores["cell_choice"] if "cell_choice" in scores else ""
    scores["shown"] = scores["cell"].map(lambda p: relative(p, report_dir)) + \
        pd.Series(choice, index=scores.index).map(lambda c: f" ({c})" if c else "")
    return scores.groupby(["set", "model"])["shown"].agg(lambda c: ", ".join(sorted(set(c))))


def _cam_rows(wide, cells):
    rows = []
    for _, r in wide.iterrows():
        where = f"{r['set']} (approximate region, {r['region_to_hull']:.1f} x the hull)" if r["approximate"] \
            else r["set"]
        rows.append([where, r["model"], f"{int(r['n'])} ({int(r['n_zero'])})", fmt(100 * r["on_ship_energy"]),
                     fmt(100 * r["prior_energy"]), fmt(r["lift_prior"], digits=2),
                     f"{fmt(r['lift_prior_correct'], digits=2)} / {fmt(r['lift_prior_wrong'], digits=2)}",
                     fmt(r["lift"], digits=2), fmt(100 * r["conf_change"]), fmt(100 * r["conf_change_prior"]),
                     fmt(r.get("road_combined", float("nan")), digits=3),
                     cells.get((r["set"], r["model"]), "not recorded")])
    return rows


def section_gradcam(exp_dir, report_dir):
    """grad_cams.py's per set and model summary against the centre prior, the cells it explained, its figures."""
    lines = ["## Where do the models look? (Grad-CAM)", ""]
    summary_path = Path(exp_dir, "cam_summary.csv")
    if not summary_path.is_file():
        return lines + [f"No Grad-CAM results: `{summary_path}` is absent (run grad_cams.py after the grid).", ""]
    road_path = Path(exp_dir, "road_scores.csv")
    road = pd.read_csv(road_path) if road_path.is_file() else None
    wide = runs.sort_frame(cam_scores.wide_summary(pd.read_csv(summary_path), road), ["set", "model"])
    cells = _explained_cells(Path(exp_dir, "cam_scores.csv"), report_dir)
    lines += [("Share of each Grad-CAM map's energy on the ship, averaged over the explained test chips, against "
               "a centre prior: a centred Gaussian whose width is fitted to the mean of that model's maps on the "
               "set (every chip is centred on its ship, so a model-free centred blob already scores high). Lift "
               "over the prior = on-ship energy / the prior's on the same chips: 1 means the model looks at the "
               "ship no more than a centred blob; the lift over a uniform map is beside it. Chips (zero maps): "
               "all-zero maps are scored as uniform maps. Confidence change: the predicted class's probability "
               "when the image is multiplied by the map (by the prior), in points. ROAD: combined score on a few "
               "chips (higher: removing what the map marks hurts more). " + cam_scores.SCALING_NOTE), "",
              md_table(["Set", "Model", "Chips (zero maps)", "On-ship energy %", "Centre prior %", "Lift over prior",
                        "Lift, correct / wrong", "Lift over uniform", "Confidence change", "Prior's change",
                        "ROAD", "Grid cell explained"], _cam_rows(wide, cells)), ""]
    figures = sorted(Path(exp_dir, "figures").glob("*.png"))
    if not figures:
        return lines + [f"No Grad-CAM figures under `{Path(exp_dir, 'figures')}`.", ""]
    return lines + [f"Figures of grad_cams.py (in `{Path(exp_dir, 'figures')}`):", "",
                    *image_lines(figures, report_dir)]


def section_calibration(output_dir, report_dir):
    """ECE per training set and model (mean and range over its cells and test sets), calibration.csv and the
    reliability diagrams, written beside the report."""
    output_dir = Path(output_dir)
    table = calibration.calibration_table(output_dir, output_dir / calibration.FIGURE_DIR)
    lines = ["## Are the probabilities calibrated?", ""]
    if not len(table):
        return lines + ["No predictions to measure.", ""]
    runs.write_atomic(output_dir / calibration.CALIBRATION_CSV,
                      lambda p: table.drop(columns=["figure"]).to_csv(p, index=False, lineterminator="\n"))
    raw = table[table["inputs"].fillna(runs.RAW) == runs.RAW]  # the study's inputs; calibration.csv has every variant
    per = raw.groupby(["train_set", "model", "protocol"], sort=False)["ece"].agg(["mean", "min", "max", "size"])
    rows = [[t, m, p, fmt(r["mean"]), f"{fmt(r['min'])} – {fmt(r['max'])}", str(int(r["size"]))]
            for (t, m, p), r in per.iterrows()]
    link = relative(output_dir / calibration.CALIBRATION_CSV, report_dir)
    return lines + [(f"Expected calibration error (percent; {calibration.BINS} equal-width confidence bins) of "
                     "every cell on every test set, from its saved probabilities: the gap between confidence "
                     "and accuracy; the table holds the study's inputs (raw), the csv every input variant. Per "
                     "cell and test set in "
                     f"[{calibration.CALIBRATION_CSV}]({link})"
                     f", with a reliability diagram each under `{calibration.FIGURE_DIR}/`."), "",
                    md_table(["Train", "Model", "Protocol", "ECE % (mean)", "Range", "Cells x test sets"], rows),
                    ""]
