"""report.py --pool: grids of copies prepared with different split seeds pooled into one report (pooling.py).

Two copies of a tiny data set with split seeds 0 and 1, one grid each (cnn, two training seeds on the first copy,
one on the second); the pooled report must average over every (split, seed) run, keep the runs apart in its
tables, pair only runs of one split and seed, and refuse grids that are not distinct splits.
"""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import pooling
import report
import test_models
from fixtures import md_row, write_tiny_prepared

COUNTS = {"train": {"Cargo": 8, "Fishing": 5, "Tanker": 4}, "test": {"Cargo": 4, "Fishing": 3, "Tanker": 3}}


def _train(data, out, seeds):
    test_models.main(test_models.get_args_parser().parse_args(
        ["--data-dir", str(data), "--output-dir", str(out), "--datasets", "fusar", "--models", "cnn", "--img-size",
         "16", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--num-workers", "0", "--weights", "none",
         "--seeds", seeds, "--imbalance", "none,weighted", "--bootstrap", "50"]))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for split, seeds in ((0, "0,1"), (1, "0")):
            data = write_tiny_prepared(root / f"data{split}", sets=("fusar", "opensarship"), counts=COUNTS,
                                       seed=split)
            _train(data, root / f"grid{split}", seeds)
    finally:
        torch.set_num_threads(threads)
    path = report.main(report.get_args_parser().parse_args(
        ["--pool", str(root / "grid0"), str(root / "grid1"), "--output-dir", str(root / "pooled"),
         "--data-dir", str(root / "data0"), "--bootstrap", "100"]))
    return {"root": root, "text": path.read_text(), "pooled": root / "pooled"}


def test_split_seed_is_in_every_record(pool):
    for split in (0, 1):
        records = list((pool["root"] / f"grid{split}").rglob("record.json"))
        assert len(records) == {0: 4, 1: 2}[split] + 3  # the cells and the three baselines
        for rec in records:
            assert json.loads(rec.read_text())["split_seed"] == split, rec


def test_pooled_tables_keep_every_run_with_its_split_and_seed(pool):
    root = pool["root"]
    own = pd.concat([pd.read_csv(root / f"grid{s}" / "scores.csv").assign(split=s) for s in (0, 1)])
    pooled = pd.read_csv(pool["pooled"] / "scores.csv")
    assert len(pooled) == len(own)
    assert sorted(zip(pooled["split_seed"], pooled["train_seed"], pooled["model"])) == \
        sorted(zip(own["split"], own["seed"], own["model"]))
    assert (pooled["seed"] == pooled["split_seed"] * pooling.STRIDE + pooled["train_seed"]).all()
    predictions = pd.read_csv(pool["pooled"] / "predictions.csv")
    assert len(predictions) == sum(len(pd.read_csv(root / f"grid{s}" / "predictions.csv")) for s in (0, 1))


def test_main_table_means_every_split_and_seed(pool):
    root = pool["root"]
    runs = pd.concat([pd.read_csv(root / f"grid{s}" / "scores.csv") for s in (0, 1)])
    mine = runs[(runs["model"] == "cnn") & (runs["imbalance"] == "none") & (runs["test_set"] == "fusar")]
    assert len(mine) == 3  # split 0: seeds 0 and 1; split 1: seed 0
    main = pd.read_csv(pool["pooled"] / report.MAIN_CSV)
    row = main[(main["model"] == "cnn") & (main["imbalance"] == "none") & (main["test_set"] == "fusar")].iloc[0]
    assert row["n_seeds"] == 3
    assert row["f1_macro_mean"] == pytest.approx(mine["f1_macro"].mean(), abs=0.01)
    assert row["f1_macro_std"] == pytest.approx(mine["f1_macro"].std(ddof=1), abs=0.01)
    assert row["f1_macro_ci_low"] <= row["f1_macro_mean"] <= row["f1_macro_ci_high"]
    floor = main[(main["model"] == "floor") & (main["test_set"] == "fusar")].iloc[0]
    floors = runs[(runs["model"] == "floor") & (runs["test_set"] == "fusar")]["f1_macro"]
    assert floor["n_seeds"] == 2 and floor["f1_macro_mean"] == pytest.approx(floors.mean(), abs=0.01)


def test_imbalance_effects_pair_runs_of_one_split_and_seed(pool):
    root = pool["root"]
    runs = pd.concat([pd.read_csv(root / f"grid{s}" / "scores.csv").assign(split=s) for s in (0, 1)])
    cnn = runs[(runs["model"] == "cnn") & (runs["test_set"] == "fusar")].set_index(["split", "seed", "imbalance"])
    diffs = [cnn.loc[(s, k, "weighted"), "f1_macro"] - cnn.loc[(s, k, "none"), "f1_macro"]
             for s, k in ((0, 0), (0, 1), (1, 0))]
    effects = pd.read_csv(pool["pooled"] / "report_effects.csv")
    row = effects[(effects["kind"] == "imbalance_vs_none") & (effects["test_set"] == "fusar")].iloc[0]
    assert row["n_seeds"] == 3 and row["f1_macro_mean"] == pytest.approx(np.mean(diffs), abs=0.02)


def test_report_says_it_pools_splits(pool):
    text = pool["text"]
    assert "The scores pool 2 splits (split seeds 0, 1): the spread includes the split's." in text
    assert "split seeds 0, 1 x training seeds 0, 1" in text
    assert "pools 3 runs (a split and a seed each)" in text
    assert "one fit per split, n = 2" in md_row(text, ["fusar", "fusar", "floor"])


def _pool_error(*argv):
    with pytest.raises(SystemExit) as e:
        report.main(report.get_args_parser().parse_args(argv))
    return str(e.value)


def test_same_split_twice_or_into_a_grid_is_refused(pool, tmp_path):
    root = pool["root"]
    grid0 = root / "grid0"
    copy = tmp_path / "copy"
    shutil.copytree(grid0, copy)
    message = _pool_error("--pool", str(grid0), str(copy), "--output-dir", str(tmp_path / "p"))
    assert "same cell of the same split (split seed 0)" in message and "--split-seed" in message
    message = _pool_error("--pool", str(grid0), str(root / "grid1"), "--output-dir", str(grid0))
    assert "is one of the pooled grids" in message
    assert "no finished cells" in _pool_error("--pool", str(grid0), str(tmp_path / "empty"), "--output-dir",
                                              str(tmp_path / "p"))
    assert not (tmp_path / "p" / "scores.csv").exists()
