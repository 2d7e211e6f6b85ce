"""grad_cams.py's reliability (issue 15, cases 1, 7 and 17): a model trained on an earlier preparation of its
set is refused, a rerun leaves no output of the earlier run beside its own, a grid of one model is explained
without "problems" for the models it never had, and the comparison figure keeps its title and column heads
inside the figure and apart for one column and for many.

One tiny grid for the module: the cnn trained for one epoch at 32 px on a tiny FUSAR-like set; a tiny
OpenSARShip-like set is prepared beside it but has no model in the grid.
"""
import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import write_tiny_prepared
from matplotlib.backends.backend_agg import FigureCanvasAgg

import cam_figures
import grad_cams
import runs
import sets
import test_models

CELL = "runs/fusar/cnn/none/lr0.001/seed0"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("cams_reliability")
    write_tiny_prepared(root / "prepared", sets=("fusar", "opensarship"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread beats several fighting over a few shared cores
    try:
        test_models.main(test_models.get_args_parser().parse_args([
            "--data-dir", str(root / "prepared"), "--output-dir", str(root), "--img-size", "32", "--epochs", "1",
            "--weights", "none", "--device", "cpu", "--num-workers", "0", "--datasets", "fusar",
            "--test-sets", "fusar", "--models", "cnn", "--seeds", "0"]))
        yield root
    finally:
        torch.set_num_threads(threads)


def _cams(root, exp, *extra, data_dir=None):
    """grad_cams.main on the module's grid, writing into `exp`; cheap settings (no ROAD, one chip per class)."""
    return grad_cams.main(grad_cams.get_args_parser().parse_args([
        "--output-dir", str(root), "--data-dir", str(data_dir or root / "prepared"), "--exp-dir", str(exp),
        "--per-class", "1", "--figure-per-class", "1", "--device", "cpu", "--road-chips", "0", *extra]))


def _tree(folder):
    """{relative path: bytes} of every file under `folder`, hidden ones included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- case 1
def test_a_model_trained_on_an_earlier_preparation_is_refused(grid, tmp_path):
    # the same set name prepared again (another split seed): other chips in test, some of them trained on
    data_dir = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",), seed=1)
    trained = runs.read_record(grid / CELL)["manifests"]["fusar"]
    now = sets.manifest_sha1(data_dir / "fusar")
    assert trained != now
    exp = tmp_path / "exp"
    with pytest.raises(SystemExit) as stop:
        _cams(grid, exp, data_dir=data_dir)
    message = str(stop.value.code)
    for part in (trained, now, "cnn on fusar", str(grid / CELL), str(data_dir / "fusar" / sets.MANIFEST),
                 "python test_models.py", "--force", f"--data-dir {grid / 'prepared'}", "--models / --datasets"):
        assert part in message, (part, message)
    assert not exp.exists()                      # nothing was explained, nothing written
    # against the set it was trained on, the same model is explained
    assert set(_cams(grid, exp)["scores"]["model"]) == {"cnn"}


# ---------------------------------------------------------------------------------------------- case 7
def _maps_on_disk(exp):
    return sorted(p.relative_to(exp).as_posix() for p in exp.glob("*/*/*.png"))


def _maps_in_scores(exp):
    scores = pd.read_csv(exp / grad_cams.CAM_SCORES, keep_default_na=False)
    return sorted(f"{r.set}/{r.model}/{r.true}_{kind}{r.index}.png" for r in scores.itertuples()
                  for kind in ("o", "hm"))


def test_a_rerun_replaces_what_the_earlier_run_wrote(grid, tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    _cams(grid, exp, "--per-class", "2")
    assert (exp / "fusar/cnn/Cargo_hm1.png").is_file()
    # outputs of earlier runs with other models and sets, and files of the user's own
    earlier = ["fusar/vgg/Cargo_o0.png", "fusar/vgg/Cargo_hm0.png", "opensarship/cnn/Tanker_hm3.png",
               "figures/cam_grid_opensarship.png"]
    mine = ["notes.txt", "fusar/cnn/my_notes.txt", "fusar/cnn/Cargo_best.png", "figures/poster.png",
            "fusar/mine/Cargo_o0.png"]
    # and the staging folder of a run killed before it could move its outputs in (its pid is gone)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    killed = f".grad_cams.tmp-{socket.gethostname()}-{dead}-0123abcd/fusar/cnn/Cargo_o0.png"
    for rel in earlier + mine + [killed]:
        (exp / rel).parent.mkdir(parents=True, exist_ok=True)
        (exp / rel).write_bytes(b"x")

    _cams(grid, exp)                                                    # one chip per class now
    assert not (exp / "fusar/cnn/Cargo_hm1.png").exists() and (exp / "fusar/cnn/Cargo_hm0.png").is_file()
    assert not any((exp / rel).exists() for rel in earlier)
    assert not (exp / "fusar/vgg").exists() and not (exp / "opensarship").exists()   # emptied folders go too
    assert all((exp / rel).read_bytes() == b"x" for rel in mine)
    on_disk = [p for p in _maps_on_disk(exp) if p not in mine]
    assert on_disk == _maps_in_scores(exp)                             # every map left is one cam_scores lists
    assert sorted(p.name for p in (exp / "figures").iterdir()) == ["cam_grid_fusar.png", "cam_on_ship.png",
                                                                  "poster.png"]
    assert not [p for p in exp.rglob(".*")]                  # no temporaries left behind, the killed run's neither

    # a run that fails part way leaves the earlier run's outputs exactly as they were
    before = _tree(exp)

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(grad_cams, "plot_on_ship", broken)
    with pytest.raises(OSError):
        _cams(grid, exp, "--per-class", "2")
    assert _tree(exp) == before
    monkeypatch.undo()
    # and so does a run that explains nothing
    assert not len(_cams(grid, exp, "--datasets", "opensarship")["scores"])
    assert _tree(exp) == before


# --------------------------------------------------------------------------------------------- case 17
def test_a_grid_of_one_model_is_explained_without_problems(grid, tmp_path, capsys):
    result = _cams(grid, tmp_path / "exp")
    out = capsys.readouterr().out
    assert result["problems"] == [], result["problems"]
    assert set(zip(result["scores"]["set"], result["scores"]["model"])) == {("fusar", "cnn")}
    assert "the grid holds fusar: cnn" in out                           # says what it explains, and why
    assert "opensarship: no model of the grid was trained on it" in out
    # models and sets named explicitly but missing from the grid are problems
    result = _cams(grid, tmp_path / "exp", "--models", "cnn,vgg")
    assert [p for p in result["problems"] if "vgg" in p] and len(result["problems"]) == 1
    result = _cams(grid, tmp_path / "exp", "--datasets", "fusar,opensarship")
    assert len(result["problems"]) == 1 and "opensarship" in result["problems"][0]


def _records(n_models, classes, per_class, size=16):
    """Figure inputs of n_models models, as grad_cams.explain_model returns them, every other chip wrong."""
    rng = np.random.default_rng(0)
    rows = [{"true": c, "pred": c if k % 2 else classes[0], "path": f"test/{c}/fusar_{c}_test{k:03d}_long.png",
             "on_ship_energy": 0.4} for c in classes for k in range(per_class)]
    chips = rng.integers(0, 256, (len(rows), size, size), dtype=np.uint8)
    maps = rng.random((len(rows), size, size)).astype(np.float32)
    names = ["cnn", "vgg", "resnet", "fine_vgg", "fine_resnet", "fine_vgg_gap", "model_7", "model_8", "model_9"]
    return {name: {"rows": rows, "chips": chips, "maps": maps, "regions": [None] * len(rows)}
            for name in names[:n_models]}


@pytest.mark.parametrize("n_models, classes, per_class", [
    (1, ("Cargo", "Fishing", "Tanker"), 1),          # two columns: the title is wider than the figure
    (1, ("Cargo",), 1),
    (3, ("Cargo", "Fishing"), 4),                    # a tall figure: the title fell onto the column heads
    (5, ("Cargo",), 1),                              # one row: the title touched the column heads
    (9, ("Passenger", "Dredger"), 1),                # many columns: a chip's label fell onto the chip above
])
def test_comparison_figure_keeps_title_and_column_heads_inside_and_apart(n_models, classes, per_class):
    fig = cam_figures.set_grid_figure("opensarship", _records(n_models, classes, per_class), per_class,
                                      "gradcamelementwise")
    fig.set_dpi(110)                                # as saved
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in [*fig.texts, *(ax.title for ax in fig.axes)] if t.get_text()]   # fig.texts: the suptitle
    assert any(t.get_text().startswith("gradcamelementwise on") for t in fig.texts)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    whole = fig.bbox
    for text, box in boxes:
        assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1, text
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (text, "over a chip")
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)


def test_figure_is_written_atomically(tmp_path):
    path = tmp_path / "cam_grid_fusar.png"
    cam_figures.plot_set_grid("fusar", _records(2, ("Cargo",), 1), 1, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == [path.name]


# ---------------------------------------------------------------------------------------------- case 6
def test_a_damaged_chip_stops_the_run_naming_the_file(grid, tmp_path):
    # the manifest is unchanged (the model's check passes), but a test chip on disk is truncated and no decoded
    # cache remains: the run stops naming that chip and the fix, exit status 1, no traceback, nothing written
    data_dir = tmp_path / "prepared"
    shutil.copytree(grid / "prepared", data_dir, ignore=shutil.ignore_patterns(".cache"))
    chip = sorted((data_dir / "fusar" / "test").rglob("*.png"))[0]
    chip.write_bytes(chip.read_bytes()[:40])
    exp = tmp_path / "exp"
    proc = subprocess.run([sys.executable, "grad_cams.py", "--output-dir", str(grid), "--data-dir", str(data_dir),
                           "--exp-dir", str(exp), "--per-class", "1", "--device", "cpu", "--road-chips", "0"],
                          cwd=Path(grad_cams.__file__).parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and str(chip) in proc.stderr and "dataset_prep.py --force" in proc.stderr
    assert not exp.exists() or not any(exp.rglob("*.csv"))
