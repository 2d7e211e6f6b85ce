"""test_models.py and data.py on tiny prepared sets: data path, the grid's outputs, isolation of cells, resume
after a kill, imbalance strategies as a grid axis, and the errors a user can meet. CPU only, 32 px, 1 epoch (the losses:
test_losses.py)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from fixtures import expected_scores, model_rows
from fixtures import write_tiny_prepared

import baselines
import bootstrap
import data
import engine
import runs
import sets
import test_models as tm
from models import MODEL_NAMES, build_model, load_trained, state_sha1

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
REPO = Path(__file__).resolve().parent.parent
CLASSES = ["Cargo", "Fishing", "Tanker"]
SETS = ["fusar", "opensarship", "mixed"]
# a frozen backbone, the cheapest to build and save: a VGG whose 512 pooled features feed a 2M-parameter head
# (fine_vgg's 25088 feed 103M: seconds to initialise, hash, save and load again in every cell)
FROZEN = "fine_vgg_gap"
MODELS = ["cnn", FROZEN]  # the custom CNN and the frozen backbone
QUICK = ["--img-size", "32", "--epochs", "1", "--weights", "none", "--device", "cpu", "--num-workers", "0",
         "--seeds", "42"]


def run(*flags):
    return tm.main(tm.get_args_parser().parse_args([*QUICK, *flags]))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def grid(prepared, tmp_path_factory):
    """2 training sets x cnn, fine_vgg_gap, tested on all three sets: the output folder."""
    out = tmp_path_factory.mktemp("grid")
    run("--data-dir", str(prepared), "--output-dir", str(out), "--datasets", "fusar,opensarship",
        "--models", ",".join(MODELS))
    return out


def read_str(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# ------------------------------------------------------------------------------------------------------------
# arguments

def test_parser_defaults_are_the_study():
    args = tm.get_args_parser().parse_args([])
    assert (args.lr, args.epochs, args.batch_size, args.img_size, args.augment) == (
        [0.001], 10, 64, 224, "flip")  # the learning rate is a grid axis: a list
    # the protocol's defaults are not the study's (--bn-recalibrate off --select last reproduce it)
    assert (args.bn_recalibrate, args.select, args.patience) == ("on", None, None)
    assert args.models == list(MODEL_NAMES)
    assert args.imbalance == ["none"] and args.seeds == [0, 1, 2]  # three seeds; --seeds 42 is the study's one
    # the default grid: the study's three sets (a stacked set is gridded when named)
    assert args.datasets is None
    assert [s for s in sets.SETS if s not in sets.STACKED] == ["fusar", "opensarship", "mixed"]
    assert (args.data_dir, args.output_dir, args.weights, args.device, args.amp) == (
        "data/prepared", ".", "imagenet", "auto", "auto")
    parsed = tm.get_args_parser().parse_args(["--seeds", "0,1,2", "--imbalance", "none,focal"])
    assert parsed.seeds == [0, 1, 2] and parsed.imbalance == ["none", "focal"]


@pytest.mark.parametrize("flag, value, valid", [
    ("--models", "cnn,alexnet", "fine_vgg"), ("--imbalance", "smote", "focal"),
    ("--augment", "rot", "flip+rot90"),
    ("--device", "tpu", "cuda"), ("--amp", "maybe", "auto"), ("--weights", "coco", "imagenet"),
    ("--seeds", "one", "integers"),
])
def test_bad_option_values_name_the_valid_ones(flag, value, valid, capsys):
    with pytest.raises(SystemExit):
        tm.get_args_parser().parse_args([flag, value])
    assert valid in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# data path

def test_load_split_decodes_each_chip_whole_and_deterministically(prepared):
    split = data.load_split(prepared / "fusar", "train", 32)
    rows = pd.read_csv(prepared / "fusar" / "manifest.csv", dtype=str)
    rows = rows[rows.split == "train"]
    assert split.images.shape == (16, 32, 32) and split.images.dtype == np.uint8
    assert split.paths == list(rows.path) and split.classes == CLASSES
    assert split.labels.tolist() == [CLASSES.index(c) for c in rows["class"]]
    # the whole chip, resized with bilinear + antialias (Pillow), no crop: the same geometry for train and
    # test
    with Image.open(prepared / "fusar" / split.paths[0]) as im:
        expected = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(split.images[0], expected)
    threaded = data.load_split(prepared / "fusar", "train", 32, num_workers=3)
    assert np.array_equal(threaded.images, split.images) and threaded.paths == split.paths
    test = data.load_split(prepared / "mixed", "test", 40)
    assert test.images.shape == (24, 40, 40) and test.paths[0].startswith("test/")


def test_classes_come_from_both_splits(tmp_path):
    # a test split without Fishing must still number Tanker 2 (an ImageFolder over it would say 1)
    counts = {"train": {"Cargo": 3, "Fishing": 2, "Tanker": 2},
              "test": {"Cargo": 2, "Fishing": 0, "Tanker": 2}}
    root = write_tiny_prepared(tmp_path, sets=("fusar",), counts=counts)
    test = data.load_split(root / "fusar", "test", 32)
    assert test.classes == CLASSES
    assert sorted(set(test.labels.tolist())) == [0, 2]


def test_to_model_input_range_and_shape():
    x = torch.tensor([[[0, 255], [128, 1]]], dtype=torch.uint8)
    y = engine.model_input(x, torch.device("cpu"))
    assert y.shape == (1, 1, 2, 2) and y.dtype == torch.float32
    assert y[0, 0, 0, 1].item() == 1.0 and y[0, 0, 1, 0].item() == pytest.approx(128 / 255)


def augment(x, mode, generator):
    """A batch augmented as data.Batches does it: a view drawn per sample, then applied."""
    return data.apply_views(x, data.draw_views(x.shape[0], mode, generator))


def test_flip_is_per_sample_and_seeded():
    x = torch.arange(64 * 4 * 4, dtype=torch.int64).reshape(64, 4, 4)
    out = augment(x, "flip", torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x)]
    kept = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48  # about half, drawn per sample
    assert torch.equal(out, augment(x, "flip", torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(x, "flip", torch.Generator().manual_seed(1)))
    assert augment(x, "none", None) is x


def test_flip_rot90_gives_the_symmetries_of_the_square():
    x = torch.arange(64 * 4 * 4, dtype=torch.int64).reshape(64, 1, 4, 4)
    out = augment(x, "flip+rot90", torch.Generator().manual_seed(0))
    seen = set()
    for o, s in zip(out, x):
        variants = [torch.rot90(v, k, dims=(-2, -1)) for v in (s, s.flip(-1)) for k in range(4)]
        match = [i for i, v in enumerate(variants) if torch.equal(o, v)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) >= 6  # 64 draws over 8 symmetries


def test_sampler_batches_are_balanced_on_average():
    labels = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    weights = data.balanced_sample_weights(labels, 3)
    batches = data.Batches(torch.zeros(100, 2, 2, dtype=torch.uint8), labels, 25, shuffle=True,
                           generator=torch.Generator().manual_seed(0), sample_weights=weights)
    drawn = torch.cat([y for _ in range(100) for _, y in batches])
    share = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    # without the sampler an epoch is a permutation: every chip once, the data's own imbalance
    plain = data.Batches(torch.zeros(100, 2, 2, dtype=torch.uint8), labels, 25, shuffle=True,
                         generator=torch.Generator().manual_seed(0))
    assert sorted(torch.cat([y for _, y in plain]).tolist()) == sorted(labels.tolist())


def test_training_batches_drop_a_last_single_sample():
    labels = torch.zeros(65, dtype=torch.long)
    images = torch.zeros(65, 2, 2, dtype=torch.uint8)
    train = data.Batches(images, labels, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(train) == 1 and [len(y) for _, y in train] == [64]
    assert [len(y) for _, y in data.Batches(images, labels, 64)] == [64, 1]


# ------------------------------------------------------------------------------------------------------------
# the grid

def cells():
    return [(s, m) for s in ("fusar", "opensarship") for m in MODELS]


def test_grid_writes_every_output(grid, prepared):
    for train_set, model in cells():
        folder = grid / "runs" / train_set / model / "none" / "lr0.001" / "seed42"
        record = json.loads((folder / "record.json").read_text())
        assert (record["train_set"], record["model"], record["imbalance"], record["seed"]) == (
            train_set, model, "none", 42)
        assert record["classes"] == CLASSES and set(record["test_sets"]) == set(SETS)
        assert [h["epoch"] for h in record["history"]] == [1]
        assert record["args"]["lr"] == 0.001 and record["args"]["img_size"] == 32
        assert record["train_seconds"] > 0 and record["finished"]
        assert record["n_train"] == 16 and record["train_counts"] == {"Cargo": 8, "Fishing": 4, "Tanker": 4}
        for test_set in SETS:
            assert record["test_sets"][test_set]["n"] == (24 if test_set == "mixed" else 12)
            assert (folder / f"confusion_{test_set}.png").read_bytes()[:4] == b"\x89PNG"
            matrix = pd.read_csv(folder / f"confusion_{test_set}.csv", index_col=0)
            assert list(matrix.index) == CLASSES and list(matrix.columns) == CLASSES
            pred = read_str(folder / f"predictions_{test_set}.csv")
            assert list(pred.columns) == ["path", "true", "pred"] + [f"prob_{c}" for c in CLASSES]
            manifest = read_str(prepared / test_set / "manifest.csv")
            assert list(pred.path) == list(manifest[manifest.split == "test"].path)
            assert matrix.to_numpy().sum() == len(pred)
        ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
        # slim: the trained weights (the head alone for a frozen model), no optimiser state
        assert set(ckpt) >= {"epoch", "args", "classes", "model_name", "img_size"} and "optimizer" not in ckpt
        assert ("head" in ckpt) == model.startswith("fine_") and ("model" in ckpt) != ("head" in ckpt)
        assert (ckpt["epoch"], ckpt["classes"], ckpt["model_name"], ckpt["img_size"]) == (
            1, CLASSES, model, 32)
        assert ckpt["args"]["lr"] == 0.001
    for name in ("scores.csv", "predictions.csv", "results.txt", "figures/cross_dataset_f1_macro_none.png",
                 "figures/per_class_f1_none.png"):
        assert (grid / name).stat().st_size > 0
    text = (grid / "results.txt").read_text()
    assert text.count("== train ") == 4 and "epoch   1/1" in text and "confusion (rows true" in text
    assert not list((grid / "runs").rglob(".seed*"))  # no temporary folder left


def test_checkpoint_reproduces_the_saved_predictions(grid, prepared):
    folder = grid / "runs" / "opensarship" / FROZEN / "none" / "lr0.001" / "seed42"
    model, ckpt = load_trained(folder / "checkpoint.pt")
    split = data.load_split(prepared / "fusar", "test", ckpt["img_size"])
    with torch.inference_mode():
        probs = torch.softmax(model(engine.model_input(torch.from_numpy(split.images), torch.device("cpu"))), 1).numpy()
    saved = pd.read_csv(folder / "predictions_fusar.csv")
    assert np.allclose(probs, saved[[f"prob_{c}" for c in CLASSES]].to_numpy(), atol=2e-6)


def test_scores_recomputed_from_predictions_csv_with_sklearn(grid):
    scores = pd.read_csv(grid / "scores.csv")
    per_class = [f"{c}_{m}" for c in CLASSES for m in ("precision", "recall", "f1", "support")]
    assert list(scores.columns) == [
        "train_set", "test_set", "model", "imbalance", "inputs", "adaptation", "lr", "seed", "n", "accuracy",
        "balanced_accuracy",
        "precision_weighted", "recall_weighted", "f1_weighted", "precision_macro", "recall_macro", "f1_macro",
        *per_class, *bootstrap.interval_columns(CLASSES), "protocol", "bn_recalibrate", "select", "epoch",
        "val_f1_macro", "degenerate", "top_share", "selected"]
    assert set(scores[scores.protocol == "baseline"].model) == set(baselines.BASELINES)
    scores = model_rows(scores)
    # 4 cells x 3 test sets, and the adaptations between the two sensors: prior for both models, adabn for the
    # cnn only (a frozen VGG has no batch norm)
    assert len(scores[scores.adaptation == "none"]) == 4 * 3 and len(scores) == 4 * 3 + 2 * 3
    assert set(scores[scores.model == FROZEN].adaptation) == {"none", "prior"}
    predictions = model_rows(pd.read_csv(grid / "predictions.csv", keep_default_na=False))
    keys = ["train_set", "test_set", "model", "imbalance", "adaptation", "lr", "seed"]
    assert len(predictions[predictions.adaptation == "none"]) == 4 * (12 + 12 + 24)
    for key, chips in predictions.groupby(keys):
        row = scores.set_index(keys).loc[key]
        t, p = chips["true"], chips["pred"]
        expected = expected_scores(t, p, CLASSES)
        for column, value in expected.items():
            assert row[column] == pytest.approx(value, abs=0.005), (key, column)


def test_cells_start_from_fresh_identical_weights(grid):
    def record(train_set, model):
        return json.loads((grid / "runs" / train_set / model / "none/lr0.001/seed42" / "record.json").read_text())

    for model in MODELS:
        a, b = record("fusar", model), record("opensarship", model)
        # the second training set starts from scratch, not from the model trained on the first
        assert a["init_sha1"] == b["init_sha1"]
        engine.seed_everything(42)
        assert state_sha1(build_model(model, 3, "none")) == a["init_sha1"]
    assert record("fusar", "cnn")["init_sha1"] != record("fusar", FROZEN)["init_sha1"]
    trained = load_trained(grid / "runs/opensarship/cnn/none/lr0.001/seed42/checkpoint.pt")[0].state_dict()
    engine.seed_everything(42)
    fresh = build_model("cnn", 3, "none").state_dict()
    assert not torch.equal(trained["head.0.weight"], fresh["head.0.weight"])  # and it did train


def test_cell_alone_equals_cell_in_grid_and_resume_skips_it(grid, prepared, tmp_path, capsys):
    out = tmp_path / "alone"
    flags = ["--data-dir", str(prepared), "--output-dir", str(out), "--datasets", "opensarship",
             "--models", FROZEN]
    run(*flags)
    alone = out / f"runs/opensarship/{FROZEN}/none/lr0.001/seed42"
    in_grid = grid / f"runs/opensarship/{FROZEN}/none/lr0.001/seed42"
    for test_set in SETS:
        assert (alone / f"predictions_{test_set}.csv").read_bytes() == \
            (in_grid / f"predictions_{test_set}.csv").read_bytes()
    a = load_trained(alone / "checkpoint.pt")[0].state_dict()
    b = load_trained(in_grid / "checkpoint.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    inode = (alone / "record.json").stat().st_ino
    capsys.readouterr()
    run(*flags)  # finished: skipped
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert (alone / "record.json").stat().st_ino == inode
    with pytest.raises(SystemExit, match="epochs=1 .*now 2.*--force"):
        run(*flags, "--epochs", "2")  # a finished cell trained otherwise is never silently reused
    run(*flags, "--force")  # retrained from scratch into a new folder: same predictions
    assert (alone / "record.json").stat().st_ino != inode
    assert (alone / "predictions_mixed.csv").read_bytes() == (in_grid / "predictions_mixed.csv").read_bytes()


def test_aggregate_only_rebuilds_the_same_tables(grid):
    before = {name: (grid / name).read_bytes() for name in ("scores.csv", "predictions.csv")}
    for name in ("scores.csv", "predictions.csv", "results.txt"):
        (grid / name).unlink()
    shutil.rmtree(grid / "figures")
    tm.main(tm.get_args_parser().parse_args(["--output-dir", str(grid), "--aggregate-only"]))
    assert {name: (grid / name).read_bytes() for name in before} == before
    assert (grid / "results.txt").is_file() and (grid / "figures/cross_dataset_f1_macro_none.png").is_file()


def test_killed_run_resumes_to_the_same_tables(grid, prepared, tmp_path):
    out = tmp_path / "killed"
    flags = [*QUICK, "--data-dir", str(prepared), "--output-dir", str(out), "--datasets", "opensarship",
             "--models", "cnn"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "test_models.py"), *flags], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temp = []
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            temp = list(out.glob("runs/opensarship/cnn/none/lr0.001/.seed42.tmp-*"))
            if temp:  # the cell has started: kill it mid-way
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert temp, "the run ended before it could be killed mid-cell"
    assert temp[0].is_dir() and not (out / "runs/opensarship/cnn/none/lr0.001/seed42").exists()
    assert not (out / "scores.csv").exists()

    tm.main(tm.get_args_parser().parse_args(flags))  # resume
    assert not temp[0].exists()  # the stale temporary folder is removed
    for name in ("scores.csv", "predictions.csv"):
        expected = read_str(grid / name)
        expected = expected[expected.model.isin(["cnn", *baselines.BASELINES]) & (expected.train_set == "opensarship")]
        pd.testing.assert_frame_equal(read_str(out / name), expected.reset_index(drop=True))


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid no longer exists
    host = socket.gethostname()
    cell = tmp_path / "runs/fusar/cnn/none"
    (cell / "seed42").mkdir(parents=True)
    stale = [cell / f".seed42.tmp-{host}-{dead.pid}-0123abcd", cell / f".seed7.old-{host}-{dead.pid}-0123abcd",
             cell / f"seed42/.complete-{host}-{dead.pid}-0123abcd"]
    kept = [cell / f".seed43.tmp-{host}-{os.getpid()}-0123abcd",  # a live process is still working on it
            cell / f".seed44.tmp-otherhost-{dead.pid}-0123abcd"]  # another machine's: cannot tell
    for folder in stale + kept:
        folder.mkdir()
    table = tmp_path / f".scores.csv.tmp-{host}-{dead.pid}-0123abcd"
    table.write_text("partial")
    assert sorted(runs.clean_stale(tmp_path)) == sorted([*stale, table])
    assert all(k.is_dir() for k in kept) and (cell / "seed42").is_dir()


def test_imbalance_strategies_as_a_grid_axis(tmp_path, capsys):
    root = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",))
    out = tmp_path / "out"
    run("--data-dir", str(root), "--output-dir", str(out), "--models", FROZEN,
        "--imbalance", "weighted,sampler,focal")
    # the default training sets that are not prepared are skipped in one line
    assert "skipping training sets not prepared" in capsys.readouterr().out
    records = {s: json.loads((out / f"runs/fusar/{FROZEN}/{s}/lr0.001/seed42/record.json").read_text())
               for s in ("weighted", "sampler", "focal")}
    assert records["weighted"]["class_weights"] == pytest.approx([16 / 24, 16 / 12, 16 / 12])  # 8, 4, 4 chips
    assert records["focal"]["class_weights"] == records["weighted"]["class_weights"]
    assert records["focal"]["focal_gamma"] == 2.0
    assert records["sampler"]["class_weights"] is None
    assert len({r["init_sha1"] for r in records.values()}) == 1  # same start, the strategy alone differs
    heads = [load_trained(out / f"runs/fusar/{FROZEN}/{s}/lr0.001/seed42/checkpoint.pt")[0].state_dict()
             ["head.3.weight"] for s in records]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    assert not torch.equal(heads[1], heads[2])
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    assert list(scores.imbalance) == ["weighted", "sampler", "focal"] and set(scores.test_set) == {"fusar"}

    # a set prepared later is evaluated from the finished checkpoints, nothing is retrained
    finished = {s: r["finished"] for s, r in records.items()}
    write_tiny_prepared(root, sets=("opensarship",))
    run("--data-dir", str(root), "--output-dir", str(out), "--datasets", "fusar", "--models", FROZEN,
        "--imbalance", "weighted,sampler,focal")
    for s in records:
        record = json.loads((out / f"runs/fusar/{FROZEN}/{s}/lr0.001/seed42/record.json").read_text())
        assert record["finished"] == finished[s] and set(record["test_sets"]) == {"fusar", "opensarship"}
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    # ... with the prior adaptation on the other sensor's set (a frozen VGG has no batch norm: no adabn), starting
    # from the uniform prior these strategies train under
    assert len(scores[scores.adaptation == "none"]) == 6 and list(scores.adaptation).count("prior") == 3
    assert record["test_sets"]["opensarship"]["adaptation"]["prior"]["train_prior"] == pytest.approx([1 / 3] * 3)
    assert "no batch-norm" in record["test_sets"]["opensarship"]["adaptation"]["adabn"]["note"]


# ------------------------------------------------------------------------------------------------------------
# errors a user can meet

def test_nothing_prepared_says_to_run_dataset_prep(tmp_path):
    with pytest.raises(SystemExit, match=r"python dataset_prep.py.*--synthetic"):
        run("--data-dir", str(tmp_path), "--output-dir", str(tmp_path))


def test_missing_set_named_explicitly_is_an_error(tmp_path):
    root = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",))
    with pytest.raises(SystemExit, match=r"training sets mixed not prepared.*dataset_prep.py"):
        run("--data-dir", str(root), "--output-dir", str(tmp_path), "--datasets", "fusar,mixed")
    with pytest.raises(SystemExit, match=r"test sets opensarship not prepared.*dataset_prep.py"):
        run("--data-dir", str(root), "--output-dir", str(tmp_path), "--test-sets", "opensarship")


def test_test_set_with_other_classes_is_an_error(tmp_path):
    root = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",))
    write_tiny_prepared(root, sets=("other",), classes=("Cargo", "Tanker"))
    expected = r"test set other has classes \['Cargo', 'Tanker'\] but training set fusar has " \
               r"\['Cargo', 'Fishing', 'Tanker'\]"
    with pytest.raises(SystemExit, match=expected):
        run("--data-dir", str(root), "--output-dir", str(tmp_path), "--datasets", "fusar")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is absent")
def test_cuda_without_cuda_is_an_error(prepared, tmp_path):
    with pytest.raises(SystemExit, match="CUDA is not available"):
        tm.main(tm.get_args_parser().parse_args(["--data-dir", str(prepared), "--output-dir", str(tmp_path),
                                                 "--device", "cuda"]))


def test_aggregate_only_without_records_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished cells.*run python test_models.py"):
        tm.main(tm.get_args_parser().parse_args(["--output-dir", str(tmp_path), "--aggregate-only"]))


def test_intervals_resample_ships_and_are_recomputable_from_predictions_csv(grid):
    scores = pd.read_csv(grid / "scores.csv").fillna({"lr": -1.0})  # the baselines too (no learning rate)
    predictions = pd.read_csv(grid / "predictions.csv", keep_default_na=False)
    predictions["lr"] = predictions["lr"].replace("", "-1").astype(float)
    keys = ["train_set", "test_set", "model", "imbalance", "adaptation", "lr", "seed"]
    for key, chips in predictions.groupby(keys):
        row = scores.set_index(keys).loc[key]
        assert (chips["group"] != "").all()  # every chip carries its ship, from the test set's manifest
        again = bootstrap.ship_intervals(chips["true"], chips["pred"], chips["group"], CLASSES, n=1000, seed=0)
        for column, value in again.items():
            assert row[column] == pytest.approx(value, abs=0.005, nan_ok=True), (key, column)
        for metric in ("accuracy", "balanced_accuracy", "f1_macro"):
            assert row[f"{metric}_ci_low"] <= row[metric] + 0.005 <= row[f"{metric}_ci_high"] + 0.01
