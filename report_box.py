"""The box report.md opens with (after its title and any synthetic-data warning): what the numbers can and cannot
say, in a few lines.

    lines = box_lines(g, data_dir)     # g: report.gather's dict

It states the seeds (and the splits: dataset_prep.py's split seed from each prepared set's summary.json, and the
sha1 of the split file they were prepared from, if any: dataset_prep.py --split-file), the ships of each test set
(the effective sample size: the intervals resample ships, not chips; from the manifests' test splits, else from
predictions.csv), the widest 95 % interval of macro-F1 among the main table's models, each
training set's best model (chosen on validation) beside the baselines' macro-F1, and whether any model is
degenerate.
"""
from pathlib import Path

import protocols
from main_section import best_config, ci_cell, describe
from seed_stats import fmt
from sets import SETS, load_summary, ordered
from ship_stats import ships_per_test_set

TITLE = "What these numbers can and cannot say"


def split_seeds(records, data_dir):
    """{split seed: [training sets]} over the records: a record's own `split_seed` (test_models.py writes it), else
    the summary.json of its training set under the --data-dir it was trained with (else under data_dir); a set
    without a recorded split seed is left out."""
    out = {}
    for _, rec in records:
        if rec.get("split_seed") is not None:
            out.setdefault(int(rec["split_seed"]), set()).add(rec["train_set"])
            continue
        for root in dict.fromkeys([rec.get("args", {}).get("data_dir"), str(data_dir)]):
            if root and Path(root, rec["train_set"]).is_dir():
                seed = load_summary(root, rec["train_set"]).get("split_seed")
                if seed is not None:
                    out.setdefault(int(seed), set()).add(rec["train_set"])
                break
    return out


def split_file_lines(records, data_dir):
    """A line naming each split file (dataset_prep.py --split-file) the records' training sets were prepared from,
    found in their summary.json as split_seeds finds the seed; [] when none was."""
    found = {}  # (root, set) -> the set's summary.json "split_file": each read once, however many records
    for _, rec in records:
        for root in dict.fromkeys([rec.get("args", {}).get("data_dir"), str(data_dir)]):
            if root and Path(root, rec["train_set"]).is_dir():
                if (root, rec["train_set"]) not in found:
                    found[root, rec["train_set"]] = load_summary(root, rec["train_set"]).get("split_file")
                break
    files = {}
    for (_, name), info in found.items():
        if info:
            files.setdefault(info["sha1"], (info["path"], set()))[1].add(name)
    return [f"- Split file {sha1[:12]}: {', '.join(ordered(names, SETS))} prepared from {Path(path).name} (sha1 "
            f"{sha1}); dataset_prep.py --split-file with a file of this sha1 gives the same split, so results on it "
            "can be compared." for sha1, (path, names) in sorted(files.items())]


def seeds_line(per_run, main, records, data_dir):
    seeds = sorted({int(r.get("train_seed", r["seed"])) for _, r in records})  # a pool's runs: train_seed
    counts = sorted(set(main["n_seeds"].astype(int)))
    unit = "runs (a split and a seed each)" if any("grid" in r for _, r in records) else "seeds"  # pooling.py
    per_row = "is one run" if counts == [1] else \
        f"pools {counts[0]} {unit}" if len(counts) == 1 else f"pools {counts[0]} to {counts[-1]} {unit}"
    line = (f"- Seeds: {len(seeds)} training seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); "
            f"each model row of the main table {per_row}"
            + (" (fewer than three: preliminary, marked †)." if counts[0] < 3 else "."))
    splits = split_seeds(records, data_dir)
    if len(splits) > 1:
        return line + (f" The scores pool {len(splits)} splits (split seeds "
                       f"{', '.join(str(s) for s in sorted(splits))}): the spread includes the split's.")
    if splits:
        return line + f" One split of the data (split seed {next(iter(splits))}): the split's own variance is " \
            "not in any number here."
    return line + " One split of the data (its split seed is not recorded): the split's own variance is not in " \
        "any number here."


def ships_line(manifests, chips, main):
    ships = ships_per_test_set(manifests, chips)
    tests = [t for t in ordered(main["test_set"], SETS) if t in ships]
    if not tests:
        return "- Ships per test set: unknown (no manifests and no ships in predictions.csv)."
    return ("- Ships per test set (the effective sample size: chips of one ship are not independent, and the "
            "intervals resample ships): " + "; ".join(f"{t} {ships[t][0]} ships ({ships[t][1]} chips)" for t in tests)
            + ".")


def widest_line(main):
    rows = main.dropna(subset=["f1_macro_ci_low", "f1_macro_ci_high"])
    if rows.empty:
        return "- Widest 95 % interval of macro-F1 in the main table: none computed (no ships in predictions.csv)."
    r = rows.loc[(rows["f1_macro_ci_high"] - rows["f1_macro_ci_low"]).idxmax()]
    return (f"- Widest 95 % interval of macro-F1 among the main table's models: "
            f"{ci_cell(r['f1_macro_ci_low'], r['f1_macro_ci_high'])}, "
            f"{r['f1_macro_ci_high'] - r['f1_macro_ci_low']:.1f} points wide ({describe(r)}, trained on "
            f"{r['train_set']}, tested on {r['test_set']}): differences smaller than that are not resolved there.")


def _baseline_text(baselines, train_set):
    rows = baselines[(baselines["train_set"] == train_set) & (baselines["test_set"] == train_set)] \
        if len(baselines) else baselines
    if rows is None or rows.empty:
        return "no baselines (none in scores.csv)"
    return ", ".join(f"{r['model']} {fmt(r['f1_macro_mean'])}" for _, r in rows.iterrows())


def best_lines(main, baselines):
    lines = []
    for train_set in ordered(main.loc[main["train_set"] == main["test_set"], "train_set"], SETS):
        best = best_config(main, train_set)
        if best is None:
            model = "no best model named (no validation split to choose on)"
        else:
            n = int(best["n_seeds"])
            ci = ci_cell(best["f1_macro_ci_low"], best["f1_macro_ci_high"])
            model = (f"best on validation {describe(best)} {fmt(best['f1_macro_mean'])}"
                     + (f" {ci}" if ci != "–" else "") + (f" (mean of {n} seeds)" if n > 1 else " (single seed)"))
        lines.append(f"  - {train_set}: {model}; {_baseline_text(baselines, train_set)}")
    if not lines:
        return []
    return ["- Macro-F1 on each training set's own test split, the best model beside the baselines:", *lines]


def degenerate_line(per_run, baselines):
    known = per_run[per_run["degenerate"].notna()]
    if known.empty:
        return "- Degenerate models: not recorded."
    cells = known.groupby(protocols.RUN, dropna=False)["degenerate"].max()
    n, m = int(cells.sum()), len(cells)
    text = (f"- Degenerate models (one class for more than {protocols.SHARE} of a test set's chips): "
            + (f"none of the {m} trained models." if n == 0 else f"**{n} of {m} trained models** (column "
               "Degenerate)."))
    if len(baselines) and "n_degenerate" in baselines:
        floor = baselines[(baselines["model"] == "floor") & (baselines["n_degenerate"] > 0)]
        if len(floor):
            text += " The `floor` baseline is degenerate by construction."
    return text


def box_lines(g, data_dir, synthetic):
    """The box as markdown lines (a block quote)."""
    main, baselines = g["main"], g["baselines"]
    items = [seeds_line(g["per_run"], main, g["found"], data_dir), *split_file_lines(g["found"], data_dir),
             ships_line(g["manifests"], g["chips"], main),
             widest_line(main), *best_lines(main, baselines), degenerate_line(g["per_run"], baselines),
             "- Cannot say: " + ("anything about real SAR ships (the data is synthetic); " if synthetic else "")
             + "how the same models would do on other ships, satellites, ports or years: the intervals cover which "
             "ships happened to be in the test set, for these trained models, and nothing else."]
    return [f"> **{TITLE}**", ">", *[f"> {line}" for line in items], ""]

