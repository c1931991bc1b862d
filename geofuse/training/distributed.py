"""Multi-worker training: a training loop for ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3's ``fit()`` cannot consume the per-replica batches of MultiWorkerMirroredStrategy
(keras-team/keras#20585), so the multi-worker run drives the same callbacks as ``fit()``
(:class:`.schedule.Schedule`, ``CSVLogger``, :class:`.fit.RunState`) from its own loop: each worker
reads its own chips (the loader is seeded per worker), gradients are summed across workers by
the optimizer, and everything that decides the course of the run is agreed between workers
(the share of a timed budget spent, hence the learning rate and the end; the validation score
that picks the best weights and stops early), so all workers take the same steps. Only the
chief writes the run folder and the model; the other workers keep their state in a temporary
folder.

The cluster comes from ``TF_CONFIG`` as TensorFlow documents it. TensorFlow is imported
inside the functions that need it (:func:`worker_role` does not).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from geofuse.training.metrics import confusion_matrix, training_mean_iou


def worker_role(tf_config: str | None = None) -> tuple[bool, int, int]:
    """``(is_chief, worker_index, workers)`` from ``TF_CONFIG`` (no TensorFlow needed).

    The chief is the task of type ``chief``, else worker 0. Without ``TF_CONFIG`` the process
    is a lone chief.
    """
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text:
        return True, 0, 1
    data = json.loads(text)
    cluster = data.get("cluster", {})
    task = data.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    order = (0 if kind == "chief" else index + len(cluster.get("chief", [])))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return chief, order, max(1, workers)


class Agreement:
    """Values every worker agrees on: the mean over workers of each one's own value."""

    def __init__(self, strategy: Any) -> None:
        import tensorflow as tf

        self.strategy = strategy

        @tf.function
        def mean(value: Any) -> Any:
            per_replica = strategy.run(lambda: tf.identity(value))
            return strategy.reduce("MEAN", per_replica, axis=None)

        self._mean = mean

    def __call__(self, value: float) -> float:
        """The mean of ``value`` over all workers (a collective: every worker must call)."""
        import tensorflow as tf

        return float(self._mean(tf.constant(float(value), tf.float32)))


def run_loop(
    model: Any,
    strategy: Any,
    loss: Any,
    dataset_fn: Callable[[Any], Any],
    validation: tuple[np.ndarray, np.ndarray] | None,
    names: Sequence[str],
    batch: int,
    epochs: int,
    initial_epoch: int,
    steps: int,
    callbacks: Sequence[Any],
    agree: Agreement,
) -> None:
    """``fit()`` for MultiWorkerMirroredStrategy, with the callbacks ``fit()`` would get.

    Args:
        model: The compiled model (its optimizer is used), built in ``strategy.scope()``.
        strategy: A MultiWorkerMirroredStrategy.
        loss: The loss (a Keras ``Loss``: it scales itself for the number of replicas).
        dataset_fn: ``dataset_fn(input_context)`` -> this worker's ``(x, y)`` batches of the
            per-replica batch size.
        validation: Validation chips and labels (the same on every worker), or None.
        names: Class names (for the validation mean IoU).
        batch: Batch size of the validation forward passes.
        epochs: Epoch to end at (exclusive upper bound, as in ``fit()``).
        initial_epoch: First epoch (after a resume).
        steps: Optimiser steps per epoch.
        callbacks: Keras callbacks (Schedule, CSVLogger, RunState).
        agree: The workers' agreement on validation scores.
    """
    import keras
    import tensorflow as tf

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    optimizer = model.optimizer
    variables = model.trainable_variables

    def replica_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads = tape.gradient(value, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return value

    @tf.function
    def train_step(it: Any) -> Any:
        x, y = next(it)
        return strategy.reduce("SUM", strategy.run(replica_step, args=(x, y)), axis=None)

    @tf.function
    def forward(x: Any) -> Any:
        return model(x, training=False)

    hooks = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)
        total = 0.0
        for step in range(steps):
            hooks.on_train_batch_begin(step)
            value = float(train_step(iterator))  # the mean loss over all replicas' batches
            total += value
            hooks.on_train_batch_end(step, {"loss": value})
            if model.stop_training:
                break
        logs: dict[str, float] = {"loss": total / (step + 1)}
        if validation is not None:
            xv, yv = validation
            cm = np.zeros((len(names), len(names)), np.int64)
            for i in range(0, len(xv), batch):
                probs = np.asarray(forward(xv[i:i + batch]))[..., :len(names)]  # not aux heads
                cm += confusion_matrix(yv[i:i + batch], probs.argmax(-1), len(names))
            logs["val_mean_iou"] = agree(training_mean_iou(cm))
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()
