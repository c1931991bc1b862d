"""The Keras side of training: strategy, compile, fit with resumable state, final metrics.

:func:`fit_model` is called by :func:`.train.train` once the data is checked. It keeps
its state in ``RUN_DIR/checkpoints``: ``last.npz`` (weights, optimizer variables, epoch, best
score, early-stopping counter, training seconds spent; rewritten atomically after every epoch)
and ``best.npz`` (the best weights by the smoothed validation score; the model gets them with
``keep="best"``, else the last weights). ``history.csv`` gets one
row per epoch (with the learning rate and the seconds spent) and ``curves.png`` is drawn at the
end. :class:`~.schedule.Budget` and :class:`~.schedule.Schedule` lay the learning-rate schedule
over the run, counted in seconds (a time budget) or in steps (``epochs``).

Its phases: seed and strategy, the chip loader and validation chips (:func:`chip_loader`), the
state to resume from (``_resume``, a :class:`~geofuse.training.state.ResumeState`), the budget
(``_budget``), the compiled network (``_compile``), the epochs (``_run_epochs``) and the
weights kept, exported and validated (``_finish``).

Imports TensorFlow: import this module lazily.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Mapping, Sequence
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
from geofuse.training.chips import Augmentation, ChipLoader, Sampling, memory_dataset
from geofuse.training.config import TrainConfig
from geofuse.training.distributed import Agreement, run_loop, worker_role
from geofuse.training.init import apply_start
from geofuse.training.losses import ConfusionMetrics, SegmentationLoss
from geofuse.training.metrics import confusion_matrix, set_false_positives, summarize
from geofuse.training.schedule import Budget, Schedule
from geofuse.training.state import FitJob, Listeners, ResumeState, Selection
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


class RunState(keras.callbacks.Callback):
    """Best-weights checkpoint, early stopping and the resumable ``last.npz`` in one place.

    The best weights are picked by the smoothed validation score among the epochs that end
    after ``selection.min_fraction`` of the run (the annealing part of the schedule): on small
    validation sets a lucky early epoch otherwise wins (``scripts/studies/training``). Early
    stopping counts from there too.

    Args:
        folder: The checkpoints folder (``best.npz``, ``last.npz``).
        selection: The score monitored, patience, ``min_fraction`` and smoothing.
        budget: The run's budget (the share of the run done, the seconds spent).
        epochs: Epochs of the run (for ``progress``).
        listeners: Told after every epoch (None: nobody).
        resumed: Where an interrupted run stood (None: a fresh run).
        settings: What the checkpoint may only be resumed with (the network's and the
            optimizer's settings).
    """

    def __init__(
        self,
        folder: Path,
        selection: Selection,
        budget: Budget,
        epochs: int,
        listeners: Listeners | None = None,
        resumed: ResumeState | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.settings = dict(settings or {})
        self.folder = folder
        self.selection = selection
        self.monitor = selection.monitor
        self.budget = budget
        self.epochs = epochs
        self.listeners = listeners or Listeners()
        resumed = resumed or ResumeState()
        self.best = resumed.best
        self.best_epoch = resumed.best_epoch
        self.wait = resumed.wait
        self.smoothed = resumed.smoothed

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Update the smoothed score, best weights and early stopping; checkpoint; report."""
        logs = {k: float(v) for k, v in (logs or {}).items()}
        value = logs.get(self.monitor, -np.inf)
        if not np.isfinite(value):
            value = -np.inf
        smoothing = self.selection.smoothing
        self.smoothed = value if self.smoothed is None or not np.isfinite(self.smoothed) \
            else smoothing * self.smoothed + (1.0 - smoothing) * value
        weights = self.model.get_weights()
        step = int(self.model.optimizer.iterations.numpy())
        fraction = self.budget.fraction(step)
        if fraction < self.selection.min_fraction:
            pass  # too early to pick: a small validation set favours lucky early epochs
        elif self.smoothed >= self.best - 1e-9 or not np.isfinite(self.best):
            self.best, self.best_epoch, self.wait = self.smoothed, epoch + 1, 0
            _save_npz(self.folder / "best.npz", _pack("w", weights))
        else:
            self.wait += 1
        state = ResumeState(epoch=epoch + 1, best=self.best, best_epoch=self.best_epoch,
                            wait=self.wait, smoothed=self.smoothed, spent=self.budget.elapsed(),
                            led_by=self.budget.led_by)
        logs |= {"smoothed_score": self.smoothed, "elapsed": self.budget.elapsed(),
                 "budget": self.budget.seconds or 0.0, "fraction": fraction,
                 "budget_steps": self.budget.steps or 0, "step": step}
        optimizer = [np.asarray(v) for v in self.model.optimizer.variables]
        _save_npz(self.folder / "last.npz", _pack("w", weights) | _pack("o", optimizer)
                  | {"meta": np.array(state.to_json(self.monitor, self.settings))})
        if self.listeners.report is not None:
            self.listeners.report(epoch + 1, logs)
        if self.listeners.progress is not None:
            self.listeners.progress(epoch + 1, self.epochs)
        patience = self.selection.patience
        if patience and self.wait >= patience:
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
            f"was written with {'; '.join(changed)}. Resume with the same settings, or start "
            "afresh without `resume`.")


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


@dataclass
class Fitting:
    """A network being fitted: what :func:`fit_model`'s phases build and hand on.

    Attributes:
        network: The network the model file gets.
        model: What is trained (``network``, with deep-supervision heads if any).
        optimizer: Its optimizer.
        budget: The run's length and learning-rate schedule.
        epochs: Epochs of the run.
        initial: Epochs already finished (a resumed run).
        state: The checkpointing, selection and early-stopping callback.
    """

    network: Any
    model: Any
    optimizer: Any
    budget: Budget
    epochs: int
    initial: int
    state: RunState


def fit_model(job: FitJob, run_dir: Path, listeners: Listeners | None = None,
              seconds: float | None = None) -> FitOutcome:
    """Fit a fusion U-Net on chips from ``job.units``; see the module docstring for the state.

    Without ``seconds`` the run lasts ``job.steps`` optimiser steps (rounded up to whole
    epochs) or, when that is None, ``config.epochs`` epochs of ``config.steps_per_epoch``
    steps. With ``seconds`` the run is timed, and those steps (or epochs), if given, are an
    upper bound: the schedule then follows whichever limit is nearer.
    """
    entered = time.perf_counter()  # a timed run's clock counts the set-up too
    config = job.config
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
    multi = config.strategy == "multi-worker"
    chief, worker, _ = worker_role() if multi else (True, 0, 1)
    if not chief:  # the chief keeps the run folder; a worker's state is its own
        run_dir = _worker_folder(run_dir, config.resume)
    loader = chip_loader(job, worker)
    val_rows = loader.validation_rows(config.max_val_chips)
    val_data = loader.load(val_rows, augment=False) if len(val_rows) else None
    selection = Selection.of(config, "val_mean_iou" if val_data is not None else "mean_iou")
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    settings = _resume_settings(config, job.info)
    resumed, saved = _resume(config, folder, run_dir / "history.csv", settings)
    epochs, budget = _budget(config, seconds, job.steps, resumed)
    if seconds is not None:
        budget.start(entered)
    agree = Agreement(strategy) if multi else None
    if agree is not None and seconds is not None:
        budget.agree = agree
    network, model, optimizer = _compile(job, strategy, budget, saved)
    started = {}  # fine-tuning: the starting weights' scores, before any step
    if config.init is not None and saved is None and val_data is not None:
        started = validate(network, val_data, config.batch_size, job.names, job.class_sets)
    fitting = Fitting(network, model, optimizer, budget, epochs, resumed.epoch,
                      RunState(folder, selection, budget, epochs, listeners, resumed, settings))
    stopped = config.patience and resumed.wait >= config.patience
    if fitting.initial < epochs and not stopped and not budget.done(
            int(optimizer.iterations.numpy())):
        _run_epochs(job, fitting, loader, val_data, run_dir / "history.csv",
                    (strategy, agree) if multi else None)
    outcome = _finish(job, fitting, val_data, run_dir if chief else None, replicas)
    return dataclasses.replace(outcome, start_validation=started)


def chip_loader(job: FitJob, worker: int = 0) -> ChipLoader:
    """The chip loader of ``job``'s settings (worker ``k`` of a multi-worker run: its seed)."""
    config = job.config
    return ChipLoader(job.rasters, job.units, config.patch, job.info.normalization,
                      Augmentation.of(config),
                      Sampling(config.sampling, config.seed + 7919 * worker,
                               config.source_weights))


def _resume(config: TrainConfig, folder: Path, history: Path, settings: Mapping[str, Any],
            ) -> tuple[ResumeState, tuple[list[np.ndarray], list[np.ndarray]] | None]:
    """The state to start from and the saved ``(weights, optimizer variables)``, if resumed.

    A fresh run removes what an earlier one left: checkpoints and history.
    """
    last = folder / "last.npz"
    if config.resume and last.exists():
        with np.load(last) as data:
            state, stored = ResumeState.from_json(str(data["meta"]))
            saved = _unpack(data, "w"), _unpack(data, "o")
        _check_resume(last, stored, settings)
        log.info("resuming after epoch %d", state.epoch)
        return state, saved
    for stale in (last, folder / "best.npz", history):
        stale.unlink(missing_ok=True)
    return ResumeState(), None


def _budget(config: TrainConfig, seconds: float | None, steps: int | None,
            resumed: ResumeState) -> tuple[int, Budget]:
    """The run's epochs and its :class:`Budget` (in steps, or timed with a cap in steps)."""
    per_epoch = config.steps_per_epoch
    if seconds is None:
        epochs = -(-steps // per_epoch) if steps else config.epochs or 1
        return epochs, Budget(config.learning_rate, config.warmup, steps=epochs * per_epoch,
                              spent=float(resumed.spent))
    cap = steps or (config.epochs or 0) * per_epoch
    epochs = -(-cap // per_epoch) if cap else 1_000_000
    return epochs, Budget(config.learning_rate, config.warmup, seconds=seconds,
                          steps=epochs * per_epoch if cap else None,
                          spent=float(resumed.spent), led_by=resumed.led_by)


def _compile(job: FitJob, strategy: Any, budget: Budget,
             saved: tuple[list[np.ndarray], list[np.ndarray]] | None) -> tuple[Any, Any, Any]:
    """``(network, model, optimizer)`` built and compiled in the strategy's scope.

    ``saved``: the weights and optimizer variables of a resumed run, put back.
    """
    config, spec = job.config, job.info.spec
    with strategy.scope():
        network = build_unet(spec, patch=job.info.patch_size)  # the one to write
        if config.init is not None:  # fine-tuning: the start's weights, the frozen part
            apply_start(network, job.info, config, load=saved is None)
        model = deeply_supervised(network, spec, config.deep_supervision)
        optimizer = keras.optimizers.Adam(budget.learning_rate(0.0),
                                          weight_decay=config.weight_decay or None,
                                          use_ema=config.ema > 0,
                                          ema_momentum=config.ema or 0.99)
        if config.weight_decay:  # kernels only: biases and normalisation scales are free
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(
            optimizer=optimizer,
            loss=SegmentationLoss(spec.classes, config.loss, list(job.class_weights),
                                  class_sets=job.class_sets,
                                  heads=supervision_weights(spec.arch.depth,
                                                            config.deep_supervision)),
            metrics=[ConfusionMetrics(job.names)],
        )
        if saved is not None:
            model.set_weights(saved[0])
            optimizer.build(model.trainable_variables)
            for variable, value in zip(optimizer.variables, saved[1], strict=True):
                variable.assign(value)
    return network, model, optimizer


def _run_epochs(job: FitJob, fitting: Fitting, loader: ChipLoader,
                val_data: tuple[np.ndarray, np.ndarray] | None, history: Path,
                multi: tuple[Any, Agreement | None] | None) -> None:
    """Train the epochs left, with ``fit()`` or :func:`.distributed.run_loop`.

    ``multi``: ``(strategy, agreement)`` of a multi-worker run. Chips are made by
    :class:`.chipfeed.ChipFeed`.
    """
    config, initial = job.config, fitting.initial
    _trim_history(history, initial)
    callbacks = [Schedule(fitting.budget),
                 keras.callbacks.CSVLogger(str(history), append=initial > 0),
                 fitting.state]
    chips = config.steps_per_epoch * config.batch_size
    with contextlib.ExitStack() as feeds:  # leaving it stops the chip threads

        def feed(batch: int) -> Any:
            tables = (loader.epoch_rows(e, chips) for e in itertools.count(initial))
            return feeds.enter_context(
                ChipFeed(loader, tables, batch, config.workers)).dataset()

        if multi is not None:
            strategy, agree = multi
            run_loop(fitting.model, strategy, fitting.model.loss,
                     lambda context: feed(context.get_per_replica_batch_size(
                         config.batch_size)),
                     val_data, job.names, config.batch_size,
                     fitting.epochs, initial, config.steps_per_epoch, callbacks, agree)
        else:
            val_ds = None if val_data is None else memory_dataset(*val_data, config.batch_size)
            fitting.model.fit(
                feed(config.batch_size), epochs=fitting.epochs, initial_epoch=initial,
                steps_per_epoch=config.steps_per_epoch, validation_data=val_ds,
                verbose=0, shuffle=False, callbacks=callbacks,
            )


def _finish(job: FitJob, fitting: Fitting, val_data: tuple[np.ndarray, np.ndarray] | None,
            run_dir: Path | None, replicas: int) -> FitOutcome:
    """The weights kept, exported and validated; ``curves.png`` in ``run_dir`` (the chief's).

    ``run_dir`` None: a worker that is not the chief (no curves; its history is its own).
    """
    config, model, state = job.config, fitting.model, fitting.state
    if config.ema:  # the averaged weights (fit() put them in already; a resumed run that had
        # finished, or the multi-worker loop, did not)
        fitting.optimizer.finalize_variable_values(model.trainable_variables)
    folder = state.folder
    history = read_history(folder.parent / "history.csv")
    best = folder / "best.npz"
    kept = len(history)
    if config.keep == "best" and best.exists():
        with np.load(best) as data:
            model.set_weights(_unpack(data, "w"))
        kept = state.best_epoch
    export = build_unet(job.info.spec, patch=job.info.patch_size)
    export.set_weights(fitting.network.get_weights())
    validation = validate(export, val_data, config.batch_size, job.names, job.class_sets)
    if run_dir is not None:
        plot_curves(history, run_dir / "curves.png")
    return FitOutcome(
        export_model=export, validation=validation, best_epoch=state.best_epoch,
        kept_epoch=kept, epochs=len(history), monitor=state.monitor, replicas=replicas,
        history=history, val_data=val_data, seconds=fitting.budget.elapsed(),
    )


def validate(model: Any, val_data: tuple[np.ndarray, np.ndarray] | None, batch_size: int,
             names: Sequence[str], class_sets: Sequence[Sequence[int]] = ()) -> dict[str, Any]:
    """Metrics of ``model`` on the validation chips ``(images, labels)`` (empty: none).

    Pixels of a class set (``class_sets``) predicted as a class the set excludes count as
    false positives of that class (:func:`.metrics.set_false_positives`).
    """
    if val_data is None:
        return {}
    xv, yv = val_data
    cm = np.zeros((len(names), len(names)), np.int64)
    set_fp = np.zeros(len(names), np.int64) if class_sets else None
    for i in range(0, len(xv), batch_size):  # predict_on_batch: no tf.data here
        predicted = np.asarray(model.predict_on_batch(xv[i:i + batch_size])).argmax(-1)
        cm += confusion_matrix(yv[i:i + batch_size], predicted, len(names))
        if set_fp is not None:
            set_fp += set_false_positives(yv[i:i + batch_size], predicted, class_sets,
                                          len(names))[0]
    return summarize(cm, names, set_fp)


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
