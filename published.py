"""The published study's numbers and the report section that sets this grid's results beside them.

    lines = published.section_published(shown, floors, chips, classes, n=1000, seed=0)   # markdown lines

The only numbers typed into the code: the published results, from Awais & Reggiannini, "Deep Learning for SAR
Ship classification: Focus on Unbalanced Datasets and Inter-Dataset Generalization", ICEAA 2024,
doi 10.1109/ICEAA61917.2024.10701968 (docs/reference-study.md, which numbers the defects of the published code
that PUBLISHED_WHY sums up). Percent, weighted averages, one seed, trained and tested on the same dataset; the
best model was the fine-tuned VGG16 on each dataset; their "merged" set is our `mixed`.
"""
import pandas as pd

from main_section import ci_cell
from protocols import lr_cell, protocol_label
from seed_stats import aggregate_seeds, fmt, md_table, seeds_cell
from runs import lr_text
from ship_stats import pooled_interval

PUBLISHED_BEST = {
    "fusar": {"accuracy": 73.05, "f1_weighted": 70.54,
              "recall": {"Cargo": 90.2, "Fishing": 31.2, "Tanker": 60.3}},
    "opensarship": {"accuracy": 74.56, "f1_weighted": 67.47,
                    "recall": {"Cargo": 98.2, "Fishing": 26.3, "Tanker": 12.6}},
    "mixed": {"accuracy": 79.08, "f1_weighted": 76.76,
              "recall": {"Cargo": 94.6, "Fishing": 27.3, "Tanker": 40.9}},
}
PUBLISHED_MODEL = "fine_vgg"  # ours that matches it: ImageNet VGG16 features, frozen, a trained head
PUBLISHED_IMBALANCE = "none"  # the study trained without rebalancing
# Same paper: several of its models predicted Cargo for every chip; (accuracy, weighted F1) of doing so.
PUBLISHED_ALL_CARGO = {"fusar": (67.06, 53.84), "opensarship": (72.14, 60.46), "mixed": (71.92, 60.18)}
PUBLISHED_WHY = (
    "its code split 20 % train / 80 % test (the index used the wrong way round), kept training one model "
    "object across datasets, reported a per-class precision that is always 100 % and weighted (never "
    "macro) F1, built VGG/ResNet without ImageNet weights, tested on other geometry than it trained on, fed "
    "OpenSARShip as rendered Patch_RGB figures and ran one seed; here every cell is a fresh model on a "
    "grouped 80/20 split, scored with scikit-learn from saved predictions"
)


def interval_cells(agg, s, columns, chips, classes, n, seed):
    """Our row's 95 % ship-bootstrap interval of each column (ship_stats.pooled_interval over its seeds, the draws
    shared), as cells; '–' where the runs' chips are not at hand."""
    keys = [(s, s, PUBLISHED_MODEL, PUBLISHED_IMBALANCE, agg["protocol"], lr_text(agg["lr"]), int(k))
            for k in str(agg["seeds"]).split()]
    arms = [chips.arm(k) for k in keys] if chips is not None else [None]
    if any(a is None for a in arms):
        return ["–"] * len(columns)
    return [ci_cell(*pooled_interval(arms, classes, c, n, seed)[1])
            if c in ("accuracy", "f1_weighted") or c.rpartition("_")[0] in classes else "–" for c in columns]


def section_published(per_run, floors, chips=None, classes=(), n=1000, seed=0):
    """The published scores beside ours (the same model and imbalance strategy, trained and tested on the same
    set; mean over seeds with its 95 % ship-bootstrap interval (`chips`: ship_stats.Chips; n replicates from
    `seed`), a row per protocol and learning rate: `per_run` holds the rows report.py shows, with protocol, lr and
    lr_status) and beside the majority-class floor of our test splits."""
    lines = ["## The published study beside this run", "",
             (f"Published: the best model of Awais & Reggiannini (ICEAA 2024), a fine-tuned VGG16, trained "
              f"and tested on the same set, one seed, percent; and the scores its weaker models reached by "
              f"predicting Cargo for everything. Ours: `{PUBLISHED_MODEL}` with imbalance `{PUBLISHED_IMBALANCE}` (the "
              f"study's setting), and the majority-class floor of our test splits. They differ because "
              f"{PUBLISHED_WHY}. Our numbers are followed by their 95 % interval (a bootstrap over the test "
              f"set's ships, the draws shared by the seeds, as in the main table)."),
             ""]
    recall_classes = list(PUBLISHED_BEST["fusar"]["recall"])
    ours = per_run[(per_run["train_set"] == per_run["test_set"]) & (per_run["model"] == PUBLISHED_MODEL)
                   & (per_run["imbalance"] == PUBLISHED_IMBALANCE)]
    floors = floors.set_index("set") if len(floors) else pd.DataFrame()
    columns = ["accuracy", "f1_weighted", *[f"{c}_recall" for c in recall_classes]]
    dashes = ["–"] * len(recall_classes)
    rows = []
    for s, pub in PUBLISHED_BEST.items():
        rows.append([s, "published, fine-tuned VGG16", seeds_cell(1), f"{pub['accuracy']:.2f}",
                     f"{pub['f1_weighted']:.2f}", *[f"{pub['recall'][c]:.1f}" for c in recall_classes]])
        mine = ours[ours["test_set"] == s]
        if len(mine):
            aggs = aggregate_seeds(mine, ["protocol", "lr", "lr_status"], [c for c in columns if c in mine])
            for _, agg in aggs.iterrows():
                k = int(agg["n_seeds"])
                cis = interval_cells(agg, s, columns, chips, classes, n, seed)
                rows.append([s, f"ours, `{PUBLISHED_MODEL}`, {protocol_label(agg['protocol'])}, lr "
                             f"{lr_cell(agg['lr'], agg['lr_status'])}", seeds_cell(k),
                             *[f"{fmt(agg.get(f'{c}_mean'), agg.get(f'{c}_std'), k)} {ci}"
                               for c, ci in zip(columns, cis)]])
        else:
            rows.append([s, f"ours, `{PUBLISHED_MODEL}`", "no run", "–", "–", *dashes])
        acc, wf1 = PUBLISHED_ALL_CARGO[s]
        rows.append([s, "published, all Cargo", "–", f"{acc:.2f}", f"{wf1:.2f}", *dashes])
        if s in floors.index:
            f = floors.loc[s]
            rows.append([s, f"ours, all {f['majority']}", "–", *[fmt(f.get(c)) for c in columns]])
    header = ["Set", "Source", "Seeds", "Accuracy", "Weighted F1", *[f"Recall {c}" for c in recall_classes]]
    return lines + [md_table(header, rows), ""]
