"""grad_cams.py on a tiny trained grid: files, maps, chips, on-ship scores, frozen gradients, problems.

The module fixture trains the five models for one epoch at 48 px (every target map is at least 2x2 there:
ResNet layer4 2x2, VGG conv5_3 3x3, cnn 12x12; at 32 px ResNet's would be 1x1) on a tiny FUSAR-like set, and
the cnn alone on a tiny OpenSARShip-like set, then explains both sets. Which cell is explained (learning rate
chosen on validation, LEGACY cells of the earlier layout) is tested on hand-made cell folders. The centre prior,
all-zero maps, the correct/wrong split and faithfulness are checked on the same run (ROAD on one chip per set and
model), their definitions in tests/test_cam_scores.py.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from fixtures import write_tiny_prepared

import cam_cells
import cam_scores
import data
import grad_cams
import models
import ship_regions
import test_models
from sets import manifest_frame, manifest_sha1

PER_CLASS = 2
IMG_SIZE = 48  # 56 % of 64 px's pixels; every target map still at least 2x2 (module docstring)


def _train(root, datasets, model_names):
    args = test_models.get_args_parser().parse_args([
        "--data-dir", str(root / "prepared"), "--output-dir", str(root), "--img-size", str(IMG_SIZE),
        "--epochs", "1", "--weights", "none", "--device", "cpu", "--num-workers", "0",
        "--datasets", datasets, "--test-sets", datasets, "--models", ",".join(model_names), "--seeds", "0",
        "--bootstrap", "0"])  # grad_cams.py reads the cells, not scores.csv's intervals
    test_models.main(args)


def _cam_args(root, exp_dir=None, *extra):
    """grad_cams.py's arguments for the grid in `root`; exp_dir None: its default, <root>/Exp_images."""
    exp = [] if exp_dir is None else ["--exp-dir", str(exp_dir)]
    return grad_cams.get_args_parser().parse_args([
        "--output-dir", str(root), "--data-dir", str(root / "prepared"), *exp,
        "--per-class", str(PER_CLASS), "--figure-per-class", "1", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradcam_grid")
    write_tiny_prepared(root / "prepared", sets=("fusar", "opensarship"))
    _train(root, "fusar", models.MODEL_NAMES)
    _train(root, "opensarship", ["cnn"])
    result = grad_cams.main(_cam_args(root, None, "--road-chips", "1"))  # writes <root>/Exp_images
    return root, result


def test_files_for_every_set_model_and_class(grid):
    root, result = grid
    exp = root / "Exp_images"
    trained = {"fusar": models.MODEL_NAMES, "opensarship": ("cnn",)}
    scores = pd.read_csv(exp / "cam_scores.csv", keep_default_na=False)
    assert list(scores.columns[:9]) == ["set", "model", "path", "true", "pred", "on_ship_energy",
                                        "peak_on_ship", "ship_area_fraction", "region_source"]
    assert len(scores) == (5 + 1) * 3 * PER_CLASS
    for set_name, model_names in trained.items():
        split = data.load_split(root / "prepared" / set_name, "test", IMG_SIZE)
        for model_name in model_names:
            rows = scores[(scores["set"] == set_name) & (scores["model"] == model_name)]
            assert sorted(rows["true"].unique()) == ["Cargo", "Fishing", "Tanker"]
            for _, row in rows.iterrows():
                folder = exp / set_name / model_name
                chip = np.asarray(Image.open(folder / f"{row['true']}_o{row['index']}.png"))
                # the chip given to the model is exactly data.load_split's at the checkpoint's size
                np.testing.assert_array_equal(chip, split.images[split.paths.index(row["path"])])
                overlay = np.asarray(Image.open(folder / f"{row['true']}_hm{row['index']}.png"))
                assert overlay.shape == (IMG_SIZE, IMG_SIZE, 3)
            assert sorted(rows["index"]) == sorted(list(range(PER_CLASS)) * 3)
        assert (exp / "figures" / f"cam_grid_{set_name}.png").is_file()
    assert (exp / "figures" / "cam_on_ship.png").is_file()
    assert (scores["region_source"] == "mask").all()  # tiny chips carry exact masks
    energy = scores["on_ship_energy"].astype(float)
    assert ((energy >= 0) & (energy <= 1)).all()
    # same preprocessing as the grid: the predictions explained are the grid's own predictions
    assert (scores["agrees_with_grid"].astype(str) == "True").all()
    # by default each set's models are those the grid trained on it: opensarship's four others are no problem
    assert not [p for p in result["problems"] if "opensarship" in p]
    # the cell explained: imbalance none, the only learning rate, the smallest seed
    assert set(scores["cell"]) == {(root / f"runs/{s}/{m}/none/lr0.001/seed0").as_posix()
                                   for s, ms in trained.items() for m in ms}
    assert set(scores["cell_choice"]) == {"lr 0.001: the only rate"}


def test_maps_differ_between_chips_and_are_not_uniform(grid):
    _, result = grid
    for model_name in models.MODEL_NAMES:
        maps = result["maps"][("fusar", model_name)]
        assert maps.shape == (3 * PER_CLASS, IMG_SIZE, IMG_SIZE)
        assert (maps.reshape(len(maps), -1).std(axis=1) > 1e-3).all(), model_name
        for k in range(1, len(maps)):
            assert np.abs(maps[k] - maps[0]).max() > 1e-3, (model_name, k)


def test_same_chips_across_models_and_reruns(grid, tmp_path):
    root, result = grid
    scores = result["scores"]
    fusar = scores[scores["set"] == "fusar"]
    per_model = [list(g["path"]) for _, g in fusar.groupby("model")]
    assert all(p == per_model[0] for p in per_model)
    assert per_model[0] == result["selection"]["fusar"]
    rerun = grad_cams.main(_cam_args(root, tmp_path / "again", "--models", "cnn", "--datasets", "fusar",
                                     "--road-chips", "0"))
    assert rerun["selection"]["fusar"] == result["selection"]["fusar"]
    for name in ("Cargo_o0.png", "Tanker_o1.png"):
        assert (tmp_path / "again/fusar/cnn" / name).read_bytes() == \
            (root / "Exp_images/fusar/cnn" / name).read_bytes()
    # the selection depends on the manifest's content only, not on its row order
    manifest = manifest_frame(root / "prepared" / "fusar")
    shuffled = manifest.sample(frac=1.0, random_state=3)
    a, _ = grad_cams.select_chips(manifest, PER_CLASS, seed=0)
    b, _ = grad_cams.select_chips(shuffled, PER_CLASS, seed=0)
    def paths(selection):
        return {cls: [r["path"] for r in rows] for cls, rows in selection.items()}

    assert paths(a) == paths(b)
    c, _ = grad_cams.select_chips(manifest, PER_CLASS, seed=1)
    assert [r["path"] for r in c["Cargo"]] != [r["path"] for r in a["Cargo"]]  # 6 Cargo chips: seed matters


def test_on_ship_scores():
    region = np.zeros((8, 8), bool)
    region[2:4, 1:6] = True                                    # 10 of 64 pixels
    energy, peak, area = ship_regions.on_ship_scores(region.astype(float), region)
    assert (energy, peak, area) == (1.0, True, 10 / 64)
    energy, _, area = ship_regions.on_ship_scores(np.full((8, 8), 0.3), region)
    assert energy == pytest.approx(10 / 64) and area == 10 / 64
    cam = np.zeros((8, 8))
    cam[0, 0], cam[2, 2] = 1.0, 3.0                            # 3 of 4 units on the ship, peak on it
    assert ship_regions.on_ship_scores(cam, region)[:2] == (0.75, True)
    cam[0, 0] = 5.0
    assert ship_regions.on_ship_scores(cam, region)[:2] == (3 / 8, False)
    energy, peak, area = ship_regions.on_ship_scores(np.zeros((8, 8)), region)
    assert np.isnan(energy) and np.isnan(peak) and area == 10 / 64


def test_regions_from_metadata_cover_the_exact_masks(grid):
    root, _ = grid
    for set_name, source in (("opensarship", "head_tail"), ("fusar", "centre_disc")):
        set_dir = root / "prepared" / set_name
        for _, row in manifest_frame(set_dir).iterrows():
            exact, exact_source = ship_regions.native_region(row, set_dir)
            assert exact_source == "mask"
            estimate, got = ship_regions.native_region(row.drop("mask"), set_dir)
            assert got == source
            inter = (exact & estimate).sum()
            assert inter / exact.sum() >= 0.95, row["path"]   # the ship lies inside the estimated region
            assert inter / estimate.sum() >= (0.45 if source == "head_tail" else 0.2), row["path"]
    # anisotropic SLC-like pixels (2.5 m rows, 10 m columns): a 100 m ship along the rows, 20 m wide
    region = ship_regions.segment_region((80, 40), (20, 20), (60, 20), 20.0, (2.5, 10.0))
    assert region[40].sum() == 3 and region[:, 20].sum() == 49  # +-10 m: 3 columns, rows 16..64
    disc = ship_regions.disc_region((41, 41), 40.0, (1.0, 2.0))
    assert disc[20].sum() == 21 and disc[:, 20].sum() == 41    # radius 20 m: +-10 columns, +-20 rows
    small = ship_regions.resize_region(np.pad(np.ones((1, 1), bool), 20), 8)
    assert small.sum() == 1                                     # a ship below half a pixel keeps one pixel


def _grad_recorder(grads):
    """Forward hook that appends the gradient reaching the hooked layer's output to `grads`."""

    def hook(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda g: grads.append(g.detach().clone()))

    return hook


def test_frozen_models_get_gradients_at_their_target_layer(grid):
    root, _ = grid
    split = data.load_split(root / "prepared" / "fusar", "test", IMG_SIZE)
    for name in ("fine_vgg", "fine_resnet"):
        # freshly built: freezing is the architecture's; loading the trained checkpoints again costs seconds
        torch.manual_seed(0)
        model = models.build_model(name, 3, weights="none")
        assert model.frozen_backbone and not any(p.requires_grad for p in model.backbone.parameters())
        grads = []
        handle = model.cam_target_layer.register_forward_hook(_grad_recorder(grads))
        try:
            maps, _, _ = grad_cams.compute_cams(model, split.images[:2], "gradcam", "cpu")
        finally:
            handle.remove()
        assert grads and all(g.abs().sum() > 0 for g in grads), name
        assert (maps.reshape(2, -1).max(axis=1) > 0).all(), name


def test_missing_checkpoint_grid_set_and_chips(grid, tmp_path, capsys):
    root, _ = grid
    grid_dir = tmp_path / "grid"
    cnn = grid_dir / "runs/fusar/cnn/none/lr0.001"
    cnn.mkdir(parents=True)
    os.symlink(root / "runs/fusar/cnn/none/lr0.001/seed0", cnn / "seed0")        # a finished cell
    record = json.loads((root / "runs/fusar/cnn/none/lr0.001/seed0/record.json").read_text())
    vgg = grid_dir / "runs/fusar/vgg/none/lr0.001/seed0"
    vgg.mkdir(parents=True)
    (vgg / "record.json").write_text(json.dumps({**record, "model": "vgg"}))  # finished, its checkpoint gone
    resnet = grid_dir / "runs/fusar/resnet/none/lr0.001/seed0"
    resnet.mkdir(parents=True)
    (resnet / "record.json").write_text(json.dumps({**record, "model": "resnet"}))
    (resnet / "checkpoint.pt").write_bytes(b"truncated")                 # a copy that was interrupted
    args = grad_cams.get_args_parser().parse_args([
        "--output-dir", str(grid_dir), "--data-dir", str(root / "prepared"), "--exp-dir", str(tmp_path / "exp"),
        "--datasets", "fusar,nowhere", "--models", "cnn,vgg,resnet,fine_vgg", "--per-class", "4",
        "--device", "cpu", "--road-chips", "0"])
    result = grad_cams.main(args)
    out = capsys.readouterr().out
    assert "checkpoint.pt is missing" in out
    assert "resnet on fusar: cannot read" in out
    assert "no grid records for model fine_vgg" in out
    assert "no prepared set 'nowhere'" in out
    assert "class Fishing has only 3 test chips (asked 4)" in out
    assert set(result["scores"]["model"]) == {"cnn"}                    # the rest is done
    assert (result["scores"]["true"].value_counts().to_dict()) == {"Cargo": 4, "Fishing": 3, "Tanker": 3}
    assert (tmp_path / "exp/fusar/cnn/Fishing_hm2.png").is_file()
    assert not (tmp_path / "exp/fusar/cnn/Fishing_hm3.png").exists()

    empty = grad_cams.main(grad_cams.get_args_parser().parse_args([
        "--output-dir", str(tmp_path / "no_grid"), "--data-dir", str(root / "prepared"),
        "--exp-dir", str(tmp_path / "exp2"), "--device", "cpu"]))
    assert "no grid under" in capsys.readouterr().out
    assert len(empty["scores"]) == 0 and not (tmp_path / "exp2").exists()


def test_command_line_and_stale_temporaries(tmp_path, capsys):
    help_text = grad_cams.get_args_parser().format_help()
    assert "--run-dir" not in help_text and "(default: None)" not in help_text
    assert "(default: <output-dir>/Exp_images)" in " ".join(help_text.split())
    args = grad_cams.get_args_parser().parse_args(["--output-dir", str(tmp_path), "--data-dir",
                                                   str(tmp_path / "prepared"), "--device", "cpu"])
    assert grad_cams.exp_dir_of(args) == tmp_path / "Exp_images"
    # a chip PNG left half-written by a killed run of this host is removed at the start (runs.clean_stale)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    stale = tmp_path / "Exp_images/fusar/cnn" / f".Cargo_o0.png.tmp-{socket.gethostname()}-{dead}-0123abcd"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a png")
    result = grad_cams.main(args)
    assert not stale.exists() and len(result["scores"]) == 0
    assert "no prepared sets under" in capsys.readouterr().out


def _cell(root, path, val=None, checkpoint=True):
    """A finished cell folder under root/runs/ with a record.json holding only its validation score."""
    folder = root / "runs" / path
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"protocol": {"val_f1_macro": val}}))
    if checkpoint:
        (folder / "checkpoint.pt").write_bytes(b"")
    return folder


def test_cell_choice_learning_rate_and_legacy(tmp_path):
    find = cam_cells.find_cell
    # validation: the highest mean over seeds (lr0.01: 60 and 80 = 70 beats lr0.001: 65 and 66), smallest seed
    _cell(tmp_path, "fusar/cnn/none/lr0.001/seed0", 65.0)
    _cell(tmp_path, "fusar/cnn/none/lr0.001/seed1", 66.0)
    _cell(tmp_path, "fusar/cnn/none/lr0.01/seed3", 60.0)
    best = _cell(tmp_path, "fusar/cnn/none/lr0.01/seed2", 80.0)
    cell, problem, how = find(tmp_path, "fusar", "cnn", "none", None)
    assert (cell, problem) == (best, None) and how == "lr 0.01: chosen on validation among 0.001, 0.01"
    assert find(tmp_path, "fusar", "cnn", "none", 1, lr=0.001)[0] == tmp_path / "runs/fusar/cnn/none/lr0.001/seed1"
    assert "no cell with lr 0.1 (found: 0.001, 0.01); pass --lr" in find(tmp_path, "fusar", "cnn", "none", None,
                                                                           lr=0.1)[1]
    assert "no finished cell for seed 0 (found seeds [2, 3])" in find(tmp_path, "fusar", "cnn", "none", 0,
                                                                      lr=0.01)[1]
    # a tie on validation: the smaller rate
    _cell(tmp_path, "fusar/vgg/none/lr0.001/seed0", 70.0)
    _cell(tmp_path, "fusar/vgg/none/lr0.0003/seed0", 70.0)
    assert find(tmp_path, "fusar", "vgg", "none", None)[0] == tmp_path / "runs/fusar/vgg/none/lr0.0003/seed0"
    # several rates, no validation: the smallest, said so
    _cell(tmp_path, "fusar/resnet/none/lr0.001/seed0")
    small = _cell(tmp_path, "fusar/resnet/none/lr0.0001/seed0")
    cell, _, how = find(tmp_path, "fusar", "resnet", "none", None)
    assert cell == small and "the smallest of 0.0001, 0.001; none is chosen without validation" in how
    # LEGACY cells (no lr level) only where they are all there is
    legacy = _cell(tmp_path, "mixed/cnn/none/seed0")
    cell, _, how = find(tmp_path, "mixed", "cnn", "none", None)
    assert cell == legacy and how.startswith("earlier record (no learning-rate level)")
    new = _cell(tmp_path, "mixed/cnn/none/lr0.001/seed1")
    assert find(tmp_path, "mixed", "cnn", "none", None)[:2] == (new, None)
    # an unfinished rate folder (no record.json) is not a candidate; a missing checkpoint is reported
    (tmp_path / "runs/mixed/cnn/none/lr0.1/.seed0.tmp-host-1-0123abcd").mkdir(parents=True)
    _cell(tmp_path, "opensarship/cnn/none/lr0.001/seed0", checkpoint=False)
    assert "checkpoint.pt is missing" in find(tmp_path, "opensarship", "cnn", "none", None)[1]
    assert find(tmp_path, "mixed", "cnn", "none", None)[0] == new


def test_prior_zero_maps_outcomes_and_faithfulness_outputs(grid):
    root, result = grid
    exp = root / "Exp_images"
    scores = pd.read_csv(exp / "cam_scores.csv")
    assert list(scores.columns) == grad_cams.SCORE_COLUMNS
    assert list(scores.columns[13:]) == cam_scores.CHIP_COLUMNS          # the new columns follow the old ones
    for (set_name, model_name), g in scores.groupby(["set", "model"]):
        maps = result["maps"][(set_name, model_name)]
        assert g["zero_map"].tolist() == [not m.max() > 0 for m in maps]
        assert g["prior_sigma"].nunique() == 1                           # one prior per set and model
    assert (scores["correct"] == (scores["true"] == scores["pred"])).all()
    np.testing.assert_allclose(scores["lift_uniform"], scores["on_ship_energy"] / scores["ship_area_fraction"])
    np.testing.assert_allclose(scores["lift_prior"], scores["on_ship_energy"] / scores["prior_energy"])
    assert scores["conf_change"].between(-1, 1).all() and scores["conf_change_prior"].between(-1, 1).all()
    assert scores["region_exact"].all() and scores["region_to_hull"].between(0.5, 1.5).all()   # exact masks

    summary = pd.read_csv(exp / "cam_summary.csv")
    assert (summary.groupby(["set", "model"])["outcome"].apply(tuple) == ("all", "correct", "wrong")).all()
    every = summary[summary["outcome"] == "all"].set_index(["set", "model"])
    split = summary[summary["outcome"] != "all"].groupby(["set", "model"])[["n", "n_zero"]].sum()
    assert (every[["n", "n_zero"]] == split.loc[every.index]).all().all()
    for (set_name, model_name), g in scores.groupby(["set", "model"]):
        row = every.loc[(set_name, model_name)]
        assert row["n"] == row["n_scored"] == len(g) and row["n_zero"] == g["zero_map"].sum()
        # `lift` keeps its meaning: mean on-ship energy / mean area (all-zero maps now count as uniform maps)
        assert row["lift"] == pytest.approx(g["on_ship_energy"].mean() / g["ship_area_fraction"].mean())
        assert row["lift_prior"] == pytest.approx(g["on_ship_energy"].mean() / g["prior_energy"].mean())
        assert not row["approximate"] and row["map_scaling"] == "after_minmax"
        assert row["cam_s_per_chip"] > 0 and row["conf_s_per_chip"] > 0

    road = pd.read_csv(exp / "road_scores.csv")
    assert list(road.columns) == cam_scores.ROAD_COLUMNS
    assert len(road) == 6 * 1 * 2                                # 6 (set, model) pairs, 1 chip, map and prior
    assert road[road["set"] == "fusar"]["path"].nunique() == 1   # the same chip for every model of a set
    assert (road["img_size"] == IMG_SIZE).all() and (road.loc[~road["zero_map"], "seconds"] > 0).all()
    assert len(result["road"]) == len(road)


def test_fusar_regions_without_masks_are_marked_approximate(grid, tmp_path):
    root, _ = grid
    data_dir = tmp_path / "prepared"
    shutil.copytree(root / "prepared" / "fusar", data_dir / "fusar")
    manifest = pd.read_csv(data_dir / "fusar/manifest.csv", dtype=str, keep_default_na=False)
    manifest.assign(mask="").to_csv(data_dir / "fusar/manifest.csv", index=False, lineterminator="\n")
    # the cnn's cell, recorded as trained on this copy (masks do not enter training): grad_cams.py refuses a model
    # whose record names another manifest than the set's (cam_cells.check_manifests)
    cell = tmp_path / "grid/runs/fusar/cnn/none/lr0.001/seed0"
    shutil.copytree(root / "runs/fusar/cnn/none/lr0.001/seed0", cell)
    record = json.loads((cell / "record.json").read_text())
    record["manifests"]["fusar"] = manifest_sha1(data_dir / "fusar")
    (cell / "record.json").write_text(json.dumps(record))
    result = grad_cams.main(grad_cams.get_args_parser().parse_args([
        "--output-dir", str(tmp_path / "grid"), "--data-dir", str(data_dir), "--exp-dir", str(tmp_path / "exp"),
        "--models", "cnn", "--per-class", str(PER_CLASS), "--device", "cpu", "--road-chips", "0"]))
    scores, summary = result["scores"], result["summary"]
    assert (scores["region_source"] == "centre_disc").all() and not scores["region_exact"].any()
    assert summary["approximate"].all()
    # the disc of diameter sqrt(L^2 + W^2) against the hull L x W: pi/4 (L^2 + W^2) / (L W), 2 to 3.3 times its
    # area for these stubby ships (length / width 2 to 4), about 5 for real ones (6 to 7)
    ships = manifest.set_index("path").loc[scores["path"]]
    length, width = ships["ship_length_m"].astype(float), ships["ship_width_m"].astype(float)
    np.testing.assert_allclose(scores["region_to_hull"], np.pi / 4 * (length ** 2 + width ** 2) / (length * width),
                               rtol=0.15)
    assert summary.loc[summary["outcome"] == "all", "region_to_hull"].iloc[0] > 2
    assert len(result["road"]) == 0 and (tmp_path / "exp/road_scores.csv").is_file()
