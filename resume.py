"""A killed cell resumes from its last finished epoch: the cell's working folder, its lease and its epoch checkpoint.

    with CellWork(cell, args, manifest_sha1, device) as work:  # leases.Held: another run has the cell
        progress = Progress(work, model, optimizer, scaler, batches, selection)
        for epoch in progress.epochs(args.epochs):      # from the epoch after the last one saved
            ...                                         # train, check, selection.update; saved when due
        ... write checkpoint.pt, predictions, ... into work.dir ...
        work.publish(record)                            # record.json, then renamed to runs/.../seed<k>

A cell is trained in a working folder with a stable name beside its final place, so that a rerun finds it:
    runs/<train_set>/<model>/<imbalance>/lr<lr>/.seed<k>.tmp-train/
        .lease      the run that trains the cell (leases.py): another run skips the cell while it is live
        epoch.pt    the epoch checkpoint: the last finished epoch (EPOCH, below)
        cell/       the record folder being written; renamed to seed<k>/ when complete (runs.publish)
The epoch checkpoint (torch.save, written atomically when due (below) by rank 0 under torchrun, read back with
torch.load(weights_only=True)) holds the model's state, the optimiser's (Adam's moments and steps), the
GradScaler's, the epoch, the history so far, the training seconds so far, the selection (engine.Selection: the best
epoch, its score, and the weights kept of it unless they are the model's own), and the state of every random
generator the cell draws from (engine.generator_states: torch's, CUDA's, NumPy's and Python's global ones, the data
order's and the augmentation's; of every rank under torchrun), so the epochs that follow draw exactly what they
would have drawn: on the CPU a resumed cell's predictions, weights and record (timings aside) are bitwise those of
an uninterrupted run (tests/test_resume.py). The grid uses no learning-rate scheduler. It also holds the settings
that decide the training (KEY_ARGS, the cell, its training set's manifest, the device type, the processes); a
checkpoint made otherwise, or one that cannot be read, is removed with a message and the cell trained from its
first epoch. Its size is 3 to 4 times the trained weights (the cnn: 206-275 MB, written in about 0.3 s on a
2-core CPU); a kill between epochs 9 and 10 of a 10-epoch cell then costs one epoch instead of ten.
How often: after an epoch that ends at least --checkpoint-every seconds (EVERY) after the last save (or the cell's
start), and never after the last epoch (the cell is then published: its record is seconds away). A study epoch
(224 px, minutes) is saved every time; a toy cell whose epochs take a second (the demo's) is saved once a minute,
so writing a few hundred MB does not take longer than the training it protects. --checkpoint-every 0 saves every
epoch but the last.

A run that fails or is interrupted inside a cell keeps the working folder when it holds an epoch checkpoint (and
removes it otherwise) and releases the lease; one killed outright leaves its lease behind, taken over by the next
run (at once on the same host: its pid is gone). runs.clean_stale leaves working folders alone: the run that takes
a cell's lease cleans its folder (everything but the epoch checkpoint). The finished cell keeps no optimiser
state: the epoch checkpoint is deleted before the record folder is published, and the working folder after.
"""

import shutil
import time

import torch

import distributed
from cli import float_in
import engine
import leases
import runs
import tables

WORK = ".tmp-train"  # .seed<k>.tmp-train: the stable name a rerun finds (not a runs.temp_suffix: not stale)
EPOCH = "epoch.pt"
CELL = "cell"
FORMAT = 1  # the layout of epoch.pt; another one is not resumed
SAME_AS_MODEL = "model"  # the selection's kept weights are those of the epoch saved: not written twice
EVERY = 60.0  # --checkpoint-every: seconds of a cell between two epoch checkpoints
KEY_ARGS = (*tables.TRAIN_SETTINGS, "amp", "compile", "no_feature_cache")  # what makes a cell's arithmetic


def add_flags(parser):
    """test_models.py's flags of this contract: how often a cell saves its epoch, and when a lease is stale."""
    parser.add_argument("--checkpoint-every", type=float_in(0, float("inf"), high_open=True), default=EVERY,
                        metavar="S", help="seconds of training between two epoch checkpoints of a cell, from which "
                        "a killed cell resumes (0: after every epoch but the last)")
    parser.add_argument("--lease-timeout", type=float_in(0, float("inf"), True, True), default=leases.TIMEOUT,
                        metavar="S", help="seconds without a heartbeat after which another run's lease on a cell is "
                        "stale and the cell taken over (a dead run of this host: at once)")


class CellWork:
    """A cell's working folder under its lease, for `with` (module docstring). Under torchrun rank 0 takes the
    lease and writes; every rank learns its verdict and reads the epoch checkpoint."""

    def __init__(self, cell, args, manifest, device):
        self.final = runs.cell_dir(args.output_dir, cell)
        self.name, self.force, self.device = runs.cell_name(cell), args.force, device
        self.folder = self.final.parent / f".{self.final.name}{WORK}"
        self.dir, self.epoch_path = self.folder / CELL, self.folder / EPOCH
        self.key = {**{k: getattr(args, k, None) for k in KEY_ARGS}, "cell": list(cell), "train_manifest": manifest,
                    "device": device.type, "processes": distributed.world_size()}
        self.lease = leases.Lease(self.folder, args.lease_timeout) if distributed.is_main() else None
        self.every = args.checkpoint_every  # seconds between epoch checkpoints (Progress)
        self.published = False

    def __enter__(self):
        verdict = None
        if self.lease is not None:
            try:
                self.lease.acquire()
                self._prepare()
            except leases.Held as e:
                verdict = e
            except BaseException:
                self.lease.release()
                raise
        verdict = distributed.broadcast(verdict)
        if verdict is not None:
            raise verdict
        return self

    def _prepare(self):
        """Rank 0, holding the lease: say whose lease it took over; clear what an interrupted run left beside its
        epoch checkpoint (partial outputs, temporaries)."""
        if self.lease.taken_over is not None:
            print(f"runs/{self.name}: took over the lease of {leases.describe(self.lease.taken_over)} (a run that "
                  "stopped)", flush=True)
        if not self.force and (self.final / runs.RECORD).is_file():  # published by another run since this began
            self._remove()
            raise leases.Held(None, "finished by another run meanwhile")
        for path in self.folder.iterdir():
            if path.name not in (leases.LEASE, EPOCH):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        self.dir.mkdir()

    def _remove(self):
        """Remove the working folder, lease included: renamed first, so no run ever sees it half removed."""
        self.lease.stop()
        gone = self.folder.with_name(f"{self.folder.name}.old{runs.temp_suffix()}")  # runs.clean_stale's if killed
        try:
            self.folder.rename(gone)
        except FileNotFoundError:
            return
        shutil.rmtree(gone)

    def check(self):
        """Raise leases.Lost on every rank when another run has taken this cell's lease over."""
        lost = distributed.broadcast(self.lease.lost if self.lease is not None else None)
        if lost is not None:
            raise leases.Lost(lost)

    def read_epoch(self):
        """The epoch checkpoint to resume from (the same on every rank), or None: none, or removed with a message
        because it cannot be read or was made with other settings."""
        state, ok = None, False
        if self.lease is not None and self.epoch_path.is_file():
            try:
                state = torch.load(self.epoch_path, map_location="cpu", weights_only=True)
                why = self._differs(state)
            except Exception as e:  # a damaged file fails in torch.load in many ways: all mean start over
                why = f"cannot be read ({type(e).__name__}: {e})"
            if why:
                print(f"runs/{self.name}: the epoch checkpoint {self.epoch_path} {why}; training the cell from its "
                      "first epoch", flush=True)
                self.epoch_path.unlink()
            ok = not why
        if not distributed.broadcast(ok):
            return None
        return state if self.lease is not None else torch.load(self.epoch_path, map_location="cpu",
                                                               weights_only=True)

    def _differs(self, state):
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return "was written by another version of test_models.py"
        key = state.get("key", {})
        differ = [f"{k}={key.get(k)!r} (now {v!r})" for k, v in self.key.items() if key.get(k) != v]
        return f"was made with {'; '.join(differ)}" if differ else None

    def save_epoch(self, state):
        """Rank 0: the epoch checkpoint, written atomically."""
        if self.lease is not None:
            runs.write_atomic(self.epoch_path, lambda path: torch.save({"format": FORMAT, "key": self.key, **state},
                                                                       path))

    def publish(self, record):
        """Rank 0: write record.json, delete the epoch checkpoint, rename the record folder into place, remove the
        working folder and its lease. Nothing on the other ranks."""
        if self.lease is None:
            return
        self.lease.check()
        runs.write_json_atomic(self.dir / runs.RECORD, record)
        self.lease.stop()
        self.epoch_path.unlink(missing_ok=True)  # the finished cell keeps no optimiser state
        runs.publish(self.dir, self.final, runs.temp_suffix())
        self._remove()
        self.published = True

    def __exit__(self, kind, error, traceback):
        if self.lease is None or self.published:
            return False
        if self.lease.lost is not None or isinstance(error, leases.Lost):
            self.lease.stop()  # the folder is another run's now: nothing here to touch
        elif self.epoch_path.is_file():
            self.lease.release()  # resumable: the next run continues from the epoch checkpoint
        else:
            self._remove()
        return False


class Progress:
    """The epochs a cell has left and the epoch checkpoint after each (module docstring). The clock starts here;
    `history` is the cell's history, that of the epochs an earlier run finished included."""

    def __init__(self, work, model, optimizer, scaler, batches, selection):
        self.work, self.model, self.optimizer, self.scaler, self.selection = work, model, optimizer, scaler, selection
        self.generators = {"order": batches.generator, "augment": batches.aug_generator}  # a data.Batches'
        self.history, self.before, self.start = [], 0.0, time.perf_counter()
        self.every, self.saved = work.every, self.start

    def seconds(self):
        """Training seconds: this run's, and those of the runs it resumes."""
        return self.before + time.perf_counter() - self.start

    def epochs(self, n):
        """Yield the epochs left of 1..n, resuming after the one the epoch checkpoint holds. An epoch is saved when
        the loop asks for the next one and `every` seconds have passed since the last save (module docstring); a
        loop left by `break` saves no more."""
        for epoch in range(self._load(n) + 1, n + 1):
            yield epoch
            # every rank decides alike: rank 0's clock, so that all of them enter _save's all_gather together
            due = distributed.broadcast(time.perf_counter() - self.saved >= self.every)
            if epoch < n and due:
                self._save(epoch)
                self.saved = time.perf_counter()

    def _load(self, n):
        """Restore the state of the epoch checkpoint, if any; returns its epoch (0: none)."""
        state = self.work.read_epoch()
        if state is None:
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        selection = state["selection"]
        if selection["state"] == SAME_AS_MODEL:
            selection = {**selection, "state": state["model"]}
        self.selection.load_state_dict(selection)
        self.history[:] = state["history"]
        self.before = state["seconds"]
        engine.set_generator_states(state["generators"][distributed.rank()], self.generators, self.work.device)
        if distributed.is_main():
            print(f"runs/{self.work.name}: resuming after epoch {state['epoch']} of {n} (from the epoch checkpoint "
                  f"an interrupted run left; {state['seconds']:.1f} s of training kept)", flush=True)
        return state["epoch"]

    def _save(self, epoch):
        states = distributed.all_gather(engine.generator_states(self.generators, self.work.device))
        self.work.check()
        selection = self.selection.state_dict()
        if selection["epoch"] == epoch and selection["state"] is not None:  # kept just now: the model's weights
            selection["state"] = SAME_AS_MODEL
        self.work.save_epoch({"epoch": epoch, "model": self.model.state_dict(),
                              "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                              "selection": selection, "history": self.history, "seconds": self.seconds(),
                              "generators": states})
