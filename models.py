"""The five classifiers of the study, built fresh by name.

    python models.py                              # table of the five models at 224 px, offline
    python models.py --img-size 64 --device cuda  # the same table at another size / on a GPU
    python models.py --weights imagenet           # also fetches the ImageNet weights into the torch
                                                  # cache (once, on a connected machine)

    from models import MODEL_NAMES, build_model, load_trained
    model = build_model("fine_vgg", num_classes=3)  # a fresh model on every call
    logits = model(x)                               # x: (B, 1, H, W) float in [0, 1], H, W >= 32
    stacked = build_model("cnn", 3, in_channels=2)  # for 2-channel (co, cross) chips: (B, 2, H, W)
    model, ckpt = load_trained("runs/.../checkpoint.pt")   # what test_models.py saved (checkpoint())

Every model is `Classifier(backbone, head)`: the backbone maps a (B, C, H, W) batch in [0, 1] to flat
features (B, F), the head maps those to logits, and `model(x) == model.head(model.backbone(x))`. C is the
chips' channel count, `in_channels`: 1, or 2 for stacked dual-pol chips (co, cross; dataset_prep.py --pol stack),
kept in the checkpoint. The cnn's first convolution takes C channels. Models with an ImageNet backbone make RGB
and apply the ImageNet mean/std themselves (`ImageNetInput`, first module of their backbone), also when built with
weights="none", so a checkpoint always loads into the same architecture: one channel is replicated to R, G and B;
two channels map to R = co, G = cross, B = their mean (each an 8-bit amplitude or dB image, so B is the mean
brightness; the weights' first convolution and every later layer are kept whole, nothing is averaged or re-scaled).
Every head is the study's: Linear(F, 4096), ReLU, Dropout(0.5),
Linear(4096, classes).

| name        | backbone                                                   | F     | Grad-CAM target      |
|-------------|------------------------------------------------------------|-------|----------------------|
| cnn         | 3 x [conv3x3, BN, ReLU, maxpool 2] (64/128/256), pool 4x4  | 4096  | backbone.block3.relu |
| vgg         | VGG16 features, ImageNet, trained; average pool to 7x7     | 25088 | backbone.features.29 |
| resnet      | ResNet50 trunk, ImageNet, trained; global average pool     | 2048  | backbone.layer4      |
| fine_vgg    | VGG16 features, ImageNet, frozen; average pool to 7x7      | 25088 | backbone.features.29 |
| fine_resnet | ResNet50 trunk, ImageNet, frozen; global average pool      | 2048  | backbone.layer4      |

Choices and why:
- cnn: the study's network without its defect 7 (docs/reference-study.md: a first linear layer 256*28*28 ->
  4096, 822 M weights, that only works at 224 px). An adaptive average pool to 4x4 keeps the coarse layout of
  the ship (length, orientation) in 4096 features at any input size; at 32 px it is the identity. Random init
  always.
- vgg keeps the study's 7x7 average pool and head (25088 -> 4096): everything trains, nothing is cached.
- fine_vgg is the study's frozen VGG: the same 7x7 pool and head as vgg, so "retrained against frozen" differs
  in freezing alone (its 25088 features are cached in fp16, 49 KB a view of a chip). The variant fine_vgg_gap
  (not in MODEL_NAMES: name it with --models) pools globally to 512 features, the ResNet design, with a 2.1 M
  weight head instead of 103 M; the published comparison (report.py) uses fine_vgg.
- ResNet50 uses ResNet50_Weights.IMAGENET1K_V1 (76.1 % top-1): the weights `resnet50(pretrained=True)`
  gave the study, from the classic recipe. V2 (80.9 %) comes from a heavy-augmentation recipe, i.e. other
  features than the study's. VGG16 has only IMAGENET1K_V1.
- Frozen backbones have requires_grad False and stay in eval mode (`FrozenBackbone.train` ignores its
  argument), so ResNet's batch-norm statistics never move (the study's defect 6). Grad-CAM still gets
  gradients at their target layer when the input requires grad; pytorch-grad-cam's GradCAM does NOT set
  that by default (compute_input_gradient=False), so callers pass `x.requires_grad_(True)`.
- Grad-CAM target: the activation of the last convolution whose map is at least 7x7 at 224 px (cnn 56x56,
  VGG 14x14, ResNet 7x7), never the final pooling (a 1x1 map gives uniform heat maps: defect 11).
- ImageNet weights come through torchvision's weights API and cache (pretrained.py):
  torch.hub.get_dir()/checkpoints/<file name of the weights URL> ($TORCH_HOME/hub/checkpoints, by default
  ~/.cache/torch/hub/checkpoints). A missing file is downloaded when the server answers within a few
  seconds; otherwise WeightsUnavailableError says which file to put where, or to use --weights none.
  --weights auto takes them where they are at hand and random weights otherwise (pretrained.resolve_weights).
"""
import argparse
import hashlib
import pickle
import statistics
import time
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from cli import HelpFormatter, add_shared, comma_list, int_at_least, run_main
from engine import resolve_device
from opensarship import CAL_DB_RANGE
from pretrained import (RESNET_WEIGHTS, SENTINEL1_DB_MEAN, SENTINEL1_DB_STD, SENTINEL1_WEIGHTS, VGG_WEIGHTS,
                        WEIGHT_CHOICES, WeightsUnavailableError, imagenet_state_dict, resolve_weights,
                        sentinel1_state_dict, weights_path)

MODEL_NAMES = ("cnn", "vgg", "resnet", "fine_vgg", "fine_resnet")  # the study's five, the default grid
MODEL_CHOICES = (*MODEL_NAMES, "fine_vgg_gap")  # and named variants
HEAD_HIDDEN = 4096  # the study's head width
HEAD_DROPOUT = 0.5  # the study's nn.Dropout() default


class CheckpointError(ValueError):
    """A checkpoint.pt that is missing, cannot be read, or is not one of this project's; the message names it."""


# ----------------------------------------------------------------------------------------------------------
# building blocks

class ImageNetInput(nn.Module):
    """(B, C, H, W) in [0, 1] -> (B, 3, H, W) normalised as the ImageNet weights expect. C = 1: the channel
    replicated; C = 2 (co, cross): R = co, G = cross, B = (co + cross) / 2."""

    def __init__(self, in_channels=1):
        super().__init__()
        if in_channels not in (1, 2):
            raise ValueError(f"ImageNet input takes 1 or 2 channels, not {in_channels}")
        self.in_channels = in_channels
        # non-persistent: constants, not state, so checkpoints hold only learned values and BN statistics
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        _check_batch(x, self.in_channels)
        rgb = x.expand(-1, 3, -1, -1) if self.in_channels == 1 else torch.cat([x, x.mean(1, keepdim=True)], 1)
        return (rgb - self.mean) / self.std  # (B, 3, H, W)


def _check_batch(x, in_channels):
    if x.dim() != 4 or x.shape[1] != in_channels:
        what = "single-channel" if in_channels == 1 else f"{in_channels}-channel (co, cross)"
        raise ValueError(f"expected a {what} batch (B, {in_channels}, H, W) in [0, 1], got shape {tuple(x.shape)}: "
                         "the model was built for chips of another channel count")


class FrozenBackbone(nn.Sequential):
    """A Sequential whose parameters never train and which stays in eval mode whatever train() is asked."""

    def __init__(self, modules: "OrderedDict[str, nn.Module]"):
        super().__init__(modules)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True):
        # model.train() reaches here through nn.Module.train's recursion: ignoring `mode` keeps batch-norm
        # statistics fixed, which is what "frozen" means for ResNet (the study's code let them drift)
        return super().train(False)


class Classifier(nn.Module):
    """backbone: (B, C, H, W) -> (B, F), C = in_channels; head: (B, F) -> (B, classes)."""

    def __init__(self, backbone: nn.Sequential, head: nn.Module, cam_target_name: str, in_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels  # the chips' channels (checkpoint keeps it)
        self.backbone = backbone
        self.head = head
        # stored as a name, not a module attribute: a second reference would be registered as a submodule and
        # duplicate its parameters in the state_dict
        self.cam_target_name = cam_target_name
        self.frozen_backbone = isinstance(backbone, FrozenBackbone)
        self.get_submodule(cam_target_name)  # raises now, not in Grad-CAM, if the name is wrong

    @property
    def cam_target_layer(self) -> nn.Module:
        return self.get_submodule(self.cam_target_name)

    def forward(self, x):
        _check_batch(x, self.in_channels)  # a message naming the channel counts, not a convolution's shape error
        return self.head(self.backbone(x))


def study_head(in_features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, HEAD_HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(HEAD_DROPOUT),
        nn.Linear(HEAD_HIDDEN, num_classes),
    )


# ----------------------------------------------------------------------------------------------------------
# builders

def _cnn(num_classes: int, weights: str, in_channels: int = 1) -> Classifier:
    def block(c_in, c_out):
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(),  # not in place: Grad-CAM hooks this module's output
            pool=nn.MaxPool2d(2),
        ))

    backbone = nn.Sequential(OrderedDict(
        block1=block(in_channels, 64),  # (B, 64, H/2, W/2)
        block2=block(64, 128),  # (B, 128, H/4, W/4)
        block3=block(128, 256),  # (B, 256, H/8, W/8)
        pool=nn.AdaptiveAvgPool2d(4),  # (B, 256, 4, 4) at any input size
        flatten=nn.Flatten(),  # (B, 4096)
    ))
    return Classifier(backbone, study_head(256 * 4 * 4, num_classes), "backbone.block3.relu", in_channels)


def _vgg_features(weights: str) -> nn.Sequential:
    # the VGG16 conv layers alone: torchvision.models.vgg16() would also build (and initialise) a 120 M-weight
    # classifier that is thrown away
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    if weights == "imagenet":
        state = imagenet_state_dict(VGG_WEIGHTS)
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if k.startswith("features.")})
    else:  # torchvision's VGG initialisation
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return features


def _vgg(num_classes: int, weights: str, frozen: bool, pool_side: int = 7, in_channels: int = 1) -> Classifier:
    features = _vgg_features(weights)  # (B, 512, H/32, W/32); features[29] is the ReLU of conv5_3 at H/16
    # 7: the study's VGG head input (25088 features); 1: fine_vgg_gap's global pool (module docstring)
    pool, n_features = nn.AdaptiveAvgPool2d(pool_side), 512 * pool_side * pool_side
    layers = OrderedDict(input=ImageNetInput(in_channels), features=features, pool=pool, flatten=nn.Flatten())
    backbone = FrozenBackbone(layers) if frozen else nn.Sequential(layers)
    return Classifier(backbone, study_head(n_features, num_classes), "backbone.features.29", in_channels)


class Sentinel1Input(nn.Module):
    """(B, C, H, W) in [0, 1], OpenSARShip `cal` chips (calibrated backscatter on CAL_DB_RANGE) -> (B, 2, H, W)
    as the Sentinel-1 weights expect: dB standardised with the SSL4EO-S12 statistics. C = 2, a stacked chip
    (co, cross) = (VV, VH): each band with its own statistics, as the weights were trained (HH, HV scenes are
    taken as VV, VH). C = 1: the single (co-polarised) band feeds both channels, standardised with the VV
    statistics: the network sees VH as a copy of VV's pattern."""

    def __init__(self, in_channels=1):
        super().__init__()
        self.in_channels = in_channels
        self.low, self.high = CAL_DB_RANGE
        stats = [(SENTINEL1_DB_MEAN[k], SENTINEL1_DB_STD[k]) for k in ((0,) if in_channels == 1 else (0, 1))]
        self.register_buffer("mean", torch.tensor([m for m, _ in stats]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([s for _, s in stats]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        _check_batch(x, self.in_channels)
        db = self.low + x * (self.high - self.low)
        return ((db - self.mean) / self.std).expand(-1, 2, -1, -1)


def _resnet(num_classes: int, weights: str, frozen: bool, load: bool = True, in_channels: int = 1) -> Classifier:
    net = torchvision.models.resnet50(weights=None)
    if weights == "sentinel1":  # the SAR weights' first convolution takes VV and VH
        net.conv1 = nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if load and weights == "imagenet":
        net.load_state_dict(imagenet_state_dict(RESNET_WEIGHTS))
    if load and weights == "sentinel1":
        missing, unexpected = net.load_state_dict(sentinel1_state_dict(), strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise CheckpointError(f"{weights_path(SENTINEL1_WEIGHTS)} is not a ResNet50 with a 2-channel conv1 "
                                  f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}): replace it "
                                  "with the file the message of a missing file names")
    layers = OrderedDict(input=Sentinel1Input(in_channels) if weights == "sentinel1" else ImageNetInput(in_channels))
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        layers[name] = getattr(net, name)  # layer4: (B, 2048, H/32, W/32)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)  # global pool of the 2048 channels (not defect 5's reshape)
    layers["flatten"] = nn.Flatten()  # (B, 2048)
    backbone = FrozenBackbone(layers) if frozen else nn.Sequential(layers)
    return Classifier(backbone, study_head(2048, num_classes), "backbone.layer4", in_channels)


_BUILDERS = {  # (classes, weights, load, in_channels) -> Classifier
    "cnn": lambda n, w, load, c: _cnn(n, w, in_channels=c),
    "vgg": lambda n, w, load, c: _vgg(n, w, frozen=False, in_channels=c),
    "resnet": lambda n, w, load, c: _resnet(n, w, frozen=False, load=load, in_channels=c),
    "fine_vgg": lambda n, w, load, c: _vgg(n, w, frozen=True, in_channels=c),
    "fine_resnet": lambda n, w, load, c: _resnet(n, w, frozen=True, load=load, in_channels=c),
    "fine_vgg_gap": lambda n, w, load, c: _vgg(n, w, frozen=True, pool_side=1, in_channels=c),
}


def build_model(name: str, num_classes: int, weights: str = "imagenet", load_weights: bool = True,
                in_channels: int = 1) -> Classifier:
    """A fresh model. weights: "imagenet" (VGG/ResNet backbones start from ImageNet; the cnn is always
    randomly initialised), "none" (random everywhere), "auto" (resolve_weights: imagenet where the file is at
    hand) or "sentinel1" (resnet, fine_resnet: the SAR-pretrained ResNet50, a 2-channel first convolution and
    Sentinel1Input). load_weights=False: the architecture those weights need, randomly initialised (what a saved
    state_dict is loaded into). in_channels: the chips' channels, 1 or 2 (stacked co, cross: module docstring).
    Raises WeightsUnavailableError when pretrained weights are needed, not cached and not downloadable."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_CHOICES)}")
    weights = resolve_weights(name, weights)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if in_channels not in (1, 2):
        raise ValueError(f"in_channels must be 1 or 2 (stacked co, cross), got {in_channels!r}")
    if not load_weights:
        return _BUILDERS[name](num_classes, weights, False, in_channels) if weights == "sentinel1" else \
            _BUILDERS[name](num_classes, "none", False, in_channels)
    return _BUILDERS[name](num_classes, weights, True, in_channels)


def state_sha1(module_or_tensors):
    """Hash of a module's state_dict, or of (name, tensor) pairs (names and bytes): equal hashes, identical
    weights (and identical backbone features)."""
    items = module_or_tensors.state_dict().items() if isinstance(module_or_tensors, nn.Module) \
        else module_or_tensors
    h = hashlib.sha1()
    for name, tensor in items:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint(model: Classifier, model_name: str, classes, img_size: int, weights: str, seed: int, args: dict):
    """What a finished cell saves: the trained weights and what rebuilds the model, nothing else (no optimiser
    state: nothing reads it, and for Adam it is twice the weights).

    A model that trains whole saves its state_dict. A frozen model saves its head, its backbone's buffers (the
    batch-norm statistics, whatever the cell did to them) and the identity of the frozen weights: their name
    (`weights`), the sha1 of the backbone's parameters and, for random weights, the seed that rebuilds them;
    load_trained rebuilds the backbone and checks the hash. fine_resnet: 34 MB instead of 128 MB + Adam.
    """
    ckpt = {"model_name": model_name, "classes": list(classes), "img_size": img_size, "args": args,
            "epoch": args.get("epochs"), "weights": weights, "in_channels": model.in_channels}
    if not model.frozen_backbone:
        ckpt["model"] = model.state_dict()
        return ckpt
    ckpt["head"] = model.head.state_dict()
    ckpt["backbone_buffers"] = {k: v for k, v in model.backbone.state_dict().items()
                                if k not in dict(model.backbone.named_parameters())}
    ckpt["backbone"] = {"weights": weights, "seed": seed if weights == "none" else None,
                        "parameters_sha1": state_sha1(model.backbone.named_parameters())}
    return ckpt


def _rebuild_frozen(ckpt, path):
    """The frozen model of a slim checkpoint: its backbone rebuilt from the named weights (or the seed), checked
    against the saved hash, then the saved head and buffers loaded."""
    ident = ckpt["backbone"]
    if ident["weights"] == "none":  # the cell built its model right after seeding torch with its seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ident["seed"])
            model = build_model(ckpt["model_name"], len(ckpt["classes"]), weights="none",
                                in_channels=ckpt.get("in_channels", 1))
    else:
        model = build_model(ckpt["model_name"], len(ckpt["classes"]), weights=ident["weights"],
                            in_channels=ckpt.get("in_channels", 1))
    if state_sha1(model.backbone.named_parameters()) != ident["parameters_sha1"]:
        how = f"seed {ident['seed']}" if ident["weights"] == "none" else f"the {ident['weights']} weights file"
        raise CheckpointError(f"{path}: the frozen {ckpt['model_name']} backbone rebuilt from {how} is not the one "
                              "this cell was trained with (its parameters' sha1 differs: another torch/torchvision "
                              "version, or another weights file); retrain the cell (test_models.py --force)")
    model.head.load_state_dict(ckpt["head"])
    model.backbone.load_state_dict({**model.backbone.state_dict(), **ckpt["backbone_buffers"]})
    return model


def _load_whole(ckpt):
    """The model of a checkpoint that saved its whole state_dict."""
    # the architecture its weights need (sentinel1: a 2-channel first convolution), then the saved values
    model = build_model(ckpt["model_name"], len(ckpt["classes"]), weights=ckpt.get("weights") or "none",
                        load_weights=False, in_channels=ckpt.get("in_channels", 1))
    state = dict(ckpt["model"])
    for prefix in ("module.", "_orig_mod."):  # saved from a DistributedDataParallel or torch.compile wrapper
        consume_prefix_in_state_dict_if_present(state, prefix)
    model.load_state_dict(state)
    return model


def load_trained(checkpoint_path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a grid checkpoint (`checkpoint`). A model saved whole is
    built with weights="none" and loaded; a frozen one is rebuilt from its weights' identity (ImageNet weights
    must then be in the torch cache: WeightsUnavailableError says where) and its head loaded. A file that is
    missing, damaged or not such a checkpoint: CheckpointError naming it."""
    try:
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint_path} is missing") from None
    # a damaged file fails in torch.load with many types: EOFError (empty), KeyError or UnpicklingError (not a
    # pickle), RuntimeError (a truncated zip archive), OSError (unreadable)
    except (OSError, EOFError, KeyError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        first_line = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{checkpoint_path} cannot be read ({type(e).__name__}: {first_line})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{checkpoint_path} is not a checkpoint of this project (it holds a "
                              f"{type(ckpt).__name__}, test_models.py writes a dict)")
    missing = [k for k in ("model_name", "classes") if k not in ckpt]
    if missing or not ("model" in ckpt or "head" in ckpt):
        raise CheckpointError(f"{checkpoint_path} is not a checkpoint of this project: keys "
                              f"{missing or ['model or head']} are missing (test_models.py writes model_name, "
                              "classes, and model or head, ...)")
    try:
        model = _rebuild_frozen(ckpt, checkpoint_path) if "head" in ckpt else _load_whole(ckpt)
    except (CheckpointError, WeightsUnavailableError):
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # other names, shapes or classes: damaged or edited
        first_line = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{checkpoint_path} does not fit the {ckpt['model_name']} it names "
                              f"({type(e).__name__}: {first_line})") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), ckpt


# ----------------------------------------------------------------------------------------------------------
# table: python models.py

def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Parameters, Grad-CAM layer and speed of each model",
                                     add_help=add_help, formatter_class=HelpFormatter)
    parser.add_argument("--models", type=comma_list(MODEL_CHOICES, what="model"), default=list(MODEL_NAMES),
                        help="models, comma-separated")
    parser.add_argument("--num-classes", type=int_at_least(2), default=3, help="classes of the head")
    parser.add_argument("--img-size", type=int_at_least(32), default=224, help="square input size of the timed pass")
    parser.add_argument("--weights", default="none", choices=WEIGHT_CHOICES,
                        help="none (the default here): no download needed; imagenet: also fills the torch cache")
    add_shared(parser, "device")
    parser.add_argument("--repeats", type=int_at_least(1), default=3, help="timed forward passes (median reported)")
    return parser


def describe(model: Classifier, img_size: int, device: str, repeats: int) -> dict:
    """Parameter counts, CAM target and its map size, and the median time of a batch-1 forward pass."""
    model = model.to(device).eval()
    shapes = []
    hook = model.cam_target_layer.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))
    x = torch.rand(1, model.in_channels, img_size, img_size, device=device)
    times = []
    with torch.no_grad():
        n_features = model.backbone(x).shape[1]  # also the warm-up pass
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    hook.remove()
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "features": n_features,
        "target": model.cam_target_name,
        "cam": f"{shapes[0][2]}x{shapes[0][3]}",
        "ms": 1000 * statistics.median(times),
    }


def main(args):
    args.device = str(resolve_device(args.device))
    note = " (counts and times do not depend on it)" if args.weights == "none" else ""
    print(f"input 1x1x{args.img_size}x{args.img_size}, {args.num_classes} classes, "
          f"weights={args.weights!r}{note}, device {args.device}, {torch.get_num_threads()} CPU threads; "
          f"forward = median of {args.repeats} batch-1 passes without grad")
    header = (f"{'model':<12} {'total':>12} {'trainable':>12} {'features':>9}  {'cam target':<22} "
              f"{'cam map':>8} {'forward ms':>10}")
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = build_model(name, args.num_classes, args.weights)
        row = describe(model, args.img_size, args.device, args.repeats)
        print(f"{name:<12} {row['total']:>12,} {row['trainable']:>12,} {row['features']:>9}  "
              f"{row['target']:<22} {row['cam']:>8} {row['ms']:>10.1f}")


if __name__ == "__main__":
    run_main("models.py", lambda: main(get_args_parser().parse_args()))
