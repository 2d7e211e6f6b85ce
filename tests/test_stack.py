"""dataset_prep.py --pol stack end to end: the stacked set opensarship-stack (2-channel (co, cross) TIFFs, each in its
co chip's split) beside unchanged co sets; its pixels checked against the raw Patch/ and Patch_Cal files of the real
scenes; a stacked grid trained, reloaded, predicted and reported against its co twin; the refusals that keep stacked
and single-channel chips apart. One small synthetic raw copy, prepared co and stack once (module fixtures); one tiny
grid (cnn, 32 px, 1 epoch) of co and stacked cells shared by the grid, predict and report tests."""

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from fixtures import ZIPS, manifest, offline_torch_cache, real, small_synthetic_raw
from PIL import Image
from sklearn.metrics import f1_score
from test_sentinel1_weights import write_weights

import dataset_prep
import predict
import pretrained
import report
import runs
import sets
import split_files
import test_models as tm
from data import load_split, resize_whole
from models import ImageNetInput, Sentinel1Input, build_model, load_trained
from opensarship_pixels import CAL_DB_RANGE, cal_to_uint8
from stacking import twin_key

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
ROOT = Path(__file__).resolve().parents[1]
CO_SETS = ("fusar", "opensarship", "mixed")
STACK = "opensarship-stack"
SINGLE_POL = "single-polarisation scene: no cross channel to stack"
CELL_FLAGS = ["--models", "cnn", "--epochs", "1", "--img-size", "32", "--weights", "none", "--device", "cpu",
              "--num-workers", "0", "--bootstrap", "0", "--lr", "1e-5"]  # a small step: probabilities vary by chip


def prep(out, *extra, raw=None):
    """dataset_prep.py in this process: the synthetic raw copy `raw` (both datasets), or the flags alone."""
    named = ["--opensarship", raw / "opensarship", "--fusar", raw / "fusar"] if raw is not None else []
    argv = [str(a) for a in [*named, "--output-dir", out, *extra]]
    return dataset_prep.main(dataset_prep.get_args_parser().parse_args(argv))


def grid(data_dir, out, *flags):
    return tm.main(tm.get_args_parser().parse_args(["--data-dir", str(data_dir), "--output-dir", str(out),
                                                    *CELL_FLAGS, *map(str, flags)]))


def manifest_bytes(out, names):
    return {s: (Path(out) / s / sets.MANIFEST).read_bytes() for s in names}


def gray(path):
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img).copy()


def cross_of(co_pol):
    return co_pol[0] + ("h" if co_pol[0] == "v" else "v")


def cell_dir(out, train_set, seed=0):
    return runs.cell_dir(out, runs.Cell(train_set, "cnn", "none", "raw", 1e-5, seed))


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """{co, stack: output folder, split: the stacked run's --export-splits file, raw: the synthetic raw copy}: the
    same synthetic data (dual-pol GRD and a single-pol 1SSV scene) prepared with --pol co and --pol stack."""
    root = tmp_path_factory.mktemp("stack_prep")
    raw = small_synthetic_raw(root / "raw", 40)
    prep(root / "co", raw=raw)
    prep(root / "stack", "--pol", "stack", "--export-splits", root / "split.csv", raw=raw)
    return {"co": root / "co", "stack": root / "stack", "split": root / "split.csv", "raw": raw}


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """(grid folder, the stacked subprocess run): cnn cells on opensarship-stack (seed 0 by test_models.py as a
    script, seed 1 in this process) and on opensarship (seeds 0 and 1, tested on opensarship alone)."""
    out, data_dir = tmp_path_factory.mktemp("stack_grid"), prepared["stack"]
    script = subprocess.run(
        [sys.executable, "test_models.py", "--data-dir", str(data_dir), "--output-dir", str(out), "--datasets", STACK,
         *CELL_FLAGS, "--seeds", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    grid(data_dir, out, "--datasets", STACK, "--seeds", "0,1")
    grid(data_dir, out, "--datasets", "opensarship", "--test-sets", "opensarship", "--seeds", "0,1")
    return out, script


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    """{product: output folder} of the three real scenes prepared with --pol stack (classes Cargo, Tanker)."""
    root = tmp_path_factory.mktemp("stack_real")
    for product in ("uint8", "cal"):
        prep(root / product, "--opensarship", *ZIPS, "--classes", "Cargo,Tanker", "--pol", "stack",
             "--product", product)
    return {p: root / p for p in ("uint8", "cal")}


# ---------------------------------------------------------------------------------------------- preparation


def test_stack_adds_the_stacked_set_and_leaves_the_co_sets_byte_identical(prepared):
    co, stack = prepared["co"], prepared["stack"]
    assert sets.prepared_sets(co) == list(CO_SETS)
    assert sets.prepared_sets(stack) == [*CO_SETS, STACK]
    assert manifest_bytes(stack, CO_SETS) == manifest_bytes(co, CO_SETS)
    assert not any(r["path"].endswith(".tif") for r in manifest(stack / "mixed"))  # never part of mixed


def test_every_stacked_chip_is_its_co_twin_plus_the_cross_channel(prepared):
    co_rows = {twin_key(r["path"]): r for r in manifest(prepared["co"] / "opensarship")}
    rows = manifest(prepared["stack"] / STACK)
    assert len(rows) >= 20
    for row in rows:
        twin = co_rows[twin_key(row["path"])]
        path = prepared["stack"] / STACK / row["path"]
        arr = tifffile.imread(path)
        assert arr.shape == (int(row["chip_h"]), int(row["chip_w"]), 2) and arr.dtype == np.uint8, row["path"]
        assert hashlib.sha1(path.read_bytes()).hexdigest() == row["sha1"]
        assert np.array_equal(arr[..., 0], gray(prepared["co"] / "opensarship" / twin["path"])), row["path"]
        assert not np.array_equal(arr[..., 0], arr[..., 1])  # a real second channel, not a copy of the co one
        assert (row["group"], row["split"], row["class"], row["mmsi"]) == \
            (twin["group"], twin["split"], twin["class"], twin["mmsi"])
        assert row["pol"] in ("vv+vh", "hh+hv") and row["pol"] == f"{twin['pol']}+{cross_of(twin['pol'])}"
        assert row["path"] == f"{row['split']}/{row['class']}/{path.name}" and path.suffix == ".tif"
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for split in ("train", "test"):
        assert {r["class"] for r in rows if r["split"] == split} == {"Cargo", "Fishing", "Tanker"}


def test_single_pol_chips_are_the_stacked_sets_skipped_chips(prepared):
    co_rows = manifest(prepared["co"] / "opensarship")
    single = [r for r in co_rows if "_1SS" in r["scene"]]
    dual = [r for r in co_rows if "_1SD" in r["scene"]]
    assert single and dual and len(single) + len(dual) == len(co_rows)  # the fixture has a single-pol scene
    assert len(manifest(prepared["stack"] / STACK)) == len(dual)
    summary = sets.load_summary(prepared["stack"], STACK)
    assert summary["skipped"] == {SINGLE_POL: len(single)}
    assert sorted(item["detail"] for item in summary["skipped_items"]) == \
        sorted(f"co chip {Path(r['path']).name} not stacked" for r in single)
    assert all(item["dataset"] == STACK and item["reason"] == SINGLE_POL for item in summary["skipped_items"])
    assert sets.load_summary(prepared["stack"], "opensarship")["skipped"] == \
        sets.load_summary(prepared["co"], "opensarship")["skipped"]


def test_stack_with_rgb_is_refused_as_a_script(tmp_path):
    done = subprocess.run([sys.executable, "dataset_prep.py", "--synthetic", "--raw-dir", str(tmp_path / "raw"),
                           "--output-dir", str(tmp_path / "out"), "--pol", "stack", "--product", "rgb"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--pol stack needs chips with both channels on one scale" in done.stderr
    assert "use --product uint8 (from Patch/) or --product cal" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "raw" / "synthetic").exists()


def test_split_file_of_a_stacked_run_prepares_all_four_sets_again(prepared, tmp_path):
    with open(prepared["split"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == split_files.SPLIT_COLUMNS
    assert {r["dataset"] for r in rows} == {"fusar", "opensarship"}  # no opensarship-stack rows
    assert len([r for r in rows if r["dataset"] == "opensarship"]) == len(manifest(prepared["co"] / "opensarship"))
    prep(tmp_path / "again", "--pol", "stack", "--split-file", prepared["split"], raw=prepared["raw"])
    names = (*CO_SETS, STACK)
    assert manifest_bytes(tmp_path / "again", names) == manifest_bytes(prepared["stack"], names)


# ---------------------------------------------------------------------------------------------- the real scenes


def _real_patch(folder, row):
    """The bands of the raw file behind a real stacked chip (its Patch/ or Patch_Cal/ file), read from its zip."""
    m = re.fullmatch(r"opensarship_(?P<scene>S1\w+?)_x(?P<x>\d+)_y(?P<y>\d+)\.tif", Path(row["path"]).name)
    zip_path = next(z for z in ZIPS if z.stem == m["scene"])
    with zipfile.ZipFile(zip_path) as zf:
        member = next(n for n in zf.namelist() if n.endswith(f"{folder}/{row['class']}_x{m['x']}_y{m['y']}.tif")
                      and (n.count("/") == 1 or n.startswith(f"{m['scene']}/")))
        return tifffile.imread(io.BytesIO(zf.read(member))).astype(np.float64), m["scene"]


@real
def test_real_uint8_stack_keeps_the_patch_amplitude_ratio(real_sets):
    rows = manifest(real_sets["uint8"] / STACK)
    assert {r["scene"].split("_")[2] for r in rows} == {"GRDH", "SLC"} and {r["pol"] for r in rows} == {"vv+vh"}
    for row in rows:
        bands, scene = _real_patch("Patch", row)
        if "_SLC_" in scene:  # Re VH, Im VH, Re VV, Im VV
            assert bands.shape[-1] == 4
            cross, co = np.hypot(bands[..., 0], bands[..., 1]), np.hypot(bands[..., 2], bands[..., 3])
        else:  # amplitude VH, VV
            assert bands.shape[-1] == 2
            cross, co = np.abs(bands[..., 0]), np.abs(bands[..., 1])
        chip = tifffile.imread(real_sets["uint8"] / STACK / row["path"]).astype(np.float64)
        ch0, ch1 = chip[..., 0], chip[..., 1]
        assert ch0.max() == 255 and ch1.max() > 0, row["path"]
        # cross / co of the raw amplitudes, within the rounding of both channels (pixels clipped at 255 aside)
        ok = (co > 0) & (ch0 < 255) & (ch1 < 255)
        ratio = cross[ok] / co[ok]
        assert ok.mean() > 0.9 and np.all(np.abs(ch1[ok] - ch0[ok] * ratio) <= 0.5 + 0.5 * ratio + 1e-9), row["path"]


@real
def test_real_cal_stack_is_both_patch_cal_bands_in_db(real_sets):
    co_rows = {twin_key(r["path"]): r for r in manifest(real_sets["cal"] / "opensarship")}
    rows = manifest(real_sets["cal"] / STACK)
    assert len(rows) == len(co_rows) and {r["product"] for r in rows} == {"cal"}
    for row in rows:
        bands, _ = _real_patch("Patch_Cal", row)
        assert bands.shape[-1] == 2  # linear intensity VH, VV
        chip = tifffile.imread(real_sets["cal"] / STACK / row["path"])
        assert np.array_equal(chip[..., 0], cal_to_uint8(bands[..., 1])), row["path"]
        assert np.array_equal(chip[..., 1], cal_to_uint8(bands[..., 0])), row["path"]
        assert np.array_equal(chip[..., 0], gray(real_sets["cal"] / "opensarship" / co_rows[twin_key(row["path"])]
                                                 ["path"]))
    assert sets.load_summary(real_sets["cal"], STACK)["skipped"] == {}


@real
def test_real_uint8_stack_co_channel_is_the_patch_uint8_co_chip(real_sets):
    # opensarship_pixels.py: "The co channel is then the Patch_Uint8 co chip" (the co/stack comparison of report.py
    # rests on it: the stacked chip must differ from its co twin by the cross channel alone).
    co_rows = {twin_key(r["path"]): r for r in manifest(real_sets["uint8"] / "opensarship")}
    differ = {}
    for row in manifest(real_sets["uint8"] / STACK):
        ch0 = tifffile.imread(real_sets["uint8"] / STACK / row["path"])[..., 0].astype(int)
        co = gray(real_sets["uint8"] / "opensarship" / co_rows[twin_key(row["path"])]["path"]).astype(int)
        if not np.array_equal(ch0, co):
            differ[Path(row["path"]).stem.removeprefix("opensarship_S1A_IW_")] = int(np.abs(ch0 - co).max())
    assert not differ, f"{len(differ)} stacked chips' co channel differs from their co chip by up to (grey " \
                       f"levels): {differ}"


# ---------------------------------------------------------------------------------------------- training


def test_a_stacked_set_trains_evaluates_and_reloads_with_two_channels(prepared, trained):
    out, script = trained
    assert script.returncode == 0, script.stderr[-3000:]
    assert f"tested on {STACK}" in script.stdout
    cell = cell_dir(out, STACK)
    record = json.loads((cell / runs.RECORD).read_text())
    assert list(record["test_sets"]) == [STACK]
    assert (cell / f"predictions_{STACK}.csv").is_file()
    model, ckpt = load_trained(cell / "checkpoint.pt")
    assert ckpt["in_channels"] == 2 and model.in_channels == 2
    assert model.backbone.block1.conv.in_channels == 2
    with torch.no_grad():
        assert model(torch.rand(3, 2, 32, 32)).shape == (3, 3)
    arrays = load_split(prepared["stack"] / STACK, "test", 32, cache=False)
    rows = [r for r in manifest(prepared["stack"] / STACK) if r["split"] == "test"]
    assert arrays.images.shape == (len(rows), 2, 32, 32) and arrays.images.dtype == np.uint8
    assert arrays.paths == [r["path"] for r in rows]
    first = tifffile.imread(prepared["stack"] / STACK / rows[0]["path"])
    for c in (0, 1):  # each channel resized whole, as a single-channel chip is
        assert np.array_equal(arrays.images[0, c], resize_whole(first[..., c], 32))


def test_stacked_and_single_channel_sets_are_refused_together(prepared, tmp_path, capsys):
    data_dir = prepared["stack"]
    cases = [(["--datasets", STACK, "--test-sets", "fusar"], [f"{STACK} (2 channels) on fusar (1)"]),
             (["--datasets", f"opensarship,{STACK}"],
              ["the training sets opensarship, opensarship-stack", "opensarship: 1, opensarship-stack: 2"]),
             (["--datasets", STACK, "--inputs", "m10"], ["--inputs m10", f"{STACK} holds stacked (co, cross) chips",
                                                         "--inputs raw"])]
    for flags, wanted in cases:
        with pytest.raises(SystemExit) as stop:
            grid(data_dir, tmp_path / "grid", *flags)
        assert isinstance(stop.value.code, str), stop.value.code
        for text in wanted:
            assert text in stop.value.code, (flags, stop.value.code)
    assert not (tmp_path / "grid" / "runs").exists()
    # a default grid (no --datasets, no --test-sets) is the study's single-channel one
    train_sets, test_sets, _ = sets.grid_sets(data_dir, None, None)
    assert train_sets == list(CO_SETS) and test_sets == list(CO_SETS)


# ---------------------------------------------------------------------------------------------- models


def test_imagenet_input_maps_co_cross_to_rgb():
    x = torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    rgb = torch.stack([x[:, 0], x[:, 1], (x[:, 0] + x[:, 1]) / 2], 1)
    want = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    assert torch.allclose(ImageNetInput(2)(x), want, atol=1e-6)


@pytest.mark.parametrize("name", ["fine_vgg", "fine_resnet", "cnn"])
def test_two_channel_models_run_and_refuse_single_channel_batches(name):
    torch.manual_seed(0)
    model = build_model(name, 3, "none", in_channels=2).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 2, 32, 32)).shape == (2, 3)
        with pytest.raises(ValueError) as error:
            model(torch.rand(2, 1, 32, 32))
    text = str(error.value)
    assert "2-channel" in text and "(2, 1, 32, 32)" in text, text


def test_sentinel1_input_standardises_each_band_with_its_own_statistics(tmp_path, monkeypatch):
    low, high = CAL_DB_RANGE
    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    out = Sentinel1Input(2)(x)
    assert out.shape == (3, 2, 4, 4)
    for band in (0, 1):
        db = low + x[:, band] * (high - low)
        want = (db - pretrained.SENTINEL1_DB_MEAN[band]) / pretrained.SENTINEL1_DB_STD[band]
        assert torch.allclose(out[:, band], want, atol=1e-5)
    assert pretrained.SENTINEL1_DB_MEAN[0] != pretrained.SENTINEL1_DB_MEAN[1]  # the check tells the bands apart
    # the SAR weights load on the stacked input (a file with the real one's keys and shapes, offline)
    state = write_weights(offline_torch_cache(tmp_path, monkeypatch))
    model = build_model("fine_resnet", 3, "sentinel1", in_channels=2).eval()
    assert isinstance(model.backbone.input, Sentinel1Input) and model.backbone.input.in_channels == 2
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    with torch.no_grad():
        assert model(torch.rand(2, 2, 32, 32)).shape == (2, 3)


# ---------------------------------------------------------------------------------------------- predict, report


def test_predict_on_a_stacked_cell_equals_the_grid_and_refuses_single_channel_chips(prepared, trained, tmp_path):
    out, _ = trained
    cell = cell_dir(out, STACK)
    written = tmp_path / "stack.csv"
    predict.main(predict.get_args_parser().parse_args(
        ["--cell", str(cell), "--input", str(prepared["stack"] / STACK / sets.MANIFEST), "--split", "test",
         "--output", str(written), "--device", "cpu", "--batch-size", "4"]))
    ours = pd.read_csv(written, keep_default_na=False)
    theirs = pd.read_csv(cell / f"predictions_{STACK}.csv", keep_default_na=False)
    probs = [c for c in theirs if c.startswith("prob_")]
    assert list(ours["path"]) == list(theirs["path"]) and len(ours)
    assert list(ours["pred"]) == list(theirs["pred"]) and list(ours["true"]) == list(theirs["true"])
    np.testing.assert_allclose(ours[probs].to_numpy(), theirs[probs].to_numpy(), atol=1e-5, rtol=0)
    assert theirs[probs].std().max() > 1e-4  # the probabilities differ from chip to chip: the check means something

    folder = tmp_path / "pngs"
    folder.mkdir()
    for row in manifest(prepared["co"] / "opensarship")[:2]:
        shutil.copy(prepared["co"] / "opensarship" / row["path"], folder)
    with pytest.raises(SystemExit) as stop:
        predict.main(predict.get_args_parser().parse_args(
            ["--cell", str(cell), "--input", str(folder), "--output", str(tmp_path / "no.csv"), "--device", "cpu"]))
    assert isinstance(stop.value.code, str)
    assert f"the cell {cell} takes stacked (co, cross) chips" in stop.value.code
    assert "dataset_prep.py --pol stack" in stop.value.code and not (tmp_path / "no.csv").exists()


def test_report_pol_section_recomputed_with_scikit_learn(prepared, trained):
    out, _ = trained
    report.main(report.get_args_parser().parse_args(["--output-dir", str(out), "--data-dir", str(prepared["stack"]),
                                                     "--bootstrap", "20"]))
    text = (out / report.REPORT).read_text()
    assert "## Polarisation: co against stack" in text
    table = pd.read_csv(out / "report_pol.csv")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["co_set"], row["stack_set"], row["model"], row["imbalance"], int(row["n"])) == \
        ("opensarship", STACK, "cnn", "none", 2)
    scores = {"co": [], "stack": []}
    for seed in (0, 1):
        stack = pd.read_csv(cell_dir(out, STACK, seed) / f"predictions_{STACK}.csv", keep_default_na=False)
        co = pd.read_csv(cell_dir(out, "opensarship", seed) / "predictions_opensarship.csv", keep_default_na=False)
        co = co.set_index(co["path"].map(twin_key)).loc[stack["path"].map(twin_key)]  # the twins, in stack order
        assert list(co["true"]) == list(stack["true"])
        for side, frame in (("co", co), ("stack", stack)):
            labels = sorted(set(frame["true"]))
            scores[side].append(100 * f1_score(frame["true"], frame["pred"], labels=labels, average="macro",
                                               zero_division=0))
    co_test = [r for r in manifest(prepared["co"] / "opensarship") if r["split"] == "test"]
    assert int(row["chips"]) == len(stack) < len(co_test)  # single-pol test chips: the restriction matters here
    for side in ("co", "stack"):
        assert abs(row[f"{side}_f1_macro"] - round(float(np.mean(scores[side])), 2)) <= 0.005 + 1e-9, side
