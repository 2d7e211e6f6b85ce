"""cam_scores.py: the centre prior (fit, lift), all-zero maps, the outcome split, confidence change and ROAD, and
the region / hull area of ship_regions.py. Hand-made maps and a tiny untrained model: no grid is trained."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import cam_scores
import ship_regions

SIZE = 48


def _disc(centre, radius, size=SIZE):
    rows, cols = np.mgrid[0:size, 0:size]
    return np.hypot(rows - centre[0], cols - centre[1]) <= radius


@pytest.mark.parametrize("sigma", [0.04, 0.1, 0.2, 0.45])
def test_fitted_sigma_recovers_synthetic_gaussian_maps(sigma):
    maps = np.stack([cam_scores.prior_map(SIZE, sigma)] * 5)       # min-max scaled, as pytorch-grad-cam
    assert cam_scores.fit_sigma(maps.mean(0))["sigma"] == pytest.approx(sigma, rel=1e-3)
    # an unscaled Gaussian on a floor, with another amplitude: the same width
    fit = cam_scores.fit_sigma(0.3 + 2.0 * cam_scores.gaussian(SIZE, sigma))
    assert fit["sigma"] == pytest.approx(sigma, rel=1e-3) and fit["r2"] == pytest.approx(1.0)
    assert fit["offset"] == pytest.approx(0.3, abs=1e-4) and fit["amplitude"] == pytest.approx(2.0, rel=1e-3)
    # noise on the maps moves it little
    noisy = maps + np.random.default_rng(0).normal(0, 0.05, maps.shape)
    assert cam_scores.fit_sigma(noisy.mean(0))["sigma"] == pytest.approx(sigma, rel=0.05)


def test_prior_itself_has_lift_one():
    prior = cam_scores.prior_map(SIZE, 0.1)
    regions = [_disc((23.5, 23.5), 4), _disc((30, 20), 6), _disc((10, 35), 3), None]
    rows, fit = cam_scores.score_maps(np.stack([prior] * len(regions)), regions)
    assert fit["sigma"] == pytest.approx(0.1, rel=1e-3)
    for row in rows[:3]:
        assert row["lift_prior"] == pytest.approx(1.0, abs=1e-4)
        assert row["lift_uniform"] > 1 or row is rows[2]     # a centred blob beats uniform on a centred ship
        assert not row["zero_map"] and row["prior_sigma"] == fit["sigma"]
    assert rows[0]["lift_uniform"] > 10      # the review's point: the centre alone lifts far over uniform
    assert rows[0]["prior_peak_on_ship"] == 1.0 and rows[2]["prior_peak_on_ship"] == 0.0
    assert np.isnan(rows[3]["on_ship_energy"]) and np.isnan(rows[3]["lift_prior"])   # no region: unscored


def _blob(centre, sigma_px, size=SIZE):
    rows, cols = np.mgrid[0:size, 0:size]
    return cam_scores.minmax(np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma_px ** 2)))


def test_map_on_an_off_centre_ship_beats_the_prior():
    # seven centred ships whose maps are centred blobs, and one ship off the centre whose map follows it
    centres = [(23.5, 23.5)] * 7 + [(10, 36)]
    regions = [_disc(c, 5) for c in centres]
    maps = np.stack([_blob(c, 4.0) for c in centres])
    rows, fit = cam_scores.score_maps(maps, regions)
    assert fit["sigma"] == pytest.approx(4.0 / SIZE, rel=0.2)       # the centred blobs dominate the mean
    off = rows[-1]
    assert off["lift_prior"] > 1 and off["lift_uniform"] > 1 and off["peak_on_ship"] == 1.0
    assert off["prior_peak_on_ship"] == 0.0 and off["lift_prior"] > off["lift_uniform"]
    assert rows[0]["lift_prior"] == pytest.approx(1.0, rel=0.1)      # the centred maps: no better than the prior


def test_zero_maps_are_scored_as_uniform():
    region = _disc((20, 26), 5)
    maps = np.stack([np.zeros((SIZE, SIZE)), cam_scores.prior_map(SIZE, 0.15)])
    rows, _ = cam_scores.score_maps(maps, [region, region])
    zero = rows[0]
    area = region.mean()
    assert zero["zero_map"] and not rows[1]["zero_map"]
    assert zero["on_ship_energy"] == pytest.approx(area) and zero["peak_on_ship"] == pytest.approx(area)
    assert zero["lift_uniform"] == pytest.approx(1.0)
    assert zero["lift_prior"] == pytest.approx(area / zero["prior_energy"])
    # only zero maps: no central excess, the prior is uniform and every lift 1
    rows, fit = cam_scores.score_maps(np.zeros((2, SIZE, SIZE)), [region, region])
    assert fit["sigma"] == math.inf and rows[0]["lift_prior"] == pytest.approx(1.0)
    assert rows[0]["prior_peak_on_ship"] == pytest.approx(area)


def test_centre_share_and_region_to_hull():
    odd, even = np.zeros((5, 5), bool), np.zeros((6, 6), bool)
    odd[2, 2] = True
    even[2, 2:4] = True
    assert cam_scores.centre_share(odd) == 1.0 and cam_scores.centre_share(even) == 0.5
    # FUSAR-Ship's centre disc: diameter sqrt(L^2 + W^2), area pi/4 (L^2 + W^2) = 4.8 x L W for L = 6 W
    row = {"ship_length_m": 120.0, "ship_width_m": 20.0, "spacing_row_m": 1.0, "spacing_col_m": 1.0}
    disc = ship_regions.disc_region((301, 301), math.hypot(120, 20), (1.0, 1.0))
    assert ship_regions.region_to_hull(row, disc) == pytest.approx(math.pi / 4 * (120 ** 2 + 20 ** 2) / 2400,
                                                                   rel=0.01)
    assert np.isnan(ship_regions.region_to_hull({**row, "ship_width_m": ""}, disc))
    assert np.isnan(ship_regions.region_to_hull(row, None))


def _scores_frame():
    """cam_scores rows of one model on one set: 3 correct (one all-zero), 2 wrong, one chip without a region."""
    rows = []
    for k, (true, pred, zero, source) in enumerate([("A", "A", False, "centre_disc"), ("A", "A", True, "centre_disc"),
                                                    ("B", "B", False, "centre_disc"), ("B", "A", False, "centre_disc"),
                                                    ("A", "B", False, "none")]):
        known = source != "none"
        rows.append({"set": "fusar", "model": "cnn", "path": f"p{k}", "true": true, "pred": pred,
                     "correct": true == pred, "zero_map": zero, "region_source": source,
                     "on_ship_energy": 0.1 * (k + 1) if known else np.nan,
                     "ship_area_fraction": 0.05 if known else np.nan, "prior_energy": 0.2 if known else np.nan,
                     "peak_on_ship": 1.0 if known else np.nan, "prior_peak_on_ship": 1.0 if known else np.nan,
                     "conf_change": -0.1 * k, "conf_change_prior": -0.5, "region_to_hull": 4.8 if known else np.nan})
    return pd.DataFrame(rows)


def test_summary_split_by_outcome():
    extras = {("fusar", "cnn"): {"prior_sigma": 0.1, "prior_fit_r2": 0.9, "cam_s_per_chip": 0.01,
                                 "conf_s_per_chip": 0.002}}
    summary = cam_scores.summarise(_scores_frame(), extras).set_index("outcome")
    assert list(summary.index) == ["all", "correct", "wrong"]
    assert summary.loc["all", ["n", "n_scored", "n_zero"]].tolist() == [5, 4, 1]
    assert summary.loc["correct", ["n", "n_scored", "n_zero"]].tolist() == [3, 3, 1]
    assert summary.loc["wrong", ["n", "n_scored", "n_zero"]].tolist() == [2, 1, 0]
    assert summary.loc["correct", "on_ship_energy"] == pytest.approx(0.2)          # (0.1 + 0.2 + 0.3) / 3
    assert summary.loc["correct", "lift"] == pytest.approx(4.0)                    # 0.2 / 0.05
    assert summary.loc["correct", "lift_prior"] == pytest.approx(1.0)              # 0.2 / 0.2
    assert summary.loc["wrong", "conf_change"] == pytest.approx(-0.35)             # every chip, scored or not
    assert summary.loc["all", "approximate"] and summary.loc["all", "region_to_hull"] == pytest.approx(4.8)
    assert summary.loc["all", "region_sources"] == "centre_disc:4" and summary.loc["all", "exact_share"] == 0
    assert (summary["prior_sigma"] == 0.1).all() and (summary["map_scaling"] == "after_minmax").all()
    # read back from the CSV (flags as text): the same counts
    again = cam_scores.summarise(_scores_frame().astype(str).replace("nan", ""), extras)
    assert again["n_zero"].tolist() == [1, 1, 0] and again["n_scored"].tolist() == [4, 3, 1]


class _Tiny(torch.nn.Module):
    """A fixed untrained classifier of (B, 1, S, S) inputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_confidence_change_matches_the_definition():
    model = _Tiny().eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 16, 16), dtype=np.uint8)
    maps = rng.random((5, 16, 16)).astype(np.float32)
    maps[1] = 0.0                      # all zero: counted as uniform
    maps[2] = 1.0                      # uniform: nothing changes
    preds = np.array([0, 1, 2, 0, 1])
    got = cam_scores.confidence_change(model, images, maps, preds, "cpu", batch_size=2)
    x = torch.from_numpy(images).float()[:, None] / 255
    with torch.no_grad():
        before = torch.softmax(model(x), 1)[range(5), preds]
        as_uniform = torch.from_numpy(np.where(maps.max((1, 2), keepdims=True) > 0, maps, 1))[:, None]
        after = torch.softmax(model(x * as_uniform), 1)[range(5), preds]
    np.testing.assert_allclose(got, (after - before).numpy(), atol=1e-6)
    assert got[1] == pytest.approx(0, abs=1e-7) and got[2] == pytest.approx(0, abs=1e-7)


def test_road_on_a_fixed_subset():
    model = _Tiny().eval()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 16, 16), dtype=np.uint8)
    maps = rng.random((4, 16, 16)).astype(np.float32)
    maps[3] = 0
    base = [{"set": "fusar", "model": "cnn", "path": f"p{k}", "true": "A", "pred": "A"} for k in range(4)]
    prior = cam_scores.prior_map(16, 0.2)
    rows = cam_scores.road_rows(base, model, images, maps, np.zeros(4, int), prior, [0, 3], "cpu")
    assert [(r["path"], r["map"]) for r in rows] == [("p0", "cam"), ("p0", "prior"), ("p3", "cam"), ("p3", "prior")]
    assert all(list(r) == cam_scores.ROAD_COLUMNS for r in rows)
    first, zero = rows[0], rows[2]
    assert np.isfinite(first["road_combined"]) and first["seconds"] > 0
    assert first["road_combined"] == pytest.approx((first["road_lerf"] - first["road_morf"]) / 2)
    assert zero["zero_map"] and np.isnan(zero["road_combined"])
    again = cam_scores.road_rows(base, model, images, maps, np.zeros(4, int), prior, [0], "cpu")
    assert again[0]["road_morf"] == first["road_morf"]            # seeded: the imputer's noise repeats
    summary = cam_scores.road_summary(pd.DataFrame(rows))
    assert summary[["map", "n"]].values.tolist() == [["cam", 1], ["prior", 2]]
    # the subset: fixed per set and seed, capped at the chips there are
    assert cam_scores.road_indices(10, 4, 0, "fusar") == cam_scores.road_indices(10, 4, 0, "fusar")
    assert cam_scores.road_indices(10, 4, 0, "fusar") != cam_scores.road_indices(10, 4, 1, "fusar")
    assert cam_scores.road_indices(3, 4, 0, "fusar") == [0, 1, 2] and cam_scores.road_indices(3, 0, 0, "x") == []


def test_poor_fits_fall_back_to_a_uniform_prior():
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    plane = (rows + 2 * cols) / (3 * SIZE)                       # a tilted plane: nothing centred
    plane[23:25, 23:25] += 0.05                                 # a bump a spike would fit
    fit = cam_scores.fit_sigma(plane)
    assert fit["sigma"] == math.inf and fit["r2"] < cam_scores.R2_MIN


def test_road_equals_the_library_metric():
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = _Tiny().eval()
    image = np.random.default_rng(2).integers(0, 256, size=(16, 16), dtype=np.uint8)
    cam_map = cam_scores.prior_map(16, 0.2).astype(np.float32)
    morf, lerf, _ = cam_scores.road(model, image, cam_map, 1, "cpu", seed=5)
    x = torch.from_numpy(image).float()[None, None] / 255
    targets = [ClassifierOutputSoftmaxTarget(1)]
    torch.manual_seed(5)
    want_morf = ROADMostRelevantFirstAverage(list(cam_scores.ROAD_PERCENTILES))(x, cam_map[None], targets, model)[0]
    want_lerf = ROADLeastRelevantFirstAverage(list(cam_scores.ROAD_PERCENTILES))(x, cam_map[None], targets, model)[0]
    assert (morf, lerf) == (pytest.approx(want_morf, abs=1e-6), pytest.approx(want_lerf, abs=1e-6))


def test_wide_summary_for_the_report():
    summary = cam_scores.summarise(_scores_frame())
    road = pd.DataFrame([{"set": "fusar", "model": "cnn", "map": m, "zero_map": False, "road_morf": -0.2,
                          "road_lerf": lerf, "road_combined": (lerf + 0.2) / 2, "seconds": 1.0}
                         for m, lerf in (("cam", 0.0), ("prior", -0.2))])
    wide = cam_scores.wide_summary(summary, road)
    assert len(wide) == 1
    row = wide.iloc[0]
    assert (row["n"], row["n_zero"], row["n_correct"], row["n_wrong"]) == (5, 1, 3, 2)
    assert row["lift_prior_correct"] == pytest.approx(1.0) and row["approximate"]
    assert (row["road_combined"], row["road_combined_prior"]) == (pytest.approx(0.1), pytest.approx(0.0))
