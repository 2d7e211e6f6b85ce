"""grad_cams.py's output folder (--exp-dir): the files a run owns, and how a run replaces the previous run's.

    with staged(exp_dir) as stage:       # a hidden folder inside exp_dir, removed however the block ends
        ...write every output under stage...
        commit(stage, exp_dir)           # move them in; remove the owned files this run did not write again

The files grad_cams.py owns (OWNED; paths relative to exp_dir):
    <set>/<model>/<Class>_o<i>.png, <set>/<model>/<Class>_hm<i>.png   <model> one of models.MODEL_CHOICES
    cam_scores.csv, cam_summary.csv, road_scores.csv
    figures/cam_grid_<set>.png, figures/cam_on_ship.png
A run's outputs replace the previous run's: an owned file the new run does not write (a model, set or chip
index it did not explain this time) is removed, and so is a <set>/<model> folder left empty, so every map in
the folder is one cam_scores.csv lists. Nothing else there is touched: other files, other folders, hidden files.

A run writes into a staging folder inside exp_dir (.grad_cams.tmp-<host>-<pid>-<hex>, runs.temp_path: a killed
run's is removed by runs.clean_stale at the next start) and commits only once everything is written, so a run
that fails or is interrupted, or explains nothing, leaves the previous run's outputs as they were. Commit moves
files with os.replace (same file system, no copy); the tables go out first and come in last, so a kill during
the commit itself (renames only) leaves no cam_scores.csv presenting a mixed folder as one run's.
"""
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import runs
from models import MODEL_CHOICES

TABLES = ("cam_scores.csv", "cam_summary.csv", "road_scores.csv")
FIGURES = "figures"
_NAME = r"[^/.][^/]*"   # a path component that is not hidden
OWNED = re.compile(
    rf"^(?:{'|'.join(map(re.escape, TABLES))}|{FIGURES}/cam_grid_{_NAME}\.png|{FIGURES}/cam_on_ship\.png"
    rf"|{_NAME}/(?:{'|'.join(map(re.escape, MODEL_CHOICES))})/{_NAME}_(?:o|hm)\d+\.png)$")


def owned_files(exp_dir):
    """The files of exp_dir that grad_cams.py writes (OWNED), as relative posix paths."""
    exp_dir = Path(exp_dir)
    found = [*exp_dir.glob("*"), *exp_dir.glob(f"{FIGURES}/*"), *exp_dir.glob("*/*/*")]
    return {rel for p in found if OWNED.match(rel := p.relative_to(exp_dir).as_posix()) and p.is_file()}


@contextmanager
def staged(exp_dir):
    """Yield a new staging folder inside exp_dir (created); it is removed however the block ends, and exp_dir
    with it when this created exp_dir and it is left empty."""
    exp_dir = Path(exp_dir)
    made = not exp_dir.exists()
    exp_dir.mkdir(parents=True, exist_ok=True)
    stage = runs.temp_path(exp_dir / "grad_cams")
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if made:
            _remove_if_empty(exp_dir)


def _remove_if_empty(folder):
    try:
        folder.rmdir()
        return True
    except OSError:   # not empty (or not ours to remove): left as it is
        return False


def _move(stage, exp_dir, rel):
    target = exp_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage / rel, target)


def _remove(exp_dir, rel):
    """Remove an owned file, then its folders up to exp_dir while they are left empty."""
    path = exp_dir / rel
    path.unlink(missing_ok=True)
    folder = path.parent
    while folder != exp_dir and _remove_if_empty(folder):
        folder = folder.parent


def commit(stage, exp_dir):
    """Move a finished run's outputs from `stage` into exp_dir and remove the owned files it did not write;
    returns the relative paths removed."""
    exp_dir = Path(exp_dir)
    new = {p.relative_to(stage).as_posix() for p in Path(stage).rglob("*") if p.is_file()}
    stale = owned_files(exp_dir) - new
    for name in TABLES:
        (exp_dir / name).unlink(missing_ok=True)
    for rel in sorted(new - set(TABLES)):
        _move(stage, exp_dir, rel)
    for rel in sorted(stale):
        _remove(exp_dir, rel)
    for rel in [t for t in TABLES if t in new]:
        _move(stage, exp_dir, rel)
    return sorted(stale)
