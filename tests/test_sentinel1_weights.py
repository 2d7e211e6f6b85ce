"""--weights sentinel1: the SAR-pretrained ResNet50 (SSL4EO-S12 MoCo, as torchgeo distributes it) loads from the
torch cache like the ImageNet weights (from a file the test writes: the real file's keys and shapes), is refused
clearly when missing offline, maps a single calibrated band onto its two input channels as documented, and is
refused for inputs it means nothing on. Downloads fail at once (an unreachable proxy), as on an offline machine."""

import time

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from fixtures import manifest, offline_torch_cache, set_manifest_values, write_tiny_prepared

import pretrained
import test_models as tm
from models import Sentinel1Input, build_model, load_trained
from opensarship import CAL_DB_RANGE

torch.set_num_threads(1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return offline_torch_cache(tmp_path, monkeypatch)


def write_weights(cache):
    """A timm ResNet50 state dict as the SSL4EO-S12 file holds it: torchvision's names, conv1 (64, 2, 7, 7)."""
    net = torchvision.models.resnet50(weights=None)
    net.conv1 = torch.nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
    state = net.state_dict()
    state["conv1.weight"].fill_(0.01)
    state["layer4.2.bn3.running_var"].fill_(2.0)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, pretrained.weights_path(pretrained.SENTINEL1_WEIGHTS))
    return state


def test_the_weights_load_from_the_cache(cache):
    assert pretrained.weights_path(pretrained.SENTINEL1_WEIGHTS).name == "resnet50_sentinel1_all_moco-906e4356.pth"
    state = write_weights(cache)
    model = build_model("fine_resnet", 3, "sentinel1")
    assert isinstance(model.backbone.input, Sentinel1Input)
    assert model.backbone.conv1.weight.shape == (64, 2, 7, 7)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[2].bn3.running_var, torch.full((2048,), 2.0))
    assert model.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="sentinel1 exists for resnet and fine_resnet only, not vgg"):
        build_model("vgg", 3, "sentinel1")


def test_a_missing_file_offline_names_the_file_and_the_fix_within_seconds(cache):
    start = time.monotonic()
    with pytest.raises(pretrained.WeightsUnavailableError) as e:
        build_model("resnet", 3, "sentinel1")
    assert time.monotonic() - start < 15
    text = str(e.value)
    assert "SENTINEL1_ALL_MOCO" in text and str(pretrained.weights_path(pretrained.SENTINEL1_WEIGHTS)) in text
    assert "curl -L -o resnet50_sentinel1_all_moco-906e4356.pth" in text and "--weights imagenet or none" in text


def test_one_calibrated_band_feeds_both_channels_standardised_as_vv():
    low, high = CAL_DB_RANGE
    db = torch.tensor([-30.0, -12.59, 0.0, 15.0])
    x = ((db - low) / (high - low)).view(1, 1, 2, 2)
    out = Sentinel1Input()(x)
    assert out.shape == (1, 2, 2, 2) and torch.equal(out[:, 0], out[:, 1])
    want = ((db - pretrained.SENTINEL1_DB_MEAN[0]) / pretrained.SENTINEL1_DB_STD[0]).view(1, 2, 2)
    assert torch.allclose(out[:, 0], want, atol=1e-5)


def _cal_set(root):
    data = write_tiny_prepared(root, sets=("opensarship",))
    set_manifest_values(data / "opensarship", {r["path"]: {"product": "cal"} for r in manifest(data / "opensarship")})
    return data


def run(*flags):
    return tm.main(tm.get_args_parser().parse_args(
        ["--img-size", "32", "--epochs", "1", "--seeds", "0", "--device", "cpu", "--num-workers", "0",
         "--bootstrap", "0", "--weights", "sentinel1", *flags]))


def test_the_grid_refuses_what_the_weights_mean_nothing_on(cache, tmp_path):
    data = _cal_set(tmp_path / "cal")
    out = str(tmp_path / "grid")
    with pytest.raises(SystemExit, match="ResNet50 weights: cnn cannot take them; pass --models resnet,fine_resnet"):
        run("--data-dir", str(data), "--output-dir", out, "--models", "cnn")
    uint8 = write_tiny_prepared(tmp_path / "uint8", sets=("opensarship",))
    with pytest.raises(SystemExit, match="holds Patch_Uint8 chips: prepare OpenSARShip with python dataset_prep.py "
                                         "--product cal"):
        run("--data-dir", str(uint8), "--output-dir", out, "--models", "fine_resnet")
    with pytest.raises(SystemExit, match="not the clutter radiometry"):
        run("--data-dir", str(data), "--output-dir", out, "--models", "fine_resnet", "--inputs", "m10-clutter")


def test_cells_train_on_calibrated_chips_and_their_checkpoints_reload(cache, tmp_path):
    write_weights(cache)
    data = _cal_set(tmp_path / "cal")
    out = tmp_path / "grid"
    run("--data-dir", str(data), "--output-dir", str(out), "--models", "resnet,fine_resnet")
    for name in ("resnet", "fine_resnet"):
        cell = out / f"runs/opensarship/{name}/none/lr0.001/seed0"
        model, ckpt = load_trained(cell / "checkpoint.pt")  # resnet: saved whole, rebuilt with its 2-channel conv1
        assert ckpt["weights"] == "sentinel1" and model.backbone.conv1.weight.shape == (64, 2, 7, 7)
        saved = pd.read_csv(cell / "predictions_opensarship.csv")
        assert np.isfinite(saved.filter(like="prob_").to_numpy()).all()
