"""Pretrained weights: where each file is cached, how it is fetched, and what --weights auto gives.

    import pretrained
    pretrained.fetch_weights(pretrained.RESNET_WEIGHTS)   # the cached file's path, downloaded when the network allows
    pretrained.resolve_weights("fine_resnet", "auto")     # "imagenet" when the file is at hand, else "none"

ImageNet weights come through torchvision's weights API and cache, torch.hub.get_dir()/checkpoints/<file name of the
weights URL> ($TORCH_HOME/hub/checkpoints by default): a cached file is used as it is; otherwise it is downloaded
when the server answers within CONNECT_TIMEOUT_S seconds, and WeightsUnavailableError says which file to put where
(or to use --weights none). The Sentinel-1 ResNet50 (SENTINEL1_WEIGHTS, --weights sentinel1) goes the same way: the
same cache folder, its own file name. --weights auto (resolve_weights) takes ImageNet weights where they are cached
or can be downloaded and random ones otherwise, once per file and process; every record keeps what a model actually
got.
"""

import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import ResNet50_Weights, VGG16_Weights

WEIGHT_CHOICES = ("imagenet", "none", "auto")  # every model: auto = imagenet where the file is at hand, else none
GRID_WEIGHTS = (*WEIGHT_CHOICES, "sentinel1")  # test_models.py's: sentinel1 = SAR-pretrained, resnet models only
VGG_WEIGHTS = VGG16_Weights.IMAGENET1K_V1
RESNET_WEIGHTS = ResNet50_Weights.IMAGENET1K_V1
CONNECT_TIMEOUT_S = 5.0  # an offline machine must fail fast, not hang on DNS or TCP
READ_TIMEOUT_S = 60.0  # a download that stalls this long is abandoned (partial file removed by torch.hub)


class SarWeights:
    """A weights file outside torchvision's catalogue, named as torchvision names its own (url, name)."""

    def __init__(self, name, url, description):
        self.name, self.url, self.description = name, url, description

    def __str__(self):
        return self.description


# Sentinel-1 GRD dual-pol ResNet50 (SSL4EO-S12, MoCo; Wang et al. 2022), as torchgeo distributes it
# (torchgeo.models.ResNet50_Weights.SENTINEL1_ALL_MOCO): a timm ResNet50, whose parameter names are torchvision's,
# with a 2-channel first convolution taking VV and VH backscatter in dB, standardised with the SSL4EO-S12
# Sentinel-1 statistics below. The file name carries the first 8 hex digits of its sha256, which torch.hub checks.
SENTINEL1_WEIGHTS = SarWeights(
    "SENTINEL1_ALL_MOCO",
    "https://hf.co/torchgeo/resnet50_sentinel1_all_moco/resolve/e79862c667853c10a709bdd77ea8ffbad0e0f1cf/"
    "resnet50_sentinel1_all_moco-906e4356.pth",
    "Sentinel-1 weights ResNet50_Weights.SENTINEL1_ALL_MOCO (SSL4EO-S12 MoCo, torchgeo)")
SENTINEL1_DB_MEAN = (-12.59, -20.26)  # VV, VH backscatter in dB over SSL4EO-S12
SENTINEL1_DB_STD = (5.26, 5.91)
SENTINEL1_MODELS = ("resnet", "fine_resnet")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor downloadable from here."""



def weights_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision looks for (and downloads) these weights:
    torch.hub.get_dir()/checkpoints/<file name of the URL>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _unavailable(weights, reason: str) -> WeightsUnavailableError:
    path = weights_path(weights)
    if isinstance(weights, SarWeights):
        return WeightsUnavailableError(
            f"{weights} are not in the torch cache and could not be downloaded ({reason}).\n"
            f"  expected file: {path}\n"
            f"  cache folder:  {path.parent}  (torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another)\n"
            "Fix, either:\n"
            f"  - on a machine with internet, fetch the file:\n      curl -L -o {path.name} {weights.url}\n"
            f"    and copy it to {path} here;\n"
            "  - or run with --weights imagenet or none.")
    builder = type(weights).__name__.removesuffix("_Weights").lower()  # VGG16_Weights -> vgg16
    return WeightsUnavailableError(
        f"ImageNet weights {weights} are not in the torch cache and could not be downloaded ({reason}).\n"
        f"  expected file: {path}\n"
        f"  cache folder:  {path.parent}  (torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another)\n"
        "Fix, either:\n"
        f"  - on a machine with internet, fetch the file:\n"
        f"      curl -L -o {path.name} {weights.url}\n"
        f"    or let torchvision fetch it into that machine's cache:\n"
        f"      python -c \"import torchvision; torchvision.models.{builder}(weights='{weights.name}')\"\n"
        f"    and copy it to {path} here;\n"
        "  - or run with --weights none (VGG and ResNet then start from random weights, unlike the study)."
    )


def _reachable(url: str, timeout: float) -> str | None:
    """None if the server answers within `timeout` seconds, else the reason. Runs in a daemon thread because
    name resolution ignores socket timeouts and can block far longer on a machine without network."""
    outcome = {}

    def probe():
        try:
            # a fresh opener reads the proxy settings now (urlopen's global one froze them at first use)
            with urllib.request.build_opener().open(url, timeout=timeout):
                outcome["ok"] = True
        except Exception as e:  # noqa: BLE001 - a probe: any failure (DNS, refused, TLS, HTTP) = unreachable
            outcome["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if outcome.get("ok"):
        return None
    return outcome.get("error", f"no answer from {urlparse(url).hostname} within {timeout:.0f} s")


def fetch_weights(weights: torchvision.models.WeightsEnum) -> Path:
    """Make sure the weights file is in the torch cache (downloading it if the network allows it);
    return its path."""
    path = weights_path(weights)
    if path.is_file():
        return path
    reason = _reachable(weights.url, CONNECT_TIMEOUT_S)
    if reason is not None:
        raise _unavailable(weights, reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    # torchvision file names carry a prefix of the file's sha256, which torch.hub checks
    hash_prefix = torch.hub.HASH_REGEX.search(path.name).group(1)
    print(f"downloading {weights.url} to {path}", flush=True)
    previous = socket.getdefaulttimeout()
    # torch.hub's urlopen takes no timeout argument: without this a stalled transfer would hang forever
    socket.setdefaulttimeout(READ_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=hash_prefix, progress=True)
    except (OSError, RuntimeError) as e:  # network errors; RuntimeError is torch.hub's hash mismatch
        raise _unavailable(weights, f"download failed: {type(e).__name__}: {e}") from e
    finally:
        socket.setdefaulttimeout(previous)
    return path


def imagenet_state_dict(weights: torchvision.models.WeightsEnum) -> dict:
    fetch_weights(weights)
    # through torchvision's API: it resolves the same cached file; weights_only keeps unpickling safe
    return weights.get_state_dict(map_location="cpu", progress=False, check_hash=True, weights_only=True)


def sentinel1_state_dict() -> dict:
    """The Sentinel-1 ResNet50's parameters, torchvision names (conv1: 2 input channels), without its `fc`."""
    path = fetch_weights(SENTINEL1_WEIGHTS)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


PRETRAINED = {"vgg": VGG_WEIGHTS, "fine_vgg": VGG_WEIGHTS, "fine_vgg_gap": VGG_WEIGHTS, "resnet": RESNET_WEIGHTS,
              "fine_resnet": RESNET_WEIGHTS}  # the ImageNet file each model loads (the cnn has none)
_AUTO = {}  # weights enum -> what "auto" gave in this process: one probe of the network per file


def resolve_weights(name: str, weights: str) -> str:
    """The weights a model `name` actually gets for the choice `weights`: "auto" is "imagenet" where the ImageNet file
    is in the torch cache or can be downloaded now, else "none" (said once per file and process); the cnn, which
    has no pretrained weights, gets "none" under "auto". "imagenet", "none" and "sentinel1" (resnet and fine_resnet
    only) are themselves."""
    if weights not in GRID_WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid: {', '.join(GRID_WEIGHTS)}")
    if weights == "sentinel1" and name not in SENTINEL1_MODELS:
        raise ValueError(f"--weights sentinel1 exists for {' and '.join(SENTINEL1_MODELS)} only, not {name}")
    if weights != "auto":
        return weights
    file = PRETRAINED.get(name)
    if file is None:
        return "none"
    if file not in _AUTO:
        try:
            fetch_weights(file)
            _AUTO[file] = "imagenet"
        except WeightsUnavailableError as e:
            reason = str(e).splitlines()[0]
            print(f"--weights auto: {reason}; the models that would load {file} start from random weights "
                  f"(put the file at {weights_path(file)} to use it)", flush=True)
            _AUTO[file] = "none"
    return _AUTO[file]
