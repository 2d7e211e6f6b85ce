"""grad_cams.py's figures: heat maps over chips, the per-set comparison grid and the on-ship bar chart.

    overlay(chip, cam_map)                                      # uint8 RGB heat map over a uint8 chip
    plot_set_grid(set_name, records, per_class, path, method)   # figures/cam_grid_<set>.png
    fig = set_grid_figure(set_name, records, per_class, method) # the same figure, not written
    plot_on_ship(summary, path)                                 # figures/cam_on_ship.png (vs prior, uniform)

Figures are matplotlib Figure objects, not pyplot: no global figure state, no GUI backend needed on a headless
machine; each is written atomically (runs.write_atomic). The comparison grid uses constrained layout and wraps
its title to the figure's width, so title, column heads and chips stay inside the figure and apart from one
model column to many (tests/test_reliability_cams.py measures it).
"""
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pytorch_grad_cam.utils.image import show_cam_on_image

import runs

COLUMN_IN, ROW_IN = 1.9, 2.0   # inches per column (a chip or a model) and per row of the comparison grid
TITLE_PT = 10


def _chars_per_line(width_in, points):
    """How many characters of a `points` font fit in `width_in` inches, with a margin (DejaVu Sans averages
    about 0.55 em per character; 0.62 leaves room for wide letters)."""
    return max(12, int((width_in - 0.2) * 72 / (0.62 * points)))


def overlay(chip, cam_map):
    """The heat map over a uint8 chip (S, S): uint8 RGB (S, S, 3)."""
    rgb = np.repeat(chip[..., None].astype(np.float32) / 255.0, 3, axis=2)
    return show_cam_on_image(rgb, cam_map, use_rgb=True)


def save_figure(fig, path, dpi):
    runs.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def _figure_rows(rows, per_class):
    """Indices of the first `per_class` rows of each true class."""
    keep, seen = [], {}
    for k, row in enumerate(rows):
        seen[row["true"]] = seen.get(row["true"], 0) + 1
        if seen[row["true"]] <= per_class:
            keep.append(k)
    return keep


def set_grid_figure(set_name, records, per_class, method="gradcam"):
    """The Figure of plot_set_grid. Constrained layout, not tight_layout: tight_layout reserves no room for the
    suptitle, which then overlaps the column heads of a tall figure; the suptitle is wrapped to the figure's
    width, which a figure of one or two columns is narrower than."""
    model_names = list(records)
    first = records[model_names[0]]
    keep = _figure_rows(first["rows"], per_class)
    ncol = 1 + len(model_names)
    width = COLUMN_IN * ncol
    fig = Figure(figsize=(width, ROW_IN * len(keep) + 0.5), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.08)   # the default 3 pt lets the suptitle touch the column heads
    axes = fig.subplots(len(keep), ncol, squeeze=False)
    for r, k in enumerate(keep):
        row = first["rows"][k]
        ax = axes[r, 0]
        ax.imshow(first["chips"][k], cmap="gray", vmin=0, vmax=255)
        if first["regions"][k] is not None:
            ax.contour(first["regions"][k], levels=[0.5], colors="lime", linewidths=0.8)
        head = "chip, ship region\n" if r == 0 else ""
        ax.set_title(f"{head}{row['true']}\n{Path(row['path']).stem[:24]}", fontsize=7)
        for c, name in enumerate(model_names, start=1):
            rec = records[name]
            mrow = rec["rows"][k]
            axes[r, c].imshow(overlay(rec["chips"][k], rec["maps"][k]))
            energy = mrow["on_ship_energy"]
            score = "" if np.isnan(energy) else f"\non ship {energy:.2f}"
            head = f"{name}\n" if r == 0 else ""
            axes[r, c].set_title(f"{head}true {mrow['true']} / pred {mrow['pred']}{score}", fontsize=7,
                                 color="black" if mrow["pred"] == mrow["true"] else "crimson")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    title = f"{method} on the {set_name} test set (models trained on {set_name}); red = misclassified"
    fig.suptitle(textwrap.fill(title, _chars_per_line(width, TITLE_PT)), fontsize=TITLE_PT)
    return fig


def plot_set_grid(set_name, records, per_class, path, method="gradcam"):
    """Rows of chips (first `per_class` of each class), a chip column, then one overlay column per model."""
    save_figure(set_grid_figure(set_name, records, per_class, method), path, dpi=110)


def plot_on_ship(summary, path):
    """Mean on-ship energy per model, a panel per set, against the centre prior (cam_scores.py) and the
    uniform-map baseline (area fraction); all explained chips (cam_summary.csv rows of outcome `all`).
    Panels of sets whose regions are estimates (FUSAR-Ship's centre disc) are titled approximate."""
    if "outcome" in summary:
        summary = summary[summary["outcome"] == "all"]
    set_names = list(dict.fromkeys(summary["set"]))
    fig = Figure(figsize=(0.6 + (0.8 + 0.9 * summary["model"].nunique()) * len(set_names), 3.4))
    axes = fig.subplots(1, len(set_names), squeeze=False)
    for ax, set_name in zip(axes[0], set_names):
        s = summary[summary["set"] == set_name]
        x = np.arange(len(s))
        ax.bar(x - 0.27, s["on_ship_energy"], 0.27, label="CAM energy on ship", color="tab:red")
        if "prior_energy" in s:
            ax.bar(x, s["prior_energy"], 0.27, label="centre prior", color="tab:blue")
        ax.bar(x + 0.27, s["ship_area_fraction"], 0.27, label="uniform map (ship area)", color="tab:gray")
        ax.set_xticks(x, s["model"], rotation=30, ha="right")
        top = np.nanmax(s[[c for c in ("on_ship_energy", "prior_energy", "ship_area_fraction") if c in s]].values)
        ax.set_ylim(0, min(1.0, 1.15 * top) if top > 0 else 1.0)   # small ships: the bars stay readable
        approximate = "approximate" in s and s["approximate"].astype(str).eq("True").any()
        ax.set_title(set_name + (" (approximate region)" if approximate else ""), fontsize=9)
    axes[0, 0].set_ylabel("share of the map's energy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
