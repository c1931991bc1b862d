"""The length of a training run and its learning-rate schedule: :class:`Budget`, :class:`Schedule`.

A run is counted in optimiser steps, in seconds (a time budget), or both, whichever ends first;
the learning rate rises over a short warm-up, then follows a cosine down to 5 % of its peak at
the end of the run. :class:`Schedule` is the Keras callback that sets it before every step and
ends a timed run when its time is up.

Imports Keras (for the callback): import this module lazily.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from geofuse.errors import ConfigError


class Budget:
    """The run's length (seconds of a time budget, optimiser steps, or both) and schedule.

    The learning rate rises linearly over the first ``warmup`` share of the run, then follows
    a cosine down to 5 % of the peak at the very end of the run; in seconds, the share is the
    time spent so far (carried over a resume), so the run ends with its schedule.

    With both a time and a step limit the run ends at whichever it reaches first. The schedule
    follows the steps alone while the steps are on course to come first (:meth:`observe`
    projects the finish from the step rate measured since the first step, 20 steps in and
    again after every epoch), so a run whose time is generous is the same run on any machine
    and for any load: one seed, one model. While the projection says the time will end the
    run, the schedule follows whichever of the two is further along, so the run still ends
    annealed. The time is a hard limit either way.
    """

    FLOOR = 0.05
    DECIDE_AFTER = 20
    """Steps after the first (the one that traces the model) that the first projection uses."""
    SLACK = 1.15
    """Projected training time x this must fit the time left (epoch validation, checkpoints)."""

    def __init__(
        self,
        peak: float,
        warmup: float,
        seconds: float | None = None,
        steps: int | None = None,
        spent: float = 0.0,
        led_by: str | None = None,
    ) -> None:
        if seconds is None and steps is None:
            raise ConfigError("Expected a budget in seconds or in steps. Received: neither")
        self.peak, self.warmup = peak, warmup
        self.seconds, self.steps = seconds, steps
        self.spent = spent
        self._since: float | None = None
        # Multi-worker runs: maps this worker's share of a timed run to the share all agree
        # on, so every worker sets the same learning rate and stops at the same step.
        self.agree: Callable[[float], float] | None = None
        # "steps": the schedule follows the steps; "time": the further of the two; None: not
        # projected yet (the steps meanwhile). Only a budget of both is ever projected.
        self.led_by = led_by if seconds and steps else None
        self._first: tuple[int, float] | None = None  # (step, elapsed) after the first step

    def start(self, since: float | None = None) -> None:
        """Start (or restart, after a resume) the clock, at ``since`` (a perf_counter reading)."""
        self._since = time.perf_counter() if since is None else since

    @property
    def started(self) -> bool:
        """Whether the clock runs."""
        return self._since is not None

    def elapsed(self) -> float:
        """Training seconds spent, including those before a resume."""
        return self.spent + (time.perf_counter() - self._since if self._since else 0.0)

    def _time_share(self, elapsed: float | None) -> float:
        done = (self.elapsed() if elapsed is None else elapsed) / self.seconds
        return self.agree(done) if self.agree is not None else done

    def fraction(self, step: int, elapsed: float | None = None) -> float:
        """How much of the schedule is done, 0..1 (``elapsed``: a reading of :meth:`elapsed`)."""
        done = 0.0
        if self.seconds and (not self.steps or self.agree is not None or self.led_by == "time"):
            done = self._time_share(elapsed)
        if self.steps:  # the same step on every worker: no agreement needed
            done = max(done, step / self.steps)
        return float(min(1.0, max(0.0, done)))

    def done(self, step: int, elapsed: float | None = None) -> bool:
        """Whether the run is over: its steps made, or its time spent."""
        if self.steps and step >= self.steps:
            return True
        return bool(self.seconds) and self._time_share(elapsed) >= 1.0

    def observe(self, step: int, elapsed: float, epoch_end: bool = False) -> None:
        """Project, from the step rate so far, whether the steps will end the run first.

        Called after every step (``epoch_end``: and after each epoch's validation). The first
        projection comes :data:`DECIDE_AFTER` steps after the first one, the next ones at each
        epoch's end (a machine busy at the start is not held against the whole run).
        """
        if not (self.seconds and self.steps) or self.agree is not None:
            return
        if self._first is None:
            self._first = (step, elapsed)
            return
        made = step - self._first[0]
        if made < self.DECIDE_AFTER or (self.led_by is not None and not epoch_end):
            return
        rate = (elapsed - self._first[1]) / made
        projected = elapsed + self.SLACK * rate * max(0, self.steps - step)
        self.led_by = "steps" if projected <= self.seconds else "time"

    def learning_rate(self, fraction: float) -> float:
        """The scheduled learning rate at ``fraction`` of the run."""
        if self.warmup > 0 and fraction < self.warmup:
            return self.peak * (0.1 + 0.9 * fraction / self.warmup)
        rest = (fraction - self.warmup) / max(1e-9, 1.0 - self.warmup)
        cosine = 0.5 * (1.0 + np.cos(np.pi * min(1.0, rest)))
        return float(self.peak * (self.FLOOR + (1.0 - self.FLOOR) * cosine))


class Schedule(keras.callbacks.Callback):
    """Sets the learning rate before every step and ends a timed run when its time is up."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self.budget = budget

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Start the clock (unless ``fit_model`` started it with the set-up)."""
        if not self.budget.started:
            self.budget.start()

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Set the scheduled learning rate."""
        self.model.optimizer.learning_rate = self.budget.learning_rate(
            self.budget.fraction(self._step())
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Add the learning rate and the time spent to the epoch's logs (history.csv).

        A budget that ran out during the epoch's last batches or its validation ends the run
        here, on the reading the logs get: no epoch starts after the budget.
        """
        elapsed = self.budget.elapsed()
        step = self._step()
        self.budget.observe(step, elapsed, epoch_end=True)
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
            logs["elapsed"] = elapsed
        if self.budget.seconds is not None and self.budget.done(step, elapsed):
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Stop once the time budget is spent (the epoch's validation still runs)."""
        if self.budget.seconds is None:
            return
        step, elapsed = self._step(), self.budget.elapsed()
        self.budget.observe(step, elapsed)
        if self.budget.done(step, elapsed):
            self.model.stop_training = True

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())
