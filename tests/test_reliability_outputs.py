"""Every stage checks at its start that it can write where it writes (issue 15, case 14): an output folder that
is a file, or lies under one, is a message naming the folder, the flag and the fix, exit status 1, no traceback,
and nothing is made. test_models.py's own check is in test_reliability_grid.py; here the other stages, as a user
runs them."""
import subprocess
import sys
from pathlib import Path

import pytest

import runs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, flag, folder", [
    (["dataset_prep.py", "--synthetic", "--synthetic-chips", "1", "--output-dir", "afile/prep", "--raw-dir", "raw"],
     "--output-dir", "afile/prep"),
    (["dataset_prep.py", "--synthetic", "--synthetic-chips", "1", "--output-dir", "prep", "--raw-dir", "afile"],
     "--raw-dir", "afile/synthetic"),
    (["report.py", "--output-dir", "afile"], "--output-dir", "afile"),
    (["grad_cams.py", "--output-dir", "afile"], "--output-dir", "afile/Exp_images"),
    (["grad_cams.py", "--exp-dir", "afile/cams"], "--exp-dir", "afile/cams"),
])
def test_an_output_folder_in_a_files_place_is_named_at_start(tmp_path, argv, flag, folder):
    (tmp_path / "afile").write_text("not a folder")
    proc = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"the output folder {folder} " in proc.stderr and f"choose another {flag}" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing made
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_check_creatable_makes_nothing_and_names_the_blocker(tmp_path):
    runs.check_creatable(tmp_path / "a" / "b")  # a missing folder under a writable one is fine
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(runs.NotWritableError, match=r"cannot be made \(.*/f is a file, not a folder\)"):
        runs.check_creatable(tmp_path / "f" / "g" / "h")
    with pytest.raises(runs.NotWritableError, match=r"the output folder .*/f is a file, not a folder"):
        runs.check_creatable(tmp_path / "f")
