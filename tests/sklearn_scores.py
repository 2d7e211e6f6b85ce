"""The scores.csv row for one set of predictions, recomputed here with scikit-learn alone (not metrics.py),
so that tests check the grid's metrics against an independent computation."""
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support


def expected_scores(true, pred, classes):
    """Percent, as in scores.csv; support is a count."""
    out = {"n": len(true), "accuracy": 100 * (true == pred).mean(),
           "balanced_accuracy": 100 * balanced_accuracy_score(true, pred)}
    for average in ("weighted", "macro"):
        pr, rc, f1, _ = precision_recall_fscore_support(true, pred, labels=classes, average=average,
                                                        zero_division=0)
        out.update({f"precision_{average}": 100 * pr, f"recall_{average}": 100 * rc, f"f1_{average}": 100 * f1})
    pr, rc, f1, sup = precision_recall_fscore_support(true, pred, labels=classes, zero_division=0)
    for i, c in enumerate(classes):
        out.update({f"{c}_precision": 100 * pr[i], f"{c}_recall": 100 * rc[i], f"{c}_f1": 100 * f1[i],
                    f"{c}_support": sup[i]})
    return out
