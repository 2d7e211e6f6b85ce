"""The chips' way from the readers to the split, for dataset_prep.py: list every registered reader's chips,
decode each chosen chip once, drop identical images, then group and split them (the rules: dataset_prep.py's
docstring).

    jobs, skips, notes = splits.list_all(trees, forced, args, progress=False)   # phase 1: nothing decoded
    chips, skips, notes = splits.decode_all(jobs, {"Cargo", "Tanker"}, masks, staging, progress=False)
    chips, duplicates = splits.drop_duplicates(chips)
    splits.assign_groups(chips, "mmsi")                                          # sets chip.group
    splits.split_groups(chips, test_size=0.2, seed=42, val_size=0.1)             # sets chip.split
    splits.name_files(chips)                                                     # sets chip.file
    text = splits.format_table(tables, classes) + "\n" + splits.format_skips(skips)  # the summaries' text
    warnings = splits.single_group_warnings({"fusar": [(cls, group, split), ...]})   # classes left untested

The split seed is dataset_prep.py's --split-seed (default: its --seed): the split alone, never the chips.

Every chip is a readers.Chip; jobs are (reader, source, chips); skips are (dataset, source, reason, detail).
"""

import hashlib
import io
import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import readers
import stacking
from archives import READ_ERRORS, BadArchiveError
from sets import MIXED, SPLITS

# Two chips without MMSI in the GRD and SLC products of one acquisition are one ship when their metadata puts
# their centres this close (GRD pixels are 10 m; AIS-to-SAR match errors in Ship.xml are tens of metres).
SAME_SHIP_M = 300.0


# ---------------------------------------------------------------------------------------------- listing, decoding


def list_all(trees, forced, options, progress):
    """Phase 1: every chip of every reader (all classes, nothing decoded). Returns (jobs, skips, notes): jobs are
    (reader, source, chips) in the registry's order, then each reader's order; skips (dataset, source, reason,
    detail)."""
    jobs, skips, notes = [], [], []
    for reader in readers.READERS:
        tallies = Counter()
        sources = reader.find_sources(trees[reader.name], forced[reader.name])
        for source in tqdm(sources, desc=f"{reader.title} sources", disable=not progress, leave=False):
            listing = reader.list_chips(source, options)
            skips += [(reader.name, *s) for s in listing.skips]
            notes += listing.notes
            tallies.update(listing.tallies)
            jobs.append((reader, source, listing.chips))
        notes += reader.summary_notes(tallies)
    return jobs, skips, notes


def encode_png(arr):
    """Deterministic PNG bytes of an (H, W) uint8 array (no timestamps or text chunks)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _read_mask(masks_dir, chip, shape):
    if masks_dir is None or not chip.mask_key:
        return None
    path = Path(masks_dir) / chip.mask_key
    if not path.is_file():
        return None
    with Image.open(path) as img:
        mask = np.asarray(img.convert("L"))
    return mask if mask.shape == shape else None


def source_sha1(handle, chip):
    """sha1 of the chip's file as the raw data stores it: what a split file publishes (split_files.py), whatever
    our PNG encoder makes of it. chip.member is read from the archives tree the handle reads chips from: its
    `tree` (OpenSARShip's Scene, FUSAR-Ship's root) or the handle itself (a reader whose sources are trees)."""
    return hashlib.sha1(getattr(handle, "tree", handle).read(chip.member)).hexdigest()


def _decode_one(reader, handle, chip, masks_dir):
    # Runs in a worker thread: the decoders and zlib release the GIL, so chips decode and encode in parallel.
    try:
        source = source_sha1(handle, chip)
        arr = reader.load_chip(handle, chip)
    except READ_ERRORS as e:
        return None, None, str(e), (None, None)  # the reason rides in the third slot
    mask = _read_mask(masks_dir, chip, arr.shape)
    twin = None if chip.twin is None else stacking.decode_twin(reader, handle, chip.twin, arr)
    return arr.shape, encode_png(arr), None if mask is None else encode_png(mask), (source, twin)


def decode_all(jobs, classes, masks, staging, progress):
    """Phase 2: decode the chosen chips once, stage their PNG (and mask) bytes, set chip.source_sha1 (source_sha1);
    a chip's stacked twin (--pol stack) is decoded and staged with it (stacking.py). Returns (chips, skips, notes).

    Chips are staged in job order whatever the thread timing, so the output does not depend on it."""
    out, skips = [], []
    mask_missing = 0
    total = sum(1 for _, _, chips in jobs for c in chips if c.cls in classes)
    bar = tqdm(total=total, desc="decoding chips", unit="chip", disable=not progress, leave=False)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for reader, source, chips in jobs:
            chosen = [c for c in chips if c.cls in classes]
            if not chosen:
                continue
            masks_dir = masks.get(reader.name)
            try:
                with reader.open(source) as handle:
                    for start in range(0, len(chosen), 256):  # bounded: at most 256 encoded chips in memory
                        batch = chosen[start:start + 256]
                        n = len(batch)
                        results = pool.map(_decode_one, [reader] * n, [handle] * n, batch, [masks_dir] * n)
                        for chip, (shape, png, mask_png, (source, twin)) in zip(batch, results):
                            bar.update(1)
                            if png is None:
                                skips.append((reader.name, chip.source, "unreadable image", mask_png))
                                continue
                            chip.source_sha1 = source
                            _stage(reader, chip, shape, png, mask_png, staging, len(out))
                            if twin is not None:  # --pol stack: the chip as (co, cross) channels
                                stacking.stage_twin(reader, chip, twin, staging, len(out))
                            if mask_png is None and masks_dir and chip.mask_key:
                                mask_missing += 1
                            out.append(chip)
            except (BadArchiveError, *READ_ERRORS) as e:
                skips.append((reader.name, source.label, "unreadable scene archive", str(e)))
    bar.close()
    notes = [f"{mask_missing} chip(s) without a matching mask in the masks folder"] if mask_missing else []
    return out, skips, notes


def _stage(reader, chip, shape, png, mask_png, staging, index):
    # The decoded chip's size, hash and head/tail; its PNG (and mask) written to the staging folder.
    chip.sha1 = hashlib.sha1(png).hexdigest()
    chip.chip_h, chip.chip_w = shape
    for key, value in reader.chip_coords(chip, *shape).items():
        setattr(chip, key, value)
    chip.staged = staging / f"{index:07d}.png"
    chip.staged.write_bytes(png)
    if mask_png is not None:
        chip.staged_mask = staging / f"{index:07d}_mask.png"
        chip.staged_mask.write_bytes(mask_png)


def drop_duplicates(chips):
    """Identical images (same PNG hash) within a dataset are kept once; copies under different classes are
    dropped altogether (their label is ambiguous). Returns (kept, skips)."""
    by_hash = defaultdict(list)
    for c in chips:
        by_hash[(c.dataset, c.sha1)].append(c)
    kept, skips = [], []
    for c in chips:
        same = by_hash[(c.dataset, c.sha1)]
        if len({s.cls for s in same}) > 1:
            skips.append((c.dataset, c.source, "identical image under different classes",
                          ", ".join(f"{s.cls}: {s.source}" for s in same if s is not c)))
        elif same[0] is c:
            kept.append(c)
        else:
            skips.append((c.dataset, c.source, "duplicate image", f"same content as {same[0].source}"))
    return kept, skips


# ---------------------------------------------------------------------------------------------- split


def _distance_m(a, b):
    lat = math.radians((a[0] + b[0]) / 2)
    return 6371000.0 * math.hypot(math.radians(a[0] - b[0]), math.radians(a[1] - b[1]) * math.cos(lat))


def assign_groups(chips, group_by):
    """Set chip.group: what the split may not divide (see dataset_prep.py's docstring). `scene` groups the chips
    that have an acquisition by it, the others (FUSAR-Ship) as `mmsi` does."""
    if group_by == "none":
        for c in chips:
            c.group = f"chip:{c.dataset}:{c.name}"
        return
    # Ships without MMSI: their scene position, merged across the products of one acquisition by location.
    parent = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if group_by == "mmsi":
        located = defaultdict(dict)
        for c in chips:
            if not c.mmsi and c.latlon:
                located[c.acquisition][c.position] = c.latlon
        for positions in located.values():
            items = sorted(positions.items())
            for i, (pa, la) in enumerate(items):
                for pb, lb in items[i + 1:]:
                    if pa.split(":")[0] != pb.split(":")[0] and _distance_m(la, lb) < SAME_SHIP_M:
                        ra, rb = find(pa), find(pb)
                        parent[max(ra, rb)] = min(ra, rb)
    for c in chips:
        if group_by == "scene" and c.acquisition:
            c.group = f"scene:{c.acquisition}"
        elif c.mmsi:
            c.group = f"mmsi:{c.mmsi}"
        else:
            c.group = f"pos:{find(c.position)}"


def split_groups(chips, test_size, seed, val_size=0.0):
    """Set chip.split (train, val, test): a seeded, grouped split stratified by (dataset, class).

    Test first, exactly as without validation (the generator of `seed`): test_size of every (dataset, class)
    cell. Then, with val_size > 0, val_size of each cell's training chips moves to val by the same rule from
    the training groups alone, in an order of its own (the generator of [seed, 1]), so the test split is the one
    val_size=0 gives and validation only takes from what was training data.
    """
    by_group = defaultdict(Counter)
    for c in chips:
        by_group[c.group][(c.dataset, c.cls)] += 1
    side = _pick_groups(by_group, test_size, np.random.default_rng(seed), "test")
    if val_size > 0:
        training = {g: counts for g, counts in by_group.items() if side[g] == "train"}
        side.update(_pick_groups(training, val_size, np.random.default_rng([seed, 1]), "val"))
    for c in chips:
        c.split = side[c.group]


def _pick_groups(by_group, size, rng, picked):
    """{group: `picked` or "train"}: groups visited in the order `rng` draws; a group is picked when that lowers
    the summed distance of every (dataset, class) picked count from its target (size of the cell, at least one
    chip when the cell has two groups or more). A group holding several classes or datasets moves as one."""
    totals, n_groups = Counter(), Counter()
    for counts in by_group.values():
        for cell, n in counts.items():
            totals[cell] += n
            n_groups[cell] += 1
    target = {cell: (max(1, round(size * n)) if n_groups[cell] >= 2 else 0) for cell, n in totals.items()}
    order = sorted(by_group)
    order = [order[i] for i in rng.permutation(len(order))]
    chosen, side = Counter(), {}
    for g in order:
        counts = by_group[g]
        gain = sum(abs(chosen[cell] + n - target[cell]) - abs(chosen[cell] - target[cell])
                   for cell, n in counts.items())
        side[g] = picked if gain < 0 else "train"
        if gain < 0:
            chosen.update(counts)
    # Every cell with two groups or more gets at least one group on each side: a test (or val) split without a
    # class measures nothing for it, a train split without it cannot learn it.
    for cell in sorted(totals):
        if n_groups[cell] < 2:
            continue
        for want, have in ((picked, chosen[cell]), ("train", totals[cell] - chosen[cell])):
            if have == 0:
                other = "train" if want == picked else picked
                g = min((g for g in order if side[g] == other and cell in by_group[g]),
                        key=lambda g: by_group[g][cell])
                side[g] = want
                sign = 1 if want == picked else -1
                for k, n in by_group[g].items():
                    chosen[k] += sign * n
    return side


def split_names(val_size):
    """The splits a run writes, in order: train, val (only with val_size > 0), test."""
    return SPLITS if val_size > 0 else tuple(s for s in SPLITS if s != "val")


def val_notes(chips, set_names, val_size):
    """Notes naming, per set, the classes without val chips (fewer than two training groups of the class)."""
    if not val_size > 0:
        return []
    notes = []
    for name in set_names:
        mine = [c for c in chips if name == MIXED or c.dataset == name]
        missing = sorted({c.cls for c in mine} - {c.cls for c in mine if c.split == "val"})
        if missing:
            notes.append(f"{name}: no val chips for {', '.join(missing)} (a class needs two or more training "
                         f"groups (ships) to give one to val; --val-size {val_size:g})")
    return notes


def single_group_warnings(records):
    """Warnings naming, per set, each class with chips but none in test: a class of one group (ship) goes to train
    whole, so nothing measures it. records: {set: [(class, group, split), ...]}."""
    warnings = []
    for name, recs in records.items():
        for cls in sorted({k for k, _, _ in recs} - {k for k, _, split in recs if split == "test"}):
            n_groups = len({g for k, g, _ in recs if k == cls})
            n_chips = sum(1 for k, _, _ in recs if k == cls)
            warnings.append(f"{name}: {cls} has {n_groups} ship group{'s' if n_groups != 1 else ''} ({n_chips} "
                            f"chip{'s' if n_chips != 1 else ''}), so no test chips: nothing measures it, and an "
                            "average over classes that counts it gets a zero; a class needs two or more ships to "
                            f"be tested: add data with more {cls} ships, or leave it out with --classes")
    return warnings


def format_table(tables, classes):
    """The counts table of the summaries: one row per set and split (train, val when prepared, test)."""
    width = max([len(k) for k in classes] + [5])
    name_w = max([len(n) for n in tables] + [12])
    head = f"{'set':<{name_w}} {'split':<6}" + "".join(f" {k:>{width}}" for k in classes) + f" {'total':>7}"
    lines = [head, "-" * len(head)]
    for name, info in tables.items():
        for split in (s for s in SPLITS if s in info["counts"]):  # train, val (when prepared), test
            row = info["counts"][split]
            lines.append(f"{name if split == 'train' else '':<{name_w}} {split:<6}" +
                         "".join(f" {row.get(k, 0):>{width}}" for k in classes) + f" {sum(row.values()):>7}")
    return "\n".join(lines)


def format_skips(skips):
    """One line counting the skipped chips per dataset and reason."""
    if not skips:
        return "skipped chips: none"
    by = Counter((d, r) for d, _, r, _ in skips)
    return "skipped chips: " + "; ".join(f"{d} {r}: {n}" for (d, r), n in sorted(by.items()))


def name_files(chips):
    """chip.file = <dataset>_<chip name>.png, unique within its split and class folder."""
    taken = set()
    for c in sorted(chips, key=lambda c: (c.dataset, c.name, c.sha1)):
        base = f"{c.dataset}_{c.name}"
        if (c.split, c.cls, base) in taken:
            base = f"{base}_{c.sha1[:8]}"
        taken.add((c.split, c.cls, base))
        c.file = base + ".png"


def shared_group_notes(chips, present):
    """A note counting the groups (MMSIs) that span datasets: each stays on one side of the split."""
    datasets = defaultdict(set)
    for c in chips:
        datasets[c.group].add(c.dataset)
    shared = sum(1 for ds in datasets.values() if len(ds) > 1)
    where = "both datasets" if len(present) == 2 else "more than one dataset"
    return [f"{shared} group(s) (MMSIs) in {where}: each kept on one side of the split"] if shared else []
