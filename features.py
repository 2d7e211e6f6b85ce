"""Frozen-feature cache: fine_vgg and fine_resnet train their head on backbone features computed once.

    from features import FeatureCache
    cache = FeatureCache(device, precision, batch_size=64)           # one per grid run
    net, batches = cache.wrap(model, batches, ("fusar", "train"))    # the head over cached features, where
    train_one_epoch(net, ..., batches, ...)                          # exact; else (model, batches) unchanged

Why: a frozen backbone (models.FrozenBackbone: no gradient, always in eval mode) maps an input to the same
features every time, so pushing every chip through it in every epoch repeats the same work E times. Here the
features of every training chip are computed once per view the augmentation can produce (data.NUM_VIEWS:
1 for none, 2 for flip, 8 for flip+rot90), and of every test chip once; each epoch then costs only the head.
At 10 epochs with flip this is 2 backbone passes per chip instead of 10.

Exact, not approximate: the cached path replays the uncached one draw for draw. FeatureBatches walks the same
data.Batches.plan() (same generators: same chip order, same sampler draws, same view index per sample) and
gathers features[view, chip] where the uncached path computes backbone(view(chip)). The head is the model's
own (same init), dropout draws from the same global generator (the backbone draws nothing), so the head sees
the same inputs and gives the same logits up to float rounding. `wrap` uses the cache only where this holds: a
model with a frozen backbone (`model.frozen_backbone`), in eval mode with no parameter that requires grad, and
an augmentation with a finite set of views; never otherwise, and never with enabled=False (test_models.py
--no-feature-cache, for checking).

Storage: features are computed in batches under torch.no_grad with the autocast context of the run, and kept
on the training device. Test features are kept in the dtype the backbone gives (float32, or the autocast
dtype), so evaluation is the model's own output. Training features (V views x N chips x F) are kept in float16
where that is exact enough: the head's logits on float16 features are compared with those on the backbone's
own features for the first FP16_CHECK_ROWS rows, and float16 is kept only if every feature is finite in
float16 and the largest logit difference is at most FP16_LOGIT_TOL of the largest logit; else the backbone's
dtype is kept (the record's feature_cache says which, and the error measured). Under autocast the backbone
already gives 16-bit features, kept as they are. Measured (bench.py, CPU, random backbone weights, 224 px):
float16 logit error 5.0e-4 (fine_vgg) and 8.4e-4 (fine_resnet) of the largest logit; after 10 epochs the test
probabilities of cached and uncached training differ by at most 3e-4 (tests/test_speed.py: 1e-3 bound after 2
epochs at 32 px). With float32 storage the cached features equal the uncached ones to 1e-4 (float rounding of
differently sized backbone batches).

Entries are keyed by the backbone's weights (sha1 of its state), the set, the split and the views, so cells
that share a backbone (ImageNet weights: every seed and imbalance strategy of a model) share the features;
entries of another backbone are dropped when a new one comes, so memory holds one backbone's features.
"""

import math
import time
import weakref

import torch

import data
from engine import model_input
from models import state_sha1

FP16_LOGIT_TOL = 2e-3  # largest |logit(fp16 features) - logit(features)| / largest |logit| kept as float16
FP16_CHECK_ROWS = 512  # feature rows through the head for that check (all rows would cost a head pass each)


class FeatureBatches:
    """Batches (features, labels) that replay the draws of `batches` (a data.Batches) over cached features
    (V, N, F): the chips and views of every batch are those the uncached path would use."""

    def __init__(self, batches, features, dtype):
        views = data.NUM_VIEWS[batches.augment] if batches.shuffle else 1
        if features.shape[:2] != (views, len(batches.labels)):
            raise ValueError(f"features of shape {tuple(features.shape)} do not fit "
                             f"{len(batches.labels)} chips x {views} view(s)")
        self.batches, self.features, self.dtype = batches, features, dtype

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        v, n, f = self.features.shape
        flat = self.features.view(v * n, f)  # row k * n + i: view k of chip i
        for index, views in self.batches.plan():
            if isinstance(index, slice):  # evaluation: chips in order, view 0
                x, y = flat[index], self.batches.labels[index]
            else:
                rows = index if views is None else views.to(index.device, non_blocking=True) * n + index
                x, y = flat.index_select(0, rows), self.batches.labels.index_select(0, index)
            yield x.to(self.dtype), y  # (B, F), (B,)


class FeatureCache:
    """Frozen-backbone features held for a grid run on the training device (module docstring)."""

    def __init__(self, device, precision, batch_size, enabled=True, verbose=True):
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.enabled, self.verbose = enabled, verbose
        # (backbone sha1, key, augmentation, images' shape, training?) -> ((V, N, F), the backbone's dtype)
        self._entries = {}
        self._hashes = weakref.WeakKeyDictionary()  # backbone module -> sha1 (hashing ResNet50 takes 0.2 s)
        self.info = {}  # (key, views) -> what was cached: dtype, views, MB, seconds, logit error, reused

    def applies(self, model, augment="none"):
        """True where cached features give exactly the uncached result (module docstring)."""
        backbone = getattr(model, "backbone", None)
        return (self.enabled and getattr(model, "frozen_backbone", False) and augment in data.NUM_VIEWS
                and not backbone.training and not any(p.requires_grad for p in backbone.parameters()))

    def wrap(self, model, batches, key):
        """(module to run, batches to feed it): (model.head, FeatureBatches) where the cache applies, else
        (model, batches) unchanged. key: (set name, split) of the chips in `batches`."""
        augment = batches.augment if batches.shuffle else "none"
        if not self.applies(model, augment):
            return model, batches
        head = model.head if batches.shuffle else None
        features, dtype = self._get(model.backbone, key, batches.images, augment, head)
        # the head gets the dtype the backbone gives it (float32, or the autocast dtype)
        return model.head, FeatureBatches(batches, features, dtype)

    def _sha1(self, backbone):
        if backbone not in self._hashes:
            self._hashes[backbone] = state_sha1(backbone)
        return self._hashes[backbone]

    def _get(self, backbone, key, images, augment, head):
        """(features, the dtype the backbone gave them in)."""
        sha = self._sha1(backbone)
        entry = (sha, key, augment, tuple(images.shape), head is not None)
        if entry not in self._entries:
            for old in [e for e in self._entries if e[0] != sha]:
                del self._entries[old]  # another backbone's features: not needed by this cell
            start = time.perf_counter()
            features = self.compute(backbone, images, data.NUM_VIEWS[augment])
            source_dtype, error = features.dtype, None
            if head is not None and features.dtype == torch.float32:
                features, error = self.narrow(features, head)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self._entries[entry] = (features, source_dtype)
            v, n, f = features.shape
            seconds = time.perf_counter() - start
            self.info[key] = {"views": v, "chips": n, "features": f, "dtype": str(features.dtype)[6:],
                              "mb": round(features.nbytes / 1e6, 3), "seconds": round(seconds, 3),
                              "fp16_logit_error": error, "reused": False}
            if self.verbose:
                check = f", float16 logit error {error:.1e} of the largest logit" if error is not None else ""
                print(f"cached backbone features of {'/'.join(key)}: {v} view(s) x {n} chips x {f} "
                      f"{self.info[key]['dtype']} = {self.info[key]['mb']:.1f} MB in "
                      f"{self.info[key]['seconds']:.1f} s{check}", flush=True)
        else:
            self.info[key] = dict(self.info.get(key, {}), reused=True)
        return self._entries[entry]

    @torch.no_grad()
    def compute(self, backbone, images, views):
        """backbone(view_v(chip)) for every view v < views and chip, in batches: (V, N, F)."""
        out = None
        n = images.shape[0]
        for v in range(views):
            for start in range(0, n, self.batch_size):
                x = model_input(data.view(images[start:start + self.batch_size], v), self.device)
                with self.precision.autocast():
                    f = backbone(x)  # (B, F)
                if out is None:
                    out = torch.empty((views, n, f.shape[1]), dtype=f.dtype, device=f.device)
                out[v, start:start + len(f)] = f
        return out

    @torch.no_grad()
    def narrow(self, features, head):
        """(float16 features, measured logit error) if float16 is exact enough, else (features, error)."""
        half = features.to(torch.float16)
        rows = features.reshape(-1, features.shape[-1])[:FP16_CHECK_ROWS]
        was_training = head.training
        head.eval()  # no dropout: the check draws nothing from the global generator
        try:
            exact = head(rows).float()
            approx = head(half.reshape(-1, half.shape[-1])[:FP16_CHECK_ROWS].float()).float()
        finally:
            head.train(was_training)
        error = ((approx - exact).abs().max() / exact.abs().max().clamp_min(1e-12)).item()
        error = error if math.isfinite(error) else math.inf  # features beyond float16's range
        if torch.isfinite(half).all() and error <= FP16_LOGIT_TOL:
            return half, error
        return features, error
