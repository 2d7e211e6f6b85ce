"""Which classes dataset_prep.py prepares: the requested names matched to the data found, and the checks that stop
a run (or warn) before a set that no grid could use is written.

    classes = prep_classes.choose_classes(args, available, present, notes)   # available: {dataset: Counter}
    prep_classes.check_found(args, available, forced)                         # exits when nothing was found

A class is kept when any dataset found has chips of it; a class named in --classes with no chips is dropped with
a warning.
"""

import sys

import readers

DEMO_HINT = "  Or run the demo on synthetic data: python dataset_prep.py --synthetic"


def where_to_get():
    return "\n".join([*(r.where_to_get for r in readers.READERS), DEMO_HINT])


def resolve_classes(text, available):
    """Requested class names -> the datasets' spelling. `available`: {dataset: Counter(class)} of the data found.

    A name is known when the data holds it or when it is a class name of any dataset (so Fishing is accepted on
    data that happens to have none; the caller warns); anything else is an error listing what is there.
    """
    found = sorted({c for counts in available.values() for c in counts})
    known = found + sorted({c for r in readers.READERS for c in r.classes} - set(found))
    wanted, unknown = [], []
    for raw in (c.strip() for c in text.split(",")):
        if not raw:
            continue
        match = [n for n in known if n == raw] or [n for n in known if n.lower() == raw.lower()]
        if match:
            if match[0] not in wanted:
                wanted.append(match[0])
        else:
            unknown.append(raw)
    if unknown or not wanted:
        lines = [f"  {n}: " + ", ".join(f"{r.name} {available[r.name][n]}" for r in readers.READERS
                                         if available.get(r.name, {}).get(n))
                 for n in found]
        what = f"unknown class{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}" if unknown \
            else "no class given"
        raise SystemExit(f"error: {what} in --classes. Available classes (chips per dataset):\n" + "\n".join(lines))
    return sorted(wanted)


def check_found(args, available, forced):
    """Exit with a message when no chips were found, or none in a path the user named."""
    if not any(available.values()):
        if any(forced.values()):
            named = " ".join(f"--{r.name} {' '.join(getattr(args, r.name) or [])}" for r in readers.READERS
                             if forced[r.name])
            expected = " or ".join(r.expected for r in readers.READERS)
            raise SystemExit(f"error: no chips found in {named}: expected {expected}\nWhere to get them:\n"
                             + where_to_get())
        titles = " or ".join(r.title for r in readers.READERS)
        flags = " and ".join(f"--{r.name} PATH" for r in readers.READERS)
        raise SystemExit(f"error: no {titles} data found in {args.raw_dir}/ (the synthetic data in "
                         f"{args.raw_dir}/synthetic/ is not searched).\nPut the downloads under {args.raw_dir}/ (any "
                         f"folder, zip or rar there), or name them with {flags}. Where to get them:\n" + where_to_get())
    for r in readers.READERS:
        if forced[r.name] and not available[r.name]:
            raise SystemExit(f"error: no {r.title} chips found in --{r.name} {' '.join(getattr(args, r.name) or [])}")


def choose_classes(args, available, present, notes):
    """The classes to prepare (those with chips), warning about and noting the others; appends to `notes`."""
    classes = resolve_classes(args.classes, available)
    empty = [k for k in classes if not any(counts[k] for counts in available.values())]
    if len(empty) == len(classes):
        raise SystemExit(f"error: none of the classes {', '.join(classes)} has chips in the data found; "
                         f"available: {', '.join(sorted({k for counts in available.values() for k in counts}))}")
    for k in empty:
        print(f"warning: no {k} chips in the data found: the prepared sets have no {k} class", file=sys.stderr)
    classes = [k for k in classes if k not in empty]
    if len(present) == 1:
        absent = " or ".join(r.title for r in readers.READERS if r not in present)
        print(f"only {present[0].title} found (no {absent}): preparing the {present[0].name} set")
    notes += [f"no {k} chips in the data found (class dropped)" for k in empty]
    notes += [f"{r.title} has no {k} chips" for r in present for k in classes if not available[r.name][k]]
    for r in present:
        for warning in r.option_warnings(args):
            print(f"warning: {warning}", file=sys.stderr)
    return classes


def refuse_one_class(counts, available):
    """Exit when a set would hold fewer than two classes: nothing to classify, and the grid would stop on it.
    counts: {set: Counter(class: chips)} of the chips going into each per-dataset set; available: {dataset:
    Counter(class: chips)} of every chip found (named in the message)."""
    for name, held in counts.items():
        kinds = sorted(k for k, n in held.items() if n)
        if len(kinds) >= 2:
            continue
        what = f"one class only ({kinds[0]}, {held[kinds[0]]} chips)" if kinds else "no chips of the classes asked"
        found = ", ".join(f"{k} {n}" for k, n in sorted(available.get(name, {}).items()))
        others = [n for n in counts if n != name]
        leave = f", or leave the {name} data out (name only {' '.join(f'--{n} PATH' for n in others)})" if others \
            else ""
        raise SystemExit(f"error: the {name} set would hold {what}: a classifier needs two or more classes. Choose "
                         f"two or more classes the {name} data has with --classes (found: {found}){leave}")


def class_list_warnings(class_lists):
    """A warning when the sets (class_lists: {set: sorted classes}) do not share one class list: test_models.py
    refuses to test a model of one set on a set with other classes."""
    if len({tuple(v) for v in class_lists.values()}) < 2:
        return []
    shared = sorted(set.intersection(*(set(v) for v in class_lists.values())))
    listing = "; ".join(f"{n}: {', '.join(v)}" for n, v in class_lists.items())
    fix = f"prepare matching sets with --classes {','.join(shared)} (the classes every set has)" \
        if len(shared) >= 2 else "no two classes are in every set, so no --classes makes them match"
    return [f"the prepared sets have different classes ({listing}): test_models.py refuses cross-set evaluation (a "
            f"model trained on one set tested on another), so its default grid stops at its start; {fix}, or leave "
            "the odd sets out with test_models.py --datasets and --test-sets"]
