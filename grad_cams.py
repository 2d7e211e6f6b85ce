"""Stage 3: Grad-CAM heat maps of the models of a finished grid, and how much of each map falls on the ship.

Commands (after dataset_prep.py and test_models.py):

    python grad_cams.py                                     # grid in ., sets under data/prepared
    python grad_cams.py --output-dir demo --data-dir data/prepared --per-class 15   # writes demo/Exp_images
    python grad_cams.py --output-dir demo --exp-dir cams    # Grad-CAM output elsewhere than demo/Exp_images
    python grad_cams.py --datasets fusar --models vgg,resnet --method gradcam++ --device cuda
    python grad_cams.py --imbalance weighted --lr 0.0003 --train-seed 1  # explain another cell of the grid
    python grad_cams.py --road-chips 0                      # skip ROAD (7-17 s per map at 224 px on a CPU)

For every prepared set (`<data-dir>/<set>/manifest.csv`) and every model trained on that same set (the
grid cell `<output-dir>/runs/<set>/<model>/<imbalance>/lr<lr>/seed<k>/` with record.json and checkpoint.pt; by
default imbalance `none`, the learning rate chosen on validation, and the smallest seed there: cam_cells.py,
which also says what happens with several rates and no validation, and with cells of the earlier layout), it
explains `--per-class` test chips per class. Each cell explained is printed with how its rate was chosen.
By default the sets and models are those the grid holds (a grid of one model: that model), said in a line; a
set or model named with --datasets / --models that the grid lacks is a problem. A model whose record.json names
another manifest sha1 for its training set than the set now under --data-dir (prepared again since: other
classes or another split, so its "test" chips could be training chips) stops the run before anything is
written, with both hashes, the cell and the fix (retrain it, or point --data-dir at the set it was trained on).
The chips are drawn from the manifest (seeded, one chip per ship group first, the same for every model
and every rerun), decoded with data.load_split at the checkpoint's img_size (exactly the training
preprocessing) and explained for the class the model predicts, at the target layer the model declares
(models.py `cam_target_layer`; for ResNet the last bottleneck block, never the final pooling, whose 1x1
map gives uniform heat maps: defect 11 of docs/reference-study.md).

Outputs under --exp-dir (default <output-dir>/Exp_images), written into a hidden staging folder there and moved
in only once every model is explained; they replace the previous run's: its files of these names that this run
does not write again (other models, sets, chip indices) are removed, nothing else (cam_outputs.py). A run that
fails, is interrupted or explains nothing leaves the previous run's outputs as they were. The outputs:
  <set>/<model>/<Class>_o<i>.png   the chip as the model saw it (i = 0, 1, ... within the class)
  <set>/<model>/<Class>_hm<i>.png  the heat map over the chip (pytorch-grad-cam show_cam_on_image)
  cam_scores.csv                   one row per chip and model: set, model, path, true, pred,
                                   on_ship_energy, peak_on_ship, ship_area_fraction, region_source, then
                                   the file index i, the grid cell, whether pred agrees with the cell's own
                                   predictions_<set>.csv (it does when preprocessing matches), cell_choice:
                                   how the cell's learning rate was chosen, then (cam_scores.CHIP_COLUMNS)
                                   correct, zero_map, prior_energy, prior_peak_on_ship, lift_uniform,
                                   lift_prior, conf_change, conf_change_prior, region_exact, region_to_hull,
                                   prior_sigma
  cam_summary.csv                  per set, model and outcome (all, correct, wrong): n, n_scored, n_zero,
                                   on-ship energy against the uniform map (lift) and the centre prior
                                   (lift_prior), peaks, confidence changes, `approximate` regions, region /
                                   hull area, seconds per chip (cam_scores.summarise)
  road_scores.csv                  ROAD (MoRF, LeRF, combined) of --road-chips chips per set and model, for
                                   the map and the centre prior, with the seconds each took
  figures/cam_grid_<set>.png       chips in rows (--figure-per-class per class), a column per model, each
                                   cell titled with the true and predicted class; ship region outlined
  figures/cam_on_ship.png          mean on-ship energy per model and set against the centre prior and the
                                   uniform map
Exit status 1 when nothing could be explained (every problem is printed), or when a model was trained on an
earlier preparation of its set.

The ship regions (exact mask, OpenSARShip head-tail segment, FUSAR-Ship centre disc: about 5x the hull's area,
so FUSAR scores are marked approximate) are defined in ship_regions.py; the centre-prior baseline, all-zero
maps (scored as uniform maps, counted in n_zero), the faithfulness metrics and their cost in cam_scores.py.
The energy share is that of the map after pytorch-grad-cam's per-map min-max scaling (cam_scores.SCALING_NOTE).
"""
import argparse
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tqdm import tqdm

import cam_outputs
import data
import engine
import models
import runs
import sets
from cam_cells import check_manifests, explain_plan, find_jobs
from cam_figures import overlay, plot_on_ship, plot_set_grid
from cli import HelpFormatter, add_shared, comma_list, float_in, int_at_least, run_main, writable
from cam_scores import APPROXIMATE_SOURCES, CHIP_COLUMNS, ROAD_COLUMNS, SCALING_NOTE, road_indices, score_model
from cam_scores import road_summary, summarise
from ship_regions import native_region, region_to_hull, resize_region

# ----------------------------------------------------------------------------------------------------------
# Study defaults
PER_CLASS = 15              # test chips explained per class, per set, per model (the study's 15)
FIGURE_PER_CLASS = 4        # chips per class in the per-set figure (every chip still gets its PNGs)
CELL_IMBALANCE = "none"     # which grid cell to explain by default (the study trained without rebalancing)
METHOD = "gradcam"          # the study's method
BATCH_SIZE = 16             # chips per CAM batch
SELECTION_SEED = 0          # seed of the chip selection (and of randomcam)
ROAD_CHIPS = 4              # chips per set and model scored with ROAD (slow: cam_scores.py)
# pytorch-grad-cam methods that explain one declared target layer of a classifier. Left out: fullgrad
# (ignores the target layer and uses every bias), refinecam and sess (meta-methods over several layers
# or rescaled crops).
METHODS = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "gradcamelementwise": GradCAMElementWise,
    "eigencam": EigenCAM,           # class-agnostic: first principal component of the activations
    "eigengradcam": EigenGradCAM,
    "kpcacam": KPCA_CAM,            # class-agnostic
    "fem": FEM,                     # class-agnostic
    "scorecam": ScoreCAM,           # one forward pass per channel: slow on CPU
    "ablationcam": AblationCAM,     # one forward pass per channel: slow on CPU
    "shapleycam": ShapleyCAM,
    "finercam": FinerCAM,           # predicted class contrasted with the classes the model finds most similar
    "randomcam": RandomCAM,         # random channel weights: a sanity baseline for the on-ship score
}
SCORE_COLUMNS = ["set", "model", "path", "true", "pred", "on_ship_energy", "peak_on_ship",
                 "ship_area_fraction", "region_source", "index", "cell", "agrees_with_grid", "cell_choice",
                 *CHIP_COLUMNS]
CAM_SCORES, CAM_SUMMARY, ROAD_SCORES = cam_outputs.TABLES
FIGURES = cam_outputs.FIGURES
# ----------------------------------------------------------------------------------------------------------


def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description="Grad-CAM heat maps of a finished grid, scored on the ship",
                                add_help=add_help, formatter_class=HelpFormatter)
    add_shared(p, "output_dir", "data_dir")
    p.add_argument("--exp-dir", default=None,
                   help=f"output folder for images, scores and figures (default: <output-dir>/{runs.EXP_IMAGES})")
    p.add_argument("--datasets", type=comma_list(what="set"), default=None,
                   help="prepared sets to explain, comma-separated (default: every set under --data-dir that the "
                        "grid trained a model on)")
    p.add_argument("--models", type=comma_list(models.MODEL_CHOICES, what="model"), default=None,
                   help=f"models, comma-separated, from {', '.join(models.MODEL_CHOICES)} (default: the models the "
                        "grid trained on each set)")
    p.add_argument("--per-class", type=int_at_least(1), default=PER_CLASS, help="test chips explained per class")
    p.add_argument("--method", default=METHOD, choices=list(METHODS), help="pytorch-grad-cam method")
    p.add_argument("--imbalance", default=CELL_IMBALANCE, choices=engine.IMBALANCE,
                   help="imbalance strategy of the grid cell to explain (folder under runs/<set>/<model>/)")
    p.add_argument("--lr", type=float_in(0, float("inf"), low_open=True), default=None,
                   help="learning rate of the grid cell to explain (folder lr<lr>; default: the rate chosen on "
                        "validation, the only one, or, with several and no validation, the smallest)")
    p.add_argument("--train-seed", type=int_at_least(0), default=None,
                   help="training seed of the grid cell to explain (default: the smallest seed found)")
    p.add_argument("--figure-per-class", type=int_at_least(1), default=FIGURE_PER_CLASS,
                   help="chips per class shown in figures/cam_grid_<set>.png")
    p.add_argument("--batch-size", type=int_at_least(1), default=BATCH_SIZE, help="chips per CAM batch")
    p.add_argument("--road-chips", type=int_at_least(0), default=ROAD_CHIPS,
                   help="chips per set and model scored with ROAD, for the map and the centre prior (seeded, the "
                        "same chips for every model; 0: none); 7-17 s per map at 224 px on a CPU")
    add_shared(p, "device")
    p.add_argument("--seed", type=int, default=SELECTION_SEED,
                   help=f"seed of the chip selection and of randomcam (default: {SELECTION_SEED})")
    return p


# -------------------------------------------------------------------------------------------- chip selection
def select_chips(manifest, per_class, seed):
    """{class: [manifest rows]}: `per_class` test chips per class, chosen from the manifest alone.

    Seeded per class (by the class name, so adding a class does not reshuffle the others); within a class
    the shuffled chips are taken one per ship group first (group = MMSI or scene position), so twin chips
    of one ship (GRD and SLC of one acquisition) appear only when a class has fewer groups than asked.
    Returns (selection, messages) where messages name classes with fewer chips than asked.
    """
    test = manifest[manifest["split"] == "test"].sort_values("path")
    selection, messages = {}, []
    for cls in sorted(test["class"].unique()):
        rows = test[test["class"] == cls].reset_index(drop=True)
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode())])
        order = rng.permutation(len(rows))
        shuffled = rows.iloc[order].reset_index(drop=True)
        group = shuffled["group"].where(shuffled["group"] != "", shuffled["path"])
        rank_in_group = group.groupby(group).cumcount()
        chosen = shuffled.assign(_r=rank_in_group, _o=np.arange(len(shuffled)))
        chosen = chosen.sort_values(["_r", "_o"]).head(per_class).drop(columns=["_r", "_o"])
        if len(chosen) < per_class:
            messages.append(f"class {cls} has only {len(chosen)} test chips (asked {per_class}): "
                            "using all of them")
        selection[cls] = [row for _, row in chosen.iterrows()]
    return selection, messages


def _grid_predictions(cell, set_name):
    """{path: pred} from the grid's own predictions file of this cell, or {} when it has none."""
    path = Path(cell) / f"predictions_{set_name}.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(df["path"], df["pred"]))


# ------------------------------------------------------------------------------------------------------ CAMs
def compute_cams(model, images, method=METHOD, device="cpu", batch_size=BATCH_SIZE):
    """Explain the predicted class of each chip. images: uint8 (N, S, S) or (N, 2, S, S) as data.load_split gives them;
    device: a torch.device or its name.

    Returns (maps float32 (N, S, S) in [0, 1], preds int64 (N,), probs float32 (N, C))."""
    device = torch.device(device)
    model = model.to(device).eval()
    maps, preds, probs = [], [], []
    with METHODS[method](model=model, target_layers=[model.cam_target_layer]) as cam:
        for start in range(0, len(images), batch_size):
            chips = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
            x = engine.model_input(chips, device)
            with torch.no_grad():
                logits = model(x)
            pred = logits.argmax(1)
            # Frozen backbones have no parameter that requires grad, so without a grad-requiring input no
            # gradient would reach their target layer and Grad-CAM would have nothing to weight.
            x.requires_grad_(True)
            targets = None if method == "finercam" else [ClassifierOutputTarget(int(c)) for c in pred]
            try:
                batch_maps = cam(input_tensor=x, targets=targets)
            except IndexError as err:
                # pytorch-grad-cam's __exit__ swallows IndexError; re-raise it as something it lets through.
                raise RuntimeError(f"{method} failed on this model: {err!r}") from err
            maps.append(np.asarray(batch_maps, dtype=np.float32))
            preds.append(pred.cpu().numpy())
            probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return np.concatenate(maps), np.concatenate(preds).astype(np.int64), np.concatenate(probs)


def write_png(path, array):
    runs.write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def chosen_images(set_dir, chosen, size, split_cache):
    """The chosen chips as data.load_split decodes them at `size` (the set's test split, decoded once)."""
    key = (Path(set_dir).name, size)
    if key not in split_cache:
        split_cache[key] = data.load_split(set_dir, "test", size)
    split = split_cache[key]
    index = {p: i for i, p in enumerate(split.paths)}   # load_split keeps the manifest's relative paths
    missing = [r["path"] for r in chosen if r["path"] not in index]
    if missing:
        raise RuntimeError(f"{len(missing)} chosen chips (e.g. {missing[0]}) are in {set_dir}/manifest.csv "
                           "but not in its test split: the prepared set is inconsistent, rerun "
                           "dataset_prep.py")
    return split.images[[index[r["path"]] for r in chosen]]


def explain_model(job, model, ckpt, chosen, regions_native, args, device, split_cache, exp_dir, road_at=()):
    """Explain the chosen chips with one trained model (job = (set, model name, cell folder, how the cell was
    chosen)), write its PNGs under exp_dir/<set>/<model>/ and score the maps (cam_scores.score_model; ROAD on
    the chips at `road_at`); return (score rows, record: figure inputs, ROAD rows, prior fit and timings)."""
    set_name, model_name, cell, how = job
    size, classes = int(ckpt["img_size"]), list(ckpt["classes"])
    images = chosen_images(Path(args.data_dir) / set_name, chosen, size, split_cache)
    start = time.perf_counter()
    maps, preds, _ = compute_cams(model, images, args.method, device, args.batch_size)
    cam_s = (time.perf_counter() - start) / len(images)
    grid_pred = _grid_predictions(cell, set_name)
    out_dir = Path(exp_dir) / set_name / model_name
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, regions, per_class_i = [], [], {}
    shown = images[:, 0] if images.ndim == 4 else images  # a stacked (co, cross) chip is shown by its co channel
    for row, chip, cam_map, p in zip(chosen, shown, maps, preds):
        cls, pred = row["class"], classes[int(p)]
        i = per_class_i[cls] = per_class_i.get(cls, -1) + 1
        write_png(out_dir / f"{cls}_o{i}.png", chip)
        write_png(out_dir / f"{cls}_hm{i}.png", overlay(chip, cam_map))
        native, source = regions_native[row["path"]]
        regions.append(None if native is None else resize_region(native, size))
        agrees = (grid_pred[row["path"]] == pred) if row["path"] in grid_pred else ""
        rows.append({"set": set_name, "model": model_name, "path": row["path"], "true": cls, "pred": pred,
                     "region_source": source, "index": i, "cell": Path(cell).as_posix(),
                     "agrees_with_grid": agrees, "cell_choice": how, "correct": pred == cls,
                     "region_exact": source not in (*APPROXIMATE_SOURCES, "none"),
                     "region_to_hull": region_to_hull(row, native)})
    road, extra = score_model(rows, model, images, maps, preds, regions, device, args.batch_size, road_at,
                              args.seed)
    return rows, {"chips": shown, "maps": maps, "regions": regions, "rows": rows, "road": road,
                  "extra": {**extra, "cam_s_per_chip": cam_s}}


# ------------------------------------------------------------------------------------------------------ main
def exp_dir_of(args):
    """--exp-dir, or <output-dir>/Exp_images when it is not given."""
    return Path(args.exp_dir) if args.exp_dir is not None else Path(args.output_dir) / runs.EXP_IMAGES


def clean_stale(output_dir, exp_dir):
    """Remove the temporaries killed runs left in the grid folder, and in --exp-dir unless it lies directly in
    the grid folder (as the default <output-dir>/Exp_images does: cleaning that reaches it). A folder that
    cannot be cleaned is left as it is."""
    output_dir, exp_dir = Path(output_dir), Path(exp_dir)
    covered = exp_dir.resolve().parent == output_dir.resolve()
    for folder in [output_dir] if covered else [output_dir, exp_dir]:
        try:
            runs.clean_stale(folder)
        except OSError as err:
            print(f"grad_cams: could not remove stale temporaries under {folder} ({err})")


def select_all(args, jobs, report):
    """{set: (chosen manifest rows in class order, {path: native region and its source}, the indices of the
    chips scored with ROAD)} for every set with a job; the same chips for every model of a set."""
    selections = {}
    for set_name in dict.fromkeys(job[0] for job in jobs):
        set_dir = Path(args.data_dir) / set_name
        selection, msgs = select_chips(sets.manifest_frame(set_dir), args.per_class, args.seed)
        for m in msgs:
            report(f"{set_name}: {m}")
        chosen = [r for cls in sorted(selection) for r in selection[cls]]
        selections[set_name] = (chosen, {r["path"]: native_region(r, set_dir) for r in chosen},
                                road_indices(len(chosen), args.road_chips, args.seed, set_name))
    return selections


def load_cell(job, report):
    """(model, checkpoint) of a job's cell, or None (reported) when its checkpoint cannot be read."""
    set_name, model_name, cell, _ = job
    try:
        return models.load_trained(cell / runs.CHECKPOINT, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - torch.load fails on a damaged file with many error types
        # e.g. a truncated checkpoint.pt (an interrupted copy) or one of another project: skip the model
        first_line = (str(err).splitlines() or [""])[0]
        report(f"{model_name} on {set_name}: cannot read {cell / runs.CHECKPOINT} ({type(err).__name__}: "
               f"{first_line}); rerun that cell of test_models.py (delete its folder first)")
        return None


def explain_all(args, jobs, selections, device, exp_dir, report):
    """Run every job; returns (score rows, {set: {model: figure record}})."""
    rows, records, split_cache = [], {}, {}
    bar = tqdm(jobs, desc="grad-cam", unit="model", disable=not jobs)
    for job in bar:
        set_name, model_name = job[:2]
        bar.set_postfix_str(f"{set_name}/{model_name}")
        chosen, regions_native, road_at = selections[set_name]
        if not chosen:
            report(f"{set_name}: no test chips in its manifest; nothing to explain")
            continue
        loaded = load_cell(job, report)
        if loaded is None:
            continue
        model_rows, record = explain_model(job, *loaded, chosen, regions_native, args, device, split_cache,
                                           exp_dir, road_at)
        rows += model_rows
        records.setdefault(set_name, {})[model_name] = record
        split_cache = {k: v for k, v in split_cache.items() if k[0] == set_name}   # free finished sets
    bar.close()
    return rows, records


def write_outputs(rows, records, args, exp_dir):
    """cam_scores.csv, cam_summary.csv, road_scores.csv and the figures; returns (scores, summary, road)."""
    (exp_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    runs.write_atomic(exp_dir / CAM_SCORES, lambda tmp: scores.to_csv(tmp, index=False))
    extras = {(s, m): rec["extra"] for s, recs in records.items() for m, rec in recs.items()}
    summary = summarise(scores, extras)
    runs.write_atomic(exp_dir / CAM_SUMMARY, lambda tmp: summary.to_csv(tmp, index=False))
    road = pd.DataFrame([r for recs in records.values() for rec in recs.values() for r in rec["road"]],
                        columns=ROAD_COLUMNS)
    runs.write_atomic(exp_dir / ROAD_SCORES, lambda tmp: road.to_csv(tmp, index=False))
    for set_name, recs in records.items():
        plot_set_grid(set_name, recs, args.figure_per_class, exp_dir / FIGURES / f"cam_grid_{set_name}.png",
                      args.method)
    plot_on_ship(summary, exp_dir / FIGURES / "cam_on_ship.png")
    return scores, summary, road


SHOWN = ["set", "model", "outcome", "n", "n_zero", "on_ship_energy", "prior_energy", "ship_area_fraction",
         "lift_prior", "lift", "peak_on_ship", "conf_change", "conf_change_prior", "approximate"]


def print_timings(result):
    """Seconds per chip of the maps and the confidence change, and per map of ROAD, averaged over the models."""
    summary, road = result["summary"], result["road"]
    timed = road[road["zero_map"].astype(str) != "True"]
    road_s = f"{timed['seconds'].mean():.2f} s per map at {sorted(set(timed['img_size']))} px" if len(timed) \
        else "not run (--road-chips 0 or no scored chips)"
    print(f"cost: Grad-CAM {summary['cam_s_per_chip'].mean():.4f} s per chip, confidence change "
          f"{summary['conf_s_per_chip'].mean():.4f} s per chip, ROAD {road_s}")


def print_summary(result, n_sets, args, exp_dir, seconds):
    scores, summary, problems = result["scores"], result["summary"], result["problems"]
    agree = scores[scores["agrees_with_grid"] != ""]["agrees_with_grid"].astype(bool)
    print(f"\nGrad-CAM ({args.method}) scores: share of the map's energy on the ship vs the centre prior "
          "(lift_prior) and a uniform map (lift); all-zero maps scored as uniform (n_zero); outcome: all chips, "
          "correctly or wrongly predicted")
    print(summary[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(textwrap.fill(SCALING_NOTE, 110))
    for set_name, g in scores.groupby("set", sort=False):
        sources = ", ".join(f"{k} {v}" for k, v in g["region_source"].value_counts().items())
        exact = "exact" if g["region_exact"].all() else "APPROXIMATE"
        print(f"ship regions of {set_name}: {sources}; region / hull area (length x width) "
              f"{pd.to_numeric(g['region_to_hull']).mean():.2f} ({exact})")
    if len(result["road"]):
        print("\nROAD (combined = (LeRF - MoRF) / 2, higher: more faithful), the map against the centre prior:")
        print(road_summary(result["road"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print_timings(result)
    print(f"\nexplained {len(scores)} chips with {len(result['maps'])} trained model(s) on {n_sets} "
          f"set(s) in {seconds:.0f} s")
    if len(agree):
        print(f"predictions agree with the grid's predictions files for {int(agree.sum())}/{len(agree)} "
              "chips")
    print(f"wrote {exp_dir}/<set>/<model>/<Class>_o<i>.png and _hm<i>.png, {exp_dir / CAM_SCORES}, "
          f"{exp_dir / CAM_SUMMARY}, {exp_dir / ROAD_SCORES}, {exp_dir / FIGURES}/cam_grid_<set>.png and "
          "cam_on_ship.png")
    if problems:
        print(f"{len(problems)} problem(s) met; everything else was done:")
        for m in problems:
            print(f"  - {m}")


def explain_and_write(args, jobs, selections, device, exp_dir, report, result):
    """Explain every job into a staging folder and, when anything was explained, replace the previous run's
    outputs in exp_dir with this run's (cam_outputs.commit); fills `result`, returns the figure records."""
    with cam_outputs.staged(exp_dir) as stage:
        rows, records = explain_all(args, jobs, selections, device, stage, report)
        result["maps"] = {(s, m): rec["maps"] for s, recs in records.items() for m, rec in recs.items()}
        if rows:
            result["scores"], result["summary"], result["road"] = write_outputs(rows, records, args, stage)
            cam_outputs.commit(stage, exp_dir)
    return records


def main(args):
    """Explain every (prepared set, model trained on it) pair found. Returns a dict: scores, summary and road
    (DataFrames), maps {(set, model): (N, S, S)}, selection {set: [paths]}, problems (messages)."""
    start = time.time()
    exp_dir = exp_dir_of(args)
    writable(exp_dir, "--exp-dir" if args.exp_dir is not None else "--output-dir", create=False)
    clean_stale(args.output_dir, exp_dir)
    device = engine.resolve_device(args.device)
    torch.manual_seed(args.seed)
    problems = []

    def report(msg):
        problems.append(msg)
        tqdm.write(f"grad_cams: {msg}")

    def note(msg):
        tqdm.write(f"grad_cams: {msg}")

    result = {"scores": pd.DataFrame(columns=SCORE_COLUMNS), "summary": pd.DataFrame(),
              "road": pd.DataFrame(columns=ROAD_COLUMNS), "maps": {}, "selection": {}, "problems": problems}
    plan = explain_plan(args.data_dir, args.output_dir, args.datasets, args.models, report, note)
    jobs = check_manifests(find_jobs(plan, args, report), args.data_dir, args.output_dir, report, note)
    selections = select_all(args, jobs, report)
    result["selection"] = {s: [r["path"] for r in chosen] for s, (chosen, *_) in selections.items()}
    records = explain_and_write(args, jobs, selections, device, exp_dir, report, result) if jobs else {}
    if not len(result["scores"]):
        kept = f"; the outputs of an earlier run in {exp_dir} are left as they were" \
            if cam_outputs.owned_files(exp_dir) else ""
        print("grad_cams: nothing explained" + (f" ({len(problems)} problems above)" if problems else "") + kept)
        return result
    print_summary(result, len(records), args, exp_dir, time.time() - start)
    return result


if __name__ == "__main__":
    def explain():
        try:
            result = main(get_args_parser().parse_args())
        except data.ChipReadError as e:  # a damaged prepared set: the message names the chip and the fix
            raise SystemExit(f"grad_cams.py: {e}") from None
        if not len(result["scores"]):
            raise SystemExit(1)

    run_main("grad_cams.py", explain, kept="the outputs of the previous run are left as they were (this run's are "
             "written only once every model is explained)")
