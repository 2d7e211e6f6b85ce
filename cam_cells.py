"""What grad_cams.py explains: which sets and models, which cell of each, and that it was trained on the set now
prepared.

    plan = explain_plan("data/prepared", "demo", None, None, report, note)   # [(set, [models the grid has])]
    jobs = find_jobs(plan, args, report)                                      # [(set, model, cell, how)]
    jobs = check_manifests(jobs, "data/prepared", "demo", report, note)        # SystemExit on a re-prepared set
    cell, problem, how = find_cell("demo", "fusar", "cnn", "none", None)   # how: the learning rate's choice
    cell, problem, how = find_cell("demo", "fusar", "cnn", "none", 1, lr=0.0003)

By default every prepared set the grid trained a model on is explained, with the models the grid trained on it
(what a default leaves out is said, a note); a set or model named with --datasets / --models that is missing is
a problem. A cell whose record.json gives another manifest sha1 for its training set than the set now under
--data-dir was trained on an earlier preparation of it (other classes or another split: its "test" chips could
be chips it was trained on): check_manifests stops the run before anything is written, naming every such cell,
both hashes and the fix.

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
from tqdm import tqdm

import runs
import sets
import tables
from cli import PREP_HINT
from models import MODEL_CHOICES


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


# ------------------------------------------------------------------------------------------ sets and models
def grid_models(output_dir, set_name):
    """The models with a folder under <output_dir>/runs/<set>/ (trained on the set by the grid, finished or not),
    in the study's order."""
    folder = Path(output_dir) / runs.RUNS / set_name
    found = {d.name for d in folder.iterdir() if d.is_dir()} if folder.is_dir() else set()
    return [m for m in MODEL_CHOICES if m in found]


def explain_plan(data_dir, output_dir, datasets, model_names, report, note):
    """[(set, [model])] to explain: `datasets` (None: every prepared set the grid trained a model on) with
    `model_names` (None: the models the grid trained on that set). What was named but is missing goes to
    report(); what a default leaves out, and what the defaults chose, to note()."""
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    available = sets.prepared_sets(data_dir)
    for s in [s for s in datasets or [] if s not in available]:
        report(f"no prepared set '{s}' under {data_dir} (no {data_dir / s / sets.MANIFEST}): {PREP_HINT}, or "
               "pass --data-dir")
    if not available:
        report(f"no prepared sets under {data_dir} (no <set>/{sets.MANIFEST}): {PREP_HINT}, or pass --data-dir")
        return []
    if not (output_dir / runs.RUNS).is_dir():
        report(f"no grid under {output_dir} (no {output_dir / runs.RUNS}): run python test_models.py "
               f"--output-dir {output_dir} first, or pass --output-dir where it wrote its records")
        return []
    held = {s: grid_models(output_dir, s) for s in available}
    if datasets is None:
        for s in [s for s in available if not held[s]]:
            note(f"{s}: no model of the grid was trained on it; not explained")
        for s in sorted(d.name for d in (output_dir / runs.RUNS).iterdir() if d.is_dir() and d.name not in held
                        and grid_models(output_dir, d.name)):
            note(f"{s}: the grid has models trained on it but {data_dir} has no prepared set {s}; not explained "
                 "(pass --data-dir where it is prepared)")
    chosen = [s for s in (datasets or available) if s in available and (datasets is not None or held[s])]
    if model_names is None:
        for s in [s for s in chosen if not held[s]]:
            report(f"no model of the grid under {output_dir} was trained on {s} (no {output_dir / runs.RUNS / s}):"
                   f" run python test_models.py --datasets {s} first, or leave {s} out of --datasets")
        holds = "; ".join(f"{s}: {', '.join(held[s])}" for s in chosen if held[s])
        if holds:
            note(f"the grid holds {holds} - explaining those (choose others with --models / --datasets)")
    return [(s, list(model_names or held[s])) for s in chosen]


def find_jobs(plan, args, report):
    """[(set, model, cell folder, how it was chosen)] of the cells to explain (each printed with its choice); a
    missing cell goes to report()."""
    jobs = []
    for set_name, model_names in plan:
        for model_name in model_names:
            cell, msg, how = find_cell(args.output_dir, set_name, model_name, args.imbalance, args.train_seed,
                                       args.lr)
            if msg:
                report(msg)
            else:
                tqdm.write(f"grad_cams: {set_name}/{model_name}: explaining {cell} ({how})")
                jobs.append((set_name, model_name, cell, how))
    return jobs


# ------------------------------------------------------------------------------------ the set it was trained on
def check_manifests(jobs, data_dir, output_dir, report, note):
    """The jobs whose cell was trained on the set now prepared under data_dir (record.json `manifests`, written by
    test_models.py, against sets.manifest_sha1). Stops (SystemExit, before anything is written) when any cell
    was trained on another preparation; an unreadable record goes to report(), one without hashes to note()."""
    kept, refused, trained_from = [], [], set()
    current = {s: sets.manifest_sha1(Path(data_dir) / s) for s in dict.fromkeys(job[0] for job in jobs)}
    for job in jobs:
        set_name, model_name, cell, _ = job
        try:
            record = runs.read_record(cell)
        except runs.RecordError as err:
            report(f"{model_name} on {set_name}: {err}")
            continue
        manifests = record.get("manifests")
        trained = manifests.get(set_name) if isinstance(manifests, dict) else None
        set_dir, now = Path(data_dir) / set_name, current[set_name]
        if trained is None:
            note(f"{model_name} on {set_name}: {cell / runs.RECORD} has no manifest hash (an earlier record): "
                 f"cannot check that it was trained on the set now in {set_dir}")
        elif trained != now:
            cell_args = record.get("args") if isinstance(record.get("args"), dict) else {}
            if cell_args.get("data_dir"):
                trained_from.add(str(cell_args["data_dir"]))
            command = runs.cell_command({**cell_args, "data_dir": str(data_dir), "output_dir": str(output_dir)})
            refused.append(f"  - {model_name} on {set_name}: the cell {cell} was trained on a {set_name} set whose "
                           f"manifest had sha1 {trained}; {set_dir / sets.MANIFEST} now has sha1 {now}. Retrain "
                           f"it on the current set: {command} --force")
            continue
        kept.append(job)
    if refused:
        raise SystemExit(
            f"grad_cams.py: {len(refused)} model(s) were trained on another preparation of their set than the one "
            f"now under {data_dir} (it was prepared again since: other classes or another split), so its test chips "
            "could include chips they were trained on; nothing was explained:\n" + "\n".join(refused)
            + "\nRetrain them (the commands above), or point --data-dir at the prepared sets they were trained on"
            + (f" (their records say --data-dir {', '.join(sorted(trained_from))})" if trained_from else "")
            + ", or leave them out with --models / --datasets.")
    return kept
