"""How a cell is trained, selected and evaluated: precise batch-norm statistics, validation, selection, lr axis.

    python -m pytest tests/test_protocol.py -q
"""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import model_rows, write_tiny_prepared

import data
import engine
import runs
import test_models as tm
from models import build_model

CPU = torch.device("cpu")
OFF = engine.Precision("off", CPU)
BIG = {"train": {"Cargo": 40, "Fishing": 20, "Tanker": 20}, "test": {"Cargo": 12, "Fishing": 6, "Tanker": 6}}
WITH_VAL = {"train": {"Cargo": 16, "Fishing": 8, "Tanker": 8}, "val": {"Cargo": 6, "Fishing": 4, "Tanker": 4},
            "test": {"Cargo": 6, "Fishing": 3, "Tanker": 3}}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = write_tiny_prepared(tmp_path_factory.mktemp("big"), sets=("fusar",), counts=BIG)
    train = data.load_split(root / "fusar", "train", 32, cache=False)
    test = data.load_split(root / "fusar", "test", 32, cache=False)
    return (torch.from_numpy(train.images), torch.from_numpy(train.labels),
            torch.from_numpy(test.images), torch.from_numpy(test.labels))


def trained_cnn(x, y, seed=0, epochs=3):
    """A cnn trained as a cell trains it (Adam 1e-3, flip), its running statistics as training left them."""
    engine.seed_everything(seed)
    model = build_model("cnn", 3, "none")
    optimizer = engine.make_optimizer(model, 1e-3)
    order, aug = engine.cell_generators(seed)
    batches = data.Batches(x, y, 16, shuffle=True, generator=order, augment="flip", aug_generator=aug)
    for _ in range(epochs):
        engine.train_one_epoch(model, torch.nn.CrossEntropyLoss(), optimizer, OFF.scaler(), batches, CPU, OFF, "")
    return model


def predicted(model, x, y):
    return engine.evaluate(model, data.Batches(x, y, 16), CPU, OFF).argmax(1)


def test_stale_statistics_give_one_class_and_precise_bn_cures_it(big):
    x, y, test_x, test_y = big
    model = trained_cnn(x, y, seed=0)
    stale = predicted(model, test_x, test_y)
    assert len(set(stale.tolist())) == 1  # the running averages do not belong to the final weights
    engine.recalibrate_bn(model, engine.bn_layers(model), data.Batches(x, y, 16), CPU, OFF)
    cured = predicted(model, test_x, test_y)
    assert len(set(cured.tolist())) > 1 and (cured == test_y.numpy()).mean() > 0.6


def test_recalibrated_statistics_are_the_cumulative_average_of_batch_statistics(big):
    x, y, _, _ = big
    model = trained_cnn(x, y, seed=1, epochs=1)
    layers = engine.bn_layers(model)
    assert len(layers) == 3  # the cnn's three blocks
    # independently: each batch through a copy in train mode, the input of every BN layer recorded
    twin, seen = copy.deepcopy(model).train(), {}
    hooks = [m.register_forward_hook(lambda m, inp, out, name=name: seen.setdefault(name, []).append(inp[0]))
             for name, m in twin.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for xb, _ in data.Batches(x, y, 16):
            twin(engine.model_input(xb, CPU))
    for h in hooks:
        h.remove()
    engine.recalibrate_bn(model, layers, data.Batches(x, y, 16), CPU, OFF)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            means = torch.stack([b.mean(dim=(0, 2, 3)) for b in seen[name]])
            variances = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in seen[name]])
            assert torch.allclose(m.running_mean, means.mean(0), atol=1e-5, rtol=1e-4), name
            assert torch.allclose(m.running_var, variances.mean(0), atol=1e-5, rtol=1e-4), name
            assert m.momentum == 0.1 and m.training == model.training  # restored


def test_frozen_backbone_keeps_its_statistics_and_random_weights_get_them_from_the_data(big):
    x, y, _, _ = big
    frozen = build_model("fine_resnet", 3, "none")
    assert engine.bn_layers(frozen) == []  # trained layers only: a frozen backbone's statistics are its weights
    layers = engine.bn_layers(frozen.backbone, trainable_only=False)
    assert len(layers) == 53
    before = frozen.backbone.bn1.running_var.clone()
    engine.recalibrate_bn(frozen.backbone, layers, data.Batches(x[:32], y[:32], 16), CPU, OFF)
    assert not torch.equal(before, frozen.backbone.bn1.running_var) and not frozen.backbone.training
    assert all(not p.requires_grad for p in frozen.backbone.parameters())


@pytest.fixture(scope="module")
def with_val(tmp_path_factory):
    return write_tiny_prepared(tmp_path_factory.mktemp("val"), sets=("fusar",), counts=WITH_VAL)


def grid(root, out, *flags):
    args = tm.get_args_parser().parse_args(
        ["--data-dir", str(root), "--output-dir", str(out), "--datasets", "fusar", "--models", "cnn",
         "--img-size", "32", "--batch-size", "8", "--weights", "none", "--device", "cpu", "--num-workers", "0",
         "--seeds", "42", *flags])
    tm.main(args)
    return sorted(runs.find_records(out), key=lambda item: item[1]["lr"])


def test_best_keeps_the_epoch_with_the_highest_val_macro_f1_and_tests_it(with_val, tmp_path):
    (folder, record), = grid(with_val, tmp_path / "best", "--epochs", "4")
    curve = [h["val"]["f1_macro"] for h in record["history"]]
    assert len(curve) == 4 and all("train_eval_accuracy" in h for h in record["history"])
    kept = record["protocol"]
    assert kept["select"] == "best" and kept["val"] and kept["bn_recalibrate"] == "on" and kept["bn_layers"] == 3
    assert kept["epoch"] == int(np.argmax(curve)) + 1 and kept["val_f1_macro"] == max(curve)  # ties: earlier
    # the test predictions come from that epoch's weights: the same cell trained that many epochs, kept last
    (again, record_last), = grid(with_val, tmp_path / "last", "--epochs", str(kept["epoch"]), "--select", "last")
    assert record_last["protocol"]["epoch"] == kept["epoch"]
    for test_set in record["test_sets"]:
        assert (folder / f"predictions_{test_set}.csv").read_bytes() == \
            (again / f"predictions_{test_set}.csv").read_bytes()


def test_patience_stops_after_epochs_without_improvement(with_val, tmp_path):
    (_, record), = grid(with_val, tmp_path / "patience", "--epochs", "6", "--patience", "1")
    kept, history = record["protocol"], record["history"]
    curve = [h["val"]["f1_macro"] for h in history]
    if kept["stopped_early"]:
        assert len(history) == kept["epoch"] + 1 and curve[-1] <= kept["val_f1_macro"]
    else:
        assert len(history) == 6
    assert kept["epoch"] == int(np.argmax(curve)) + 1


def test_lr_is_a_grid_axis_and_the_tables_choose_it_on_validation(with_val, tmp_path):
    out = tmp_path / "lrs"
    found = grid(with_val, out, "--epochs", "2", "--lr", "0.001,0.0001")
    assert [r["lr"] for _, r in found] == [0.0001, 0.001]
    assert [f.relative_to(out).as_posix() for f, _ in found] == [
        "runs/fusar/cnn/none/lr0.0001/seed42", "runs/fusar/cnn/none/lr0.001/seed42"]
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    val = {r["lr"]: r["protocol"]["val_f1_macro"] for _, r in found}
    best = min(val, key=lambda lr: (-val[lr], lr))  # highest validation macro-F1, ties the smaller rate
    assert set(scores[scores.selected].lr) == {best} and set(scores.lr) == {0.0001, 0.001}
    assert (scores.protocol == "bn on, best").all() and scores.val_f1_macro.notna().all()


def test_select_best_without_a_val_split_is_refused(tmp_path):
    root = write_tiny_prepared(tmp_path / "data", sets=("fusar",))
    with pytest.raises(SystemExit, match="--select best needs a validation split.*--val-size"):
        grid(root, tmp_path / "out", "--epochs", "1", "--select", "best")
    (_, record), = grid(root, tmp_path / "out", "--epochs", "1")  # no val split: the last epoch, said so
    assert record["protocol"]["select"] == "last" and not record["protocol"]["val"]


def test_degenerate_predictors_are_flagged(with_val, tmp_path):
    out = tmp_path / "stale"
    (folder, record), = grid(with_val, out, "--epochs", "1", "--bn-recalibrate", "off", "--select", "last",
                            "--lr", "0.05")
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    for test_set, result in record["test_sets"].items():
        pred = pd.read_csv(folder / f"predictions_{test_set}.csv")["pred"]
        share = pred.value_counts(normalize=True).max()
        assert result["degenerate"] == (share > 0.95) and result["top_share"] == pytest.approx(100 * share, abs=0.01)
        row = scores[scores.test_set == test_set].iloc[0]
        assert bool(row["degenerate"]) == result["degenerate"]
    text = (out / "results.txt").read_text()
    assert ("DEGENERATE" in text) == any(r["degenerate"] for r in record["test_sets"].values())


def test_records_of_the_earlier_layout_are_found_and_marked_legacy(with_val, tmp_path):
    out = tmp_path / "mixed_layouts"
    (folder, _), = grid(with_val, out, "--epochs", "1")
    legacy = out / "runs/fusar/cnn/none/seed42"  # where an earlier version put the same cell
    legacy.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads((folder / "record.json").read_text())
    for key in ("protocol", "lr"):
        old.pop(key)
    old["args"]["lr"] = 0.001
    legacy.mkdir()
    (legacy / "record.json").write_text(json.dumps(old))
    for f in folder.glob("predictions_*.csv"):
        (legacy / f.name).write_bytes(f.read_bytes())
    for f in folder.glob("confusion_*.csv"):
        (legacy / f.name).write_bytes(f.read_bytes())
    found = runs.find_records(out)
    assert [r["protocol"]["name"] for _, r in found] == ["bn on, best", runs.LEGACY]
    tm.main(tm.get_args_parser().parse_args(["--output-dir", str(out), "--aggregate-only"]))
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    assert sorted(scores.protocol.unique()) == sorted(["bn on, best", runs.LEGACY])
    assert (scores[scores.protocol == runs.LEGACY]["select"] == "last").all()
    assert "earlier record: stored batch-norm statistics" in (out / "results.txt").read_text()
