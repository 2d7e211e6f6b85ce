"""Several GPUs or a cluster for the grid: torchrun (DistributedDataParallel) and grid shards (job arrays).

    torchrun --nproc_per_node=4 test_models.py --models resnet     # each cell trained by 4 processes (DDP)
    torchrun --nproc_per_node=2 test_models.py --device cpu        # the same on the CPU with gloo
    python test_models.py --shard 3/8                              # the 3rd of 8 disjoint slices of the grid
    python test_models.py --aggregate-only                         # the tables, once every shard is done

torchrun is detected from the environment it sets (WORLD_SIZE, RANK, LOCAL_RANK); without it, or with one
process, nothing here does anything and a run is exactly the single-process one. Under torchrun:
- the process group uses NCCL on CUDA (one GPU per process: cuda:LOCAL_RANK) and gloo on the CPU;
- --batch-size is the GLOBAL batch: each of the W processes trains on batch / W chips a step (an error if
  W does not divide it). The epoch order is the cell's seeded permutation (or sampler draw), the same on every
  rank, cut into global batches exactly as in a single process; rank r takes the r-th equal share of each.
  So the chips of every step, and the learning rate they mean, do not depend on W. The last global batch is
  trimmed to a multiple of W (at most W - 1 chips of an epoch left out) and dropped where a rank would get
  fewer than 2 chips of it (batch norm cannot train on one sample); data.Batches does the cutting. DDP
  averages the ranks' gradients: for the plain cross-entropy that is the global batch's gradient; the
  weighted and focal losses normalise by each share's own weight sum, a slightly different average;
- the model: DDP wraps the whole model (no device_ids on the CPU). The frozen backbones' parameters do not
  require grad, so DDP leaves them out of its reduction and needs no find_unused_parameters. Where the
  frozen-feature cache applies (features.py) DDP wraps the head alone; every rank computes the backbone
  features of the whole training split once (its shares index into them, replaying the uncached draws) and
  of its own test chips. After the last epoch rank 0's buffers (batch-norm statistics, which DDP syncs only at
  the start of a forward) are broadcast, so all ranks evaluate the model that rank 0 saves (the module inside
  DDP: no "module." prefix in the checkpoint);
- augmentation: rank 0 draws from the cell's augmentation generator, as a single process does; rank r > 0
  from its own generator seeded from rank_seeds(seed, r) (numpy SeedSequence(seed, spawn_key=(r,))), and
  the global torch generator (dropout) of rank r > 0 is reseeded from the other stream of it after the model
  is built (the model itself is built from the cell's seed on every rank, and DDP broadcasts rank 0's weights
  anyway). A W-process run is therefore reproducible for a given W, but not bitwise equal to one process;
- evaluation: rank r evaluates test chips r, r + W, r + 2W, ... (every chip exactly once, no padding
  duplicates); rank 0 gathers the probabilities back into the split's order, computes the metrics and
  writes the files, and broadcasts the results so every rank holds the same record;
- rank 0 alone writes (records, checkpoints, tables, figures, report) and prints; the standard output of
  the other ranks goes to /dev/null and their progress bars are off; errors (stderr) still show. (The decoded
  split cache of data.py may be written by any rank: atomically, the same bytes.) A rank that dies makes
  torchrun stop the others; the cell being trained leaves only its hidden working folder, from whose epoch
  checkpoint the next run resumes it (resume.py: rank 0 takes the cell's lease and writes the checkpoint, with
  every rank's random generators, all_gather; every rank reads it back). Resuming needs the same number of
  processes: with another, the cell is trained again from its first epoch.

A grid shard k/n is cells[k-1::n] over the deterministic cell order (training set x model x imbalance x
seed, as given): n jobs with k = 1..n cover the grid exactly once, whatever n; a shard with no cell says so
and exits 0. Each job writes its own record folders, and its end-of-run tables cover only the records it
finds; copying the runs/ folders of all shards together (or sharing one --output-dir) and running
--aggregate-only once they are done gives the same tables as one unsharded run. Shards and torchrun combine:
each job of an array may itself be a torchrun over the GPUs of its node.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

_STDOUT = []  # the real stdout of a rank whose output is silenced (restored by teardown)


# ------------------------------------------------------------------------------------------------------------
# torchrun and the process group

def launched_by_torchrun():
    """True when torchrun (torch.distributed.run) started this process with more than one process."""
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")) and \
        int(os.environ["WORLD_SIZE"]) > 1


def setup(device):
    """Join the process group torchrun describes; returns this process's device.

    `device` is the resolved --device (cpu or cuda): NCCL on cuda:LOCAL_RANK, gloo on the CPU. Without
    torchrun (or with one process) returns `device` unchanged and starts nothing.
    """
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"process with LOCAL_RANK {local_rank} has no GPU: this node has "
                             f"{torch.cuda.device_count()}; start torchrun with --nproc_per_node at most "
                             "that")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():  # main() called again in the same processes
        return device
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    if dist.get_rank() != 0:  # one voice: rank 0 prints, the others only report errors (stderr)
        _STDOUT.append(sys.stdout)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (closed by teardown)
    return device


def teardown():
    """Leave the process group (if any) and give a silenced rank its stdout back."""
    if dist.is_initialized():
        dist.destroy_process_group()
    if _STDOUT:
        sys.stdout.close()
        sys.stdout = _STDOUT.pop()


def env_rank():
    """This process's rank as torchrun announces it, before (or without) joining the process group."""
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    return rank() == 0


def rank_seeds(seed, r):
    """(augmentation seed, torch seed) of rank r's own random draws, derived from the cell's seed: the two
    words of numpy's SeedSequence(seed, spawn_key=(r,)).generate_state(2)."""
    aug, global_torch = np.random.SeedSequence(seed, spawn_key=(r,)).generate_state(2)
    return int(aug), int(global_torch)


def local_batch(batch_size, world):
    """Per-process batch of a global batch; an error naming the fix when the processes do not divide it."""
    if batch_size % world:
        nearest = [b for b in (batch_size - batch_size % world, batch_size + world - batch_size % world) if b]
        raise SystemExit(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                         f"{world} processes (each trains on batch / {world} chips a step): use --batch-size "
                         f"{' or '.join(map(str, nearest))}, or another --nproc_per_node")
    return batch_size // world


# ------------------------------------------------------------------------------------------------------------
# collectives (each a no-op in a single process)

def wrap(model, device):
    """DistributedDataParallel around `model` under torchrun, else `model` itself.

    Parameters that do not require grad (frozen backbones) are left out of DDP's gradient reduction, so the
    frozen models need no find_unused_parameters: only the head is reduced.
    """
    if world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None  # gloo on the CPU: no device_ids
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def broadcast_buffers(model):
    """Rank 0's buffers (batch-norm running statistics) on every rank, in place.

    DDP broadcasts rank 0's buffers at the start of every forward, so after the last training step each rank
    still holds the statistics updated by its own last share: without this the ranks would evaluate slightly
    different models, and not the one rank 0 saves.
    """
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def average_buffers(tensors):
    """Each tensor averaged over the ranks, in place (precise batch-norm statistics of every rank's share)."""
    if world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(world_size())


def all_reduce_sum(*tensors):
    """Sum each tensor over the ranks, in place; returns them."""
    if world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return tensors


def broadcast(obj):
    """Rank 0's `obj` on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj):
    """Every rank's `obj` (any picklable object), in rank order, on every rank: [obj] in one process."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_slice():
    """The items of a split this rank evaluates: rank, rank + W, rank + 2W, ... (all in one process)."""
    return slice(rank(), None, world_size())


def gather_rows(part, n):
    """On rank 0, the full (n, ...) array from every rank's rows split[rank_slice()], in the split's order;
    None on the other ranks. `part` is this rank's numpy array."""
    if world_size() == 1:
        return part
    parts = [None] * world_size()
    dist.all_gather_object(parts, part)
    if not is_main():
        return None
    full = np.empty((n, *part.shape[1:]), dtype=part.dtype)
    for r, rows in enumerate(parts):
        full[r::world_size()] = rows
    return full


# ------------------------------------------------------------------------------------------------------------
# grid shards

def parse_shard(text):
    """argparse type for --shard k/n (1 <= k <= n) -> (k, n)."""
    parts = text.split("/")
    try:
        k, n = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected k/n with integers, e.g. 3/8 (the 3rd of 8 shards), "
                                         f"got {text!r}") from None
    if n < 1 or not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"shard {text!r} is out of range: k/n needs 1 <= k <= n (e.g. "
                                         f"--shard $SLURM_ARRAY_TASK_ID/8 with sbatch --array=1-8)")
    return k, n


def shard_cells(cells, shard):
    """The k-th of n disjoint slices of the grid's cells: cells[k-1::n] (all cells when shard is None)."""
    if shard is None:
        return list(cells)
    k, n = shard
    return list(cells)[k - 1::n]
