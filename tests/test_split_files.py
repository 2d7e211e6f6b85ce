"""dataset_prep.py --export-splits and --split-file (split_files.py): a split written as a small CSV and prepared
again from it, byte for byte; chips missing, extra or changed counted, named and left out; bad files refused."""

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import ZIPS, real, small_synthetic_raw, tree_bytes
from PIL import Image

import dataset_prep
import report_box
import split_files

SETS = ("fusar", "opensarship", "mixed")


def run(argv):
    return dataset_prep.main(dataset_prep.get_args_parser().parse_args([str(a) for a in argv]))


def prep(raw, out, *extra):
    return run(["--opensarship", raw / "opensarship", "--fusar", raw / "fusar", "--output-dir", out, *extra])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def manifest_bytes(out):
    return {s: (Path(out) / s / "manifest.csv").read_bytes() for s in SETS}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Small synthetic raw data of both datasets (OpenSARShip scene zips, FUSAR-Ship tiffs and meta.csv)."""
    return small_synthetic_raw(tmp_path_factory.mktemp("raw"), 24)


@pytest.fixture(scope="module")
def exported(raw, tmp_path_factory):
    """(output folder, split file) of the default preparation with --export-splits."""
    root = tmp_path_factory.mktemp("exported")
    prep(raw, root / "out", "--export-splits", root / "split.csv")
    return root / "out", root / "split.csv"


def test_export_then_import_gives_identical_manifests(raw, exported, tmp_path, capsys):
    out, split = exported
    rows = read_rows(split)
    assert tuple(rows[0]) == split_files.SPLIT_COLUMNS
    per_dataset = [r for s in ("fusar", "opensarship") for r in read_rows(out / s / "manifest.csv")]
    assert len(rows) == len(per_dataset) and rows == sorted(rows, key=lambda r: (r["dataset"], r["chip"]))
    # The chip ids and the hashes of the raw files themselves, not of our PNGs.
    fusar_row = next(r for r in rows if r["dataset"] == "fusar")
    tiff = next((raw / "fusar").rglob(f"{fusar_row['chip']}.tiff"))
    assert fusar_row["source_sha1"] == hashlib.sha1(tiff.read_bytes()).hexdigest()
    assert {r["source_sha1"] for r in rows}.isdisjoint(r["sha1"] for r in per_dataset)
    oss = next(r for r in rows if r["dataset"] == "opensarship")
    assert oss["chip"].startswith("S1") and "_x" in oss["chip"] and oss["chip"].endswith(f"_{oss['pol']}")
    assert oss["product"] == "uint8" and {r["split"] for r in rows} == {"train", "val", "test"}

    # The options the file replaces make no difference: the manifests are those of the exported run.
    capsys.readouterr()
    summary = prep(raw, tmp_path / "again", "--split-file", split, "--split-seed", 9, "--group-by", "none",
                   "--val-size", 0.3, "--test-size", 0.5, "--export-splits", tmp_path / "again.csv")
    assert manifest_bytes(tmp_path / "again") == manifest_bytes(out)
    sha1 = hashlib.sha1(split.read_bytes()).hexdigest()
    check = summary["split_file"]
    assert (check["sha1"], check["chips"], check["matched"]) == (sha1, len(rows), len(rows))
    assert check["missing"] == check["extra"] == check["changed"] == []
    assert f"split file {split} (sha1 {sha1}): {len(rows)} of its {len(rows)} chips found" in capsys.readouterr().out
    assert (tmp_path / "again.csv").read_bytes() == split.read_bytes()  # exported again: the same file
    for s in SETS:
        assert dataset_prep.sets.load_summary(tmp_path / "again", s)["split_file"] == {"path": str(split),
                                                                                       "sha1": sha1}
    # The report's box names the file by its hash.
    records = [("cell", {"train_set": s, "args": {"data_dir": str(tmp_path / "again")}}) for s in SETS]
    (line,) = report_box.split_file_lines(records, tmp_path / "elsewhere")
    assert line.startswith(f"- Split file {sha1[:12]}: fusar, opensarship, mixed prepared from split.csv")
    plain = [("cell", {"train_set": s, "args": {"data_dir": str(out)}}) for s in SETS]
    assert report_box.split_file_lines(plain, out) == []  # sets prepared without a split file: no line


def test_export_from_a_prepared_folder_rebuilds_nothing(raw, exported, tmp_path, capsys):
    out, split = exported
    before = tree_bytes(out)
    capsys.readouterr()
    summary = prep(raw, out, "--export-splits", tmp_path / "later.csv")
    assert "up to date" in capsys.readouterr().out and tree_bytes(out) == before
    assert (tmp_path / "later.csv").read_bytes() == split.read_bytes()
    assert summary["exported"]["bytes"] == split.stat().st_size


def test_changed_missing_and_extra_chips_are_counted_named_and_left_out(raw, exported, tmp_path, capsys):
    out, split = exported
    mine = tmp_path / "mine"
    shutil.copytree(raw, mine)
    fusar = [r for r in read_rows(split) if r["dataset"] == "fusar"]
    changed, missing = fusar[0], next(r for r in fusar if r["group"] != fusar[0]["group"])
    tiff = next((mine / "fusar").rglob(f"{changed['chip']}.tiff"))
    with Image.open(tiff) as img:
        pixels = np.asarray(img).copy()
    pixels[0, 0] ^= 1  # one pixel: another file, which this copy of the data has instead of the published one
    Image.fromarray(pixels).save(tiff)
    next((mine / "fusar").rglob(f"{missing['chip']}.tiff")).unlink()
    extra = tiff.with_name("Ship_C01S02N0777.tiff")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 30), dtype=np.uint8)).save(extra)

    capsys.readouterr()
    summary = prep(mine, tmp_path / "out", "--split-file", split)
    check = summary["split_file"]
    assert check["missing"] == [f"fusar {missing['chip']}"] and check["extra"] == ["fusar Ship_C01S02N0777"]
    assert [c["chip"] for c in check["changed"]] == [f"fusar {changed['chip']}"]
    assert check["changed"][0]["reason"].startswith("source file differs (sha1 ")
    assert check["matched"] == check["chips"] - 2
    printed, text = capsys.readouterr().out, (tmp_path / "out" / "summary.txt").read_text()
    for where in (printed, text):
        assert f"1 chip(s) in the split file but not in the data: fusar {missing['chip']}" in where
        assert "1 chip(s) in the data but not in the split file, left out of every split: fusar " \
               "Ship_C01S02N0777" in where
        assert f"1 chip(s) differ from the split file, left out of every split: fusar {changed['chip']}: " \
               "source file differs" in where
    # Left out of every split, never reassigned; every other chip exactly where the file puts it.
    left_out = {changed["chip"], missing["chip"], "Ship_C01S02N0777"}
    for s in SETS:
        new = read_rows(tmp_path / "out" / s / "manifest.csv")
        assert not any(chip in r["path"] for r in new for chip in left_out)
        old = [r for r in read_rows(out / s / "manifest.csv") if not any(c in r["path"] for c in left_out)]
        assert [dict(r, source="") for r in new] == [dict(r, source="") for r in old]  # (the copy's paths)


def surplus_field(text):
    lines = text.split("\n")
    lines[1] += ",surplus"
    return "\n".join(lines)


def leaking_group(text):
    """The file with a test chip moved into the group of a training chip."""
    lines = text.split("\n")
    rows = list(csv.reader(lines))
    train = next(r for r in rows if r[6] == "train")
    test = next(i for i, r in enumerate(rows) if r[6] == "test")
    lines[test] = ",".join(rows[test][:5] + [train[5]] + rows[test][6:])
    return "\n".join(lines)


@pytest.mark.parametrize("case, edit, extra, message", [
    ("missing", None, (), r"split file .*nope\.csv: no such file; give the path of a CSV written by dataset_prep"),
    ("column", lambda t: t.replace(",source_sha1", ",sha"), (),
     r"split\.csv: missing column source_sha1 \(the header must be dataset,chip,.*\): use the file exactly"),
    ("split", lambda t: t.replace(",test,", ",tst,", 1), (), r"line \d+: split 'tst' is not one of train, val, test"),
    ("sha1", lambda t: t[:-3] + "xyz\n", (), r"line \d+: source_sha1 '[0-9a-fxyz]+' is not a sha1"),
    ("fields", surplus_field, (), r"line 2: 9 fields, expected 8 \(one per header column\)"),
    ("duplicate", lambda t: t + t.splitlines()[1] + "\n", (), r"lines 2 and \d+ both list fusar Ship_"),
    ("dataset", lambda t: t.replace("\nfusar,", "\nsentinel,", 1), (), r"line 2: unknown dataset 'sentinel'"),
    ("empty", lambda t: t.splitlines()[0] + "\n", (), r"no chips listed \(only a header\)"),
    ("leak", leaking_group, (), r"group mmsi:\d+ is in t\w+ \(line \d+\) and t\w+ \(line \d+\), so one ship"),
    ("product", None, ("--product", "cal"), r"lists --product uint8 chips but this run prepares --product cal: "
                                             r"run with --product uint8"),
    ("pol", None, ("--pol", "both"), r"polarisations [a-z, ]+ but this run prepares --pol both: run with --pol co"),
    ("classes", None, ("--classes", "Cargo,Tanker"), r"lists the classes Cargo, Fishing, Tanker but this run "
                                                     r"prepares --classes Cargo,Tanker: run with --classes "),
    ("target", None, ("--export-splits", "SPLIT"), r"--export-splits .*split\.csv is the --split-file this run"),
    ("folder", None, ("--export-splits", "TMP"), r"--export-splits .*: is a folder; give a file name"),
])
def test_a_bad_split_file_is_a_message_and_nothing_is_written(raw, exported, tmp_path, case, edit, extra,
                                                              message):
    split = tmp_path / ("nope.csv" if case == "missing" else "split.csv")
    if case != "missing":
        text = exported[1].read_text()
        split.write_text(edit(text) if edit else text)
    extra = [{"SPLIT": split, "TMP": tmp_path}.get(a, a) for a in extra]
    with pytest.raises(SystemExit, match=message) as e:
        prep(raw, tmp_path / "out", "--split-file", split, *extra)
    assert str(e.value).startswith("error: ") and not (tmp_path / "out").exists()


@real
def test_real_scenes_export_then_import(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for z in ZIPS:
        (raw / z.name).symlink_to(z)
    args = ["--opensarship", raw, "--pol", "both", "--classes", "Cargo,Tanker"]
    run([*args, "--output-dir", tmp_path / "a", "--export-splits", tmp_path / "split.csv"])
    rows = read_rows(tmp_path / "split.csv")
    assert len(rows) == 64 and {r["pol"] for r in rows} == {"vv", "vh"}
    run([*args, "--output-dir", tmp_path / "b", "--split-file", tmp_path / "split.csv", "--split-seed", 3])
    assert (tmp_path / "a" / "opensarship" / "manifest.csv").read_bytes() == \
        (tmp_path / "b" / "opensarship" / "manifest.csv").read_bytes()
