"""The fast paths give the results of the plain ones: decoded cache (data.py), frozen-feature cache
(features.py), mixed precision and --compile wiring (test_models.py). CPU only, tiny sets, 32 px."""

import json
import os
import socket
import subprocess
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from fixtures import write_tiny_prepared

import data
import engine
import features
import models
import sets
import test_models as tm
from models import build_model

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
CPU = torch.device("cpu")
QUICK = ["--img-size", "32", "--weights", "none", "--device", "cpu", "--num-workers", "0", "--force", "--seeds", "42"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"), sets=("fusar",))


def fresh_set(tmp_path):
    return write_tiny_prepared(tmp_path / "prepared", sets=("fusar",)) / "fusar"


# ------------------------------------------------------------------------------------------------------------
# decoded cache

def test_cached_and_uncached_pipelines_give_identical_tensors(tmp_path):
    set_dir = fresh_set(tmp_path)
    plain = data.load_split(set_dir, "train", 40, cache=False)
    assert plain.cache_path is None and not (set_dir / ".cache").exists()  # nothing written
    built = data.load_split(set_dir, "train", 40)
    reused = data.load_split(set_dir, "train", 40, num_workers=2)
    mapped = data.load_split(set_dir, "train", 40, mmap=True)
    threads = data.load_split(set_dir, "train", 40, num_workers=3, cache=False)
    assert (plain.cache_status, built.cache_status, reused.cache_status, mapped.cache_status) == (
        "off", "built", "reused", "reused")
    assert isinstance(mapped.images, np.memmap) and not isinstance(reused.images, np.memmap)
    for other in (built, reused, mapped, threads):
        assert np.array_equal(other.images, plain.images) and other.images.dtype == np.uint8
        assert np.array_equal(other.labels, plain.labels) and other.paths == plain.paths
    # the plain torchvision approach (PIL decode, Resize, ToTensor) gives the same model input, chip for chip
    from torchvision import transforms
    plain_tf = transforms.Compose([transforms.Resize((40, 40)), transforms.ToTensor()])
    ours = engine.model_input(torch.from_numpy(np.asarray(mapped.images)), CPU)
    for i, path in enumerate(plain.paths):
        with Image.open(set_dir / path) as im:
            assert torch.equal(plain_tf(im.convert("L")), ours[i])
    # the batches drawn from either are the same tensors
    def epoch(images):
        return [(x.clone(), y.clone()) for x, y in data.Batches(
            torch.from_numpy(np.asarray(images)), torch.from_numpy(plain.labels), 5, shuffle=True,
            generator=torch.Generator().manual_seed(3), augment="flip+rot90",
            aug_generator=torch.Generator().manual_seed(4))]
    for (xa, ya), (xb, yb) in zip(epoch(plain.images), epoch(mapped.images)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert "MB uint8, memory-mapped from disk (read in" in mapped.describe()
    assert "in RAM (decoded in" in built.describe() and ".cache/train_40_" in built.describe()


def test_cache_is_reused_and_rebuilt_when_the_manifest_or_the_size_changes(tmp_path):
    set_dir = fresh_set(tmp_path)
    first = data.load_split(set_dir, "train", 32)
    key = sets.manifest_sha1(set_dir)[:16]
    assert first.cache_path == set_dir / ".cache" / f"train_32_{key}.npy"
    stat = first.cache_path.stat()
    again = data.load_split(set_dir, "train", 32)
    assert again.cache_status == "reused"
    after = again.cache_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # the same file, untouched

    other_size = data.load_split(set_dir, "train", 24)
    assert other_size.cache_status == "built" and other_size.images.shape[1:] == (24, 24)
    assert first.cache_path.stat().st_ino == stat.st_ino  # another size: both kept
    test = data.load_split(set_dir, "test", 32)
    assert test.cache_path.name == f"test_32_{key}.npy"

    # the set prepared again (another manifest): rebuilt, and the caches of the old manifest removed
    manifest = pd.read_csv(set_dir / "manifest.csv", dtype=str, keep_default_na=False)
    manifest = manifest[manifest.path != manifest.path[manifest.split == "train"].iloc[0]]
    manifest.to_csv(set_dir / "manifest.csv", index=False, lineterminator="\n")
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid no longer exists: its temporary file is stale
    stale_tmp = set_dir / ".cache" / f".train_32_{key}.npy.tmp-{socket.gethostname()}-{dead.pid}-0123abcd"
    stale_tmp.write_bytes(b"partial")
    rebuilt = data.load_split(set_dir, "train", 32)
    assert rebuilt.cache_status == "built" and len(rebuilt.labels) == len(first.labels) - 1
    assert np.array_equal(rebuilt.images, first.images[1:])
    assert sorted(p.name for p in (set_dir / ".cache").iterdir()) == [rebuilt.cache_path.name]

    # a damaged cache file (e.g. a disk that filled up) is rebuilt, not trusted
    rebuilt.cache_path.write_bytes(rebuilt.cache_path.read_bytes()[:200])
    repaired = data.load_split(set_dir, "train", 32)
    assert repaired.cache_status == "built" and np.array_equal(repaired.images, rebuilt.images)


def test_a_set_folder_that_cannot_hold_the_cache_still_loads(tmp_path):
    set_dir = fresh_set(tmp_path)
    (set_dir / ".cache").write_text("not a folder")  # mkdir fails as on read-only data (tests run as root)
    split = data.load_split(set_dir, "train", 32)
    assert split.cache_status == "unwritable" and split.cache_path is None
    assert np.array_equal(split.images, data.load_split(set_dir, "train", 32, cache=False).images)
    assert "make the set folder writable" in split.describe()


def test_split_cache_prints_sizes_and_can_stay_on_disk(prepared, capsys):
    cache = data.SplitCache(prepared, 32, CPU, 0, on_disk=True)
    arrays, images, _ = cache.get("fusar", "train")
    assert isinstance(arrays.images, np.memmap) and images.shape == (16, 32, 32)
    assert torch.equal(images, torch.from_numpy(data.load_split(prepared / "fusar", "train", 32,
                                                                cache=False).images))
    out = capsys.readouterr().out
    assert "fusar/train: 16 chips at 32 px = 0.0 MB uint8, memory-mapped from disk" in out
    assert cache.features is None  # no feature cache given: off


# ------------------------------------------------------------------------------------------------------------
# augmentation as explicit views

def test_views_are_the_symmetries_of_the_square_and_augment_applies_the_drawn_ones():
    x = torch.arange(2 * 4 * 4).reshape(2, 1, 4, 4)
    views = [data.view(x, v) for v in range(8)]
    assert len({tuple(v[0].flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[1], x.flip(-1)) and torch.equal(views[2], torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(views[3], torch.rot90(x.flip(-1), 1, dims=(-2, -1)))
    batch = torch.arange(64 * 16).reshape(64, 4, 4)
    for mode, n in data.NUM_VIEWS.items():
        drawn = data.draw_views(64, mode, torch.Generator().manual_seed(0))
        assert drawn.dtype == torch.long and set(drawn.tolist()) == set(range(n))  # 64 draws hit every view
        out = data.apply_views(batch, data.draw_views(64, mode, torch.Generator().manual_seed(0)))
        assert torch.equal(out, data.apply_views(batch, drawn))
        assert all(torch.equal(o, data.view(b, v)) for o, b, v in zip(out, batch, drawn.tolist()))


def test_plan_holds_the_draws_of_the_batches():
    images = torch.randint(0, 256, (23, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(23) % 3

    def batches(**kw):
        return data.Batches(images, labels, 8, shuffle=True, generator=torch.Generator().manual_seed(1),
                            augment="flip+rot90", aug_generator=torch.Generator().manual_seed(2), **kw)

    replay = [(images[i], v) for i, v in batches().plan()]
    drawn = list(batches())
    assert len(drawn) == 3 and [len(y) for _, y in drawn] == [8, 8, 7]
    for (x, _), (chips, views) in zip(drawn, replay):
        assert torch.equal(x, data.apply_views(chips, views))
    # two DDP ranks take the two halves of every global batch of the same order (the last one trimmed to 6)
    ranks = [list(batches(rank=r, world_size=2).plan()) for r in (0, 1)]
    whole = [i for i, _ in batches().plan()]
    for k, full in enumerate(whole):
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), full[:len(full) - len(full) % 2])


# ------------------------------------------------------------------------------------------------------------
# frozen-feature cache

def frozen_model(name="fine_resnet", seed=0):
    torch.manual_seed(seed)
    return build_model(name, 3, "none").eval()


def test_feature_batches_are_the_backbone_features_of_the_uncached_batches(monkeypatch):
    monkeypatch.setattr(features, "FP16_LOGIT_TOL", -1.0)  # float32 storage: the replay itself, exactly
    model = frozen_model()
    # 12 chips in batches of 4 everywhere: one input shape, one set of oneDNN kernels to prepare
    images = torch.randint(0, 256, (12, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 3
    weights = data.balanced_sample_weights(labels, 3)

    def batches():
        return data.Batches(images, labels, 4, shuffle=True, generator=torch.Generator().manual_seed(1),
                            sample_weights=weights, augment="flip+rot90",
                            aug_generator=torch.Generator().manual_seed(2))

    cache = features.FeatureCache(CPU, engine.Precision("off", CPU), 4, verbose=False)
    net, cached = cache.wrap(model, batches(), ("tiny", "train"))
    assert net is model.head and cache.info[("tiny", "train")]["views"] == 8
    assert cache.info[("tiny", "train")]["dtype"] == "float32"
    n = 0
    with torch.no_grad():
        for (f, fy), (x, y) in zip(cached, batches()):
            assert torch.equal(fy, y)
            assert torch.allclose(f, model.backbone(engine.model_input(x, CPU)), rtol=1e-4, atol=1e-4)
            n += 1
    assert n == len(batches()) == 3


def cached_features(cache, model, key, images, augment):
    """The features the production path (FeatureCache.wrap over data.Batches) caches for these chips: training
    batches (shuffled, augmented) where augment is not none, else evaluation batches."""
    train = augment != "none"
    batches = data.Batches(images, torch.zeros(len(images), dtype=torch.long), 4, shuffle=train,
                           generator=torch.Generator().manual_seed(0) if train else None, augment=augment,
                           aug_generator=torch.Generator().manual_seed(1) if train else None)
    net, cached = cache.wrap(model, batches, key)
    assert net is model.head
    return cached.features


def test_float16_features_are_kept_only_when_exact_enough():
    model = frozen_model("fine_vgg")
    images = torch.randint(0, 256, (6, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cache = features.FeatureCache(CPU, engine.Precision("off", CPU), 4, verbose=False)
    half = cached_features(cache, model, ("t", "train"), images, "flip")
    info = cache.info[("t", "train")]
    assert half.dtype == torch.float16 and half.shape == (2, 6, 512 * 7 * 7)  # fine_vgg: the study's 7x7 pool
    assert 0 < info["fp16_logit_error"] <= features.FP16_LOGIT_TOL
    full = cache.compute(model.backbone, images, 2)
    assert torch.allclose(half.float(), full, rtol=1e-3, atol=1e-6)
    # features beyond float16's range (65504) stay float32
    assert cache.narrow(full * 1e7, model.head)[0].dtype == torch.float32
    # test features: the backbone's own dtype, for evaluation exactly as the model computes
    assert cached_features(cache, model, ("t", "test"), images, "none").dtype == torch.float32


def test_feature_cache_applies_only_where_exact_and_is_shared_by_one_backbone():
    cache = features.FeatureCache(CPU, engine.Precision("off", CPU), 4, verbose=False)
    frozen = frozen_model("fine_vgg")
    assert cache.applies(frozen, "flip") and cache.applies(frozen, "flip+rot90")
    assert not cache.applies(build_model("cnn", 3, "none"), "flip")  # trains its backbone
    assert not cache.applies(frozen, "random-crop")  # no finite set of views
    assert not features.FeatureCache(CPU, engine.Precision("off", CPU), 4, enabled=False).applies(frozen)
    thawed = frozen_model("fine_vgg")
    thawed.backbone.features[0].weight.requires_grad_(True)
    assert not cache.applies(thawed)
    images = torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8)
    a = cached_features(cache, frozen, ("s", "test"), images, "none")
    same = frozen_model("fine_vgg")  # another cell, the same backbone weights: the same features
    assert cached_features(cache, same, ("s", "test"), images, "none") is a
    assert cache.info[("s", "test")]["reused"]
    other = frozen_model("fine_vgg", seed=1)
    b = cached_features(cache, other, ("s", "test"), images, "none")
    assert b is not a and not torch.equal(a, b) and len(cache._entries) == 1  # the old backbone's dropped


def run_cell(root, out, *flags):
    tm.main(tm.get_args_parser().parse_args(["--data-dir", str(root), "--output-dir", str(out),
                                             "--datasets", "fusar", *QUICK, *flags]))
    folder = out / "runs/fusar" / flags[flags.index("--models") + 1] / "none/lr0.001/seed42"
    record = json.loads((folder / "record.json").read_text())
    probs = pd.read_csv(folder / "predictions_fusar.csv").filter(like="prob_").to_numpy()
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)  # what was saved: a frozen model's head alone
    saved = ckpt["model"] if "model" in ckpt else {f"head.{k}": v for k, v in ckpt["head"].items()}
    return record, probs, saved


def test_cached_frozen_training_matches_uncached(prepared, tmp_path, monkeypatch):
    flags = ["--models", "fine_resnet", "--epochs", "2"]
    cached, p_cached, w_cached = run_cell(prepared, tmp_path / "cached", *flags)
    plain, p_plain, w_plain = run_cell(prepared, tmp_path / "plain", *flags, "--no-feature-cache")
    assert plain["feature_cache"] is None
    fc = cached["feature_cache"]
    assert (fc["views"], fc["chips"], fc["features"], fc["dtype"]) == (2, 16, 2048, "float16")
    assert fc["fp16_logit_error"] <= features.FP16_LOGIT_TOL
    assert cached["init_sha1"] == plain["init_sha1"]  # the same head init
    for h_cached, h_plain in zip(cached["history"], plain["history"]):
        assert h_cached["loss"] == pytest.approx(h_plain["loss"], rel=1e-3)
        assert h_cached["accuracy"] == h_plain["accuracy"]
    assert np.abs(p_cached - p_plain).max() <= 1e-3
    assert set(w_cached) == set(w_plain)  # the whole model is saved, backbone included


# ------------------------------------------------------------------------------------------------------------
# mixed precision, one code path with the CPU

def test_mixed_precision_path_runs_on_the_cpu(prepared, tmp_path):
    # bfloat16 autocast on the CPU; slow where the CPU lacks native bfloat16 (AVX512-BF16, AMX): the cnn
    on, probs, _ = run_cell(prepared, tmp_path / "on", "--models", "cnn", "--epochs", "1", "--amp", "on")
    assert on["amp"] == "autocast bfloat16" and on["feature_cache"] is None
    assert np.isfinite(on["history"][0]["loss"]) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_features_under_autocast_are_cached_as_the_backbone_gives_them():
    torch.manual_seed(0)
    backbone = models.FrozenBackbone(OrderedDict(conv=torch.nn.Conv2d(1, 8, 3), relu=torch.nn.ReLU(),
                                                 pool=torch.nn.AdaptiveAvgPool2d(1),
                                                 flatten=torch.nn.Flatten()))
    model = models.Classifier(backbone, torch.nn.Linear(8, 3), "backbone.conv")
    precision = engine.Precision("on", CPU)
    images = torch.randint(0, 256, (8, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 3

    def batches():
        return data.Batches(images, labels, 4, shuffle=True, generator=torch.Generator().manual_seed(1),
                            augment="flip+rot90", aug_generator=torch.Generator().manual_seed(2))

    cache = features.FeatureCache(CPU, precision, 4, verbose=False)
    head, cached = cache.wrap(model, batches(), ("tiny", "train"))
    assert cache.info[("tiny", "train")]["dtype"] == "bfloat16"  # 16 bits already: kept as they are
    with torch.no_grad():
        for (f, _), (x, _) in zip(cached, batches()):
            with precision.autocast():
                assert f.dtype == torch.bfloat16 and torch.equal(head(f), model(engine.model_input(x, CPU)))


def test_float16_with_a_gradient_scaler_runs_on_the_cpu():
    precision = engine.Precision("on", CPU)
    precision.dtype = torch.float16  # what a CUDA device without bfloat16 gets
    scaler = precision.scaler()
    assert scaler.is_enabled()
    torch.manual_seed(0)
    model = build_model("cnn", 3, "none")
    images = torch.randint(0, 256, (6, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = data.Batches(images, torch.tensor([0, 1, 2, 0, 1, 2]), 3, shuffle=True,
                           generator=torch.Generator().manual_seed(0), augment="flip",
                           aug_generator=torch.Generator().manual_seed(1))
    before = model.head[3].weight.detach().clone()
    loss, _ = engine.train_one_epoch(model, torch.nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters()),
                                 scaler, batches, CPU, precision, "fp16 on the CPU")
    assert np.isfinite(loss) and scaler.get_scale() > 0
    assert not torch.equal(before, model.head[3].weight)  # the scaled steps were taken


def test_compile_flag_compiles_the_trained_module_and_saves_it_unwrapped(prepared, tmp_path, monkeypatch):
    compiled = []

    class Compiled(torch.nn.Module):  # stands in for torch.compile's OptimizedModule (same "_orig_mod")
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def forward(self, x):
            return self._orig_mod(x)

    def fake_compile(module, **kwargs):
        compiled.append(module)
        return Compiled(module)

    monkeypatch.setattr(torch, "compile", fake_compile)
    record, _, weights = run_cell(prepared, tmp_path / "compiled", "--models", "fine_vgg", "--epochs", "1",
                                  "--compile")
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Sequential)  # the head: features cached
    assert record["args"]["compile"] is True and "head.0.weight" in weights  # no _orig_mod. prefix


def test_stale_cache_temporaries_of_live_processes_are_kept(tmp_path):
    set_dir = fresh_set(tmp_path)
    first = data.load_split(set_dir, "train", 32)
    live = first.cache_path.parent / f".{first.cache_path.name}.tmp-{socket.gethostname()}-{os.getpid()}-ab"
    live.write_bytes(b"being written")
    data._remove_stale(first.cache_path.parent, sets.manifest_sha1(set_dir))
    assert live.exists() and first.cache_path.exists()
