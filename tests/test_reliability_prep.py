"""dataset_prep.py never loses or silently breaks a prepared set (issue 15, cases 2, 3, 6, 9 and 16).

Naming one dataset keeps another's set made with the same options and rebuilds `mixed` as the union of the sets
present; a set made with other options stops the run unless --remove-other-sets; a class with one ship group, a
set with one class and sets with different class lists are named at prep time; a damaged set is named file by
file and rebuilt (--verify: by content too), and a damaged chip names itself when a split is loaded.
"""

import csv
import json

import pytest
from fixtures import manifest, small_synthetic_raw, tree_bytes, write_fusar, write_tiny_prepared

import data
import dataset_prep


def run(*argv):
    return dataset_prep.main(dataset_prep.get_args_parser().parse_args([str(a) for a in argv]))




@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Small synthetic raw data of both datasets, written once."""
    return small_synthetic_raw(tmp_path_factory.mktemp("raw"), 20)


@pytest.fixture
def both(raw, tmp_path):
    """An output folder holding fusar, opensarship and mixed, prepared together."""
    out = tmp_path / "out"
    run("--opensarship", raw / "opensarship", "--fusar", raw / "fusar", "--output-dir", out)
    return out


@pytest.fixture
def fusar_raw(tmp_path):
    write_fusar(tmp_path / "fusar" / "FUSAR-Ship1.0", "nested")
    return tmp_path / "fusar"


# ---------------------------------------------------------------------------------------------- case 2


def test_naming_one_dataset_keeps_the_others_set_and_rebuilds_mixed_as_the_union(raw, both, capsys):
    cache = both / "opensarship" / ".cache" / "train_64_0123456789abcdef.npy"
    cache.parent.mkdir()
    cache.write_bytes(b"decoded chips")
    kept = tree_bytes(both / "opensarship")
    capsys.readouterr()
    summary = run("--fusar", raw / "fusar", "--output-dir", both)
    assert tree_bytes(both / "opensarship") == kept  # untouched, its cache included
    assert list(summary["sets"]) == ["fusar", "opensarship", "mixed"]
    assert "kept" in capsys.readouterr().out
    union = sorted(manifest(both / "fusar") + manifest(both / "opensarship"), key=lambda r: r["path"])
    assert manifest(both / "mixed") == union  # the sets present now, not the splits of the first run
    for r in union:
        source = both / r["dataset"] / r["path"]
        assert (both / "mixed" / r["path"]).read_bytes() == source.read_bytes()
    capsys.readouterr()
    run("--fusar", raw / "fusar", "--output-dir", both)
    assert "up to date" in capsys.readouterr().out


def test_a_set_made_with_other_options_needs_its_own_flag_to_go(raw, both, capsys):
    before = tree_bytes(both)
    with pytest.raises(SystemExit) as e:
        run("--fusar", raw / "fusar", "--output-dir", both, "--val-size", "0", "--force")
    msg = str(e.value)
    assert f"{both / 'opensarship'}" in msg and "val_size 0.1" in msg and "--remove-other-sets" in msg
    assert tree_bytes(both) == before
    summary = run("--fusar", raw / "fusar", "--output-dir", both, "--val-size", "0", "--remove-other-sets")
    assert list(summary["sets"]) == ["fusar"]
    assert not (both / "opensarship").exists() and not (both / "mixed").exists()
    assert f"removed {both / 'opensarship'}" in capsys.readouterr().out
    assert "--remove-other-sets" in dataset_prep.get_args_parser().format_help()
    assert "--remove-other-sets" in dataset_prep.__doc__


def test_mixed_is_removed_when_the_sets_put_one_ship_in_two_splits(raw, both, capsys):
    run("--fusar", raw / "fusar", "--output-dir", both)
    fusar_train = next(r["group"] for r in manifest(both / "fusar") if r["split"] == "train")
    rows = manifest(both / "opensarship")
    row = next(r for r in rows if r["split"] == "test")
    row["group"] = fusar_train  # the same ship on the test side of the kept set
    with open(both / "opensarship" / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    summary = run("--fusar", raw / "fusar", "--output-dir", both, "--force")
    assert list(summary["sets"]) == ["fusar", "opensarship"] and not (both / "mixed").exists()
    err = capsys.readouterr().err
    assert "mixed" in err and "1 ship group(s)" in err and fusar_train in err


def test_a_damaged_kept_set_is_named_not_used(raw, both):
    victim = next(r["path"] for r in manifest(both / "opensarship"))
    (both / "opensarship" / victim).unlink()
    with pytest.raises(SystemExit) as e:
        run("--fusar", raw / "fusar", "--output-dir", both)
    assert f"{both / 'opensarship'}" in str(e.value) and f"{victim}: missing" in str(e.value)


# ---------------------------------------------------------------------------------------------- cases 3, 9, 16


def test_a_class_with_one_ship_group_is_warned_at_prep_time(fusar_raw, tmp_path, capsys):
    out = tmp_path / "out"
    run("--fusar", fusar_raw, "--output-dir", out, "--classes", "Cargo,Tanker,Tug")
    warning = "fusar: Tug has 1 ship group (1 chip), so no test chips"
    assert f"warning: {warning}" in capsys.readouterr().err
    for f in (out / "summary.txt", out / "fusar" / "summary.txt"):
        assert warning in f.read_text()
    assert "Tanker has" not in (out / "summary.txt").read_text()  # two ships: one in each split


def test_one_class_left_is_refused_naming_the_set_and_the_class(fusar_raw, raw, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("--fusar", fusar_raw, "--output-dir", tmp_path / "one", "--classes", "Cargo,Passenger")
    assert "the fusar set would hold one class only (Cargo" in str(e.value) and "--classes" in str(e.value)
    assert not (tmp_path / "one").exists()
    with pytest.raises(SystemExit) as e:  # FUSAR has Other; OpenSARShip's class is spelt "Other Type"
        run("--opensarship", raw / "opensarship", "--fusar", raw / "fusar", "--output-dir", tmp_path / "two",
            "--classes", "Cargo,Other")
    assert "the opensarship set would hold one class only (Cargo" in str(e.value)


def test_sets_with_different_class_lists_warn_that_cross_set_tests_are_refused(raw, tmp_path, capsys):
    out = tmp_path / "out"
    run("--opensarship", raw / "opensarship", "--fusar", raw / "fusar", "--output-dir", out,
        "--classes", "Cargo,Fishing,Tanker,Other")
    err = capsys.readouterr().err
    assert "the prepared sets have different classes" in err and "cross-set" in err
    assert "--classes Cargo,Fishing,Tanker" in err
    assert "different classes" in (out / "summary.txt").read_text()


# ---------------------------------------------------------------------------------------------- case 6


def test_a_damaged_set_is_named_file_by_file_and_rebuilt(fusar_raw, tmp_path, capsys):
    out = tmp_path / "out"
    run("--fusar", fusar_raw, "--output-dir", out)
    (out / "fusar" / ".cache").mkdir()
    (out / "fusar" / ".cache" / "test_16_0123456789abcdef.npy").write_bytes(b"decoded")  # same manifest: kept
    first = tree_bytes(out)
    rows = manifest(out / "fusar")
    gone, cut = rows[0]["path"], rows[1]["path"]
    (out / "fusar" / gone).unlink()
    (out / "fusar" / cut).write_bytes((out / "fusar" / cut).read_bytes()[:40])
    capsys.readouterr()
    run("--fusar", fusar_raw, "--output-dir", out)
    text = capsys.readouterr()
    said = text.out + text.err
    assert "up to date" not in said
    assert f"fusar/{gone}: missing" in said and f"fusar/{cut}: 40 bytes, expected" in said
    assert tree_bytes(out) == first


def test_verify_compares_content(fusar_raw, tmp_path, capsys):
    out = tmp_path / "out"
    run("--fusar", fusar_raw, "--output-dir", out)
    first = tree_bytes(out)
    path = manifest(out / "fusar")[0]["path"]
    content = bytearray((out / "fusar" / path).read_bytes())
    content[-20] ^= 0xFF  # same size, other bytes
    (out / "fusar" / path).write_bytes(bytes(content))
    capsys.readouterr()
    run("--fusar", fusar_raw, "--output-dir", out)
    assert "up to date" in capsys.readouterr().out  # sizes only
    run("--fusar", fusar_raw, "--output-dir", out, "--verify")
    said = "".join(capsys.readouterr())
    assert f"fusar/{path}: content differs (sha1)" in said
    assert tree_bytes(out) == first
    assert json.loads((out / "fusar" / "summary.json").read_text())["files"][path][0] == len(content)


def test_a_truncated_or_missing_chip_names_itself_when_a_split_is_loaded(tmp_path):
    root = write_tiny_prepared(tmp_path / "prepared", sets=("fusar",))
    rows = [r for r in manifest(root / "fusar") if r["split"] == "test"]
    chip = root / "fusar" / rows[0]["path"]
    chip.write_bytes(chip.read_bytes()[:60])
    with pytest.raises(data.ChipReadError) as e:
        data.load_split(root / "fusar", "test", 16, cache=False)
    assert str(chip) in str(e.value) and "python dataset_prep.py --force" in str(e.value)
    chip.unlink()
    with pytest.raises(data.ChipReadError, match="no such file"):
        data.load_split(root / "fusar", "test", 16, num_workers=2, cache=False)
