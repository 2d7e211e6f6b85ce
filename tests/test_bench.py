"""bench.py --quick on a tiny prepared set: every part runs, the JSON object holds what the report prints, the
speedups are the ratios of the times reported, and cached and uncached training agree."""

import contextlib
import io
import json
import statistics

import pytest
import torch
from fixtures import write_tiny_prepared

import bench
from cli import HelpFormatter
from models import MODEL_NAMES

torch.set_num_threads(1)  # a busy shared CPU: one thread each (bench passes it on to test_models.py)
FROZEN = ("fine_resnet", "fine_vgg")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """(result, printed output, prepared folder, its files before) of one bench.py --quick --json run."""
    root = write_tiny_prepared(tmp_path_factory.mktemp("bench") / "prepared")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = bench.main(bench.get_args_parser().parse_args(["--quick", "--json", "--data-dir", str(root)]))
    return result, out.getvalue(), root, before


def test_json_holds_what_the_report_prints(quick):
    result, out, root, before = quick
    last = json.loads(out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(result))
    assert bench.table(last) in out  # the report rebuilt from the JSON object alone: it has every key printed
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the caller's data untouched
    assert result["data"].endswith("set mixed") and result["weights"] == "none"  # the set with the most chips
    for text in ("(a) input pipeline", "(b) training images/s", "(c) 2-epoch training", "(d) peak memory",
                 "steady-state speedup", "slowest speedup"):
        assert text in out, text


def test_targets_are_the_documented_ones(quick):
    result, out, _, _ = quick
    assert bench.TARGETS == {"input_pipeline_speedup": 10.0, "frozen_training_speedup": 4.0}
    assert "(a) steady-state speedup >= 10x, (c) slowest speedup >= 4x" in " ".join(bench.__doc__.split())
    assert result["targets"] == {k: {"target": t, "met": result[k] >= t} for k, t in bench.TARGETS.items()}
    assert "(target >= 10x)" in out and "(target >= 4x)" in out


def test_input_pipeline_speedups_are_ratios_of_its_times(quick):
    result, _, _, _ = quick
    a = result["input_pipeline"]
    assert (a["chips"], a["img_size"], len(a["plain_epochs_s"])) == (32, 224, 2)  # mixed/train, --quick
    assert a["plain_first_epoch_s"] == a["plain_epochs_s"][0]
    assert a["plain_steady_epoch_s"] == pytest.approx(statistics.median(a["plain_epochs_s"][1:]), rel=1e-3)
    plain, ours = a["plain_steady_epoch_s"], a["ours_steady_epoch_s"]
    assert a["speedup"] == round(plain / ours, 1) == result["input_pipeline_speedup"]
    assert a["speedup_first_epoch_cold"] == round(a["plain_first_epoch_s"] / a["ours_first_epoch_cold_s"], 2)
    assert a["speedup_first_epoch_warm"] == round(a["plain_first_epoch_s"] / a["ours_first_epoch_warm_s"], 2)
    assert a["plain_img_s"] == round(32 / plain, 1) and a["ours_img_s"] == round(32 / ours, 1)
    assert min(plain, ours, a["ours_first_epoch_cold_s"], a["ours_first_epoch_warm_s"]) > 0
    assert a["decoded_cache_mb"] == pytest.approx(32 * 224 * 224 / 1e6, abs=0.05)


def test_training_rows(quick):
    result, _, _, _ = quick
    b = result["training"]
    assert list(b) == list(MODEL_NAMES) and all(row["uncached_img_s"] > 0 for row in b.values())
    for name in MODEL_NAMES:
        keys = {"uncached_img_s", "cached_img_s", "features_img_s", "feature_dtype"} if name in FROZEN \
            else {"uncached_img_s"}  # on the CPU: no float32 comparison row
        assert set(b[name]) == keys, name
    for name in FROZEN:
        assert b[name]["cached_img_s"] > 0 and b[name]["features_img_s"] > 0
        assert b[name]["feature_dtype"] == "float16"
    assert (result["img_size"], result["train_batch"], result["precision"]) == (32, 4, "off (float32)")


def test_frozen_training_cached_agrees_with_uncached(quick):
    result, _, _, _ = quick
    c = result["frozen_training"]
    assert (c["chips"], c["epochs"], c["img_size"]) == (8, 2, 32)
    for name in FROZEN:
        r = c[name]
        assert r["speedup"] == round(r["uncached_s"] / r["cached_s"], 2)  # the records' training times
        fc = r["feature_cache"]
        assert (fc["views"], fc["chips"], fc["dtype"], fc["reused"]) == (2, 8, "float16", False)
        assert 0 < fc["seconds"] <= r["cached_s"]  # the cached run's training time includes the feature pass
        assert 0 <= r["max_test_prob_diff"] <= 1e-3  # the documented tolerance at these settings
    assert result["frozen_training_speedup"] == min(c[m]["speedup"] for m in FROZEN)
    # each test_models.py process: its own peak (a Python with torch loaded holds more than 100 MB)
    assert set(c["process_rss_mb"]) == {"cached", "uncached"} and min(c["process_rss_mb"].values()) > 100


def test_memory_is_a_high_water_mark(quick):
    result, _, _, _ = quick
    memory = result["memory"]
    assert list(memory) == ["start", "input pipeline", "training", "frozen training"]
    rss = [m["rss_mb"] for m in memory.values()]
    assert rss[0] > 0 and rss == sorted(rss)
    assert result["input_pipeline"]["plain_workers_rss_mb"] > 0


def test_every_flag_has_help_and_one_default():
    parser = bench.get_args_parser()
    formatter = HelpFormatter("bench.py")
    for action in parser._actions:
        assert action.help, action.option_strings
        assert formatter._get_help_string(action).count("default") <= 1, action.option_strings
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--models", "cnn,nope"])
    assert exit_info.value.code == 2
