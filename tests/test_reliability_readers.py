"""Issue 15, the dataset readers: links and special files in the inputs (case 4), ambiguous FUSAR metadata (case 5),
malformed Ship.xml numbers (case 8) and corrupt archives wherever they lie (case 15).

Inputs are built in tmp_path in the real layouts: FUSAR-Ship with fixtures.write_fusar, OpenSARShip from the real
scene zips (fixtures.ZIPS), extracted or rewritten."""

import argparse
import csv
import os
import re
import shutil
import zipfile
from collections import Counter

import numpy as np
import pytest
from fixtures import GRD_V1, GRD_V2, ZIPS, chip_pixels, real, write_fusar
from PIL import Image

import archives
import dataset_prep
import fusar
import opensarship
import ship_xml
from archives import open_tree

OPTIONS = argparse.Namespace(product="uint8", pol="co")


def zip_of(scene):
    return next(z for z in ZIPS if scene in z.name)


def prep(tmp_path, *argv, out="out"):
    args = dataset_prep.get_args_parser().parse_args([*argv, "--output-dir", str(tmp_path / out)])
    return dataset_prep.main(args)


def manifest_sources(set_dir):
    with open(set_dir / "manifest.csv", newline="") as f:
        return [r["source"] for r in csv.DictReader(f)]


def foreign_image(path):
    """An image outside the data: if it became a chip, its pixels would show up in the prepared set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24), 77, np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------ case 4: links, FIFOs


def test_links_leaving_the_folder_and_special_files_are_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(chip_pixels("a")).save(data / "a.tif")
    (data / "inner.tif").symlink_to("a.tif")  # a link that stays inside the folder: read as usual
    (data / "out.tif").symlink_to(foreign_image(tmp_path / "outside" / "x.tif"))
    (data / "outdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    os.mkfifo(data / "fifo.tif")
    tree = open_tree(data)
    assert tree.names() == ["a.tif", "inner.tif"]
    assert {n: r for n, (r, _) in tree.refused.items()} == {
        "out.tif": "link leaving the input folder", "outdir/": "link leaving the input folder",
        "fifo.tif": "not a regular file"}
    assert str(tmp_path / "outside" / "x.tif") in tree.refused["out.tif"][1]
    assert tree.read("inner.tif") == (data / "a.tif").read_bytes()
    # Read again after the listing: a file swapped for a link or a FIFO since is refused too, never followed
    # (a FIFO would block the run forever).
    for name in ("fifo.tif", "out.tif"):
        with pytest.raises(archives.RefusedError):
            tree.read(name)
    (data / "a.tif").unlink()
    (data / "a.tif").symlink_to(tmp_path / "outside" / "x.tif")
    with pytest.raises(OSError, match="outside"):
        tree.read("a.tif")


def test_fusar_chips_behind_links_or_fifos_are_skipped_with_their_reason(tmp_path):
    root = tmp_path / "raw" / "fusar"
    write_fusar(root, "nested")
    linked = root / "Cargo" / "BulkCarrier" / "Ship_C01S01N0001.tiff"
    linked.unlink()
    linked.symlink_to(foreign_image(tmp_path / "elsewhere" / "secret.tiff"))
    fifo = root / "Tanker" / "Tanker" / "Ship_C12S01N0009.tiff"
    os.mkfifo(fifo)
    tree = open_tree(root)
    assert "Cargo/BulkCarrier/Ship_C01S01N0001.tiff" in tree.refused and fifo.name not in str(tree.names())
    summary = prep(tmp_path, "--fusar", str(root), "--val-size", "0")
    assert summary["skipped"] == {"fusar: link leaving the input folder": 1, "fusar: not a regular file": 1,
                                  "fusar: unreadable image": 1}  # the last: the fixture's corrupt chip
    items = {i["reason"]: i for i in summary["skipped_items"]}
    assert items["link leaving the input folder"]["source"] == f"{root}/Cargo/BulkCarrier/Ship_C01S01N0001.tiff"
    assert "secret.tiff" in items["link leaving the input folder"]["detail"]
    assert items["not a regular file"]["source"] == f"{root}/Tanker/Tanker/Ship_C12S01N0009.tiff"
    sources = manifest_sources(tmp_path / "out" / "fusar")
    assert len(sources) == 8 and not any("Ship_C01S01N0001" in s for s in sources)
    pngs = [np.asarray(Image.open(p)) for p in (tmp_path / "out" / "fusar").glob("t*/*/*.png")]
    assert not any(p.shape == (20, 24) and (p == 77).all() for p in pngs)


def test_a_linked_meta_csv_or_class_folder_is_reported_not_read(tmp_path):
    # The dataset folder itself may be a link (data/raw/fusar -> a big disk); links inside it must stay inside.
    write_fusar(tmp_path / "disk" / "FUSAR-Ship1.0", "nested")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "fusar").symlink_to(tmp_path / "disk" / "FUSAR-Ship1.0")
    for name in ("meta.csv", "Tug"):
        shutil.move(tmp_path / "disk" / "FUSAR-Ship1.0" / name, tmp_path / name)
        (tmp_path / "disk" / "FUSAR-Ship1.0" / name).symlink_to(tmp_path / name)
    (root,) = fusar.READER.find_sources([open_tree(tmp_path / "raw" / "fusar")], forced=True)
    listing = fusar.READER.list_chips(root, OPTIONS)
    assert root.meta is None and len(listing.chips) == 12 and "Tug" not in {c.cls for c in listing.chips}
    assert [(s[0].removeprefix(f"{tmp_path}/raw/fusar/"), s[1]) for s in listing.skips] == [
        ("Tug/", "link leaving the input folder"), ("meta.csv", "link leaving the input folder")]


@real
def test_extracted_scene_with_a_linked_chip_and_a_fifo(tmp_path):
    raw = tmp_path / "raw" / "opensarship"
    with zipfile.ZipFile(zip_of(GRD_V1)) as zf:
        zf.extractall(raw)
    patch = raw / GRD_V1 / "Patch_Uint8"
    linked = patch / "Visual_Cargo_x1673_y6973_vv.tif"
    linked.unlink()
    linked.symlink_to(foreign_image(tmp_path / "elsewhere" / "x.tif"))
    os.mkfifo(patch / "Visual_Cargo_x1_y2_vv.tif")
    (ref,) = opensarship.READER.find_sources([open_tree(raw)], forced=True)
    listing = opensarship.READER.list_chips(ref, OPTIONS)
    assert sorted((s[0].rsplit("/", 1)[-1], s[1]) for s in listing.skips) == [
        ("Visual_Cargo_x1673_y6973_vv.tif", "link leaving the input folder"),
        ("Visual_Cargo_x1_y2_vv.tif", "not a regular file")]
    assert len(listing.chips) == 11 and not any("x1673_y6973" in c.name for c in listing.chips)


# ------------------------------------------------------------------------------------------ case 5: FUSAR meta.csv


def _meta_rows(path):
    lines = path.read_text().splitlines()
    return lines[0], lines[1:]


def test_duplicate_ids_with_differing_rows_are_not_joined(tmp_path):
    write_fusar(tmp_path / "fusar", "nested")
    meta = tmp_path / "fusar" / "meta.csv"
    header, rows = _meta_rows(meta)
    bogus = next(r for r in rows if r.startswith("Ship_C01S01N0001\t")).replace("\t412000000\t", "\t999999999\t")
    same = next(r for r in rows if r.startswith("Ship_C04S01N0001\t"))
    meta.write_text("\n".join([header, *rows, bogus, same]) + "\n")
    root = fusar.find_roots(open_tree(tmp_path / "fusar"), forced=True)[0]
    chips, skips, notes = fusar.root_chips(root)
    assert [(s[0].rsplit("/", 1)[-1], s[1]) for s in skips] == [("Ship_C01S01N0001.tiff", "ambiguous metadata")]
    assert "412000000" in skips[0][2] and "999999999" in skips[0][2] and "meta.csv" in skips[0][2]
    assert "Ship_C01S01N0001" not in [c.name for c in chips]
    # An identical repeated row is no ambiguity: its chip is joined as usual.
    assert next(c for c in chips if c.name == "Ship_C04S01N0001").mmsi == "412000005"
    listing = fusar.READER.list_chips(root, OPTIONS)
    note = next(n for n in listing.notes if "Ship_C01S01N0001" in n)
    assert f"{tmp_path}/fusar/meta.csv" in note and "2 differing rows" in note and "skipped" in note
    assert any(n.endswith("meta.csv: ids listed twice with identical rows (joined once): 1") for n in listing.notes)


def test_meta_without_an_mmsi_column_says_grouping_is_off(tmp_path):
    write_fusar(tmp_path / "fusar", "nested")
    meta = tmp_path / "fusar" / "meta.csv"
    lines = [line.split("\t") for line in meta.read_text().splitlines()]
    meta.write_text("\n".join("\t".join(cells[:1] + cells[2:]) for cells in lines) + "\n")
    root = fusar.find_roots(open_tree(tmp_path / "fusar"), forced=True)[0]
    listing = fusar.READER.list_chips(root, OPTIONS)
    assert len(listing.chips) == 13 and all(c.mmsi == "" for c in listing.chips)
    note = next(n for n in listing.notes if "mmsi" in n)
    assert f"{tmp_path}/fusar/meta.csv has no mmsi column" in note and "own group" in note


# ------------------------------------------------------------------------------------------ case 8: Ship.xml numbers


def _rewrite_ship_xml(src, dst, edit):
    """A copy of the scene zip `src` whose Ship.xml went through edit(text)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("Ship.xml"):
                data = edit(data.decode()).encode()
            zout.writestr(info, data)


def _set(block, tag, value):
    return re.sub(rf"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", block, count=1)


def _centre(block):
    return int(re.search(r"<Center_x>(\d+)", block)[1]), int(re.search(r"<Center_y>(\d+)", block)[1])


@real
def test_infinite_and_out_of_range_ship_xml_values_are_notes(tmp_path):
    src = zip_of(GRD_V2)
    text = zipfile.ZipFile(src).read("Ship.xml").decode()
    blocks = re.findall(r"<ship>.*?</ship>", text, re.DOTALL)
    edits = {0: ("Head_x", "inf"), 1: ("Center_latitude", "Infinity"), 2: ("Tail_y", "99999"),
             3: ("Length", "1e309"), 4: ("MMSI", "-Infinity"), 5: ("Center_x", "1e309")}
    centres = {i: _centre(blocks[i]) for i in edits}

    def edit(t):
        for i, (tag, value) in edits.items():
            t = t.replace(blocks[i], _set(blocks[i], tag, value))
        return t

    scene = tmp_path / f"{GRD_V2}.zip"
    _rewrite_ship_xml(src, scene, edit)
    (ref,) = opensarship.READER.find_sources([open_tree(scene)], forced=True)
    listing = opensarship.READER.list_chips(ref, OPTIONS)
    chips = {c.name.split("_", 9)[-1]: c for c in listing.chips}
    by = {i: chips[f"x{x}_y{y}_vv"] for i, (x, y) in centres.items()}
    assert len(listing.chips) == 13 and listing.skips == []
    assert by[0].geometry is None and by[0].mmsi  # the rest of the record is kept
    assert by[1].latlon is None and by[1].mmsi
    assert by[2].geometry is None
    assert by[3].ship_length_m == "" and by[3].ship_width_m
    assert by[4].mmsi == "" and by[4].ship_length_m
    assert not by[5].has_record  # no centre to join on: the record is left out, the chip kept
    note = next(n for n in listing.notes if "Ship.xml" in n)
    for text in ("Head_x 'inf'", "Center_latitude 'Infinity'", "Tail_y", "outside the chip", "Length '1e309'",
                 "MMSI '-Infinity'", "Center_x '1e309'", str(scene)):
        assert text in note, (text, note)
    assert listing.tallies["bad_values"] == 5 and listing.tallies["bad_records"] == 1
    notes = opensarship.READER.summary_notes(Counter(listing.tallies))
    assert any("5 chip(s) with non-finite or out-of-range Ship.xml values" in n for n in notes)
    assert any("1 Ship.xml record(s) without a usable centre" in n for n in notes)


def test_head_or_tail_outside_the_decoded_chip_is_not_written():
    chip = opensarship.Chip(dataset="opensarship", cls="Cargo")
    chip.geometry = ship_xml.Placement(100, 100, None, None, [95, 96], [140, 104])  # tail 40 px from the centre
    assert opensarship.chip_coords(chip, 21, 21) == {}
    chip.geometry = ship_xml.Placement(100, 100, None, None, [95, 96], [105, 104])
    assert opensarship.chip_coords(chip, 21, 21) == {"head_row": 6, "head_col": 5, "tail_row": 14, "tail_col": 15}


# ------------------------------------------------------------------------------------------ case 15: corrupt zips

CORRUPT_SCENE = "S1A_IW_GRDH_1SDV_20150101T000000_20150101T000030_000001_000001_0000.zip"


def _expect_corrupt_skipped(summary, corrupt, reason="unreadable scene archive"):
    assert summary["skipped"] == {f"opensarship: {reason}": 1}
    (item,) = summary["skipped_items"]
    assert item["source"] == str(corrupt) and "not a readable zip" in item["detail"]
    assert summary["sets"]["opensarship"]["counts"]["train"]["Cargo"] > 0


@real
@pytest.mark.parametrize("where", ["raw", "raw/opensarship", "named"])
def test_a_corrupt_scene_zip_is_skipped_wherever_it_lies(tmp_path, where):
    folder = tmp_path / where.replace("named", "downloads")
    folder.mkdir(parents=True)
    corrupt = folder / CORRUPT_SCENE
    corrupt.write_bytes(b"PK\x03\x04 an interrupted download")
    good = shutil.copy(zip_of(GRD_V1), folder)
    argv = ["--opensarship", str(corrupt), str(good)] if where == "named" else ["--raw-dir", str(tmp_path / "raw")]
    summary = prep(tmp_path, *argv, "--classes", "Cargo,Tanker", "--val-size", "0")
    _expect_corrupt_skipped(summary, corrupt)


@real
def test_a_corrupt_outer_zip_is_skipped_too_and_alone_gives_no_chips_found(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    outer = raw / "OpenSARShip_2.zip"
    outer.write_bytes(b"not a zip at all")
    shutil.copy(zip_of(GRD_V1), raw)
    summary = prep(tmp_path, "--raw-dir", str(raw), "--classes", "Cargo,Tanker", "--val-size", "0")
    _expect_corrupt_skipped(summary, outer, reason="unreadable archive")
    with pytest.raises(SystemExit, match=re.escape(f"no chips found in --opensarship {outer}")):
        prep(tmp_path, "--opensarship", str(outer), out="alone")


def test_a_corrupt_archive_inside_another_is_reported_once(tmp_path):
    # The search hands each tree to both readers, and each opens downloads.zip: one skip per corrupt member.
    with zipfile.ZipFile(tmp_path / "downloads.zip", "w") as zf:
        zf.writestr("bad.zip", b"garbage")
        zf.writestr(CORRUPT_SCENE, b"garbage too")
    tree = open_tree(tmp_path)
    sources = [(r, s) for r in (opensarship.READER, fusar.READER) for s in r.find_sources([tree], forced=False)]
    skips = [(r.name, *skip) for r, s in sources for skip in r.list_chips(s, OPTIONS).skips]
    assert [(d, src.removeprefix(f"{tmp_path}/"), reason) for d, src, reason, _ in skips] == [
        ("opensarship", "downloads.zip!bad.zip", "unreadable archive"),
        ("opensarship", f"downloads.zip!{CORRUPT_SCENE}", "unreadable scene archive")]


def test_a_fifo_named_like_an_archive_is_not_read(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    fifo = raw / CORRUPT_SCENE
    os.mkfifo(fifo)
    broken = archives.BrokenTree  # (looked up first: before the fix, open_tree blocked on the FIFO forever)
    assert isinstance(open_tree(fifo), broken)
    write_fusar(raw / "fusar", "nested")
    summary = prep(tmp_path, "--raw-dir", str(raw), "--val-size", "0")
    assert summary["skipped"]["opensarship: not a regular file"] == 1
    assert next(i for i in summary["skipped_items"] if i["dataset"] == "opensarship")["source"] == str(fifo)
