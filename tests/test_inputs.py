"""Input variants (inputs.py) and their loading (data.load_split(inputs=...)): physical scale, padding with the
chip's own sea, SLC slant range on the ground, clutter radiometry; the raw path unchanged."""

import math

import numpy as np
import pytest
from fixtures import SLC_V2, GRD_V2, set_manifest_values, write_tiny_prepared
from PIL import Image
from scipy import stats

import data
import inputs
import opensarship
import sets
import baselines
from inputs import Inputs, border_ring, chip_geometry, transform, transform_mask


def ship_mask(shape, spacing, length, beam, heading):
    """A rectangular hull of length x beam metres, bow at `heading` (rad, from +col towards +row), centred on the
    chip: a pixel is ship when its centre is on the hull."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    y, x = (rows - (shape[0] - 1) / 2) * spacing[0], (cols - (shape[1] - 1) / 2) * spacing[1]
    along = x * math.cos(heading) + y * math.sin(heading)
    across = -x * math.sin(heading) + y * math.cos(heading)
    return (np.abs(along) <= length / 2) & (np.abs(across) <= beam / 2)


def length_px(mask, heading):
    """The ship's length in the pixels of an axis-aligned mask (heading 0: along columns, pi/2: along rows)."""
    return int(np.any(mask, axis=0 if heading == 0 else 1).sum())


def sea_chip(rng, shape, spacing, length=120.0, level=12.0, ship=200.0):
    """Amplitude chip: Rayleigh-like (gamma intensity) sea of median about `level`, a bright rectangular ship."""
    sea = np.sqrt(rng.gamma(2.0, 0.5, size=shape)) * level
    hull = ship_mask(shape, spacing, length, 20.0, 0.4)
    return np.clip(np.where(hull, ship, sea), 0, 255).round().astype(np.uint8)


SLC_GROUND = (13.9, 2.33 / math.sin(math.radians(38.0)))


@pytest.mark.parametrize("spacing, shape", [((1.1, 1.7), (512, 512)), ((10.0, 10.0), (57, 57)),
                                            (SLC_GROUND, (40, 150))])
@pytest.mark.parametrize("heading", [0.0, math.pi / 2])
def test_resampling_gives_the_ship_length_over_the_metres_per_pixel(spacing, shape, heading):
    length, m = 147.0, 10.0
    mask = ship_mask(shape, spacing, length, 20.0, heading)
    out = transform_mask(mask, spacing, 32, m)
    step = spacing[1] if heading == 0 else spacing[0]  # metres per chip pixel along the ship
    native_m = length_px(mask, heading) * step  # the mask's own length: within a chip pixel of the ship's
    assert abs(native_m - length) <= step
    assert abs(length_px(out, heading) - native_m / m) <= 1.0
    if step <= m:  # a chip at least as fine as the output: within a pixel of the ship's true length
        assert abs(length_px(out, heading) - length / m) <= 1.0
    # transform puts the chip's pixels exactly where transform_mask puts the mask (its sea here is 0, the padding
    # drawn from it too)
    image = transform((mask * 200).astype(np.uint8), spacing, None, 32, Inputs(m_per_px=m), seed=0)
    assert np.array_equal(image >= 100, out)


def ship_cover(shape, spacing, length, beam, heading):
    """The fraction of each pixel that an axis-aligned rectangular hull covers (what a pixel integrates)."""
    def cover(n, step, half):
        x = (np.arange(n) - (n - 1) / 2) * step
        return np.clip(np.minimum(x + step / 2, half) - np.maximum(x - step / 2, -half), 0, step) / step
    rows_half, cols_half = (beam / 2, length / 2) if heading == 0 else (length / 2, beam / 2)
    return np.outer(cover(shape[0], spacing[0], rows_half), cover(shape[1], spacing[1], cols_half))


@pytest.mark.parametrize("length", [60.0, 147.0, 230.0])
def test_a_fusar_and_an_opensarship_chip_of_one_ship_length_give_one_length_in_pixels(length):
    side = round(3.9 * length / 10.0)  # OpenSARShip cuts its chips at 3.9 times the AIS length at 10 m
    m, beam, scaled = 10.0, 20.0, Inputs(m_per_px=10.0)
    chips = {"fusar": ((512, 512), (1.1, 1.7)), "opensarship": ((side, side), (10.0, 10.0))}
    for heading in (0.0, math.pi / 2):
        lengths = {}
        for name, (shape, spacing) in chips.items():
            # the ship's mask: within one output pixel of length / M (a mask of whole pixels is +-1 by nature)
            mask = transform_mask(ship_mask(shape, spacing, length, beam, heading), spacing, 48, m)
            assert abs(length_px(mask, heading) - length / m) <= 1.0
            # the ship as the chip's pixels integrate it: its length, to a fraction of a pixel, is the sensor's
            # area over the beam in output pixels
            image = (ship_cover(shape, spacing, length, beam, heading) * 200).round().astype(np.uint8)
            out = transform(image, spacing, None, 48, scaled, seed=0).astype(np.float64)
            lengths[name] = out.sum() / 200 / (beam / m)
        assert lengths["fusar"] == pytest.approx(lengths["opensarship"], abs=0.5)
        assert lengths["fusar"] == pytest.approx(length / m, abs=0.5)


@pytest.mark.parametrize("radiometry", ["uint8", "clutter"])
def test_padding_is_drawn_from_the_chips_own_sea(radiometry):
    rng = np.random.default_rng(3)
    spacing, m, size = (10.0, 10.0), 8.0, 96
    chip = sea_chip(rng, (40, 40), spacing)
    variant = Inputs(m_per_px=m, radiometry=radiometry)
    out = transform(chip, spacing, None, size, variant, seed=11).astype(np.float64)
    inside = transform_mask(np.ones(chip.shape), spacing, size, m)
    rows, cols = np.nonzero(inside)
    region = out[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert region.shape == (50, 50)  # 40 px of 10 m = 50 px of 8 m, centred, the rest padding
    ring, padded = region[border_ring(*region.shape)], out[~inside]
    assert stats.ks_2samp(padded, ring).pvalue > 0.01
    assert abs(padded.mean() - ring.mean()) <= 0.03 * ring.mean()
    assert padded.min() > 0 and padded.max() < 100  # sea, not black and not the ship
    if radiometry == "uint8":  # the resampled sea keeps the chip's own level
        native = chip[border_ring(*chip.shape)].astype(np.float64)
        assert abs(padded.mean() - native.mean()) <= 0.05 * native.mean()
    # the draws are the seed's: the same seed gives the same pixels, another one other padding, the same chip
    assert np.array_equal(transform(chip, spacing, None, size, variant, seed=11), out)
    other = transform(chip, spacing, None, size, variant, seed=12).astype(np.float64)
    assert np.array_equal(other[inside], out[inside]) and not np.array_equal(other[~inside], out[~inside])


def row(**values):
    return {"dataset": "opensarship", "spacing_row_m": "13.9", "spacing_col_m": "2.33", **values}


def test_the_sea_ring_is_the_shortcut_baselines():
    for shape in [(1, 1), (5, 9), (16, 16), (40, 150), (512, 512)]:
        assert np.array_equal(border_ring(*shape), baselines.border_ring(*shape))


def test_slc_spacing_is_put_on_the_ground_with_the_incidence_angle():
    sin = math.sin(math.radians(35.0))
    spacing, resolution = chip_geometry(row(scene=SLC_V2, incidence_deg="35.0"))
    assert spacing == pytest.approx((13.9, 2.33 / sin)) and spacing[1] == pytest.approx(4.062, abs=1e-3)
    assert resolution == pytest.approx((inputs.S1_IW_SLC_RESOLUTION_M[0], inputs.S1_IW_SLC_RESOLUTION_M[1] / sin))
    for bad in ({}, {"incidence_deg": ""}, {"incidence_deg": "nan"}, {"incidence_deg": "95"}):
        reason = chip_geometry(row(scene=SLC_V2, **bad))
        assert isinstance(reason, str) and "SLC chip without a usable incidence angle (incidence_deg)" in reason
    grd = chip_geometry(row(scene=GRD_V2, spacing_row_m="10.0", spacing_col_m="10.0", incidence_deg="35"))
    assert grd == ((10.0, 10.0), inputs.S1_IW_RESOLUTION_M)  # GRD spacing is already on the ground
    fusar = {"dataset": "fusar", "spacing_row_m": "1.70", "spacing_col_m": "1.12"}
    assert chip_geometry(fusar) == ((1.70, 1.12), inputs.GF3_UFS_RESOLUTION_M)
    no_meta = chip_geometry({**fusar, "spacing_row_m": ""})
    assert no_meta == "no pixel spacing in the manifest (a FUSAR-Ship chip without a meta.csv row)"
    # a variant without physical scale needs no geometry; one that matches needs a known resolution
    assert inputs.geometry_for(fusar, Inputs(radiometry="clutter")) == (None, None)
    assert "no known resolution" in inputs.geometry_for({**fusar, "dataset": "other"}, Inputs(10.0, match=True))


def test_matching_blurs_only_the_finer_sensor():
    rng = np.random.default_rng(0)
    chip = sea_chip(rng, (200, 200), (1.1, 1.7), length=80.0)
    plain, matched = Inputs(m_per_px=2.0), Inputs(m_per_px=2.0, match=True)
    geometry = ((1.1, 1.7), inputs.GF3_UFS_RESOLUTION_M)
    sharp = transform(chip, *geometry, 64, plain, seed=0).astype(np.float64)
    blurred = transform(chip, *geometry, 64, matched, seed=0).astype(np.float64)
    assert blurred.std() < 0.8 * sharp.std()  # 3 m speckle averaged over ~20 m cells
    s1 = sea_chip(rng, (40, 40), (10.0, 10.0))
    s1_geometry = ((10.0, 10.0), (25.0, 25.0))  # coarser than the target already: untouched
    assert np.array_equal(transform(s1, *s1_geometry, 32, plain, seed=0), transform(s1, *s1_geometry, 32, matched,
                                                                                        seed=0))


def test_names_parse_back_and_bad_ones_say_the_valid_form():
    for name, variant in [("raw", Inputs()), ("clutter", Inputs(radiometry="clutter")), ("m10", Inputs(10.0)),
                          ("m2.5-match", Inputs(2.5, match=True)), ("m10-clutter", Inputs(10.0, radiometry="clutter")),
                          ("m10-match-clutter", Inputs(10.0, True, "clutter"))]:
        assert Inputs.parse(name) == variant and variant.name == name and variant.harmonised == (name != "raw")
        assert variant.describe().startswith(name)
    for bad in ("m10-clutter-match", "match", "m-match", "m0", "10", "m10match", "clutter-m10", ""):
        with pytest.raises(ValueError, match=r"valid is raw, or m<metres>\[-match\]\[-clutter\], or clutter"):
            Inputs.parse(bad)
    with pytest.raises(ValueError, match="needs metres per pixel"):
        Inputs(match=True)


@pytest.mark.parametrize("m_per_px", [None, 10.0])
def test_clutter_radiometry_does_not_depend_on_the_chips_scaling(m_per_px):
    rng = np.random.default_rng(5)
    chip = sea_chip(rng, (40, 40), (10.0, 10.0), level=6.0, ship=60.0)  # values <= 60: x4 stays in 8 bits
    variant = Inputs(m_per_px, radiometry="clutter")
    outs = [transform(chip * k, (10.0, 10.0), None, 32, variant, seed=1).astype(int) for k in (1, 2, 3, 4)]
    lo, hi = 1, 254  # away from clipping
    for out in outs[1:]:
        unclipped = (outs[0] > lo) & (outs[0] < hi)
        assert np.abs(out - outs[0])[unclipped].max() <= 1
    amplitude = Inputs(m_per_px)  # the study's 8 bits do depend on it
    assert transform(chip * 4, (10.0, 10.0), None, 32, amplitude, seed=1).mean() > \
        3 * transform(chip, (10.0, 10.0), None, 32, amplitude, seed=1).mean()


def test_cal_chips_give_the_sea_relative_db_of_their_uint8_twin():
    rng = np.random.default_rng(8)
    amplitude = np.sqrt(rng.gamma(4.0, 0.25, size=(48, 48))) * 0.05  # linear amplitude, sea ~0.05
    amplitude[20:28, 10:38] *= 4.0  # a ship 12 dB above the sea
    as_uint8 = np.round(255 * amplitude / amplitude.max()).astype(np.uint8)  # Patch_Uint8
    as_cal = opensarship.cal_to_uint8(amplitude ** 2)  # Patch_Cal: intensity in dB over CAL_DB_RANGE
    variant = Inputs(radiometry="clutter")
    a = transform(as_uint8, None, None, 48, variant, seed=0, product="uint8").astype(int)
    b = transform(as_cal, None, None, 48, variant, seed=0, product="cal").astype(int)
    well_quantised = as_uint8 >= 40  # 8-bit amplitude steps below ~0.1 dB
    assert np.abs(a - b)[well_quantised].max() <= 2 and np.abs(a - b)[well_quantised].mean() < 0.8


def test_load_split_with_inputs_leaves_out_chips_without_spacing_and_caches_by_variant(tmp_path):
    set_dir = write_tiny_prepared(tmp_path / "prepared", sets=("mixed",)) / "mixed"
    rows = [r for r in sets.read_manifest(set_dir) if r["split"] == "train"]
    no_spacing = next(r["path"] for r in rows if r["dataset"] == "fusar")
    set_manifest_values(set_dir, {no_spacing: {"spacing_row_m": "", "spacing_col_m": ""}})
    key = sets.manifest_sha1(set_dir)[:16]

    raw = data.load_split(set_dir, "train", 32)
    assert raw.cache_path.name == f"train_32_{key}.npy" and raw.left_out == [] and raw.inputs == "raw"
    for i, path in enumerate(raw.paths):  # today's decode, byte for byte
        with Image.open(set_dir / path) as im:
            assert np.array_equal(raw.images[i], np.asarray(im.convert("L").resize((32, 32),
                                                                                   Image.Resampling.BILINEAR)))
    assert np.array_equal(data.load_split(set_dir, "train", 32, inputs="raw").images, raw.images)

    scaled = data.load_split(set_dir, "train", 32, inputs="m10-clutter")
    assert scaled.cache_path.name == f"train_32_m10-clutter_{key}.npy" and scaled.cache_status == "built"
    assert scaled.images.shape == (len(rows) - 1, 32, 32) and no_spacing not in scaled.paths
    assert scaled.left_out == [(no_spacing, "no pixel spacing in the manifest (a FUSAR-Ship chip without a "
                                            "meta.csv row)")]
    assert len(scaled.labels) == len(scaled.paths) == len(rows) - 1
    first = next(r for r in rows if r["path"] == scaled.paths[0])
    with Image.open(set_dir / first["path"]) as im:
        own = transform(np.asarray(im), *chip_geometry(first), 32, Inputs.parse("m10-clutter"),
                        seed=int(first["sha1"][:8], 16))
    assert np.array_equal(scaled.images[0], own)
    again = data.load_split(set_dir, "train", 32, num_workers=2, inputs=Inputs(10.0, radiometry="clutter"))
    assert again.cache_status == "reused" and np.array_equal(again.images, scaled.images)
    assert np.array_equal(data.load_split(set_dir, "train", 32, num_workers=2, cache=False,
                                          inputs="m10-clutter").images, scaled.images)
    assert raw.cache_path.exists()  # both variants' caches stay: another grid may use either
    assert "inputs m10-clutter; 1 chip left out: 1 no pixel spacing" in scaled.describe()
    # the whole-chip geometry needs no spacing: clutter alone leaves nothing out
    assert data.load_split(set_dir, "train", 32, cache=False, inputs="clutter").left_out == []
    with pytest.raises(ValueError, match="valid is raw, or m<metres>"):
        data.load_split(set_dir, "train", 32, inputs="m10-blur")
    set_manifest_values(set_dir, {r["path"]: {"spacing_row_m": ""} for r in rows})
    n_fusar = sum(r["dataset"] == "fusar" for r in rows)
    with pytest.raises(data.ChipReadError, match=f"none of its {len(rows)} train chips can be shown as m10 "
                                         rf"\({n_fusar} no pixel spacing in the manifest \(a FUSAR-Ship chip"):
        data.load_split(set_dir, "train", 32, inputs="m10")


def test_split_cache_loads_the_variant_and_says_what_it_left_out(tmp_path, capsys):
    import torch
    root = write_tiny_prepared(tmp_path / "prepared", sets=("opensarship",))
    path = next(r["path"] for r in sets.read_manifest(root / "opensarship") if r["split"] == "test")
    set_manifest_values(root / "opensarship", {path: {"scene": SLC_V2, "incidence_deg": ""}})
    cache = data.SplitCache(root, 24, torch.device("cpu"), 0, inputs="m12.5-match")
    arrays, images, labels = cache.get("opensarship", "test")
    assert images.shape[0] == labels.shape[0] == len(arrays.paths) and path not in arrays.paths
    out = capsys.readouterr().out
    assert "opensarship/test: " in out and "inputs m12.5-match; 1 chip left out: 1 SLC chip without a usable " \
                                              "incidence angle" in out
