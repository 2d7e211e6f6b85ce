"""dataset_prep.py --split-seed: the split alone, over the same chips (and the same synthetic raw data).

Two split seeds give two different grouped splits of identical chips; --split-seed omitted is --split-seed equal to
--seed, byte for byte; every summary records `split_seed`; another split seed rebuilds, the same one is skipped.
"""

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from fixtures import small_synthetic_raw

import dataset_prep

SETS = ("fusar", "opensarship", "mixed")
PLACEMENT = ("path", "split", "mask")  # the only manifest columns the split seed may change


def manifest(set_dir):
    with open(Path(set_dir) / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def chips(rows, drop=PLACEMENT):
    """The manifest rows without the columns in `drop`, sorted: what the chips are, not where they went."""
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k not in drop)) for r in rows)


def groups_in(rows, split):
    return {r["group"] for r in rows if r["split"] == split}


def run(argv):
    return dataset_prep.main(dataset_prep.get_args_parser().parse_args([str(a) for a in argv]))


def prep(raw, out, *extra):
    return run(["--opensarship", raw / "opensarship", "--fusar", raw / "fusar", "--output-dir", out, *extra])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Small synthetic raw data of both datasets (many ships per class), written once."""
    return small_synthetic_raw(tmp_path_factory.mktemp("raw"), 40)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    """{name: output folder}: --seed 42 with --split-seed omitted, 42 and 7; --seed 7 with it omitted."""
    root = tmp_path_factory.mktemp("prepared")
    runs = {"omitted": (), "42": ("--split-seed", 42), "7": ("--split-seed", 7), "seed 7": ("--seed", 7)}
    for name, extra in runs.items():
        prep(raw, root / name, *extra)
    return {name: root / name for name in runs}


def test_two_split_seeds_give_different_splits_disjoint_by_ship_of_the_same_chips(prepared):
    for name in SETS:
        a, b = manifest(prepared["omitted"] / name), manifest(prepared["7"] / name)
        assert groups_in(a, "test") != groups_in(b, "test"), name
        for rows in (a, b):
            sides = defaultdict(set)
            for r in rows:
                sides[r["group"]].add(r["split"])
            assert all(len(s) == 1 for s in sides.values()), f"{name}: a ship in two of train, val and test"
            assert {r["split"] for r in rows} == {"train", "val", "test"}
            for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
                assert not groups_in(rows, first) & groups_in(rows, second)
        # Same chips (sha1, class, group, source, every other column): only the split and the placement differ.
        assert chips(a) == chips(b) and sorted(r["sha1"] for r in a) == sorted(r["sha1"] for r in b)
        assert any(ra["split"] != rb["split"] for ra, rb in zip(sorted(a, key=lambda r: r["sha1"]),
                                                                sorted(b, key=lambda r: r["sha1"])))
        for out, rows in ((prepared["omitted"], a), (prepared["7"], b)):
            files = tree_bytes(out / name)
            for r in rows:
                assert r["path"].startswith(f"{r['split']}/{r['class']}/") and r["path"] in files
                assert r["mask"] == f"masks/{r['path']}" and r["mask"] in files
            assert len([f for f in files if f.endswith(".png") and not f.startswith("masks/")]) == len(rows)


def test_omitted_split_seed_is_the_seed_byte_for_byte(prepared):
    assert dataset_prep.get_args_parser().parse_args([]).split_seed is None
    # Every file: images, masks, manifests and summaries (same options, so the same fingerprint).
    assert tree_bytes(prepared["omitted"]) == tree_bytes(prepared["42"])
    # With named inputs --seed only seeds the split: --seed 7 splits as --seed 42 --split-seed 7 does.
    for name in SETS:
        assert (prepared["seed 7"] / name / "manifest.csv").read_bytes() == \
            (prepared["7"] / name / "manifest.csv").read_bytes()


def test_every_summary_carries_the_split_seed(prepared):
    for out, seed, split_seed in ((prepared["omitted"], 42, 42), (prepared["7"], 42, 7), (prepared["seed 7"], 7, 7)):
        for folder in (out, *(out / s for s in SETS)):
            summary = json.loads((folder / "summary.json").read_text())
            assert type(summary["split_seed"]) is int and summary["split_seed"] == split_seed, folder
            assert summary["options"]["seed"] == seed
            lines = (folder / "summary.txt").read_text().splitlines()
            named = [line for line in lines if line.startswith("split seed")]
            # summary.txt names the split seed where it is not --seed (else its bytes are as before the option).
            assert named == ([f"split seed {split_seed} (--split-seed; --seed {seed})"] if split_seed != seed else [])


def test_rerun_with_another_split_seed_rebuilds_the_same_one_is_skipped(raw, tmp_path, capsys):
    out = tmp_path / "out"
    first = prep(raw, out, "--split-seed", 7)
    before = tree_bytes(out)
    capsys.readouterr()
    prep(raw, out, "--split-seed", 7)
    assert "up to date" in capsys.readouterr().out and tree_bytes(out) == before
    second = prep(raw, out, "--split-seed", 8)
    printed = capsys.readouterr().out
    assert "up to date" not in printed and "seed 42; split seed 8)" in printed
    assert second["fingerprint"] != first["fingerprint"] and second["split_seed"] == 8
    assert json.loads((out / "mixed" / "summary.json").read_text())["split_seed"] == 8
    rows_7 = list(csv.DictReader(before["mixed/manifest.csv"].decode().splitlines()))
    assert chips(manifest(out / "mixed")) == chips(rows_7) and manifest(out / "mixed") != rows_7
    prep(raw, out, "--split-seed", 7)
    assert "up to date" not in capsys.readouterr().out and tree_bytes(out) == before


def test_synthetic_split_seed_splits_the_raw_data_of_seed(tmp_path, monkeypatch, capsys):
    synthetic = pytest.importorskip("synthetic")
    monkeypatch.setattr(synthetic, "MIN_CHIPS_PER_CLASS", 6)

    def demo(name, *extra):
        return run(["--synthetic", "--synthetic-chips", 20, "--seed", 42, "--raw-dir", tmp_path / f"raw-{name}",
                    "--output-dir", tmp_path / f"out-{name}", *extra])

    demo("a")
    demo("b", "--split-seed", 7)
    raw_a, raw_b = (tree_bytes(tmp_path / f"raw-{n}" / "synthetic") for n in "ab")
    assert raw_a == raw_b  # the raw data of --seed 42, whatever the split seed
    for name in SETS:  # the same chips (their sources lie under two raw folders), another split
        a, b = (manifest(tmp_path / f"out-{n}" / name) for n in "ab")
        assert chips(a, PLACEMENT + ("source",)) == chips(b, PLACEMENT + ("source",))
        assert groups_in(a, "test") != groups_in(b, "test")
    # Another split seed re-splits the raw data as it lies: the generator is not rerun, the sets are rebuilt.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "raw-b").rglob("*")}
    capsys.readouterr()
    summary = demo("b", "--split-seed", 8)
    printed = capsys.readouterr().out
    assert "not regenerated" in printed and "writing synthetic" not in printed and "up to date" not in printed
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "raw-b").rglob("*")} == mtimes
    assert summary["split_seed"] == 8 and summary["options"]["seed"] == 42
    demo("b", "--split-seed", 8)
    assert "up to date" in capsys.readouterr().out


def test_split_seed_option_is_checked_and_explained(capsys):
    parser = dataset_prep.get_args_parser()
    assert parser.parse_args(["--split-seed", "7"]).split_seed == 7
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(["--split-seed", bad])
        assert e.value.code == 2 and "--split-seed" in capsys.readouterr().err
    text = " ".join(parser.format_help().split())
    assert "--split-seed N" in text and "seed of the split alone (default: --seed)" in text
    assert "one --output-dir each, to pool over split seeds" in text
    doc = " ".join(dataset_prep.__doc__.split())
    assert "--split-seed N chooses the split alone" in doc and "one --output-dir each" in doc
    assert "`split_seed`" in doc
