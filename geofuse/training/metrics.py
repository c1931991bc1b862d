"""Segmentation metrics from confusion matrices (numpy only).

A confusion matrix ``cm`` is ``(classes, classes)`` int64 with rows = reference (label) class and
columns = predicted class. Pixels to ignore (label nodata, invalid input, an ``--ignore-value``)
never enter it: :func:`confusion_matrix` drops every pixel whose label or prediction is outside
``0..classes-1`` or where ``valid`` is False. Pixels labelled with a class set ("one of these
classes") add only false positives of the classes the set excludes (:func:`set_false_positives`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geofuse.training.labels import SET_BASE


def confusion_matrix(
    labels: np.ndarray,
    predictions: np.ndarray,
    classes: int,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Count (label, prediction) pairs.

    Args:
        labels: Reference class ids, any shape; values outside ``0..classes-1`` are ignored.
        predictions: Predicted class ids, same shape; values outside the range are ignored.
        classes: Number of classes.
        valid: Optional boolean mask of pixels to count.

    Returns:
        ``(classes, classes)`` int64 matrix, rows = label, columns = prediction.

    """
    labels = np.asarray(labels).ravel().astype(np.int64)
    predictions = np.asarray(predictions).ravel().astype(np.int64)
    keep = (labels >= 0) & (labels < classes) & (predictions >= 0) & (predictions < classes)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool).ravel()
    index = labels[keep] * classes + predictions[keep]
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def set_predictions(labels: np.ndarray, predictions: np.ndarray, sets: int,
                    classes: int) -> np.ndarray:
    """Per class set ``k`` (label ``SET_BASE + k``), its pixels predicted as each class.

    Returns:
        ``(sets, classes)`` int64 counts; predictions outside ``0..classes-1`` (nodata) never
        count.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    out = np.zeros((sets, classes), np.int64)
    for k in range(sets):
        chosen = predictions[labels == SET_BASE + k]
        chosen = chosen[chosen < classes]
        out[k] = np.bincount(chosen.astype(np.int64), minlength=classes)[:classes]
    return out


def excluded_predictions(rows: np.ndarray, sets: Sequence[Sequence[int]]) -> np.ndarray:
    """Per class, the false positives that class sets add: set pixels predicted as it.

    ``rows``: :func:`set_predictions`; a set's pixels predicted as one of its own classes
    (``sets``) are not errors.
    """
    out = np.zeros(np.asarray(rows).shape[1], np.int64)
    for row, members in zip(np.asarray(rows, np.int64), sets, strict=True):
        counts = row.copy()
        counts[list(members)] = 0
        out += counts
    return out


def set_false_positives(labels: np.ndarray, predictions: np.ndarray,
                        sets: Sequence[Sequence[int]], classes: int) -> tuple[np.ndarray, int]:
    """Per class, pixels of a class set (``SET_BASE + k``) that excludes it, predicted as it.

    For instance a building-only data set's "not building" pixels predicted building.

    Returns:
        ``(counts, pixels)``: those false positives per class, and the set pixels scored (with
        a prediction in ``0..classes-1``).
    """
    rows = set_predictions(labels, predictions, len(sets), classes)
    return excluded_predictions(rows, sets), int(rows.sum())


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den == 0`` (a class absent from both sides)."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class(cm: np.ndarray, set_fp: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """IoU, F1, precision, recall and support for every class (NaN where undefined).

    ``set_fp``: per class, pixels labelled with a class set that excludes it but predicted as
    it (partial labels, :mod:`.labels`): false positives the matrix cannot hold.
    """
    cm = np.asarray(cm, dtype=np.int64)
    extra = np.zeros(cm.shape[0], np.int64) if set_fp is None else np.asarray(set_fp, np.int64)
    tp = np.diag(cm)
    label_total = cm.sum(axis=1)
    pred_total = cm.sum(axis=0) + extra
    fp = pred_total - tp
    fn = label_total - tp
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, pred_total),
        "recall": _ratio(tp, label_total),
        "support": label_total,
    }


def _clean(value: float) -> float | None:
    """JSON-friendly float: NaN becomes None."""
    return None if not np.isfinite(value) else round(float(value), 6)


def summarize(cm: np.ndarray, names: Sequence[str],
              set_fp: np.ndarray | None = None) -> dict[str, Any]:
    """A JSON-ready report of a confusion matrix (and class-set false positives).

    ``set_fp``: see :func:`per_class`.

    Only the *labelled classes* are scored: those with labelled pixels. A class the labels
    never hold has no IoU, F1, precision or recall (None), however often it is predicted (its
    predictions still count against the recall of the classes they took pixels from), and
    stays out of the means. ``accuracy`` is the share of labelled pixels predicted right, given
    when at least two classes are labelled (of one class alone it would be that class's
    recall).

    Returns:
        ``{"pixels", "accuracy", "mean_iou", "mean_f1", "labelled_classes", "classes": {name:
        {...}}, "confusion_matrix": [[...]]}``, plus ``"set_false_positives"`` when given.

    """
    cm = np.asarray(cm, dtype=np.int64)
    stats = per_class(cm, set_fp)
    total = int(cm.sum())
    labelled = stats["support"] > 0
    classes = {}
    for i, name in enumerate(names):
        scored = bool(labelled[i])
        classes[name] = {
            key: _clean(stats[key][i]) if scored else None
            for key in ("iou", "f1", "precision", "recall")
        } | {"support": int(stats["support"][i])}
    return {
        "pixels": total,
        "accuracy": _clean(np.trace(cm) / total) if labelled.sum() >= 2 else None,
        "mean_iou": _clean(np.mean(stats["iou"][labelled])) if labelled.any() else None,
        "mean_f1": _clean(np.mean(stats["f1"][labelled])) if labelled.any() else None,
        "labelled_classes": [n for n, scored in zip(names, labelled, strict=True) if scored],
        "classes": classes,
        "confusion_matrix": cm.tolist(),
    } | ({} if set_fp is None else {"set_false_positives": [int(v) for v in set_fp]})


def training_mean_iou(cm: np.ndarray) -> float | None:
    """Mean IoU over the classes in the labels or the predictions, rounded to 6 decimals.

    The score :class:`.losses.ConfusionMetrics` logs during training (``val_mean_iou``), for
    the training loop of several workers: the same epochs are picked either way.
    """
    iou = per_class(cm)["iou"]
    return _clean(np.nanmean(iou)) if np.isfinite(iou).any() else None


def score_line(summary: dict[str, Any], most: int = 6) -> str:
    """The scores of a :func:`summarize` report in one line, of its labelled classes only.

    ``IoU building 0.6990``, or ``IoU land 0.8123, building 0.7011; mean 0.7567``; of more
    than ``most`` classes, their mean alone.
    """
    labelled = summary.get("labelled_classes") or []
    if not labelled:
        return "no labelled pixels to score"
    if len(labelled) > most:
        return f"mean IoU {summary['mean_iou']:.4f} over {len(labelled)} labelled classes"
    ious = ", ".join(f"{n} {summary['classes'][n]['iou']:.4f}" for n in labelled)
    return f"IoU {ious}" if len(labelled) == 1 else f"IoU {ious}; mean {summary['mean_iou']:.4f}"


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str, title: str = "",
                   set_rows: np.ndarray | None = None, set_names: Sequence[str] = (),
                   sets: Sequence[Sequence[int]] = ()) -> None:
    """Save a row-normalised confusion-matrix heat map (matplotlib, Agg backend) to ``path``.

    Rows: the labelled classes (reference) and then each class set (``set_rows`` of
    :func:`set_predictions`, named ``set_names``, of the classes ``sets``); columns: every
    predicted class. In a set's row the shares of the classes it excludes are false positives
    and are written in red. Without labelled pixels, every class gets a row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    keep = cm.sum(axis=1) > 0
    if not keep.any() and set_rows is None:
        keep[:] = True
    extra = np.zeros((0, cm.shape[1])) if set_rows is None else np.asarray(set_rows, np.float64)
    table = np.concatenate([cm[keep], extra])
    rows = [n for n, k in zip(names, keep, strict=True) if k] + [f"{n} (set)" for n in set_names]
    members = [None] * int(keep.sum()) + [set(m) for m in sets]
    totals = table.sum(axis=1, keepdims=True)
    share = np.divide(table, totals, out=np.zeros_like(table), where=totals > 0)
    n, m = share.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * m + 0.05 * max(map(len, rows), default=0),
                                    1.0 + 0.7 * n), dpi=100)
    ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(m), names, rotation=45, ha="right")
    ax.set_yticks(range(n), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(m):
            wrong = members[i] is not None and j not in members[i]
            colour = "red" if wrong else "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color=colour, fontweight="bold" if wrong and share[i, j] > 0 else None)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
