"""How fast each stage of the grid is, against the plain ImageFolder-and-PIL approach, in one run.

    python bench.py                         # synthetic data, CPU or GPU; about 5 min on a 2-core laptop CPU
    python bench.py --json                  # the same, and one JSON object as the last line of output
    python bench.py --data-dir data/prepared --img-size 128   # on prepared sets, another size
    python bench.py --quick                 # tiny sizes, under a minute (the test suite runs it)

Without --data-dir it prepares a small synthetic set first (python dataset_prep.py --synthetic
--synthetic-chips N into a temporary folder) and measures on its largest training split (mixed). It reports:
(a) input pipeline, images/s at 224 px: the plain approach (torchvision ImageFolder, PIL decode, Resize 224,
    RandomHorizontalFlip, ToTensor, DataLoader with 2 workers), which decodes every PNG in every epoch,
    against this project's (data.load_split's decoded cache, data.Batches with batched flips on the device,
    engine.model_input: model-ready float tensors). Steady-state epochs (medians), and the first epoch apart:
    the plain approach's first epoch is like the others; ours decodes once and writes the cache (cold), or
    reads it back (warm: every later cell and run).
(b) training images/s of each model at --img-size: engine.train_one_epoch over --train-steps batches of
    --train-batch (forward, backward, the fused Adam step of engine.make_optimizer), after one warm-up step;
    the frozen models also with cached features (steady state: the head alone; the one-time feature pass is
    given as its own images/s). On CUDA: mixed precision (bfloat16 where supported) and channels-last, as
    test_models.py trains, and ResNet50 once more in float32 and the default layout for comparison.
(c) wall time of a --epochs training of fine_resnet and fine_vgg, cached against uncached (python
    test_models.py in its own process, as users run it, with and without --no-feature-cache, on --frozen-chips
    training chips of the set at --frozen-img-size; each cell's record's train_seconds, which includes
    computing the cached features and leaves out the start-up), and the largest difference of the test
    probabilities the two give. The ideal ratio is epochs / views (5 at 10 epochs with flip); the head's own
    steps pull it below, and the one-time feature pass (under torch.no_grad, about 20 % faster per image on
    the CPU than the training forward) can push it above.
(d) peak memory: the process's resident set (resource.getrusage; the DataLoader workers' separately), after
    each part, and on CUDA torch.cuda.max_memory_allocated per part; the peak resident set of each
    test_models.py process of (c).

Targets on a 2-core CPU (TARGETS): (a) steady-state speedup >= 10x, (c) slowest speedup >= 4x. Times are given
to 4 significant digits, and speedups are the ratios of the times given. --weights none by default: no
download, and the speed does not depend on the weight values. Timings on a shared machine vary
from run to run by 10-30 % (more while other jobs use the CPU); rerun before trusting a small difference.
"""

import argparse
import contextlib
import io
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

import data
import engine
import features
import runs
import sets
from cli import PREP_HINT, HelpFormatter, add_shared, comma_list, int_at_least, run_main
from models import MODEL_CHOICES, MODEL_NAMES, WEIGHT_CHOICES, build_model

TARGETS = {"input_pipeline_speedup": 10.0, "frozen_training_speedup": 4.0}  # targets on a 2-core CPU
FROZEN = ("fine_resnet", "fine_vgg")
PIPELINE_SIZE = 224  # (a) is measured at the study's size
LR = 0.001  # the study's Adam learning rate (test_models.py)
ROOT = Path(__file__).resolve().parent  # the repository folder: dataset_prep.py and test_models.py run there


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Speed of the input pipeline, models and feature cache",
                                     add_help=add_help, formatter_class=HelpFormatter)
    add, positive = parser.add_argument, int_at_least(1)
    add("--data-dir", help="prepared sets to measure on (default: a synthetic set prepared into a temporary "
                           "folder); the set with the most training chips is used (mixed on a tie)")
    add("--synthetic-chips", type=positive, default=100,
        help="--synthetic-chips of dataset_prep.py when no --data-dir is given")
    add("--img-size", type=positive, help="size of (b) (default 224; --quick 32)")
    add("--frozen-img-size", type=positive, help="size of (c) (default: --img-size)")
    add("--epochs", type=positive, help="epochs of (c) (default 10; --quick 2)")
    add("--frozen-chips", type=int_at_least(2),
        help="training chips of (c) (default 32 on the CPU, 512 on CUDA; --quick 8)")
    add("--train-batch", type=int_at_least(2), help="batch of (b) (default 4 on the CPU, 64 on CUDA)")
    add("--train-steps", type=positive,
        help="timed steps of (b) after one warm-up step (default 2 on the CPU, 10 on CUDA; --quick 1)")
    add("--pipeline-epochs", type=positive,
        help="epochs of the plain input pipeline in (a); ours runs ten times as many (default 3; --quick 2)")
    add("--models", type=comma_list(MODEL_CHOICES, what="model"), default=list(MODEL_NAMES),
        help="models of (b), comma-separated")
    add("--weights", default="none", choices=WEIGHT_CHOICES,
        help="start of the VGG/ResNet backbones; none: offline, and the speed does not depend on the weights")
    add_shared(parser, "device")
    add("--quick", action="store_true", help="tiny sizes: seconds, for the test suite")
    add("--json", action="store_true", help="print one JSON object with every result last")
    return parser


def resolve(args, device):
    """Fill the defaults that depend on --quick and the device."""
    cuda = device.type == "cuda"
    defaults = {"img_size": 32 if args.quick else 224, "epochs": 2 if args.quick else 10,
                "frozen_chips": 8 if args.quick else 512 if cuda else 32,
                "train_batch": 4 if args.quick else 64 if cuda else 4,
                "train_steps": 1 if args.quick else 10 if cuda else 2,
                "pipeline_epochs": 2 if args.quick else 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.frozen_img_size = args.frozen_img_size or args.img_size
    return args


# ------------------------------------------------------------------------------------------------------------
# helpers

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def sig(seconds, digits=4):
    """A time rounded to `digits` significant digits: what is reported, and what the ratios are taken of."""
    return float(f"{seconds:.{digits}g}")


def peak_memory(device):
    """Peak resident set of this process so far and, on CUDA, the peak allocated GPU memory since the last
    reset, in MB."""
    out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # ru_maxrss: KB on Linux
    if device.type == "cuda":
        out["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    return {k: round(v, 1) for k, v in out.items()}


def run_script(args, log):
    """python <args> in the repository folder, as a user runs it, with this process's torch thread count; its
    output goes to `log`. Returns its peak resident set in MB: its VmHWM, read while it runs (its ru_maxrss
    would start from this process's resident set, which it had before exec)."""
    cmd, peak = [sys.executable, *args], 0
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())))
        while proc.poll() is None:  # unreaped, the pid is not reused
            with contextlib.suppress(OSError, IndexError, ValueError):  # gone, or exited (no VmHWM)
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))  # KB
            time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed (exit status {proc.returncode}):\n{log.read_text()[-5000:]}")
    return round(peak / 1024, 1)


def pick_set(data_dir):
    """The prepared set with the most training chips (mixed, when both datasets are there)."""
    names = sets.prepared_sets(data_dir)
    if not names:
        raise SystemExit(f"nothing is prepared under {data_dir} (no <set>/{sets.MANIFEST}): {PREP_HINT}; or "
                         "leave out --data-dir to measure on a synthetic set")
    train = {s: sum(row["split"] == "train" for row in sets.read_manifest(Path(data_dir) / s)) for s in names}
    return max(names, key=lambda s: (train[s], s == sets.MIXED))


def subset_set(src, dst, n_train, n_test):
    """A prepared set of n_train training and n_test test chips of `src` (classes in turn), copied to dst."""
    rows = sets.read_manifest(src)
    chosen = []
    for split, n in (("train", n_train), ("test", n_test)):
        by_class = {}
        for row in rows:
            if row["split"] == split:
                by_class.setdefault(row["class"], []).append(row)
        turns = [r for group in zip(*by_class.values()) for r in group]  # classes in turn
        taken = {id(r) for r in turns}
        rest = [r for r in rows if r["split"] == split and id(r) not in taken]
        chosen += (turns + rest)[:n]
    chosen.sort(key=lambda r: r["path"])
    for row in chosen:
        (dst / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / row["path"], dst / row["path"])
    sets.write_manifest(dst / sets.MANIFEST, chosen)
    return dst


# ------------------------------------------------------------------------------------------------------------
# (a) input pipeline

def _gray_loader(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("L")  # one channel, as ours (ImageFolder's default makes RGB)


def plain_pipeline(set_dir, size, epochs, device, batch_size=64):
    """Seconds of each epoch of the ImageFolder + PIL + DataLoader(2 workers) pipeline."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    dataset = datasets.ImageFolder(str(set_dir / "train"), transform=transform, loader=_gray_loader)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2,
                                         pin_memory=device.type == "cuda")
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)
        times.append(time.perf_counter() - start)
    return times, len(dataset)


def our_pipeline(set_dir, size, epochs, device, batch_size=64):
    """(cold first epoch s, warm first epoch s, steady epoch seconds, chips): decoded cache -> Batches with
    flips on the device -> model-ready float tensors."""
    shutil.rmtree(set_dir / data.CACHE_DIR, ignore_errors=True)  # cold: nothing decoded yet

    def first():
        start = time.perf_counter()
        arrays = data.load_split(set_dir, "train", size, num_workers=2)
        images = torch.from_numpy(arrays.images)
        labels = torch.from_numpy(arrays.labels)
        if device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        order, aug = engine.cell_generators(0)
        batches = data.Batches(images, labels, batch_size, shuffle=True, generator=order, augment="flip",
                               aug_generator=aug)
        run_epoch(batches, device)
        return time.perf_counter() - start, batches, arrays

    cold, _, arrays = first()
    warm, batches, again = first()
    if (arrays.cache_status, again.cache_status) != ("built", "reused"):
        raise RuntimeError(f"the decoded cache was {arrays.cache_status}, then {again.cache_status}: "
                           f"expected built, then reused (is {set_dir} writable?)")
    steady = []
    for _ in range(epochs):
        start = time.perf_counter()
        run_epoch(batches, device)
        steady.append(time.perf_counter() - start)
    return cold, warm, steady, len(arrays.labels)


def run_epoch(batches, device):
    for x, _ in batches:
        x = engine.model_input(x, device)  # (B, 1, S, S) float in [0, 1]
    sync(device)


def bench_pipeline(set_dir, epochs, device):
    plain, n = plain_pipeline(set_dir, PIPELINE_SIZE, epochs, device)
    # the largest child so far: the DataLoader workers (or dataset_prep.py, run earlier from a smaller process);
    # a forked worker's resident set includes the pages it shares with this process
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # ours: steady epochs take milliseconds; ten times as many. Medians: a shared machine's hiccups would
    # weigh on a mean
    cold, warm, steady, _ = our_pipeline(set_dir, PIPELINE_SIZE, 10 * epochs, device)
    plain, cold, warm = [sig(t) for t in plain], sig(cold), sig(warm)
    plain_steady = sig(float(np.median(plain[1:]))) if len(plain) > 1 else plain[0]
    ours_steady = sig(float(np.median(steady)))
    return {"chips": n, "img_size": PIPELINE_SIZE, "plain_epochs_s": plain,
            "plain_first_epoch_s": plain[0], "plain_steady_epoch_s": plain_steady,
            "plain_img_s": round(n / plain_steady, 1),
            "ours_first_epoch_cold_s": cold, "ours_first_epoch_warm_s": warm,
            "ours_steady_epoch_s": ours_steady, "ours_img_s": round(n / ours_steady, 1),
            "speedup": round(plain_steady / ours_steady, 1),
            "speedup_first_epoch_cold": round(plain[0] / cold, 2),
            "speedup_first_epoch_warm": round(plain[0] / warm, 2),
            "plain_workers_rss_mb": round(workers_mb, 1),
            "decoded_cache_mb": round(n * PIPELINE_SIZE**2 / 1e6, 1)}


# ------------------------------------------------------------------------------------------------------------
# (b) training images/s

def train_speed(name, images, labels, num_classes, args, device, precision, cached, channels_last=True):
    """Images/s of engine.train_one_epoch over args.train_steps batches of `name` (after one warm-up step);
    with `cached`, of the head on cached features, and the images/s of computing those features."""
    n = args.train_batch * args.train_steps  # the split repeated as needed: every timed step has a full batch
    reps = -(-n // len(labels))
    images, labels = images.repeat(reps, 1, 1)[:n], labels.repeat(reps)[:n]
    engine.seed_everything(0)
    model = build_model(name, num_classes, args.weights)
    cl = device.type == "cuda" and channels_last  # as test_models.py places a model
    model = model.to(device, memory_format=torch.channels_last) if cl else model.to(device)
    optimizer, scaler = engine.make_optimizer(model, LR), precision.scaler()
    criterion, _ = engine.make_criterion("none", labels, num_classes)
    order, aug = engine.cell_generators(0)
    batches = data.Batches(images, labels, args.train_batch, shuffle=True, generator=order, augment="flip",
                           aug_generator=aug)
    out, net = {}, model
    if cached:
        cache = features.FeatureCache(device, precision, args.train_batch, verbose=False)
        start = time.perf_counter()
        net, batches = cache.wrap(model, batches, ("bench", "train"))
        sync(device)
        seconds = time.perf_counter() - start
        info = cache.info[("bench", "train")]
        out["features_img_s"] = round(info["views"] * info["chips"] / seconds, 1)
        out["feature_dtype"] = info["dtype"]
    if not channels_last:  # float32 inputs in the default layout (engine.model_input passes floats through);
        # converted ahead: a gather, flip and cast per batch, microseconds against a ResNet50 step
        batches = [(engine.model_input(x, device).contiguous(), y) for x, y in batches]
    # train_one_epoch's progress bar is not the benchmark's output
    with contextlib.redirect_stderr(io.StringIO()):
        # warm-up: allocations, cuDNN autotuning
        engine.train_one_epoch(net, criterion, optimizer, scaler, [next(iter(batches))], device, precision, "")
        sync(device)
        start = time.perf_counter()
        engine.train_one_epoch(net, criterion, optimizer, scaler, batches, device, precision, "")
        sync(device)
    out["img_s"] = round(args.train_batch * args.train_steps / (time.perf_counter() - start), 1)
    return out


def bench_training(set_dir, args, device, precision):
    arrays = data.load_split(set_dir, "train", args.img_size, num_workers=2)
    images = torch.from_numpy(arrays.images).to(device)
    labels = torch.from_numpy(arrays.labels).to(device)
    k = len(arrays.classes)
    rows = {}
    for name in args.models:
        plain = train_speed(name, images, labels, k, args, device, precision, cached=False)
        row = {"uncached_img_s": plain["img_s"]}
        if name in FROZEN:
            c = train_speed(name, images, labels, k, args, device, precision, cached=True)
            row.update(cached_img_s=c["img_s"], features_img_s=c["features_img_s"],
                       feature_dtype=c["feature_dtype"])
        rows[name] = row
    if device.type == "cuda" and "resnet" in args.models:  # what mixed precision and channels-last buy
        fp32 = engine.Precision("off", device)
        rows["resnet"]["fp32_nchw_img_s"] = train_speed("resnet", images, labels, k, args, device, fp32,
                                                        cached=False, channels_last=False)["img_s"]
    return rows


# ------------------------------------------------------------------------------------------------------------
# (c) frozen-model training: python test_models.py, cached and uncached

def bench_frozen(set_dir, work, args, device):
    small = subset_set(set_dir, work / "frozen" / set_dir.name, args.frozen_chips, max(3, args.frozen_chips // 4))
    flags = ["test_models.py", "--data-dir", str(small.parent), "--datasets", small.name, "--test-sets",
             small.name, "--models", ",".join(FROZEN), "--epochs", str(args.epochs), "--img-size",
             str(args.frozen_img_size), "--weights", args.weights, "--device", device.type, "--num-workers", "2",
             "--seeds", "42", "--bootstrap", "0"]
    found, rss = {}, {}
    for mode, extra in (("cached", []), ("uncached", ["--no-feature-cache"])):
        grid = work / f"frozen_runs_{mode}"
        rss[mode] = run_script([*flags, *extra, "--output-dir", str(grid)], work / f"frozen_runs_{mode}.log")
        # each cell's record, and its test probabilities: a row per chip path, a column per class
        found[mode] = {record["model"]: (record, pd.read_csv(folder / f"predictions_{small.name}.csv")
                                         .set_index("path").filter(like="prob_"))
                       for folder, record in runs.find_records(grid)}
        if sorted(found[mode]) != sorted(FROZEN):
            raise RuntimeError(f"test_models.py wrote records of {sorted(found[mode])} under {grid}, not {FROZEN}")
    out = {}
    for name in FROZEN:
        (rc, pc), (ru, pu) = found["cached"][name], found["uncached"][name]
        if not (pc.index.equals(pu.index) and pc.columns.equals(pu.columns)):
            raise RuntimeError(f"the cached and uncached runs of {name} predicted different chips or classes")
        out[name] = {"cached_s": rc["train_seconds"], "uncached_s": ru["train_seconds"],
                     "speedup": round(ru["train_seconds"] / rc["train_seconds"], 2),
                     "feature_cache": rc["feature_cache"],
                     "max_test_prob_diff": float(np.abs(pc.to_numpy() - pu.to_numpy()).max())}
    out.update(chips=args.frozen_chips, epochs=args.epochs, img_size=args.frozen_img_size, process_rss_mb=rss)
    return out


# ------------------------------------------------------------------------------------------------------------
# main

def table_ab(result):
    a, b = result["input_pipeline"], result["training"]
    target = result["targets"]["input_pipeline_speedup"]["target"]
    out = [f"(a) input pipeline, {a['chips']} training chips at {a['img_size']} px, batch 64, flip, to float "
           "tensors on the device",
           f"    {'pipeline':<50} {'first epoch s':>13} {'steady epoch s':>14} {'images/s':>9}",
           f"    {'plain: ImageFolder, PIL, Resize, ToTensor, 2 workers':<50} {a['plain_first_epoch_s']:>13.3f} "
           f"{a['plain_steady_epoch_s']:>14.4f} {a['plain_img_s']:>9.0f}",
           f"    {'ours: decoded cache, cold (decode + write)':<50} {a['ours_first_epoch_cold_s']:>13.3f} "
           f"{a['ours_steady_epoch_s']:>14.4f} {a['ours_img_s']:>9.0f}",
           f"    {'ours: decoded cache, warm (read back)':<50} {a['ours_first_epoch_warm_s']:>13.3f}",
           f"    steady-state speedup {a['speedup']:.0f}x (target >= {target:.0f}x); first epoch "
           f"{a['speedup_first_epoch_cold']:.1f}x cold, {a['speedup_first_epoch_warm']:.1f}x warm", "",
           f"(b) training images/s at {result['img_size']} px, batch {result['train_batch']}, precision "
           f"{result['precision']}; cached: the head on cached features; features: the one-time backbone pass",
           f"    {'model':<12} {'uncached':>10} {'cached':>10} {'features':>10}"]
    for name, row in b.items():
        cached = f"{row['cached_img_s']:>10.1f}" if "cached_img_s" in row else f"{'-':>10}"
        feats = f"{row['features_img_s']:>10.1f}" if "features_img_s" in row else f"{'-':>10}"
        out.append(f"    {name:<12} {row['uncached_img_s']:>10.1f} {cached} {feats}")
        if "fp32_nchw_img_s" in row:
            out.append(f"    {'resnet fp32':<12} {row['fp32_nchw_img_s']:>10.1f}  (float32, default layout; "
                       "the row above: mixed precision, channels-last)")
    return out


def table_cd(result):
    a, c, mem = result["input_pipeline"], result["frozen_training"], result["memory"]
    out = [f"(c) {c['epochs']}-epoch training, {c['chips']} chips at {c['img_size']} px (python test_models.py; "
           "the record's training time, which includes computing the cached features)",
           f"    {'model':<12} {'cached s':>9} {'uncached s':>10} {'speedup':>8}  {'features':<9} "
           f"{'fp16 logit err':>14} {'max test prob diff':>18}"]
    for name in FROZEN:
        r = c[name]
        fc = r["feature_cache"] or {}
        err = "-" if fc.get("fp16_logit_error") is None else f"{fc['fp16_logit_error']:.1e}"
        out.append(f"    {name:<12} {r['cached_s']:>9.2f} {r['uncached_s']:>10.2f} {r['speedup']:>7.2f}x  "
                   f"{fc.get('dtype', '-'):<9} {err:>14} {r['max_test_prob_diff']:>18.1e}")
    out += [f"    slowest speedup {result['frozen_training_speedup']:.2f}x "
            f"(target >= {result['targets']['frozen_training_speedup']['target']:.0f}x)", "",
            "(d) peak memory in MB: this process's resident set, high-water mark so far (resource.getrusage)"
            + (", and CUDA memory allocated during the part" if "cuda_mb" in mem["start"] else "")]
    for part, m in mem.items():
        cuda = f"   cuda {m['cuda_mb']:>8.0f}" if "cuda_mb" in m else ""
        out.append(f"    after {part:<16} rss {m['rss_mb']:>8.0f}{cuda}")
    out += [f"    test_models.py processes of (c): rss {c['process_rss_mb']['cached']:.0f} cached, "
            f"{c['process_rss_mb']['uncached']:.0f} uncached",
            f"    plain pipeline's DataLoader workers: rss {a['plain_workers_rss_mb']:.0f} (largest, shared "
            f"pages included); decoded cache of (a): {a['decoded_cache_mb']:.1f}; cached features of (c): "
            + ", ".join(f"{m} {(c[m]['feature_cache'] or {}).get('mb', 0):.1f}" for m in FROZEN)]
    return out


def table(result):
    """The report, from the result alone (the --json object holds everything it prints)."""
    head = (f"device {result['device']}, {result['torch_threads']} CPU threads, torch {result['torch_version']}, "
            f"weights {result['weights']} (speed does not depend on the weight values); data: {result['data']}")
    return "\n".join([head, "", *table_ab(result), "", *table_cd(result)])


def measure(args, device, precision):
    """(data description, set name, {part: result}, {part: peak memory}, {part: seconds}) of parts (a)-(c)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        if args.data_dir is None:
            print(f"preparing a synthetic set (dataset_prep.py --synthetic --synthetic-chips "
                  f"{args.synthetic_chips}) in {work} ...", flush=True)
            data_dir = work / "prepared"
            run_script(["dataset_prep.py", "--synthetic", "--synthetic-chips", str(args.synthetic_chips),
                        "--raw-dir", str(work / "raw"), "--output-dir", str(data_dir)], work / "dataset_prep.log")
            source = f"synthetic, --synthetic-chips {args.synthetic_chips}"
        else:
            data_dir = Path(args.data_dir)
            source = str(data_dir)
        name = pick_set(data_dir)
        # a copy: (a) deletes and rebuilds the decoded cache, which must not touch the caller's data
        set_dir = subset_set(data_dir / name, work / "bench_set" / name, 10**9, 10**9)
        memory, seconds, results = {"start": peak_memory(device)}, {}, {}
        parts = (("input pipeline", f"(a) input pipeline on {name}/train",
                  lambda: bench_pipeline(set_dir, args.pipeline_epochs, device)),
                 ("training", f"(b) training images/s at {args.img_size} px",
                  lambda: bench_training(set_dir, args, device, precision)),
                 ("frozen training", f"(c) {args.epochs}-epoch frozen-model training, cached and uncached",
                  lambda: bench_frozen(set_dir, work, args, device)))
        for part, title, run in parts:
            print(f"{title} ...", flush=True)
            start = time.perf_counter()
            results[part] = run()
            seconds[part] = round(time.perf_counter() - start, 1)
            memory[part] = peak_memory(device)
    return source, name, results, memory, seconds


def main(args):
    device = engine.resolve_device(args.device)
    args = resolve(args, device)
    precision = engine.Precision("auto", device)  # as test_models.py trains: mixed precision on CUDA only
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    source, name, results, memory, seconds = measure(args, device, precision)
    pipeline, training, frozen = results["input pipeline"], results["training"], results["frozen training"]
    result = {
        "device": engine.environment(device)["device"], "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "weights": args.weights, "data": f"{source}, set {name}",
        "img_size": args.img_size, "train_batch": args.train_batch, "precision": precision.describe(),
        "input_pipeline_speedup": pipeline["speedup"],
        "frozen_training_speedup": min(frozen[m]["speedup"] for m in FROZEN),
        "input_pipeline": pipeline, "training": training, "frozen_training": frozen, "memory": memory,
        "seconds": round(time.perf_counter() - started, 1), "part_seconds": seconds,
    }
    result["targets"] = {k: {"target": v, "met": result[k] >= v} for k, v in TARGETS.items()}
    if device.type == "cuda" and "resnet" in training:
        result["cuda_resnet50_train_img_s"] = training["resnet"]["uncached_img_s"]
    print()
    print(table(result))
    print(f"\nbench took {result['seconds']:.0f} s ("
          + ", ".join(f"{part} {s:.0f} s" for part, s in seconds.items()) + ")")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_main("bench.py", lambda: main(get_args_parser().parse_args()),
                   kept="the tables printed so far are complete")
