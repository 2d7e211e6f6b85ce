"""The experiment grid: train every model on every prepared set, test it on every prepared set.

    python test_models.py                                  # the study's recipe: 3 sets x 5 models, Adam 1e-3,
                                                           # 10 epochs, batch 64, 224 px, flip, seed 42, with
                                                           # precise BN and the best validation epoch
    python test_models.py --bn-recalibrate off --select last   # the study's protocol (prepared --val-size 0)
    python test_models.py --models cnn,resnet --lr 0.001,0.0001   # learning rates as a grid axis
    python test_models.py --models cnn,fine_vgg --datasets fusar --imbalance none,weighted,sampler,focal \\
        --seeds 0,1,2                                      # imbalance strategies and seeds as grid axes
    python test_models.py --aggregate-only                 # rebuild scores.csv, predictions.csv, results.txt,
                                                           # figures/ from the records found under runs/
    python test_models.py --device cpu --img-size 32 --epochs 1 --weights none --models cnn   # a quick look
    torchrun --nproc_per_node=4 test_models.py             # each cell trained on 4 GPUs (DDP), batch 64 total
    python test_models.py --shard 3/8                      # the 3rd of 8 disjoint slices of the grid (job
                                                           # arrays); then --aggregate-only for the tables

The grid is training set x model x imbalance strategy x learning rate x seed. Every cell builds a fresh model
and optimiser from its own seed (the published code kept training one model object across datasets: defect 3
in docs/reference-study.md), trains, and is tested once on the test split of every prepared set (within- and
cross-dataset). After every epoch: precise batch-norm statistics (engine.recalibrate_bn, --bn-recalibrate on),
the training accuracy in eval mode on a fixed subset of the training split, and where the training set has a
val split its macro-F1, balanced accuracy and loss; --select best keeps the epoch with the best validation
macro-F1 (engine.Selection; --patience stops early), --select last the last one. The tables choose the
learning rate on validation (tables.selected_lrs), never on a test score. Inputs: the prepared splits of
dataset_prep.py under --data-dir (sets.py). Then grad_cams.py explains the models and report.py writes
report.md, both from this grid's --output-dir.

Outputs, under --output-dir (runs.py owns the layout, tables.py the tables):
    runs/<train_set>/<model>/<imbalance>/lr<lr>/seed<k>/   one finished cell, written atomically (in a hidden
        record.json                                   sibling folder, renamed when complete): args, classes,
        checkpoint.pt                                 per-epoch loss/accuracy, times, metrics per test set;
        predictions_<test_set>.csv                    the trained weights (models.checkpoint); per-chip
        confusion_<test_set>.csv / .png               predictions; confusion matrices
    scores.csv, predictions.csv, results.txt, figures/    rebuilt from every record found (tables.py)

Rerunning skips finished cells (--force retrains them); a finished cell whose record lacks a requested test set
(or whose test set was prepared again since) is evaluated from its checkpoint; one trained with other settings or
on another version of its training set stops the run (--force, or another --output-dir). A killed cell (Ctrl-C,
kill -9, a preempted job) resumes from its last epoch checkpoint (resume.py: weights, optimiser, every random
generator, the selection; written once --checkpoint-every seconds of training have passed, 0: every epoch), on
the CPU bitwise as if never stopped. Runs sharing an --output-dir (job-array tasks, nodes) train each cell once:
a run skips the cells whose lease another live run holds (leases.py; a dead run's lease is taken over at once on
its host, after --lease-timeout seconds without a heartbeat elsewhere). Checked before the first cell trains
(grid_checks.py): --output-dir can be written, every model runs at --img-size (cnn 8 px, VGG 32 px), every
training set has two classes. A damaged record.json, checkpoint.pt or chip is a message naming the file and the
fix; a full disk, one saying what ran out and how much a cell needs.

Imbalance strategies (--imbalance; engine.py): none; weighted (cross-entropy weighted by inverse class
frequency, w_c = N / (K n_c)); sampler (class-balanced sampling with replacement); focal (focal loss, gamma 2,
with the same class weights as alpha).

Reproducibility: a cell depends only on its settings and seed. Python, NumPy and torch are seeded right before
the model is built; the data order, the sampler and the augmentation draw from per-cell torch generators
derived from the seed. On the CPU a cell alone or inside a larger grid gives identical predictions; on CUDA,
cuDNN autotuning (cudnn.benchmark) and atomics make runs close but not bitwise equal. Each record keeps its
args and the command line that reruns exactly that cell.

Several GPUs or a cluster (distributed.py): under torchrun each cell is trained with DistributedDataParallel
(NCCL on CUDA, gloo on the CPU); --batch-size stays the global batch; every test chip is evaluated once, by one
rank; rank 0 alone prints and writes. --shard k/n runs cells[k-1::n] of the grid; the final tables come from
--aggregate-only over the union of the shards' runs/ folders.

CUDA and CPU run one code path (engine.py): autocast when --amp is on (auto: on for CUDA), channels-last,
pinned memory and cudnn.benchmark on CUDA; --compile adds torch.compile. Each split is decoded once per
prepared set and size into <set>/.cache/ (data.py). fine_vgg and fine_resnet train their head on backbone
features computed once per chip and augmentation view (features.py). bench.py measures all of this.
"""

import argparse
import itertools
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import data
import distributed
import engine
import features
import grid_checks
import leases
import resume
import runs
import sets
import tables
from cli import HelpFormatter, add_shared, comma_list, duration_text, float_in, int_at_least, run_main
from models import (MODEL_CHOICES, MODEL_NAMES, WEIGHT_CHOICES, CheckpointError, WeightsUnavailableError, build_model,
                    checkpoint, load_trained, state_sha1)

# The study's recipe (docs/reference-study.md): Adam, lr 0.001, 10 epochs, batch 64, 224 x 224, horizontal flip,
# ImageNet weights for VGG and ResNet, one seed, no rebalancing.
EPOCHS = 10
BATCH_SIZE = 64
LR = [0.001]
IMG_SIZE = 224
AUGMENT = "flip"
WEIGHTS = "imagenet"
SEEDS = [0, 1, 2]  # three seeds (the study: one, --seeds 42); the split's own seed is dataset_prep.py's
IMBALANCE = ["none"]
# Everything but these args is part of a cell's identity (tables.TRAIN_SETTINGS decides what must match).
NOT_CELL_ARGS = ("force", "aggregate_only", "shard", "bootstrap", "checkpoint_every", "lease_timeout")


def add_speed_flags(parser):
    """The flags that change how fast a cell runs, never what it computes (bench.py measures them)."""
    parser.add_argument("--num-workers", type=int_at_least(0), default=min(8, os.cpu_count() or 1),
                        help="threads decoding the PNGs of a split (once per run; 0: in the main thread); "
                             "the decoded arrays do not depend on it")
    parser.add_argument("--amp", default="auto", choices=engine.AMP_CHOICES,
                        help="mixed precision: auto = on for CUDA, off on the CPU")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the trained module (minutes of compilation per cell; pays off for "
                             "long CUDA runs)")
    parser.add_argument("--cache-on-disk", action="store_true",
                        help="keep the decoded splits memory-mapped from <set>/.cache/ instead of reading them "
                             "into RAM (for machines with less memory than the data)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="push every chip through the frozen backbones of fine_vgg/fine_resnet in every "
                             "epoch instead of training their head on cached features (for checking: the "
                             "results agree within float rounding)")


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Train and test every model on every prepared set",
                                     add_help=add_help, formatter_class=HelpFormatter)
    add_shared(parser, "data_dir", "output_dir")
    parser.add_argument("--datasets", type=comma_list(what="set"), default=None,
                        help="training sets, comma-separated (default: fusar,opensarship,mixed; those not "
                             "prepared are skipped with a message; a named one that is missing is an error)")
    parser.add_argument("--test-sets", type=comma_list(what="set"), default=None,
                        help="sets whose test split every cell is evaluated on (default: all prepared)")
    parser.add_argument("--models", type=comma_list(MODEL_CHOICES, what="model"), default=list(MODEL_NAMES),
                        help="models, comma-separated")
    parser.add_argument("--imbalance", type=comma_list(engine.IMBALANCE, what="strategy"), default=IMBALANCE,
                        help=f"imbalance strategies, comma-separated, from {', '.join(engine.IMBALANCE)}")
    parser.add_argument("--seeds", type=comma_list(cast=int_at_least(0, 2**32 - 1), what="seed"), default=SEEDS,
                        help="seeds, comma-separated (integers from 0 to 2**32 - 1, NumPy's range)")
    parser.add_argument("--epochs", type=int_at_least(1), default=EPOCHS, help="training epochs per cell")
    parser.add_argument("--batch-size", type=int_at_least(2), default=BATCH_SIZE,
                        help="the global batch: under torchrun each of the N processes trains on batch / N "
                             "chips a step (N must divide it)")
    positive = float_in(0, float("inf"), low_open=True, high_open=True)  # finite and > 0: nan, inf and 0 refused
    parser.add_argument("--lr", type=comma_list(cast=positive, what="rate"), default=LR,
                        help="Adam learning rates, comma-separated: a grid axis (runs/.../lr<lr>/)")
    parser.add_argument("--img-size", type=int_at_least(1), default=IMG_SIZE,
                        help="every chip is resized whole to this square (cnn: 8 px or more, VGG: 32)")
    parser.add_argument("--bn-recalibrate", default="on", choices=("on", "off"),
                        help="on: batch-norm statistics recomputed over the training split with the weights they "
                             "are used with, after every epoch (precise BN); off: the running averages training "
                             "leaves, as the study evaluated")
    parser.add_argument("--select", default=None, choices=engine.SELECT,
                        help="the epoch a cell keeps: best = highest validation macro-F1 (ties: the earlier), last "
                             "= the last epoch (default: best when the training set has a val split, else last)")
    parser.add_argument("--patience", type=int_at_least(1), default=None,
                        help="with --select best, stop after this many epochs without improvement (default: off)")
    parser.add_argument("--augment", default=AUGMENT, choices=data.AUGMENTATIONS,
                        help="training augmentation: none, flip (random horizontal flip, the study), "
                             "flip+rot90 (also a random multiple of 90 degrees)")
    parser.add_argument("--weights", default=WEIGHTS, choices=WEIGHT_CHOICES,
                        help="start of the VGG/ResNet backbones (the cnn is always random)")
    add_shared(parser, "device")
    add_speed_flags(parser)
    parser.add_argument("--shard", type=distributed.parse_shard, default=None, metavar="K/N",
                        help="run only the K-th of N disjoint slices of the grid's cells (cells[K-1::N]), "
                             "e.g. one per job of a SLURM array; the final tables come from --aggregate-only "
                             "once every shard is done")
    resume.add_flags(parser)  # --checkpoint-every, --lease-timeout
    parser.add_argument("--force", action="store_true", help="retrain cells that are already finished")
    parser.add_argument("--bootstrap", type=int_at_least(0), default=tables.N_BOOTSTRAP, metavar="N",
                        help="resamples of the ship bootstrap behind every 95 %% interval in scores.csv (all chips "
                             "of a ship in or out together; 0: no intervals)")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="train nothing: rebuild scores.csv, predictions.csv, results.txt and figures/ from "
                             "the records found")
    return parser


# ------------------------------------------------------------------------------------------------------------
# one cell

def split_probs(model, cache, set_name, split, args, device, precision, index=None):
    """Softmax probabilities (N, K) of a split's chips (the rows `index` of it, all when None) on rank 0, None on
    the other ranks. Under torchrun each rank evaluates its own chips (rank, rank + W, ...: every chip exactly
    once) and rank 0 gathers them back into the split's order. Frozen backbones: the head over the split's
    backbone features, computed once (features.py)."""
    _, images, labels = cache.get(set_name, split)
    if index is not None:
        images, labels = images[index], labels[index]
    part, world = distributed.rank_slice(), distributed.world_size()
    key = (set_name, split if index is None else f"{split}[{len(labels)}]")
    net, batches = cache.features.wrap(model, data.Batches(images[part], labels[part], args.batch_size // world),
                                       key)
    return distributed.gather_rows(engine.evaluate(net, batches, device, precision), len(labels))


def evaluate_sets(model, folder, title, test_sets, classes, cache, args, device, precision):
    """Evaluate on every test set, rank 0 writing its files into `folder`: {name: {n, metrics, degenerate,
    top_share}}, the same on every rank."""
    results = {}
    for name in test_sets:
        probs = split_probs(model, cache, name, "test", args, device, precision)
        if distributed.is_main():
            arrays = cache.get(name, "test")[0]
            row = tables.write_test_results(folder, title, name, classes, arrays.paths, arrays.labels, probs)
            flag, share = tables.degenerate(np.asarray(classes)[probs.argmax(1)], classes)
            results[name] = {"n": row["n"], "metrics": row, "degenerate": flag, "top_share": share}
    return distributed.broadcast(results)


def training_batches(cell, arrays, images, labels, args):
    """The cell's shuffled, augmented training batches (this rank's share under torchrun)."""
    train_set, _, imbalance, _, seed = cell
    rank, world = distributed.rank(), distributed.world_size()
    order_gen, aug_gen = engine.cell_generators(seed)
    if rank:  # the same order on every rank, its own augmentation and dropout draws (distributed.py)
        aug_seed, torch_seed = distributed.rank_seeds(seed, rank)
        aug_gen = torch.Generator().manual_seed(aug_seed)
        torch.manual_seed(torch_seed)
    sample_weights = data.balanced_sample_weights(arrays.labels, len(arrays.classes)) \
        if imbalance == "sampler" else None
    batches = data.Batches(images, labels, args.batch_size, shuffle=True, generator=order_gen,
                           sample_weights=sample_weights, augment=args.augment, aug_generator=aug_gen,
                           rank=rank, world_size=world)
    if not len(batches):
        raise SystemExit(f"the {train_set} training split has {len(labels)} chips: too few for {world} "
                         "processes to get at least 2 each; start torchrun with fewer processes")
    return batches


def in_order(images, labels, args):
    """This rank's share of a split in its fixed order, unaugmented: what batch-norm statistics are computed on."""
    part = distributed.rank_slice()
    return data.Batches(images[part], labels[part], args.batch_size // distributed.world_size())


def epoch_checks(model, cell, cache, args, device, precision, has_val):
    """After an epoch, in eval mode: accuracy on a fixed subset of the training split (at most TRAIN_EVAL_CHIPS,
    evenly spaced) and, with a val split, its macro-F1, balanced accuracy and loss. The same on every rank."""
    train_set = cell[0]
    arrays = cache.get(train_set, "train")[0]
    probe = np.unique(np.linspace(0, len(arrays.labels) - 1, engine.TRAIN_EVAL_CHIPS).round().astype(np.int64))
    out = {}
    probs = split_probs(model, cache, train_set, "train", args, device, precision, torch.from_numpy(probe))
    if distributed.is_main():
        out["train_eval_accuracy"] = round(100.0 * float((probs.argmax(1) == arrays.labels[probe]).mean()), 2)
    if has_val:
        probs = split_probs(model, cache, train_set, "val", args, device, precision)
        if distributed.is_main():
            out["val"] = engine.split_scores(probs, cache.get(train_set, "val")[0].labels, arrays.classes)
    return distributed.broadcast(out)


def train_cell(cell, model, arrays, images, labels, cache, args, device, precision, has_val, work):
    """Train a fresh model in place: every epoch (after the last one an interrupted run saved in `work`), then
    precise batch-norm statistics (--bn-recalibrate on), the eval-mode checks, the selection and the epoch
    checkpoint (resume.py); the kept epoch's weights are loaded at the end.
    Returns (history, seconds, class weights, selection)."""
    train_set, _, imbalance, lr, _ = cell
    optimizer = engine.make_optimizer(model, lr)
    scaler = precision.scaler()
    criterion, weights = engine.make_criterion(imbalance, arrays.labels, len(arrays.classes))
    criterion = criterion.to(device)
    batches = training_batches(cell, arrays, images, labels, args)
    layers = engine.bn_layers(model) if args.bn_recalibrate == "on" else []
    selection = engine.Selection(args.select or ("best" if has_val else "last"), args.patience)
    progress = resume.Progress(work, model, optimizer, scaler, batches, selection)  # the clock starts here:
    history = progress.history  # the training time includes computing cached backbone features
    # frozen backbones: the head trains on backbone features computed once per chip and view, replaying
    # the same draws (features.py); every other model trains whole
    net, batches = cache.features.wrap(model, batches, (train_set, "train"))
    net = distributed.wrap(net, device)  # `net` itself in one process, DDP under torchrun
    if args.compile:
        net = torch.compile(net)
    for epoch in progress.epochs(args.epochs):  # saved every --checkpoint-every s, restored after a kill
        loss, acc = engine.train_one_epoch(net, criterion, optimizer, scaler, batches, device, precision,
                                           f"{runs.cell_name(cell)} epoch {epoch}/{args.epochs}")
        engine.recalibrate_bn(model, layers, in_order(images, labels, args), device, precision)
        history.append({"epoch": epoch, "loss": round(loss, 6), "accuracy": round(acc, 2),
                        **epoch_checks(model, cell, cache, args, device, precision, has_val)})
        if selection.update(epoch, model, history[-1]["val"]["f1_macro"] if has_val else None):
            break
    selection.restore(model)
    if not layers:
        distributed.broadcast_buffers(model)  # every rank evaluates the model rank 0 saves (batch-norm stats)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return history, progress.seconds(), weights, selection


def fresh_model(cell, classes, images, labels, args, device, precision):
    """The cell's model, built right after seeding (the cell depends on nothing that ran before it); a frozen
    backbone with random weights gets batch-norm statistics from one pass over the training split (its default
    statistics, 0 and 1, make a random ResNet's activations blow up). Returns (model, init sha1, note)."""
    engine.seed_everything(cell[4])
    model = build_model(cell[1], len(classes), args.weights)
    init_sha1 = state_sha1(model)
    # channels-last on CUDA: the layout tensor cores want; on the CPU the default layout
    model = model.to(device, memory_format=torch.channels_last) if device.type == "cuda" else model.to(device)
    layers = engine.bn_layers(model.backbone, trainable_only=False) \
        if model.frozen_backbone and args.weights == "none" else []
    engine.recalibrate_bn(model.backbone, layers, in_order(images, labels, args), device, precision)
    note = f"statistics of the {len(layers)} batch-norm layers of the random frozen backbone from one pass over " \
        "the training split" if layers else None
    return model, init_sha1, note


def run_cell(cell, args, test_sets, cache, manifests, device, precision, env):
    """Train one cell under its lease in its working folder, from the last epoch an interrupted run finished
    (resume.CellWork; leases.Held: another run has it), and publish its record folder; returns the record."""
    train_set, model_name, imbalance, lr, seed = cell
    with resume.CellWork(cell, args, manifests[train_set], device) as work:  # under torchrun rank 0 alone writes
        arrays, images, labels = cache.get(train_set, "train")
        classes, has_val = arrays.classes, sets.has_split(Path(args.data_dir) / train_set, "val")
        model, init_sha1, frozen_note = fresh_model(cell, classes, images, labels, args, device, precision)
        history, train_seconds, weights, selection = train_cell(cell, model, arrays, images, labels, cache, args,
                                                                device, precision, has_val, work)
        a = runs.cell_args(args, cell, test_sets, NOT_CELL_ARGS)
        if distributed.rank() == 0:  # `model` is the module inside DDP: no "module." prefix
            torch.save(checkpoint(model, model_name, classes, args.img_size, args.weights, seed, a),
                       work.dir / runs.CHECKPOINT)
        start = time.perf_counter()
        results = evaluate_sets(model, work.dir, runs.cell_name(cell), test_sets, classes, cache, args, device,
                                precision)
        record = {
            "train_set": train_set, "model": model_name, "imbalance": imbalance, "lr": lr, "seed": seed,
            "split_seed": sets.split_seed(Path(args.data_dir) / train_set),
            "classes": classes, "args": a, "command": runs.cell_command(a), "history": history,
            "protocol": {"name": f"bn {args.bn_recalibrate}, {selection.mode}", "bn_recalibrate": args.bn_recalibrate,
                         "bn_layers": len(engine.bn_layers(model)) if args.bn_recalibrate == "on" else 0,
                         "val": has_val, "frozen_bn": frozen_note, **selection.describe()},
            "train_seconds": round(train_seconds, 3), "eval_seconds": round(time.perf_counter() - start, 3),
            **env, "amp": precision.describe(), "init_sha1": init_sha1,
            "n_train": len(arrays.labels),
            "train_counts": {c: int((arrays.labels == k).sum()) for k, c in enumerate(classes)},
            "class_weights": weights, "focal_gamma": engine.FOCAL_GAMMA if imbalance == "focal" else None,
            "manifests": {s: manifests[s] for s in dict.fromkeys([train_set, *test_sets])},
            "feature_cache": cache.features.info.get((train_set, "train"))
            if cache.features.applies(model, args.augment) else None,
            "test_sets": results, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        work.publish(record)
    return record


def complete_record(folder, cell, record, missing, cache, manifests, args, device, precision):
    """Evaluate a finished cell's checkpoint on test sets its record lacks (or whose set was prepared again).

    The new files are written in a hidden folder, moved in one by one (os.replace), and record.json is
    replaced last: an interruption leaves the old record valid, and it lists only test sets whose files are
    complete. Under torchrun every rank evaluates its share (evaluate_sets) and rank 0 alone writes.
    """
    try:
        model, _ = load_trained(folder / runs.CHECKPOINT, map_location=device)
    except (CheckpointError, WeightsUnavailableError) as e:
        raise SystemExit(grid_checks.checkpoint_failure(e, folder, cell, missing)) from None
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    tmp = folder / f".complete{runs.temp_suffix()}"
    main = distributed.is_main()
    if main:
        tmp.mkdir()
    try:
        start = time.perf_counter()
        results = evaluate_sets(model, tmp, runs.cell_name(cell), missing, record["classes"], cache, args,
                                device, precision)
        record["eval_seconds"] = round(record.get("eval_seconds", 0) + time.perf_counter() - start, 3)
        for path in tmp.iterdir() if main else ():
            path.replace(folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["test_sets"].update(results)
    record.setdefault("manifests", {}).update({s: manifests[s] for s in missing})
    if main:
        runs.write_text_atomic(folder / runs.RECORD, runs.json_text(record))


# ------------------------------------------------------------------------------------------------------------
# the grid

def finished_cells(cells, args, manifests):
    """{cell: record} of the cells already finished (none with --force), checked against the args."""
    try:
        finished = {} if args.force else {c: runs.read_record(runs.cell_dir(args.output_dir, c)) for c in cells
                                          if (runs.cell_dir(args.output_dir, c) / runs.RECORD).is_file()}
    except runs.RecordError as e:
        raise SystemExit(str(e)) from None
    finished = distributed.broadcast(finished)  # under torchrun every rank follows rank 0's view
    for cell, record in finished.items():  # before anything trains: fail fast
        grid_checks.check_finished(record, args, cell, manifests)
    return finished


def describe_grid(args, train_sets, test_sets, grid, cells, todo, device, precision):
    shard = f" (shard {args.shard[0]}/{args.shard[1]}: {len(cells)} of them)" if args.shard else ""
    print(f"grid: {len(train_sets)} training set(s) x {len(args.models)} model(s) x {len(args.imbalance)} "
          f"imbalance strateg{'y' if len(args.imbalance) == 1 else 'ies'} x {len(args.lr)} learning rate(s) x "
          f"{len(args.seeds)} seed(s) = {len(grid)} cells{shard}, {todo} to train; tested on {', '.join(test_sets)}")
    print(f"settings: epochs={args.epochs} batch_size={args.batch_size} Adam img_size={args.img_size} "
          f"augment={args.augment} weights={args.weights} bn-recalibrate={args.bn_recalibrate} "
          f"select={args.select or 'best where a val split exists, else last'}; device {device}, "
          f"mixed precision {precision.describe()}; output {args.output_dir}"
          + (f"; {distributed.world_size()} processes (DDP)" if distributed.world_size() > 1 else ""))


def run_grid(cells, finished, test_sets, manifests, args, device, precision):
    """Train every unfinished cell (and complete finished records that lack a test set), with progress."""
    feature_cache = features.FeatureCache(device, precision, args.batch_size, enabled=not args.no_feature_cache)
    cache = data.SplitCache(args.data_dir, args.img_size, device, args.num_workers, on_disk=args.cache_on_disk,
                            feature_cache=feature_cache)
    env = engine.environment(device)
    todo, durations, held = len(cells) - len(finished), [], []
    for index, cell in enumerate(cells, 1):
        if cell in finished:
            record = finished[cell]
            missing = [t for t in test_sets if t not in record["test_sets"]
                       or record.get("manifests", {}).get(t) != manifests[t]]
            if missing:
                complete_record(runs.cell_dir(args.output_dir, cell), cell, record, missing, cache, manifests,
                                args, device, precision)
            print(f"[{index}/{len(cells)}] {runs.cell_name(cell)}: finished earlier, skipped (--force retrains "
                  "it)" + (f"; evaluated on {', '.join(missing)}" if missing else ""), flush=True)
            continue
        start = time.perf_counter()
        try:
            record = run_cell(cell, args, test_sets, cache, manifests, device, precision, env)
        except WeightsUnavailableError as e:
            raise SystemExit(str(e)) from None
        except leases.Held as e:  # another run trains (or has finished) this cell: on with the next one
            print(f"[{index}/{len(cells)}] {runs.cell_name(cell)}: {e}; skipped", flush=True)
            held.append(e)
            continue
        durations.append(time.perf_counter() - start)
        left = todo - len(durations) - len(held)
        eta = f"about {duration_text(np.mean(durations) * left)} left" if left else "grid trained"
        last = record["history"][-1]
        tests = ", ".join(f"{t} {r['metrics']['accuracy']:.1f}/{r['metrics']['f1_macro']:.1f}"
                          for t, r in record["test_sets"].items())
        kept = record["protocol"]
        print(f"[{index}/{len(cells)}] {runs.cell_name(cell)}: {len(record['history'])} epoch(s) in "
              f"{record['train_seconds']:.1f} s, loss {last['loss']:.3f}, train acc {last['accuracy']:.1f} "
              f"(eval mode {last['train_eval_accuracy']:.1f}); kept epoch {kept['epoch']} ({kept['select']}); "
              f"test acc/macro-F1 {tests} | {len(durations)}/{todo} trained, {eta}", flush=True)
    leases.report_held(held)
    return held


def aggregate(args):
    try:
        return tables.aggregate(args.output_dir, n_boot=args.bootstrap)
    except runs.RecordError as e:
        raise SystemExit(str(e)) from None
    except OSError as e:  # a full disk, a folder made read-only: a message, not a traceback
        grid_checks.stop_on_tables_failure(e, args.output_dir)
        raise


def main(args):
    grid_checks.check_output(args)  # a folder that cannot be written stops the run now, not after a cell trained
    if distributed.env_rank() == 0:
        runs.clean_stale(args.output_dir)
    if args.aggregate_only:  # under torchrun rank 0 alone rebuilds the tables
        return aggregate(args) if distributed.env_rank() == 0 else None
    device = distributed.setup(engine.resolve_device(args.device))  # under torchrun: joins the process group
    distributed.local_batch(args.batch_size, distributed.world_size())  # --batch-size is the global batch
    precision = engine.Precision(args.amp, device)
    train_sets, test_sets, manifests = sets.grid_sets(args.data_dir, args.datasets, args.test_sets)
    n_classes = grid_checks.check_grid(args, train_sets)  # --img-size per model, two classes, --select best
    grid = list(itertools.product(train_sets, args.models, args.imbalance, args.lr, args.seeds))
    cells = distributed.shard_cells(grid, args.shard)
    if not cells:
        print(f"shard {args.shard[0]}/{args.shard[1]} has no cells: the grid has {len(grid)}, fewer than "
              f"{args.shard[1]} shards; nothing to do")
        return None
    finished = finished_cells(cells, args, manifests)
    describe_grid(args, train_sets, test_sets, grid, cells, len(cells) - len(finished), device, precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    try:
        held = run_grid(cells, finished, test_sets, manifests, args, device, precision)
        if held and not runs.find_records(args.output_dir):
            return None  # every cell is another run's: that run writes the tables
        # with --shard: the tables of the records found so far; the final ones come from --aggregate-only
        return aggregate(args) if distributed.is_main() else None
    except data.ChipReadError as e:  # a damaged prepared set: the message names the chip and the fix
        raise SystemExit(str(e)) from None
    except (OSError, RuntimeError) as e:  # a full disk (torch.save: "unexpected pos"), a folder made read-only
        grid_checks.stop_on_write_failure(e, args, n_classes)
        raise


if __name__ == "__main__":
    run_main("test_models.py", lambda: main(get_args_parser().parse_args(sys.argv[1:])),
             kept="finished cells, and the last epoch checkpoint of the cell in training, are kept",
             cleanup=distributed.teardown)
