"""The grid's tables and figures, rebuilt from the records under runs/ (test_models.py writes them at its end and
with --aggregate-only; report.py reads them).

    import tables
    tables.aggregate("demo")        # scores.csv, predictions.csv, results.txt, figures/ from demo/runs/

    scores.csv          one row per (train_set, test_set, model, imbalance, seed): accuracy, balanced
                        accuracy, weighted and macro precision/recall/F1, per-class precision/recall/F1
                        (percent, two decimals) and support (count), recomputed with scikit-learn from
                        the predictions
    predictions.csv     one row per evaluated chip: the cell, path (as in the set's manifest), true, pred,
                        prob_<Class> for every class
    results.txt         the human-readable log: configuration, epochs, metrics and confusion matrices per cell
    figures/cross_dataset_f1_macro_<imbalance>.png   macro-F1 heat map train set x test set, a panel per model
    figures/per_class_f1_<imbalance>.png             per-class F1 bars, a panel per (train set, test set)
Per cell (write_test_results, into the cell's folder): predictions_<test_set>.csv, confusion_<test_set>.csv and
.png; aggregate draws curves.png (curves.py) into the folders of cells finished without one. Every file is
written atomically (runs.write_atomic) or inside a cell folder that is published whole.
"""

from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import baselines  # noqa: E402
import bootstrap  # noqa: E402
import curves  # noqa: E402
import metrics  # noqa: E402
import runs  # noqa: E402
import sets  # noqa: E402
from models import MODEL_CHOICES  # noqa: E402
from sets import SETS, ordered  # noqa: E402

# The args a finished cell's results depend on besides its keys: a rerun with other values must not silently
# reuse it. Device, amp and workers are left out: a grid may be finished on another machine.
TRAIN_SETTINGS = ("epochs", "batch_size", "img_size", "augment", "weights", "bn_recalibrate", "select", "patience")
KEYS = ("train_set", "test_set", "model", "imbalance", "inputs", "adaptation", "lr", "seed")
DEGENERATE_SHARE = 0.95  # one class predicted for more than this share of a test set's chips: a degenerate model
# 95 % intervals of every metric from a bootstrap over ships (bootstrap.py): resamples by default, and the seed
N_BOOTSTRAP, BOOTSTRAP_SEED = 1000, 0
# After the metrics: how the cell was trained and kept, whether its predictions are degenerate, and whether its
# learning rate is the one chosen on validation (selected_lrs).
PROTOCOL_COLUMNS = ("protocol", "bn_recalibrate", "select", "epoch", "val_f1_macro", "degenerate", "top_share",
                    "selected")


def _write_csv(frame, path, float_format):
    frame.to_csv(path, index=False, float_format=float_format, lineterminator="\n")


def predictions_name(test_set, adaptation="none"):
    """A cell's predictions file of a test set: predictions_<test_set>.csv, predictions_<test_set>.<adaptation>.csv
    for a label-free adaptation (adaptation.py)."""
    return f"predictions_{test_set}.csv" if adaptation == "none" else f"predictions_{test_set}.{adaptation}.csv"


def write_test_results(folder, title, test_set, classes, paths, true, probs, adaptation="none"):
    """predictions_<test_set>[.<adaptation>].csv, confusion_<test_set>[.<adaptation>].csv/.png in `folder`; returns
    the score row."""
    stem = predictions_name(test_set, adaptation).removeprefix("predictions_").removesuffix(".csv")
    pred = probs.argmax(1)
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame({"path": paths, "true": names[true], "pred": names[pred]})
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, k]
    _write_csv(table, folder / f"predictions_{stem}.csv", "%.6f")
    matrix = metrics.confusion(true, pred, classes)
    pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes).to_csv(
        folder / f"confusion_{stem}.csv", lineterminator="\n")
    row = metrics.score_row(true, pred, classes)
    how = "" if adaptation == "none" else f" ({adaptation})"
    metrics.plot_confusion(matrix, classes, f"{title} on {test_set}{how}: accuracy {row['accuracy']:.1f} %, "
                           f"macro F1 {row['f1_macro']:.1f} %",
                           folder / f"confusion_{stem}.png")
    return row


class ShipGroups:
    """The ship (manifest `group`) of every test chip, read from the test set's manifest: under `data_dir`, or the
    --data-dir a record was trained with. None where the manifest is missing or was prepared again since the
    record (its sha1 differs): then there is no interval, and a line says why."""

    def __init__(self, data_dir=None):
        self.data_dir, self._maps, self.missing = data_dir, {}, set()

    def of(self, record, test_set, paths):
        set_dir = Path(self.data_dir or record["args"].get("data_dir", "")) / test_set
        key = (str(set_dir), record.get("manifests", {}).get(test_set))
        if key not in self._maps:
            try:
                same = sets.manifest_sha1(set_dir) == key[1]
                frame = sets.manifest_frame(set_dir) if same else None
            except FileNotFoundError:
                frame = None
            self._maps[key] = None if frame is None else dict(zip(frame["path"], frame["group"]))
        found = self._maps[key]
        if found is None or any(p not in found for p in paths):
            self.missing.add(str(set_dir))
            return None
        return [found[p] for p in paths]


def read_predictions(folder, test_set, adaptation="none"):
    """A cell's predictions_<test_set>[.<adaptation>].csv; runs.RecordError naming the cell folder when it is missing
    or damaged."""
    path = Path(folder) / predictions_name(test_set, adaptation)
    try:
        pred = pd.read_csv(path, keep_default_na=False, dtype={"path": str, "true": str, "pred": str})
    except (OSError, ValueError) as e:  # missing, empty (pandas' EmptyDataError) or not CSV (ParserError)
        raise runs.RecordError.damaged(folder, f"cannot read {path} ({type(e).__name__}: {e})") from None
    missing = [c for c in ("path", "true", "pred") if c not in pred]
    if missing:
        raise runs.RecordError.damaged(folder, f"{path} lacks the column(s) {', '.join(missing)}")
    return pred


def record_variants(record, test_set):
    """The adaptations a record has predictions of on `test_set`: none first, then those evaluated (adaptation.py;
    an entry without metrics is one that does not apply, such as adabn of a model without batch norm)."""
    found = record["test_sets"][test_set].get("adaptation", {})
    return ["none", *(v for v in found if "metrics" in found[v])]


def cell_keys(record, test_set, adaptation="none"):
    """The KEYS of one row of scores.csv: the record's cell, the test set and the adaptation."""
    return {**{k: record.get(k, runs.RAW) if k == "inputs" else record[k] for k in KEYS
               if k not in ("test_set", "adaptation")}, "test_set": test_set, "adaptation": adaptation}


def score_records(records, n_boot, data_dir):
    """(score rows, prediction frames) of every record, test set and adaptation; intervals from a ship bootstrap."""
    groups = ShipGroups(data_dir)
    test_order = ordered([t for _, r in records for t in r["test_sets"]], SETS)
    scores, predictions = [], []
    for folder, rec in records:
        for test_set in sorted(rec["test_sets"], key=test_order.index):
            for variant in record_variants(rec, test_set):
                pred = read_predictions(folder, test_set, variant)
                cell = {**cell_keys(rec, test_set, variant), "protocol": rec["protocol"]["name"]}
                row = {**cell, **metrics.score_row(pred["true"], pred["pred"], rec["classes"]), **protocol_row(rec)}
                row["degenerate"], row["top_share"] = degenerate(pred["pred"], rec["classes"])
                ships = groups.of(rec, test_set, list(pred["path"]))
                if ships is not None and n_boot:
                    row.update(bootstrap.ship_intervals(pred["true"], pred["pred"], ships, rec["classes"], n=n_boot,
                                                        seed=BOOTSTRAP_SEED))
                scores.append(row)
                predictions.append(pd.concat([pd.DataFrame({**cell, "group": ships or ""}, index=pred.index), pred],
                                             axis=1))
    if groups.missing and n_boot:
        print(f"no ship intervals for test sets whose manifest is not at hand or changed since training: "
              f"{', '.join(sorted(groups.missing))} (name the prepared sets with --data-dir)")
    return scores, predictions


def aggregate(output_dir, data_dir=None, n_boot=N_BOOTSTRAP):
    """Rebuild scores.csv, predictions.csv, results.txt and figures/ from every record found; returns scores.
    n_boot: ship-bootstrap resamples of every interval (0: none); data_dir: where the test sets' manifests are
    (default: the --data-dir each record was trained with)."""
    output_dir = Path(output_dir)
    records = runs.find_records(output_dir)
    if not records:
        raise SystemExit(f"no finished cells under {output_dir / 'runs'} "
                         "(runs/<train_set>/<model>/<imbalance>/lr<lr>/seed<k>/record.json): "
                         "run python test_models.py first")
    curves.draw_missing(records)  # curves.png of cells finished before the curves existed, from their history
    classes = ordered([c for _, r in records for c in r["classes"]], [])
    # floor, size_only and shortcut: what the majority class, ship size and shape-free image statistics give
    cells = records + baselines.grid_cells(output_dir, records, data_dir)
    scores, predictions = score_records(cells, n_boot, data_dir)
    scores = pd.DataFrame(scores).reindex(columns=list(KEYS) + metrics.score_columns(classes)
                                          + bootstrap.interval_columns(classes) + list(PROTOCOL_COLUMNS))
    for c in classes:  # counts stay integers even where a record lacks a class
        scores[f"{c}_support"] = scores[f"{c}_support"].astype("Int64")
    scores["selected"] = selected_lrs(scores)
    predictions = pd.concat(predictions, ignore_index=True).reindex(
        columns=list(KEYS) + ["protocol", "group", "path", "true", "pred"] + [f"prob_{c}" for c in classes])
    # 3e-05, not the metrics' two decimals; empty for the baselines, which have no learning rate
    lr_text = {"lr": lambda f: f["lr"].map(runs.lr_text)}
    runs.write_atomic(output_dir / "scores.csv", lambda p: _write_csv(scores.assign(**lr_text), p, "%.2f"))
    runs.write_atomic(output_dir / "predictions.csv",
                      lambda p: _write_csv(predictions.assign(**lr_text), p, "%.6f"))
    text = results_text(records, scores, output_dir)
    runs.write_atomic(output_dir / "results.txt", lambda p: p.write_text(text))
    figures = plot_figures(scores, classes, output_dir / "figures")
    if not scores.selected.all():
        print("figures leave out the learning rates not chosen on validation (scores.csv column selected); where "
              "several rates were trained without a validation split none is chosen: prepare one "
              "(dataset_prep.py --val-size) to compare them")
    print(f"tables: {output_dir / 'scores.csv'} ({len(scores)} rows), {output_dir / 'predictions.csv'} "
          f"({len(predictions)} rows), {output_dir / 'results.txt'}; figures: "
          f"{', '.join(str(f) for f in figures)}")
    return scores


def protocol_row(record):
    """How a cell was trained and which epoch it kept (runs.read_record gives earlier records the LEGACY one)."""
    p = record["protocol"]
    return {"bn_recalibrate": p["bn_recalibrate"], "select": p["select"], "epoch": p.get("epoch"),
            "val_f1_macro": p.get("val_f1_macro")}


def degenerate(pred, classes):
    """(True when one class takes more than DEGENERATE_SHARE of the predictions, its share in percent), from the
    predicted class names."""
    share = pd.Series(list(pred)).value_counts(normalize=True).max() if len(pred) else 0.0
    return bool(share > DEGENERATE_SHARE), round(100.0 * float(share), 2)


def selected_lrs(scores):
    """True for the rows whose learning rate is the one chosen for their (training set, model, imbalance, inputs,
    protocol): the highest mean validation macro-F1 over seeds (ties: the smaller rate). Where there is one rate
    it is chosen; where there are several and no validation score, none is (nothing is chosen by a test score)."""
    group = [k for k in ("train_set", "model", "imbalance", "inputs", "protocol") if k in scores]  # per variant
    scores = scores.fillna({"lr": -1.0})  # the baselines' (no rate): one "rate", chosen
    per_lr = scores.groupby(group + ["lr"], dropna=False)["val_f1_macro"].mean().reset_index()
    chosen = set()
    for key, rows in per_lr.groupby(group, dropna=False):
        if len(rows) == 1:
            chosen.add((*key, rows["lr"].iloc[0]))
        elif rows["val_f1_macro"].notna().all():
            best = rows.sort_values(["val_f1_macro", "lr"], ascending=[False, True]).iloc[0]
            chosen.add((*key, best["lr"]))
    return [tuple(r) in chosen for r in scores[group + ["lr"]].itertuples(index=False)]


def epoch_line(h, epochs):
    """One epoch of a record's history: training loss and accuracy (train mode, as the bar showed it), eval-mode
    accuracy on a fixed subset of the training split, and the validation scores where there are any."""
    line = f"epoch {h['epoch']:>3}/{epochs}  loss {h['loss']:.4f}  accuracy {h['accuracy']:.2f}"
    if "train_eval_accuracy" in h:
        line += f"  eval-mode accuracy {h['train_eval_accuracy']:.2f}"
    if "val" in h:
        v = h["val"]
        line += (f"  | val macro-F1 {v['f1_macro']:.2f} balanced accuracy {v['balanced_accuracy']:.2f} "
                 f"loss {v['loss']:.4f}")
    return line


def results_text(records, scores, output_dir):
    """The human-readable log, rebuilt from the records."""
    def distinct(f):
        return ", ".join(map(str, dict.fromkeys(f(r) for _, r in records)))

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"Experiment grid: {len(records)} finished cells under {Path(output_dir) / 'runs'}, "
             + f"tables rebuilt {now}",
             f"training sets: {distinct(lambda r: r['train_set'])}; "
             + f"models: {distinct(lambda r: r['model'])}; "
             + f"imbalance: {distinct(lambda r: r['imbalance'])}; seeds: {distinct(lambda r: r['seed'])}",
             "settings: " + "; ".join(f"{k}={distinct(lambda r, k=k: r['args'].get(k))}"
                                      for k in TRAIN_SETTINGS),
             f"devices: {distinct(lambda r: r.get('device'))}; "
             + f"mixed precision: {distinct(lambda r: r.get('amp'))}",
             "Metrics in percent (scikit-learn, from the per-chip predictions); confusion rows are the true "
             + "classes, columns the predicted ones.", ""]
    for folder, rec in records:
        a, p = rec["args"], rec["protocol"]
        lines += [f"== train {rec['train_set']} | model {rec['model']} | imbalance {rec['imbalance']} | "
                  + f"inputs {rec.get('inputs', runs.RAW)} | lr {rec['lr']:g} | seed {rec['seed']} ==",
                  "configuration: " + " ".join(f"{k}={a.get(k)}" for k in TRAIN_SETTINGS)
                  + f" device={rec.get('device')} amp={rec.get('amp')}",
                  f"protocol: {p['name']}" + (" (an earlier record: stored batch-norm statistics, last epoch, no "
                                              "validation)" if p["name"] == runs.LEGACY else
                                              f"; kept epoch {p['epoch']} of {len(rec['history'])}"
                                              + (f" (val macro-F1 {p['val_f1_macro']:.2f})" if p.get("val") else "")
                                              + (f"; {p['frozen_bn']}" if p.get("frozen_bn") else "")),
                  f"training chips: {rec.get('n_train')} ("
                  + ", ".join(f"{c} {n}" for c, n in rec.get("train_counts", {}).items()) + ")"
                  + (f"; class weights {[round(w, 3) for w in rec['class_weights']]}"
                     if rec.get("class_weights") else ""),
                  f"reproduce: {rec.get('command', '')}"]
        lines += [epoch_line(h, a.get("epochs")) for h in rec["history"]]
        lines.append(f"training {rec['train_seconds']:.1f} s, evaluation {rec['eval_seconds']:.1f} s, "
                     f"finished {rec['finished']}")
        for test_set, variant in ((t, v) for t in rec["test_sets"] for v in record_variants(rec, t)):
            keys = cell_keys(rec, test_set, variant)
            row = scores[(scores.protocol == p["name"]) & (scores[list(keys)] == list(keys.values())).all(axis=1)
                         ].iloc[0]
            stem = predictions_name(test_set, variant).removeprefix("predictions_").removesuffix(".csv")
            how = "" if variant == "none" else f", adapted: {variant}"
            lines.append(f"-- test {test_set}{how} (n={row['n']}): accuracy {row['accuracy']:.2f}, balanced "
                         f"accuracy {row['balanced_accuracy']:.2f}, F1 weighted {row['f1_weighted']:.2f}, "
                         f"F1 macro {row['f1_macro']:.2f}"
                         + (f"; DEGENERATE: one class for {row['top_share']:.1f} % of the chips" if row["degenerate"]
                            else ""))
            width = max(len(c) for c in rec["classes"]) + 2
            lines.append("   " + "class".ljust(width) + "precision   recall       F1  support")
            for c in rec["classes"]:
                lines.append("   " + c.ljust(width) + f"{row[f'{c}_precision']:9.2f} "
                             f"{row[f'{c}_recall']:8.2f} {row[f'{c}_f1']:8.2f} {row[f'{c}_support']:8d}")
            matrix = pd.read_csv(folder / f"confusion_{stem}.csv", index_col=0)
            lines.append("   confusion (rows true, columns predicted):")
            lines += ["   " + line for line in matrix.to_string().splitlines()]
        lines.append("")
    return "\n".join(lines)


def _save_figure(fig, path):
    runs.write_atomic(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def _layout(fig, left, right, bottom, top, wspace=0.35, hspace=0.6):
    """Margins in inches (fixed: constrained layout would cost a second render of every figure)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace,
                        hspace=hspace)


def plot_cross_dataset(mean, models, train_sets, test_sets, note, path):
    """Macro-F1 heat map, training set (rows) x test set (columns), one panel per model."""
    label = max(len(s) for s in train_sets + test_sets)
    side = 0.75  # inches per matrix cell
    margin_l, margin_b = 0.45 + 0.07 * label, 0.45 + 0.06 * label
    fig, axes = plt.subplots(1, len(models), squeeze=False,
                             figsize=(margin_l + len(models) * (side * len(test_sets) + 0.35) + 1.0,
                                      margin_b + side * len(train_sets) + 0.75))
    _layout(fig, margin_l, 1.0, margin_b, 0.75, wspace=0.12)
    for ax, model_name in zip(axes[0], models):
        values = np.full((len(train_sets), len(test_sets)), np.nan)
        for i, tr in enumerate(train_sets):
            for j, te in enumerate(test_sets):
                if (model_name, tr, te) in mean.index:
                    values[i, j] = mean.loc[(model_name, tr, te), "f1_macro"]
        mesh = ax.pcolormesh(np.ma.masked_invalid(values), vmin=0, vmax=100, cmap="viridis")
        for i in range(len(train_sets)):
            for j in range(len(test_sets)):
                v = values[i, j]
                ax.text(j + 0.5, i + 0.5, "-" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                        fontsize=8, color="black" if not np.isnan(v) and v > 60 else "white")
        ax.set_facecolor("0.3")  # cells with no result
        ax.set_xlim(0, len(test_sets))
        ax.set_ylim(len(train_sets), 0)
        ax.set_aspect("equal")
        ax.set_xticks(np.arange(len(test_sets)) + 0.5, test_sets, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(train_sets)) + 0.5, train_sets if ax is axes[0][0] else [], fontsize=8)
        ax.set_xlabel("test set", fontsize=8)
        ax.set_title(model_name, fontsize=9)
    axes[0][0].set_ylabel("training set", fontsize=8)
    w, h = fig.get_size_inches()
    cax = fig.add_axes((1 - 0.8 / w, margin_b / h, 0.15 / w, side * len(train_sets) / h))
    fig.colorbar(mesh, cax=cax).set_label("macro F1 (%)", fontsize=8)
    cax.tick_params(labelsize=7)
    fig.suptitle(f"Macro F1, training set x test set ({note})", fontsize=9)
    _save_figure(fig, path)


def plot_per_class(mean, models, train_sets, test_sets, classes, note, path):
    """Per-class F1 bars, a panel per (training set, test set), a bar per model."""
    panel_w = 0.3 + 0.22 * len(classes) * len(models)
    fig, axes = plt.subplots(len(train_sets), len(test_sets), squeeze=False, sharey=True,
                             figsize=(0.7 + len(test_sets) * (panel_w + 0.3),
                                      0.45 + len(train_sets) * 1.9 + 0.5))
    _layout(fig, 0.7, 0.15, 0.75, 0.5)
    width = 0.8 / len(models)
    for i, tr in enumerate(train_sets):
        for j, te in enumerate(test_sets):
            ax = axes[i][j]
            for k, model_name in enumerate(models):
                if (model_name, tr, te) in mean.index:
                    values = [mean.loc[(model_name, tr, te)].get(f"{c}_f1", np.nan) for c in classes]
                    ax.bar(np.arange(len(classes)) + (k - (len(models) - 1) / 2) * width, values, width,
                           color=f"C{k}")
            ax.set_xticks(range(len(classes)), classes, fontsize=7)
            ax.set_ylim(0, 100)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"train {tr} / test {te}", fontsize=8)
            if j == 0:
                ax.set_ylabel("F1 (%)", fontsize=8)
    handles = [matplotlib.patches.Patch(color=f"C{k}", label=m) for k, m in enumerate(models)]
    fig.legend(handles=handles, loc="lower center", ncols=len(models), fontsize=8, frameon=False)
    fig.suptitle(f"Per-class F1 ({note})", fontsize=9)
    _save_figure(fig, path)


def plot_figures(scores, classes, figure_dir):
    """Per imbalance strategy (and protocol, where earlier LEGACY records sit beside new ones), mean over seeds
    of the rows with the selected learning rate: figures/cross_dataset_f1_macro_<imbalance>[_legacy].png and
    figures/per_class_f1_<imbalance>[_legacy].png. Returns the paths written. The study's inputs (raw) without
    adaptation only: report.py compares the input variants and adaptations."""
    figure_dir.mkdir(parents=True, exist_ok=True)
    written = []
    scores = scores[(scores.inputs == runs.RAW) & (scores.adaptation == "none")]
    chosen = scores[scores.selected & (scores.protocol != "baseline")]
    floors = scores[scores.protocol == "baseline"]  # in every figure, beside the models
    for (imbalance, legacy), sub in chosen.groupby([chosen.imbalance, chosen.protocol == runs.LEGACY], sort=False):
        sub = pd.concat([sub, floors[floors.train_set.isin(sub.train_set) & floors.test_set.isin(sub.test_set)]])
        models = ordered(sub["model"], MODEL_CHOICES)
        train_sets = ordered(sub["train_set"], SETS)
        test_sets = ordered(sub["test_set"], SETS)
        mean = sub.groupby(["model", "train_set", "test_set"]).mean(numeric_only=True)
        seeds = sub.groupby(["model", "train_set", "test_set"])["seed"].nunique()
        n_seeds = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
        lrs = ", ".join(f"{lr:g}" for lr in sorted(sub["lr"].unique()))
        note = f"imbalance: {imbalance}; lr {lrs} (chosen on validation); mean over {n_seeds} seed(s)" \
            + ("; earlier records: stored BN statistics, last epoch" if legacy else "")
        suffix = f"{imbalance}_legacy" if legacy else imbalance
        path = figure_dir / f"cross_dataset_f1_macro_{suffix}.png"
        plot_cross_dataset(mean, models, train_sets, test_sets, note, path)
        written.append(path)
        path = figure_dir / f"per_class_f1_{suffix}.png"
        plot_per_class(mean, models, train_sets, test_sets, classes, note, path)
        written.append(path)
    return written
