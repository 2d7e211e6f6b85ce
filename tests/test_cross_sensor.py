"""Input variants as a grid axis and the label-free adaptations, end to end on tiny prepared sets: the runs/
layout, the records, the rows of scores.csv, every variant recomputed from the saved predictions, and the
report's cross-sensor section. CPU only, 16 px, 1 epoch."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import expected_scores, manifest, set_manifest_values, write_tiny_prepared

import adaptation
import cross_section
import report
import runs
import test_models as tm

torch.set_num_threads(1)
CLASSES = ["Cargo", "Fishing", "Tanker"]
NO_SPACING = "no pixel spacing in the manifest (a FUSAR-Ship chip without a meta.csv row)"
QUICK = ["--img-size", "16", "--epochs", "1", "--weights", "none", "--device", "cpu", "--num-workers", "0",
         "--seeds", "0", "--bootstrap", "50"]


def run(*flags):
    return tm.main(tm.get_args_parser().parse_args([*QUICK, *flags]))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    prepared = write_tiny_prepared(tmp_path_factory.mktemp("prepared"))
    # a FUSAR-Ship test chip without pixel spacing (no meta.csv row): harmonised inputs leave it out
    blank = next(r["path"] for r in manifest(prepared / "fusar") if r["split"] == "test")
    set_manifest_values(prepared / "fusar", {blank: {"spacing_row_m": "", "spacing_col_m": ""}})
    out = tmp_path_factory.mktemp("grid")
    run("--data-dir", str(prepared), "--output-dir", str(out), "--datasets", "fusar,opensarship,mixed",
        "--models", "cnn", "--inputs", "raw,m4-clutter")
    return prepared, out


def test_input_variants_are_a_level_of_runs_and_part_of_the_record(grid):
    _, out = grid
    raw = out / "runs/fusar/cnn/none/lr0.001/seed0"
    harmonised = out / "runs/fusar/cnn/none/m4-clutter/lr0.001/seed0"
    assert json.loads((raw / runs.RECORD).read_text())["inputs"] == "raw"
    record = json.loads((harmonised / runs.RECORD).read_text())
    assert record["inputs"] == "m4-clutter"
    assert record["input_variant"]["m_per_px"] == 4 and record["input_variant"]["radiometry"] == "clutter"
    assert "--inputs m4-clutter" in record["command"]
    # the chip without spacing is left out of the harmonised cells' fusar tests, and counted with its reason
    assert record["input_variant"]["left_out"] == {"fusar/test": {NO_SPACING: 1}}
    n_raw = len(pd.read_csv(raw / "predictions_fusar.csv"))
    assert len(pd.read_csv(harmonised / "predictions_fusar.csv")) == n_raw - 1
    assert record["test_sets"]["fusar"]["left_out"] == 1
    found = {(r["train_set"], r["inputs"]) for _, r in runs.find_records(out)}
    assert found == {(s, v) for s in ("fusar", "opensarship", "mixed") for v in ("raw", "m4-clutter")}


def test_adaptations_only_across_the_two_sensors(grid):
    _, out = grid
    for variant in ("raw", "m4-clutter"):
        level = "" if variant == "raw" else f"{variant}/"
        fusar = out / f"runs/fusar/cnn/none/{level}lr0.001/seed0"
        assert (fusar / "predictions_opensarship.adabn.csv").is_file()
        assert (fusar / "predictions_opensarship.prior.csv").is_file()
        assert not list(fusar.glob("predictions_fusar.*.csv")) and not list(fusar.glob("predictions_mixed.*.csv"))
        mixed = out / f"runs/mixed/cnn/none/{level}lr0.001/seed0"
        assert not list(mixed.glob("predictions_*.*.csv"))  # never for the union
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    adapted = scores[scores.adaptation != "none"]
    assert set(zip(adapted.train_set, adapted.test_set)) == {("fusar", "opensarship"), ("opensarship", "fusar")}
    assert set(adapted.adaptation) == {"adabn", "prior"}
    assert set(scores.inputs) == {"raw", "m4-clutter"}


def test_every_variant_is_recomputed_from_its_saved_predictions(grid):
    _, out = grid
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    for folder, record in runs.find_records(out):
        if record["train_set"] != "fusar":
            continue
        for variant in ("none", "adabn", "prior"):
            name = "predictions_opensarship.csv" if variant == "none" else f"predictions_opensarship.{variant}.csv"
            pred = pd.read_csv(folder / name, keep_default_na=False)
            row = scores[(scores.train_set == "fusar") & (scores.test_set == "opensarship")
                         & (scores.model == "cnn") & (scores.inputs == record["inputs"])
                         & (scores.adaptation == variant)].iloc[0]
            want = expected_scores(pred["true"], pred["pred"], CLASSES)
            assert row["f1_macro"] == pytest.approx(want["f1_macro"], abs=0.006)
            assert row["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"], abs=0.006)
        # prior: EM from the unadapted probabilities and the prior the cell trained under, nothing else
        base = pd.read_csv(folder / "predictions_opensarship.csv")
        probs = base[[f"prob_{c}" for c in CLASSES]].to_numpy()
        info = record["test_sets"]["opensarship"]["adaptation"]["prior"]
        adjusted, prior, _ = adaptation.em_prior(probs, np.array(info["train_prior"]))
        saved = pd.read_csv(folder / "predictions_opensarship.prior.csv")
        assert np.allclose(saved[[f"prob_{c}" for c in CLASSES]].to_numpy(), adjusted, atol=2e-6)
        assert np.allclose(prior, info["estimated_prior"], atol=1e-6)
        counts = np.array([record["train_counts"][c] for c in CLASSES], dtype=float)
        assert np.allclose(info["train_prior"], counts / counts.sum(), atol=1e-6)  # imbalance none: empirical


def test_report_has_the_cross_sensor_section(grid):
    prepared, out = grid
    report.main(report.get_args_parser().parse_args(["--output-dir", str(out), "--data-dir", str(prepared),
                                                     "--bootstrap", "50"]))
    text = (out / "report.md").read_text()
    assert "## Across sensors" in text and "**fusar → opensarship**" in text
    assert "- m4-clutter leaves out 1 of fusar/test (1 no pixel spacing" in text
    table = pd.read_csv(out / cross_section.CSV, keep_default_na=False)
    cnn = table[table.model == "cnn"]
    assert len(cnn) == 2 * 2 * 3  # two directions x two inputs x (none, adabn, prior)
    assert set(table.model) >= {"cnn", "size_only", "shortcut"}
    raw = cnn[(cnn.inputs == "raw") & (cnn.adaptation == "none")]
    assert (raw["f1_macro_diff"] == "").all()  # the reference row has no difference with itself
    other = cnn[cnn.adaptation == "adabn"]
    assert pd.to_numeric(other["f1_macro_diff"]).notna().all()
    assert (out / cross_section.FIGURE).is_file()
    # the main sections keep the study's inputs: the main table's rows are raw cells only
    main = pd.read_csv(out / "report_main_table.csv")
    assert "m4-clutter" not in main.to_string()
    # the baselines were fitted again on the harmonised inputs, in their own folder
    assert Path(out, "baselines/fusar/m4-clutter/shortcut", runs.RECORD).is_file()


def test_input_flags_name_one_variant_or_the_axis(tmp_path):
    def resolve(*flags):
        return tm.resolve_inputs(tm.get_args_parser().parse_args(list(flags)))

    assert resolve() == ["raw"]
    assert resolve("--m-per-px", "10", "--match-resolution", "--radiometry", "clutter") == ["m10-match-clutter"]
    assert resolve("--inputs", "raw,m2.5,clutter") == ["raw", "m2.5", "clutter"]
    with pytest.raises(SystemExit, match="--inputs and --m-per-px/--match-resolution/--radiometry both name"):
        resolve("--inputs", "raw", "--m-per-px", "10")
    with pytest.raises(SystemExit, match="--match-resolution needs --m-per-px"):
        resolve("--match-resolution")
    with pytest.raises(SystemExit):  # argparse: a bad name is a usage error, exit status 2
        tm.get_args_parser().parse_args(["--inputs", "raw,m10-blur"])


def test_a_grid_of_harmonised_cells_alone_asks_for_the_raw_ones(grid, tmp_path):
    prepared, out = grid
    for folder in (out / "runs").glob("*/*/*/m4-clutter"):
        shutil.copytree(folder, tmp_path / folder.relative_to(out))
    with pytest.raises(SystemExit, match="all of other input variants than raw.*--inputs raw"):
        report.main(report.get_args_parser().parse_args(["--output-dir", str(tmp_path), "--data-dir",
                                                         str(prepared), "--bootstrap", "20"]))
