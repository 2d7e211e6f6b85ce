"""How fast each stage of the grid is, against the plain ImageFolder-and-PIL approach, in one run.

    python bench.py                         # synthetic data, CPU or GPU; about 5 min on a 2-core laptop CPU
    python bench.py --json                  # the same, and one JSON object as the last line of output
    python bench.py --data-dir data/prepared --img-size 128   # on prepared sets, another size
    python bench.py --quick                 # tiny sizes, about 20 s (the test suite runs it)

Without --data-dir it prepares a small synthetic set first (python dataset_prep.py --synthetic
--synthetic-chips N into a temporary folder) and measures on its largest training split (mixed). It reports:
(a) input pipeline, images/s at 224 px: the plain approach (torchvision ImageFolder, PIL decode, Resize 224,
    RandomHorizontalFlip, ToTensor, DataLoader with 2 workers), which decodes every PNG in every epoch,
    against this project's (data.load_split's decoded cache, data.Batches with batched flips on the device,
    test_models.model_input: model-ready float tensors). Steady-state epochs, and the first epoch apart: the
    plain approach's first epoch is like the others; ours decodes once and writes the cache (cold), or reads
    it back (warm: every later cell and run).
(b) training images/s of each model at --img-size (forward, backward, Adam step; batch --train-batch), the
    frozen models also with cached features (steady state: the head alone; the one-time feature pass is given
    as its own images/s). On CUDA: mixed precision (bfloat16 where supported) and channels-last, as
    test_models.py trains, and ResNet50 once more in float32 and the default layout for comparison.
(c) wall time of a --epochs training of fine_resnet and fine_vgg, cached against uncached (test_models.main
    with and without --no-feature-cache, on --frozen-chips training chips of the set at --frozen-img-size;
    the training time of the cell's record, which includes computing the cached features), and the largest
    difference of the test probabilities the two give. The ideal ratio is epochs / views (5 at 10 epochs with
    flip); the head's own steps pull it below, and the one-time feature pass (under torch.no_grad, about 20 %
    faster per image on the CPU than the training forward) can push it above.
(d) peak memory: the process's resident set (resource.getrusage; the DataLoader workers' separately), after
    each part, and on CUDA torch.cuda.max_memory_allocated per part.

--weights none by default: no download, and the speed does not depend on the weight values. Timings on a
shared machine vary from run to run by 10-30 % (more while other jobs use the CPU); rerun before trusting a
small difference.
"""

import argparse
import contextlib
import io
import json
import resource
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
import features
import test_models as tm
from models import MODEL_NAMES, WEIGHT_CHOICES, build_model

TARGETS = {"input_pipeline_speedup": 10.0, "frozen_training_speedup": 4.0}  # targets on a 2-core CPU
FROZEN = ("fine_resnet", "fine_vgg")
PIPELINE_SIZE = 224  # (a) is measured at the study's size


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Speed of the input pipeline, models and feature cache",
                                     add_help=add_help,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="prepared sets to measure on (default: a synthetic set prepared into a "
                             "temporary folder); the largest training split is used (mixed if present)")
    parser.add_argument("--synthetic-chips", type=int, default=100,
                        help="--synthetic-chips for dataset_prep.py when no --data-dir is given")
    parser.add_argument("--img-size", type=int, default=None, help="size of (b) (default 224; --quick 32)")
    parser.add_argument("--frozen-img-size", type=int, default=None, help="size of (c) (default: --img-size)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of (c) (default 10; --quick 2)")
    parser.add_argument("--frozen-chips", type=int, default=None,
                        help="training chips of (c) (default 32 on the CPU, 512 on CUDA; --quick 8)")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="batch of (b) (default 4 on the CPU, 64 on CUDA)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="timed steps of (b) after one warm-up step (default 2 on the CPU, 10 on CUDA)")
    parser.add_argument("--pipeline-epochs", type=int, default=None,
                        help="epochs of each input pipeline in (a) (default 3; --quick 2)")
    parser.add_argument("--models", type=tm._comma_list(MODEL_NAMES), default=list(MODEL_NAMES),
                        help="models of (b)")
    parser.add_argument("--weights", default="none", choices=WEIGHT_CHOICES,
                        help="none: offline, and the speed does not depend on the weight values")
    parser.add_argument("--device", default="auto", choices=tm.DEVICE_CHOICES)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for the test suite")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every result last")
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
    if args.frozen_img_size is None:
        args.frozen_img_size = args.img_size
    return args


# ------------------------------------------------------------------------------------------------------------
# helpers

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(device):
    """Peak resident set of this process so far and, on CUDA, the peak allocated GPU memory since the last
    reset, in MB."""
    out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # ru_maxrss: KB on Linux
    if device.type == "cuda":
        out["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    return {k: round(v, 1) for k, v in out.items()}


def prepare_synthetic(work, chips):
    """python dataset_prep.py --synthetic into `work`; returns the prepared folder."""
    out = work / "prepared"
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "dataset_prep.py"), "--synthetic",
           "--synthetic-chips", str(chips), "--raw-dir", str(work / "raw"), "--output-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"preparing the synthetic set failed ({' '.join(cmd)}):\n{done.stdout}{done.stderr}")
    return out


def pick_set(data_dir):
    """The prepared set with the most training chips (mixed, when both datasets are there)."""
    sizes = {}
    for manifest in Path(data_dir).glob("*/manifest.csv"):
        rows = data.read_manifest(manifest.parent)
        sizes[manifest.parent.name] = sum(row["split"] == "train" for row in rows)
    if not sizes:
        raise SystemExit(f"nothing is prepared under {data_dir} (no <set>/manifest.csv): run python "
                         "dataset_prep.py, or leave out --data-dir to measure on a synthetic set")
    return max(sizes, key=lambda s: (sizes[s], s == "mixed"))


def subset_set(src, dst, n_train, n_test):
    """A prepared set of n_train training and n_test test chips of `src` (classes in turn), copied to dst."""
    rows = data.read_manifest(src)
    chosen = []
    for split, n in (("train", n_train), ("test", n_test)):
        by_class = {}
        for row in rows:
            if row["split"] == split:
                by_class.setdefault(row["class"], []).append(row)
        turns = [r for group in zip(*by_class.values()) for r in group]  # classes in turn
        rest = [r for r in rows if r["split"] == split and r not in turns]
        chosen += (turns + rest)[:n]
    chosen.sort(key=lambda r: r["path"])
    for row in chosen:
        (dst / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / row["path"], dst / row["path"])
    pd.DataFrame(chosen, columns=list(rows[0])).to_csv(dst / "manifest.csv", index=False, lineterminator="\n")
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
        batches = data.Batches(images, labels, batch_size, shuffle=True,
                               generator=torch.Generator().manual_seed(0), augment="flip",
                               aug_generator=torch.Generator().manual_seed(1))
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
    for x, y in batches:
        x = tm.model_input(x, device)  # (B, 1, S, S) float in [0, 1]
    sync(device)


def bench_pipeline(set_dir, epochs, device):
    plain, n = plain_pipeline(set_dir, PIPELINE_SIZE, epochs, device)
    # the DataLoader workers are the only children so far (later ones, e.g. platform's uname, would be
    # counted too); a forked worker's resident set includes the pages it shares with this process
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # ours: steady epochs take milliseconds; ten times as many. Medians: a shared machine's hiccups would
    # weigh on a mean
    cold, warm, steady, _ = our_pipeline(set_dir, PIPELINE_SIZE, 10 * epochs, device)
    plain_steady = float(np.median(plain[1:])) if len(plain) > 1 else plain[0]
    ours_steady = float(np.median(steady))
    return {"chips": n, "img_size": PIPELINE_SIZE, "plain_epochs_s": [round(t, 4) for t in plain],
            "plain_first_epoch_s": round(plain[0], 4), "plain_img_s": round(n / plain_steady, 1),
            "ours_first_epoch_cold_s": round(cold, 4), "ours_first_epoch_warm_s": round(warm, 4),
            "ours_steady_epoch_s": round(ours_steady, 5), "ours_img_s": round(n / ours_steady, 1),
            "speedup": round(plain_steady / ours_steady, 1),
            "speedup_first_epoch_cold": round(plain[0] / cold, 2),
            "speedup_first_epoch_warm": round(plain[0] / warm, 2),
            "plain_workers_rss_mb": round(workers_mb, 1),
            "decoded_cache_mb": round(n * PIPELINE_SIZE**2 / 1e6, 1)}


# ------------------------------------------------------------------------------------------------------------
# (b) training images/s

def tiled(images, labels, n):
    """n chips (the split repeated as needed) so every timed step has a full batch."""
    reps = -(-n // len(labels))
    return images.repeat(reps, 1, 1)[:n], labels.repeat(reps)[:n]


def train_speed(name, images, labels, args, device, precision, cached, channels_last=True):
    """Images/s of training steps of `name` (after one warm-up step); with `cached`, of the head on cached
    features, and the images/s of computing those features."""
    n = args.train_batch * (args.train_steps + 1)
    images, labels = tiled(images, labels, n)
    torch.manual_seed(0)
    model = build_model(name, 3, args.weights)
    if device.type == "cuda" and channels_last:
        model = model.to(device, memory_format=torch.channels_last)
    else:
        model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    scaler = precision.scaler()
    criterion = torch.nn.CrossEntropyLoss()
    batches = data.Batches(images, labels, args.train_batch, shuffle=True,
                           generator=torch.Generator().manual_seed(0), augment="flip",
                           aug_generator=torch.Generator().manual_seed(1))
    out = {}
    net = model
    if cached:
        cache = features.FeatureCache(device, precision, args.train_batch, verbose=False)
        start = time.perf_counter()
        net, batches = cache.wrap(model, batches, ("bench", "train"))
        sync(device)
        out["features_img_s"] = round(data.NUM_VIEWS["flip"] * n / (time.perf_counter() - start), 1)
        out["feature_dtype"] = cache.info[("bench", "train")]["dtype"]
    net.train()
    start = None
    for step, (x, y) in enumerate(batches):
        if step == 1:
            sync(device)
            start = time.perf_counter()  # after the warm-up step (allocations, cuDNN autotuning)
        # model_input: channels-last on CUDA as test_models.py trains (cached features pass through)
        x = tm.model_input(x, device) if channels_last else data.to_model_input(x)
        with precision.autocast():
            logits = net(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    sync(device)
    out["img_s"] = round(args.train_batch * args.train_steps / (time.perf_counter() - start), 1)
    return out


def bench_training(set_dir, args, device, precision):
    arrays = data.load_split(set_dir, "train", args.img_size, num_workers=2)
    images = torch.from_numpy(arrays.images).to(device)
    labels = torch.from_numpy(arrays.labels).to(device)
    rows = {}
    for name in args.models:
        plain = train_speed(name, images, labels, args, device, precision, cached=False)
        row = {"uncached_img_s": plain["img_s"]}
        if name in FROZEN:
            c = train_speed(name, images, labels, args, device, precision, cached=True)
            row.update(cached_img_s=c["img_s"], features_img_s=c["features_img_s"],
                       feature_dtype=c["feature_dtype"])
        rows[name] = row
    if device.type == "cuda" and "resnet" in args.models:  # what mixed precision and channels-last buy
        fp32 = tm.Precision("off", device)
        rows["resnet"]["fp32_nchw_img_s"] = train_speed("resnet", images, labels, args, device, fp32,
                                                        cached=False, channels_last=False)["img_s"]
    return rows


# ------------------------------------------------------------------------------------------------------------
# (c) frozen-model training through test_models.main

def bench_frozen(set_dir, work, args, device):
    n_test = max(3, args.frozen_chips // 4)
    small = subset_set(set_dir, work / "frozen" / set_dir.name, args.frozen_chips, n_test)
    out = {}
    for name in FROZEN:
        runs = {}
        for cached in (True, False):
            output = work / f"frozen_runs_{'cached' if cached else 'uncached'}"
            flags = ["--data-dir", str(small.parent), "--output-dir", str(output), "--datasets", small.name,
                     "--test-sets", small.name, "--models", name, "--epochs", str(args.epochs),
                     "--img-size", str(args.frozen_img_size), "--weights", args.weights,
                     "--device", device.type, "--num-workers", "2", "--force"]
            if not cached:
                flags.append("--no-feature-cache")
            # the grid's own output (progress bars, tables, report) is not the benchmark's
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                tm.main(tm.get_args_parser().parse_args(flags))
            cell = output / "runs" / small.name / name / "none" / "seed42"
            record = json.loads((cell / "record.json").read_text())
            probs = pd.read_csv(cell / f"predictions_{small.name}.csv").filter(like="prob_").to_numpy()
            runs[cached] = (record, probs)
        (rc, pc), (ru, pu) = runs[True], runs[False]
        out[name] = {"cached_s": rc["train_seconds"], "uncached_s": ru["train_seconds"],
                     "speedup": round(ru["train_seconds"] / rc["train_seconds"], 2),
                     "feature_cache": rc["feature_cache"],
                     "max_test_prob_diff": float(np.abs(pc - pu).max())}
    out["chips"] = args.frozen_chips
    out["epochs"] = args.epochs
    out["img_size"] = args.frozen_img_size
    return out


# ------------------------------------------------------------------------------------------------------------
# main

def table(result):
    a, b, c, mem = result["input_pipeline"], result["training"], result["frozen_training"], result["memory"]
    out = []
    add = out.append
    add(f"device {result['device']}, {result['torch_threads']} CPU threads, torch {result['torch_version']}, "
        f"weights {result['weights']} (speed does not depend on the weight values); data: {result['data']}")
    add("")
    add(f"(a) input pipeline, {a['chips']} training chips at {a['img_size']} px, batch 64, flip, to float "
        "tensors on the device")
    add(f"    {'pipeline':<50} {'first epoch s':>13} {'steady epoch s':>14} {'images/s':>9}")
    add(f"    {'plain: ImageFolder, PIL, Resize, ToTensor, 2 workers':<50} {a['plain_first_epoch_s']:>13.3f} "
        f"{a['chips'] / a['plain_img_s']:>14.4f} {a['plain_img_s']:>9.0f}")
    add(f"    {'ours: decoded cache, cold (decode + write)':<50} {a['ours_first_epoch_cold_s']:>13.3f} "
        f"{a['ours_steady_epoch_s']:>14.4f} {a['ours_img_s']:>9.0f}")
    add(f"    {'ours: decoded cache, warm (read back)':<50} {a['ours_first_epoch_warm_s']:>13.3f}")
    add(f"    steady-state speedup {a['speedup']:.0f}x (target >= {TARGETS['input_pipeline_speedup']:.0f}x); "
        f"first epoch {a['speedup_first_epoch_cold']:.1f}x cold, {a['speedup_first_epoch_warm']:.1f}x warm")
    add("")
    add(f"(b) training images/s at {result['img_size']} px, batch {result['train_batch']}, "
        f"precision {result['precision']}; cached: the head on cached features; features: the one-time "
        "backbone pass")
    add(f"    {'model':<12} {'uncached':>10} {'cached':>10} {'features':>10}")
    for name, row in b.items():
        cached = f"{row['cached_img_s']:>10.1f}" if "cached_img_s" in row else f"{'-':>10}"
        feats = f"{row['features_img_s']:>10.1f}" if "features_img_s" in row else f"{'-':>10}"
        add(f"    {name:<12} {row['uncached_img_s']:>10.1f} {cached} {feats}")
        if "fp32_nchw_img_s" in row:
            add(f"    {'resnet fp32':<12} {row['fp32_nchw_img_s']:>10.1f}  (float32, default layout; the row "
                "above: mixed precision, channels-last)")
    add("")
    add(f"(c) {c['epochs']}-epoch training, {c['chips']} chips at {c['img_size']} px (test_models.main; the "
        "record's training time, which includes computing the cached features)")
    add(f"    {'model':<12} {'cached s':>9} {'uncached s':>10} {'speedup':>8}  {'features':<9} "
        f"{'fp16 logit err':>14} {'max test prob diff':>18}")
    for name in FROZEN:
        r = c[name]
        fc = r["feature_cache"] or {}
        err = fc.get("fp16_logit_error")
        err = "-" if err is None else f"{err:.1e}"
        add(f"    {name:<12} {r['cached_s']:>9.2f} {r['uncached_s']:>10.2f} {r['speedup']:>7.2f}x  "
            f"{fc.get('dtype', '-'):<9} {err:>14} {r['max_test_prob_diff']:>18.1e}")
    add(f"    slowest speedup {result['frozen_training_speedup']:.2f}x "
        f"(target >= {TARGETS['frozen_training_speedup']:.0f}x)")
    add("")
    add("(d) peak memory in MB: this process's resident set, high-water mark so far (resource.getrusage)"
        + (", and CUDA memory allocated during the part" if "cuda_mb" in mem["start"] else ""))
    for part, m in mem.items():
        cuda = f"   cuda {m['cuda_mb']:>8.0f}" if "cuda_mb" in m else ""
        add(f"    after {part:<16} rss {m['rss_mb']:>8.0f}{cuda}")
    add(f"    plain pipeline's DataLoader workers: rss {a['plain_workers_rss_mb']:.0f} (largest, shared "
        f"pages included); decoded cache of (a): {a['decoded_cache_mb']:.1f}; cached features of (c): "
        + ", ".join(f"{m} {(c[m]['feature_cache'] or {}).get('mb', 0):.1f}" for m in FROZEN))
    return "\n".join(out)


def main(args):
    device = tm.resolve_device(args.device)
    args = resolve(args, device)
    precision = tm.Precision("auto", device)  # as test_models.py trains: mixed precision on CUDA only
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        if args.data_dir is None:
            print(f"preparing a synthetic set (dataset_prep.py --synthetic --synthetic-chips "
                  f"{args.synthetic_chips}) in {work} ...", flush=True)
            data_dir = prepare_synthetic(work, args.synthetic_chips)
            source = f"synthetic, --synthetic-chips {args.synthetic_chips}"
        else:
            data_dir = Path(args.data_dir)
            source = str(data_dir)
        name = pick_set(data_dir)
        # a copy: (a) deletes and rebuilds the decoded cache, which must not touch the caller's data
        set_dir = work / "bench_set" / name
        subset_set(data_dir / name, set_dir, 10**9, 10**9)
        memory, seconds = {"start": peak_memory(device)}, {}
        parts = (("input pipeline", f"(a) input pipeline on {name}/train",
                  lambda: bench_pipeline(set_dir, args.pipeline_epochs, device)),
                 ("training", f"(b) training images/s at {args.img_size} px",
                  lambda: bench_training(set_dir, args, device, precision)),
                 ("frozen training", f"(c) {args.epochs}-epoch frozen-model training, cached and uncached",
                  lambda: bench_frozen(set_dir, work, args, device)))
        results = {}
        for part, title, measure in parts:
            print(f"{title} ...", flush=True)
            start = time.perf_counter()
            results[part] = measure()
            seconds[part] = round(time.perf_counter() - start, 1)
            memory[part] = peak_memory(device)
    pipeline, training, frozen = results["input pipeline"], results["training"], results["frozen training"]
    result = {
        "device": tm.environment(device)["device"], "torch_version": torch.__version__,
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
    main(get_args_parser().parse_args())
