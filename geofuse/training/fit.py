"""The Keras side of training: strategy, compile, fit with resumable state, final metrics.

:func:`fit_model` is called by :func:`.train.train` once the data is checked. It keeps
its state in ``RUN_DIR/checkpoints``: ``last.npz`` (weights, optimizer variables, epoch, best
score, early-stopping counter, training seconds spent; rewritten atomically after every epoch)
and ``best.npz`` (the best weights by the smoothed validation score; the model gets them with
``keep="best"``, else the last weights). ``history.csv`` gets one
row per epoch (with the learning rate and the seconds spent) and ``curves.png`` is drawn at the
end. :class:`Budget` and :class:`Schedule` lay the learning-rate schedule over the run, counted
in seconds (a time budget) or in steps (``epochs``).

Imports TensorFlow: import this module lazily.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from geofuse.errors import ConfigError
from geofuse.model.network import build_unet, deeply_supervised, supervision_weights
from geofuse.model.spec import ModelInfo
from geofuse.training.chipfeed import ChipFeed
from geofuse.training.chips import ChipLoader, memory_dataset
from geofuse.training.config import TrainConfig
from geofuse.training.datasets import LabelledRaster, Unit
from geofuse.training.distributed import Agreement, run_loop, worker_role
from geofuse.training.losses import ConfusionMetrics, SegmentationLoss
from geofuse.training.metrics import confusion_matrix, summarize
from geofuse.write.outputs import atomic_path

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    """What :func:`fit_model` hands back to ``train()``."""

    export_model: Any
    validation: dict[str, Any]
    best_epoch: int
    epochs: int
    monitor: str
    kept_epoch: int = 0
    replicas: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    val_data: tuple[np.ndarray, np.ndarray] | None = None
    seconds: float = 0.0
    start_validation: dict[str, Any] = field(default_factory=dict)


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy called ``name``.

    ``none`` is the default strategy, ``mirrored`` mirrors over all local GPUs (else all
    logical CPUs), ``multi-worker`` is MultiWorkerMirroredStrategy over the ``TF_CONFIG``
    cluster (trained by :func:`.distributed.run_loop`).
    """
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _pack(prefix: str, values: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}{i}": np.asarray(v) for i, v in enumerate(values)}


def _unpack(data: Any, prefix: str) -> list[np.ndarray]:
    keys = sorted((k for k in data.files if k.startswith(prefix) and k[len(prefix):].isdigit()),
                  key=lambda k: int(k[len(prefix):]))
    return [data[k] for k in keys]


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

    def __init__(self, peak: float, warmup: float, seconds: float | None = None,
                 steps: int | None = None, spent: float = 0.0,
                 led_by: str | None = None) -> None:
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
        if self.seconds and (not self.steps or self.agree is not None
                             or self.led_by == "time"):
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
        """Start the clock (unless :func:`fit_model` started it with the set-up)."""
        if not self.budget.started:
            self.budget.start()

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Set the scheduled learning rate."""
        self.model.optimizer.learning_rate = self.budget.learning_rate(
            self.budget.fraction(self._step()))

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


class RunState(keras.callbacks.Callback):
    """Best-weights checkpoint, early stopping and the resumable ``last.npz`` in one place.

    The best weights are picked by the smoothed validation score among the epochs that end
    after ``min_fraction`` of the run (the annealing part of the schedule): on small validation sets
    a lucky early epoch otherwise wins (``scripts/studies/training``). Early stopping counts from
    there too.
    """

    def __init__(
        self,
        folder: Path,
        monitor: str,
        patience: int,
        epochs: int,
        progress: Callable[[int, int], None] | None,
        report: Callable[[int, Mapping[str, float]], None] | None,
        budget: Budget,
        min_fraction: float = 0.0,
        smoothing: float = 0.0,
        best: float = -np.inf,
        best_epoch: int = 0,
        wait: int = 0,
        smoothed: float | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.settings = dict(settings or {})
        self.folder = folder
        self.monitor = monitor
        self.patience = patience
        self.epochs = epochs
        self.progress = progress
        self.report = report
        self.budget = budget
        self.min_fraction = min_fraction
        self.smoothing = smoothing
        self.best = best
        self.best_epoch = best_epoch
        self.wait = wait
        self.smoothed = smoothed

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Update the smoothed score, best weights and early stopping; checkpoint; report."""
        logs = {k: float(v) for k, v in (logs or {}).items()}
        value = logs.get(self.monitor, -np.inf)
        if not np.isfinite(value):
            value = -np.inf
        self.smoothed = value if self.smoothed is None or not np.isfinite(self.smoothed) \
            else self.smoothing * self.smoothed + (1.0 - self.smoothing) * value
        weights = self.model.get_weights()
        step = int(self.model.optimizer.iterations.numpy())
        fraction = self.budget.fraction(step)
        if fraction < self.min_fraction:
            pass  # too early to pick: a small validation set favours lucky early epochs
        elif self.smoothed >= self.best - 1e-9 or not np.isfinite(self.best):
            self.best, self.best_epoch, self.wait = self.smoothed, epoch + 1, 0
            _save_npz(self.folder / "best.npz", _pack("w", weights))
        else:
            self.wait += 1
        meta = {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait, "monitor": self.monitor, "smoothed": self.smoothed,
                "spent": self.budget.elapsed(), "led_by": self.budget.led_by,
                "settings": self.settings}
        logs |= {"smoothed_score": self.smoothed, "elapsed": self.budget.elapsed(),
                 "budget": self.budget.seconds or 0.0, "fraction": fraction,
                 "budget_steps": self.budget.steps or 0, "step": step}
        optimizer = [np.asarray(v) for v in self.model.optimizer.variables]
        _save_npz(self.folder / "last.npz", _pack("w", weights) | _pack("o", optimizer)
                  | {"meta": np.array(json.dumps(meta))})
        if self.report is not None:
            self.report(epoch + 1, logs)
        if self.progress is not None:
            self.progress(epoch + 1, self.epochs)
        if self.patience and self.wait >= self.patience:
            log.info("early stop after epoch %d (best %s %.4f at epoch %d)",
                     epoch + 1, self.monitor, self.best, self.best_epoch)
            self.model.stop_training = True


def _resume_settings(config: TrainConfig, info: ModelInfo) -> dict[str, Any]:
    """What a checkpoint can only be resumed with: the network and the optimizer's settings."""
    spec = info.spec
    return {"bands": spec.bands, "classes": spec.classes,
            "architecture": json.loads(json.dumps(asdict(spec.arch), default=str)),
            "ema": config.ema, "weight_decay": config.weight_decay} | (
                {"deep_supervision": config.deep_supervision} if config.deep_supervision
                else {}) | (  # checkpoints from before an option resume as they did
                {"init": str(config.init), "freeze": config.freeze} if config.init else {})


def _check_resume(path: Path, saved: Mapping[str, Any] | None,
                  settings: Mapping[str, Any]) -> None:
    """Raise ConfigError when ``path`` was written with other settings than ``settings``.

    Checkpoints written before the settings were stored carry none; they are trusted.
    """
    if saved is None:
        return
    changed = [f"{key} {saved.get(key)!r} (received {value!r})"
               for key, value in settings.items() if saved.get(key) != value]
    if changed:
        raise ConfigError(
            f"Expected the settings of the interrupted run to resume {path}. The checkpoint "
            f"was written with {'; '.join(changed)}. Resume with the same options, or start "
            "afresh without --resume.")


def _trim_history(path: Path, epochs: int) -> None:
    """Keep the header and the first ``epochs`` rows (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows[: epochs + 1])


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of ``history.csv`` as dicts of floats."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {}
            for key, text in row.items():
                try:
                    values[key] = float(text)
                except (TypeError, ValueError):  # "NA" where Keras had no value
                    continue
            rows.append(values)
    return rows


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and mean IoU per epoch (training and validation) as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for ax, key in zip(axes, ("loss", "mean_iou"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], style,
                        label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def fit_model(
    config: TrainConfig,
    info: ModelInfo,
    rasters: Sequence[LabelledRaster],
    units: Sequence[Unit],
    weights: np.ndarray,
    run_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    report: Callable[[int, Mapping[str, float]], None] | None = None,
    seconds: float | None = None,
    class_sets: Sequence[Sequence[int]] = (),
    steps: int | None = None,
) -> FitOutcome:
    """Fit a fusion U-Net on chips from ``units``; see the module docstring for the state.

    Without ``seconds`` the run lasts ``steps`` optimiser steps (rounded up to whole epochs)
    or, when that is None, ``config.epochs`` epochs of ``config.steps_per_epoch`` steps. With
    ``seconds`` the run is timed, and those steps (or epochs), if given, are an upper bound:
    the schedule then follows whichever limit is nearer.
    ``class_sets``: the class ids of each class set the labels use (:mod:`.labels`).
    """
    entered = time.perf_counter()  # a timed run's clock counts the set-up too
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(
            f"Expected a batch size that is a multiple of the {replicas} replicas. "
            f"Received: {config.batch_size}"
        )
    names = [c.name for c in info.classes]
    multi = config.strategy == "multi-worker"
    chief, worker, _ = worker_role() if multi else (True, 0, 1)
    if not chief:  # the chief keeps the run folder; a worker's state is its own
        run_dir = _worker_folder(run_dir, config.resume)
    loader = ChipLoader(rasters, units, config.patch, info.normalization, config.augment,
                        config.jitter, config.seed + 7919 * worker, config.sampling,
                        config.source_weights, config.zoom, config.rotate, config.shadow,
                        config.cutmix)
    val_rows = loader.validation_rows(config.max_val_chips)
    if len(val_rows):
        xv, yv = loader.load(val_rows, augment=False)
    monitor = "val_mean_iou" if len(val_rows) else "mean_iou"

    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    history_path = run_dir / "history.csv"
    state: dict[str, Any] = {"epoch": 0, "best": -np.inf, "best_epoch": 0, "wait": 0,
                             "smoothed": None, "spent": 0.0, "led_by": None}
    saved_weights = saved_optimizer = None
    last = folder / "last.npz"
    settings = _resume_settings(config, info)
    if config.resume and last.exists():
        with np.load(last) as data:
            state |= json.loads(str(data["meta"]))
            saved_weights, saved_optimizer = _unpack(data, "w"), _unpack(data, "o")
        _check_resume(last, state.pop("settings", None), settings)
        log.info("resuming after epoch %d", state["epoch"])
    else:
        for stale in (last, folder / "best.npz", history_path):
            stale.unlink(missing_ok=True)
    initial = int(state["epoch"])

    if seconds is None:
        epochs = -(-steps // config.steps_per_epoch) if steps else config.epochs or 1
        budget = Budget(config.learning_rate, config.warmup,
                        steps=epochs * config.steps_per_epoch, spent=float(state["spent"]))
    else:
        cap = steps or (config.epochs or 0) * config.steps_per_epoch
        epochs = -(-cap // config.steps_per_epoch) if cap else 1_000_000
        budget = Budget(config.learning_rate, config.warmup, seconds=seconds,
                        steps=epochs * config.steps_per_epoch if cap else None,
                        spent=float(state["spent"]), led_by=state["led_by"])
    if seconds is not None:
        budget.start(entered)
    if multi:
        agree = Agreement(strategy)
        if seconds is not None:
            budget.agree = agree
    with strategy.scope():
        network = build_unet(info.spec, patch=info.patch_size)  # the one to write
        start_validation: dict[str, Any] = {}
        if config.init is not None:  # fine-tuning: the start's weights, the frozen part
            from geofuse.training.init import apply_start

            apply_start(network, info, config, load=saved_weights is None)
            if saved_weights is None and len(val_rows):
                start_validation = validate(network, (xv, yv), config.batch_size, names)
        model = deeply_supervised(network, info.spec, config.deep_supervision)
        optimizer = keras.optimizers.Adam(budget.learning_rate(0.0),
                                          weight_decay=config.weight_decay or None,
                                          use_ema=config.ema > 0,
                                          ema_momentum=config.ema or 0.99)
        if config.weight_decay:  # kernels only: biases and normalisation scales are free
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(
            optimizer=optimizer,
            loss=SegmentationLoss(info.spec.classes, config.loss, list(weights),
                                  class_sets=class_sets,
                                  heads=supervision_weights(info.spec.arch.depth,
                                                            config.deep_supervision)),
            metrics=[ConfusionMetrics(names)],
        )
        if saved_weights is not None:
            model.set_weights(saved_weights)
            optimizer.build(model.trainable_variables)
            for variable, value in zip(optimizer.variables, saved_optimizer, strict=True):
                variable.assign(value)

    callback = RunState(folder, monitor, config.patience, epochs, progress, report, budget,
                        config.min_fraction, config.smoothing, state["best"],
                        state["best_epoch"], state["wait"], state["smoothed"], settings)
    stopped = config.patience and state["wait"] >= config.patience
    done = budget.done(int(optimizer.iterations.numpy()))
    if initial < epochs and not stopped and not done:
        _trim_history(history_path, initial)
        callbacks = [Schedule(budget),
                     keras.callbacks.CSVLogger(str(history_path), append=initial > 0),
                     callback]
        chips = config.steps_per_epoch * config.batch_size
        with contextlib.ExitStack() as feeds:  # leaving it stops the chip threads

            def feed(batch: int) -> Any:
                tables = (loader.epoch_rows(e, chips) for e in itertools.count(initial))
                return feeds.enter_context(
                    ChipFeed(loader, tables, batch, config.workers)).dataset()

            if multi:
                run_loop(model, strategy, model.loss,
                         lambda context: feed(context.get_per_replica_batch_size(
                             config.batch_size)),
                         (xv, yv) if len(val_rows) else None, names, config.batch_size,
                         epochs, initial, config.steps_per_epoch, callbacks, agree)
            else:
                val_ds = memory_dataset(xv, yv, config.batch_size) if len(val_rows) else None
                model.fit(
                    feed(config.batch_size), epochs=epochs, initial_epoch=initial,
                    steps_per_epoch=config.steps_per_epoch, validation_data=val_ds,
                    verbose=0, shuffle=False, callbacks=callbacks,
                )
    if config.ema:  # the averaged weights (fit() already put them in; a resumed, finished run
        optimizer.finalize_variable_values(model.trainable_variables)  # or a custom loop not)
    history = read_history(history_path)
    best = folder / "best.npz"
    kept = len(history)
    if config.keep == "best" and best.exists():
        with np.load(best) as data:
            model.set_weights(_unpack(data, "w"))
        kept = callback.best_epoch
    export = build_unet(info.spec, patch=info.patch_size)
    export.set_weights(network.get_weights())
    val_data = (xv, yv) if len(val_rows) else None
    validation = validate(export, val_data, config.batch_size, names)
    if chief:
        plot_curves(history, run_dir / "curves.png")
    return FitOutcome(
        export_model=export, validation=validation, best_epoch=callback.best_epoch, kept_epoch=kept,
        epochs=len(history), monitor=monitor, replicas=replicas, history=history,
        val_data=val_data, seconds=budget.elapsed(), start_validation=start_validation,
    )


def validate(model: Any, val_data: tuple[np.ndarray, np.ndarray] | None, batch_size: int,
             names: Sequence[str]) -> dict[str, Any]:
    """Metrics of ``model`` on the validation chips ``(images, labels)`` (empty: none)."""
    if val_data is None:
        return {}
    xv, yv = val_data
    cm = np.zeros((len(names), len(names)), np.int64)
    for i in range(0, len(xv), batch_size):  # predict_on_batch: no tf.data here
        probs = np.asarray(model.predict_on_batch(xv[i:i + batch_size]))
        cm += confusion_matrix(yv[i:i + batch_size], probs.argmax(-1), len(names))
    return summarize(cm, names)


def _worker_folder(run_dir: Path, resume: bool) -> Path:
    """A non-chief worker's own run folder (temporary), seeded with the chief's state to resume.

    Resuming a multi-worker run needs the chief's run folder on a shared file system.
    """
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="geofuse-worker-"))
    (folder / "checkpoints").mkdir()
    if resume:
        for name in ("checkpoints/last.npz", "checkpoints/best.npz", "history.csv"):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, folder / name)
    return folder
