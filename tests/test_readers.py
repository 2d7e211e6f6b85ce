"""The reader interface and registry: a third dataset is one reader and one registry line; the shared helpers."""

import csv
import hashlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from fixtures import write_fusar

import archives
import dataset_prep
import readers
from readers import Chip, Listing, Reader


class PngFolderReader(Reader):
    """A tiny dataset: a folder of PNG chips and labels.csv (file, class, mmsi), the whole of its reader."""

    name = "pngs"
    title = "PNG-Folder"
    inputs = "a folder of PNG chips with labels.csv (file, class, mmsi)"
    expected = "a folder with labels.csv"
    where_to_get = "  PNG-Folder: written by the test"
    classes = ("Cargo", "Tanker")

    def find_sources(self, trees, forced):
        return [tree for tree in trees if "labels.csv" in tree.names()]

    def list_chips(self, tree, options):
        rows = csv.DictReader(io.StringIO(tree.read("labels.csv").decode()))
        return Listing([Chip(dataset=self.name, cls=r["class"], name=Path(r["file"]).stem, member=r["file"],
                             source=tree.describe(r["file"]), mmsi=archives.valid_mmsi(r["mmsi"]),
                             position=f"{self.name}:{r['file']}", has_record=True) for r in rows])

    def load_chip(self, tree, chip):
        with Image.open(io.BytesIO(tree.read(chip.member))) as img:
            return np.asarray(img.convert("L"))


def write_pngs(folder):
    """Twelve chips of ten ships; ship 412000002 is also a Cargo ship of the FUSAR fixture (write_fusar)."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(12):
        cls = "Cargo" if i < 7 else "Tanker"
        mmsi = 412000002 if i < 2 else 500000000 + i // 2 * 2 if i < 6 else 600000000 + i
        Image.fromarray(np.full((10 + i, 12), 20 * i, np.uint8)).save(folder / f"chip{i:02d}.png")
        rows.append(f"chip{i:02d}.png,{cls},{mmsi}")
    (folder / "labels.csv").write_text("file,class,mmsi\n" + "\n".join(rows) + "\n")


def manifest(set_dir):
    with open(set_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_third_reader_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "READERS", (*readers.READERS, PngFolderReader()))  # the registry line
    raw = tmp_path / "raw"
    write_fusar(raw / "fusar", "nested")
    write_pngs(raw / "pngs")
    parser = dataset_prep.get_args_parser()
    assert "--pngs PATH [PATH ...]" in parser.format_help() and "PNG-Folder: a folder of PNG chips" in \
        parser.format_help()
    out = tmp_path / "out"
    summary = dataset_prep.main(parser.parse_args(["--fusar", str(raw / "fusar"), "--pngs", str(raw / "pngs"),
                                                   "--output-dir", str(out), "--classes", "Cargo,Tanker"]))
    assert list(summary["sets"]) == ["fusar", "pngs", "mixed"]
    rows = {s: manifest(out / s) for s in ("fusar", "pngs", "mixed")}
    pngs = rows["pngs"]
    assert len(pngs) == 12 and {r["dataset"] for r in pngs} == {"pngs"}
    assert {r["class"] for r in pngs} == {"Cargo", "Tanker"}
    for r in pngs:
        assert r["path"] == f"{r['split']}/{r['class']}/pngs_{Path(r['source']).stem}.png"
        assert hashlib.sha1((out / "pngs" / r["path"]).read_bytes()).hexdigest() == r["sha1"]
        assert (r["chip_h"], r["chip_w"]) == (str(10 + int(Path(r["source"]).stem[4:])), "12")
    # mixed is the union of the per-dataset sets, and no group (MMSI) is on both sides, across datasets too.
    assert rows["mixed"] == sorted(rows["fusar"] + rows["pngs"], key=lambda r: r["path"])
    sides = defaultdict(set)
    for r in rows["mixed"]:
        sides[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    shared = [r for r in rows["mixed"] if r["group"] == "mmsi:412000002"]
    assert {r["dataset"] for r in shared} == {"fusar", "pngs"}
    assert "1 group(s) (MMSIs) in both datasets" in (out / "summary.txt").read_text()
    # The search under --raw-dir hands every folder to every reader: the same two datasets are found there.
    summary = dataset_prep.main(parser.parse_args(["--raw-dir", str(raw), "--output-dir", str(tmp_path / "searched"),
                                                   "--classes", "Cargo,Tanker"]))
    assert list(summary["sets"]) == ["fusar", "pngs", "mixed"]
    assert manifest(tmp_path / "searched" / "mixed") == rows["mixed"]


def test_registry_order_and_reader_attributes():
    # The listing order feeds the split: OpenSARShip first, then FUSAR-Ship, as the chips were always listed.
    assert [r.name for r in readers.READERS] == ["opensarship", "fusar"]
    for reader in readers.READERS:
        assert isinstance(reader, Reader)
        assert reader.name and reader.title and reader.inputs and reader.expected and reader.classes
        assert reader.where_to_get.startswith(f"  {reader.title}")


def test_chip_reads_manifest_columns():
    chip = Chip(dataset="fusar", cls="Cargo", mmsi="412000000")
    assert (chip["class"], chip["dataset"], chip["mmsi"], chip["chip_h"]) == ("Cargo", "fusar", "412000000", None)
    with pytest.raises(AttributeError):
        chip["no such column"]


@pytest.mark.parametrize("text,mmsi", [("412000000", "412000000"), (" 412000000.0 ", "412000000"),
                                       ("4.12e8", "412000000"), ("0", ""), ("", ""), (None, ""), ("nan", ""),
                                       ("412.5", ""), ("-412", ""), ("n/a", "")])
def test_one_mmsi_spelling_for_every_dataset(text, mmsi):
    assert archives.valid_mmsi(text) == mmsi


def test_helpers():
    assert archives.positive_number("190.0") == "190" and archives.positive_number("32.26") == "32.26"
    assert archives.positive_number("0") == archives.positive_number("nan") == archives.positive_number(None) == ""
    assert archives.is_junk("__MACOSX/a.tif") and archives.is_junk("x/.DS_Store") and not archives.is_junk("x/a")
    assert archives.is_under("a/b", "a") and archives.is_under("a", "") and not archives.is_under("ab/c", "a")
    assert archives.clean_error(ValueError("cannot identify image file <_io.BytesIO object at 0x7f00aa>")) == \
        "cannot identify image file"
    name = "S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0"
    assert archives.scene_name_of(f"{name}(1).zip") == name and archives.scene_name_of("S1A_IW_x.zip") is None
    assert archives.SCENE_START_RE.search("S1A_IW_x.zip")
    with pytest.raises(archives.DataError, match="zip-slip"):
        archives.check_member("a/../../b.tif", "x.zip")
    assert archives.check_member("./Patch/x.tif", "x.zip") == "Patch/x.tif"
