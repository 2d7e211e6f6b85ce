"""calibration.py: ECE against a hand computation and synthetic predictors, reliability diagrams, the grid table."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import calibration


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    true = np.array([0, 1, 1, 0])
    # 5 bins of 0.2, (lo, hi]: 0.6 -> (0.4, 0.6] right; 0.8 (wrong) and 0.7 (right) -> (0.6, 0.8]; 0.9 right
    # -> (0.8, 1]. ECE = 1/4 |1 - 0.6| + 2/4 |0.5 - 0.75| + 1/4 |1 - 0.9| = 0.1 + 0.125 + 0.025 = 25 %
    assert calibration.ece(probs, true, bins=5) == pytest.approx(25.0)
    table = calibration.bin_table(probs, true, bins=5)
    assert list(table["n"]) == [0, 0, 1, 2, 1]
    # 15 bins (the default): 0.9 -> (0.867, 0.933], 0.8 -> (0.733, 0.8], 0.7 -> (0.667, 0.733], 0.6 ->
    # (0.533, 0.6]: one chip per bin, ECE = mean |correct - confidence| = (0.1 + 0.8 + 0.3 + 0.4) / 4 = 40 %
    assert calibration.ece(probs, true) == pytest.approx(40.0)
    assert calibration.BINS == 15
    assert np.isnan(calibration.ece(np.zeros((0, 2)), np.zeros(0, int)))


def test_calibrated_and_over_confident_predictors():
    rng = np.random.default_rng(0)
    n, classes = 200_000, 3
    probs = rng.dirichlet(np.ones(classes), size=n)
    # labels drawn from the predictor's own probabilities: calibrated by construction
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    assert calibration.ece(probs, labels) < 0.5
    # the same labels, probabilities sharpened (temperature 1/4): over-confident
    sharp = probs ** 4 / (probs ** 4).sum(axis=1, keepdims=True)
    assert calibration.ece(sharp, labels) > 10
    # and a predictor always 99 % sure while right half the time: ECE about 49 %
    sure = np.tile([0.99, 0.01], (1000, 1))
    assert calibration.ece(sure, np.arange(1000) % 2) == pytest.approx(49.0, abs=0.01)


def _cell(root, classes, frame, lr=0.001):
    folder = root / "runs/fusar/cnn/none" / f"lr{lr:g}" / "seed0"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({
        "train_set": "fusar", "model": "cnn", "imbalance": "none", "lr": lr, "seed": 0, "classes": classes,
        "test_sets": ["fusar", "opensarship"], "protocol": {"name": "val"}}))
    frame.to_csv(folder / "predictions_fusar.csv", index=False, float_format="%.6f")
    return folder


def test_reliability_figure_and_grid_table(tmp_path):
    classes = ["Cargo", "Fishing", "Tanker"]
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=60)
    true = rng.integers(0, 3, size=60)
    frame = pd.DataFrame({"path": [f"test/x{k}.png" for k in range(60)], "true": np.array(classes)[true],
                          "pred": np.array(classes)[probs.argmax(1)]})
    for k, c in enumerate(classes):
        frame[f"prob_{c}"] = probs[:, k]
    folder = _cell(tmp_path, classes, frame)
    got_probs, got_true, got_classes = calibration.read_predictions(folder / "predictions_fusar.csv")
    assert got_classes == classes and (got_true == true).all()
    np.testing.assert_allclose(got_probs, probs, atol=1e-6)

    path = tmp_path / "figs/one.png"
    calibration.reliability_figure(probs, true, "a title", path)
    assert Image.open(path).format == "PNG" and not list(path.parent.glob(".*tmp*"))

    table = calibration.calibration_table(tmp_path, tmp_path / calibration.FIGURE_DIR)
    assert len(table) == 1  # opensarship has no predictions file: skipped
    row = table.iloc[0]
    assert (row["train_set"], row["model"], row["lr"], row["test_set"], row["n"]) == ("fusar", "cnn", 0.001,
                                                                                      "fusar", 60)
    assert row["ece"] == pytest.approx(calibration.ece(probs, true), abs=1e-3)
    assert row["accuracy"] == pytest.approx(100 * (probs.argmax(1) == true).mean())
    assert row["figure"].endswith("figures/reliability/fusar/cnn/none/lr0.001/seed0/reliability_fusar.png")
    assert Image.open(row["figure"]).format == "PNG"
    out = calibration.main(["--output-dir", str(tmp_path)])
    assert pd.read_csv(tmp_path / "calibration.csv")["ece"].iloc[0] == pytest.approx(out["ece"].iloc[0])
