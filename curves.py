"""Training curves: each cell's loss, eval-mode training accuracy and validation macro-F1 per epoch, drawn from
the `history` its record keeps (grid_cell.py), and the same scalars sent to TensorBoard while it trains.

    curves.write_cell(folder, record)       # <cell folder>/curves.png, before the cell folder is published
    curves.draw_missing(records)            # curves.png of finished cells that lack one (tables.aggregate)
    lines = curves.section_curves(figure_dir, report_dir, found, shown)   # the report's "Training curves"
    with curves.EpochLog(log_dir, cell_name) as log:    # test_models.py --tensorboard DIR
        log.add(history[-1])

Figures:
    <cell folder>/curves.png    one cell: training loss and validation loss (dashed; right axis), training accuracy
                                in eval mode and validation macro-F1 (left axis, percent), a line at the epoch the
                                cell kept (record["protocol"]["epoch"])
    <report_figures>/curves_<train_set>.png   every cell the report shows of one training set: a row per
                                configuration (model, imbalance strategy, learning rate, protocol), a column per
                                quantity, the seeds overlaid, a dot at each seed's kept epoch; a model that diverges
                                or collapses stands out against its other seeds and its neighbours
Records written before the eval-mode checks existed have only the training-mode accuracy: it is drawn instead and
the figure says so.

Cells published before the curves existed get theirs from their record's history, drawn by tables.aggregate (the
end of every grid and --aggregate-only): that is the step that rebuilds every derived file from the records, it runs
on rank 0 alone under torchrun, and report.py only reads runs/ (with --pool, other grids' folders).

TensorBoard: with --tensorboard DIR every cell writes to DIR/<cell name> (runs.cell_name), on rank 0 alone, after
every epoch: train/loss, train/accuracy (training mode, during the epoch), train/eval_accuracy, and with a
validation split val/f1_macro, val/balanced_accuracy, val/loss; at the end kept_epoch. A resumed cell starts its
log at the first epoch it trains (SummaryWriter's purge_step drops what the killed run logged from it on).
TensorBoard is optional: summary_writer() raises TensorBoardMissing when the package cannot be imported.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import runs  # noqa: E402

CURVES = "curves.png"  # in every finished cell folder
DPI = 100
# the grid figure's columns: (series, title)
COLUMNS = (("loss", "training loss (validation: dashed)"), ("accuracy", "training accuracy % (eval mode)"),
           ("val_f1", "validation macro-F1 %"))


class TensorBoardMissing(Exception):
    """--tensorboard was asked for and the tensorboard package cannot be imported."""


# ------------------------------------------------------------------------------------------------------------
# the numbers

def _points(history, get):
    """(epochs, values) of the entries where get(entry) is a number; non-finite values stay as NaN (a gap)."""
    pairs = [(h["epoch"], get(h)) for h in history]
    pairs = [(e, float(v) if math.isfinite(float(v)) else math.nan) for e, v in pairs if v is not None]
    return [e for e, _ in pairs], [v for _, v in pairs]


def series(history):
    """{name: (epochs, values)} of a record's history: loss, val_loss, accuracy (eval mode where every entry has it,
    else the training-mode accuracy: `eval_mode` False), val_f1."""
    eval_mode = all("train_eval_accuracy" in h for h in history)
    accuracy = "train_eval_accuracy" if eval_mode else "accuracy"
    return {"loss": _points(history, lambda h: h.get("loss")),
            "val_loss": _points(history, lambda h: h.get("val", {}).get("loss")),
            "accuracy": _points(history, lambda h: h.get(accuracy)),
            "val_f1": _points(history, lambda h: h.get("val", {}).get("f1_macro")), "eval_mode": eval_mode}


def kept_epoch(record):
    """The epoch whose weights the cell kept; the last epoch of its history where the record does not say."""
    epoch = record.get("protocol", {}).get("epoch")
    return epoch if epoch is not None else record["history"][-1]["epoch"]


def diverged(record):
    """True when a training loss of the record's history is not finite (NaN or infinite)."""
    return any(h.get("loss") is not None and not math.isfinite(float(h["loss"])) for h in record["history"])


def _save(fig, path):
    runs.write_atomic(path, lambda p: fig.savefig(p, dpi=DPI, format="png"))
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------
# one cell

def plot_cell(record, path):
    """curves.png of one cell (module docstring), 5 x 3 inches."""
    s, kept = series(record["history"]), kept_epoch(record)
    fig, left = plt.subplots(figsize=(5, 3))
    right = left.twinx()
    accuracy = "training accuracy % (eval mode)" if s["eval_mode"] else "training accuracy % (training mode)"
    left.plot(*s["accuracy"], color="C0", marker=".", label=accuracy)
    left.plot(*s["val_f1"], color="C2", marker=".", label="validation macro-F1 %")
    right.plot(*s["loss"], color="C3", marker=".", label="training loss")
    right.plot(*s["val_loss"], color="C3", marker=".", linestyle="--", label="validation loss")
    left.axvline(kept, color="0.3", linestyle=":", linewidth=1.2, label=f"kept: epoch {kept}")
    left.set_ylim(0, 100)
    left.set_xlabel("epoch", fontsize=8)
    left.set_ylabel("percent", fontsize=8)
    right.set_ylabel("loss", fontsize=8)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (left, right):
        ax.tick_params(labelsize=7)
    left.set_title(runs.cell_name(runs.record_cell(record)), fontsize=8)
    handles = [h for ax in (left, right) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=6, frameon=False)
    fig.subplots_adjust(left=0.12, right=0.88, top=0.9, bottom=0.33)
    _save(fig, path)


def write_cell(folder, record):
    """<folder>/curves.png from the record's history (nothing for a record without one); returns its path or None."""
    if not record.get("history"):
        return None
    path = Path(folder) / CURVES
    plot_cell(record, path)
    return path


def draw_missing(records):
    """curves.png of every finished cell [(folder, record)] that lacks one; a folder that cannot be written is
    named and left as it is (the figure is derived: the cell stays valid). Returns the paths drawn."""
    drawn = []
    for folder, record in records:
        if (Path(folder) / CURVES).is_file() or not record.get("history"):
            continue
        try:
            drawn.append(write_cell(folder, record))
        except OSError as e:
            print(f"could not draw {Path(folder) / CURVES} ({type(e).__name__}: {e}); the cell is unchanged")
    if drawn:
        print(f"training curves drawn from the records' history for {len(drawn)} cell(s) finished without them")
    return drawn


# ------------------------------------------------------------------------------------------------------------
# the report's grid of every shown cell of a training set

def _row_label(record):
    return f"{record['model']}\n{record['imbalance']}, lr {runs.lr_text(record['lr'])}\n{record['protocol']['name']}"


def _seed_label(record):
    """A pooled record (pooling.py) has its replicate in `seed`, its grid and training seed beside."""
    if "grid" in record:
        return f"{Path(record['grid']).name} seed {record.get('train_seed', record['seed'])}"
    return f"seed {record['seed']}"


def _plot_panel(ax, column, cells, colors):
    """One quantity of one configuration: a line per seed, a dot at its kept epoch."""
    for record in cells:
        s, kept, color = series(record["history"]), kept_epoch(record), colors[_seed_label(record)]
        for name, style in ((column, "-"), *((("val_loss", "--"),) if column == "loss" else ())):
            epochs, values = s[name]
            ax.plot(epochs, values, color=color, linestyle=style, linewidth=1)
            ax.plot([e for e in epochs if e == kept], [v for e, v in zip(epochs, values) if e == kept], "o",
                    color=color, markersize=3.5)
    notes = []
    if column == "val_f1" and not any(series(r["history"])["val_f1"][0] for r in cells):
        notes.append("no validation split")
    if column == "accuracy" and not all(series(r["history"])["eval_mode"] for r in cells):
        notes.append("training mode (older records)")
    if notes:
        ax.text(0.5, 0.95, "; ".join(notes), transform=ax.transAxes, ha="center", va="top", fontsize=6,
                color="0.4")
    if column != "loss":
        ax.set_ylim(0, 100)
    ax.tick_params(labelsize=6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_set(train_set, rows, path):
    """report_figures/curves_<train_set>.png: rows [(label, [record, ...])], a row per configuration."""
    seeds = list(dict.fromkeys(_seed_label(r) for _, cells in rows for r in cells))
    colors = {s: f"C{k % 10}" for k, s in enumerate(seeds)}
    width, height = 8.5, 1.1 + 1.5 * len(rows)
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(width, height), squeeze=False)
    for i, (label, cells) in enumerate(rows):
        for j, (column, title) in enumerate(COLUMNS):
            _plot_panel(axes[i][j], column, cells, colors)
            if i == 0:
                axes[i][j].set_title(title, fontsize=8)
        axes[i][0].set_ylabel(label, fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=7)
    handles = [matplotlib.lines.Line2D([], [], color=colors[s], label=s) for s in seeds]
    handles.append(matplotlib.lines.Line2D([], [], color="0.3", marker="o", linestyle="", label="kept epoch"))
    fig.suptitle(f"Training curves: trained on {train_set}", fontsize=9, y=1 - 0.08 / height, va="top")
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / height),
               ncol=min(len(handles), 6), fontsize=7, frameon=False)
    fig.subplots_adjust(left=1.2 / width, right=1 - 0.2 / width, bottom=0.45 / height, top=1 - 0.9 / height,
                        wspace=0.3, hspace=0.35)
    _save(fig, path)


def shown_records(found, shown):
    """The records [(folder, record)] of the runs the report's tables show (its `shown` rows, any test set)."""
    keys = set(zip(shown["train_set"], shown["model"], shown["imbalance"], shown["protocol"],
                   shown["lr"].astype(float), shown["seed"].astype(int))) if len(shown) else set()
    return [(folder, r) for folder, r in found if (r["train_set"], r["model"], r["imbalance"],
                                                   r["protocol"]["name"], float(r["lr"]), int(r["seed"])) in keys]


def _groups(records):
    """{train_set: [(row label, [record, ...])]} in the records' (grid) order; records without a history left out."""
    out = {}
    for record in records:
        if record.get("history"):
            rows = out.setdefault(record["train_set"], {})
            rows.setdefault(_row_label(record), []).append(record)
    return {train_set: list(rows.items()) for train_set, rows in out.items()}


def section_curves(figure_dir, report_dir, found, shown):
    """The report's "Training curves" section: a figure per training set (written into figure_dir) of every
    record of `found` the tables show, linked relative to report_dir; the cells whose loss diverged, named."""
    from cam_section import image_lines  # here, not at the top: training (grid_cell) needs no Grad-CAM stack
    lines = ["## Training curves", ""]
    records = [r for _, r in shown_records(found, shown)]
    groups = _groups(records)
    if not groups:
        return lines + ["No run the tables show has a per-epoch history in its record.json.", ""]
    paths = []
    Path(figure_dir).mkdir(parents=True, exist_ok=True)
    for train_set, rows in groups.items():
        paths.append(Path(figure_dir) / f"curves_{train_set}.png")
        plot_set(train_set, rows, paths[-1])
    lines += [("Per training set, every run the tables show, epoch by epoch: training loss (validation loss "
               "dashed), training accuracy in eval mode on a fixed subset of the training split, validation "
               "macro-F1; a row per model, imbalance strategy, learning rate and protocol, the seeds overlaid, a "
               "dot at the epoch each run kept. A diverging model shows a rising or missing loss, a collapsing "
               "one an accuracy stuck at its majority class's share; each cell's own figure is `curves.png` in its "
               "folder under `runs/`."), "", *image_lines(paths, report_dir)]
    bad = [runs.cell_name(runs.record_cell(r)) + (f" ({r['grid']})" if "grid" in r else "") for r in records
           if r.get("history") and diverged(r)]
    if bad:
        lines += [f"Training loss not finite (diverged): {', '.join(bad)}.", ""]
    without = sum(not r.get("history") for r in records)
    if without:
        lines += [f"{without} run(s) have no per-epoch history in their record.json: not drawn.", ""]
    return lines


# ------------------------------------------------------------------------------------------------------------
# TensorBoard

def summary_writer():
    """torch's SummaryWriter class; TensorBoardMissing (the message says what to install) when the tensorboard
    package cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TensorBoardMissing(
            f"--tensorboard needs the tensorboard package, which this Python cannot import ({e}): install it with "
            "`pip install tensorboard` into the environment that runs test_models.py, or leave out --tensorboard"
        ) from None
    return SummaryWriter


def scalars(entry):
    """{tag: value} of one history entry (module docstring)."""
    out = {"train/loss": entry.get("loss"), "train/accuracy": entry.get("accuracy"),
           "train/eval_accuracy": entry.get("train_eval_accuracy"),
           **{f"val/{k}": v for k, v in entry.get("val", {}).items()}}
    return {k: float(v) for k, v in out.items() if v is not None}


class EpochLog:
    """A cell's TensorBoard log for `with`: log_dir None (no --tensorboard, or a rank other than 0) logs nothing.
    The writer opens at the first epoch this run trains (a resumed cell's: the one after the epoch checkpoint)."""

    def __init__(self, log_dir, cell_name):
        self.path, self.writer = (None if log_dir is None else Path(log_dir, cell_name)), None

    def add(self, entry):
        if self.path is None:
            return
        if self.writer is None:  # purge_step: what a killed run logged from this epoch on is dropped
            self.writer = summary_writer()(log_dir=str(self.path), purge_step=entry["epoch"])
        for tag, value in scalars(entry).items():
            self.writer.add_scalar(tag, value, entry["epoch"])
        self.writer.flush()  # a killed run keeps its epochs

    def kept(self, epoch, last_epoch):
        if self.writer is not None:
            self.writer.add_scalar("kept_epoch", epoch, last_epoch)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.writer is not None:
            self.writer.close()
        return False
