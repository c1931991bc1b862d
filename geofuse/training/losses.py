"""Training loss and streaming metrics that skip ignored pixels.

Labels are integer class ids with every value ``>= classes`` (255 in practice) meaning "ignore":
such pixels carry no loss and never enter the confusion matrix; except class sets (label
``SET_BASE + k``, :mod:`.labels`): the loss asks the model to put such a pixel in one of the
set's classes (cross-entropy of the set's summed probability; Dice counts it only for the
classes outside the set, which it is known not to be).

TensorFlow and Keras are imported when the module is imported: import it lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from geofuse.config import CLASS_NODATA
from geofuse.training.config import LOSSES
from geofuse.training.labels import SET_BASE


@keras.saving.register_keras_serializable(package="geofuse")
class SegmentationLoss(keras.losses.Loss):
    """Cross-entropy (or focal) plus soft Dice or Lovász-softmax over valid pixels.

    Args:
        classes: Number of classes.
        mode: One of ``LOSSES``.
        class_weights: Per-class weights of the cross-entropy/focal term (None: all 1); a set
            pixel weighs the mean of its classes' weights.
        gamma: Focal exponent.
        smooth: Dice smoothing.
        class_sets: Class ids of each class set (label ``SET_BASE + k`` is set ``k``).
        heads: Weights of the outputs along the last axis of ``y_pred``, ``classes`` channels
            each (a deeply supervised network's, :func:`~geofuse.model.network.deeply_supervised`);
            the loss is their weighted mean. Default: one output.
    """

    def __init__(
        self,
        classes: int,
        mode: str = "ce+dice",
        class_weights: Sequence[float] | None = None,
        gamma: float = 2.0,
        smooth: float = 1.0,
        class_sets: Sequence[Sequence[int]] = (),
        heads: Sequence[float] = (1.0,),
        name: str = "segmentation_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if mode not in LOSSES:
            raise ValueError(f"Expected loss one of {', '.join(LOSSES)}. Received: {mode!r}")
        self.classes = int(classes)
        self.mode = mode
        self.class_weights = [float(w) for w in (class_weights or [1.0] * self.classes)]
        self.gamma = float(gamma)
        self.smooth = float(smooth)
        self.class_sets = [sorted(int(c) for c in members) for members in class_sets]
        self.heads = [float(w) for w in heads]
        if not self.heads or min(self.heads) < 0 or sum(self.heads) <= 0:
            raise ValueError(f"Expected non-negative head weights with a positive sum. "
                             f"Received: {heads!r}")
        # label value -> the classes it allows: one for a class, several for a set, none for
        # an ignored value
        allowed = np.zeros((CLASS_NODATA + 1, self.classes), np.float32)
        allowed[np.arange(self.classes), np.arange(self.classes)] = 1.0
        for k, members in enumerate(self.class_sets):
            allowed[SET_BASE + k, members] = 1.0
        self._allowed = allowed

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Scalar loss of one batch: weighted mean CE/focal over labelled pixels + Dice.

        With several ``heads``, the weighted mean of that loss over the outputs.
        """
        y = tf.cast(tf.round(tf.cast(y_true, tf.float32)), tf.int32)
        if y.shape.rank == 4:
            y = y[..., 0]
        y = tf.where((y >= 0) & (y <= CLASS_NODATA), y, CLASS_NODATA)  # others: ignored
        allowed = tf.gather(tf.constant(self._allowed), y)
        count = tf.reduce_sum(allowed, axis=-1)  # 1: a class, 2+: a set, 0: ignored
        y_pred = tf.cast(y_pred, tf.float32)
        total = tf.constant(0.0)
        for k, weight in enumerate(self.heads):
            if weight:
                head = y_pred[..., k * self.classes:(k + 1) * self.classes]
                total += weight * self._head_loss(head, allowed, count)
        return total / sum(self.heads)

    def _head_loss(self, y_pred: Any, allowed: Any, count: Any) -> Any:
        """The loss of one output's probabilities, given each pixel's allowed classes."""
        p = tf.clip_by_value(y_pred, 1e-7, 1.0 - 1e-7)
        total = tf.constant(0.0)
        if self.mode not in ("dice", "lovasz"):
            p_true = tf.clip_by_value(tf.reduce_sum(p * allowed, axis=-1), 1e-7, 1.0)
            pixel = -tf.math.log(p_true)
            if self.mode.startswith("focal"):
                pixel *= tf.pow(1.0 - p_true, self.gamma)
            weights = tf.reduce_sum(allowed * tf.constant(self.class_weights, tf.float32),
                                    axis=-1) / tf.maximum(count, 1.0)
            total += tf.reduce_sum(pixel * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        if self.mode.endswith("lovasz"):
            total += lovasz_softmax(p, tf.cast(count == 1.0, tf.float32), allowed)
        if self.mode.endswith("dice"):
            exact = tf.cast(count == 1.0, tf.float32)[..., None]
            onehot = allowed * exact  # the class of an exactly labelled pixel
            # class c of a pixel is known where the pixel has a class, or a set without c
            m = tf.maximum(exact, tf.cast(count > 1.0, tf.float32)[..., None] * (1.0 - allowed))
            inter = tf.reduce_sum(p * onehot * m, axis=(0, 1, 2))
            denom = tf.reduce_sum(p * m, axis=(0, 1, 2)) + tf.reduce_sum(onehot * m, axis=(0, 1, 2))
            dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
            total += 1.0 - tf.reduce_mean(dice)
        return total

    def get_config(self) -> dict[str, Any]:
        """Serialisable configuration."""
        return super().get_config() | {
            "classes": self.classes, "mode": self.mode, "class_weights": self.class_weights,
            "gamma": self.gamma, "smooth": self.smooth, "class_sets": self.class_sets,
            "heads": self.heads,
        }


def lovasz_softmax(p: Any, exact: Any, onehot: Any) -> Any:
    """Lovász-softmax loss (Berman et al., 2018) over the exactly labelled pixels of a batch.

    A convex surrogate of ``1 - IoU`` per class, averaged over the classes present in the
    batch's labels. Pixels labelled with a class set or ignored carry no Lovász term.

    Args:
        p: Probabilities ``(b, h, w, classes)``.
        exact: 1 where a pixel has exactly one class, else 0, ``(b, h, w)``.
        onehot: The allowed classes of each pixel ``(b, h, w, classes)``.
    """
    classes = p.shape[-1]
    keep = tf.reshape(exact, (-1,)) > 0
    probs = tf.boolean_mask(tf.reshape(p, (-1, classes)), keep)
    truth = tf.boolean_mask(tf.reshape(onehot, (-1, classes)), keep)
    losses, present = [], []
    for c in range(classes):
        fg = truth[:, c]
        errors = tf.abs(fg - probs[:, c])
        order = tf.argsort(errors, direction="DESCENDING")
        errors, fg = tf.gather(errors, order), tf.gather(fg, order)
        total = tf.reduce_sum(fg)
        intersection = total - tf.cumsum(fg)
        union = total + tf.cumsum(1.0 - fg)
        jaccard = 1.0 - intersection / tf.maximum(union, 1.0)
        grad = tf.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)
        losses.append(tf.tensordot(errors, grad, 1))
        present.append(tf.cast(total > 0, tf.float32))
    present = tf.stack(present)
    return tf.reduce_sum(tf.stack(losses) * present) / tf.maximum(tf.reduce_sum(present), 1.0)


@keras.saving.register_keras_serializable(package="geofuse")
class ConfusionMetrics(keras.metrics.Metric):
    """A streaming confusion matrix reported as mean IoU, mean F1 and per-class IoU.

    ``result()`` returns a dict, so Keras logs ``mean_iou``, ``mean_f1`` and ``iou_<class>``
    (``val_...`` on validation data). Classes absent from labels and predictions are skipped
    in the means.
    """

    def __init__(self, names: Sequence[str], name: str = "confusion", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.names = [str(n) for n in names]
        self.classes = len(self.names)
        self.matrix = self.add_variable(
            shape=(self.classes, self.classes), initializer="zeros", dtype="float64",
            aggregation="sum", name="matrix",
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add a batch: labels ``(b, h, w)``, probabilities ``(b, h, w, classes)``.

        Only the first ``classes`` channels count: the network's own output where a deeply
        supervised one appends its auxiliary heads'.
        """
        y = tf.cast(tf.round(tf.cast(y_true, tf.float32)), tf.int32)
        if y.shape.rank == 4:
            y = y[..., 0]
        pred = tf.argmax(y_pred[..., :self.classes], axis=-1, output_type=tf.int32)
        valid = (y >= 0) & (y < self.classes)
        index = tf.boolean_mask(y * self.classes + pred, valid)
        counts = tf.math.bincount(index, minlength=self.classes**2, maxlength=self.classes**2,
                                  dtype=tf.float64)
        self.matrix.assign_add(tf.reshape(counts, (self.classes, self.classes)))

    def result(self) -> dict[str, Any]:
        """``{"mean_iou", "mean_f1", "iou_<name>"...}``."""
        cm = tf.convert_to_tensor(self.matrix)
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - tp
        present = union > 0
        iou = tf.where(present, tp / tf.maximum(union, 1.0), 0.0)
        f1 = tf.where(present, 2 * tp / tf.maximum(union + tp, 1.0), 0.0)
        n = tf.maximum(tf.reduce_sum(tf.cast(present, tf.float64)), 1.0)
        out = {
            "mean_iou": tf.cast(tf.reduce_sum(iou) / n, tf.float32),
            "mean_f1": tf.cast(tf.reduce_sum(f1) / n, tf.float32),
        }
        for i, name in enumerate(self.names):
            out[f"iou_{metric_name(name)}"] = tf.cast(iou[i], tf.float32)
        return out

    def reset_state(self) -> None:
        """Zero the matrix."""
        self.matrix.assign(tf.zeros_like(self.matrix))

    def get_config(self) -> dict[str, Any]:
        """Serialisable configuration."""
        return super().get_config() | {"names": self.names}


def metric_name(name: str) -> str:
    """A class name as a log key: lower case, non-alphanumerics to ``_``."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_") or "class"
