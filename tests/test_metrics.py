"""metrics.py: every number checked against a hand computation (and the published code's defect 2 absent)."""

import warnings

import numpy as np
import pytest

import metrics

CLASSES = ["Cargo", "Fishing", "Tanker"]
# 8 chips: Cargo 4, Fishing 2, Tanker 2.
Y_TRUE = ["Cargo", "Cargo", "Cargo", "Cargo", "Fishing", "Fishing", "Tanker", "Tanker"]
Y_PRED = ["Cargo", "Cargo", "Cargo", "Fishing", "Fishing", "Cargo", "Tanker", "Cargo"]


def test_score_row_matches_hand_computation():
    row = metrics.score_row(Y_TRUE, Y_PRED, CLASSES)
    # predicted Cargo: 5 chips, 3 right -> precision 3/5; recall 3/4; F1 = 2 * 0.6 * 0.75 / 1.35
    assert row["Cargo_precision"] == 60.0
    assert row["Cargo_recall"] == 75.0
    assert row["Cargo_f1"] == 66.67
    assert row["Cargo_support"] == 4
    # predicted Fishing: 2 chips, 1 right; recall 1/2
    assert (row["Fishing_precision"], row["Fishing_recall"], row["Fishing_f1"], row["Fishing_support"]) == (
        50.0, 50.0, 50.0, 2)
    # predicted Tanker: 1 chip, right; recall 1/2; F1 = 2 * 1 * 0.5 / 1.5
    assert (row["Tanker_precision"], row["Tanker_recall"], row["Tanker_f1"], row["Tanker_support"]) == (
        100.0, 50.0, 66.67, 2)
    assert row["n"] == 8
    assert row["accuracy"] == 62.5  # 5 of 8
    assert row["balanced_accuracy"] == 58.33  # (75 + 50 + 50) / 3
    assert row["precision_macro"] == 70.0  # (60 + 50 + 100) / 3
    assert row["recall_macro"] == 58.33
    assert row["f1_macro"] == 61.11  # (66.667 + 50 + 66.667) / 3
    assert row["precision_weighted"] == 67.5  # (4 * 60 + 2 * 50 + 2 * 100) / 8
    assert row["recall_weighted"] == 62.5
    assert row["f1_weighted"] == 62.5  # (4 * 66.667 + 2 * 50 + 2 * 66.667) / 8
    assert list(row) == metrics.score_columns(CLASSES)


def test_per_class_precision_and_f1_are_not_the_published_defect():
    row = metrics.score_row(Y_TRUE, Y_PRED, CLASSES)
    # the published code: precision over the samples of the class (always 100), F1 = 2R / (1 + R)
    recall = row["Cargo_recall"] / 100
    assert row["Cargo_precision"] != 100.0
    assert row["Cargo_f1"] != round(100 * 2 * recall / (1 + recall), 2)  # that would be 85.71
    assert row["f1_macro"] != row["f1_weighted"]


def test_indices_and_names_give_the_same_row():
    index = {c: i for i, c in enumerate(CLASSES)}
    by_index = metrics.score_row([index[c] for c in Y_TRUE], np.array([index[c] for c in Y_PRED]), CLASSES)
    assert by_index == metrics.score_row(Y_TRUE, Y_PRED, CLASSES)


def test_absent_and_never_predicted_classes_give_zeros():
    with pytest.warns(UserWarning, match="no test chips of class Tanker"):  # the only warning
        row = metrics.score_row(["Cargo", "Cargo", "Fishing"], ["Cargo", "Cargo", "Cargo"], CLASSES)
    with pytest.warns(UserWarning, match="no test chips of class Tanker"):
        # Tanker predicted for a split without Tanker: scikit-learn's balanced accuracy would warn too
        other = metrics.score_row(["Cargo", "Cargo", "Fishing"], ["Cargo", "Tanker", "Fishing"], CLASSES)
    tanker = (row["Tanker_precision"], row["Tanker_recall"], row["Tanker_f1"], row["Tanker_support"])
    assert tanker == (0, 0, 0, 0)
    assert row["Fishing_precision"] == 0.0  # never predicted: zero_division=0
    assert row["f1_macro"] == 40.0  # (80 + 0) / 2: over the classes with test chips, as balanced accuracy
    assert other["balanced_accuracy"] == 75.0  # mean recall over the classes present: (50 + 100) / 2


def test_unknown_labels_are_an_error():
    with pytest.raises(ValueError, match="Tug"):
        metrics.score_row(["Cargo", "Tug"], ["Cargo", "Cargo"], CLASSES)


def test_confusion_rows_are_true_columns_predicted():
    m = metrics.confusion(Y_TRUE, Y_PRED, CLASSES)
    assert m.tolist() == [[3, 1, 0], [1, 1, 0], [1, 0, 1]]


def test_plot_confusion_writes_a_png(tmp_path):
    path = tmp_path / "c.png"
    metrics.plot_confusion(metrics.confusion(Y_TRUE, Y_PRED, CLASSES), CLASSES, "title", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_macro_averages_skip_a_class_without_test_chips_and_say_so():
    classes = ["Cargo", "Fishing", "Tanker"]
    true = ["Cargo", "Cargo", "Cargo", "Tanker", "Tanker"]  # no Fishing chip in this test split
    pred = ["Cargo", "Cargo", "Fishing", "Tanker", "Cargo"]
    with pytest.warns(UserWarning, match="no test chips of class Fishing"):
        row = metrics.score_row(true, pred, classes)
    # Cargo: P 2/3, R 2/3; Tanker: P 1, R 1/2 -> macro over the two present classes only
    f_cargo, f_tanker = 2 / 3, 2 * 1 * 0.5 / 1.5
    assert row["f1_macro"] == pytest.approx(100 * (f_cargo + f_tanker) / 2, abs=0.01)
    assert row["recall_macro"] == pytest.approx(row["balanced_accuracy"], abs=0.01)
    assert row["Fishing_support"] == 0 and row["Fishing_f1"] == 0.0  # still in the table
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class present: no warning
        metrics.score_row(["Cargo", "Fishing", "Tanker"], ["Cargo", "Cargo", "Tanker"], classes)
