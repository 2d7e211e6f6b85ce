"""The cues the synthetic data shares with the real data, and those it must not invent (issue 16, section 4):
chips cut at 3.9 AIS lengths as measured on the real scenes, the sea's backscatter drawn by the same physics
whatever the ship's class (the 8-bit sea level then follows from each chip's max scaling), Cargo and Tanker told
apart by deck structure at FUSAR's resolution but hardly at Sentinel-1's, the incidence angle in every Ship.xml
record.

    python -m pytest tests/test_synthetic_cues.py -q
"""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from test_synthetic import co_pol, read_chip, record_of, scenes_of

import simulator
import synthetic
import synthetic_opensarship

SEED, N_CHIPS = 3, 64  # with the per-class floor ~100 OpenSARShip chips, ~2 s
FUSAR_SENSOR = simulator.Sensor((1.7, 1.124), simulator.GF3_RESOLUTION, 1.0, simulator.GF3_WINDOW)


@pytest.fixture(scope="module")
def oss(tmp_path_factory):
    """Synthetic OpenSARShip scene archives only (FUSAR-Ship is not needed here)."""
    out = tmp_path_factory.mktemp("cues") / "synthetic"
    (out / "opensarship").mkdir(parents=True)
    bar = SimpleNamespace(update=lambda n: None)
    for acq in synthetic.plan_opensarship(SEED, N_CHIPS):
        for product in ("GRD", "SLC") if acq.slc_id is not None else ("GRD",):
            synthetic_opensarship.write_oss_scene(SEED, acq, product, out / "opensarship",
                                                  out / "masks" / "opensarship", bar)
    return scenes_of(out)


def _ais(scene, key, field):
    return float(record_of(scene, key)["AISShipInformation"][field])


# -------------------------------------------------------------------------------- chip extent
def test_chip_side_is_3_9_ais_lengths_over_the_azimuth_spacing(oss):
    # Real sample scenes: GRD side / (L / 10 m) 3.87 at the median, 10th-90th percentile 3.3-4.4, correlation with
    # L 0.90; SLC side / (L / 13.9 m) 3.9. Ships under 17 px' worth of 3.9 L sit at the 17 px floor.
    ratio, lengths, sides, floor = {"GRD": [], "SLC": []}, [], [], []
    for s in oss:
        az = 10.0 if s["product"] == "GRD" else simulator.SLC_SPACING[0]
        for key in s["chips"]:
            length, side = _ais(s, key, "Length"), read_chip(s, key, "Patch_Uint8", co_pol(s)).shape[0]
            nominal = synthetic_opensarship.SIDE_PER_LENGTH * length / az
            if nominal < 0.75 * 17:
                floor.append(side)
            elif nominal > 25:
                ratio[s["product"]].append(side / (length / az))
                if s["product"] == "GRD":
                    lengths.append(length)
                    sides.append(side)
    grd, slc = np.array(ratio["GRD"]), np.array(ratio["SLC"])
    assert len(grd) >= 30 and len(slc) >= 5 and len(floor) >= 10
    assert 3.7 <= np.median(grd) <= 4.1, np.median(grd)
    p10, p90 = np.percentile(grd, [10, 90])
    assert 3.1 <= p10 and p90 <= 4.7, (p10, p90)
    assert np.corrcoef(lengths, sides)[0, 1] > 0.85
    # SLC: the same 3.9 L along azimuth, a little more where a ship along range needs the room (3.5 m pixels)
    assert 3.6 <= np.median(slc) <= 4.4, np.median(slc)
    assert set(floor) == {17}


# -------------------------------------------------------------------------------- sea level
def _border(a, width=2):
    ring = np.ones(a.shape, bool)
    ring[width:-width, width:-width] = False
    return a[ring]


def test_the_sea_does_not_depend_on_the_ship_class():
    # The same sighting rendered with the class swapped (same length, beam, heading, sea state): the sea pixels stay
    # the same in every polarisation, so a class changes the 8-bit sea level only through the chip's brightest
    # pixel (Patch_Uint8 = round(255 A / max A)), i.e. through the ship.
    acq = next(a for a in synthetic.plan_opensarship(SEED, N_CHIPS) if a.pol == "1SDV")
    sighting = acq.sightings[0]
    chips = {}
    for cls in ("Cargo", "Tanker", "Fishing"):
        vessel = dataclasses.replace(sighting.vessel, cls=cls)
        chips[cls] = synthetic_opensarship.render_oss_chip(SEED, acq, dataclasses.replace(sighting, vessel=vessel),
                                                           0, "GRD")
    ref = chips["Cargo"]
    for cls, chip in chips.items():
        assert chip["uint8"]["vv"].shape == ref["uint8"]["vv"].shape
        for i, pol in enumerate(chip["pols"]):
            sea, sea_ref = _border(chip["cal"][i]), _border(ref["cal"][i])
            assert np.median(np.abs(sea / sea_ref - 1)) < 0.02, (cls, pol)
            amp = np.sqrt(chip["cal"][i])
            u8 = _border(chip["uint8"][pol]).astype(float)
            assert abs(np.median(u8) - np.median(255 * _border(amp) / amp.max())) <= 1.0, (cls, pol)


def test_no_class_has_its_own_deck_brightness():
    # The diffuse deck backscatter (sigma0 of the deck clutter) is drawn alike for every class: the classes differ
    # by their structures, not by a brightness setting.
    rng, mmsis, level = np.random.default_rng(11), set(), {}
    for cls in ("Cargo", "Tanker", "Fishing", "Tug", "Passenger", "Other"):
        vals = []
        for _ in range(150):
            v = simulator.new_vessel(rng, cls, mmsis)
            clutter, _ = simulator.ship_layout(v)
            vals.append(10 * math.log10(clutter[:, 2].sum() / (0.8 * v.length * v.width)))
        level[cls] = float(np.median(vals))
    assert max(level.values()) - min(level.values()) < 1.0, level


def test_sea_backscatter_follows_wind_incidence_and_polarisation():
    # CMOD5.N: VV rises with the wind, falls with incidence, upwind above crosswind; VH far below VV, HH below VV
    vv = simulator.cmod5n
    assert vv(4, 90, 35) < vv(8, 90, 35) < vv(12, 90, 35)
    assert vv(8, 90, 30) > vv(8, 90, 38) > vv(8, 90, 46)
    assert vv(10, 0, 35) > vv(10, 90, 35)
    assert -13.5 < 10 * math.log10(vv(10, 90, 30)) < -10.5  # ~ -11.9 dB: the published function's value
    sea = simulator.sea_sigma0
    assert sea("vh", 8, 90, 35, -60) < sea("vv", 8, 90, 35, -60) / 20  # ~15 dB below
    assert sea("hh", 8, 90, 40, -60) < sea("vv", 8, 90, 40, -60)
    assert 0 < 10 * math.log10(sea("vh", 3, 90, 35, -25)) + 25 < 1  # a calm sea: little above the noise floor


# -------------------------------------------------------------------------------- deck structure
def _deck_variance(vessel, sensor, rng):
    """The ship rendered along the range axis; along-track profile of log intensity over the middle 60 % of the
    beam from 0.3 L aft to 0.38 L forward (the cargo deck), sampled every metre: its variance at the periods of
    hatches and container bays (6-32 m)."""
    dy, dx = sensor.spacing
    shape = (int(1.6 * vessel.width / dy) + 24, int(1.15 * vessel.length / dx) + 24)
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    maps, _ = simulator.ship_returns(rng, vessel, 0.0, centre, shape, sensor, pad=16)
    texture = simulator.gamma_texture(rng, shape, 8.0, 2.0)
    img = simulator.sar_intensity(rng, 10**-1.7, texture, *maps["vv"], sensor.looks)
    u = np.arange(-0.3 * vessel.length, 0.38 * vessel.length)
    v = np.linspace(-0.3, 0.3, 9) * vessel.width
    rows, cols = np.broadcast_arrays(centre[0] + v[:, None] / dy, centre[1] + u[None, :] / dx)
    profile = ndimage.map_coordinates(np.log(img), [rows, cols], order=1).mean(axis=0)
    f = np.fft.rfftfreq(len(profile), 1.0)
    power = np.abs(np.fft.rfft((profile - profile.mean()) * np.hanning(len(profile)))) ** 2
    return power[(f >= 1 / 32) & (f <= 1 / 6)].sum() / len(profile)


def test_cargo_and_tanker_differ_by_deck_structure_at_fusar_resolution_not_at_10_m():
    rng, mmsis = np.random.default_rng(0), set()
    stats = {"fusar": [], "s1": []}
    for cls in ("Cargo", "Tanker"):
        n = 0
        while n < 12:
            v = simulator.new_vessel(rng, cls, mmsis)
            if v.length < 100:  # a deck long enough for a few periods
                continue
            n += 1
            for name, sensor in (("fusar", FUSAR_SENSOR), ("s1", simulator.S1_GRD)):
                stats[name].append((cls == "Cargo", _deck_variance(v, sensor, rng)))
    auc = {name: roc_auc_score(*zip(*rows)) for name, rows in stats.items()}
    assert auc["fusar"] >= 0.85, auc  # hatches and bays resolved: a periodic deck against a uniform one
    assert abs(auc["s1"] - 0.5) <= 0.25, auc  # 20 m resolution blurs them away


# -------------------------------------------------------------------------------- Ship.xml
def test_every_ship_record_carries_the_incidence_its_chip_was_made_with(oss):
    incidences, seas = {}, []
    for s in oss:
        for key in s["chips"]:
            sar = record_of(s, key)["SARShipInformation"]
            inc = float(sar["Incidence"])
            assert 29.0 <= inc <= 46.5, (s["scene"], key)
            mmsi = record_of(s, key)["AISShipInformation"]["MMSI"]
            incidences.setdefault(mmsi, {}).setdefault(s["product"], []).append(inc)
            if s["product"] == "GRD":  # the swath geometry the simulator used, at the chip's range sample
                assert inc == pytest.approx(simulator.incidence(int(sar["Center_x"])), abs=1e-5)
                cal = read_chip(s, key, "Patch_Cal", "")
                seas.append((inc, 10 * math.log10(np.median(_border(cal.reshape(*cal.shape[:2], -1)[..., -1])))))
    # an SLC twin shows the same ship at the same incidence
    twins = [m for m, by in incidences.items() if "SLC" in by]
    assert twins and all(set(incidences[m]["SLC"]) <= set(incidences[m]["GRD"]) for m in twins)
    # and the co-pol sea darkens with incidence, as CMOD5.N says it should
    x, y = np.array(seas).T
    assert np.polyfit(x, y, 1)[0] < -0.1
