"""Baselines that see no ship shape: what the CNNs must beat, and the shortcuts they might take instead.

    import baselines
    results, info = baselines.fit_predict("data/prepared", "fusar", ["fusar", "opensarship"], classes, seed=0)
    paths, true, probs = results["size_only"]["opensarship"]     # manifest paths, class indices, (N, K) floats
    baselines.predictions_frame(paths, true, probs, classes)     # path, true, pred, prob_<Class>: a CNN's form
    info["missing_size"]["opensarship"]                          # test chips without AIS length or width

    python baselines.py --data-dir data/prepared [--datasets fusar] [--test-sets ...] [--seed 0] [--output F]

Each baseline is fitted on the TRAINING split of one prepared set (never val or test) and predicts the TEST split
of every test set, one row per chip in manifest order (so its rows line up with a CNN's predictions_<set>.csv);
the predicted class is the argmax of the probabilities, as for a CNN (ties: the first class in `classes`).
    floor      the training split's majority class for every chip; probabilities: the training class frequencies
    size_only  logistic regression (class_weight balanced, standardised features) on the manifest's AIS
               ship_length_m and ship_width_m. Fitted on the training chips that have both; a chip without one of
               them (empty or non-finite) gets the floor's prediction and is counted (info["missing_size"]).
    shortcut   a random forest (class_weight balanced) on image statistics that carry no ship shape, from each
               8-bit PNG as prepared (native size, before any resizing): chip height and width in pixels (chips
               are cut at a multiple of the ship length, so the size leaks the length), mean, median, std, 99th
               percentile (Patch_Uint8 scales each chip by its brightest pixel) and the median of the border ring
               of width max(1, side // 8) (the sea).
Same data and seed, same predictions. A model that would see fewer than two classes predicts the constant
frequencies of what it saw (the floor's where it saw nothing); info says how many chips each model was fitted on.
"""

import argparse
import os
import time
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import data
import inputs as inputs_module  # `inputs` names the variant in this module's functions
import metrics
import runs
import sets
import stacking
from cli import run_main
from inputs import border_ring  # the sea ring, one owner: the clutter radiometry normalises by it

BASELINES = ("floor", "size_only", "shortcut")
SIZE_FEATURES = ("ship_length_m", "ship_width_m")
SHORTCUT_FEATURES = ("chip_h", "chip_w", "mean", "median", "std", "p99", "border_median")
IMBALANCE = {"floor": "none", "size_only": "weighted", "shortcut": "weighted"}  # scores.csv's imbalance column
N_TREES = 300


def split_frame(set_dir, split):
    """The manifest rows of one split (strings, '' where unknown), in manifest order, index 0..N-1."""
    frame = sets.manifest_frame(set_dir)
    return frame[frame["split"] == split].reset_index(drop=True)


def class_indices(frame, classes):
    """The rows' classes as indices into `classes` (int array); a class not in `classes` is an error."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(frame["class"]) - set(index))
    if unknown:
        raise ValueError(f"classes {unknown} of the manifest are not among {list(classes)}")
    return np.array([index[c] for c in frame["class"]], dtype=np.int64)


def size_features(frame):
    """(N, 2) float: ship_length_m, ship_width_m; NaN where empty, unparseable or non-finite."""
    x = np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in SIZE_FEATURES])
    x[~np.isfinite(x)] = np.nan
    return x.reshape(len(frame), len(SIZE_FEATURES))


def pixel_stats(image):
    """SHORTCUT_FEATURES of one chip (2-D uint8 array), as a tuple of floats."""
    h, w = image.shape
    v = image.astype(np.float64)
    return (float(h), float(w), float(v.mean()), float(np.median(v)), float(v.std()),
            float(np.percentile(v, 99)), float(np.median(v[border_ring(h, w)])))


@lru_cache(maxsize=None)
def _chip_stats(path, mtime_ns, size):
    # keyed by the file's identity too, so a rewritten chip is decoded again
    if Path(path).suffix == stacking.SUFFIX:  # a stacked (co, cross) chip: the statistics of its co channel
        return pixel_stats(stacking.read_tiff(path)[0])
    with Image.open(path) as im:
        if im.mode != "L":
            raise ValueError(f"{path}: expected a single-channel 8-bit PNG (mode L), found mode {im.mode}")
        return pixel_stats(np.asarray(im))


def chip_stats(path):
    """SHORTCUT_FEATURES of the PNG at `path` (of a stacked TIFF: its co channel, the co set's chip), decoded once per
    process (the file's own size is the chip size: dataset_prep writes chips at native size, so it equals the
    manifest's chip_h, chip_w)."""
    st = os.stat(path)
    return _chip_stats(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def image_stats(set_dir, rows):
    """(N, 7) float feature matrix (SHORTCUT_FEATURES) of the chips in `rows` (manifest rows: a DataFrame or
    dicts with a `path` relative to set_dir), in their order."""
    paths = rows["path"] if isinstance(rows, pd.DataFrame) else [r["path"] for r in rows]
    out = np.array([chip_stats(Path(set_dir) / p) for p in paths], dtype=np.float64)
    return out.reshape(len(paths), len(SHORTCUT_FEATURES))


class Views:
    """The manifest rows and shortcut statistics of a split as one input variant sees it: raw, the PNGs as prepared
    (native size); another variant, the chips it keeps, at img_size as the models see them (data.load_split)."""

    def __init__(self, data_dir, inputs=None, img_size=None):
        self.data_dir, self.inputs, self.img_size, self._arrays = Path(data_dir), inputs, img_size, {}

    def _split(self, set_name, split):
        if (set_name, split) not in self._arrays:
            self._arrays[set_name, split] = data.load_split(self.data_dir / set_name, split, self.img_size,
                                                            inputs=self.inputs)
        return self._arrays[set_name, split]

    def rows(self, set_name, split):
        frame = split_frame(self.data_dir / set_name, split)
        if self.inputs is None or not self.inputs.harmonised:
            return frame
        return frame[frame["path"].isin(self._split(set_name, split).paths)].reset_index(drop=True)

    def stats(self, set_name, split, rows):
        if self.inputs is None or not self.inputs.harmonised:
            return image_stats(self.data_dir / set_name, rows)
        arrays = self._split(set_name, split)
        assert list(rows["path"]) == list(arrays.paths)  # rows() kept the same chips in the same order
        out = np.array([pixel_stats(img) for img in arrays.images], dtype=np.float64)
        return out.reshape(len(arrays.paths), len(SHORTCUT_FEATURES))


def _predictor(model, x, y, floor):
    """x -> (N, K) probabilities of `model` fitted on (x, y), classes absent from y at 0. With fewer than two
    classes in y nothing is fitted: the constant frequencies of y (the floor where y is empty)."""
    k = len(floor)
    if len(np.unique(y)) < 2:
        const = np.bincount(y, minlength=k) / len(y) if len(y) else floor
        return lambda z: np.tile(const, (len(z), 1))
    model.fit(x, y)

    def predict(z):
        out = np.zeros((len(z), k))
        if len(z):
            out[:, model.classes_] = model.predict_proba(z)
        return out
    return predict


def _floor(ctx):
    return {t: np.tile(ctx.floor, (len(f), 1)) for t, f in ctx.tests.items()}, {"fitted_on": len(ctx.y)}


def _size_only(ctx):
    x = size_features(ctx.train)
    ok = np.isfinite(x).all(axis=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", random_state=ctx.seed,
                                                               max_iter=1000))
    predict = _predictor(model, x[ok], ctx.y[ok], ctx.floor)
    probs, missing = {}, {}
    for t, frame in ctx.tests.items():
        z = size_features(frame)
        good = np.isfinite(z).all(axis=1)
        p = np.tile(ctx.floor, (len(z), 1))
        p[good] = predict(z[good])
        probs[t], missing[t] = p, int((~good).sum())
    return probs, {"fitted_on": int(ok.sum()), "missing_size": missing}


def _shortcut(ctx):
    # A random forest rather than HistGradientBoosting: training splits hold a few dozen chips of the rare classes
    # (and the tests a handful), where HistGradientBoosting's 20-sample leaves cannot isolate a class; a forest
    # needs no tuning, scaling or early stopping, and with a fixed random_state and n_jobs=1 it is deterministic.
    model = RandomForestClassifier(n_estimators=N_TREES, class_weight="balanced", random_state=ctx.seed, n_jobs=1)
    predict = _predictor(model, ctx.stats(ctx.train_set, "train", ctx.train), ctx.y, ctx.floor)
    probs = {t: predict(ctx.stats(t, "test", f)) for t, f in ctx.tests.items()}
    info = {"fitted_on": len(ctx.y)}
    if hasattr(model, "estimators_"):
        info["importances"] = dict(zip(SHORTCUT_FEATURES, np.round(model.feature_importances_, 4).tolist()))
    return probs, info


_FIT = {"floor": _floor, "size_only": _size_only, "shortcut": _shortcut}


def fit_predict(data_dir, train_set, test_sets, classes, seed=0, baselines=BASELINES, inputs=None, img_size=None):
    """Fit each baseline on the training split of `train_set`, predict the test split of every test set.

    inputs: an input variant other than raw (inputs.Inputs) fits and tests on what a model of that variant sees:
    the chips it keeps, the shortcut's statistics from its img_size x img_size images (data.load_split).

    classes: the grid's sorted class list (sets.set_classes). Returns (results, info): results[baseline][test_set]
    = (paths as in the manifest, true class indices (N,) int, probabilities (N, K) float), rows in manifest order;
    info: majority, train_frequencies, n_train, features {baseline: names}, missing_size {test_set: count} (with
    size_only), and per baseline what it was fitted on (shortcut: the forest's feature importances).
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; valid: {', '.join(BASELINES)}")
    data_dir, classes = Path(data_dir), list(classes)
    views = Views(data_dir, inputs, img_size)
    train = views.rows(train_set, "train")
    if not len(train):
        raise ValueError(f"{data_dir / train_set} has no train chips in its manifest.csv")
    y = class_indices(train, classes)
    floor = np.bincount(y, minlength=len(classes)) / len(y)
    tests = {t: views.rows(t, "test") for t in test_sets}
    truth = {t: (f["path"].tolist(), class_indices(f, classes)) for t, f in tests.items()}
    ctx = SimpleNamespace(data_dir=data_dir, train_set=train_set, train=train, y=y, tests=tests, floor=floor,
                          seed=seed, stats=views.stats)
    info = {"majority": classes[int(floor.argmax())], "n_train": len(y),
            "train_frequencies": dict(zip(classes, floor.tolist())),
            "features": {"floor": [], "size_only": list(SIZE_FEATURES), "shortcut": list(SHORTCUT_FEATURES)}}
    results = {}
    for name in baselines:
        probs, info[name] = _FIT[name](ctx)
        results[name] = {t: (*truth[t], probs[t]) for t in test_sets}
    if "size_only" in info:
        info["missing_size"] = info["size_only"]["missing_size"]
    return results, info


def predictions_frame(paths, true, probs, classes):
    """A CNN's predictions_<set>.csv columns: path, true, pred (argmax), prob_<Class>; true as indices or names."""
    probs = np.asarray(probs, dtype=np.float64)
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame({"path": list(paths), "true": metrics.as_names(true, classes),
                          "pred": names[probs.argmax(axis=1)]})
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, k]
    return table


def score_frame(results, train_set, classes, seed=0):
    """scores.csv-like rows (train_set, test_set, model, imbalance, lr, seed, metrics) of fit_predict's results;
    lr is empty (nothing is trained by gradient)."""
    rows = []
    for name, per_test in results.items():
        for test_set, (_, true, probs) in per_test.items():
            keys = {"train_set": train_set, "test_set": test_set, "model": name, "imbalance": IMBALANCE[name],
                    "lr": np.nan, "seed": seed}
            rows.append({**keys, **metrics.score_row(true, np.asarray(probs).argmax(axis=1), classes)})
    return pd.DataFrame(rows)


BASELINE_DIR = "baselines"  # under the grid folder: baselines/<train_set>/<baseline>/, laid out like a cell
SEED = 0


def grid_cells(output_dir, records, data_dir=None, seed=SEED):
    """The baselines as cells of the grid: for every training set of `records`, each baseline fitted on its
    training split and tested on the test sets the records were tested on, written like a cell
    (<output-dir>/baselines/<train_set>/<baseline>/record.json and predictions_<test_set>.csv, atomically) and
    returned as [(folder, record)]. Kept while the manifests and the seed are the same, refitted otherwise.
    data_dir: where the prepared sets are (default: the --data-dir the records were trained with). An input variant
    other than raw (inputs.py) gets its own baselines, on what its models see: baselines/<train_set>/<inputs>/."""
    out = []
    pairs = dict.fromkeys((r["train_set"], r.get("inputs", runs.RAW)) for _, r in records)
    for train_set, variant in pairs:
        recs = [r for _, r in records if r["train_set"] == train_set and r.get("inputs", runs.RAW) == variant]
        test_sets = list(dict.fromkeys(t for r in recs for t in r["test_sets"]))
        root = Path(data_dir or recs[0]["args"].get("data_dir", ""))
        try:
            manifests = {s: sets.manifest_sha1(root / s) for s in dict.fromkeys([train_set, *test_sets])}
        except FileNotFoundError:
            print(f"no baselines for {train_set}: its prepared sets are not under {root} (name them with --data-dir)")
            continue
        stale = [s for s, sha in manifests.items() if any(r.get("manifests", {}).get(s) not in (None, sha)
                                                           for r in recs)]
        if stale:
            print(f"no baselines for {train_set}: {', '.join(stale)} under {root} was prepared again since the grid "
                  "was trained")
            continue
        folder = Path(output_dir) / BASELINE_DIR / train_set / ("" if variant == runs.RAW else variant)
        view = {"inputs": variant, "img_size": None if variant == runs.RAW else recs[0]["args"].get("img_size")}
        out += _cells(folder, train_set, test_sets, recs[0]["classes"], root, manifests, seed, view)
    return out


def _cells(folder, train_set, test_sets, classes, root, manifests, seed, view):
    """The baselines of one training set and input variant (`view`: {inputs, img_size}): read back where they are
    current, else fitted and written."""
    found = {}
    for name in BASELINES:
        path = folder / name / runs.RECORD
        if path.is_file():
            record = runs.read_record(path.parent)
            if record.get("manifests") == manifests and record.get("seed") == seed and \
                    record.get("img_size") == view["img_size"]:
                found[name] = (path.parent, record)
    missing = [b for b in BASELINES if b not in found]
    if missing:
        spec = inputs_module.Inputs.parse(view["inputs"])
        results, info = fit_predict(root, train_set, test_sets, classes, seed=seed, baselines=missing, inputs=spec,
                                    img_size=view["img_size"])
        for name in missing:
            found[name] = _write_cell(folder / name, name, train_set, classes, root, manifests, seed,
                                      results[name], {**info, **view})
    return [found[b] for b in BASELINES]


def _write_cell(folder, name, train_set, classes, root, manifests, seed, results, info):
    folder.mkdir(parents=True, exist_ok=True)
    for test_set, (paths, true, probs) in results.items():
        frame = predictions_frame(paths, true, probs, classes)
        runs.write_atomic(folder / f"predictions_{test_set}.csv",
                          lambda p, f=frame: f.to_csv(p, index=False, float_format="%.6f", lineterminator="\n"))
    record = {"train_set": train_set, "model": name, "imbalance": IMBALANCE[name], "inputs": info["inputs"],
              "img_size": info["img_size"], "lr": None, "seed": seed,
              "split_seed": sets.split_seed(Path(root) / train_set), "classes": list(classes),
              "args": {"data_dir": str(root)}, "history": [],
              "protocol": {"name": "baseline", "bn_recalibrate": "-", "select": "-", "epoch": None,
                           "val_f1_macro": None, "val": False},
              "features": info["features"][name], "n_train": info["n_train"],
              "missing_size": info.get("missing_size") if name == "size_only" else None,
              "test_sets": {t: {"n": len(r[0])} for t, r in results.items()}, "manifests": manifests}
    runs.write_json_atomic(folder / runs.RECORD, record)
    return folder, record


def main(argv=None):
    p = argparse.ArgumentParser(description="Floor, size-only and shortcut baselines on the prepared sets.")
    p.add_argument("--data-dir", default="data/prepared")
    p.add_argument("--datasets", nargs="+", default=None, help="training sets (default: every prepared one)")
    p.add_argument("--test-sets", nargs="+", default=None, help="test sets (default: every prepared one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="write the score rows to this CSV")
    args = p.parse_args(argv)
    train_sets, test_sets, _ = sets.grid_sets(args.data_dir, args.datasets, args.test_sets)
    classes = sets.set_classes(Path(args.data_dir) / train_sets[0])
    frames = []
    for train_set in train_sets:
        start = time.perf_counter()
        results, info = fit_predict(args.data_dir, train_set, test_sets, classes, seed=args.seed)
        print(f"train {train_set}: {time.perf_counter() - start:.2f} s; majority {info['majority']}; "
              f"test chips without ship size: {info['missing_size']}")
        frames.append(score_frame(results, train_set, classes, args.seed))
    scores = pd.concat(frames, ignore_index=True)
    shown = ["train_set", "test_set", "model", "f1_macro"] + [f"{c}_f1" for c in classes]
    print(scores[shown].to_string(index=False))
    if args.output:
        scores.to_csv(args.output, index=False, float_format="%.2f", lineterminator="\n")
    return scores


if __name__ == "__main__":
    run_main("baselines.py", main)
