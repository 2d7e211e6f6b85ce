"""Pool the grids of several prepared copies of the data, one per split seed, into one report (report.py --pool).

The split is a source of variance that the ship intervals do not cover (bootstrap.py): another split puts other
ships in training and in test. To measure it, prepare copies that differ only in --split-seed, train the same grid
on each (each in its own --output-dir: a cell's folder does not name its split, and test_models.py refuses to
reuse a finished cell trained on another manifest), then let report.py pool them:

    python dataset_prep.py --synthetic --output-dir data/split0 --split-seed 0
    python dataset_prep.py --synthetic --output-dir data/split1 --split-seed 1
    python test_models.py --data-dir data/split0 --output-dir grid_split0
    python test_models.py --data-dir data/split1 --output-dir grid_split1
    python report.py --pool grid_split0 grid_split1 --output-dir pooled --data-dir data/split0

A run of the pool is a (split seed, training seed) pair, its split seed read from its record (test_models.py
writes the prepared set's `split_seed` into every record). In the pooled tables its `seed` is the replicate number
split_seed * STRIDE + seed, so everything that averages or pairs over seeds (seed_stats.py, ship_stats.py,
tables.selected_lrs) averages over splits and seeds together and pairs only runs of the same split and training
seed; the pool's scores.csv and predictions.csv carry `split_seed` and `train_seed` beside it. So, in the pooled
report: every mean ± std is over splits and seeds (the std includes the split's variance); the learning rate is
chosen on the mean validation macro-F1 over every split and seed; the ship bootstrap draws from the union of the
splits' test ships (a drawn ship counts in every run whose test set holds it); the baselines, fitted once per
split, are averaged over the splits.

pool(grids, output_dir) writes the pool's scores.csv, predictions.csv and figures/ into output_dir (never into a
pooled grid; report.py measures calibration on them and shows the first grid's Grad-CAM maps) and returns its
records for report.gather. Two grids holding the same cell of the same split seed, a record without a split
seed, or a grid without its tables are errors (PoolError) naming the folder and the fix.
"""
from pathlib import Path

import pandas as pd

import runs
import tables
from sets import ordered

STRIDE = 1_000_000  # replicate = split_seed * STRIDE + seed: training seeds stay below it


class PoolError(ValueError):
    """Grids that cannot be pooled; the message names the folder and the fix."""


def replicate(split_seed, seed):
    return int(split_seed) * STRIDE + int(seed)


def split_and_seed(rep):
    """(split seed, training seed) of a replicate number."""
    return divmod(int(rep), STRIDE)


def _cell_key(rec):
    return rec["train_set"], rec["model"], rec["imbalance"], runs.lr_text(rec["lr"]), int(rec["seed"])


def pooled_records(grids):
    """([(folder, record)] of every grid with `seed` the replicate number and `train_seed`, `split_seed`, `grid`
    added, {(grid, train_set): split seed}). PoolError as the module docstring says."""
    found, splits, owner = [], {}, {}
    for grid in map(Path, grids):
        records = runs.find_records(grid)
        if not records:
            raise PoolError(f"--pool {grid}: no finished cells under {grid / runs.RUNS}: name the folders "
                            "test_models.py --output-dir wrote")
        for folder, rec in records:
            split, seed = rec.get("split_seed"), int(rec["seed"])
            if split is None:
                raise PoolError(f"{folder} records no split seed (trained before records had one): delete that cell "
                                f"folder and rerun test_models.py --output-dir {grid} to retrain it")
            if not 0 <= seed < STRIDE:
                raise PoolError(f"{folder}: training seed {seed} is outside [0, {STRIDE}) and cannot be pooled")
            known = splits.setdefault((str(grid), rec["train_set"]), int(split))
            if known != int(split):
                raise PoolError(f"{grid} holds {rec['train_set']} cells of two split seeds ({known} and {split}): "
                                "keep one prepared copy per grid folder")
            key = (*_cell_key(rec), int(split))
            if key in owner:
                raise PoolError(f"{owner[key]} and {folder} are the same cell of the same split (split seed {split}):"
                                " pool grids trained on copies prepared with different --split-seed (more training "
                                "seeds of one split go into one grid: test_models.py --seeds)")
            owner[key] = folder
            found.append((folder, dict(rec, seed=replicate(split, seed), train_seed=seed, split_seed=int(split),
                                       grid=str(grid))))
    return found, splits


def _read_table(grid, name, **kwargs):
    path = Path(grid) / name
    if not path.is_file():
        raise PoolError(f"--pool {grid}: no {name}: rebuild the grid's tables with python test_models.py "
                        f"--aggregate-only --output-dir {grid}")
    return pd.read_csv(path, **kwargs)


def _relabel(frame, grid, splits):
    """Rows of one grid's table with `split_seed`, `train_seed` and `seed` the replicate number."""
    split = frame["train_set"].map(lambda s: splits.get((str(grid), s)))
    if split.isna().any():
        missing = ", ".join(sorted(set(frame.loc[split.isna(), "train_set"])))
        raise PoolError(f"{grid}: its tables hold training set(s) {missing} without finished cells: rebuild them "
                        f"with python test_models.py --aggregate-only --output-dir {grid}")
    seed = frame["seed"].astype(int)
    return frame.assign(seed=[replicate(p, s) for p, s in zip(split, seed)], split_seed=split.astype(int),
                        train_seed=seed)


def pool(grids, output_dir):
    """Write the pool's scores.csv, predictions.csv and figures/ into output_dir; returns its records."""
    output_dir = Path(output_dir)
    grids = [Path(g) for g in grids]
    if len({g.resolve() for g in grids}) != len(grids):
        raise PoolError("--pool names a grid folder twice: name each grid once")
    if output_dir.resolve() in {g.resolve() for g in grids}:
        raise PoolError(f"--output-dir {output_dir} is one of the pooled grids: its own scores.csv would be replaced;"
                        " write the pool elsewhere (e.g. --output-dir pooled)")
    found, splits = pooled_records(grids)
    scores = pd.concat([_relabel(_read_table(g, "scores.csv", dtype={"lr": str}), g, splits) for g in grids],
                       ignore_index=True)
    predictions = pd.concat([_relabel(_read_table(g, "predictions.csv", dtype=str, keep_default_na=False), g, splits)
                             for g in grids], ignore_index=True)
    lr = scores["lr"].fillna("")
    scores["selected"] = tables.selected_lrs(scores.assign(lr=pd.to_numeric(lr.replace("", None))))
    scores["lr"] = lr
    output_dir.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(output_dir / "scores.csv", lambda p: scores.to_csv(p, index=False, float_format="%.2f"))
    runs.write_atomic(output_dir / "predictions.csv", lambda p: predictions.to_csv(p, index=False))
    classes = ordered([c for _, r in found for c in r["classes"]], [])
    tables.plot_figures(scores.assign(lr=pd.to_numeric(lr.replace("", None))), classes, output_dir / "figures")
    return found


def split_seeds_of(records):
    """The split seeds of pooled records (those with `grid`), sorted; [] for one grid's own records."""
    return sorted({int(r["split_seed"]) for _, r in records if "grid" in r})


def seeds_text(records):
    """The header's words for the runs' seeds: 'seeds 0, 1' or, for a pool, 'split seeds 0, 1 x training seeds
    0, 1, 2 (each pooled run is one split and one seed)'."""
    train = sorted({int(r.get("train_seed", r["seed"])) for _, r in records})
    splits = split_seeds_of(records)
    text = f"seeds {', '.join(map(str, train))}" + (" (single seed)" if len(train) == 1 and not splits else "")
    if splits:
        text = (f"split seeds {', '.join(map(str, splits))} x training {text} (pooled: each run is one split and "
                f"one training seed; a table's n counts runs, its seeds column names them split_seed * {STRIDE} + "
                "seed)")
    return text
