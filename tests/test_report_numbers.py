"""Every number of report.md's main table, its intervals, its paired differences, its box and its baseline rows,
recomputed here independently from predictions.csv and the manifests, and compared at the printed precision.

    python -m pytest tests/test_report_numbers.py -q

One tiny grid for the module: tests/fixtures.py sets fusar and opensarship with a validation split, cnn at 32 px,
1 epoch, imbalance none and weighted, seeds 0 and 1, trained on both sets and tested on both, ship bootstrap of 200
resamples (test_models.py and report.py --bootstrap 200). Scores come from scikit-learn on predictions.csv; the
ship-bootstrap intervals from a resampler written here at the chip level (the ships drawn as
numpy.random.default_rng(0).integers(0, ships, (n, ships)), each drawn ship's chips put in); paired differences
of macro-F1, recall and F1 from bootstrap.paired_difference on the pairs built here, of precision from the chip
resampler. "Equal at the printed precision": within half a unit of the last printed digit, plus the records' two
decimal rounding where the report starts from them.
"""
import json
import warnings
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score
from fixtures import CLASSES, md_row, write_tiny_prepared

import bootstrap
import effects_section
import main_section
import metrics
import published
import report
import sets
import ship_stats
import test_models

N_BOOT, SEED = 200, 0
COUNTS = {"train": {"Cargo": 10, "Fishing": 6, "Tanker": 5}, "val": {"Cargo": 2, "Fishing": 2, "Tanker": 2},
          "test": {"Cargo": 6, "Fishing": 3, "Tanker": 3}}
RARE = "Tanker"  # the rarest training class of both sets
CELL = ["train_set", "test_set", "model", "imbalance"]
BASELINES = ("floor", "size_only", "shortcut")
HALF = 0.05  # half a unit of one printed decimal


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("numbers_grid")
    data = write_tiny_prepared(root / "prepared", sets=("fusar", "opensarship"), counts=COUNTS)
    out = root / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        test_models.main(test_models.get_args_parser().parse_args(
            ["--data-dir", str(data), "--output-dir", str(out), "--models", "cnn", "--imbalance", "none,weighted",
             "--seeds", "0,1", "--epochs", "1", "--img-size", "32", "--batch-size", "8", "--weights", "none",
             "--device", "cpu", "--num-workers", "0", "--bootstrap", str(N_BOOT)]))
    finally:
        torch.set_num_threads(threads)
    text = _report(out, data).read_text()
    predictions = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    scores = pd.read_csv(out / "scores.csv")
    # the report's main sections hold the study's inputs without adaptation (the cross-sensor section the rest)
    return {"data": data, "out": out, "text": text, "pred": predictions[predictions.adaptation == "none"],
            "scores": scores[scores.adaptation == "none"]}


def _report(out, data):
    return report.main(report.get_args_parser().parse_args(
        ["--output-dir", str(out), "--data-dir", str(data), "--bootstrap", str(N_BOOT)]))


# ------------------------------------------------------------------------------------------------------------
# the independent computation

def chip_metric(t, p, name):
    """Percent, from the chips' true and predicted classes (arrays of names): f1_macro and balanced_accuracy over
    the classes present in t; <Class>_f1, _recall, _precision, NaN where the class has no chip in t."""
    tp = {c: np.sum((t == c) & (p == c)) for c in CLASSES}
    support, predicted = {c: np.sum(t == c) for c in CLASSES}, {c: np.sum(p == c) for c in CLASSES}
    present = [c for c in CLASSES if support[c]]
    f1 = {c: 2 * tp[c] / (support[c] + predicted[c]) for c in present}
    if name == "f1_macro":
        return 100 * np.mean([f1[c] for c in present])
    if name == "balanced_accuracy":
        return 100 * np.mean([tp[c] / support[c] for c in present])
    cls, kind = name.rsplit("_", 1)
    if not support[cls]:
        return np.nan
    return 100 * {"f1": f1[cls], "recall": tp[cls] / support[cls],
                  "precision": tp[cls] / predicted[cls] if predicted[cls] else 0.0}[kind]


def resamples(groups):
    """The chip indices of each of N_BOOT resamples of the ships (all chips of a drawn ship, once per draw)."""
    ships, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    draws = np.random.default_rng(SEED).integers(0, len(ships), size=(N_BOOT, len(ships)))
    members = [np.flatnonzero(inverse == k) for k in range(len(ships))]
    return [np.concatenate([members[k] for k in row]) for row in draws]


def interval(values):
    values = np.asarray(values, dtype=float)
    return tuple(np.percentile(values[np.isfinite(values)], [2.5, 97.5]))


def runs_of(pred, **keys):
    """{seed: (true, pred, groups)} of the rows of predictions.csv matching keys."""
    part = pred[(pred[list(keys)] == pd.Series(keys)).all(axis=1)]
    return {int(s): (g["true"].to_numpy(), g["pred"].to_numpy(), g["group"].to_numpy())
            for s, g in part.groupby("seed")}


def pooled(arms, name):
    """(mean over the arms, its interval): every arm scored on the same resampled ships, then averaged."""
    idx = resamples(arms[0][2])
    boot = np.mean([[chip_metric(t[i], p[i], name) for i in idx] for t, p, _ in arms], axis=0)
    return np.mean([chip_metric(t, p, name) for t, p, _ in arms]), interval(boot)


def sklearn_scores(t, p):
    present = [c for c in CLASSES if (t == c).any()]
    out = {"f1_macro": 100 * f1_score(t, p, labels=present, average="macro", zero_division=0),
           "balanced_accuracy": 100 * balanced_accuracy_score(t, p),
           "f1_weighted": 100 * f1_score(t, p, labels=list(CLASSES), average="weighted", zero_division=0)}
    for c, f, pr in zip(CLASSES, f1_score(t, p, labels=list(CLASSES), average=None, zero_division=0),
                        precision_score(t, p, labels=list(CLASSES), average=None, zero_division=0)):
        out[f"{c}_f1"], out[f"{c}_precision"] = 100 * f, 100 * pr
    return out


# ------------------------------------------------------------------------------------------------------------
# reading report.md

def main_part(text):
    return text.split("## 1.")[1].split("## The published")[0]


def transfer_part(text):
    return text.split("## 3.")[1].split("## Where")[0]


def close(printed, value, slack=1e-6):
    """The printed number is `value` at its printed precision (one decimal)."""
    assert abs(float(printed) - value) <= HALF + slack, (printed, value)


def check_mean_std(cell, values, slack=0.008):
    mean, std = cell.split(" ± ")
    close(mean, np.mean(values), slack)
    close(std, np.std(values, ddof=1), slack)


def check_interval(cell, low_high, slack=0.006):
    low, high = re.fullmatch(r"\[(-?[\d.]+), (-?[\d.]+)\]", cell).groups()
    close(low, low_high[0], slack)
    close(high, low_high[1], slack)


def diff_cell(cell):
    """(diff, low, high, k, n, no_evidence) of a paired-difference cell."""
    m = re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]; sign in (\d+) of (\d+) seeds?"
                     r"(; no evidence of a difference)?", cell)
    assert m, cell
    return (*map(float, m.groups()[:3]), int(m.group(4)), int(m.group(5)), m.group(6) is not None)


def check_diff(cell, per_seed, boot_or_result):
    """A paired-difference cell against the per-seed differences here and bootstrap.paired_difference's dict
    (or (low, high) from the chip resampler); returns whether its interval covers 0."""
    diff, low, high, k, n, no_evidence = diff_cell(cell)
    mean = np.mean(per_seed)
    if isinstance(boot_or_result, dict):
        assert boot_or_result["diff"] == pytest.approx(mean, abs=0.006)
        lo, hi = boot_or_result["ci_low"], boot_or_result["ci_high"]
    else:
        lo, hi = round(boot_or_result[0], 2), round(boot_or_result[1], 2)
    close(diff, mean, 0.006)
    close(low, lo, 0.006)
    close(high, hi, 0.006)
    assert n == len(per_seed) and k == sum(np.sign(d) == np.sign(mean) for d in per_seed if mean != 0)
    covers = lo <= 0 <= hi
    assert no_evidence == covers, cell
    return covers


# ------------------------------------------------------------------------------------------------------------
# the main table

def model_keys(pred):
    models = pred[pred["protocol"] != "baseline"]
    return sorted(set(map(tuple, models[CELL].to_numpy())))


def test_main_table_numbers_and_intervals(grid):
    pred, scores, text = grid["pred"], grid["scores"], grid["text"]
    header = next(line for line in text.splitlines() if line.startswith("| Train | Test | Model |"))
    assert "| Macro-F1 | Macro-F1 95 % CI | Bal. acc. | Bal. acc. 95 % CI |" in header
    keys = model_keys(pred)
    assert len(keys) == 8  # {fusar, opensarship}^2 x {none, weighted}
    for key in keys:
        arms = runs_of(pred, **dict(zip(CELL, key)))
        assert sorted(arms) == [0, 1]
        per_seed = [sklearn_scores(t, p) for t, p, _ in arms.values()]
        cells = md_row(main_part(text), list(key))
        assert cells[4:7] == ["bn on, best", "0.001 (only rate)", "n = 2 †"]
        val = scores[(scores[CELL] == list(key)).all(axis=1)]["val_f1_macro"]
        check_mean_std(cells[7], val)
        for cell, v in zip([cells[8], cells[10], *cells[12:-1]],
                           ["f1_macro", "balanced_accuracy", "f1_weighted", *[f"{c}_f1" for c in CLASSES]]):
            check_mean_std(cell, [s[v] for s in per_seed])
        for cell, v in ((cells[9], "f1_macro"), (cells[11], "balanced_accuracy")):
            point, low_high = pooled(list(arms.values()), v)
            assert point == pytest.approx(np.mean([s[v] for s in per_seed]))
            check_interval(cell, low_high)
        flags = [pd.Series(p).value_counts(normalize=True).max() > 0.95 for _, p, _ in arms.values()]
        assert cells[-1] == ("no" if not any(flags) else f"**{sum(flags)} of 2 seeds**")
    assert "† Preliminary: fewer than 3 seeds" in text


def test_chip_metric_is_scikit_learn(grid):
    for t, p, _ in runs_of(grid["pred"], train_set="fusar", test_set="opensarship", model="cnn",
                           imbalance="weighted").values():
        expected = sklearn_scores(t, p)
        for name in ("f1_macro", "balanced_accuracy", f"{RARE}_f1", f"{RARE}_precision"):
            assert chip_metric(t, p, name) == pytest.approx(expected[name])


def test_baseline_rows_beside_the_models(grid):
    pred, text = grid["pred"], grid["text"]
    for train_set in ("fusar", "opensarship"):
        for test_set in ("fusar", "opensarship"):
            for name in BASELINES:
                (t, p, g), = runs_of(pred, train_set=train_set, test_set=test_set, model=name).values()
                s = sklearn_scores(t, p)
                cells = md_row(main_part(text), [train_set, test_set, name])
                assert cells[4:8] == ["baseline", "–", "fitted once", "–"]
                for cell, v in zip([cells[8], cells[10], *cells[12:-1]],
                                   ["f1_macro", "balanced_accuracy", "f1_weighted", *[f"{c}_f1" for c in CLASSES]]):
                    close(cell, s[v], 0.006)
                for cell, v in ((cells[9], "f1_macro"), (cells[11], "balanced_accuracy")):
                    check_interval(cell, pooled([(t, p, g)], v)[1])
    # the baselines follow the models of their training and test set
    rows = [line.split("|")[1:4] for line in text.splitlines() if line.startswith("| fusar | fusar |")]
    assert [r[2].strip() for r in rows] == ["cnn", "cnn", *BASELINES]


# ------------------------------------------------------------------------------------------------------------
# paired differences

def _imbalance_checks(pred, text, train_set, test_set):
    base = dict(train_set=train_set, test_set=test_set, model="cnn")
    none, weighted = runs_of(pred, imbalance="none", **base), runs_of(pred, imbalance="weighted", **base)
    pairs = [(none[s], weighted[s]) for s in (0, 1)]
    # the table of the training set: the row under its heading
    section = text.split(f"### Trained on {train_set}")[1].split("###")[0]
    cells = md_row(section, [test_set, "cnn", "weighted"])
    assert cells[3:6] == ["bn on, best", "0.001 (only rate) / 0.001", "n = 2"]
    covers = 0
    for cell, name in zip(cells[6:], ("f1_macro", f"{RARE}_recall", f"{RARE}_precision", f"{RARE}_f1")):
        per_seed = [chip_metric(b[0], b[1], name) - chip_metric(a[0], a[1], name) for a, b in pairs]
        if name.endswith("precision"):  # not a metric of bootstrap.py: the chip resampler, one draw for both arms
            idx = resamples(pairs[0][0][2])
            boot = np.mean([[chip_metric(b[0][i], b[1][i], name) - chip_metric(a[0][i], a[1][i], name)
                             for i in idx] for a, b in pairs], axis=0)
            covers += check_diff(cell, per_seed, interval(boot))
        else:
            result = bootstrap.paired_difference(pairs, CLASSES, name, n=N_BOOT, seed=SEED)
            covers += check_diff(cell, per_seed, result)
    return covers


def _transfer_checks(pred, text, train_set, test_set, model, imbalance):
    protocol = "baseline" if model in BASELINES else "bn on, best"
    own = runs_of(pred, train_set=test_set, test_set=test_set, model=model, imbalance=imbalance, protocol=protocol)
    other = runs_of(pred, train_set=train_set, test_set=test_set, model=model, imbalance=imbalance,
                    protocol=protocol)
    pairs = [(own[s], other[s]) for s in sorted(own)]
    per_seed = [chip_metric(b[0], b[1], "f1_macro") - chip_metric(a[0], a[1], "f1_macro") for a, b in pairs]
    cells = md_row(transfer_part(text), [train_set, test_set, model, imbalance, protocol])
    assert cells[6] == ("fitted once" if model in BASELINES else "n = 2")
    result = bootstrap.paired_difference(pairs, CLASSES, "f1_macro", n=N_BOOT, seed=SEED)
    return check_diff(cells[7], per_seed, result)


def test_paired_differences_and_no_evidence_wording(grid):
    pred, text = grid["pred"], grid["text"]
    covers = sum(_imbalance_checks(pred, text, tr, te) for tr in ("fusar", "opensarship")
                 for te in ("fusar", "opensarship"))
    imbalance_part = text.split("## 2.")[1].split("## 3.")[0]
    assert imbalance_part.count("no evidence of a difference") == covers + 1  # + the sentence that explains it
    transfers = [(tr, te, "cnn", s) for tr, te in (("fusar", "opensarship"), ("opensarship", "fusar"))
                 for s in ("none", "weighted")]
    transfers += [(tr, te, b, "none" if b == "floor" else "weighted") for tr, te in
                  (("fusar", "opensarship"), ("opensarship", "fusar")) for b in BASELINES]
    covers = sum(_transfer_checks(pred, text, *t) for t in transfers)
    transfer = transfer_part(text)
    assert transfer.count("no evidence of a difference") == covers + 1
    assert text.count("no evidence of a difference") == imbalance_part.count("no evidence of a difference") \
        + transfer.count("no evidence of a difference")


def test_paired_helper_follows_bootstrap_and_pools_like_ship_intervals(grid):
    arms = runs_of(grid["pred"], train_set="fusar", test_set="fusar", model="cnn", imbalance="none")
    other = runs_of(grid["pred"], train_set="fusar", test_set="fusar", model="cnn", imbalance="weighted")
    pairs = [(arms[s], other[s]) for s in (0, 1)]
    for name in ("f1_macro", f"{RARE}_recall", f"{RARE}_precision"):
        got = ship_stats.paired(pairs, CLASSES, name, N_BOOT, SEED)
        assert got == bootstrap.paired_difference(pairs, CLASSES, name, n=N_BOOT, seed=SEED)
        with warnings.catch_warnings():  # a class absent from a tiny test split: said by score_row, not needed here
            warnings.simplefilter("ignore")
            rows = [(metrics.score_row(a[0], a[1], CLASSES), metrics.score_row(b[0], b[1], CLASSES)) for a, b in pairs]
        assert got["diff"] == pytest.approx(np.mean([rb[name] - ra[name] for ra, rb in rows]), abs=0.01)
    one = ship_stats.pooled_interval([arms[0]], CLASSES, "f1_macro", N_BOOT, SEED)[1]
    ci = bootstrap.ship_intervals(*arms[0], CLASSES, n=N_BOOT, seed=SEED)
    assert one == (ci["f1_macro_ci_low"], ci["f1_macro_ci_high"])


# ------------------------------------------------------------------------------------------------------------
# the box, the shortcut sentence, stale tables

def _box(text):
    lines = text.splitlines()
    start = lines.index("> **What these numbers can and cannot say**")
    assert start < next(i for i, line in enumerate(lines) if line.startswith("Generated by"))
    assert all(not line.startswith("## ") for line in lines[:start])  # the box opens the report
    box = []
    for line in lines[start:]:
        if not line.startswith(">"):
            break
        box.append(line)
    return "\n".join(box)


def test_box(grid):
    pred, text, data = grid["pred"], grid["text"], grid["data"]
    box = _box(text)
    assert "2 training seeds (0, 1)" in box and "One split of the data" in box
    for test_set in ("fusar", "opensarship"):
        manifest = sets.manifest_frame(data / test_set)
        test = manifest[manifest["split"] == "test"]
        from_predictions = pred.loc[pred["test_set"] == test_set, "group"].nunique()
        assert test["group"].nunique() == from_predictions
        assert f"{test_set} {from_predictions} ships ({len(test)} chips)" in box
    widths = {}
    for key in model_keys(pred):
        low, high = pooled(list(runs_of(pred, **dict(zip(CELL, key))).values()), "f1_macro")[1]
        widths[key] = (round(low, 2), round(high, 2))
    m = re.search(r"Widest 95 % interval of macro-F1 among the main table's models: \[([\d.]+), ([\d.]+)\], "
                  r"([\d.]+) points wide \(cnn \((\w+), lr 0.001, bn on, best\), trained on (\w+), tested on (\w+)\)",
                  box)
    assert m, box
    widest = max(high - low for low, high in widths.values())
    close(m.group(3), widest, 0.011)
    check_interval(f"[{m.group(1)}, {m.group(2)}]", widths[(m.group(5), m.group(6), "cnn", m.group(4))])
    scores = grid["scores"]
    for train_set in ("fusar", "opensarship"):
        own = scores[(scores["train_set"] == train_set) & (scores["test_set"] == train_set)]
        val = own[own["protocol"] != "baseline"].groupby("imbalance")["val_f1_macro"].mean()
        best = val.sort_index(key=lambda s: s.map({"none": 0, "weighted": 1})).idxmax()
        arms = list(runs_of(pred, train_set=train_set, test_set=train_set, model="cnn", imbalance=best).values())
        point, low_high = pooled(arms, "f1_macro")
        m = re.search(rf"  - {train_set}: best on validation cnn \({best}, lr 0.001, bn on, best\) ([\d.]+) "
                      r"(\[[\d.]+, [\d.]+\]) \(mean of 2 seeds\); floor ([\d.]+), size_only ([\d.]+), shortcut "
                      r"([\d.]+)", box)
        assert m, box
        close(m.group(1), point, 0.006)
        check_interval(m.group(2), low_high)
        for value, name in zip(m.groups()[2:], BASELINES):
            (t, p, _), = runs_of(pred, train_set=train_set, test_set=train_set, model=name).values()
            close(value, chip_metric(t, p, "f1_macro"), 0.006)
    models = scores[scores["protocol"] != "baseline"]
    n = int(models.groupby(["train_set", "model", "imbalance", "seed"])["degenerate"].max().sum())
    assert (f"**{n} of 8 trained models**" if n else "none of the 8 trained models") in box


def test_shortcut_sentence(grid):
    pred, text, scores = grid["pred"], grid["text"], grid["scores"]
    for train_set in ("fusar", "opensarship"):
        own = scores[(scores["train_set"] == train_set) & (scores["test_set"] == train_set)]
        val = own[own["protocol"] != "baseline"].groupby("imbalance")["val_f1_macro"].mean()
        best = val.sort_index(key=lambda s: s.map({"none": 0, "weighted": 1})).idxmax()
        for test_set in ("fusar", "opensarship"):
            arms = runs_of(pred, train_set=train_set, test_set=test_set, model="cnn", imbalance=best).values()
            b = np.mean([chip_metric(t, p, "f1_macro") for t, p, _ in arms])
            (t, p, _), = runs_of(pred, train_set=train_set, test_set=test_set, model="shortcut").values()
            s = chip_metric(t, p, "f1_macro")
            line = next(x for x in text.splitlines()
                        if x.startswith(f"- Trained on {train_set}, tested on {test_set}: `shortcut`"))
            assert ("may be learning the same shortcuts (chip size, brightness)" in line) == (s >= b - 5)
            m = re.search(r"F1 of the rarest class \(Tanker\): size_only ([\d.]+), shortcut ([\d.]+)", line)
            for value, name in zip(m.groups(), ("size_only", "shortcut")):
                (t, p, _), = runs_of(pred, train_set=train_set, test_set=test_set, model=name).values()
                close(value, chip_metric(t, p, f"{RARE}_f1"), 0.006)


def test_shortcut_below_the_margin_is_said_in_numbers():
    main = pd.DataFrame([{"train_set": "fusar", "test_set": "fusar", "model": "cnn", "imbalance": "none",
                          "protocol": "bn on, best", "lr": 0.001, "val_f1_macro_mean": 70.0, "f1_macro_mean": 80.0,
                          "Tanker_f1_mean": 60.0}])
    base = pd.DataFrame([{"train_set": "fusar", "test_set": "fusar", "model": m, "f1_macro_mean": v,
                          "Tanker_f1_mean": f} for m, v, f in (("size_only", 40.0, 10.0), ("shortcut", 74.9, 20.0))])
    line = main_section.shortcut_lines(main, base, {"fusar": "Tanker"})[2]
    assert "`shortcut` macro-F1 74.9 against 80.0" in line and "5.1 points below it" in line
    assert "shortcuts (chip" not in line and "size_only 10.0, shortcut 20.0, the best model 60.0" in line
    line = main_section.shortcut_lines(main, base.assign(f1_macro_mean=[40.0, 75.1]), {"fusar": "Tanker"})[2]
    assert "within 4.9 points of it, so the models may be learning the same shortcuts" in line


def test_stale_tables_give_no_interval(grid, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(grid["out"], out)
    record = out / "runs/fusar/cnn/none/lr0.001/seed1/record.json"
    rec = json.loads(record.read_text())
    rec["test_sets"]["fusar"]["metrics"]["f1_macro"] += 1.0  # the record changed since the tables were built
    record.write_text(json.dumps(rec))
    text = _report(out, grid["data"]).read_text()
    cells = md_row(main_part(text), ["fusar", "fusar", "cnn", "none"])
    assert cells[9] == "–" and cells[11] == "–"
    assert md_row(main_part(text), ["fusar", "opensarship", "cnn", "none"])[9] != "–"
    assert "1 row(s) have no interval" in text
    section = text.split("### Trained on fusar")[1].split("###")[0]
    assert "(no interval)" in md_row(section, ["fusar", "cnn", "weighted"])[6]


# ------------------------------------------------------------------------------------------------------------
# hand-made inputs: the published table's intervals, the "more predictions, not better ones" sentence

def test_published_rows_get_their_pooled_interval():
    rng = np.random.default_rng(3)
    true = np.array(["Cargo"] * 10 + ["Fishing"] * 5 + ["Tanker"] * 5, dtype=object)
    groups = np.array([f"ship{i // 2}" for i in range(20)], dtype=object)  # two chips per ship
    preds = {s: np.where(rng.random(20) < 0.7, true, rng.choice(list(CLASSES), 20)) for s in (0, 1)}
    keys = {"train_set": "fusar", "test_set": "fusar", "model": "fine_vgg", "imbalance": "none",
            "protocol": "bn on, best", "lr": "0.001"}
    frame = pd.concat([pd.DataFrame({**keys, "seed": str(s), "group": groups, "path": [f"c{i:02d}" for i in range(20)],
                                     "true": true, "pred": p}) for s, p in preds.items()])
    chips = ship_stats.Chips(frame)
    per_run = pd.DataFrame([{**keys, "lr": 0.001, "lr_status": "only rate", "seed": s,
                             "accuracy": 100 * np.mean(preds[s] == true),
                             **{f"{c}_recall": 100 * np.mean(preds[s][true == c] == c) for c in CLASSES},
                             "f1_weighted": sklearn_scores(true, preds[s])["f1_weighted"]} for s in (0, 1)])
    lines = published.section_published(per_run, pd.DataFrame(), chips, list(CLASSES), N_BOOT, SEED)
    cells = md_row("\n".join(lines), ["fusar", "ours, `fine_vgg`, bn on, best, lr 0.001 (only rate)"])
    arms = [(true, preds[s], groups) for s in (0, 1)]
    for cell, name in zip(cells[3:], ("accuracy", "f1_weighted", *[f"{c}_recall" for c in CLASSES])):
        mean, ci = cell.split(" [")
        check_mean_std(mean, per_run[name])
        if name == "f1_weighted":  # not a chip_metric: the pooled helper, against the resampler with scikit-learn
            idx = resamples(groups)
            boot = np.mean([[100 * f1_score(t[i], p[i], labels=list(CLASSES), average="weighted", zero_division=0)
                             for i in idx] for t, p, _ in arms], axis=0)
            check_interval("[" + ci, interval(boot))
        elif name == "accuracy":
            idx = resamples(groups)
            check_interval("[" + ci, interval(np.mean([[100 * np.mean(t[i] == p[i]) for i in idx]
                                                        for t, p, _ in arms], axis=0)))
        else:
            check_interval("[" + ci, pooled(arms, name)[1])


def test_more_predictions_not_better_ones_is_named():
    row = {"train_set": "fusar", "test_set": "fusar", "model": "cnn", "imbalance": "weighted",
           "rare_recall_ci_low": 5.0, "rare_recall_diff": 20.0, "rare_precision_ci_high": -2.0,
           "rare_precision_diff": -15.0, "rare_f1_diff": 1.0}
    lines = effects_section._reading(pd.DataFrame([row, {**row, "model": "vgg", "rare_precision_ci_high": 3.0}]),
                                     {"fusar": "Tanker"})
    assert lines == ["- cnn with `weighted` on fusar: recall of Tanker +20.0, precision -15.0: it predicts Tanker "
                     "more often, not better (F1 +1.0)."]
