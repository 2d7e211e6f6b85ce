"""grad_cams.py's scores of a heat map beyond the bare on-ship share: a centre-prior baseline, all-zero maps,
the correct/wrong split, faithfulness (confidence change, ROAD) and the per-(set, model, outcome) summary.

    import cam_scores
    fit = cam_scores.fit_sigma(maps.mean(0))                  # the centre prior of one model on one set
    prior = cam_scores.prior_map(size, fit["sigma"])          # a centred Gaussian, scaled like a CAM
    rows, fit = cam_scores.score_maps(maps, regions)          # per chip: shares, peaks, lifts, zero flag
    change = cam_scores.confidence_change(model, images, maps, preds, "cpu")
    morf, lerf, seconds = cam_scores.road(model, image, cam_map, pred, "cpu")
    summary = cam_scores.summarise(scores, extras)            # per set, model and outcome (all/correct/wrong)
    table = cam_scores.wide_summary(summary, road_scores)     # per set and model: what a report shows

Why a centre prior. Every chip is centred on its ship, so a model-free map that merely looks at the middle
scores "on ship" far above a uniform map (a centred Gaussian with sigma = 0.1 of the side lifts 8.8 over
uniform on OpenSARShip, 12.2 on FUSAR-Ship). The baseline is therefore a centred isotropic Gaussian whose width
is fitted, per set and model, by least squares to the MEAN of all that model's maps on that set (mean ~ offset
+ amplitude x G_sigma; offset and amplitude are nuisance parameters: the offset absorbs the floor that
averaging wandering blobs leaves, and the negative one of min-max scaling, which would otherwise bias sigma).
sigma is a fraction of the map's side, searched in SIGMA_BOUNDS. A mean map that is not centre-like gets sigma =
inf, a uniform prior (lift_prior = lift over uniform), rather than a meaningless fit: no central excess
(amplitude 0, e.g. only all-zero maps), or a fit explaining less than R2_MIN of its variance (e.g. a few ResNet
maps, bilinear ramps from a 2x2 grid, whose mean is a tilted plane: the least-squares Gaussian is then a one-pixel
spike at the centre, a baseline no map could beat). prior_fit_r2 in cam_summary.csv shows the fit's quality.
The prior map is G_sigma min-max scaled exactly as pytorch-grad-cam scales its maps, so prior and CAM are
compared on one footing. Per chip:
  prior_energy        the prior's on-ship energy share on the same chip's region
  prior_peak_on_ship  share of the prior's central pixel(s) (1 for odd sides, 4 for even) on the ship
  lift_prior          on_ship_energy / prior_energy: 1 = no better than looking at the chip centre
  lift_uniform        on_ship_energy / ship_area_fraction: 1 = no better than a uniform map (the former `lift`)
The summary's lifts are ratios of means over the scored chips (lift = mean energy / mean area, lift_prior =
mean energy / mean prior energy), the per-chip ones are in cam_scores.csv.

All-zero maps (a CAM negative everywhere, or constant: pytorch-grad-cam returns zeros) are scored as the
uniform map they are equivalent to: on_ship_energy = ship_area_fraction, peak_on_ship = ship_area_fraction (the
chance that a tie-broken peak lands on the ship), confidence change 0 (multiplying by a uniform map of ones
changes nothing); ROAD is left empty for them (no ranking of pixels). They stay in n and n_scored and are
counted in n_zero. Only chips without a known ship region are unscored (n - n_scored).

Which map is scored: SCALING_NOTE (below) says it; in short the map after pytorch-grad-cam's per-map min-max
scaling, because that is the only map the library returns.

Faithfulness (the map's effect on the model, beside where it lies), for the predicted class's softmax
probability (ClassifierOutputSoftmaxTarget), also for the centre prior as a baseline:
  conf_change        pytorch_grad_cam.metrics.cam_mult_image.CamMultImageConfidenceChange: p(image x map) -
                     p(image), the input being the model's [0, 1] chip (engine.model_input: no normalisation,
                     so a pixel the map ignores becomes black, i.e. calm sea). Two forward passes per chip: 0.04 s
                     per chip on a CPU at 48-64 px, every explained chip, with the prior twice that.
  ROAD               pytorch_grad_cam.metrics.road (Rong et al. 2022): the chip's most (MoRF) or least (LeRF)
                     relevant pixels are replaced by noisy linear imputation at ROAD_PERCENTILES and the change of
                     p averaged; road_combined = (LeRF - MoRF) / 2 as ROADCombined (higher: more faithful). The
                     library's own remover and imputer, in its order (same noise, same numbers), but the 18
                     imputed chips go through the model in one batch, not 36 single passes (the library re-runs
                     the clean chip per percentile): VGG at 64 px went from 4.4 s to about 0.8 s per map. Each
                     percentile still solves a sparse linear system on the CPU (scipy), whatever the device.
                     Measured on a shared 2-core
                     CPU: 0.3-1.2 s per map at 64 px; at 224 px 7 s (cnn, fine_resnet) to 17 s (vgg, fine_vgg)
                     per map, twice per chip with the prior (Grad-CAM itself: 0.2-1.5 s per chip at 224 px, the
                     confidence change 0.07-0.5 s). Hence a small seeded subset (grad_cams.py --road-chips).
"""
import math
import time
import warnings
import zlib

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from scipy.optimize import minimize_scalar

import engine
from ship_regions import on_ship_scores

SIGMA_BOUNDS = (0.01, 1.0)          # the prior's sigma, as a fraction of the map's side
R2_MIN = 0.5                        # a fit explaining less of the mean map's variance: no centre prior (uniform)
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)   # pytorch-grad-cam's ROADCombined default
# Region sources whose region is an estimate (ship_regions.py): FUSAR-Ship's centre disc (no heading: a disc
# about 5x the hull's area) and OpenSARShip chips without an AIS width.
APPROXIMATE_SOURCES = ("centre_disc", "head_tail_est_width")
MAP_SCALING = "after_minmax"        # cam_summary.csv `map_scaling`: which map the energy share is computed on
SCALING_NOTE = (
    "On-ship energy shares are computed on the heat maps exactly as pytorch-grad-cam returns them, i.e. after "
    "its per-map min-max scaling (BaseCAM: ReLU of the weighted activations, scale_cam_image subtracts the "
    "map's minimum and divides by its maximum at the target layer's resolution, the map is resized to the "
    "input, and scaled once more): the division leaves a share unchanged, the subtraction removes the map's "
    "floor, which is zero after the ReLU unless the whole coarse map is positive, and the library returns no "
    "unscaled map; the centre prior is scaled the same way.")
OUTCOMES = ("all", "correct", "wrong")
CHIP_COLUMNS = ["correct", "zero_map", "prior_energy", "prior_peak_on_ship", "lift_uniform", "lift_prior",
                "conf_change", "conf_change_prior", "region_exact", "region_to_hull", "prior_sigma"]
ROAD_COLUMNS = ["set", "model", "path", "true", "pred", "map", "zero_map", "road_morf", "road_lerf",
                "road_combined", "seconds", "img_size", "percentiles"]


# ---------------------------------------------------------------------------------------------- the prior
def gaussian(size, sigma):
    """A centred isotropic Gaussian (size, size), 1 at the exact centre ((size - 1) / 2); sigma: fraction of
    the side."""
    r = np.arange(size) - (size - 1) / 2
    s = sigma * size
    return np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * s * s))


def minmax(m):
    """pytorch-grad-cam's scale_cam_image on one map (without its 1e-7): min to 0, max to 1; flat: zeros."""
    m = np.asarray(m, dtype=np.float64) - np.min(m)
    top = m.max()
    return m / top if top > 0 else np.zeros_like(m)


def prior_map(size, sigma):
    """The centre prior (size, size) in [0, 1]: G_sigma min-max scaled like a CAM; sigma inf: uniform ones."""
    if not math.isfinite(sigma):
        return np.ones((size, size))
    g = minmax(gaussian(size, sigma))
    return g if g.max() > 0 else np.ones((size, size))


def _least_squares(mean_map, g):
    """(residual sum of squares, offset, amplitude) of mean_map ~ offset + amplitude x g, amplitude >= 0."""
    y, x = mean_map.ravel(), g.ravel()
    design = np.stack([np.ones_like(x), x], axis=1)
    (offset, amplitude), *_ = np.linalg.lstsq(design, y, rcond=None)
    if amplitude < 0:
        offset, amplitude = float(y.mean()), 0.0
    return float(((y - offset - amplitude * x) ** 2).sum()), float(offset), float(amplitude)


def fit_sigma(mean_map, bounds=SIGMA_BOUNDS):
    """The centre prior's fit to a model's mean map (S, S): {sigma (fraction of side; inf, a uniform prior, when
    the map has no central excess or the Gaussian explains less than R2_MIN of its variance), offset,
    amplitude, r2 (share of the mean map's variance the fit explains)}. A coarse log grid, then a bounded
    refinement around its best."""
    mean_map = np.asarray(mean_map, dtype=np.float64)
    size = mean_map.shape[0]
    grid = np.geomspace(*bounds, 41)
    sse = [_least_squares(mean_map, gaussian(size, s))[0] for s in grid]
    k = int(np.argmin(sse))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best = minimize_scalar(lambda t: _least_squares(mean_map, gaussian(size, math.exp(t)))[0],
                           bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": 1e-6})
    sigma = math.exp(best.x) if best.fun <= sse[k] else float(grid[k])
    err, offset, amplitude = _least_squares(mean_map, gaussian(size, sigma))
    total = float(((mean_map - mean_map.mean()) ** 2).sum())
    r2 = 1 - err / total if total > 0 else 0.0
    if not (amplitude > 0 and r2 >= R2_MIN):
        sigma = math.inf
    return {"sigma": sigma, "offset": offset, "amplitude": amplitude, "r2": r2}


def centre_share(region):
    """Share of the central pixel(s) of a region (1 for an odd side, the 4 middle ones for an even side) that
    are ship: where a centred Gaussian peaks."""
    h, w = region.shape
    rows = sorted({(h - 1) // 2, h // 2})
    cols = sorted({(w - 1) // 2, w // 2})
    return float(np.asarray(region)[np.ix_(rows, cols)].mean())


# ------------------------------------------------------------------------------------------- per-chip scores
def is_zero(cam_map):
    return not float(np.max(cam_map)) > 0


def chip_scores(cam_map, region, prior, prior_energy=None):
    """The on-ship scores of one map against its region (bool, or None: unknown) and the centre prior map; an
    all-zero map is scored as a uniform map."""
    zero = is_zero(cam_map)
    out = {"zero_map": zero}
    if region is None:
        return {**out, **dict.fromkeys(["on_ship_energy", "peak_on_ship", "ship_area_fraction", "prior_energy",
                                        "prior_peak_on_ship", "lift_uniform", "lift_prior"], np.nan)}
    energy, peak, area = on_ship_scores(np.ones(region.shape) if zero else cam_map, region)
    peak = area if zero else float(peak)
    if prior_energy is None:
        prior_energy = on_ship_scores(prior, region)[0]
    prior_peak = area if prior.min() == prior.max() else centre_share(region)
    return {**out, "on_ship_energy": energy, "peak_on_ship": peak, "ship_area_fraction": area,
            "prior_energy": prior_energy, "prior_peak_on_ship": prior_peak,
            "lift_uniform": energy / area if area > 0 else np.nan,
            "lift_prior": energy / prior_energy if prior_energy > 0 else np.nan}


def score_maps(maps, regions):
    """(per-chip score dicts, prior fit) of one model's maps (N, S, S) on one set; regions: bool (S, S) or None
    per chip. The prior is fitted to the mean of all N maps (all-zero ones included)."""
    maps = np.asarray(maps)
    fit = fit_sigma(maps.mean(axis=0))
    prior = prior_map(maps.shape[-1], fit["sigma"])
    rows = [{**chip_scores(m, r, prior), "prior_sigma": fit["sigma"]} for m, r in zip(maps, regions)]
    return rows, fit


# ------------------------------------------------------------------------------------------------ faithfulness
def _input(images, device):
    chips = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return engine.model_input(chips, device)


def _as_uniform(maps):
    """The maps as float32 with every all-zero map replaced by ones (the uniform map it is scored as)."""
    maps = np.array(maps, dtype=np.float32)
    maps[[is_zero(m) for m in maps]] = 1.0
    return maps


def confidence_change(model, images, maps, preds, device, batch_size=16):
    """CamMultImageConfidenceChange per chip: p_pred(chip x map) - p_pred(chip), float32 (N,); all-zero maps
    count as uniform (change 0). images uint8 (N, S, S), maps (N, S, S) in [0, 1], preds (N,)."""
    device = torch.device(device)
    model = model.to(device).eval()
    metric, out = CamMultImageConfidenceChange(), []
    maps = _as_uniform(maps)
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        targets = [ClassifierOutputSoftmaxTarget(int(p)) for p in preds[part]]
        out.append(np.asarray(metric(_input(images[part], device), maps[part], targets, model), np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _road_average(model, x, cams, pred, remover, percentiles):
    """ROAD{Most,Least}RelevantFirstAverage of pytorch-grad-cam for one chip x (1, 1, S, S), computed as the
    library does (its remover and NoisyLinearImputer, in its order, so the imputer's noise is the same) but with
    one batched forward pass instead of two per percentile: mean over percentiles of p_pred(imputed) - p_pred(x)."""
    cam = torch.from_numpy(cams[0])
    imputed = torch.stack([remover(p, NoisyLinearImputer())(x[0].cpu(), cam) for p in percentiles]).to(x.device)
    with torch.no_grad():
        probs = torch.softmax(model(torch.cat([x, imputed])).float(), 1)[:, int(pred)].cpu().numpy()
    return float(np.mean(probs[1:] - probs[0]))


def road(model, image, cam_map, pred, device, percentiles=ROAD_PERCENTILES, seed=0):
    """(MoRF, LeRF, seconds) of one chip (uint8 (S, S)) and map: mean change of p_pred when the most / least
    relevant pixels are imputed at each percentile; NaNs for an all-zero map. Seeded (the imputer's noise)."""
    if is_zero(cam_map):
        return np.nan, np.nan, 0.0
    device = torch.device(device)
    model = model.to(device).eval()
    start = time.perf_counter()
    x = _input(image[None], device)
    cams = np.ascontiguousarray(cam_map, dtype=np.float32)[None]
    torch.manual_seed(seed)
    with warnings.catch_warnings():   # the library's imputer calls numpy on torch tensors (NumPy 2 deprecation)
        warnings.simplefilter("ignore", DeprecationWarning)
        morf = _road_average(model, x, cams, pred, RemoveMostRelevantFirst, percentiles)
        lerf = _road_average(model, x, cams, pred, RemoveLeastRelevantFirst, percentiles)
    return morf, lerf, time.perf_counter() - start


def road_rows(base_rows, model, images, maps, preds, prior, indices, device, seed=0):
    """ROAD rows (ROAD_COLUMNS) of the chips at `indices`, for the CAM map and the centre prior; base_rows: the
    chips' cam_scores rows (set, model, path, true, pred)."""
    out = []
    for k in indices:
        for name, cam_map in (("cam", maps[k]), ("prior", prior)):
            morf, lerf, seconds = road(model, images[k], cam_map, preds[k], device, seed=seed + int(k))
            out.append({**{c: base_rows[k][c] for c in ("set", "model", "path", "true", "pred")}, "map": name,
                        "zero_map": is_zero(cam_map), "road_morf": morf, "road_lerf": lerf,
                        "road_combined": (lerf - morf) / 2, "seconds": seconds, "img_size": images.shape[-1],
                        "percentiles": " ".join(map(str, ROAD_PERCENTILES))})
    return out


def road_indices(n, count, seed, set_name):
    """The fixed subset of `count` chip indices (of n) ROAD is run on for every model of a set: seeded by the
    selection seed and the set's name, sorted."""
    rng = np.random.default_rng([seed, zlib.crc32(set_name.encode())])
    return sorted(int(k) for k in rng.choice(n, size=min(count, n), replace=False))


def score_model(rows, model, images, maps, preds, regions, device, batch_size=16, road_at=(), seed=0):
    """Score one model's maps on one set: fills each chip's row (rows: grad_cams.py's cam_scores rows, updated in
    place) with score_maps' scores and the confidence changes of the map and the prior; returns (ROAD rows of the
    chips at `road_at`, {prior_sigma, prior_fit_r2, conf_s_per_chip})."""
    scores, fit = score_maps(maps, regions)
    prior = prior_map(maps.shape[-1], fit["sigma"])
    start = time.perf_counter()
    change = confidence_change(model, images, maps, preds, device, batch_size)
    conf_s = (time.perf_counter() - start) / max(len(images), 1)
    change_prior = confidence_change(model, images, np.repeat(prior[None], len(images), 0), preds, device,
                                     batch_size)
    for row, score, c, cp in zip(rows, scores, change, change_prior):
        row.update(score, conf_change=float(c), conf_change_prior=float(cp))
    road = road_rows(rows, model, images, maps, preds, prior, road_at, device, seed)
    return road, {"prior_sigma": fit["sigma"], "prior_fit_r2": fit["r2"], "conf_s_per_chip": conf_s}


# ---------------------------------------------------------------------------------------------------- summaries
def _flag(column):
    """A bool column as written in memory (bool) or read back from a CSV ('True'/'False')."""
    return column.astype(str) == "True"


def _mean(column):
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.mean()) if len(values) else np.nan


def _ratio(a, b):
    return a / b if b > 0 else np.nan


def _stats(g):
    """The summary statistics of some chips of one set and model (g: their cam_scores rows)."""
    scored = g[pd.to_numeric(g["ship_area_fraction"], errors="coerce").notna()]
    energy, area = _mean(scored["on_ship_energy"]), _mean(scored["ship_area_fraction"])
    prior = _mean(scored["prior_energy"])
    sources = scored["region_source"].value_counts()
    estimated = scored["region_source"].isin(APPROXIMATE_SOURCES)
    return {"n": len(g), "n_scored": len(scored), "n_zero": int(_flag(g["zero_map"]).sum()),
            "accuracy": float((g["true"] == g["pred"]).mean()) if len(g) else np.nan,
            "on_ship_energy": energy, "ship_area_fraction": area, "lift": _ratio(energy, area),
            "peak_on_ship": _mean(scored["peak_on_ship"]), "prior_energy": prior, "lift_prior": _ratio(energy, prior),
            "prior_peak_on_ship": _mean(scored["prior_peak_on_ship"]),
            "conf_change": _mean(g["conf_change"]), "conf_change_prior": _mean(g["conf_change_prior"]),
            "region_sources": " ".join(f"{k}:{v}" for k, v in sources.items()),
            "approximate": bool(estimated.any()), "exact_share": float(1 - estimated.mean()) if len(scored) else np.nan,
            "region_to_hull": _mean(scored["region_to_hull"])}


def summarise(scores, extras=None):
    """cam_summary.csv: per set, model and outcome (all, correct: pred == true, wrong) the chips (n), those with a
    known region (n_scored, all-zero maps included), the all-zero maps (n_zero), accuracy, mean on-ship energy,
    the uniform baseline and lift, peaks, the centre prior's energy, lift and peaks, the mean confidence changes
    (CAM, prior), the region sources, `approximate` (some region is an estimate: APPROXIMATE_SOURCES) and
    exact_share (the share that is not), the mean region / hull area, and from extras {(set, model): {...}} the
    prior's sigma and fit and the timings."""
    rows = []
    for (set_name, model_name), g in scores.groupby(["set", "model"], sort=False):
        correct = _flag(g["correct"])
        extra = (extras or {}).get((set_name, model_name), {})
        for outcome, part in zip(OUTCOMES, (g, g[correct], g[~correct])):
            rows.append({"set": set_name, "model": model_name, "outcome": outcome, **_stats(part),
                         "prior_sigma": extra.get("prior_sigma", np.nan),
                         "prior_fit_r2": extra.get("prior_fit_r2", np.nan),
                         "cam_s_per_chip": extra.get("cam_s_per_chip", np.nan),
                         "conf_s_per_chip": extra.get("conf_s_per_chip", np.nan), "map_scaling": MAP_SCALING})
    return pd.DataFrame(rows)


def road_summary(road_scores):
    """Per set, model and map (cam, prior): chips, mean MoRF, LeRF and combined ROAD, seconds per map."""
    if not len(road_scores):
        return pd.DataFrame(columns=["set", "model", "map", "n", "road_morf", "road_lerf", "road_combined",
                                     "s_per_map"])
    g = road_scores.groupby(["set", "model", "map"], sort=False)
    timed = road_scores[~_flag(road_scores["zero_map"])].groupby(["set", "model", "map"], sort=False)
    out = g[["road_morf", "road_lerf", "road_combined"]].mean()
    out.insert(0, "n", g["road_combined"].count())
    out["s_per_map"] = timed["seconds"].mean()
    return out.reset_index()


def wide_summary(summary, road_scores=None):
    """One row per set and model from cam_summary.csv (and road_scores.csv): what a report shows. n, n_zero,
    on-ship energy, lift_prior and lift (uniform) over all chips, lift_prior of the correct and wrong ones,
    the confidence changes (map, prior), `approximate`, region_to_hull, prior_sigma, and, with road_scores,
    the mean combined ROAD of the map and of the prior."""
    keys = ["set", "model"]
    every = summary[summary["outcome"] == "all"].set_index(keys)
    out = every[["n", "n_zero", "on_ship_energy", "prior_energy", "ship_area_fraction", "lift_prior", "lift",
                 "conf_change", "conf_change_prior", "approximate", "region_to_hull", "prior_sigma"]].copy()
    for outcome in ("correct", "wrong"):
        part = summary[summary["outcome"] == outcome].set_index(keys)
        out[f"n_{outcome}"] = part["n"]
        out[f"lift_prior_{outcome}"] = part["lift_prior"]
    if road_scores is not None and len(road_scores):
        road = road_summary(road_scores).pivot(index=keys, columns="map", values="road_combined")
        out["road_combined"] = road.get("cam")
        out["road_combined_prior"] = road.get("prior")
    return out.reset_index()
