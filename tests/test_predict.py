"""predict.py: a trained cell's probabilities for new chips equal the grid's own predictions of them (raw and
harmonised inputs, from a manifest, a folder and a zip), and inputs that do not fit are refused with a message.
CPU only: one tiny grid of two cnn cells (raw, m4-clutter), 32 px, 1 epoch."""

import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from fixtures import set_manifest_values, write_tiny_prepared
from PIL import Image

import predict
import runs
import test_models as tm

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention
CLASSES = ["Cargo", "Fishing", "Tanker"]
PROBS = [f"prob_{c}" for c in CLASSES]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """(prepared sets folder, {inputs: cell folder}): cnn cells trained on fusar, tested on fusar and opensarship."""
    prepared = write_tiny_prepared(tmp_path_factory.mktemp("prepared"), sets=("fusar", "opensarship"))
    out = tmp_path_factory.mktemp("grid")
    tm.main(tm.get_args_parser().parse_args([
        "--data-dir", str(prepared), "--output-dir", str(out), "--datasets", "fusar", "--test-sets",
        "fusar,opensarship", "--models", "cnn", "--inputs", "raw,m4-clutter", "--img-size", "32", "--epochs", "1",
        "--weights", "none", "--device", "cpu", "--num-workers", "0", "--seeds", "42", "--bootstrap", "0",
        "--lr", "1e-5"]))  # a small step: the probabilities still differ from chip to chip
    cells = {inputs: runs.cell_dir(out, runs.Cell("fusar", "cnn", "none", inputs, 1e-5, 42))
             for inputs in ("raw", "m4-clutter")}
    return prepared, cells


def run(*flags):
    return predict.main(predict.get_args_parser().parse_args(["--device", "cpu", *map(str, flags)]))


def refused(capsys, *flags):
    """The message of a refused run (SystemExit with a text, nothing written)."""
    with pytest.raises(SystemExit) as stop:
        run(*flags)
    assert isinstance(stop.value.code, str), stop.value.code
    return stop.value.code


def same_as_grid(written, cell, test_set, prefix=""):
    """The written CSV holds the grid's predictions of those chips (paths with `prefix` put back)."""
    ours = pd.read_csv(written, keep_default_na=False)
    ours["path"] = prefix + ours["path"]
    theirs = pd.read_csv(cell / f"predictions_{test_set}.csv", keep_default_na=False).set_index("path")
    theirs = theirs.loc[ours["path"]].reset_index()
    assert list(ours["path"]) == list(theirs["path"]) and len(ours)
    assert list(ours["pred"]) == list(theirs["pred"])
    if "true" in ours:
        assert list(ours["true"]) == list(theirs["true"])
    np.testing.assert_allclose(ours[PROBS].to_numpy(), theirs[PROBS].to_numpy(), atol=1e-5, rtol=0)
    assert theirs[PROBS].std().min() > 1e-3  # the probabilities differ from chip to chip: the check means something
    return ours


def test_manifest_predictions_equal_the_grids_raw_and_harmonised(grid, tmp_path, capsys):
    prepared, cells = grid
    for inputs, cell in cells.items():
        for test_set in ("fusar", "opensarship"):
            out = tmp_path / f"{inputs}_{test_set}.csv"
            run("--cell", cell, "--input", prepared / test_set / "manifest.csv", "--split", "test", "--output", out,
                "--batch-size", 5)  # batches that do not divide the split
            ours = same_as_grid(out, cell, test_set)
            assert list(ours.columns) == ["path", "true", "pred", *PROBS] and len(ours) == 12
    text = capsys.readouterr().out
    assert "predict.py: 12 chips of " in text and "inputs m4-clutter, 32 px" in text and "wrote " in text
    assert "predicted: Cargo " in text and "(cnn trained on fusar, inputs raw, 32 px)" in text
    assert "the manifest's class column agrees on " in text


def test_manifest_rows_without_spacing_are_left_out_as_the_grid_does(grid, tmp_path, capsys):
    prepared, cells = grid
    set_dir = tmp_path / "opensarship"
    shutil.copytree(prepared / "opensarship", set_dir)
    set_manifest_values(set_dir, {"test/Cargo/opensarship_Cargo_test000.png": {"spacing_row_m": ""}})
    out = tmp_path / "p.csv"
    run("--cell", cells["m4-clutter"], "--input", set_dir / "manifest.csv", "--split", "test", "--output", out)
    ours = same_as_grid(out, cells["m4-clutter"], "opensarship")
    assert len(ours) == 11 and "test/Cargo/opensarship_Cargo_test000.png" not in set(ours["path"])
    assert "left out 1 chip(s) the inputs m4-clutter cannot show (1 no pixel spacing in the manifest): " \
           "test/Cargo/opensarship_Cargo_test000.png" in capsys.readouterr().out
    run("--cell", cells["raw"], "--input", set_dir / "manifest.csv", "--split", "test", "--output", out)
    assert len(pd.read_csv(out)) == 12  # raw inputs need no spacing


def test_folder_and_zip_predictions_equal_the_grids(grid, tmp_path, capsys, monkeypatch):
    prepared, cells = grid
    folder = prepared / "fusar" / "test"
    zipped = tmp_path / "chips.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for path in sorted(folder.rglob("*.png")):
            z.write(path, path.relative_to(folder).as_posix())
    for source in (folder, zipped):
        out = tmp_path / "raw.csv"
        run("--cell", cells["raw"], "--input", source, "--output", out)
        ours = same_as_grid(out, cells["raw"], "fusar", prefix="test/")
        assert list(ours.columns) == ["path", "pred", *PROBS] and len(ours) == 12  # no true column
    # harmonised: the folder's spacing from the flag, the padding's seed from each file's sha1, as in the manifest
    run("--cell", cells["m4-clutter"], "--input", folder, "--spacing", "1.1,1.1", "--product", "uint8",
        "--output", tmp_path / "m4.csv")
    same_as_grid(tmp_path / "m4.csv", cells["m4-clutter"], "fusar", prefix="test/")
    monkeypatch.chdir(tmp_path)  # the default output: predictions_<input name>.csv in the current folder
    run("--cell", cells["raw"], "--input", zipped)
    same_as_grid(tmp_path / "predictions_chips.csv", cells["raw"], "fusar", prefix="test/")
    assert "wrote predictions_chips.csv (12 rows)" in capsys.readouterr().out


def test_chips_that_are_not_single_channel_8_bit_are_refused(grid, tmp_path, capsys):
    _, cells = grid
    rng = np.random.default_rng(0)
    cases = {
        "rgb.png": (lambda p: Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p),
                    "3 channels (RGB), but the cell "),
        "dual.tif": (lambda p: tifffile.imwrite(p, rng.integers(0, 256, (20, 24, 2), dtype=np.uint8),
                                                photometric="minisblack", planarconfig="contig"),
                     "2 channels (a 2-band TIFF), but the cell "),  # Pillow opens this one as single-channel L
        "planar.tif": (lambda p: tifffile.imwrite(p, rng.integers(0, 256, (2, 20, 24), dtype=np.uint8),
                                                  photometric="minisblack", planarconfig="separate"),
                       "2 channels (a 2-band TIFF), but the cell "),  # Pillow cannot open this one
        "deep.png": (lambda p: Image.fromarray(rng.integers(0, 65535, (20, 24), dtype=np.uint16)).save(p),
                     "16-bit pixels, but the cell "),
    }
    for name, (write, expected) in cases.items():
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "a_good.png")
        write(folder / name)
        message = refused(capsys, "--cell", cells["raw"], "--input", folder, "--output", tmp_path / "x.csv")
        assert message.startswith(f"{folder / name}: {expected}{cells['raw']} ") and "single-channel 8-bit" in message
    assert not (tmp_path / "x.csv").exists()


def test_missing_spacing_dataset_or_product_is_refused(grid, tmp_path, capsys):
    prepared, cells = grid
    folder, cell = prepared / "fusar" / "test", cells["m4-clutter"]
    message = refused(capsys, "--cell", cell, "--input", folder, "--product", "uint8")
    assert message.startswith("the cell's inputs m4-clutter resample every chip from its ground pixel spacing to "
                              f"square 4 m pixels, and {folder} says nothing of its chips' spacing: give --spacing "
                              "ROW_M,COL_M")
    assert "--product uint8" in refused(capsys, "--cell", cell, "--input", folder, "--spacing", "1.1,1.1")
    manifest = tmp_path / "manifest.csv"
    frame = pd.read_csv(prepared / "fusar" / "manifest.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["spacing_row_m"]).to_csv(manifest, index=False)
    assert refused(capsys, "--cell", cell, "--input", manifest).startswith(
        f"{manifest} has no spacing_row_m column(s), which the cell's inputs m4-clutter need")
    assert "--spacing is for the chips of a folder or zip; the manifest " in refused(
        capsys, "--cell", cell, "--input", prepared / "fusar" / "manifest.csv", "--spacing", "1,1")
    sentinel1 = tmp_path / "seed42"  # a cell whose record says Sentinel-1 weights: calibrated (cal) chips only
    shutil.copytree(cells["raw"], sentinel1)
    record = runs.read_record(sentinel1)
    runs.write_json_atomic(sentinel1 / runs.RECORD, {**record, "weights": "sentinel1"})
    assert refused(capsys, "--cell", sentinel1, "--input", prepared / "fusar" / "manifest.csv").startswith(
        f"{prepared / 'fusar' / 'manifest.csv'}: 28 chip(s) are not calibrated Patch_Cal chips (product column not "
        "cal, e.g. test/Cargo/fusar_Cargo_test000.png), and the cell's sentinel1 backbone reads every chip as "
        "calibrated dB: prepare them with python dataset_prep.py --product cal")
    assert "give --product cal if the chips of " in refused(capsys, "--cell", sentinel1, "--input", folder)
    assert refused(capsys, "--cell", cell, "--input", prepared / "fusar").startswith(
        f"{prepared / 'fusar'} is a prepared set (it holds manifest.csv): pass --input "
        f"{prepared / 'fusar' / 'manifest.csv'}")


def test_a_folder_that_is_not_a_finished_cell_is_refused(grid, tmp_path, capsys):
    _, cells = grid
    grid_dir = cells["raw"].parents[5]
    message = refused(capsys, "--cell", grid_dir, "--input", tmp_path)
    assert message.startswith(f"--cell {grid_dir} is not a finished cell of test_models.py (no checkpoint.pt or "
                              "record.json in it): name one cell folder, ")
    assert "(2 under it, e.g. " in message
    partial = tmp_path / "seed42"
    shutil.copytree(cells["raw"], partial)
    (partial / "checkpoint.pt").unlink()
    assert "(no checkpoint.pt in it)" in refused(capsys, "--cell", partial, "--input", tmp_path)
    assert "lies in the cell folder" in refused(capsys, "--cell", cells["raw"], "--input", tmp_path,
                                                "--output", cells["raw"] / "predictions_fusar.csv")


def test_unreadable_files_are_skipped_counted_and_named(grid, tmp_path, capsys):
    prepared, cells = grid
    folder = tmp_path / "chips"
    shutil.copytree(prepared / "fusar" / "test", folder)
    (folder / "Cargo" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "p.csv"
    run("--cell", cells["raw"], "--input", folder, "--output", out)
    assert len(pd.read_csv(out)) == 12 and "Cargo/broken.png" not in set(pd.read_csv(out)["path"])
    text = capsys.readouterr().out
    assert "skipped 1 file(s) that cannot be read (not in the CSV): Cargo/broken.png (cannot decode image: " in text
    assert "ignored 1 file(s) that are not images" in text
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    shutil.copy(folder / "Cargo" / "broken.png", only_broken)
    assert refused(capsys, "--cell", cells["raw"], "--input", only_broken, "--output", out).startswith(
        f"none of the 1 chips of {only_broken} could be read: broken.png (cannot decode image: ")


def test_help_states_the_flags(capsys):
    with pytest.raises(SystemExit) as stop:
        predict.get_args_parser().parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--cell", "--input", "--output", "--split", "--spacing", "--dataset", "--product", "--device",
                 "--batch-size"):
        assert flag in text
