"""distributed.py with test_models.py: torchrun (2 gloo processes on the CPU), grid shards and their merge, a
rank killed mid-cell, a whole job killed and resumed. Tiny data, 32 px, 1 epoch (3 in the torchrun runs); the
torchrun runs are real subprocesses.

    python -m pytest tests/test_distributed.py -q
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import expected_scores, model_rows
from fixtures import write_tiny_prepared

import data
import distributed
import engine
import test_models as tm
from models import build_model, load_trained

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
REPO = Path(__file__).resolve().parent.parent
CLASSES = ["Cargo", "Fishing", "Tanker"]
# 11 test chips: two ranks evaluate 6 and 5 of them, so the gather must cope with unequal shares
COUNTS = {"train": {"Cargo": 8, "Fishing": 4, "Tanker": 4}, "test": {"Cargo": 5, "Fishing": 3, "Tanker": 3}}
# the custom CNN and a frozen backbone (DDP reduces its head only): fine_vgg_gap, whose 512 pooled features feed a
# 2M-parameter head (fine_vgg's 25088 feed 103M: 411 MB to initialise, all-reduce each step, save and load again)
MODELS = ["cnn", "fine_vgg_gap"]
TEST_SETS = ["fusar", "opensarship"]
FLAGS = ["--img-size", "32", "--epochs", "1", "--weights", "none", "--device", "cpu", "--num-workers", "0",
         "--seeds", "42", "--datasets", "fusar", "--models", ",".join(MODELS)]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
# the killed-rank runs train with these too, so that their cnn cell, finished before the kill, is the uninterrupted
# 2-process run the resumed one must equal bitwise (test_a_killed_torchrun_resumes_...): one torchrun fewer
RESUMABLE = ("--epochs", "3", "--checkpoint-every", "0")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"), sets=("fusar",), counts=COUNTS)


def torchrun(prepared, out, *flags):
    """A 2-process run on the CPU (gloo), started as a user would start it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(REPO / "test_models.py"), *FLAGS, "--data-dir", str(prepared), "--output-dir", str(out),
               *flags]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc, out, timeout):
    """Wait for a torchrun started by this test; on a timeout kill it and its workers (by pid), then raise."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in worker_pids(str(out)).values():  # orphaned workers of a killed torchrun
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def worker_pids(marker):
    """{rank: pid} of the torchrun workers whose command line holds `marker` (their output folder)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() not in (proc / "cmdline").read_bytes():
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        rank = [item[5:] for item in env if item.startswith(b"RANK=")]
        if rank:  # the torchrun agent itself has no RANK
            found[int(rank[0])] = int(proc.name)
    return found


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Two 2-process runs on one output folder (RESUMABLE: 3 epochs, an epoch checkpoint after each but the
    last): the first has its rank 1 killed (SIGKILL) as soon as rank 0 starts the second cell (fine_vgg_gap; cnn is
    finished by then); a second test set is prepared; the rerun evaluates the finished cnn on it (from its
    checkpoint) and trains fine_vgg_gap.

    Returns what the killed run left behind, the rerun's stdout and the folders.
    """
    if not Path("/proc/self/environ").is_file():
        pytest.skip("finds the torchrun workers through /proc (Linux)")
    prepared = write_tiny_prepared(tmp_path_factory.mktemp("prepared_ddp"), sets=("fusar",), counts=COUNTS)
    out = tmp_path_factory.mktemp("ddp")
    killed = torchrun(prepared, out, *RESUMABLE)
    temp, pids = [], {}
    deadline = time.monotonic() + 150
    try:
        while killed.poll() is None and time.monotonic() < deadline:
            temp = list(out.glob(f"runs/fusar/{MODELS[1]}/none/lr0.001/.seed42.tmp-*"))
            if temp:  # rank 0 has started the cell: its partner dies without warning
                pids = worker_pids(str(out))
                os.kill(pids[1], signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        killed_stdout, _ = finish(killed, out, timeout=120)
    left = {"returncode": killed.returncode, "temp": temp, "pids": pids, "stdout": killed_stdout,
            "frozen": sorted(p.name for p in out.glob(f"runs/fusar/{MODELS[1]}/none/lr0.001/*")),
            "cnn": sorted(p.name for p in out.glob("runs/fusar/cnn/none/lr0.001/seed42/*")),
            "tables": sorted(p.name for p in out.glob("*"))}

    write_tiny_prepared(prepared, sets=("opensarship",), counts=COUNTS)
    rerun = torchrun(prepared, out, *RESUMABLE)
    stdout, stderr = finish(rerun, out, timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    return {"out": out, "prepared": prepared, "killed": left, "stdout": stdout}


def read_str(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def run(*flags):
    return tm.main(tm.get_args_parser().parse_args([*FLAGS, *flags]))


# ------------------------------------------------------------------------------------------------------------
# torchrun

def test_killed_rank_leaves_no_partial_record(ddp):
    left = ddp["killed"]
    assert left["temp"], "the run ended before a rank could be killed mid-cell"
    assert set(left["pids"]) == {0, 1} and left["returncode"] != 0
    # the interrupted cell: at most its hidden temporary folder (rank 0 may have had no time to remove it),
    # no record folder, complete or not; the cell finished before it is complete; no table was written
    assert all(name.startswith(".seed42.tmp-") for name in left["frozen"]), left["frozen"]
    assert left["cnn"] == ["checkpoint.pt", "confusion_fusar.csv", "confusion_fusar.png", "curves.png",
                           "predictions_fusar.csv", "record.json"]
    assert left["tables"] == ["runs"]
    # the rerun removed the leftovers, kept the finished cell and trained the interrupted one
    assert not list((ddp["out"] / "runs").rglob(".seed*"))
    assert "fusar/cnn/none/lr0.001/seed42: finished earlier, skipped (--force retrains it); evaluated on " \
        "opensarship" in ddp["stdout"]


def test_two_processes_write_one_record_per_cell_and_print_once(ddp):
    out = ddp["out"]
    records = sorted(p.parent.relative_to(out / "runs").as_posix()
                     for p in out.glob("runs/*/*/*/*/*/record.json"))
    assert records == [f"fusar/{m}/none/lr0.001/seed42" for m in MODELS]
    assert ddp["stdout"].count("grid: 1 training set(s)") == 1  # rank 1's stdout is silenced
    assert "; 2 processes (DDP)" in ddp["stdout"]
    scores = model_rows(pd.read_csv(out / "scores.csv"))
    scores = scores[scores.adaptation == "none"]  # fusar -> opensarship also has the adaptations' rows
    assert len(scores) == 4 and list(scores.n) == [11] * 4
    assert set(zip(scores.model, scores.test_set)) == {(m, t) for m in MODELS for t in TEST_SETS}
    for model in MODELS:
        record = json.loads((out / f"runs/fusar/{model}/none/lr0.001/seed42/record.json").read_text())
        assert record["processes"] == 2 and record["args"]["batch_size"] == 64
        assert record["n_train"] == 16 and {t: r["n"] for t, r in record["test_sets"].items()} == \
            dict.fromkeys(TEST_SETS, 11)
        # precise batch-norm statistics, averaged over the two ranks' shares: the cnn's three layers
        assert record["protocol"]["bn_recalibrate"] == "on"
        assert record["protocol"]["bn_layers"] == (3 if model == "cnn" else 0)


def test_predictions_cover_every_test_chip_once_with_metrics_from_them(ddp):
    for model, test_set in [(m, t) for m in MODELS for t in TEST_SETS]:
        manifest = read_str(ddp["prepared"] / test_set / "manifest.csv")
        manifest = manifest[manifest.split == "test"]
        folder = ddp["out"] / f"runs/fusar/{model}/none/lr0.001/seed42"
        pred = read_str(folder / f"predictions_{test_set}.csv")
        assert list(pred.path) == list(manifest.path)  # every chip once, in the split's order
        assert list(pred["true"]) == list(manifest["class"])
        t, p = pred["true"], pred["pred"]
        recomputed = expected_scores(t, p, CLASSES)
        saved = json.loads((folder / "record.json").read_text())["test_sets"][test_set]["metrics"]
        for column, value in recomputed.items():
            assert saved[column] == pytest.approx(value, abs=0.005), (model, test_set, column)


def test_checkpoint_is_the_module_and_reproduces_the_gathered_predictions(ddp):
    for model_name, test_set in [(m, t) for m in MODELS for t in TEST_SETS]:
        split = data.load_split(ddp["prepared"] / test_set, "test", 32, cache=False)
        folder = ddp["out"] / f"runs/fusar/{model_name}/none/lr0.001/seed42"
        ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
        state = ckpt["model"] if "model" in ckpt else ckpt["head"]  # a frozen model saves its head alone
        assert not [k for k in state if k.startswith("module.")]
        model, _ = load_trained(folder / "checkpoint.pt")
        with torch.inference_mode():
            x = engine.model_input(torch.from_numpy(split.images), torch.device("cpu"))
            probs = torch.softmax(model(x), 1).numpy()
        saved = pd.read_csv(folder / f"predictions_{test_set}.csv")
        # chips evaluated by rank 1 (odd positions) land where one process puts them, with the same model:
        # rank 0's batch-norm statistics
        assert np.allclose(probs, saved[[f"prob_{c}" for c in CLASSES]].to_numpy(), atol=2e-6), \
            (model_name, test_set)
    # the frozen model under DDP: its backbone is untouched, its head trained
    trained = load_trained(ddp["out"] / f"runs/fusar/{MODELS[1]}/none/lr0.001/seed42/checkpoint.pt")[0].state_dict()
    engine.seed_everything(42)
    fresh = build_model(MODELS[1], 3, "none").state_dict()
    assert all(torch.equal(trained[k], fresh[k]) for k in fresh if k.startswith("backbone."))
    assert not torch.equal(trained["head.0.weight"], fresh["head.0.weight"])


# ------------------------------------------------------------------------------------------------------------
# rank shares of a global batch (no process group needed: rank and world are arguments)

@pytest.mark.parametrize("n, batch, world", [(37, 8, 2), (16, 64, 2), (35, 12, 4), (17, 8, 2)])
def test_rank_shares_partition_the_single_process_batches(n, batch, world):
    labels = torch.arange(n)
    images = torch.arange(n, dtype=torch.uint8)[:, None, None].expand(n, 2, 2)
    single = [y for _, y in data.Batches(images, labels, batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(5))]
    shares = [[y for _, y in data.Batches(images, labels, batch, shuffle=True,
                                          generator=torch.Generator().manual_seed(5), rank=r,
                                          world_size=world)] for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # every rank takes the same number of steps
    for step, parts in enumerate(zip(*shares)):
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) >= 1  # equal shares
        together = torch.cat(parts)
        # the same chips as the single process's batch, at most world - 1 of the last one left out
        assert torch.equal(together, single[step][:len(together)])
        assert len(single[step]) - len(together) < world
    assert len(single) - len(shares[0]) <= 1


def test_global_batch_must_divide_among_the_processes():
    assert distributed.local_batch(64, 4) == 16 and distributed.local_batch(64, 1) == 64
    with pytest.raises(SystemExit, match=r"--batch-size 63 is the global batch.*use --batch-size 62 or 64"):
        distributed.local_batch(63, 2)


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    cpu = torch.device("cpu")
    assert distributed.setup(cpu) == cpu and not torch.distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, cpu) is model
    part = np.arange(12).reshape(6, 2)
    assert distributed.gather_rows(part, 6) is part and distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.rank_slice() == slice(0, None, 1)


def test_rank_seeds_differ_per_rank_and_are_fixed_by_the_seed():
    seeds = [distributed.rank_seeds(42, r) for r in range(4)]
    assert len({s for pair in seeds for s in pair}) == 8
    assert distributed.rank_seeds(42, 1) == seeds[1] and distributed.rank_seeds(43, 1) != seeds[1]


# ------------------------------------------------------------------------------------------------------------
# shards

def test_shards_are_disjoint_and_cover_the_grid():
    cells = [(s, m, "none", k) for s in ("fusar", "mixed") for m in ("cnn", "vgg", "resnet") for k in (0, 1)]
    for n in (1, 2, 5, 12, 13):
        parts = [distributed.shard_cells(cells, (k, n)) for k in range(1, n + 1)]
        assert sorted(c for p in parts for c in p) == sorted(cells)
        assert sum(len(p) for p in parts) == len(cells)
    assert distributed.shard_cells(cells, (2, 5)) == [cells[1], cells[6], cells[11]]
    assert distributed.shard_cells(cells, None) == cells


@pytest.mark.parametrize("value, message", [
    ("0/2", "1 <= k <= n"), ("3/2", "1 <= k <= n"), ("1/0", "1 <= k <= n"), ("2", "expected k/n"),
    ("a/b", "expected k/n"), ("1/2/3", "expected k/n"),
])
def test_bad_shard_values_are_clear_errors(value, message, capsys):
    with pytest.raises(SystemExit):
        tm.get_args_parser().parse_args(["--shard", value])
    assert message in capsys.readouterr().err


def test_shards_merged_give_the_unsharded_tables(prepared, tmp_path):
    run("--data-dir", str(prepared), "--output-dir", str(tmp_path / "all"))
    for k in (1, 2):
        run("--data-dir", str(prepared), "--output-dir", str(tmp_path / f"shard{k}"), "--shard", f"{k}/2")
        assert len(list((tmp_path / f"shard{k}").glob("runs/*/*/*/*/*/record.json"))) == 1
    merged = tmp_path / "merged"
    for k in (1, 2):  # what a user does after a job array: copy the record folders together
        shutil.copytree(tmp_path / f"shard{k}" / "runs", merged / "runs", dirs_exist_ok=True)
    tm.main(tm.get_args_parser().parse_args(["--output-dir", str(merged), "--aggregate-only"]))
    def cells(folder):
        return sorted(str(r.parent.relative_to(folder)) for r in folder.glob("runs/*/*/*/*/*/record.json"))

    assert cells(merged) == cells(tmp_path / "all") == [f"runs/fusar/{m}/none/lr0.001/seed42" for m in MODELS]
    for name in ("scores.csv", "predictions.csv"):
        pd.testing.assert_frame_equal(read_str(merged / name), read_str(tmp_path / "all" / name))
    assert len(model_rows(read_str(merged / "scores.csv"))) == 2  # and the baselines' rows


def test_empty_shard_says_so_and_succeeds(prepared, tmp_path, capsys):
    assert run("--data-dir", str(prepared), "--output-dir", str(tmp_path), "--shard", "5/5") is None
    out = capsys.readouterr().out
    assert "shard 5/5 has no cells: the grid has 2, fewer than 5 shards; nothing to do" in out
    assert not (tmp_path / "runs").exists()


def test_a_killed_torchrun_resumes_every_rank_bitwise_from_rank_0s_epoch_checkpoint(ddp, prepared, tmp_path):
    # Rank 0 writes the epoch checkpoint, with every rank's generator states; on a rerun every rank reads it.
    # The whole job is killed (agent and workers, SIGKILL, as a preempted node) once epoch 1 is saved; the
    # resumed cell must end bitwise as the uninterrupted 2-process run of the same cell: the ddp fixture's cnn
    # cell (same chips, flags and seed; finished before that run's kill, and a cell depends on no other cell)
    assert "resuming" not in ddp["killed"]["stdout"]  # ... trained in one go
    flags = ("--models", "cnn", *RESUMABLE, "--bootstrap", "0")
    whole, killed = ddp["out"], tmp_path / "killed"
    epoch = killed / "runs/fusar/cnn/none/lr0.001/.seed42.tmp-train/epoch.pt"
    job = torchrun(prepared, killed, *flags)
    deadline = time.monotonic() + 150
    try:
        while not epoch.is_file():
            assert job.poll() is None and time.monotonic() < deadline, "the run ended before epoch 1 was saved"
            time.sleep(0.01)
        for pid in worker_pids(str(killed)).values():
            os.kill(pid, signal.SIGKILL)
        job.kill()
    finally:
        finish(job, killed, timeout=60)
    assert not (killed / "runs/fusar/cnn/none/lr0.001/seed42").exists()
    assert torch.load(epoch, weights_only=True)["epoch"] in (1, 2)
    rerun = torchrun(prepared, killed, *flags)
    stdout, stderr = finish(rerun, killed, timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert "runs/fusar/cnn/none/lr0.001/seed42: resuming after epoch" in stdout and "took over the lease" in stdout
    a, b = (f / "runs/fusar/cnn/none/lr0.001/seed42" for f in (killed, whole))
    assert (a / "predictions_fusar.csv").read_bytes() == (b / "predictions_fusar.csv").read_bytes()
    wa, wb = (load_trained(f / "checkpoint.pt")[0].state_dict() for f in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    ha, hb = (json.loads((f / "record.json").read_text())["history"] for f in (a, b))
    assert ha == hb  # every epoch's loss and accuracy, the two epochs before the kill included
