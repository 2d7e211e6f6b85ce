"""bench.py --quick on a tiny prepared set: every part runs and every key is reported, with sane values."""

import json

import pytest
import torch
from tiny_data import write_tiny_prepared

import bench
from models import MODEL_NAMES

torch.set_num_threads(1)  # a busy shared CPU: one thread each avoids OpenMP spin contention


def test_quick_bench_reports_every_key(tmp_path, capsys):
    root = write_tiny_prepared(tmp_path / "prepared")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = bench.main(bench.get_args_parser().parse_args(["--quick", "--json", "--data-dir", str(root)]))
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the caller's data untouched

    assert result["input_pipeline_speedup"] > 0 and result["frozen_training_speedup"] > 0
    assert set(result["targets"]) == {"input_pipeline_speedup", "frozen_training_speedup"}
    assert result["data"].endswith("set mixed") and result["weights"] == "none"

    a = result["input_pipeline"]
    assert a["chips"] == 32 and a["img_size"] == 224 and len(a["plain_epochs_s"]) == 2
    assert a["speedup"] == result["input_pipeline_speedup"]
    for key in ("plain_img_s", "ours_img_s", "ours_first_epoch_cold_s", "ours_first_epoch_warm_s",
                "plain_first_epoch_s", "speedup_first_epoch_cold", "speedup_first_epoch_warm"):
        assert a[key] > 0, key
    assert a["decoded_cache_mb"] == pytest.approx(32 * 224 * 224 / 1e6, abs=0.05)

    b = result["training"]
    assert list(b) == list(MODEL_NAMES) and all(row["uncached_img_s"] > 0 for row in b.values())
    for name in ("fine_vgg", "fine_resnet"):
        assert b[name]["cached_img_s"] > 0 and b[name]["features_img_s"] > 0
        assert b[name]["feature_dtype"] == "float16"
    assert "cached_img_s" not in b["cnn"] and "cached_img_s" not in b["resnet"]

    c = result["frozen_training"]
    assert (c["chips"], c["epochs"], c["img_size"]) == (8, 2, 32)
    for name in ("fine_vgg", "fine_resnet"):
        r = c[name]
        assert r["cached_s"] > 0 and r["uncached_s"] > 0
        assert r["speedup"] == pytest.approx(r["uncached_s"] / r["cached_s"], rel=0.01)
        assert r["feature_cache"]["views"] == 2 and r["feature_cache"]["chips"] == 8
        assert r["max_test_prob_diff"] <= 1e-3  # cached and uncached training agree
    assert result["frozen_training_speedup"] == min(c[m]["speedup"] for m in ("fine_vgg", "fine_resnet"))

    assert list(result["memory"]) == ["start", "input pipeline", "training", "frozen training"]
    assert all(m["rss_mb"] > 0 for m in result["memory"].values())
    for text in ("(a) input pipeline", "(b) training images/s", "(c) 2-epoch training", "(d) peak memory",
                 "steady-state speedup", "slowest speedup"):
        assert text in out, text
