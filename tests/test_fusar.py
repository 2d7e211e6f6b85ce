"""FUSAR-Ship reader on fixtures in every layout the reader accepts (fixtures.write_fusar; docs/data-formats.md)."""

import io
import zipfile
from collections import Counter

import numpy as np
import pytest
import tifffile
from PIL import Image
from fixtures import CORRUPT, chip_pixels, write_fusar

import dataset_prep
import fusar
from archives import open_tree


def read(tree, forced=True):
    roots = fusar.find_roots(tree, forced=forced)
    assert len(roots) == 1
    chips, skips, notes = fusar.root_chips(roots[0])
    images, errors = {}, {}
    for c in chips:
        try:
            images[c["name"]] = fusar.load_chip(roots[0], c)
        except ValueError as e:
            errors[c["name"]] = str(e)
    return roots[0], chips, skips, notes, images, errors


EXPECTED = Counter({"Cargo": 6, "Fishing": 2, "Tanker": 2, "Tug": 1, "Other": 1, "Dredger": 1})  # listed


@pytest.mark.parametrize("layout,sep", [("nested", "\t"), ("flat", ",")])
def test_layouts_and_separators_give_exact_counts(tmp_path, layout, sep):
    classes = write_fusar(tmp_path / "FUSAR-Ship1.0", layout, sep)
    root, chips, skips, notes, images, errors = read(open_tree(tmp_path), forced=False)
    assert root.prefix == "FUSAR-Ship1.0" and root.meta == "FUSAR-Ship1.0/meta.csv"
    assert Counter(c["class"] for c in chips) == EXPECTED and skips == []
    assert list(errors) == [CORRUPT] and "cannot decode" in errors[CORRUPT]
    assert {k: classes[k] for k in images} == classes
    for stem, img in images.items():
        assert img.shape == (20, 24) and img.dtype == np.uint8
        assert np.array_equal(img, chip_pixels(stem))  # the (H, W, 1) chip squeezed, values intact
    joined = [c for c in chips if c["name"] != CORRUPT]
    assert all(c["mmsi"].startswith("4120000") and c["ship_length_m"] == "120" and c["ship_width_m"] == "20.5"
               and c["spacing_row_m"] == "1.124" and c["spacing_col_m"] == "1.7" and c["pol"] == "dh"
               for c in joined)
    assert notes == {"chips without a metadata row": 1}  # the corrupt file has no row


def test_no_metadata_class_from_folder(tmp_path):
    write_fusar(tmp_path / "fusar", "nested", meta=False)
    root, chips, _, notes, _, _ = read(open_tree(tmp_path / "fusar"))
    assert root.meta is None and Counter(c["class"] for c in chips) == EXPECTED
    assert all(c["mmsi"] == "" and c["ship_length_m"] == "" for c in chips)
    assert notes == {fusar.NO_META.format(where=root.label): 1}  # no MMSI: the grouping is off, and it is said


def test_one_folder_of_chips_takes_classes_from_meta_path(tmp_path):
    write_fusar(tmp_path / "fusar", "single", id_style="number")
    _, chips, skips, _, _, _ = read(open_tree(tmp_path / "fusar"))
    assert Counter(c["class"] for c in chips) == EXPECTED - Counter({"Cargo": 1})
    assert [(s[1], s[0].rsplit("/", 1)[-1]) for s in skips] == [("no class", f"{CORRUPT}.tiff")]


def test_zip_equals_folder(tmp_path):
    write_fusar(tmp_path / "FUSAR-Ship1.0", "nested")
    with zipfile.ZipFile(tmp_path / "FUSAR-Ship1.0.zip", "w") as zf:
        for p in sorted((tmp_path / "FUSAR-Ship1.0").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(tmp_path).as_posix())
    _, chips_dir, _, _, images_dir, _ = read(open_tree(tmp_path / "FUSAR-Ship1.0"))
    root, chips_zip, _, _, images_zip, _ = read(open_tree(tmp_path / "FUSAR-Ship1.0.zip"))
    assert root.label.endswith("FUSAR-Ship1.0.zip!FUSAR-Ship1.0")
    assert [c["class"] for c in chips_zip] == [c["class"] for c in chips_dir]
    assert all(np.array_equal(images_zip[k], images_dir[k]) for k in images_dir)


def test_meta_path_disagreeing_with_folder_keeps_folder(tmp_path):
    write_fusar(tmp_path / "fusar", "nested")
    meta = tmp_path / "fusar" / "meta.csv"
    meta.write_text(meta.read_text().replace("Tug\\Tug", "Cargo\\Tug"))
    _, chips, _, notes, _, _ = read(open_tree(tmp_path / "fusar"))
    assert Counter(c["class"] for c in chips) == EXPECTED
    assert notes["meta path disagrees with folder (folder used)"] == 1


def test_meta_xls_needs_xlrd(tmp_path):
    try:
        import xlrd  # noqa: F401
        pytest.skip("xlrd is installed: the missing-package message cannot be shown")
    except ImportError:
        pass
    write_fusar(tmp_path / "fusar", "nested", meta=False)
    (tmp_path / "fusar" / "meta.xls").write_bytes(b"\xd0\xcf\x11\xe0 not really a sheet")
    root = fusar.find_roots(open_tree(tmp_path / "fusar"), forced=True)[0]
    with pytest.raises(fusar.MetaError, match="pip install xlrd"):
        fusar.root_chips(root)


def test_decode_handles_channel_axes_rgb_and_refuses_16_bit():
    gray = chip_pixels("x")
    for arr in (gray[None], gray[..., None]):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="minisblack")
        assert np.array_equal(fusar.decode(buf.getvalue()), gray)
    buf = io.BytesIO()
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(buf, format="PNG")
    assert np.array_equal(fusar.decode(buf.getvalue()), gray)
    buf = io.BytesIO()
    tifffile.imwrite(buf, gray.astype(np.uint16) * 200)
    with pytest.raises(ValueError, match="8-bit"):
        fusar.decode(buf.getvalue())


def test_prep_counts_on_fusar_fixture(tmp_path):
    write_fusar(tmp_path / "raw" / "fusar" / "FUSAR-Ship1.0", "nested")
    args = dataset_prep.get_args_parser().parse_args(
        ["--raw-dir", str(tmp_path / "raw"), "--output-dir", str(tmp_path / "out")])
    summary = dataset_prep.main(args)
    assert list(summary["sets"]) == ["fusar"]
    counts = summary["sets"]["fusar"]["counts"]
    total = {k: sum(counts[split][k] for split in counts) for k in counts["train"]}  # train, val and test
    assert total == {"Cargo": 5, "Fishing": 2, "Tanker": 2}  # the corrupt Cargo chip skipped; Tug etc. not asked
    assert summary["skipped"] == {"fusar: unreadable image": 1}
    assert summary["skipped_items"][0]["source"].endswith(f"Cargo/BulkCarrier/{CORRUPT}.tiff")
    assert not (tmp_path / "out" / "mixed").exists() and not (tmp_path / "out" / "opensarship").exists()
