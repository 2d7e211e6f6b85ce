"""test_models.py (and report.py) when the user or the machine gets something wrong (issue 15, cases 9-14): a
one-class set, a damaged record.json or checkpoint, a flag no model can run with, Ctrl-C, an output folder that
cannot be written and a disk that fills up. Each is a message naming the file or flag and the fix, never a
traceback, and nothing finished is lost. CPU only, 8 px, 1 epoch (the Ctrl-C test: one subprocess)."""

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import CLASSES, write_tiny_prepared

import grid_checks
import report
import runs
import test_models as tm
from models import MODEL_CHOICES, build_model

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
REPO = Path(__file__).resolve().parent.parent
QUICK = ["--img-size", "8", "--epochs", "1", "--weights", "none", "--device", "cpu", "--num-workers", "0",
         "--seeds", "1", "--models", "cnn", "--bootstrap", "0"]
CELL = "runs/fusar/cnn/none/lr0.001/seed1"


def run(data, out, *flags):
    return tm.main(tm.get_args_parser().parse_args([*QUICK, "--data-dir", str(data), "--output-dir", str(out),
                                                    *flags]))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"), sets=("fusar", "opensarship"))


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """One finished cnn cell on fusar, tested on fusar alone (so a rerun must complete it for opensarship)."""
    out = tmp_path_factory.mktemp("trained")
    run(prepared, out, "--datasets", "fusar", "--test-sets", "fusar")
    assert (out / CELL / runs.CHECKPOINT).is_file()
    return out


def copy_grid(src, dst, checkpoint=False):
    shutil.copytree(src, dst, ignore=None if checkpoint else shutil.ignore_patterns(runs.CHECKPOINT))
    return dst


def cell_files(out):
    """Every path under runs/, hidden temporaries included."""
    return sorted(str(p.relative_to(out)) for p in (out / runs.RUNS).rglob("*")) if (out / runs.RUNS).exists() \
        else []


# ------------------------------------------------------------------------------------------------------------
# 9: one class

def test_one_class_set_is_refused_before_training(tmp_path):
    data = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",), classes=("Cargo",))
    with pytest.raises(SystemExit) as e:
        run(data, tmp_path / "out")
    message = str(e.value)
    assert "fusar" in message and "Cargo" in message and "at least two classes" in message
    assert "dataset_prep.py" in message and str(data / "fusar") in message
    assert cell_files(tmp_path / "out") == []  # refused before the first cell


# ------------------------------------------------------------------------------------------------------------
# 10: a damaged record.json

def _damaged(record_text):
    record = json.loads(record_text)
    return {
        "empty": "",
        "zeroed": "\x00" * 64,  # what a crash of the file system can leave
        "not a record": "[1, 2]",
        "no fields": "{}",
        "no test sets": json.dumps({k: v for k, v in record.items() if k != "test_sets"}),
        "args not a dict": json.dumps({**record, "args": "epochs=1"}),
    }


@pytest.mark.parametrize("kind", ["empty", "zeroed", "not a record", "no fields", "no test sets", "args not a dict"])
def test_damaged_record_names_the_cell_and_the_fix_everywhere(kind, prepared, trained, tmp_path):
    out = copy_grid(trained, tmp_path / "out")
    record = out / CELL / runs.RECORD
    record.write_text(_damaged(record.read_text())[kind])
    entry_points = {
        "rerun": lambda: run(prepared, out, "--datasets", "fusar", "--test-sets", "fusar"),
        "aggregate": lambda: tm.main(tm.get_args_parser().parse_args(["--output-dir", str(out), "--aggregate-only"])),
        "report": lambda: report.main(report.get_args_parser().parse_args(["--output-dir", str(out), "--data-dir",
                                                                           str(prepared)])),
    }
    for name, entry in entry_points.items():
        with pytest.raises(SystemExit) as e:
            entry()
        message = str(e.value)
        assert str(out / CELL) in message, (name, message)
        assert "delete" in message and "rerun" in message, (name, message)


def test_missing_predictions_file_names_the_cell(trained, tmp_path):
    out = copy_grid(trained, tmp_path / "out")
    (out / CELL / "predictions_fusar.csv").unlink()
    with pytest.raises(SystemExit) as e:
        tm.main(tm.get_args_parser().parse_args(["--output-dir", str(out), "--aggregate-only"]))
    assert "predictions_fusar.csv" in str(e.value) and str(out / CELL) in str(e.value) and "delete" in str(e.value)


# ------------------------------------------------------------------------------------------------------------
# 11: a damaged checkpoint when a record must be completed

@pytest.mark.parametrize("damage", ["deleted", "truncated", "foreign"])
def test_damaged_checkpoint_when_completing_a_record(damage, prepared, trained, tmp_path):
    out = copy_grid(trained, tmp_path / "out", checkpoint=True)
    path = out / CELL / runs.CHECKPOINT
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:
        torch.save({"conv.weight": torch.zeros(1)}, path)
    before = (out / CELL / runs.RECORD).read_text()
    with pytest.raises(SystemExit) as e:
        run(prepared, out, "--datasets", "fusar")  # every prepared set: opensarship is new to the record
    message = str(e.value)
    assert str(path) in message and "opensarship" in message, message
    assert f"delete the cell folder {out / CELL}" in message and "--test-sets" in message, message
    assert (out / CELL / runs.RECORD).read_text() == before  # the record is left as it was
    assert not list((out / CELL).glob(".complete*"))


# ------------------------------------------------------------------------------------------------------------
# 12: numeric flags

@pytest.mark.parametrize("models, size, named, least", [("cnn", 7, "cnn", 8),
                                                        ("cnn,fine_vgg_gap", 16, "fine_vgg_gap", 32)])
def test_img_size_below_a_model_minimum_is_refused_up_front(models, size, named, least, prepared, tmp_path):
    with pytest.raises(SystemExit) as e:
        run(prepared, tmp_path / "out", "--models", models, "--img-size", str(size))
    message = str(e.value)
    assert f"--img-size {size}" in message and f"{named} needs at least {least} px" in message, message
    assert cell_files(tmp_path / "out") == []


@pytest.mark.parametrize("flag, value, says", [
    ("--seeds", "-1", "at least 0"), ("--seeds", "1,4294967296", "at most 4294967295"), ("--lr", "nan", "got nan"),
    ("--lr", "inf", "(0, inf)"), ("--lr", "0", "(0, inf)"), ("--epochs", "0", "at least 1"),
    ("--batch-size", "1", "at least 2"), ("--img-size", "0", "at least 1"), ("--patience", "0", "at least 1"),
    ("--num-workers", "-1", "at least 0"), ("--bootstrap", "-5", "at least 0"),
])
def test_numeric_flags_are_argparse_errors_naming_the_flag(flag, value, says, capsys):
    with pytest.raises(SystemExit) as e:
        tm.get_args_parser().parse_args([f"{flag}={value}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}" in err and says in err, err


def _runs_at(model, size):
    try:
        with torch.no_grad():
            model(torch.rand(2, 1, size, size))
    except RuntimeError:
        return False
    return True


def test_minimum_image_sizes_are_the_models_own():
    assert set(grid_checks.MIN_IMG_SIZE) == set(MODEL_CHOICES)
    # vgg and fine_vgg have the VGG16 features of fine_vgg_gap (five 2x2 max pools): one check covers the three
    assert grid_checks.MIN_IMG_SIZE["vgg"] == grid_checks.MIN_IMG_SIZE["fine_vgg"] == \
        grid_checks.MIN_IMG_SIZE["fine_vgg_gap"]
    assert grid_checks.MIN_IMG_SIZE["resnet"] == grid_checks.MIN_IMG_SIZE["fine_resnet"]
    for name in ("cnn", "fine_vgg_gap", "fine_resnet"):
        model, least = build_model(name, len(CLASSES), weights="none").eval(), grid_checks.MIN_IMG_SIZE[name]
        assert _runs_at(model, least), name
        assert least == 1 or not _runs_at(model, least - 1), name


# ------------------------------------------------------------------------------------------------------------
# 13: Ctrl-C

@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_mid_cell_keeps_finished_cells_and_says_how_to_resume(tmp_path, sig, status, word):
    # SIGTERM: what SLURM sends at preemption or at its time limit, handled as Ctrl-C is
    data = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",))
    # a second training set big enough (300 chips, 5 batches an epoch) to be still training when SIGINT comes
    write_tiny_prepared(data, sets=("big",), counts={"train": dict.fromkeys(CLASSES, 100),
                                                     "test": dict.fromkeys(CLASSES, 1)})
    out, stdout, stderr = tmp_path / "out", tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # eight epochs: the big cell trains for seconds, so a loaded machine that polls late still signals mid-cell
    command = [sys.executable, "test_models.py", *QUICK, "--epochs", "8", "--data-dir", str(data), "--output-dir",
               str(out), "--datasets", "fusar,big", "--test-sets", "fusar"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(stdout, "w") as so, open(stderr, "w") as se:
        # SIGINT back to its default in the child: a test run started in the background (`pytest &`, as CI
        # scripts do) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
        proc = subprocess.Popen(command, cwd=REPO, stdout=so, stderr=se, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while "big/cnn/none/lr0.001/seed1 epoch 1/8" not in stderr.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    err = stderr.read_text()
    assert rc == status, (rc, err)
    assert (f"test_models.py: {word}; finished cells, and the last epoch checkpoint of the cell in training, are "
            "kept; rerun the same command to resume") in err
    assert "Traceback" not in err
    assert "[1/2] fusar/cnn/none/lr0.001/seed1" in stdout.read_text()
    finished = out / CELL
    assert runs.read_record(finished)["seed"] == 1 and (finished / runs.CHECKPOINT).is_file()
    assert not (out / "runs/big/cnn/none/lr0.001/seed1").exists()


# ------------------------------------------------------------------------------------------------------------
# 14: output folder and disk

def test_output_dir_that_is_a_file_is_refused_at_start(prepared, tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("not a folder")
    for out in (path, path / "grid"):
        with pytest.raises(SystemExit) as e:
            run(prepared, out, "--datasets", "fusar")
        assert str(path) in str(e.value) and "--output-dir" in str(e.value), str(e.value)
    assert path.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_refused_at_start(prepared, tmp_path):
    out = tmp_path / "grid"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=f"{out}.*--output-dir"):
            run(prepared, out, "--datasets", "fusar")
    finally:
        out.chmod(0o755)


def test_check_writable_leaves_nothing_behind(tmp_path):
    runs.check_writable(tmp_path / "new" / "grid")
    assert list((tmp_path / "new" / "grid").iterdir()) == []


def test_full_disk_says_what_ran_out_and_what_a_cell_needs(prepared, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes every write past 16 MB fail with EFBIG, as a full disk does with
    ENOSPC: the cnn's 69 MB checkpoint cannot be written; torch.save says only "unexpected pos"."""
    out = tmp_path / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, hard))
    try:
        with pytest.raises(SystemExit) as e:
            run(prepared, out, "--datasets", "fusar", "--test-sets", "fusar")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    message = str(e.value)
    assert str(out) in message and "ran out" in message and "A cnn cell needs about" in message, message
    assert "--output-dir" in message and "rerun" in message
    assert not (out / CELL).exists()


def test_tables_on_a_full_disk_say_so_and_keep_the_earlier_ones(prepared, tmp_path):
    """--aggregate-only when the disk fills while the tables are written (a 4 KB file-size limit: predictions.csv
    cannot be written): a message naming the file and the fix; the earlier tables stand."""
    out = tmp_path / "out"
    run(prepared, out, "--datasets", "fusar", "--test-sets", "fusar")
    before = (out / "predictions.csv").read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 10, hard))
    try:
        with pytest.raises(SystemExit) as e:
            run(prepared, out, "--aggregate-only")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    message = str(e.value)
    assert message.startswith("writing the tables failed: ") and str(out) in message, message
    assert f"--aggregate-only --output-dir {out}" in message and "the earlier ones stand" in message
    assert (out / "predictions.csv").read_bytes() == before


def test_write_failure_tells_space_errors_from_others(tmp_path):
    need = grid_checks.cell_needs("cnn", 3)
    assert need["checkpoint"] == pytest.approx(68.7e6, rel=0.01)  # the 4096 x 4096 head dominates
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    assert "ran out" in grid_checks.write_failure(full, tmp_path, ["cnn"], 3)
    assert "ran out" in grid_checks.write_failure(RuntimeError("[enforce fail at inline_container.cc:672] . "
                                                               "unexpected pos 704 vs 598"), tmp_path, ["cnn"], 3)
    assert grid_checks.write_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), tmp_path,
                                     ["cnn"], 3) is None
    unreadable = OSError(errno.EACCES, "Permission denied", "/elsewhere/chip.png")  # a read elsewhere
    assert grid_checks.write_failure(unreadable, tmp_path, ["cnn"], 3) is None
