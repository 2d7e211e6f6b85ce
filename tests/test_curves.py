"""Tests of curves.py: every cell's curves.png, the report's grid of them, curves drawn for cells finished before
they existed, and the --tensorboard logging (its scalars, and the message when the package is missing).

    python -m pytest tests/test_curves.py -q

One tiny grid is trained once for the module (tests/fixtures.py's fusar set with a validation split, cnn at 32 px,
2 epochs, seeds 0 and 1) with --tensorboard, torch's SummaryWriter replaced by a recorder (a third-party writer:
what is checked is what grid_cell.py hands it), then reported on.
"""
import json
import math
import shutil
import sys
import types

import pandas as pd
import pytest
import torch
from PIL import Image
from fixtures import write_tiny_prepared

import curves
import report
import runs
import tables
import test_models

COUNTS = {"train": {"Cargo": 8, "Fishing": 4, "Tanker": 4}, "val": {"Cargo": 3, "Fishing": 2, "Tanker": 2},
          "test": {"Cargo": 6, "Fishing": 3, "Tanker": 3}}
SEEDS = (0, 1)


class RecordingWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter: keeps what it is given."""
    made = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        RecordingWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def _grid_args(data, out, *extra):
    return test_models.get_args_parser().parse_args(
        ["--data-dir", str(data), "--output-dir", str(out), "--datasets", "fusar", "--models", "cnn",
         "--img-size", "32", "--epochs", "2", "--batch-size", "8", "--seeds", ",".join(map(str, SEEDS)),
         "--device", "cpu", "--num-workers", "0", "--weights", "none", "--bootstrap", "20", *extra])


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves_grid")
    data = write_tiny_prepared(root / "prepared", sets=("fusar",), counts=COUNTS)
    out, tb = root / "out", root / "tb"
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = RecordingWriter
    RecordingWriter.made.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread beats several fighting over a few shared cores
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "torch.utils.tensorboard", fake)
            test_models.main(_grid_args(data, out, "--tensorboard", str(tb)))
    finally:
        torch.set_num_threads(threads)
    path = report.main(report.get_args_parser().parse_args(
        ["--output-dir", str(out), "--data-dir", str(data), "--bootstrap", "20"]))
    return {"data": data, "out": out, "tb": tb, "writers": list(RecordingWriter.made), "text": path.read_text()}


def _png_size(path):
    assert path.read_bytes()[:4] == b"\x89PNG"
    with Image.open(path) as image:
        return image.size


def test_every_cell_has_its_curves_and_the_report_links_the_grid(grid):
    found = runs.find_records(grid["out"])
    assert [r["seed"] for _, r in found] == list(SEEDS)
    for folder, _ in found:
        assert _png_size(folder / curves.CURVES) == (500, 300)  # 5 x 3 inches at 100 dpi
    text = grid["text"]
    link = "![curves_fusar](report_figures/curves_fusar.png)"
    assert "## Training curves" in text and link in text
    assert text.index("## Training curves") < text.index("## Where do the models look?")
    # one row (cnn, none, the one rate and protocol) of three quantities, both seeds overlaid
    assert _png_size(grid["out"] / "report_figures" / "curves_fusar.png") == (850, 260)
    assert "not finite" not in text


def test_tensorboard_gets_every_epochs_scalars_and_the_kept_epoch(grid):
    writers = {w.log_dir: w for w in grid["writers"]}
    assert len(writers) == len(SEEDS)
    for _, record in runs.find_records(grid["out"]):
        writer = writers[str(grid["tb"] / runs.cell_name(runs.record_cell(record)))]
        assert writer.purge_step == 1 and writer.closed
        expected = [(tag, value, h["epoch"]) for h in record["history"] for tag, value in (
            ("train/loss", h["loss"]), ("train/accuracy", h["accuracy"]),
            ("train/eval_accuracy", h["train_eval_accuracy"]), ("val/f1_macro", h["val"]["f1_macro"]),
            ("val/balanced_accuracy", h["val"]["balanced_accuracy"]), ("val/loss", h["val"]["loss"]))]
        assert len(record["history"]) == 2 and writer.scalars[:-1] == expected
        assert writer.scalars[-1] == ("kept_epoch", record["protocol"]["epoch"], 2)
        # where the log went is no part of the cell: not in its args, nor in the command that reruns it
        assert "tensorboard" not in record["args"] and "--tensorboard" not in record["command"]


def test_cells_finished_without_curves_get_them_from_their_history(grid, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grid["out"], out)
    (old, old_record), (kept, _) = runs.find_records(out)
    drawn_at_training = (old / curves.CURVES).read_bytes()
    (old / curves.CURVES).unlink()
    before = (kept / curves.CURVES).stat().st_mtime_ns
    record = json.loads((old / runs.RECORD).read_text())
    assert record["history"] == old_record["history"]  # what the figure is drawn from
    tables.aggregate(out, n_boot=0)
    assert (old / curves.CURVES).read_bytes() == drawn_at_training  # the same figure, from the record alone
    assert (kept / curves.CURVES).stat().st_mtime_ns == before  # a cell that has its figure keeps it
    record["history"] = []  # a hand-written record without history: nothing to draw, no error
    (old / curves.CURVES).unlink()
    (old / runs.RECORD).write_text(json.dumps(record))
    assert curves.draw_missing(runs.find_records(out)) == [] and not (old / curves.CURVES).exists()


def test_tensorboard_without_the_package_is_a_message_before_any_work(grid, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an environment without it gives
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        test_models.main(_grid_args(grid["data"], out, "--tensorboard", str(tmp_path / "tb")))
    message = str(stop.value.code)
    assert message.startswith("--tensorboard needs the tensorboard package, which this Python cannot import (")
    assert "`pip install tensorboard`" in message and "or leave out --tensorboard" in message
    assert not out.exists() and not (tmp_path / "tb").exists()


def _record(seed, losses, val=True):
    history = [{"epoch": e, "loss": loss, "accuracy": 50.0, "train_eval_accuracy": 40.0 + e,
                **({"val": {"f1_macro": 30.0 + e, "balanced_accuracy": 35.0, "loss": 1.0}} if val else {})}
               for e, loss in enumerate(losses, 1)]
    return {"train_set": "fusar", "model": "cnn", "imbalance": "none", "inputs": runs.RAW, "lr": 0.001,
            "seed": seed, "classes": ["Cargo", "Fishing", "Tanker"], "history": history,
            "protocol": {"name": "bn on, best", "epoch": len(losses) if losses else None}}


def test_report_section_names_diverged_runs_and_those_without_history(tmp_path):
    found = [(tmp_path / f"seed{s}", r) for s, r in enumerate(
        [_record(0, [1.1, 0.9]), _record(1, [1.1, math.nan], val=False), _record(2, [])])]
    shown = pd.DataFrame([{"train_set": "fusar", "model": "cnn", "imbalance": "none", "protocol": "bn on, best",
                           "lr": 0.001, "seed": s, "test_set": t} for s in range(3) for t in ("fusar", "mixed")])
    lines = curves.section_curves(tmp_path / "figures", tmp_path, found, shown)
    assert "![curves_fusar](figures/curves_fusar.png)" in lines
    assert "Training loss not finite (diverged): fusar/cnn/none/lr0.001/seed1." in lines
    assert "1 run(s) have no per-epoch history in their record.json: not drawn." in lines
    assert _png_size(tmp_path / "figures" / "curves_fusar.png") == (850, 260)
    # runs the tables do not show (another rate won on validation) are not drawn
    assert curves.section_curves(tmp_path / "none", tmp_path, found, shown.iloc[:0])[2].startswith("No run")
