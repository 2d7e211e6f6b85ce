"""Tests of models.py: shapes, freezing, Grad-CAM layers, seeding, ImageNet weights and checkpoints.

    python -m pytest tests/test_architectures.py -q

Models are built with weights="none" except in the weights tests, which write their own weight files into a
temporary TORCH_HOME and never touch the network (a refused proxy or a hanging name lookup stands for it).
"""
import hashlib
import http.server
import socket
import threading
import time
import types

import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from fixtures import offline_torch_cache
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import models
import pretrained
from models import MODEL_NAMES, build_model, load_trained
from pretrained import WeightsUnavailableError

C = 3  # classes
FEATURES = {"cnn": 4096, "vgg": 512 * 7 * 7, "resnet": 2048, "fine_vgg": 512 * 7 * 7, "fine_resnet": 2048}
CAM_MAP_224 = {"cnn": 56, "vgg": 14, "resnet": 7, "fine_vgg": 14, "fine_resnet": 7}
VGG16_FEATURE_PARAMS = 14_714_688  # torchvision vgg16().features
RESNET50_TRUNK_PARAMS = 23_508_032  # torchvision resnet50() without fc
# conv weights + bias + BN weight and bias, per block
CNN_CONV_PARAMS = (9 * 64 + 64 + 2 * 64) + (64 * 9 * 128 + 128 + 2 * 128) + (128 * 9 * 256 + 256 + 2 * 256)
FROZEN = ("fine_vgg", "fine_resnet")


def head_params(n_features):
    return n_features * 4096 + 4096 + 4096 * C + C  # Linear(F, 4096) + Linear(4096, C)


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine more threads only wait for each other
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def built():
    """One eval-mode model per name, shared by the tests that only run forward passes."""
    torch.manual_seed(0)
    return {name: build_model(name, C, weights="none").eval() for name in MODEL_NAMES}


def test_registry_and_argument_errors():
    assert MODEL_NAMES == ("cnn", "vgg", "resnet", "fine_vgg", "fine_resnet")
    with pytest.raises(ValueError, match="cnn, vgg, resnet, fine_vgg, fine_resnet"):
        build_model("vgg19", C)
    with pytest.raises(ValueError, match="imagenet, none"):
        build_model("cnn", C, weights="random")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn", 1)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        build_model("fine_resnet", C, weights="none")(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_and_feature_shapes_at_small_sizes(built, name):
    model = built[name]
    torch.manual_seed(2)
    with torch.no_grad():
        x = torch.rand(2, 1, 32, 32)
        features = model.backbone(x)
        logits = model(x)
        assert features.shape == (2, FEATURES[name])
        assert logits.shape == (2, C)
        assert torch.isfinite(logits).all()
        assert torch.equal(model.head(features), logits)  # head(backbone(x)) is the model, bit for bit
        assert not torch.equal(logits[0], logits[1])  # the output depends on the image
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, C)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_224_output_and_cam_map(built, name):
    """At 224 px the target layer's map is the documented size: >= 7x7, never a pooled vector."""
    model = built[name]
    maps = []
    handle = model.cam_target_layer.register_forward_hook(lambda m, i, output: maps.append(output.shape))
    try:
        with torch.no_grad():
            logits = model(torch.rand(1, 1, 224, 224))
    finally:
        handle.remove()
    assert logits.shape == (1, C)
    assert len(maps) == 1 and len(maps[0]) == 4
    h, w = maps[0][2:]
    assert (h, w) == (CAM_MAP_224[name], CAM_MAP_224[name])
    assert h >= 7 and w >= 7


@pytest.mark.parametrize("name", FROZEN)
def test_gradients_reach_target_inside_frozen_backbone(built, name):
    """With only the input requiring grad (what Grad-CAM must arrange), the target layer's activations get
    non-zero gradients although no backbone parameter requires grad; no parameter gradient is kept."""
    model = built[name]
    captured = {}

    def hook(module, inputs, output):
        captured["map"] = output
        output.register_hook(lambda grad: captured.__setitem__("grad", grad))

    handle = model.cam_target_layer.register_forward_hook(hook)
    try:
        model(torch.rand(1, 1, 64, 64).requires_grad_(True))[0, 1].backward()
    finally:
        handle.remove()
    assert captured["grad"].shape == captured["map"].shape
    assert captured["grad"].abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", FROZEN)
def test_pytorch_grad_cam_on_frozen_backbone(built, name):
    """The library itself, called as grad_cams.py must call it: the input requires grad."""
    model = built[name]
    torch.manual_seed(1)
    x = torch.rand(2, 1, 64, 64).requires_grad_(True)
    with GradCAM(model=model, target_layers=[model.cam_target_layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(0), ClassifierOutputTarget(2)])
    assert maps.shape == (2, 64, 64)
    assert maps.std(axis=(1, 2)).min() > 0  # not uniform (a 1x1 target map would be)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match_freezing(built, name):
    model = built[name]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for p in model.head.parameters())
    assert head == head_params(FEATURES[name])
    backbone = {"cnn": CNN_CONV_PARAMS, "vgg": VGG16_FEATURE_PARAMS, "resnet": RESNET50_TRUNK_PARAMS,
                "fine_vgg": VGG16_FEATURE_PARAMS, "fine_resnet": RESNET50_TRUNK_PARAMS}[name]
    assert total == backbone + head
    assert model.frozen_backbone is (name in FROZEN)
    if name in FROZEN:
        assert trainable == head
        assert not any(p.requires_grad for p in model.backbone.parameters())
    else:
        assert trainable == total


@pytest.mark.parametrize("name", FROZEN)
def test_training_step_leaves_frozen_backbone_bit_identical(name):
    torch.manual_seed(0)
    model = build_model(name, C, weights="none")
    model.train()
    model.backbone.train()  # even asked directly, a frozen backbone stays in eval mode
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules())
    before_backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    before_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    if name == "fine_resnet":
        assert any(k.endswith("running_mean") for k in before_backbone)  # BN buffers are among the checks

    # a careless optimiser over every parameter: frozen ones get no gradient, so Adam skips them
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()

    after_backbone = model.backbone.state_dict()
    assert after_backbone.keys() == before_backbone.keys()
    assert all(torch.equal(before_backbone[k], after_backbone[k]) for k in before_backbone)
    after_head = model.head.state_dict()
    changed = [k for k in before_head if not torch.equal(before_head[k], after_head[k])]
    assert sorted(changed) == ["0.bias", "0.weight", "3.bias", "3.weight"]


def test_imagenet_input_normalisation():
    module = models.ImageNetInput()
    x = torch.tensor([0.485, 0.0, 1.0]).view(1, 1, 1, 3)
    out = module(x)
    assert out.shape == (1, 3, 1, 3)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert out[0, :, 0, 1].tolist() == pytest.approx([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    assert module.state_dict() == {}  # constants, not checkpoint state


# vgg is left out for time only (its 103 M-weight head takes seconds to initialise on a busy CPU); its
# backbone is built by the same code as fine_vgg's
@pytest.mark.parametrize("name", ["cnn", "resnet", "fine_vgg", "fine_resnet"])
def test_same_seed_same_model_and_no_shared_storage(built, name):
    torch.manual_seed(123)
    a = build_model(name, C, weights="none")
    torch.manual_seed(123)
    b = build_model(name, C, weights="none")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # fresh objects: no tensor shared with the twin nor with any other model built before
    pointers = {t.data_ptr() for t in sa.values() if t.numel()}
    assert not pointers & {t.data_ptr() for t in sb.values() if t.numel()}
    for other in built.values():
        assert not pointers & {t.data_ptr() for t in other.state_dict().values() if t.numel()}
    if name == "cnn":
        torch.manual_seed(124)
        c = build_model(name, C, weights="none")
        assert not torch.equal(c.state_dict()["head.0.weight"], sa["head.0.weight"])


def test_cam_target_is_not_duplicated_in_state_dict(built):
    keys = built["fine_resnet"].state_dict().keys()
    assert all(k.startswith(("backbone.", "head.")) for k in keys)
    assert built["fine_resnet"].cam_target_layer is built["fine_resnet"].backbone.layer4
    assert built["vgg"].cam_target_layer is built["vgg"].backbone.features[29]
    assert built["cnn"].cam_target_layer is built["cnn"].backbone.block3.relu


# ---------------------------------------------------------------------------------------------------------
# ImageNet weights from the torch cache

@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    checkpoints = offline_torch_cache(tmp_path, monkeypatch)
    assert pretrained.weights_path(pretrained.VGG_WEIGHTS).parent == checkpoints
    return checkpoints


def test_resnet_imagenet_weights_load_from_cache(torch_home):
    assert pretrained.weights_path(pretrained.RESNET_WEIGHTS).name == "resnet50-0676ba61.pth"
    state = torchvision.models.resnet50(weights=None).state_dict()  # the real file's keys and shapes
    state["conv1.weight"].fill_(0.125)
    state["layer4.2.bn3.running_mean"].fill_(0.5)
    torch_home.mkdir(parents=True)
    torch.save(state, pretrained.weights_path(pretrained.RESNET_WEIGHTS))

    model = build_model("fine_resnet", C)  # weights="imagenet" is the default
    assert torch.equal(model.backbone.conv1.weight, torch.full_like(model.backbone.conv1.weight, 0.125))
    assert torch.equal(model.backbone.layer4[2].bn3.running_mean, torch.full((2048,), 0.5))
    assert torch.equal(model.backbone.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])
    assert not model.backbone.conv1.weight.requires_grad


def test_vgg_imagenet_weights_load_from_cache(torch_home):
    assert pretrained.weights_path(pretrained.VGG_WEIGHTS).name == "vgg16-397923af.pth"
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["features.28.weight"].fill_(-0.25)
    # the real file also holds the 1000-class classifier, which the loader must ignore: its keys are here,
    # with tiny tensors instead of the 480 MB ones
    state.update({f"classifier.{i}.{p}": torch.zeros(1) for i in (0, 3, 6) for p in ("weight", "bias")})
    torch_home.mkdir(parents=True)
    torch.save(state, pretrained.weights_path(pretrained.VGG_WEIGHTS))

    model = build_model("fine_vgg", C, weights="imagenet")
    assert torch.equal(model.backbone.features[28].weight, torch.full((512, 512, 3, 3), -0.25))
    assert torch.equal(model.backbone.features[0].weight, state["features.0.weight"])


def test_missing_weights_offline_fail_fast_with_instructions(torch_home):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("fine_vgg", C, weights="imagenet")
    assert time.monotonic() - start < 10
    message = str(info.value)
    url = "https://download.pytorch.org/models/vgg16-397923af.pth"
    for part in ("vgg16-397923af.pth", str(torch_home), url, "curl -L -o", "IMAGENET1K_V1", "--weights none"):
        assert part in message
    assert not torch_home.exists() or not any(torch_home.iterdir())  # nothing half-written
    build_model("cnn", C, weights="imagenet")  # the cnn never needs weights


def test_hanging_name_lookup_times_out(torch_home, monkeypatch):
    """A machine whose DNS never answers: getaddrinfo ignores socket timeouts, the probe thread does not."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)
        raise socket.gaierror("test: lookup released")

    monkeypatch.setattr(pretrained, "CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var)
    start = time.monotonic()
    try:
        with pytest.raises(WeightsUnavailableError, match="resnet50-0676ba61.pth"):
            build_model("resnet", C)
        assert time.monotonic() - start < 5
    finally:
        release.set()


def test_download_into_cache_checks_hash(tmp_path, torch_home, monkeypatch):
    """The connected path, against a local HTTP server: the file lands in the cache, a corrupt one not."""
    # direct to the local server, whatever proxy urllib's global opener (used by torch.hub) has cached
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    served = tmp_path / "served"
    served.mkdir()
    payload = b"weights" * 1000
    good = f"tiny-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (served / good).write_bytes(payload)
    (served / "bad-00000000.pth").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        path = pretrained.fetch_weights(types.SimpleNamespace(url=base + good, name="TINY"))
        assert path == torch_home / good
        assert path.read_bytes() == payload
        with pytest.raises(WeightsUnavailableError, match="invalid hash"):
            pretrained.fetch_weights(types.SimpleNamespace(url=base + "bad-00000000.pth", name="BAD"))
        assert sorted(p.name for p in torch_home.iterdir()) == [good]
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------------------
# checkpoints

@pytest.mark.parametrize("prefix", ["", "module."])  # "module.": saved from a DistributedDataParallel wrapper
def test_load_trained_round_trip(tmp_path, prefix):
    name = "cnn"
    torch.manual_seed(5)
    model = build_model(name, C, weights="none")
    with torch.no_grad():  # move BN statistics and weights away from their initial values
        model.train()
        model(torch.rand(4, 1, 32, 32))
        model.head[3].bias.copy_(torch.tensor([1.0, -2.0, 3.0]))
    model.eval()
    path = tmp_path / "checkpoint.pt"
    classes = ["Cargo", "Fishing", "Tanker"]
    torch.save({"model": {prefix + k: v for k, v in model.state_dict().items()}, "optimizer": {}, "epoch": 3,
                "args": {"lr": 0.001}, "classes": classes, "model_name": name, "img_size": 32}, path)

    loaded, checkpoint = load_trained(path)
    assert checkpoint["classes"] == classes and checkpoint["epoch"] == 3
    assert not loaded.training
    assert loaded.head[3].bias.tolist() == [1.0, -2.0, 3.0]
    original, restored = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_trained_rejects_foreign_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="model_name"):
        load_trained(path)


def _trained_frozen(name, weights, seed=3):
    """A frozen model as a cell builds it (torch seeded right before build_model), its head moved."""
    torch.manual_seed(seed)
    model = build_model(name, C, weights=weights)
    with torch.no_grad():
        model.head[3].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return model.eval()


def test_frozen_checkpoint_is_slim_and_rebuilds_random_backbone_from_its_seed(tmp_path):
    model = _trained_frozen("fine_resnet", "none")
    ckpt = models.checkpoint(model, "fine_resnet", ["Cargo", "Fishing", "Tanker"], 32, "none", 3, {"epochs": 2})
    assert "model" not in ckpt and "optimizer" not in ckpt and ckpt["epoch"] == 2
    assert ckpt["backbone"]["seed"] == 3 and ckpt["backbone"]["weights"] == "none"
    params = {k for k, _ in model.backbone.named_parameters()}
    assert set(ckpt["backbone_buffers"]) == set(model.backbone.state_dict()) - params  # BN statistics
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt, path)
    whole = tmp_path / "whole.pt"
    torch.save({"model": model.state_dict()}, whole)
    assert path.stat().st_size < 0.3 * whole.stat().st_size  # the head (8.4 M weights) and BN buffers alone
    torch.manual_seed(123)  # loading must not depend on (or change) the global generator
    state = torch.random.get_rng_state()
    loaded, _ = load_trained(path)
    assert torch.equal(torch.random.get_rng_state(), state)
    original, restored = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(original[k], restored[k]) for k in original)

    ckpt["backbone"]["seed"] = 4  # another seed rebuilds another backbone: refused, not silently used
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="seed 4 is not the one this cell was trained with"):
        load_trained(path)


def test_frozen_checkpoint_rebuilds_imagenet_backbone_and_needs_its_file(torch_home, tmp_path):
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    torch_home.mkdir(parents=True)
    torch.save(state, pretrained.weights_path(pretrained.VGG_WEIGHTS))
    model = _trained_frozen("fine_vgg", "imagenet")
    path = tmp_path / "checkpoint.pt"
    torch.save(models.checkpoint(model, "fine_vgg", ["a", "b", "c"], 32, "imagenet", 3, {}), path)
    loaded, ckpt = load_trained(path)
    assert ckpt["backbone"]["seed"] is None
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())

    state["features.0.weight"].fill_(0.5)  # another weights file under the same name
    torch.save(state, pretrained.weights_path(pretrained.VGG_WEIGHTS))
    with pytest.raises(ValueError, match="imagenet weights file is not the one"):
        load_trained(path)
    pretrained.weights_path(pretrained.VGG_WEIGHTS).unlink()  # offline, file gone: the loader's own message
    with pytest.raises(WeightsUnavailableError, match="vgg16-397923af.pth"):
        load_trained(path)


def test_fine_vgg_is_the_study_vgg_frozen_and_the_global_pool_variant_is_named():
    study, gap, trained = (build_model(n, C, weights="none") for n in ("fine_vgg", "fine_vgg_gap", "vgg"))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert study.backbone(x).shape == (2, 512 * 7 * 7) == trained.backbone(x).shape  # freezing alone differs
        assert gap.backbone(x).shape == (2, 512)
    assert [type(m) for m in study.head] == [type(m) for m in trained.head]
    assert "fine_vgg_gap" in models.MODEL_CHOICES and "fine_vgg_gap" not in MODEL_NAMES
