"""A killed cell resumes from its last finished epoch (resume.py) bitwise as if never killed, and runs that share
a grid folder train each cell once (leases.py). CPU, 16 px, the cnn, 3 epochs; killed runs are real processes.
In-process runs skip the tables, which nothing here checks (tm.aggregate: the baselines alone take a second)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from fixtures import write_tiny_prepared

import leases
import resume
import runs
import test_models as tm
from models import load_trained

torch.set_num_threads(1)  # the killed runs use one thread too (ENV): the same arithmetic, bit for bit
REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
COUNTS = {split: {"Cargo": n, "Fishing": n // 2, "Tanker": n // 2} for split, n in (("train", 8), ("val", 4),
                                                                                  ("test", 4))}
# a sampler (order draws), flip (augmentation draws), dropout (the global generator), the best val epoch (the
# selection's kept weights): every state a resumed cell must restore
FLAGS = ["--img-size", "16", "--epochs", "3", "--batch-size", "4", "--weights", "none", "--device", "cpu",
         "--num-workers", "0", "--seeds", "42", "--models", "cnn", "--datasets", "fusar", "--imbalance", "sampler",
         "--select", "best", "--bootstrap", "0", "--checkpoint-every", "0"]  # every epoch saved but the last
CELL = "runs/fusar/cnn/sampler/lr0.001/seed42"
WORK = "runs/fusar/cnn/sampler/lr0.001/.seed42.tmp-train"
TIMINGS = ("train_seconds", "eval_seconds", "finished")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"), sets=("fusar",), counts=COUNTS)


def run(prepared, out, *flags):
    """test_models.main in this process, without the tables."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tm, "aggregate", lambda args: None)
        return tm.main(tm.get_args_parser().parse_args([*FLAGS, "--data-dir", str(prepared), "--output-dir",
                                                        str(out), *flags]))


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    """The cell trained without interruption."""
    out = tmp_path_factory.mktemp("reference")
    run(prepared, out)
    return out / CELL


class Started:
    """test_models.py as a user starts it, its stderr (the progress bars) collected as it comes."""

    def __init__(self, prepared, out, *flags):
        command = [sys.executable, str(REPO / "test_models.py"), *FLAGS, "--data-dir", str(prepared),
                   "--output-dir", str(out), *flags]
        self.proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err, self.out = bytearray(), bytearray()
        self.readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                        for s, b in ((self.proc.stderr, self.err), (self.proc.stdout, self.out))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into):
        while chunk := stream.read1(4096):
            into.extend(chunk)

    def kill_when(self, condition, timeout=240):
        """SIGKILL the run as soon as condition() holds; fails if the run ends or times out first."""
        deadline = time.monotonic() + timeout
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                if condition():
                    self.proc.send_signal(signal.SIGKILL)
                    self.proc.wait()
                    return
                time.sleep(0.002)
            pytest.fail(f"the run ended (status {self.proc.returncode}) before the moment to kill it: "
                        f"{self.err.decode(errors='replace')[-2000:]}")
        finally:
            self.finish(timeout)

    def finish(self, timeout=240):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self.readers:
                reader.join()
        return self.proc.returncode


def saved_epoch(out):
    return torch.load(out / WORK / resume.EPOCH, weights_only=True)["epoch"]


def record(folder):
    rec = json.loads((folder / "record.json").read_text())
    for key in TIMINGS:
        rec.pop(key)
    rec["args"].pop("output_dir")
    rec.pop("command")
    return rec


def assert_same_cell(folder, reference):
    """Predictions, weights and record (timings and the output folder aside) bitwise those of the reference;
    the same files, no optimiser state, no working folder left."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.glob("*.csv"):
        assert (folder / path.name).read_bytes() == path.read_bytes(), path.name
    a, b = (load_trained(f / "checkpoint.pt")[0].state_dict() for f in (folder, reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert record(folder) == record(reference)
    assert not (folder.parent / ".seed42.tmp-train").exists()


def write_lease(folder, host, pid, age, **more):
    """A lease of `host` and `pid` in `folder` whose last heartbeat was `age` seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / leases.LEASE).write_text(json.dumps({"host": host, "pid": pid, "token": "x" * 32,
                                                   "heartbeat": time.time() - age, **more}))


# ------------------------------------------------------------------------------------------------------------
# resume

def test_killed_between_epochs_resumes_where_it_stopped(prepared, reference, tmp_path, capsys):
    out = tmp_path / "between"
    Started(prepared, out).kill_when((out / WORK / resume.EPOCH).is_file)  # the first epoch is saved
    assert saved_epoch(out) == 1 and not (out / CELL).exists()

    # another live run (of another machine: its heartbeat is recent) holds the cell: skipped, and said so
    write_lease(out / WORK, "node-elsewhere", 4242, age=5)
    capsys.readouterr()
    # the tables too (no patch): a run whose every cell another run holds ends well, leaving them to that run
    assert tm.main(tm.get_args_parser().parse_args([*FLAGS, "--data-dir", str(prepared), "--output-dir",
                                                    str(out)])) is None
    said = capsys.readouterr().out
    assert "fusar/cnn/sampler/lr0.001/seed42: held by another run (node-elsewhere, pid 4242" in said
    assert "1 cell held by another run (node-elsewhere, pid 4242): rerun later to pick up their results" in said
    assert not (out / CELL).exists() and saved_epoch(out) == 1

    # its heartbeat stopped longer ago than the lease timeout: taken over, and the cell resumed after epoch 1
    write_lease(out / WORK, "node-elsewhere", 4242, age=2 * leases.TIMEOUT)
    run(prepared, out)
    said = capsys.readouterr().out
    assert "took over the lease of node-elsewhere, pid 4242" in said
    assert "resuming after epoch 1 of 3" in said
    assert_same_cell(out / CELL, reference)


def test_killed_inside_an_epoch_resumes_from_the_last_finished_one(prepared, reference, tmp_path, capsys):
    out = tmp_path / "inside"
    run_ = Started(prepared, out)
    # the progress bar shows a loss once the first step of an epoch is done: epoch 3 is under way
    run_.kill_when(lambda: re.search(rb"epoch 3/3:[^\r\n]*loss=", run_.err) is not None)
    assert saved_epoch(out) == 2 and not (out / CELL).exists()
    capsys.readouterr()
    run(prepared, out)  # the killed run's lease names a dead process of this host: taken over at once
    said = capsys.readouterr().out
    assert f"took over the lease of {socket.gethostname()}, pid {run_.proc.pid}" in said
    assert "resuming after epoch 2 of 3" in said
    assert_same_cell(out / CELL, reference)


def test_an_epoch_checkpoint_that_cannot_be_used_is_removed_and_the_cell_starts_over(tmp_path, capsys):
    args = tm.get_args_parser().parse_args([*FLAGS, "--output-dir", str(tmp_path)])
    cell, cpu, work = runs.Cell("fusar", "cnn", "sampler", "raw", 0.001, 42), torch.device("cpu"), tmp_path / WORK
    (work / "cell").mkdir(parents=True)
    (work / "cell" / "predictions_old.csv").write_text("left by the killed run\n")
    (work / resume.EPOCH).write_bytes(b"PK\x03\x04 cut short")
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_lease(work, socket.gethostname(), dead.pid, age=0)
    assert runs.clean_stale(tmp_path) == [] and work.is_dir()  # a working folder is the lease holder's business
    with resume.CellWork(cell, args, "manifest-a", cpu) as held:
        assert held.read_epoch() is None  # removed: the cell trains from its first epoch
        assert not (work / resume.EPOCH).exists() and list((work / "cell").iterdir()) == []
        held.save_epoch({"epoch": 1})
    assert (work / resume.EPOCH).is_file() and not (work / leases.LEASE).exists()  # kept, the lease released
    said = capsys.readouterr().out
    name = "runs/fusar/cnn/sampler/lr0.001/seed42"
    assert f"{name}: took over the lease of {socket.gethostname()}, pid {dead.pid}" in said
    assert f"{name}: the epoch checkpoint {work / resume.EPOCH} cannot be read (" in said
    assert said.count("training the cell from its first epoch") == 1

    args.epochs = 5
    with resume.CellWork(cell, args, "manifest-b", cpu) as held:
        assert held.read_epoch() is None
    assert f"{name}: the epoch checkpoint {work / resume.EPOCH} was made with epochs=3 (now 5); train_manifest=" \
           "'manifest-a' (now 'manifest-b'); training the cell from its first epoch" in capsys.readouterr().out
    assert not work.exists()  # left without an epoch checkpoint: nothing to resume, the folder removed


# ------------------------------------------------------------------------------------------------------------
# leases

def test_two_runs_on_one_grid_folder_train_each_cell_once(prepared, tmp_path):
    out = tmp_path / "shared"
    flags = ("--seeds", "0,1,2", "--epochs", "1")
    runs_ = [Started(prepared, out, *flags) for _ in range(2)]
    assert [r.finish() for r in runs_] == [0, 0], [r.err.decode(errors="replace")[-2000:] for r in runs_]
    said = [r.out.decode() for r in runs_]
    trained = Counter(m for text in said for m in re.findall(r"^\[\d/3\] (\S+): 1 epoch\(s\) in ", text, re.M))
    cells = [f"fusar/cnn/sampler/lr0.001/seed{k}" for k in range(3)]
    assert trained == Counter(cells)  # every cell trained, and by one run only
    assert all((out / "runs" / cell / "record.json").is_file() for cell in cells)
    assert any(re.search(r"^\[\d/3\] \S+: held by another run \(" + re.escape(socket.gethostname())
                         + r", pid \d+", text, re.M) for text in said), said
    assert not list(out.glob("runs/*/*/*/*/.seed*"))


def test_stale_leases_are_taken_over_and_live_ones_are_not(tmp_path):
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    cases = {"dead": (host, dead.pid, 0, True), "silent": ("node-b", 7, 2 * leases.TIMEOUT, True),
             "beating": ("node-b", 7, 5, False), "alive": (host, os.getpid(), 5, False)}
    for name, (owner, pid, age, stale) in cases.items():
        write_lease(tmp_path / name, owner, pid, age)
        lease_path = tmp_path / name / leases.LEASE
        lease = leases.Lease(lease_path.parent)
        if stale:
            lease.acquire()
            assert lease.taken_over["pid"] == pid and json.loads(lease_path.read_text())["pid"] == os.getpid()
            lease.release()
            assert not lease_path.exists()
        else:
            with pytest.raises(leases.Held, match=rf"held by another run \({owner}, pid {pid}, last heartbeat"):
                lease.acquire()
            assert json.loads(lease_path.read_text())["pid"] == pid  # left alone

    # a lease file still being written (unreadable) is live until it is older than the timeout
    lease_path = tmp_path / "empty" / leases.LEASE
    lease_path.parent.mkdir()
    lease_path.write_text("")
    with pytest.raises(leases.Held):
        leases.Lease(lease_path.parent).acquire()
    old = time.time() - 2 * leases.TIMEOUT
    os.utime(lease_path, (old, old))
    leases.Lease(lease_path.parent).acquire().release()


def test_a_requeued_slurm_job_takes_over_its_earlier_run_at_once(tmp_path, monkeypatch):
    """SLURM --requeue may restart a job on another node: the lease of its killed run (the same SLURM_JOB_ID, a
    lower SLURM_RESTART_COUNT) is stale at once; that of another process of the same run is not."""
    monkeypatch.setenv("SLURM_JOB_ID", "8123")
    for restart, stale in (("2", True), ("1", False)):
        monkeypatch.setenv("SLURM_RESTART_COUNT", restart)  # this run
        write_lease(tmp_path, "node-b", 7, age=5, slurm=["8123", 1])  # the lease of run 1 of the job, on node-b
        if stale:
            lease = leases.Lease(tmp_path).acquire()
            assert lease.taken_over["pid"] == 7
            assert json.loads((tmp_path / leases.LEASE).read_text())["slurm"] == ["8123", 2]
            lease.release()
        else:
            with pytest.raises(leases.Held, match="node-b, pid 7"):
                leases.Lease(tmp_path).acquire()


def test_heartbeat_refreshes_the_lease_and_notices_a_takeover(tmp_path):
    lease = leases.Lease(tmp_path, timeout=0.4).acquire()  # a beat every 0.1 s
    first = json.loads((tmp_path / leases.LEASE).read_text())["heartbeat"]
    time.sleep(0.35)
    assert json.loads((tmp_path / leases.LEASE).read_text())["heartbeat"] > first
    lease.check()
    taker = tmp_path / "taker"
    taker.write_text(json.dumps({"host": "node-c", "pid": 9, "token": "c" * 32, "heartbeat": time.time()}))
    taker.replace(tmp_path / leases.LEASE)  # whole, as a run taking it over writes it
    time.sleep(0.35)
    with pytest.raises(leases.Lost, match=r"node-c, pid 9"):
        lease.check()
    lease.release()
    assert json.loads((tmp_path / leases.LEASE).read_text())["pid"] == 9  # not this run's to remove
