"""OpenSARShip reader on the three real scene zips (fixtures.ZIPS: 1.0 GRD, 2.0 GRD, 2.0 SLC).

Expected counts are taken independently from each zip's listing, not from the reader.
"""

import re
import shutil
import zipfile
from collections import Counter

import numpy as np
from fixtures import DATA, GRD_V1, GRD_V2, SLC_V2, ZIPS, real

import archives
import opensarship
import ship_xml
from archives import open_tree


def listing_counts(zip_path, pol="vv"):
    """Class counts of Patch_Uint8 chips of one polarisation, straight from the zip's member names."""
    names = zipfile.ZipFile(zip_path).namelist()
    pat = re.compile(rf"(?:^|/)Patch_Uint8/Visual_(.+)_x\d+_y\d+_{pol}\.tif$")
    return Counter(m.group(1) for n in names if (m := pat.search(n)))


def read_all(path, product="uint8", pol="co"):
    scenes = {}
    for ref in opensarship.find_scenes(open_tree(path)):
        with ref.open() as scene:
            chips, skips = opensarship.scene_chips(scene, product, pol)
            scenes[ref.name] = (scene.version, chips, skips, [opensarship.load_chip(scene, c) for c in chips])
    return scenes


@real
def test_counts_per_class_equal_the_zip_listing():
    scenes = read_all(DATA)
    assert sorted(scenes) == sorted([GRD_V1, GRD_V2, SLC_V2])
    total = Counter()
    for z in ZIPS:
        name = opensarship.scene_name_of(z.name)
        _, chips, skips, _ = scenes[name]
        assert Counter(c["class"] for c in chips) == listing_counts(z)
        assert skips == []
        total += listing_counts(z)
    assert total == Counter({"Cargo": 29, "Tanker": 3, "Other Type": 1, "Passenger": 1})


@real
def test_both_layout_versions_are_read():
    scenes = read_all(DATA)
    assert scenes[GRD_V1][0] == "1.0"  # top folder named after the scene, Metedata.xml
    assert scenes[GRD_V2][0] == "2.0"  # files at the root, <scene>.xml, Ship.xml closed by <\ShipList>
    assert scenes[SLC_V2][0] == "2.0"
    first = scenes[GRD_V1][1][0]
    assert first["member"].startswith(f"{GRD_V1}/Patch_Uint8/Visual_")
    assert scenes[GRD_V2][1][0]["member"].startswith("Patch_Uint8/Visual_")


@real
def test_ship_xml_join_gives_mmsi_and_head_tail_for_every_chip():
    for _, chips, _, images in read_all(DATA).values():
        for chip, img in zip(chips, images):
            assert chip["has_record"], chip["source"]
            assert re.fullmatch(r"\d{9}", chip["mmsi"]), chip["mmsi"]
            coords = opensarship.chip_coords(chip, *img.shape)
            for k in ("head", "tail"):
                assert 0 <= coords[f"{k}_row"] < img.shape[0] and 0 <= coords[f"{k}_col"] < img.shape[1]
            assert chip["ship_length_m"] and chip["ship_width_m"]
    # One record checked by hand against Ship.xml: Center (1673, 6973), UpperLeft (1715, 7015), LowerRight
    # (1631, 6931) -> an 85 px chip whose origin is (1631, 6931); Head (1667, 6961), Tail (1679, 6982).
    _, chips, _, images = read_all(DATA)[GRD_V1]
    i = next(i for i, c in enumerate(chips) if c["name"].endswith("_x1673_y6973_vv"))
    assert images[i].shape == (85, 85) and images[i].dtype == np.uint8
    assert chips[i]["mmsi"] == "413338000" and chips[i]["ship_length_m"] == "190" and chips[i]["ship_width_m"] == "32"
    assert opensarship.chip_coords(chips[i], 85, 85) == {"head_row": 30, "head_col": 36, "tail_row": 51, "tail_col": 48}
    assert chips[i]["spacing_row_m"] == "10.00878" and chips[i]["spacing_col_m"] == "10"


@real
def test_slc_spacing_and_grd_slc_acquisition_key():
    _, chips, _, _ = read_all(DATA)[SLC_V2]
    assert chips[0]["spacing_col_m"].startswith("2.3295") and chips[0]["spacing_row_m"].startswith("13.9275")
    # every real record carries the ship's incidence angle (IW: about 29-46 degrees), which converts the SLC's
    # slant-range spacing to ground range for harmonised inputs
    assert all(29 <= float(c["incidence_deg"]) <= 47 for c in chips)
    assert opensarship.acquisition_of(SLC_V2) == "S1A_011596_011B8A"
    assert opensarship.acquisition_of(GRD_V1.replace("GRDH", "SLC_")) == opensarship.acquisition_of(GRD_V1)


@real
def test_polarisation_choice():
    z = next(z for z in ZIPS if GRD_V2 in z.name)
    co = read_all(z, pol="co")[GRD_V2]
    cross = read_all(z, pol="cross")[GRD_V2]
    both = read_all(z, pol="both")[GRD_V2]
    assert {c["pol"] for c in co[1]} == {"vv"} and all(c["member"].endswith("_vv.tif") for c in co[1])
    assert {c["pol"] for c in cross[1]} == {"vh"} and all(c["member"].endswith("_vh.tif") for c in cross[1])
    assert len(both[1]) == 2 * len(co[1]) == 26
    by_ship = Counter((c["position"], c["mmsi"]) for c in both[1])
    assert set(by_ship.values()) == {2}  # each ship twice (vv, vh), same position and MMSI
    # Patch_Cal holds both channels as bands (cross, co): the co band matches the vv amplitude chip.
    cal = read_all(z, product="cal", pol="both")[GRD_V2]
    for pol, amp in (("vv", co), ("vh", cross)):
        cal_img = next(img for c, img in zip(cal[1], cal[3]) if c["pol"] == pol)
        amp_img = amp[3][0]
        assert cal_img.shape == amp_img.shape
        assert np.corrcoef(cal_img.ravel().astype(float), amp_img.ravel().astype(float))[0, 1] > 0.5


def test_single_pol_scene_has_one_channel_and_no_cross():
    assert opensarship.scene_pols("S1A_IW_GRDH_1SSV_20150823T221233_20150823T221258_007396_00A2CA_54D0", set()) \
        == ("vv", "vh", False)
    assert opensarship.scene_pols("S1B_IW_GRDH_1SDH_20150823T221233_20150823T221258_007396_00A2CA_54D0", set()) \
        == ("hh", "hv", True)


def test_ship_xml_is_parsed_despite_its_defects():
    text = """<?xml version="1.0" encoding="UTF-8"?>
<ShipList>
\t<ship>
\t\t<SARShipInformation><Center_x>10</Center_x><Center_y>20</Center_y><Head_x>8</Head_x></SARShipInformation>
\t\t<AISShipInformation><MMSI>412000001</MMSI><Name>A<B & C</Name><Length>100</Length></AISShipInformation>
\t</ship>
\t<ship>
\t\t<SARShipInformation><Center_x>30</Center_x><Center_y>40</Center_y></SARShipInformation>
\t\t<AISShipInformation><MMSI>0</MMSI><Name>X<Y>Z</Name></AISShipInformation>
\t</ship>
<\\ShipList>"""
    records = ship_xml.parse_ship_xml(text)
    assert sorted(records) == [(10, 20), (30, 40)]
    assert records[(10, 20)]["Name"] == "A<B & C" and records[(10, 20)]["MMSI"] == "412000001"
    assert records[(10, 20)]["Head_x"] == "8" and records[(10, 20)]["Length"] == "100"
    assert records[(30, 40)]["Name"] == "X<Y>Z"
    assert archives.valid_mmsi(records[(30, 40)]["MMSI"]) == ""


def test_class_names_with_spaces_and_underscores_parse():
    m = opensarship.CHIP_RE.match("Visual_Search and Rescue vessel_x12_y345_vh.tif")
    assert (m["cls"], m["x"], m["y"], m["pol"]) == ("Search and Rescue vessel", "12", "345", "vh")
    m = opensarship.CHIP_RE.match("Other Type_x909_y5436.tif")
    assert (m["cls"], m["pol"]) == ("Other Type", None)


@real
def test_outer_zip_copies_and_extracted_folders_are_each_read_once(tmp_path):
    # An outer zip of the three scene zips, a browser's "(1)" copy of one, and the 1.0 scene extracted: 3 scenes.
    with zipfile.ZipFile(tmp_path / "OpenSARShip_2.zip", "w", zipfile.ZIP_STORED) as outer:
        for z in ZIPS:
            outer.write(z, z.name)
    v1 = next(z for z in ZIPS if GRD_V1 in z.name)
    shutil.copy(v1, tmp_path / f"{GRD_V1}(1).zip")
    with zipfile.ZipFile(v1) as zf:
        zf.extractall(tmp_path / "extracted")
    refs = [r for r in opensarship.find_scenes(open_tree(tmp_path))]
    kept, dropped = opensarship.dedupe_scenes(refs)
    assert sorted(r.name for r in kept) == sorted([GRD_V1, GRD_V2, SLC_V2])
    assert len(dropped) == 2
    v1_kept = next(r for r in kept if r.name == GRD_V1)
    assert not v1_kept.is_copy
    for ref in kept:
        with ref.open() as scene:
            chips, _ = opensarship.scene_chips(scene)
        assert len(chips) == sum(listing_counts(next(z for z in ZIPS if ref.name in z.name)).values())
