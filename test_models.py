"""The experiment grid: train every model on every prepared set, test it on every prepared set.

    python test_models.py                                  # the study's recipe: 3 sets x 5 models, Adam 1e-3,
                                                           # 10 epochs, batch 64, 224 px, flip, seed 42, with
                                                           # precise BN and the best validation epoch
    python test_models.py --bn-recalibrate off --select last   # the study's protocol (prepared --val-size 0)
    python test_models.py --models cnn,resnet --lr 0.001,0.0001   # learning rates as a grid axis
    python test_models.py --models cnn,fine_vgg --datasets fusar --imbalance none,weighted,sampler,focal \\
        --seeds 0,1,2                                      # imbalance strategies and seeds as grid axes
    python test_models.py --models cnn --inputs raw,m10,m10-clutter   # input variants as a grid axis (inputs.py)
    python test_models.py --aggregate-only                 # rebuild scores.csv, predictions.csv, results.txt,
                                                           # figures/ from the records found under runs/
    python test_models.py --device cpu --img-size 32 --epochs 1 --weights none --models cnn   # a quick look
    torchrun --nproc_per_node=4 test_models.py             # each cell trained on 4 GPUs (DDP), batch 64 total
    python test_models.py --shard 3/8                      # the 3rd of 8 disjoint slices of the grid (job
                                                           # arrays); then --aggregate-only for the tables
    python test_models.py --tensorboard tb                 # also each epoch's scalars to tb/<cell> (needs
                                                           # pip install tensorboard)

The grid is training set x model x imbalance strategy x input variant x learning rate x seed. Every cell builds a
fresh model and optimiser from its own seed (the published code kept training one model object across datasets:
defect 3 in docs/reference-study.md), trains, and is tested once on the test split of every prepared set (within-
and cross-dataset), through its input variant (--inputs: raw, the study's whole-chip resize; m<M>, square M-metre
pixels; -match, -clutter), and between FUSAR-Ship and OpenSARShip with the label-free adaptations adabn and prior
too (adaptation.py; grid_cell.py runs one cell). After every epoch: precise batch-norm statistics
(engine.recalibrate_bn, --bn-recalibrate on), the training accuracy in eval mode on a fixed subset of the training
split, and where the training set has a val split its macro-F1, balanced accuracy and loss (drawn per cell into
curves.png, and with --tensorboard DIR logged to TensorBoard: curves.py); --select best keeps the
epoch with the best validation macro-F1 (engine.Selection; --patience stops early), --select last the last one. The
tables choose the learning rate on validation (tables.selected_lrs), never on a test score. Inputs: the prepared
splits of dataset_prep.py under --data-dir (sets.py). Then grad_cams.py explains the models and report.py writes
report.md, both from this grid's --output-dir.

Outputs, under --output-dir (runs.py owns the layout, tables.py the tables):
    runs/<train_set>/<model>/<imbalance>/lr<lr>/seed<k>/   one finished cell, written atomically (in a hidden
        record.json                                   sibling folder, renamed when complete): args, classes,
        checkpoint.pt                                 per-epoch loss/accuracy, times, metrics per test set;
        predictions_<test_set>.csv                    the trained weights (models.checkpoint); per-chip
        confusion_<test_set>.csv / .png               predictions; confusion matrices; with .adabn / .prior
                                                      before .csv: an adaptation's (cross-sensor tests);
        curves.png                                    the training curves and the kept epoch (curves.py)
    runs/<train_set>/<model>/<imbalance>/<inputs>/lr<lr>/seed<k>/   the same, for an input variant other than raw
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
import sys
import time

import numpy as np
import torch

import curves
import grid_cell
import data
import distributed
import engine
import features
import grid_checks
import inputs
import leases
import resume
import runs
import sets
import tables
from cli import HelpFormatter, add_shared, comma_list, duration_text, float_in, int_at_least, run_main
from models import MODEL_CHOICES, MODEL_NAMES
from pretrained import GRID_WEIGHTS, WeightsUnavailableError

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


def add_input_flags(parser, positive):
    """The input variants (inputs.py): a grid axis (--inputs), or one variant from its three flags."""
    parser.add_argument("--inputs", type=comma_list(cast=lambda v: inputs.Inputs.parse(v).name, what="input variant"),
                        default=None, help="what the models see, a grid axis (runs/.../<inputs>/lr<lr>/): raw (the "
                        "study: each chip resized whole), m<M> (square M-metre pixels, one field of view for every "
                        "sensor), m<M>-match (also blurred to Sentinel-1 IW resolution), m<M>-clutter and "
                        "clutter (amplitude over the sea median, in dB); e.g. raw,m10,m10-clutter (default: raw, or "
                        "the variant the three flags below name)")
    parser.add_argument("--m-per-px", type=positive, default=None, metavar="M",
                        help="one variant: every chip resampled (anti-aliased) from its own ground spacing to square "
                             "M-metre pixels, centre-cropped or padded with its own sea to --img-size")
    parser.add_argument("--match-resolution", action="store_true",
                        help="with --m-per-px: blur finer sensors (FUSAR-Ship, SLC) to Sentinel-1 IW's resolution")
    parser.add_argument("--radiometry", default="uint8", choices=inputs.RADIOMETRIES,
                        help="uint8: the prepared 8-bit chips (the study); clutter: amplitude over the chip's "
                             "sea-border median in dB, in a fixed window (inputs.CLUTTER_DB_RANGE)")


def resolve_inputs(args):
    """args.inputs: the --inputs list, or the one variant --m-per-px, --match-resolution and --radiometry name."""
    flags = args.m_per_px is not None or args.match_resolution or args.radiometry != "uint8"
    if args.inputs is not None and flags:
        raise SystemExit("--inputs and --m-per-px/--match-resolution/--radiometry both name input variants: give "
                         "one of them (e.g. --inputs raw,m10-clutter)")
    if args.match_resolution and args.m_per_px is None:
        raise SystemExit("--match-resolution needs --m-per-px (the blur matches resolutions before resampling to "
                         "square pixels): add e.g. --m-per-px 10")
    if args.inputs is None:
        args.inputs = [inputs.Inputs(args.m_per_px, args.match_resolution, args.radiometry).name]
    return args.inputs


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
                        help="the square every chip becomes (cnn: 8 px or more, VGG: 32): resized whole (raw inputs) "
                             "or its field of view at --m-per-px")
    add_input_flags(parser, positive)
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
    parser.add_argument("--weights", default=WEIGHTS, choices=GRID_WEIGHTS,
                        help="start of the VGG/ResNet backbones (the cnn is always random): imagenet, none (random), "
                             "auto (imagenet where the file is cached or downloadable, else random; records keep "
                             "which), sentinel1 (resnet, fine_resnet: SAR-pretrained, on --product cal chips)")
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
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also log every epoch's loss, accuracies and validation scores to TensorBoard, in "
                             "DIR/<cell> (needs the tensorboard package: pip install tensorboard)")
    return parser


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
          f"imbalance strateg{'y' if len(args.imbalance) == 1 else 'ies'} x {len(args.inputs)} input variant(s) "
          f"({', '.join(args.inputs)}) x {len(args.lr)} learning rate(s) x "
          f"{len(args.seeds)} seed(s) = {len(grid)} cells{shard}, {todo} to train; tested on {', '.join(test_sets)}")
    print(f"settings: epochs={args.epochs} batch_size={args.batch_size} Adam img_size={args.img_size} "
          f"augment={args.augment} weights={args.weights} bn-recalibrate={args.bn_recalibrate} "
          f"select={args.select or 'best where a val split exists, else last'}; device {device}, "
          f"mixed precision {precision.describe()}; output {args.output_dir}"
          + (f"; {distributed.world_size()} processes (DDP)" if distributed.world_size() > 1 else ""))


def run_grid(cells, finished, test_sets, manifests, args, device, precision):
    """Train every unfinished cell (and complete finished records that lack a test set), with progress."""
    caches = {}  # one per input variant: its decoded splits and frozen-backbone features
    env = engine.environment(device)
    todo, durations, held = len(cells) - len(finished), [], []
    for index, cell in enumerate(cells, 1):
        if cell.inputs not in caches:
            feature_cache = features.FeatureCache(device, precision, args.batch_size,
                                                  enabled=not args.no_feature_cache)
            caches[cell.inputs] = data.SplitCache(args.data_dir, args.img_size, device, args.num_workers,
                                                  on_disk=args.cache_on_disk, feature_cache=feature_cache,
                                                  inputs=inputs.Inputs.parse(cell.inputs))
        cache = caches[cell.inputs]
        if cell in finished:
            record = finished[cell]
            missing = grid_checks.missing_tests(record, cell, test_sets, manifests)
            if missing:
                grid_cell.complete_record(runs.cell_dir(args.output_dir, cell), cell, record, missing, cache,
                                          manifests, args, device, precision)
            print(f"[{index}/{len(cells)}] {runs.cell_name(cell)}: finished earlier, skipped (--force retrains "
                  "it)" + (f"; evaluated on {', '.join(missing)}" if missing else ""), flush=True)
            continue
        start = time.perf_counter()
        try:
            record = grid_cell.run_cell(cell, args, test_sets, cache, manifests, device, precision, env)
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
    if args.tensorboard is not None and not args.aggregate_only:  # a missing package stops the run before any work
        try:
            curves.summary_writer()
        except curves.TensorBoardMissing as e:
            raise SystemExit(str(e)) from None
    grid_checks.check_output(args)  # a folder that cannot be written stops the run now, not after a cell trained
    if distributed.env_rank() == 0:
        runs.clean_stale(args.output_dir)
    if args.aggregate_only:  # under torchrun rank 0 alone rebuilds the tables
        return aggregate(args) if distributed.env_rank() == 0 else None
    device = distributed.setup(engine.resolve_device(args.device))  # under torchrun: joins the process group
    distributed.local_batch(args.batch_size, distributed.world_size())  # --batch-size is the global batch
    precision = engine.Precision(args.amp, device)
    train_sets, test_sets, manifests = sets.grid_sets(args.data_dir, args.datasets, args.test_sets)
    resolve_inputs(args)  # args.inputs: the --inputs list, or the variant the shorthand flags name
    n_classes = grid_checks.check_grid(args, train_sets)  # --img-size per model, two classes, --select best
    grid_checks.check_weights(args, train_sets, test_sets)  # --weights sentinel1: ResNets on calibrated dB only
    grid_checks.check_stacked(args, train_sets)  # stacked (co, cross) chips: raw inputs only
    grid = [runs.Cell(*c) for c in itertools.product(train_sets, args.models, args.imbalance, args.inputs, args.lr,
                                                     args.seeds)]
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
