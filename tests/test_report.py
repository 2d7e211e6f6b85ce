"""Tests of report.py: its numbers against scikit-learn on a real tiny grid, its statistics on hand-made
tables, its links, and its honesty about seeds and synthetic data.

    python -m pytest tests/test_report.py -q

One tiny grid is trained once for the module (tests/fixtures.py sets, cnn at 32 px, 1 epoch, batch 8, trained
on fusar, tested on fusar and opensarship, imbalance none and weighted, seeds 0 and 1), then explained by
grad_cams.py and reported on. The training split has a single rarest class (Tanker), so the imbalance section
follows one class. Learning rates, protocols and degenerate cells are tested on hand-written records (the report
reads records only), where the test-best and the validation-best models differ; one more tiny grid, with a
validation split and two learning rates, checks that the report shows the rate scores.csv selects.
"""
import json
import math
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score
from fixtures import CLASSES, md_row, model_rows, write_tiny_prepared

import cam_cells
import grad_cams
import protocols
import report
import seed_stats
import sets
import test_models
from runs import cell_name as runs_cell_name
from runs import find_records

TRAIN_COUNTS = {"Cargo": 8, "Fishing": 5, "Tanker": 3}  # Tanker alone is the rarest training class
TEST_COUNTS = {"Cargo": 6, "Fishing": 3, "Tanker": 3}
CELL = ["train_set", "test_set", "model", "imbalance"]


def _grid_args(data, out, *extra):
    return test_models.get_args_parser().parse_args(
        ["--data-dir", str(data), "--output-dir", str(out), "--models", "cnn", "--img-size", "32",
         "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--num-workers", "0", "--weights", "none",
         *extra])


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_grid")
    data = write_tiny_prepared(root / "prepared", sets=("fusar", "opensarship"),
                               counts={"train": TRAIN_COUNTS, "test": TEST_COUNTS})
    out = root / "out"
    exp = out / "Exp_images"  # where grad_cams.py writes and report.py reads by default
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread beats several fighting over a few shared cores
    try:
        test_models.main(_grid_args(data, out, "--datasets", "fusar", "--seeds", "0,1",
                                    "--imbalance", "none,weighted"))
        grad_cams.main(grad_cams.get_args_parser().parse_args(
            ["--output-dir", str(out), "--data-dir", str(data), "--models", "cnn",
             "--per-class", "2", "--figure-per-class", "1", "--device", "cpu", "--road-chips", "1"]))
    finally:
        torch.set_num_threads(threads)
    path = _report(out, data)
    return {"data": data, "out": out, "exp": exp, "report": path, "text": path.read_text()}


def _report(out, data, *extra):
    """report.py on the grid in `out`, as its command line runs it; returns the path of report.md."""
    return report.main(report.get_args_parser().parse_args(
        ["--output-dir", str(out), "--data-dir", str(data), *extra]))


def _sklearn_scores(predictions):
    """Per run and test set, recomputed here from predictions.csv with scikit-learn (percent)."""
    rows = []
    for key, g in predictions.groupby([*CELL, "seed"]):
        t, p = g["true"], g["pred"]
        row = dict(zip([*CELL, "seed"], key))
        labels = list(CLASSES)
        row.update(f1_macro=100 * f1_score(t, p, labels=labels, average="macro", zero_division=0),
                   balanced_accuracy=100 * balanced_accuracy_score(t, p),
                   f1_weighted=100 * f1_score(t, p, labels=labels, average="weighted", zero_division=0))
        per_class_f1 = f1_score(t, p, labels=labels, average=None, zero_division=0)
        per_class_recall = recall_score(t, p, labels=labels, average=None, zero_division=0)
        for c, f, r in zip(CLASSES, per_class_f1, per_class_recall):
            row[f"{c}_f1"], row[f"{c}_recall"] = 100 * f, 100 * r
        rows.append(row)
    return pd.DataFrame(rows)


def test_main_table_equals_sklearn_on_predictions(grid):
    predictions = model_rows(pd.read_csv(grid["out"] / "predictions.csv", keep_default_na=False))
    expected = _sklearn_scores(predictions)
    table = pd.read_csv(grid["out"] / report.MAIN_CSV)
    table = table[table["protocol"] != "baseline"]  # the baselines' rows follow the models' (test_report_numbers)
    assert len(table) == 4  # fusar x {fusar, opensarship} x cnn x {none, weighted}
    for _, row in table.iterrows():
        runs = expected[(expected[CELL] == row[CELL]).all(axis=1)]
        assert sorted(runs["seed"]) == [0, 1] and row["n_seeds"] == 2
        for value in ["f1_macro", "balanced_accuracy", "f1_weighted", *[f"{c}_f1" for c in CLASSES]]:
            # the records hold percent with two decimals: a mean or an n = 2 std is off by at most 0.0071
            assert row[f"{value}_mean"] == pytest.approx(runs[value].mean(), abs=0.01), value
            assert row[f"{value}_std"] == pytest.approx(runs[value].std(ddof=1), abs=0.01), value
        cells = md_row(grid["text"], [row["train_set"], row["test_set"], "cnn", row["imbalance"]])
        assert cells[4:8] == ["bn on, last", "0.001 (only rate)", "n = 2 †", "–"]  # no val split: no val score
        shown = [f"{row[f'{v}_mean']:.1f} ± {row[f'{v}_std']:.1f}" for v in
                 ["f1_macro", "balanced_accuracy", "f1_weighted", *[f"{c}_f1" for c in CLASSES]]]
        assert [cells[8], cells[10], *cells[12:-1]] == shown  # cells 9 and 11: the intervals
        assert cells[9] == f"[{row['f1_macro_ci_low']:.1f}, {row['f1_macro_ci_high']:.1f}]"


def test_imbalance_effect_is_paired_by_seed_on_the_rarest_class(grid):
    assert "rarest class: Tanker" in grid["text"]
    scores = _sklearn_scores(model_rows(pd.read_csv(grid["out"] / "predictions.csv", keep_default_na=False)))
    effects = pd.read_csv(grid["out"] / report.EFFECTS_CSV)
    effects = effects[effects["kind"] == "imbalance_vs_none"]
    assert len(effects) == 2  # weighted - none, on fusar and on opensarship
    for _, row in effects.iterrows():
        same = (scores["train_set"] == "fusar") & (scores["test_set"] == row["test_set"])
        weighted = scores[same & (scores["imbalance"] == "weighted")].set_index("seed")
        none = scores[same & (scores["imbalance"] == "none")].set_index("seed")
        for value, column in [("f1_macro", "f1_macro"), ("rare_recall", "Tanker_recall")]:
            d = weighted[column] - none[column]
            assert row[f"{value}_mean"] == pytest.approx(d.mean(), abs=0.01)
            assert row[f"{value}_std"] == pytest.approx(d.std(ddof=1), abs=0.02)
        assert row["n_seeds"] == 2
    by_test = effects.set_index("test_set")
    for t in ("fusar", "opensarship"):  # a row per test set: the paired bootstrap difference and its interval
        cells = md_row(grid["text"], [t, "cnn", "weighted"])
        assert cells[3:6] == ["bn on, last", "0.001 (only rate) / 0.001", "n = 2"]
        for cell, v in zip(cells[6:8], ("f1_macro", "rare_recall")):
            assert by_test.loc[t, f"{v}_diff"] == pytest.approx(by_test.loc[t, f"{v}_mean"], abs=0.01)
            assert cell.startswith(f"{by_test.loc[t, f'{v}_diff']:+.1f} [{by_test.loc[t, f'{v}_ci_low']:+.1f}, ")


def test_every_linked_file_exists(grid):
    targets = re.findall(r"\]\(([^)]+)\)", grid["text"])
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", grid["text"])
    assert {"report_figures/imbalance_effects.png", "figures/cross_dataset_f1_macro_none.png",
            "figures/cross_dataset_f1_macro_weighted.png"} <= set(images)
    assert any(t.endswith("cam_grid_fusar.png") for t in images)
    for target in targets:
        assert (grid["report"].parent / target).is_file(), target


def test_report_sections_come_from_the_records(grid):
    text = grid["text"]
    assert text.startswith("# ") and "**SYNTHETIC DATA.**" in text.splitlines()[2]  # tiny chips have masks
    assert md_row(text, ["fusar", "train"])[2:] == ["8", "5", "3", "16"]
    assert md_row(text, ["opensarship", "test"])[2:] == ["6", "3", "3", "12"]
    # floor of all-Cargo on a 6/3/3 test split: accuracy 50, macro-F1 (2/3)/3, balanced accuracy 1/3 (the floor
    # baseline's row of the main table; the accuracy in the published table's row of the test split's majority)
    floor = md_row(text, ["fusar", "fusar", "floor", "none", "baseline"])
    assert [floor[8], floor[10]] == ["22.2", "33.3"]
    assert md_row(text, ["fusar", "ours, all Cargo"])[3] == "50.0"
    assert md_row(text, ["fusar", "published, fine-tuned VGG16"])[3:] == ["73.05", "70.54", "90.2", "31.2",
                                                                            "60.3"]
    assert md_row(text, ["mixed", "published, all Cargo"])[3:5] == ["71.92", "60.18"]
    assert md_row(text, ["fusar", "ours, `fine_vgg`"])[2] == "no run"
    assert "inverted" in text or "wrong way round" in text
    assert "fusar: no best model named, since its runs have no validation split" in text
    assert "Protocol of the records: `bn on, last` (batch-norm recalibration on, epoch kept: last, validation " \
        "split no; learning rate(s) 0.001; 4 runs)" in text
    assert "Validation split (`val`" in text and "none in fusar, opensarship" in text
    records = [rec for _, rec in find_records(grid["out"])]
    cells = md_row(text, ["fusar", "cnn", "4"])
    assert cells[3] == f"{sum(r['train_seconds'] for r in records):.1f}"
    assert cells[4] == f"{sum(r['eval_seconds'] for r in records):.1f}"
    assert f"- Device: `{records[0]['device']}`" in text and f"`{records[0]['torch_version']}`" in text
    summary = pd.read_csv(grid["exp"] / "cam_summary.csv")
    summary = summary[summary["outcome"] == "all"].set_index("set")  # the correct / wrong rows are the split
    cam = md_row(text, ["fusar", "cnn", f"{summary.loc['fusar', 'n']} ({summary.loc['fusar', 'n_zero']})"])
    assert cam[3] == f"{100 * summary.loc['fusar', 'on_ship_energy']:.1f}"
    assert cam[4] == f"{100 * summary.loc['fusar', 'prior_energy']:.1f}"
    assert cam[5] == f"{summary.loc['fusar', 'lift_prior']:.2f}" and cam[7] == f"{summary.loc['fusar', 'lift']:.2f}"
    calib = pd.read_csv(grid["out"] / "calibration.csv")  # ECE of every cell and test set, beside the report
    assert len(calib) == sum(len(r["test_sets"]) for r in records) and calib["ece"].between(0, 100).all()
    ece = calib.groupby(["train_set", "model"])["ece"].mean().loc[("fusar", "cnn")]
    assert md_row(text, ["fusar", "cnn", records[0]["protocol"]["name"]])[3] == f"{ece:.1f}"


def test_single_seed_grid_shows_no_spread(grid, tmp_path):
    out = tmp_path / "out"
    for seed0 in (grid["out"] / "runs").glob("*/*/*/lr*/seed0"):
        shutil.copytree(seed0, out / seed0.relative_to(grid["out"]))
    test_models.main(_grid_args(grid["data"], out, "--aggregate-only"))
    text = _report(out, grid["data"], "--exp-dir", str(grid["exp"])).read_text()
    assert "±" not in text
    assert "seeds 0 (single seed)" in text and "Single seed: every number is one run's result" in text
    assert md_row(text, ["fusar", "fusar", "cnn", "none"])[6] == "1 (single seed) †"
    table = pd.read_csv(out / report.MAIN_CSV)
    assert table["f1_macro_std"].isna().all() and (table["n_seeds"] == 1).all()
    scores = pd.read_csv(out / "scores.csv")
    scores = scores[scores.adaptation == "none"].set_index(CELL)  # one seed: the interval of its scores.csv row
    for _, row in table.iterrows():
        assert row["f1_macro_ci_low"] == scores.loc[tuple(row[CELL]), "f1_macro_ci_low"]
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert (out / target).is_file(), target


def test_aggregate_seeds_hand_made():
    runs = pd.DataFrame({"cell": ["a", "a", "a", "a", "b"], "seed": [0, 1, 2, 3, 0],
                         "x": [1.0, 2.0, 3.0, 4.0, 7.0], "y": [10.0, 10.0, 10.0, 13.0, 5.0]})
    agg = seed_stats.aggregate_seeds(runs, ["cell"], ["x", "y"]).set_index("cell")
    assert agg.loc["a", "x_mean"] == 2.5 and agg.loc["a", "y_mean"] == 10.75
    # squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    assert agg.loc["a", "x_std"] == pytest.approx(math.sqrt(5 / 3))
    assert agg.loc["a", "y_std"] == pytest.approx(1.5)
    assert agg.loc["a", "n_seeds"] == 4 and agg.loc["a", "seeds"] == "0 1 2 3"
    assert agg.loc["b", "x_mean"] == 7.0 and np.isnan(agg.loc["b", "x_std"]) and agg.loc["b", "n_seeds"] == 1
    assert seed_stats.fmt(agg.loc["a", "x_mean"], agg.loc["a", "x_std"], 4) == "2.5 ± 1.3"
    assert seed_stats.fmt(agg.loc["b", "x_mean"], agg.loc["b", "x_std"], 1) == "7.0"
    assert seed_stats.fmt(-0.04, 0.5, 2, signed=True) == "-0.0 ± 0.5" and seed_stats.fmt(math.nan) == "–"


def test_pairs_use_only_seeds_both_runs_have():
    keys = {"train_set": "fusar", "test_set": "fusar", "model": "cnn"}
    runs = pd.DataFrame([{**keys, "imbalance": "none", "seed": s, "f1_macro": v, "rare_recall": r}
                         for s, v, r in [(0, 50.0, 10.0), (1, 60.0, 20.0), (2, 70.0, 30.0)]]
                        + [{**keys, "imbalance": "weighted", "seed": s, "f1_macro": v, "rare_recall": r}
                           for s, v, r in [(1, 65.0, 40.0), (2, 71.0, 30.0), (3, 99.0, 99.0)]])
    pairs = seed_stats.imbalance_pairs(runs, report.BASELINE)
    assert sorted(pairs["seed"]) == [1, 2]  # seed 0 has no weighted run, seed 3 no baseline
    agg = seed_stats.aggregate_seeds(pairs, ["train_set", "test_set", "model", "imbalance"],
                                 ["f1_macro", "rare_recall"]).iloc[0]
    assert agg["f1_macro_mean"] == 3.0 and agg["f1_macro_std"] == pytest.approx(math.sqrt(8))  # diffs 5 and 1
    assert agg["rare_recall_mean"] == 10.0 and agg["n_seeds"] == 2

    runs = [("opensarship", 0, 80.0), ("opensarship", 1, 70.0), ("fusar", 0, 30.0), ("fusar", 1, 40.0),
            ("mixed", 5, 10.0)]  # mixed seed 5 has no run trained on opensarship: no pair
    cross = pd.DataFrame([{"train_set": tr, "test_set": "opensarship", "model": "cnn", "imbalance": "none",
                           "seed": s, "f1_macro": v} for tr, s, v in runs])
    gaps = seed_stats.transfer_pairs(cross)
    assert set(zip(gaps["train_set"], gaps["seed"], gaps["f1_macro"])) == {("fusar", 0, -50.0),
                                                                           ("fusar", 1, -30.0)}


def test_synthetic_rule():
    real = pd.DataFrame({"source": ["data/raw/opensarship/S1A_x.zip!Patch_Uint8/Cargo_x1_y2_vv.tif"],
                         "mask": [""]})
    assert not report.is_synthetic(real)
    assert report.is_synthetic(real.assign(source=["data/raw/synthetic/opensarship/S1A_x.zip!Patch/a.tif"]))
    assert report.is_synthetic(real.assign(source=["C:\\raw\\synthetic\\fusar\\Cargo\\a.tiff"]))
    assert report.is_synthetic(real.assign(mask=["masks/train/Cargo/a.png"]))
    assert not report.is_synthetic(real.assign(source=["data/raw/not_synthetic_here/a.tif"]))
    assert not report.is_synthetic(real, {"synthetic": False})
    assert report.is_synthetic(real, {"synthetic": True})  # what dataset_prep.py --synthetic writes


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished cells .* run python test_models.py first"):
        report.main(report.get_args_parser().parse_args(["--output-dir", str(tmp_path)]))


def test_command_line_and_stale_temporaries(tmp_path):
    help_text = report.get_args_parser().format_help()
    assert "(default: None)" not in help_text and help_text.count("(default:") == 4  # dirs, --bootstrap
    assert "<output-dir>/Exp_images" in help_text
    # a temporary report left by a killed run of this host is removed at the start (runs.clean_stale)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    stale = tmp_path / f".report.md.tmp-{socket.gethostname()}-{dead}-0123abcd"
    stale.write_text("half a report")
    with pytest.raises(SystemExit):
        report.main(report.get_args_parser().parse_args(["--output-dir", str(tmp_path)]))
    assert not stale.exists()


# ------------------------------------------------------------------------------------------------------------
# learning rates, protocols and degenerate cells, on hand-written records

def _scores(value):
    """A record's metrics with every score equal to `value` (percent), as metrics.score_row names them."""
    scores = {k: value for k in ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro")}
    return {"n": 12, **scores, **{f"{c}_{m}": value for c in CLASSES for m in ("precision", "recall", "f1")}}


def _write_record(out, cell, tests, val=None, legacy=False, degenerate=()):
    """A finished cell as test_models.py writes it, without its checkpoint: `cell` = (train set, model,
    imbalance, lr, seed); tests {test set: macro-F1}; val: the kept epoch's validation macro-F1 (None: no val
    split); legacy: the earlier layout (no lr folder, no protocol, no degenerate flags: the report reads them
    from predictions_<test set>.csv, written all Cargo for the test sets in `degenerate`)."""
    train_set, model_name, imbalance, lr, seed = cell
    record = {"train_set": train_set, "model": model_name, "imbalance": imbalance, "seed": seed,
              "classes": list(CLASSES), "args": {"lr": lr, "epochs": 3}, "history": [],
              "train_counts": TRAIN_COUNTS, "train_seconds": 1.0, "eval_seconds": 0.5, "device": "cpu"}
    record["test_sets"] = {t: {"n": 12, "metrics": _scores(v)} for t, v in tests.items()}
    if legacy:
        folder = out / "runs" / train_set / model_name / imbalance / f"seed{seed}"
    else:
        folder = out / "runs" / runs_cell_name((train_set, model_name, imbalance, "raw", lr, seed))
        record["lr"] = lr
        record["protocol"] = {"name": "bn on, best" if val is not None else "bn on, last", "bn_recalibrate": "on",
                              "bn_layers": 2, "val": val is not None, "frozen_bn": None,
                              "select": "best" if val is not None else "last", "epoch": 2, "val_f1_macro": val,
                              "patience": None, "stopped_early": False}
        for t, result in record["test_sets"].items():
            result.update(degenerate=t in degenerate, top_share=100.0 if t in degenerate else 50.0)
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(record))
    if legacy:
        for t in tests:
            true = ["Cargo"] * 6 + ["Fishing"] * 3 + ["Tanker"] * 3
            pred = ["Cargo"] * 12 if t in degenerate else true
            pd.DataFrame({"path": [f"test/{c}/{i}.png" for i, c in enumerate(true)], "true": true,
                          "pred": pred}).to_csv(folder / f"predictions_{t}.csv", index=False)
    return folder


def test_best_model_is_chosen_on_validation_never_on_test(tmp_path):
    # (model, lr): (validation macro-F1, test macro-F1) per seed. On test, cnn at either rate and vgg at 0.0003
    # beat vgg at 0.001; on validation cnn's best rate is 0.0003, vgg's is 0.001, and vgg at 0.001 beats all.
    runs_ = {("cnn", 0.001): ((60, 62), (95, 93)), ("cnn", 0.0003): ((70, 72), (90, 88)),
             ("vgg", 0.001): ((80, 82), (40, 42)), ("vgg", 0.0003): ((50, 52), (99, 97))}
    for (model_name, lr), (vals, tests) in runs_.items():
        for seed, (val, test) in enumerate(zip(vals, tests)):
            _write_record(tmp_path, ("fusar", model_name, "none", lr, seed), {"fusar": test}, val=val)
    text = _report(tmp_path, tmp_path / "no_data").read_text()
    best = next(line for line in text.splitlines() if line.startswith("Best model"))
    assert "chosen on validation" in best and "never a test score" in best
    assert "fusar: vgg (none, lr 0.001, bn on, best), validation macro-F1 81.0 ± 1.4; test macro-F1 41.0 ± 1.4" \
        in best
    cnn = md_row(text, ["fusar", "fusar", "cnn", "none", "bn on, best"])
    assert cnn[5:9] == ["0.0003 (chosen on validation)", "n = 2 †", "71.0 ± 1.4", "89.0 ± 1.4"]
    assert md_row(text, ["fusar", "fusar", "vgg", "none", "bn on, best"])[5] == "0.001 (chosen on validation)"
    assert "| 0.001 (chosen" not in "".join(line for line in text.splitlines() if "| cnn |" in line)
    table = pd.read_csv(tmp_path / report.MAIN_CSV)
    assert sorted(zip(table["model"], table["lr"])) == [("cnn", 0.0003), ("vgg", 0.001)]
    assert "Protocol of the records: `bn on, best` (batch-norm recalibration on, epoch kept: best (validation " \
        "macro-F1), validation split yes; learning rate(s) 0.0003, 0.001; 8 runs)" in text


def test_several_rates_without_validation_are_each_shown_and_no_best_is_named(tmp_path):
    for lr, test in ((0.001, 50.0), (0.0003, 70.0)):
        _write_record(tmp_path, ("fusar", "cnn", "none", lr, 0), {"fusar": test})
    text = _report(tmp_path, tmp_path / "no_data").read_text()
    assert "fusar: no best model named, since its runs have no validation split" in text
    assert "Best model" in text and "cnn (none" not in text
    for lr, test in (("0.001", "50.0"), ("0.0003", "70.0")):
        row = md_row(text, ["fusar", "fusar", "cnn", "none", "bn on, last", f"{lr} (none chosen: no validation)"])
        assert row[8] == test


def test_legacy_records_are_labelled_and_never_averaged_with_new_ones(tmp_path):
    _write_record(tmp_path, ("fusar", "cnn", "none", 0.001, 0), {"fusar": 40.0}, legacy=True)
    _write_record(tmp_path, ("fusar", "cnn", "none", 0.001, 0), {"fusar": 80.0}, val=75.0)
    _write_record(tmp_path, ("fusar", "cnn", "none", 0.001, 1), {"fusar": 84.0}, val=77.0)
    text = _report(tmp_path, tmp_path / "no_data").read_text()
    legacy = md_row(text, ["fusar", "fusar", "cnn", "none", protocols.LEGACY_LABEL])
    assert protocols.LEGACY_LABEL == "earlier records: stored batch-norm statistics, last epoch, no validation"
    assert legacy[5:9] == ["0.001 (only rate)", "1 (single seed) †", "–", "40.0"]
    new = md_row(text, ["fusar", "fusar", "cnn", "none", "bn on, best"])
    assert new[5:9] == ["0.001 (only rate)", "n = 2 †", "76.0 ± 1.4", "82.0 ± 2.8"]  # 80 and 84: legacy 40 left out
    assert f"`legacy` ({protocols.LEGACY_LABEL}" in text and "`bn on, best`" in text
    # the best model comes from the runs with validation only
    assert "fusar: cnn (none, lr 0.001, bn on, best), validation macro-F1 76.0 ± 1.4" in text
    table = pd.read_csv(tmp_path / report.MAIN_CSV)
    assert sorted(table["protocol"]) == ["bn on, best", "legacy"] and sorted(table["n_seeds"]) == [1, 2]


def test_degenerate_cells_are_counted_and_marked(tmp_path):
    both = {"fusar": 60.0, "opensarship": 30.0}
    _write_record(tmp_path, ("fusar", "cnn", "none", 0.001, 0), both, degenerate=("opensarship",))
    _write_record(tmp_path, ("fusar", "cnn", "none", 0.001, 1), both)
    _write_record(tmp_path, ("fusar", "cnn", "none", 0.001, 2), both, degenerate=("fusar", "opensarship"))
    _write_record(tmp_path, ("fusar", "vgg", "none", 0.001, 0), both, legacy=True, degenerate=("fusar",))
    _write_record(tmp_path, ("fusar", "vgg", "none", 0.001, 1), both, legacy=True)
    text = _report(tmp_path, tmp_path / "no_data").read_text()
    assert "3 of 5 cells predict one class for more than 95 % of a test set's chips" in text
    assert md_row(text, ["fusar", "opensarship", "cnn", "none"])[-1] == "**2 of 3 seeds**"
    assert md_row(text, ["fusar", "fusar", "cnn", "none"])[-1] == "**1 of 3 seeds**"
    assert md_row(text, ["fusar", "fusar", "vgg", "none"])[-1] == "**1 of 2 seeds**"  # from its predictions
    assert md_row(text, ["fusar", "opensarship", "vgg", "none"])[-1] == "no"


def _add_val_split(set_dir, per_class):
    """Move the first `per_class` training chips of each class (and their masks) to val/, as dataset_prep.py
    --val-size lays a validation split out: val/<Class>/, masks/val/<Class>/, manifest split `val`."""
    rows = sets.read_manifest(set_dir)
    for cls in CLASSES:
        for row in [r for r in rows if r["split"] == "train" and r["class"] == cls][:per_class]:
            for key, old in (("path", "train/"), ("mask", "masks/train/")):
                new = row[key].replace(old, old.replace("train", "val"), 1)
                (set_dir / new).parent.mkdir(parents=True, exist_ok=True)
                (set_dir / row[key]).rename(set_dir / new)
                row[key] = new
            row["split"] = "val"
    sets.write_manifest(set_dir / sets.MANIFEST, sorted(rows, key=lambda r: r["path"]))


def test_validation_grid_shows_the_rates_scores_csv_selects(tmp_path):
    data = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",),
                               counts={"train": {"Cargo": 10, "Fishing": 6, "Tanker": 5}, "test": TEST_COUNTS})
    _add_val_split(data / "fusar", 2)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        test_models.main(_grid_args(data, out, "--datasets", "fusar", "--seeds", "0,1", "--epochs", "2",
                                    "--lr", "0.01,0.0003"))
    finally:
        torch.set_num_threads(threads)
    text = _report(out, data).read_text()
    assert md_row(text, ["fusar", "val"])[2:] == ["2", "2", "2", "6"]
    assert "Validation split (`val`, carved from the training data; learning rates and the kept epoch are chosen " \
        "on it): fusar." in text
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    chosen = scores.loc[scores["selected"], "lr"].unique()
    assert len(chosen) == 1 and scores["val_f1_macro"].notna().all()
    row = md_row(text, ["fusar", "fusar", "cnn", "none", "bn on, best"])
    assert row[5] == f"{chosen[0]:g} (chosen on validation)"
    mean_val = scores[scores["selected"]]["val_f1_macro"].mean()
    assert row[7] == f"{mean_val:.1f} ± {scores[scores['selected']]['val_f1_macro'].std():.1f}"
    assert f"fusar: cnn (none, lr {chosen[0]:g}, bn on, best), validation macro-F1" in text
    # grad_cams.py explains the cell of the same rate, the smallest seed
    cell, problem, how = cam_cells.find_cell(out, "fusar", "cnn", "none", None)
    assert problem is None and cell == out / "runs/fusar/cnn/none" / f"lr{chosen[0]:g}" / "seed0"
    assert how.startswith(f"lr {chosen[0]:g}: chosen on validation")
