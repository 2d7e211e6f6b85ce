"""--weights auto: ImageNet weights where the file is in the torch cache (or downloadable), random weights
otherwise, decided once per file and process; the record and the report keep what each model actually got. The
weights files are written by the tests (the real files' keys and shapes); downloads fail at once (an unreachable
proxy), as on an offline machine."""

import json

import pytest
import torch
import torchvision
from fixtures import offline_torch_cache, write_tiny_prepared

import pretrained
import report
import test_models as tm
from models import build_model

torch.set_num_threads(1)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "_AUTO", {})  # a fresh process's view
    return offline_torch_cache(tmp_path, monkeypatch)


def test_auto_without_the_file_is_random_weights_said_once(offline_cache, capsys):
    assert pretrained.resolve_weights("fine_resnet", "auto") == "none"
    assert pretrained.resolve_weights("resnet", "auto") == "none"  # the same file: no second probe, no second line
    out = capsys.readouterr().out
    assert out.count("--weights auto:") == 1 and "resnet50-0676ba61.pth" in out
    assert pretrained.resolve_weights("cnn", "auto") == "none"  # the cnn has no pretrained weights
    assert pretrained.resolve_weights("vgg", "none") == "none" and pretrained.resolve_weights("vgg", "imagenet") == \
        "imagenet"
    with pytest.raises(ValueError, match="unknown weights 'sar'"):
        pretrained.resolve_weights("vgg", "sar")


def test_auto_with_the_file_in_the_cache_loads_it(offline_cache):
    state = torchvision.models.resnet50(weights=None).state_dict()
    state["conv1.weight"].fill_(0.125)
    offline_cache.mkdir(parents=True)
    torch.save(state, pretrained.weights_path(pretrained.RESNET_WEIGHTS))
    assert pretrained.resolve_weights("fine_resnet", "auto") == "imagenet"
    model = build_model("fine_resnet", 3, "auto")
    assert torch.equal(model.backbone.conv1.weight, torch.full_like(model.backbone.conv1.weight, 0.125))


def test_a_grid_under_auto_records_the_weights_each_model_got(offline_cache, tmp_path):
    prepared = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",))
    out = tmp_path / "grid"
    tm.main(tm.get_args_parser().parse_args(
        ["--data-dir", str(prepared), "--output-dir", str(out), "--models", "cnn,fine_resnet", "--weights", "auto",
         "--img-size", "32", "--epochs", "1", "--seeds", "0", "--device", "cpu", "--num-workers", "0",
         "--bootstrap", "0"]))
    for model in ("cnn", "fine_resnet"):
        record = json.loads((out / f"runs/fusar/{model}/none/lr0.001/seed0/record.json").read_text())
        assert record["args"]["weights"] == "auto" and record["weights"] == "none"  # never the word auto
    report.main(report.get_args_parser().parse_args(["--output-dir", str(out), "--data-dir", str(prepared),
                                                     "--bootstrap", "20"]))
    assert "Weights the models started from" in (out / "report.md").read_text()
    assert "cnn none; fine_resnet none." in (out / "report.md").read_text()
