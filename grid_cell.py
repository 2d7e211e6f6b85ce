"""One cell of the grid: a fresh model trained on its training split, evaluated on every test set, and a finished
cell completed with test sets its record lacks (test_models.py runs the grid; runs.py owns the layout).

    record = grid_cell.run_cell(cell, args, test_sets, cache, manifests, device, precision, env)

A cell is runs.Cell (train_set, model, imbalance, inputs, lr, seed). Its splits come from the data.SplitCache of its
input variant (inputs.py: the study's whole-chip resize, or physical scale and radiometry); every test set is seen
through the same variant. Under torchrun every rank runs the same code on its share of each batch and rank 0 alone
writes (distributed.py). Between FUSAR-Ship and OpenSARShip the label-free test-time adaptations are evaluated
too (adaptation.py), each written as its own predictions file.
"""

import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import adaptation
import curves
import data
import distributed
import engine
import grid_checks
import inputs
import resume
import runs
import sets
import tables
from models import CheckpointError, build_model, checkpoint, load_trained, state_sha1
from pretrained import WeightsUnavailableError, resolve_weights

# Everything but these args is part of a cell's identity (tables.TRAIN_SETTINGS decides what must match).
NOT_CELL_ARGS = ("force", "aggregate_only", "shard", "bootstrap", "checkpoint_every", "lease_timeout",
                 "m_per_px", "match_resolution", "radiometry",  # the cell's `inputs` says what these did
                 "tensorboard")


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


def evaluate_sets(model, folder, title, test_sets, classes, cache, args, device, precision, cell, train_labels):
    """Evaluate on every test set, rank 0 writing its files into `folder`: {name: {n, metrics, degenerate,
    top_share[, adaptation]}}, the same on every rank. Between FUSAR-Ship and OpenSARShip (adaptation.applies) the
    label-free adaptations too: `adaptation` {variant: {n, metrics, degenerate, top_share, ...}}, each with its own
    predictions_<test_set>.<variant>.csv."""
    results = {}
    for name in test_sets:
        probs = split_probs(model, cache, name, "test", args, device, precision)
        variants = {"none": (probs, {})}
        if adaptation.applies(cell.train_set, name):
            variants.update(adapted_probs(model, probs, cache, name, args, device, precision, cell, train_labels))
        if distributed.is_main():
            arrays = cache.get(name, "test")[0]
            for variant, (p, info) in variants.items():
                if p is None:  # adabn of a model without batch norm: nothing to adapt, the reason kept
                    results[name].setdefault("adaptation", {})[variant] = info
                    continue
                row = tables.write_test_results(folder, title, name, classes, arrays.paths, arrays.labels, p,
                                                variant)
                flag, share = tables.degenerate(np.asarray(classes)[p.argmax(1)], classes)
                result = {"n": row["n"], "metrics": row, "degenerate": flag, "top_share": share, **info}
                if variant == "none":
                    results[name] = {**result, "left_out": len(arrays.left_out)} if arrays.left_out else result
                else:
                    results[name].setdefault("adaptation", {})[variant] = result
    return distributed.broadcast(results)


def adapted_probs(model, probs, cache, name, args, device, precision, cell, train_labels):
    """{variant: (probabilities on rank 0 or None, info)} of the label-free adaptations (adaptation.py) of `model`
    to the test split of `name`: prior (EM on the saved probabilities, from the prior the cell trained under) and
    adabn (every batch-norm layer's statistics re-estimated on the test images, through the whole model: the
    frozen backbone's cached features do not hold for its new statistics)."""
    out = {}
    if distributed.is_main():
        start = adaptation.train_prior(train_labels, probs.shape[1], cell.imbalance)
        adjusted, prior, iterations = adaptation.em_prior(probs, start)
        out["prior"] = (adjusted, {"train_prior": [round(float(v), 6) for v in start],
                                   "estimated_prior": [round(float(v), 6) for v in prior], "iterations": iterations})
    _, images, labels = cache.get(name, "test")
    adapted, n_layers = adaptation.adabn(model, in_order(images, labels, args), device, precision)
    if not n_layers:
        out["adabn"] = (None, {"note": f"{cell.model} has no batch-norm layers: adabn does not apply"})
        return out
    part, world = distributed.rank_slice(), distributed.world_size()
    batches = data.Batches(images[part], labels[part], args.batch_size // world)
    p = distributed.gather_rows(engine.evaluate(adapted, batches, device, precision), len(labels))
    out["adabn"] = (p, {"bn_layers": n_layers})
    return out


def training_batches(cell, arrays, images, labels, args):
    """The cell's shuffled, augmented training batches (this rank's share under torchrun)."""
    train_set, imbalance, seed = cell.train_set, cell.imbalance, cell.seed
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
    train_set = cell.train_set
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
    checkpoint (resume.py); the kept epoch's weights are loaded at the end. --tensorboard DIR: each epoch's
    scalars to DIR/<cell name> (curves.EpochLog), from rank 0.
    Returns (history, seconds, class weights, selection)."""
    train_set, imbalance, lr = cell.train_set, cell.imbalance, cell.lr
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
    log_dir = args.tensorboard if distributed.is_main() else None
    with curves.EpochLog(log_dir, runs.cell_name(cell)) as log:
        for epoch in progress.epochs(args.epochs):  # saved every --checkpoint-every s, restored after a kill
            loss, acc = engine.train_one_epoch(net, criterion, optimizer, scaler, batches, device, precision,
                                               f"{runs.cell_name(cell)} epoch {epoch}/{args.epochs}")
            engine.recalibrate_bn(model, layers, in_order(images, labels, args), device, precision)
            history.append({"epoch": epoch, "loss": round(loss, 6), "accuracy": round(acc, 2),
                            **epoch_checks(model, cell, cache, args, device, precision, has_val)})
            log.add(history[-1])
            if selection.update(epoch, model, history[-1]["val"]["f1_macro"] if has_val else None):
                break
        log.kept(selection.epoch, history[-1]["epoch"])
    selection.restore(model)
    if not layers:
        distributed.broadcast_buffers(model)  # every rank evaluates the model rank 0 saves (batch-norm stats)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return history, progress.seconds(), weights, selection


def fresh_model(cell, classes, images, labels, args, device, precision):
    """The cell's model, built right after seeding (the cell depends on nothing that ran before it); a frozen
    backbone with random weights gets batch-norm statistics from one pass over the training split (its default
    statistics, 0 and 1, make a random ResNet's activations blow up). Returns (model, init sha1, note, the weights
    it got: --weights auto resolved)."""
    engine.seed_everything(cell.seed)
    weights = resolve_weights(cell.model, args.weights)  # --weights auto: what this model actually gets
    # the chips' channels: 1, or 2 for a stacked (co, cross) set, whose images are (N, 2, S, S)
    model = build_model(cell.model, len(classes), weights, in_channels=images.shape[1] if images.dim() == 4 else 1)
    init_sha1 = state_sha1(model)
    # channels-last on CUDA: the layout tensor cores want; on the CPU the default layout
    model = model.to(device, memory_format=torch.channels_last) if device.type == "cuda" else model.to(device)
    layers = engine.bn_layers(model.backbone, trainable_only=False) \
        if model.frozen_backbone and weights == "none" else []
    engine.recalibrate_bn(model.backbone, layers, in_order(images, labels, args), device, precision)
    note = f"statistics of the {len(layers)} batch-norm layers of the random frozen backbone from one pass over " \
        "the training split" if layers else None
    return model, init_sha1, note, weights


def input_variant(cell, cache, test_sets):
    """What the record keeps of the cell's inputs: the variant (inputs.py) and, per set and split, how many chips it
    left out for each reason (an SLC chip without an incidence angle, a chip without pixel spacing)."""
    spec = inputs.Inputs.parse(cell.inputs)
    splits = [(cell.train_set, "train"), *((t, "test") for t in test_sets)]
    left_out = {f"{s}/{split}": dict(Counter(reason for _, reason in cache.get(s, split)[0].left_out))
                for s, split in splits}
    return {"name": spec.name, "m_per_px": spec.m_per_px, "match_resolution": spec.match,
            "radiometry": spec.radiometry, "left_out": {k: n for k, n in left_out.items() if n}}


def run_cell(cell, args, test_sets, cache, manifests, device, precision, env):
    """Train one cell under its lease in its working folder, from the last epoch an interrupted run finished
    (resume.CellWork; leases.Held: another run has it), and publish its record folder; returns the record."""
    train_set, model_name, imbalance, inputs, lr, seed = cell
    with resume.CellWork(cell, args, manifests[train_set], device) as work:  # under torchrun rank 0 alone writes
        arrays, images, labels = cache.get(train_set, "train")
        classes, has_val = arrays.classes, sets.has_split(Path(args.data_dir) / train_set, "val")
        model, init_sha1, frozen_note, weights_got = fresh_model(cell, classes, images, labels, args, device,
                                                                 precision)
        history, train_seconds, weights, selection = train_cell(cell, model, arrays, images, labels, cache, args,
                                                                device, precision, has_val, work)
        a = runs.cell_args(args, cell, test_sets, NOT_CELL_ARGS)
        if distributed.rank() == 0:  # `model` is the module inside DDP: no "module." prefix
            torch.save(checkpoint(model, model_name, classes, args.img_size, weights_got, seed, a),
                       work.dir / runs.CHECKPOINT)
        start = time.perf_counter()
        results = evaluate_sets(model, work.dir, runs.cell_name(cell), test_sets, classes, cache, args, device,
                                precision, cell, arrays.labels)
        record = {
            "train_set": train_set, "model": model_name, "imbalance": imbalance, "inputs": inputs, "lr": lr,
            "seed": seed, "weights": weights_got, "input_variant": input_variant(cell, cache, test_sets),
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
        if distributed.is_main():  # inside the working folder: published with the cell, never without it
            curves.write_cell(work.dir, record)
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
        train_labels = cache.get(cell.train_set, "train")[0].labels  # the prior the cell trained under
        results = evaluate_sets(model, tmp, runs.cell_name(cell), missing, record["classes"], cache, args,
                                device, precision, cell, train_labels)
        record["eval_seconds"] = round(record.get("eval_seconds", 0) + time.perf_counter() - start, 3)
        for path in tmp.iterdir() if main else ():
            path.replace(folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["test_sets"].update(results)
    record.setdefault("manifests", {}).update({s: manifests[s] for s in missing})
    if main:
        runs.write_text_atomic(folder / runs.RECORD, runs.json_text(record))
