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


def set_false_positives(labels: np.ndarray, predictions: np.ndarray,
                        sets: Sequence[Sequence[int]], classes: int) -> tuple[np.ndarray, int]:
    """Per class, pixels of a class set (``SET_BASE + k``) that excludes it, predicted as it.

    For instance a building-only data set's "not building" pixels predicted building.

    Returns:
        ``(counts, pixels)``: those false positives per class, and the set pixels scored (with
        a prediction in ``0..classes-1``).
    """
    out = np.zeros(classes, np.int64)
    pixels = 0
    for k, members in enumerate(sets):
        chosen = predictions[labels == SET_BASE + k]
        chosen = chosen[chosen < classes]
        counts = np.bincount(chosen, minlength=classes)[:classes]
        pixels += int(chosen.size)
        counts[list(members)] = 0
        out += counts
    return out, pixels


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

    Mean IoU and mean F1 average over the classes that occur in the labels or the predictions
    (classes absent from both are undefined and skipped).

    Returns:
        ``{"pixels", "accuracy", "mean_iou", "mean_f1", "classes": {name: {...}},
        "confusion_matrix": [[...]]}``, plus ``"set_false_positives"`` when given.

    """
    cm = np.asarray(cm, dtype=np.int64)
    stats = per_class(cm, set_fp)
    total = int(cm.sum())
    iou = stats["iou"]
    f1 = stats["f1"]
    classes = {}
    for i, name in enumerate(names):
        classes[name] = {
            "iou": _clean(iou[i]),
            "f1": _clean(f1[i]),
            "precision": _clean(stats["precision"][i]),
            "recall": _clean(stats["recall"][i]),
            "support": int(stats["support"][i]),
        }
    return {
        "pixels": total,
        "accuracy": _clean(np.trace(cm) / total) if total else None,
        "mean_iou": _clean(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "mean_f1": _clean(np.nanmean(f1)) if np.isfinite(f1).any() else None,
        "classes": classes,
        "confusion_matrix": cm.tolist(),
    } | ({} if set_fp is None else {"set_false_positives": [int(v) for v in set_fp]})


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str, title: str = "") -> None:
    """Save a row-normalised confusion-matrix heat map (matplotlib, Agg backend) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * n, 1.0 + 0.7 * n), dpi=100)
    ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
