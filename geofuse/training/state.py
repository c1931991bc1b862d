"""The typed state handed between the phases of a training run (no TensorFlow).

:class:`FitJob` is what every network of a run is fitted on, :class:`Listeners` who hears about
each epoch, :class:`Selection` how the weights to keep are picked and when a run stops early,
and :class:`ResumeState` what a checkpoint records to continue an interrupted run
(:mod:`.fit` writes it after every epoch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from geofuse.model.spec import ModelInfo
from geofuse.progress import Progress, Report
from geofuse.training.config import TrainConfig
from geofuse.training.datasets import LabelledRaster, Unit


@dataclass(frozen=True)
class FitJob:
    """What every network of a run is fitted on, and for how long.

    Attributes:
        config: The run's settings, with the chip side and batch resolved.
        info: The model file's description (network, classes, normalisation, contract).
        rasters: The labelled rasters.
        units: Their units, validation marked.
        class_weights: Weight of each class in the loss.
        class_sets: The class ids of each class set the labels use (:mod:`.labels`).
        steps: Optimiser steps of the run (rounded up to whole epochs); None: ``epochs``.
    """

    config: TrainConfig
    info: ModelInfo
    rasters: Sequence[LabelledRaster]
    units: Sequence[Unit]
    class_weights: np.ndarray
    class_sets: tuple[tuple[int, ...], ...] = ()
    steps: int | None = None

    @property
    def names(self) -> list[str]:
        """The class names, in id order."""
        return [c.name for c in self.info.classes]


@dataclass(frozen=True)
class Listeners:
    """Who hears about each epoch.

    Attributes:
        progress: ``progress(done_epochs, total_epochs)``.
        report: ``report(epoch, logs)`` with the epoch's losses, scores and budget.
    """

    progress: Progress | None = None
    report: Report | None = None


@dataclass(frozen=True)
class Selection:
    """How the weights to keep are picked and when the run stops early.

    Attributes:
        monitor: The log key scored (``val_mean_iou``, or ``mean_iou`` without validation).
        patience: Epochs without improvement of the smoothed score before stopping (0: never).
        min_fraction: Share of the run before a pick or an early stop may happen.
        smoothing: Weight of the previous smoothed score in its moving average.
    """

    monitor: str
    patience: int = 0
    min_fraction: float = 0.0
    smoothing: float = 0.0

    @classmethod
    def of(cls, config: TrainConfig, monitor: str) -> Selection:
        """The selection settings of ``config``, scoring ``monitor``."""
        return cls(monitor, config.patience, config.min_fraction, config.smoothing)


@dataclass(frozen=True)
class ResumeState:
    """Where an interrupted run stood after its last finished epoch.

    Attributes:
        epoch: Epochs finished.
        best: Best smoothed score so far (``-inf``: none yet).
        best_epoch: The epoch that scored it (0: none).
        wait: Epochs since it, for early stopping.
        smoothed: The smoothed score after the last epoch (None: none yet).
        spent: Training seconds spent.
        led_by: What the schedule of a run of both time and steps followed
            (:class:`.schedule.Budget`).
    """

    epoch: int = 0
    best: float = -np.inf
    best_epoch: int = 0
    wait: int = 0
    smoothed: float | None = None
    spent: float = 0.0
    led_by: str | None = None

    @classmethod
    def from_json(cls, text: str) -> tuple[ResumeState, dict[str, Any] | None]:
        """The state and the settings stored in a checkpoint's ``meta`` (None: not stored).

        Keys a checkpoint lacks keep their defaults; keys this class does not know (the
        monitor) are dropped.
        """
        meta = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in known}), meta.get("settings")

    def to_json(self, monitor: str, settings: Mapping[str, Any]) -> str:
        """The checkpoint's ``meta``: this state, the score monitored and the run's settings."""
        return json.dumps(asdict(self) | {"monitor": monitor, "settings": dict(settings)})
