"""The validation split (dataset_prep.py --val-size): grouped, stratified, carved from training data only.

The test split must be the one --val-size 0 gives; --val-size 0 is the study's two-split layout; no ship (group)
is in two of train, val and test, per set and in mixed; a class too small for val is named in a note.
"""

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from fixtures import small_synthetic_raw, write_fusar

import dataset_prep
import splits
from readers import Chip

SETS = ("fusar", "opensarship", "mixed")


def manifest(set_dir):
    with open(Path(set_dir) / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_split_per_group(rows):
    sides = defaultdict(set)
    for r in rows:
        sides[r["group"]].add(r["split"])
    return all(len(s) == 1 for s in sides.values())


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Small synthetic raw data of both datasets (about 60 chips each, many ships per class), written once."""
    return small_synthetic_raw(tmp_path_factory.mktemp("raw"), 60)


def prep(raw, out, *extra):
    argv = ["--opensarship", raw / "opensarship", "--fusar", raw / "fusar", "--output-dir", out, "--pol", "both",
            *extra]
    return dataset_prep.main(dataset_prep.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    """{val size: output folder} of one seed's runs with --val-size 0, 0.1 and 0.3."""
    root = tmp_path_factory.mktemp("prepared")
    outs = {v: root / f"val{v}" for v in ("0", "0.1", "0.3")}
    for v, out in outs.items():
        prep(raw, out, "--val-size", v, "--seed", 7)
    return outs


# ---------------------------------------------------------------------------------------------- the split itself


def make_chips(seed=0, n_groups=400):
    rng = np.random.default_rng(seed)
    chips = []
    for g in range(n_groups):
        cls = str(rng.choice(["Cargo", "Fishing", "Tanker"], p=[0.6, 0.15, 0.25]))
        for _ in range(int(rng.integers(1, 4))):
            chips.append(Chip(dataset="fusar" if g % 3 else "opensarship", cls=cls, group=f"g{g}"))
    # One ship in both datasets under two classes (its AIS type changed): it moves as one.
    chips += [Chip(dataset="fusar", cls="Cargo", group="both"), Chip(dataset="opensarship", cls="Tanker", group="both")]
    return chips


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_val_leaves_the_test_split_and_takes_its_fraction_of_training(seed):
    base = make_chips(seed)
    splits.split_groups(base, 0.2, seed)
    assert {c.split for c in base} == {"train", "test"}
    for val_size in (0.1, 0.3):
        chips = make_chips(seed)
        splits.split_groups(chips, 0.2, seed, val_size)
        # Test unchanged chip for chip; val only takes from what was training.
        assert [c.split == "test" for c in chips] == [c.split == "test" for c in base]
        assert all(b.split == "train" for c, b in zip(chips, base) if c.split == "val")
        sides = defaultdict(set)
        for c in chips:
            sides[c.group].add(c.split)
        assert all(len(s) == 1 for s in sides.values())
        training = Counter((c.dataset, c.cls) for c in base if c.split == "train")
        val = Counter((c.dataset, c.cls) for c in chips if c.split == "val")
        for cell, n in training.items():  # groups hold 1 to 3 chips: the target is met to within a group
            assert abs(val[cell] - val_size * n) <= 3, (cell, val[cell], n, val_size)


def test_every_class_with_two_training_groups_gets_val_and_keeps_train():
    # Tanker: 3 ships -> 1 test, 2 training -> 1 val, 1 train. Fishing: 2 ships -> 1 test, 1 train, no val.
    chips = [Chip(dataset="fusar", cls="Tanker", group=f"t{i}") for i in range(3)] + \
            [Chip(dataset="fusar", cls="Fishing", group=f"f{i}") for i in range(2)] + \
            [Chip(dataset="fusar", cls="Cargo", group=f"c{i}") for i in range(30)]
    splits.split_groups(chips, 0.2, seed=3, val_size=0.05)
    per = Counter((c.cls, c.split) for c in chips)
    assert per[("Tanker", "test")] == per[("Tanker", "val")] == per[("Tanker", "train")] == 1
    assert (per[("Fishing", "test")], per[("Fishing", "val")], per[("Fishing", "train")]) == (1, 0, 1)
    assert per[("Cargo", "test")] == 6 and per[("Cargo", "val")] == 1 and per[("Cargo", "train")] == 23
    notes = splits.val_notes(chips, ["fusar"], 0.05)
    assert len(notes) == 1 and notes[0].startswith("fusar: no val chips for Fishing (")
    assert splits.val_notes(chips, ["fusar"], 0.0) == []
    assert splits.split_names(0.0) == ("train", "test") and splits.split_names(0.1) == ("train", "val", "test")


# ---------------------------------------------------------------------------------------------- prepared sets


def test_no_group_in_two_splits_and_test_split_identical_to_val_size_zero(prepared):
    for name in SETS:
        base = manifest(prepared["0"] / name)
        base_test = {r["path"]: r["group"] for r in base if r["split"] == "test"}
        base_train = Counter((r["class"], Path(r["path"]).name, r["group"]) for r in base if r["split"] == "train")
        for v in ("0.1", "0.3"):
            rows = manifest(prepared[v] / name)
            assert one_split_per_group(rows), (name, v)
            assert {r["split"] for r in rows} == {"train", "val", "test"}
            assert {r["path"]: r["group"] for r in rows if r["split"] == "test"} == base_test, (name, v)
            assert tree_bytes(prepared[v] / name / "test") == tree_bytes(prepared["0"] / name / "test")
            # train + val of this run = train of the two-split run (same chips, same names, same groups)
            assert Counter((r["class"], Path(r["path"]).name, r["group"]) for r in rows if r["split"] != "test") \
                == base_train


def test_val_fraction_near_target_per_dataset_and_class(prepared):
    for name in ("fusar", "opensarship"):
        rows = manifest(prepared["0.3"] / name)
        training = Counter(r["class"] for r in rows if r["split"] != "test")
        val = Counter(r["class"] for r in rows if r["split"] == "val")
        groups = defaultdict(set)
        for r in rows:
            if r["split"] != "test":
                groups[r["class"]].add(r["group"])
        for cls, n in training.items():
            assert len(groups[cls]) >= 4, (name, cls)  # enough ships for the fraction to mean something
            per_group = n / len(groups[cls])
            assert abs(val[cls] - 0.3 * n) <= 2 * per_group + 1, (name, cls, val[cls], n)


def test_val_size_zero_is_the_two_split_layout(prepared):
    out = prepared["0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["val_size"] == 0.0
    for name in SETS:
        assert not (out / name / "val").exists() and not (out / name / "masks" / "val").exists()
        assert {r["split"] for r in manifest(out / name)} == {"train", "test"}
        assert set(summary["sets"][name]["counts"]) == set(summary["sets"][name]["groups"]) == {"train", "test"}
        assert not any(line.split()[:2] == [name, "val"] or line.split()[:1] == ["val"]
                       for line in (out / name / "summary.txt").read_text().splitlines())
    assert not any("val chips" in n for n in summary["notes"])


def test_val_split_written_counted_and_tabled(prepared):
    out = prepared["0.1"]
    summary = json.loads((out / "summary.json").read_text())
    text = (out / "summary.txt").read_text().splitlines()
    for name in SETS:
        rows = manifest(out / name)
        info = summary["sets"][name]
        counts = Counter((r["split"], r["class"]) for r in rows)
        assert info["counts"]["val"] == {k: counts[("val", k)] for k in summary["classes"]}
        assert info["groups"]["val"] == len({r["group"] for r in rows if r["split"] == "val"})
        for r in rows:
            if r["split"] == "val":
                assert r["path"].startswith("val/") and (out / name / r["path"]).is_file()
                assert r["mask"] == f"masks/{r['path']}" and (out / name / r["mask"]).is_file()
    splits_in_table = [line.split()[-len(summary["classes"]) - 2] for line in text[2:11]]
    assert splits_in_table == ["train", "val", "test"] * 3


def test_mixed_val_is_the_union_of_the_per_dataset_vals(prepared):
    out = prepared["0.3"]
    rows = {s: manifest(out / s) for s in SETS}
    assert rows["mixed"] == sorted(rows["fusar"] + rows["opensarship"], key=lambda r: r["path"])
    assert tree_bytes(out / "mixed" / "val") == {**tree_bytes(out / "fusar" / "val"),
                                                 **tree_bytes(out / "opensarship" / "val")}
    assert tree_bytes(out / "mixed" / "masks" / "val") == {**tree_bytes(out / "fusar" / "masks" / "val"),
                                                           **tree_bytes(out / "opensarship" / "masks" / "val")}


def test_a_class_too_small_for_val_is_named_in_a_note(tmp_path, capsys):
    # The FUSAR fixture: 5 readable Cargo ships, 2 Fishing, 2 Tanker: one of each goes to test, so Fishing and
    # Tanker keep one training ship each and can give none to val.
    write_fusar(tmp_path / "fusar" / "FUSAR-Ship1.0", "nested")
    args = ["--fusar", tmp_path / "fusar", "--output-dir", tmp_path / "out", "--val-size", "0.1"]
    summary = dataset_prep.main(dataset_prep.get_args_parser().parse_args([str(a) for a in args]))
    note = next(n for n in summary["notes"] if "no val chips" in n)
    assert note.startswith("fusar: no val chips for Fishing, Tanker (")
    assert f"note: {note}" in capsys.readouterr().out
    for f in (tmp_path / "out" / "summary.txt", tmp_path / "out" / "fusar" / "summary.txt"):
        assert f"  {note}" in f.read_text().splitlines()
    assert note in json.loads((tmp_path / "out" / "fusar" / "summary.json").read_text())["notes"]
    counts = summary["sets"]["fusar"]["counts"]
    assert counts["val"] == {"Cargo": 1, "Fishing": 0, "Tanker": 0}
    assert {k: sum(counts[s][k] for s in counts) for k in counts["train"]} == {"Cargo": 5, "Fishing": 2, "Tanker": 2}


def test_rerun_is_skipped_and_another_val_size_rebuilds(raw, tmp_path, capsys):
    out = tmp_path / "out"
    first = prep(raw, out, "--val-size", "0.1")
    before = tree_bytes(out)
    capsys.readouterr()
    prep(raw, out, "--val-size", "0.1")
    assert "up to date" in capsys.readouterr().out and tree_bytes(out) == before
    second = prep(raw, out, "--val-size", "0.2")
    assert "up to date" not in capsys.readouterr().out
    assert second["fingerprint"] != first["fingerprint"] and second["options"]["val_size"] == 0.2
    assert json.loads((out / "summary.json").read_text())["options"]["val_size"] == 0.2
    n_val = [sum(s["sets"]["mixed"]["counts"]["val"].values()) for s in (first, second)]
    assert n_val[1] > n_val[0]


def test_val_size_option_is_checked_and_explained(capsys):
    parser = dataset_prep.get_args_parser()
    assert parser.parse_args([]).val_size == 0.1
    assert parser.parse_args(["--val-size", "0"]).val_size == 0.0
    for bad in ("1", "-0.1", "nan", "x"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(["--val-size", bad])
        assert e.value.code == 2
        assert "--val-size" in capsys.readouterr().err
    text = " ".join(parser.format_help().split())
    assert "--val-size F" in text and "0 = no val split: the study's train and test splits" in text
    assert "--val-size 0" in dataset_prep.__doc__ and "val/" in dataset_prep.__doc__
