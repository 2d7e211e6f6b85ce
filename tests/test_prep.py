"""dataset_prep.py end to end: splits, leakage, the merged set, reruns, bad input, the synthetic demo."""

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from fixtures import GRD_V1, ZIPS, manifest, real, tree_bytes, write_fusar

import archives
import dataset_prep
import sets
import splits
from readers import Chip

ROOT = Path(__file__).resolve().parents[1]


def run(argv):
    return dataset_prep.main(dataset_prep.get_args_parser().parse_args([str(a) for a in argv]))




def check_set(set_dir):
    """Invariants of any prepared set; returns its manifest rows."""
    rows = manifest(set_dir)
    assert tuple(rows[0]) == sets.MANIFEST_COLUMNS
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    sides = defaultdict(set)
    for r in rows:
        sides[r["group"]].add(r["split"])
        assert r["path"] == f"{r['split']}/{r['class']}/{Path(r['path']).name}"
        png = Path(set_dir) / r["path"]
        with Image.open(png) as img:
            assert img.mode == "L" and img.size == (int(r["chip_w"]), int(r["chip_h"]))
        assert hashlib.sha1(png.read_bytes()).hexdigest() == r["sha1"]
    assert all(len(s) == 1 for s in sides.values()), "a group is in two of train, val and test"
    assert len({r["sha1"] for r in rows}) == len(rows), "identical images kept twice"
    return rows


def check_imagefolder(set_dir):
    # Every split the manifest lists (train, test and, with --val-size > 0, val) is a folder ImageFolder reads.
    from torchvision.datasets import ImageFolder
    rows = manifest(set_dir)
    folders = {s: ImageFolder(Path(set_dir) / s) for s in {r["split"] for r in rows}}
    assert set(folders) in ({"train", "test"}, {"train", "val", "test"})
    assert folders["train"].classes == folders["test"].classes == sorted({r["class"] for r in rows})
    assert all(set(f.classes) <= set(folders["train"].classes) for f in folders.values())
    assert sum(len(f) for f in folders.values()) == len(rows)


# ---------------------------------------------------------------------------------------------- split logic


def make_chips(seed=0, n_groups=300):
    rng = np.random.default_rng(seed)
    chips = []
    for g in range(n_groups):
        cls = rng.choice(["Cargo", "Fishing", "Tanker"], p=[0.7, 0.1, 0.2])
        for _ in range(int(rng.integers(1, 4))):
            chips.append(Chip(dataset="fusar" if g % 3 else "opensarship", cls=str(cls), group=f"g{g}"))
    # A ship whose chips carry two classes (its AIS type changed) and two datasets.
    chips += [Chip(dataset="fusar", cls="Cargo", group="both"), Chip(dataset="opensarship", cls="Tanker", group="both")]
    return chips


def test_split_is_grouped_stratified_and_seeded():
    chips = make_chips()
    splits.split_groups(chips, 0.2, seed=42)
    sides = defaultdict(set)
    for c in chips:
        sides[c["group"]].add(c["split"])
    assert all(len(s) == 1 for s in sides.values())
    cells = Counter((c["dataset"], c["class"]) for c in chips)
    test = Counter((c["dataset"], c["class"]) for c in chips if c["split"] == "test")
    for cell, n in cells.items():
        assert abs(test[cell] - 0.2 * n) <= 3, (cell, test[cell], n)
    again = make_chips()
    splits.split_groups(again, 0.2, seed=42)
    assert [c["split"] for c in again] == [c["split"] for c in chips]
    other = make_chips()
    splits.split_groups(other, 0.2, seed=7)
    assert [c["split"] for c in other] != [c["split"] for c in chips]


def test_small_classes_get_a_test_group_when_they_have_two():
    chips = [Chip(dataset="fusar", cls="Tanker", group=f"t{i}") for i in range(2)] + \
            [Chip(dataset="fusar", cls="Cargo", group=f"c{i}") for i in range(20)] + \
            [Chip(dataset="fusar", cls="Tug", group="only")] * 3
    splits.split_groups(chips, 0.2, seed=1)
    per_split = Counter((c["class"], c["split"]) for c in chips)
    assert per_split[("Tanker", "test")] == 1 and per_split[("Tanker", "train")] == 1
    assert per_split[("Cargo", "test")] == 4 and per_split[("Tug", "train")] == 3


def osc(scene, x, pol, mmsi="", latlon=None):
    return Chip(dataset="opensarship", cls="Cargo", name=f"{scene}_x{x}_{pol}", mmsi=mmsi,
                acquisition=scene.split("/")[0], position=f"{scene}:x{x}", latlon=latlon)


def test_groups_join_polarisations_products_and_mmsi():
    chips = [osc("A/GRD", 1, "vv", "111"), osc("A/GRD", 1, "vh", "111"), osc("A/SLC", 9, "vv", "111"),
             osc("A/GRD", 2, "vv", latlon=(30.0, 120.0)), osc("A/GRD", 2, "vh", latlon=(30.0, 120.0)),
             osc("A/SLC", 7, "vv", latlon=(30.001, 120.001)),  # the same ship, 140 m away, in the SLC product
             osc("A/SLC", 8, "vv", latlon=(30.1, 120.0)),  # another ship, 11 km away
             osc("B/GRD", 3, "vv")]
    splits.assign_groups(chips, "mmsi")
    g = [c["group"] for c in chips]
    assert g[0] == g[1] == g[2] == "mmsi:111"
    assert g[3] == g[4] == g[5] and g[6] != g[3] and g[7] == "pos:B/GRD:x3"
    splits.assign_groups(chips, "scene")
    assert {c["group"] for c in chips} == {"scene:A", "scene:B"}
    splits.assign_groups(chips, "none")
    assert len({c["group"] for c in chips}) == len(chips)


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def raw(tmp_path):
    """data/raw with the real OpenSARShip scenes (linked) and a FUSAR fixture sharing one MMSI with them."""
    raw = tmp_path / "raw"
    (raw / "opensarship").mkdir(parents=True)
    for z in ZIPS:
        (raw / "opensarship" / z.name).symlink_to(z)
    write_fusar(raw / "fusar" / "FUSAR-Ship1.0", "nested")
    meta = raw / "fusar" / "FUSAR-Ship1.0" / "meta.csv"
    lines = meta.read_text().splitlines()
    lines[1] = lines[1].replace("\t412000000\t", "\t413338000\t")  # a Cargo ship also in the 1.0 GRD scene
    meta.write_text("\n".join(lines) + "\n")
    return raw


@real
def test_real_scenes_and_fusar_fixture_end_to_end(raw, tmp_path):
    out = tmp_path / "out"
    summary = run(["--raw-dir", raw, "--output-dir", out, "--pol", "both", "--classes", "Cargo,Tanker,Fishing"])
    assert list(summary["sets"]) == ["fusar", "opensarship", "mixed"]
    sets = {s: check_set(out / s) for s in ("fusar", "opensarship", "mixed")}
    for s in sets:
        check_imagefolder(out / s)
    # The merged set is the union of the per-dataset splits, file for file.
    union = sorted(sets["fusar"] + sets["opensarship"], key=lambda r: r["path"])
    assert sets["mixed"] == union
    assert tree_bytes(out / "mixed" / "train") == {**tree_bytes(out / "fusar" / "train"),
                                                   **tree_bytes(out / "opensarship" / "train")}
    osr = sets["opensarship"]
    assert Counter(r["class"] for r in osr) == {"Cargo": 58, "Tanker": 6}  # 29 + 3 ships, two polarisations
    assert all(r["mmsi"] and r["head_row"] and r["tail_col"] and r["pol"] in ("vv", "vh") for r in osr)
    by_group = Counter(r["group"] for r in osr)
    assert all(n % 2 == 0 for n in by_group.values())  # vv and vh of each ship together
    # One MMSI in both datasets: on the same side of the split in both.
    shared = {r["split"] for r in sets["mixed"] if r["group"] == "mmsi:413338000"}
    assert len(shared) == 1 and {r["dataset"] for r in sets["mixed"] if r["group"] == "mmsi:413338000"} == \
        {"fusar", "opensarship"}
    row = next(r for r in osr if r["path"].endswith(f"{GRD_V1}_x1673_y6973_vv.png"))
    assert (row["chip_h"], row["head_row"], row["head_col"], row["tail_row"], row["tail_col"]) == \
        ("85", "30", "36", "51", "48")
    assert row["source"].endswith(f"{GRD_V1}.zip!{GRD_V1}/Patch_Uint8/Visual_Cargo_x1673_y6973_vv.tif")
    assert (out / "summary.txt").read_text().startswith("set ")


@real
def test_rerun_skips_and_force_rebuilds_identical_bytes(raw, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--raw-dir", raw, "--output-dir", out]
    run(args)
    first = tree_bytes(out)
    capsys.readouterr()
    run(args)
    assert "up to date" in capsys.readouterr().out
    run(args + ["--force"])
    assert tree_bytes(out) == first
    assert not (out / ".prep-tmp").exists()


def test_zip_slip_archive_is_refused(tmp_path):
    raw = tmp_path / "raw" / "opensarship"
    raw.mkdir(parents=True)
    with zipfile.ZipFile(raw / "OpenSARShip_2.zip", "w") as zf:
        zf.writestr("Patch_Uint8/Visual_Cargo_x1_y2_vv.tif", b"x")
        zf.writestr("../../evil.tif", b"x")
    with pytest.raises(SystemExit, match=r"member '\.\./\.\./evil\.tif'.*zip-slip"):
        run(["--raw-dir", tmp_path / "raw", "--output-dir", tmp_path / "out"])
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == []
    assert not (tmp_path / "out").exists()
    with zipfile.ZipFile(raw / "OpenSARShip_2.zip", "w") as zf:
        zf.writestr("/etc/passwd_chip.tif", b"x")
    with pytest.raises(SystemExit, match="absolute path"):
        run(["--opensarship", raw / "OpenSARShip_2.zip", "--output-dir", tmp_path / "out"])


def test_rar_without_a_tool_names_what_to_install(tmp_path, monkeypatch):
    raw = tmp_path / "raw" / "opensarship"
    raw.mkdir(parents=True)
    (raw / f"{GRD_V1}.rar").write_bytes(b"Rar!\x1a\x07\x00 not a real archive")
    monkeypatch.setattr(archives.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "rarfile", None)  # import rarfile raises ImportError
    with pytest.raises(SystemExit, match=r"unrar.*unar.*7-Zip.*bsdtar"):
        run(["--raw-dir", tmp_path / "raw", "--output-dir", tmp_path / "out"])


def test_missing_data_exits_nonzero_with_where_to_get_it(tmp_path):
    (tmp_path / "raw" / "synthetic" / "fusar").mkdir(parents=True)  # synthetic data is not picked up
    done = subprocess.run([sys.executable, str(ROOT / "dataset_prep.py"), "--raw-dir", str(tmp_path / "raw"),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    err = done.stderr
    assert "no OpenSARShip or FUSAR-Ship data found" in err and "Traceback" not in err
    for hint in ("opensar.sjtu.edu.cn", "emwlab.fudan.edu.cn", "data/raw/opensarship", "data/raw/fusar",
                 "python dataset_prep.py --synthetic"):
        assert hint in err


def test_unknown_class_lists_available_classes_with_counts(tmp_path):
    write_fusar(tmp_path / "fusar", "nested")
    with pytest.raises(SystemExit) as e:
        run(["--fusar", tmp_path / "fusar", "--output-dir", tmp_path / "out", "--classes", "Cargo,Submarine"])
    msg = str(e.value)
    assert "unknown class 'Submarine'" in msg
    for line in ("Cargo: fusar 6", "Fishing: fusar 2", "Tanker: fusar 2", "Tug: fusar 1", "Dredger: fusar 1"):
        assert line in msg


def test_bad_options_and_overlapping_output_exit_with_messages(tmp_path):
    write_fusar(tmp_path / "raw" / "fusar", "nested")
    with pytest.raises(SystemExit, match="--test-size must be between 0 and 1"):
        run(["--raw-dir", tmp_path / "raw", "--test-size", "1.5"])
    with pytest.raises(SystemExit, match="no such file or folder"):
        run(["--fusar", tmp_path / "nowhere", "--output-dir", tmp_path / "out"])
    with pytest.raises(SystemExit, match="overlaps the input"):
        run(["--raw-dir", tmp_path / "raw", "--output-dir", tmp_path / "raw"])
    assert (tmp_path / "raw" / "fusar" / "meta.csv").is_file()


# ---------------------------------------------------------------------------------------------- synthetic demo


def test_synthetic_demo_sets_groups_union_masks(tmp_path, monkeypatch, capsys):
    synthetic = pytest.importorskip("synthetic")
    # A smaller floor per class than the demo's keeps this test to a few seconds (about 20 chips per dataset).
    monkeypatch.setattr(synthetic, "MIN_CHIPS_PER_CLASS", 6)
    out = tmp_path / "out"
    summary = run(["--synthetic", "--synthetic-chips", "20", "--raw-dir", tmp_path / "raw", "--output-dir", out,
                   "--pol", "both"])
    assert summary["synthetic"] is True and list(summary["sets"]) == ["fusar", "opensarship", "mixed"]
    sets = {s: check_set(out / s) for s in ("fusar", "opensarship", "mixed")}
    assert sets["mixed"] == sorted(sets["fusar"] + sets["opensarship"], key=lambda r: r["path"])
    for s, rows in sets.items():
        check_imagefolder(out / s)
        assert {r["class"] for r in rows} == {"Cargo", "Fishing", "Tanker"}
        with_mask = [r for r in rows if r["mask"]]
        assert with_mask and len(with_mask) == len(rows)
        for r in with_mask[:5]:
            with Image.open(out / s / r["mask"]) as m:
                assert m.size == (int(r["chip_w"]), int(r["chip_h"])) and set(np.unique(np.asarray(m))) <= {0, 255}
    assert {r["pol"] for r in sets["opensarship"]} >= {"vv", "vh"}
    # A second demo run finds its raw data and sets as it left them: nothing regenerated, nothing rebuilt.
    before = tree_bytes(out)
    again = run(["--synthetic", "--synthetic-chips", "20", "--raw-dir", tmp_path / "raw", "--output-dir", out,
                 "--pol", "both"])
    assert "not regenerated" in capsys.readouterr().out and again["fingerprint"] == summary["fingerprint"]
    assert tree_bytes(out) == before
    # The demo's synthetic data stays out of a default run on real data.
    with pytest.raises(SystemExit, match="no OpenSARShip or FUSAR-Ship data found"):
        run(["--raw-dir", tmp_path / "raw", "--output-dir", tmp_path / "real"])


@pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar (libarchive-tools) not installed")
def test_rar_scene_read_through_a_tool_and_climbing_member_refused(tmp_path, monkeypatch):
    # bsdtar reads any archive format, so a tar named .rar exercises the rar path (listing, checking, extracting).
    real_which = shutil.which
    monkeypatch.setattr(archives.shutil, "which", lambda n: real_which(n) if n == "bsdtar" else None)
    raw = tmp_path / "raw" / "opensarship"
    raw.mkdir(parents=True)
    with tarfile.open(raw / f"{GRD_V1}.rar", "w") as tf:  # two classes: a one-class set is refused
        for name, value in (("./Patch_Uint8/Visual_Cargo_x10_y20_vv.tif", 7),
                            ("./Patch_Uint8/Visual_Cargo_x10_y20_vh.tif", 7),
                            ("./Patch_Uint8/Visual_Tanker_x30_y40_vv.tif", 9)):
            chip = io.BytesIO()
            Image.fromarray(np.full((9, 9), value, np.uint8)).save(chip, format="TIFF")
            info = tarfile.TarInfo(name)
            info.size = len(chip.getvalue())
            tf.addfile(info, io.BytesIO(chip.getvalue()))
    summary = run(["--raw-dir", tmp_path / "raw", "--output-dir", tmp_path / "out", "--classes", "Cargo,Tanker"])
    rows = manifest(tmp_path / "out" / "opensarship")
    assert summary["sets"]["opensarship"]["counts"]["train"] == {"Cargo": 1, "Tanker": 1} and len(rows) == 2
    assert rows[0]["source"].endswith(f"{GRD_V1}.rar!Patch_Uint8/Visual_Cargo_x10_y20_vv.tif")
    with tarfile.open(raw / f"{GRD_V1}.rar", "w") as tf:
        info = tarfile.TarInfo("../escaped.tif")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SystemExit, match="escaped.tif"):
        run(["--raw-dir", tmp_path / "raw", "--output-dir", tmp_path / "out", "--force"])
    assert not list(tmp_path.rglob("escaped.tif"))
