"""Calibration of the grid's predicted probabilities: expected calibration error and reliability diagrams, from
the probabilities each cell saved (runs/<set>/<model>/<imbalance>/lr<lr>/seed<k>/predictions_<test_set>.csv:
path, true, pred, prob_<Class>).

    import calibration
    calibration.ece(probs, true_idx)                                # percent; 15 equal-width bins
    calibration.reliability_figure(probs, true_idx, title, path)    # PNG, written atomically
    probs, true_idx, classes = calibration.read_predictions(cell / "predictions_fusar.csv")
    table = calibration.calibration_table("demo", figure_dir="demo/figures/reliability")

    python calibration.py --output-dir demo    # demo/calibration.csv, demo/figures/reliability/<cell>/*.png

Definitions (Guo et al. 2017, "On calibration of modern neural networks"). A chip's confidence is its largest
probability, its prediction the class of that probability (argmax; the saved `pred` column is the same up to
ties). The confidences are put in BINS = 15 equal-width bins over [0, 1]: bin b holds confidences in
(b/15, (b+1)/15] (a confidence of 0 in the first bin). ECE = sum over bins of (n_b / N) x |accuracy_b -
mean confidence_b|, in percent: 0 for a calibrated model, up to 100. Equal-width bins are the common choice, so
numbers compare with the literature; with few chips the empty and thin bins make ECE noisy (and biased upwards),
so the reliability diagram shows each bin's count. The probabilities are those saved with 6 decimals.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import runs
from cli import run_main

BINS = 15
CALIBRATION_CSV = "calibration.csv"
FIGURE_DIR = "figures/reliability"   # under the grid folder: <cell path under runs/>/reliability_<test_set>.png
COLUMNS = ["train_set", "model", "imbalance", "inputs", "lr", "seed", "protocol", "test_set", "n", "accuracy",
           "confidence", "ece", "bins", "figure"]


def bin_table(probs, true_idx, bins=BINS):
    """Per equal-width confidence bin: lo, hi, n, mean confidence, accuracy (NaN where empty)."""
    probs = np.asarray(probs, dtype=np.float64)
    true_idx = np.asarray(true_idx)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == true_idx
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi]; 0 in the first
    n = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / n
        accuracy = np.bincount(index, weights=correct, minlength=bins) / n
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "n": n, "confidence": mean_conf, "accuracy": accuracy})


def ece(probs, true_idx, bins=BINS):
    """Expected calibration error in percent: probs (N, C) per chip, true_idx (N,) class indices; `bins`
    equal-width confidence bins (15 by default). NaN for no chips."""
    table = bin_table(probs, true_idx, bins)
    total = table["n"].sum()
    if not total:
        return float("nan")
    used = table[table["n"] > 0]
    return float(100 * (used["n"] / total * (used["accuracy"] - used["confidence"]).abs()).sum())


def reliability_figure(probs, true_idx, title, path, bins=BINS):
    """A reliability diagram: accuracy per confidence bin against the diagonal (gap shaded), each bin's count
    below, ECE in the title; written atomically (runs.write_atomic) as a PNG at `path`."""
    table = bin_table(probs, true_idx, bins)
    width = 1 / bins
    fig = Figure(figsize=(4.2, 4.8))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    used = table[table["n"] > 0]
    top.bar(used["lo"], used["accuracy"], width, align="edge", color="tab:blue", edgecolor="black",
            linewidth=0.5, label="accuracy")
    top.bar(used["lo"], used["confidence"] - used["accuracy"], width, bottom=used["accuracy"], align="edge",
            color="tab:red", alpha=0.3, label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="calibrated")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(fontsize=7, loc="upper left")
    top.set_title(f"{title}\nECE {ece(probs, true_idx, bins):.1f} % ({bins} bins, {int(table['n'].sum())} chips)",
                  fontsize=8)
    bottom.bar(table["lo"], table["n"], width, align="edge", color="tab:gray", edgecolor="black", linewidth=0.5)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (largest probability)")
    bottom.set_ylabel("chips")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def read_predictions(path, classes=None):
    """(probs (N, C), true_idx (N,), classes) from a predictions_<test_set>.csv; classes: the prob_<Class>
    columns in file order unless given (a record's classes). None for a file written without probabilities."""
    frame = pd.read_csv(path, keep_default_na=False, dtype={"path": str, "true": str, "pred": str})
    if not frame.columns.str.startswith("prob_").any():
        return None
    if classes is None:
        classes = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted(set(frame["true"]) - set(index))
    if unknown:
        raise ValueError(f"{path}: true classes {unknown} have no prob_ column")
    return probs, frame["true"].map(index).to_numpy(dtype=np.int64), list(classes)


def cell_path(folder):
    """A cell folder's path under runs/ (<set>/<model>/<imbalance>/lr<lr>/seed<k>, or the earlier layout's)."""
    parts = Path(folder).parts
    if runs.RUNS not in parts:
        return Path(Path(folder).name)
    return Path(*parts[len(parts) - parts[::-1].index(runs.RUNS):])


def cell_rows(folder, record, figure_root, bins=BINS):
    """Calibration rows (COLUMNS) of one finished cell, a reliability diagram per test set under figure_root
    (None: no figures); a predictions file that is missing or holds no probabilities is skipped."""
    rows = []
    for test_set in record.get("test_sets", []):
        path = Path(folder) / f"predictions_{test_set}.csv"
        found = read_predictions(path, record.get("classes")) if path.is_file() else None
        if found is None:
            continue  # absent, or written without probabilities: nothing to calibrate
        probs, true_idx, _ = found
        name = cell_path(folder)
        figure = ""
        if figure_root is not None:
            figure = Path(figure_root) / name / f"reliability_{test_set}.png"
            reliability_figure(probs, true_idx, f"{name.as_posix()} on {test_set}", figure, bins)
        rows.append({**{k: record.get(k) for k in runs.KEYS}, "protocol": record["protocol"]["name"],
                     "test_set": test_set, "n": len(true_idx),
                     "accuracy": float(100 * (probs.argmax(1) == true_idx).mean()) if len(true_idx) else np.nan,
                     "confidence": float(100 * probs.max(1).mean()) if len(true_idx) else np.nan,
                     "ece": ece(probs, true_idx, bins), "bins": bins, "figure": str(figure)})
    return rows


def calibration_table(output_dir, figure_dir=None, bins=BINS):
    """ECE (percent), accuracy and mean confidence (percent) of every finished cell and test set of the grid in
    output_dir, in grid order; reliability diagrams under figure_dir (None: none)."""
    rows = [r for folder, record in runs.find_records(output_dir) for r in cell_rows(folder, record, figure_dir,
                                                                                     bins)]
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None):
    p = argparse.ArgumentParser(description="ECE and reliability diagrams of a finished grid's predictions")
    p.add_argument("--output-dir", default=".", help="the grid folder (test_models.py --output-dir)")
    p.add_argument("--bins", type=int, default=BINS, help="equal-width confidence bins")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    table = calibration_table(out, out / FIGURE_DIR, args.bins)
    runs.write_atomic(out / CALIBRATION_CSV, lambda tmp: table.to_csv(tmp, index=False))
    shown = table.drop(columns=["figure"]).assign(lr=table["lr"].map(runs.lr_text))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {out / CALIBRATION_CSV} and {len(table)} reliability diagrams under {out / FIGURE_DIR}")
    return table


if __name__ == "__main__":
    run_main("calibration.py", main)
