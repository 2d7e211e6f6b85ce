"""baselines.py: floor, size-only and shortcut baselines on tiny prepared sets, every number checked."""

import hashlib

import numpy as np
import pytest
from fixtures import CLASSES as FIXTURE_CLASSES
from fixtures import write_tiny_prepared
from PIL import Image

import baselines
import metrics
import sets

CLASSES = list(FIXTURE_CLASSES)


def _rewrite_manifest(set_dir, change):
    """Apply change(row) to every manifest row and write the manifest back (sorted as it was)."""
    rows = sets.read_manifest(set_dir)
    for row in rows:
        change(row)
    sets.write_manifest(set_dir / sets.MANIFEST, rows)


def _test_rows(set_dir):
    return [r for r in sets.read_manifest(set_dir) if r["split"] == "test"]


def _score(results, baseline, test_set):
    _, true, probs = results[baseline][test_set]
    return metrics.score_row(true, probs.argmax(axis=1), CLASSES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """fusar and opensarship sets (train Cargo 8, Fishing 4, Tanker 4; test 6, 3, 3) and a val split."""
    counts = {"train": {"Cargo": 8, "Fishing": 4, "Tanker": 4}, "val": {"Cargo": 5, "Fishing": 1, "Tanker": 1},
              "test": {"Cargo": 6, "Fishing": 3, "Tanker": 3}}
    return write_tiny_prepared(tmp_path_factory.mktemp("bl"), sets=("fusar", "opensarship"), counts=counts)


def test_floor_predicts_training_majority_aligned_with_manifest(tiny):
    results, info = baselines.fit_predict(tiny, "fusar", ["fusar", "opensarship"], CLASSES)
    assert info["majority"] == "Cargo"
    assert info["n_train"] == 16  # the training split only: val (7 chips) and test are not used
    assert info["train_frequencies"] == {"Cargo": 0.5, "Fishing": 0.25, "Tanker": 0.25}
    for test_set in ("fusar", "opensarship"):
        manifest = _test_rows(tiny / test_set)
        for name in baselines.BASELINES:
            paths, true, probs = results[name][test_set]
            assert paths == [r["path"] for r in manifest]  # manifest order, paths exactly as written there
            assert [CLASSES[i] for i in true] == [r["class"] for r in manifest]
            assert probs.shape == (12, 3)
            np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        _, _, probs = results["floor"][test_set]
        np.testing.assert_array_equal(probs, np.tile([0.5, 0.25, 0.25], (12, 1)))
        row = _score(results, "floor", test_set)
        assert (row["accuracy"], row["Cargo_recall"], row["Fishing_recall"], row["Tanker_recall"]) == (
            50.0, 100.0, 0.0, 0.0)
    table = baselines.predictions_frame(*results["floor"]["opensarship"], CLASSES)
    assert list(table.columns) == ["path", "true", "pred", "prob_Cargo", "prob_Fishing", "prob_Tanker"]
    assert set(table["pred"]) == {"Cargo"}
    assert table["true"].tolist() == [r["class"] for r in _test_rows(tiny / "opensarship")]
    assert table["prob_Fishing"].tolist() == [0.25] * 12


def test_size_only_perfect_when_length_determines_class(tmp_path):
    root = write_tiny_prepared(tmp_path, sets=("fusar",))
    lengths = {"Cargo": 200.0, "Fishing": 20.0, "Tanker": 100.0}

    def by_class(row):
        jitter = int(hashlib.sha1(row["path"].encode()).hexdigest(), 16) % 10  # 0..9 m, width unrelated
        row["ship_length_m"] = f"{lengths[row['class']] + jitter:.1f}"
        row["ship_width_m"] = f"{10 + jitter % 7:.1f}"
    _rewrite_manifest(root / "fusar", by_class)
    results, info = baselines.fit_predict(root, "fusar", ["fusar"], CLASSES, baselines=("size_only",))
    assert info["missing_size"] == {"fusar": 0}
    assert info["size_only"]["fitted_on"] == 16
    row = _score(results, "size_only", "fusar")
    assert (row["f1_macro"], row["accuracy"], row["n"]) == (100.0, 100.0, 12)


def test_chips_without_size_get_the_majority_and_are_counted(tmp_path):
    root = write_tiny_prepared(tmp_path, sets=("fusar",))
    lengths = {"Cargo": 200.0, "Fishing": 20.0, "Tanker": 100.0}
    blank = {"test/Fishing/fusar_Fishing_test000.png": ("", "12.0"),
             "test/Tanker/fusar_Tanker_test001.png": ("100.0", "inf"),
             "test/Tanker/fusar_Tanker_test002.png": ("nan", "n/a"),
             "train/Fishing/fusar_Fishing_train000.png": ("", "")}

    def sizes(row):
        row["ship_length_m"], row["ship_width_m"] = blank.get(row["path"], (f"{lengths[row['class']]:.1f}", "10"))
    _rewrite_manifest(root / "fusar", sizes)
    results, info = baselines.fit_predict(root, "fusar", ["fusar"], CLASSES, baselines=("size_only",))
    assert info["missing_size"] == {"fusar": 3}
    assert info["size_only"]["fitted_on"] == 15
    paths, true, probs = results["size_only"]["fusar"]
    pred = probs.argmax(axis=1)
    for path, p, t, row in zip(paths, pred, true, probs):
        if path in blank:  # the floor's prediction and probabilities
            assert CLASSES[p] == "Cargo"
            np.testing.assert_array_equal(row, [0.5, 0.25, 0.25])
        else:
            assert p == t
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    row = _score(results, "size_only", "fusar")
    assert (row["Cargo_recall"], row["Fishing_recall"], row["Tanker_recall"]) == (100.0, 66.67, 33.33)


def _repaint(set_dir, side_of):
    """Rewrite every chip as noise from one distribution (uniform 0-255) at side_of(row) px square: the chips then
    differ by size alone. Updates the manifest (chip size, sha1)."""
    rng = np.random.default_rng(0)

    def paint(row):
        side = side_of(row)
        path = set_dir / row["path"]
        Image.fromarray(rng.integers(0, 256, size=(side, side), dtype=np.uint8), mode="L").save(path)
        row["chip_h"] = row["chip_w"] = str(side)
        row["sha1"] = hashlib.sha1(path.read_bytes()).hexdigest()
    _rewrite_manifest(set_dir, paint)


def test_shortcut_finds_chip_size(tmp_path):
    root = write_tiny_prepared(tmp_path, sets=("fusar",))
    _repaint(root / "fusar", lambda row: 17 if row["class"] == "Fishing" else int(row["chip_h"]))  # others 32-40
    results, info = baselines.fit_predict(root, "fusar", ["fusar"], CLASSES, baselines=("shortcut",))
    row = _score(results, "shortcut", "fusar")
    assert (row["Fishing_recall"], row["Fishing_precision"], row["Fishing_f1"]) == (100.0, 100.0, 100.0)
    importances = info["shortcut"]["importances"]
    assert sorted(importances, key=importances.get)[-2:] in (["chip_h", "chip_w"], ["chip_w", "chip_h"])
    control = write_tiny_prepared(tmp_path / "control", sets=("fusar",))  # the same noise, Fishing not shrunk
    _repaint(control / "fusar", lambda row: int(row["chip_h"]))
    results, _ = baselines.fit_predict(control, "fusar", ["fusar"], CLASSES, baselines=("shortcut",))
    assert _score(results, "shortcut", "fusar")["Fishing_f1"] <= 50  # chance on 3 chips: size was the cue
    features = baselines.image_stats(root / "fusar", _test_rows(root / "fusar"))
    is_fishing = np.array([r["class"] == "Fishing" for r in _test_rows(root / "fusar")])
    assert (features[is_fishing, :2] == 17).all() and (features[~is_fishing, :2] >= 32).all()


def test_image_stats_by_hand(tmp_path):
    image = np.full((16, 24), 10, dtype=np.uint8)  # ring: 2 rows (16 // 8), 3 columns (24 // 8), all 10
    image[2:14, 3:21] = 200
    image[5, 5] = 255
    (tmp_path / "test" / "Cargo").mkdir(parents=True)
    Image.fromarray(image, mode="L").save(tmp_path / "test" / "Cargo" / "a.png")
    Image.fromarray(np.full((5, 3), 7, dtype=np.uint8), mode="L").save(tmp_path / "test" / "Cargo" / "b.png")
    x = baselines.image_stats(tmp_path, [{"path": "test/Cargo/a.png"}, {"path": "test/Cargo/b.png"}])
    v = image.astype(float)
    expected = [16, 24, v.mean(), 200, v.std(), np.percentile(v, 99), 10]
    np.testing.assert_allclose(x[0], expected)
    np.testing.assert_allclose(x[1], [5, 3, 7, 7, 0, 7, 7])  # a 5 x 3 chip is all ring
    assert baselines.border_ring(16, 24).sum() == 16 * 24 - 12 * 18
    assert baselines.border_ring(1, 1).all()


def test_same_seed_same_predictions(tiny):
    first, _ = baselines.fit_predict(tiny, "opensarship", ["fusar", "opensarship"], CLASSES, seed=3)
    baselines._chip_stats.cache_clear()  # decoded again: the same numbers
    second, _ = baselines.fit_predict(tiny, "opensarship", ["fusar", "opensarship"], CLASSES, seed=3)
    for name in baselines.BASELINES:
        for test_set in ("fusar", "opensarship"):
            assert first[name][test_set][0] == second[name][test_set][0]
            np.testing.assert_array_equal(first[name][test_set][2], second[name][test_set][2])


def test_unknown_baseline_and_class_are_errors(tiny):
    with pytest.raises(ValueError, match="unknown baselines"):
        baselines.fit_predict(tiny, "fusar", ["fusar"], CLASSES, baselines=("cnn",))
    with pytest.raises(ValueError, match="not among"):
        baselines.fit_predict(tiny, "fusar", ["fusar"], ["Cargo", "Fishing"])


def test_score_frame_rows(tiny):
    results, _ = baselines.fit_predict(tiny, "fusar", ["opensarship"], CLASSES, baselines=("floor",))
    frame = baselines.score_frame(results, "fusar", CLASSES, seed=0)
    assert frame[["train_set", "test_set", "model", "imbalance", "seed"]].values.tolist() == [
        ["fusar", "opensarship", "floor", "none", 0]]
    assert frame.loc[0, "f1_macro"] == round(100 * (2 * 0.5 / 1.5) / 3, 2)  # Cargo F1 2/3, others 0
