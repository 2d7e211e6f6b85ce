"""Which cell of a finished grid grad_cams.py explains, per (prepared set, model trained on it).

    cell, problem, how = find_cell("demo", "fusar", "cnn", "none", None)   # how: the learning rate's choice
    cell, problem, how = find_cell("demo", "fusar", "cnn", "none", 1, lr=0.0003)

Cells live at <output-dir>/runs/<set>/<model>/<imbalance>/lr<lr>/seed<k>/ (runs.py). The learning rate is the
one the grid's rule chooses on validation (tables.selected_lrs: the highest mean validation macro-F1 over seeds,
ties the smaller rate; a single rate is that rate); with several rates and no validation none is chosen, and the
smallest is explained, said so in `how`. Cells of the earlier layout, runs/<set>/<model>/<imbalance>/seed<k>/
(LEGACY: no learning-rate level), are used only where no lr folder has a finished cell. Records are read only
for their validation score, tolerantly: a damaged record.json counts as a cell without validation, and
load_cell (grad_cams.py) reports a damaged checkpoint.
"""
import json
import math
from pathlib import Path

import pandas as pd

import runs
import tables


def finished_seeds(folder):
    """{seed: cell folder} of the finished cells (record.json) directly under `folder`."""
    return {int(m.group(1)): d for d in sorted(folder.iterdir())
            if (m := runs.SEED_DIR.match(d.name)) and (d / runs.RECORD).is_file()}


def val_score(cell):
    """The validation macro-F1 of the epoch a cell kept (NaN without validation or a readable record)."""
    try:
        value = json.loads((cell / runs.RECORD).read_text()).get("protocol", {}).get("val_f1_macro")
    except (OSError, ValueError, AttributeError):
        return math.nan
    return math.nan if value is None else float(value)


def rate_folders(imb_dir):
    """{lr: {seed: cell folder}} of the finished cells under runs/<set>/<model>/<imbalance>/lr<lr>/; when there
    are none, the LEGACY cells of the earlier layout (seed folders directly in imb_dir) as {None: {...}}."""
    rates = {}
    for d in sorted(imb_dir.iterdir()):
        m = runs.LR_DIR.match(d.name)
        if m and d.is_dir() and (seeds := finished_seeds(d)):
            rates[float(m.group(1))] = seeds
    legacy = finished_seeds(imb_dir)
    return rates or ({None: legacy} if legacy else {})


def choose_rate(rates, lr):
    """(learning rate, how it was chosen) among `rates` ({lr: {seed: cell}}): `lr` when given; else the grid's
    rule, tables.selected_lrs: the only rate, or the highest mean validation macro-F1 over seeds (ties: the
    smaller rate); several rates without validation: the smallest, said so. None when `lr` is not there."""
    if lr is not None:
        found = [r for r in rates if r is not None and runs.lr_name(r) == runs.lr_name(lr)]
        return (found[0], f"lr {lr:g}: passed with --lr") if found else (None, None)
    if list(rates) == [None]:
        return None, "earlier record (no learning-rate level): stored batch-norm statistics, last epoch"
    if len(rates) == 1:
        return next(iter(rates)), f"lr {next(iter(rates)):g}: the only rate"
    cells = pd.DataFrame([{"train_set": "", "model": "", "imbalance": "", "protocol": "", "lr": r, "seed": k,
                           "val_f1_macro": val_score(cell)} for r, seeds in rates.items() for k, cell in seeds.items()])
    chosen = sorted(set(cells.loc[tables.selected_lrs(cells), "lr"]))
    if chosen:
        return chosen[0], f"lr {chosen[0]:g}: chosen on validation among {', '.join(f'{r:g}' for r in sorted(rates))}"
    smallest = min(rates)
    return smallest, (f"lr {smallest:g}: the smallest of {', '.join(f'{r:g}' for r in sorted(rates))}; none is "
                      "chosen without validation (pass --lr to explain another)")


def find_cell(output_dir, train_set, model_name, imbalance, train_seed, lr=None):
    """(cell dir or None, message or None, how the cell was chosen or None) of the cell to explain: imbalance
    `imbalance`, the learning rate of choose_rate (LEGACY cells only when there is no lr level), and seed
    `train_seed` (None: the smallest finished). A finished cell has record.json."""
    model_dir = Path(output_dir) / runs.RUNS / train_set / model_name
    imb_dir = model_dir / imbalance
    if not model_dir.is_dir():
        return None, f"no grid records for model {model_name} trained on {train_set} (no {model_dir})", None
    if not imb_dir.is_dir():
        found = sorted(d.name for d in model_dir.iterdir() if d.is_dir())
        return None, (f"{model_name} on {train_set}: no cell with imbalance '{imbalance}' (found: "
                      f"{', '.join(found) or 'none'}); pass --imbalance"), None
    rates = rate_folders(imb_dir)
    if not rates:
        return None, (f"{model_name} on {train_set}/{imbalance}: no finished cell (no lr*/seed*/{runs.RECORD} "
                      f"in {imb_dir})"), None
    rate, how = choose_rate(rates, lr)
    if how is None:
        found = ", ".join(f"{r:g}" for r in sorted(r for r in rates if r is not None)) or "none (earlier layout)"
        return None, (f"{model_name} on {train_set}/{imbalance}: no cell with lr {lr:g} (found: {found}); pass "
                      "--lr"), None
    seeds = rates[rate]
    seed = min(seeds) if train_seed is None else train_seed
    where = f"{train_set}/{imbalance}" + (f"/{runs.lr_name(rate)}" if rate is not None else "")
    if seed not in seeds:
        return None, (f"{model_name} on {where}: no finished cell for seed {seed} (found seeds {sorted(seeds)}); "
                      "pass --train-seed"), None
    cell = seeds[seed]
    if not (cell / runs.CHECKPOINT).is_file():
        return None, (f"{model_name} on {where}/seed{seed}: {runs.CHECKPOINT} is missing in {cell}; rerun that "
                      "cell of test_models.py (delete the cell folder so it is not skipped)"), None
    return cell, None, how
