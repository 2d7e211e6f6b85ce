"""Classification metrics of the grid, from per-chip predictions, with scikit-learn only.

    from metrics import score_row
    row = score_row(y_true, y_pred, classes=["Cargo", "Fishing", "Tanker"])
    row["f1_macro"], row["Fishing_recall"], row["Tanker_support"]

`score_row` is the one function behind scores.csv: anyone can recompute a row from predictions.csv (columns
true, pred) with it or with scikit-learn directly. Percent with two decimals, as the study reports them;
supports and n are counts.

What the published code got wrong and this does not (docs/reference-study.md, defect 2): its per-class "precision"
was computed on the samples of that class only (always 100 %) and its per-class "F1" was 2R/(1+R); its overall
F1 was only the weighted one. Here per-class precision is over the chips *predicted* as the class, F1 is the
harmonic mean of that precision and recall, and both weighted and macro averages are given (macro treats the
rare class as much as Cargo: the number that shows whether a model does more than predict the majority).

The class list is passed as `labels=` explicitly, so a class missing from one test split still gets its
columns (support 0) and the columns never shift; zero_division=0 turns "no chip predicted as this class" into
a precision of 0 without warnings. The macro averages are over the classes present in the test split (support
> 0), as balanced accuracy is: a class with no test chips would add a 0 that says nothing about the model, so it
is left out with a warning naming it (its row still shows support 0).
"""

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

SUMMARY_COLUMNS = ("n", "accuracy", "balanced_accuracy", "precision_weighted", "recall_weighted",
                   "f1_weighted", "precision_macro", "recall_macro", "f1_macro")
PER_CLASS = ("precision", "recall", "f1", "support")


def score_columns(classes):
    """Column names of a score row, in order: SUMMARY_COLUMNS then <Class>_precision/_recall/_f1/_support."""
    return list(SUMMARY_COLUMNS) + [f"{c}_{m}" for c in classes for m in PER_CLASS]


def as_names(y, classes):
    """Labels as class names: integer labels are taken as indices into `classes`, anything else as names."""
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        return np.asarray(classes, dtype=object)[y]
    return y.astype(str).astype(object)


def _pct(x):
    return round(100.0 * float(x), 2)


def score_row(y_true, y_pred, classes):
    """Metrics of one model on one test set: dict with score_columns(classes) as keys.

    y_true, y_pred: class names or indices into `classes` (the training set's classes, sorted).
    balanced_accuracy is the mean recall over the classes present in y_true (scikit-learn's definition); the
    macro averages are over the same classes.
    """
    classes = list(classes)
    y_true, y_pred = as_names(y_true, classes), as_names(y_pred, classes)
    unknown = sorted(set(y_true) - set(classes)) + sorted(set(y_pred) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    row = {"n": len(y_true), "accuracy": _pct(accuracy_score(y_true, y_pred))}
    with warnings.catch_warnings():
        # a model may predict a class that this test split lacks: scikit-learn warns, the number stays right
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        row["balanced_accuracy"] = _pct(balanced_accuracy_score(y_true, y_pred))
    present = [c for c in classes if c in set(y_true)]
    absent = [c for c in classes if c not in present]
    if absent and len(y_true):
        warnings.warn(f"no test chips of class {', '.join(absent)}: the macro averages are over "
                      f"{', '.join(present)} (its support 0 stays in the table)", stacklevel=2)
    for average, labels in (("weighted", classes), ("macro", present or classes)):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                     zero_division=0)
        row.update({f"precision_{average}": _pct(p), f"recall_{average}": _pct(r), f"f1_{average}": _pct(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, average=None,
                                                 zero_division=0)
    for i, c in enumerate(classes):
        row.update({f"{c}_precision": _pct(p[i]), f"{c}_recall": _pct(r[i]), f"{c}_f1": _pct(f[i]),
                    f"{c}_support": int(s[i])})
    return row


def confusion(y_true, y_pred, classes):
    """Confusion matrix (K, K) int, in `classes` order: rows the true classes, columns the predicted."""
    classes = list(classes)
    return confusion_matrix(as_names(y_true, classes), as_names(y_pred, classes), labels=classes)


def plot_confusion(matrix, classes, title, path):
    """Save a confusion matrix as a PNG: counts, and colour by the share of each true class (row-normalised),
    so a rare class's errors are as visible as Cargo's."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    label = max(len(c) for c in classes)
    # margins in inches, sized by the longest class name: tight_layout would cost a second render per figure
    left, bottom, top, right = 0.08 * label + 0.7, 0.06 * label + 0.6, 0.7, 0.25
    fig, ax = plt.subplots(figsize=(left + 1.1 * k + right, bottom + 1.1 * k + top))
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)
    ax.pcolormesh(share, cmap="Blues", vmin=0, vmax=1)  # vector cells: cheaper to draw than a resampled image
    ax.set_xlim(0, k)
    ax.set_ylim(k, 0)
    ax.set_aspect("equal")
    for i in range(k):
        for j in range(k):
            ax.text(j + 0.5, i + 0.5, f"{matrix[i, j]}\n{100 * share[i, j]:.0f}%", ha="center", va="center",
                    fontsize=9, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(np.arange(k) + 0.5, classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(k) + 0.5, classes, fontsize=8)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=8, wrap=True)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
