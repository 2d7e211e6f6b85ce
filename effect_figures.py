"""The report's own figure: each imbalance strategy minus the baseline, seed pair by seed pair (report.py).

    plot_imbalance_effects(pairs, rarest, "demo/report_figures/imbalance_effects.png", "none")

`pairs` are seed_stats.imbalance_pairs' rows as report.py makes them (one per seed pair and test set, with the
protocol and `lr_pair`: "chosen" where both rates were chosen on validation, else the rate); the figure shows
those trained and tested on the same set.
"""
import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

import runs  # noqa: E402
from engine import IMBALANCE  # noqa: E402
from sets import SETS, ordered  # noqa: E402


GROUP = ["model", "protocol", "lr_pair"]  # what a group of bars holds; never pooled with another


def x_groups(own):
    """The bars' groups along the x axis: (model, protocol, lr_pair) in grid order, each labelled with the model,
    and with the protocol (LEGACY records as `legacy`) and the rate where more than one of them occurs."""
    keys = runs.sort_frame(own[GROUP].drop_duplicates(), GROUP)
    many_protocols, many_lrs = own["protocol"].nunique() > 1, own["lr_pair"].nunique() > 1
    groups = []
    for model, protocol, lr in keys.itertuples(index=False, name=None):
        label = model + (f"\n{protocol}" if many_protocols else "") + (f"\nlr {lr}" if many_lrs else "")
        groups.append(((model, protocol, lr), label))
    return groups


def plot_imbalance_effects(pairs, rarest, path, baseline):
    """Each strategy minus `baseline` on the training set's own test split: macro-F1 (top row) and the recall of
    the rarest class (bottom row), a column per training set, a dot per seed pair, a bar for their mean and
    the sample std as error bar; a group of bars per model (and protocol and learning rate, where the pairs have
    several: they are never pooled)."""
    own = pairs[pairs["train_set"] == pairs["test_set"]]
    train_sets = ordered(own["train_set"], SETS)
    groups = x_groups(own)
    strategies = ordered(own["imbalance"], IMBALANCE)
    width = 0.8 / len(strategies)
    panel_width = max(2.6, 0.5 * len(groups) * len(strategies))
    fig, axes = plt.subplots(2, len(train_sets), squeeze=False, sharey="row", layout="constrained",
                             figsize=(1.0 + panel_width * len(train_sets), 5.2))
    rows = [("f1_macro", "Δ macro-F1 (points)"), ("rare_recall", "Δ recall of the rarest class (points)")]
    for j, train_set in enumerate(train_sets):
        for i, (value, label) in enumerate(rows):
            ax = axes[i][j]
            ax.axhline(0, color="grey", lw=0.8)
            for k, strategy in enumerate(strategies):
                part = own[(own["train_set"] == train_set) & (own["imbalance"] == strategy)]
                for m, ((model, protocol, lr), _) in enumerate(groups):
                    d = part.loc[(part["model"] == model) & (part["protocol"] == protocol) & (part["lr_pair"] == lr),
                                 value].dropna()
                    if d.empty:
                        continue
                    x = m + (k - (len(strategies) - 1) / 2) * width
                    ax.bar(x, d.mean(), width * 0.9, color=f"C{k}", alpha=0.5, capsize=3,
                           yerr=d.std() if len(d) > 1 else None,
                           label=strategy if (i, j, m) == (0, 0, 0) else None)
                    ax.plot([x] * len(d), d, "o", color=f"C{k}", ms=3)
            ax.set_xticks(range(len(groups)), [g[1] for g in groups], rotation=30, ha="right", fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"trained and tested on {train_set}" if i == 0 else
                         f"rarest class of {train_set}: {rarest.get(train_set, 'unknown')}", fontsize=8)
    fig.legend(loc="outside lower center", ncols=len(strategies), fontsize=8, title_fontsize=8,
               title=f"strategy minus {baseline}")
    n = own.groupby(["train_set", "imbalance", *GROUP])["seed"].nunique()
    if n.max() == 1:
        title = "dot: the single seed pair (single seed: no spread)"
    else:
        pairs_n = f"{n.min()}" if n.min() == n.max() else f"{n.min()} to {n.max()}"
        title = f"dot: one seed pair; bar: their mean;\nerror bar: sample std (n = {pairs_n} pairs)"
    fig.suptitle(title, fontsize=8)
    runs.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
