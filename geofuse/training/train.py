"""``train()``: labelled tiles or scenes -> a fitted fusion U-Net in the one-file model format.

Phases: find, open and check the data, count classes and hold out whole tiles or scene blocks
for validation, with per-band normalisation of the training part (``load_data``; the class
table: :mod:`.classtable`); choose the chip side and the run's length (``plan_run``); fit
one network or several on chips sampled on the fly (:mod:`.members`, :mod:`.fit`, :mod:`.chips`)
with CE + Dice (:mod:`.losses`), checkpointing every epoch so ``resume=True`` continues after a
kill; write the run folder's ``history.csv``, ``curves.png``, ``metrics.json`` and
``checkpoints/``, and the model file, atomically, with its provenance.

TensorFlow is imported by :mod:`.fit`, when the networks are fitted.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import geofuse
from geofuse.errors import ConfigError, InputError, OutputError
from geofuse.model.spec import ClassInfo, ModelInfo, ModelSpec, Normalization
from geofuse.progress import Progress, Report
from geofuse.sources import portable
from geofuse.training.chipsize import choose_chip
from geofuse.training.classtable import class_sets, class_table
from geofuse.training.config import (
    AUTO_PATCH,
    CACHE_AUTO_BYTES,
    CLASS_WEIGHTINGS,
    DEFAULT_BATCH,
    DEFAULT_PATCH,
    SceneSource,
    TilesSource,
    TrainConfig,
    default_steps,
    format_duration,
)
from geofuse.training.datasets import (
    LabelledRaster,
    Unit,
    band_scale,
    choose_validation,
    class_weights,
    data_digest,
    find_pairs,
    make_units,
    normalisation_stats,
    scan,
    split_units,
)
from geofuse.training.distributed import worker_role
from geofuse.training.facts import input_facts
from geofuse.training.init import Start, begin
from geofuse.training.labels import LabelCoding
from geofuse.training.members import ensemble_outcome, fit_members
from geofuse.training.state import FitJob, Listeners
from geofuse.write.outputs import write_json

if TYPE_CHECKING:
    from geofuse.training.fit import FitOutcome

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train", "TilesSource", "SceneSource"]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced (``model`` is None on a multi-worker run's non-chief)."""

    model: Path | None
    run_dir: Path
    metrics: dict[str, Any]
    epochs: int
    best_epoch: int
    seconds: float
    kept_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


# -- the data -----------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The run's data, checked, scanned and split (see :func:`load_data`).

    Attributes:
        classes: The class table.
        coding: How the masks encode it.
        class_sets: The class ids of each class set the labels use.
        rasters: The labelled rasters, one per tile or scene.
        kinds: ``tile`` or ``scene``, per raster.
        files: Every image and mask file (for the data digest).
        units: The rasters' units (tiles, scene blocks), validation marked.
        normalization: Per-band scale, mean and std of the training part.
    """

    classes: tuple[ClassInfo, ...]
    coding: LabelCoding
    class_sets: tuple[tuple[int, ...], ...]
    rasters: list[LabelledRaster]
    kinds: list[str]
    files: list[Path]
    units: list[Unit]
    normalization: Normalization

    @property
    def train_counts(self) -> np.ndarray:
        """Labelled pixels of each class in the training part."""
        return sum(u.counts for u in self.units if not u.validation)

    @property
    def labelled_pixels(self) -> int:
        """Labelled pixels of the training part: a class's, or a class set's."""
        return int(self.train_counts.sum()) + sum(u.set_pixels for u in self.units
                                                  if not u.validation)


def open_data(
    config: TrainConfig, classes: tuple[ClassInfo, ...], coding: LabelCoding
) -> tuple[list[LabelledRaster], list[str], list[Path]]:
    """Open every source as labelled rasters; check bands, sizes and data types agree."""
    rasters: list[LabelledRaster] = []
    kinds: list[str] = []
    files: list[Path] = []
    expected: int | None = None
    for index, source in enumerate(config.sources):
        if isinstance(source, TilesSource):
            pairs = find_pairs(source)
            extra: dict[str, Any] = {}
            kind = "tile"
        else:
            pairs = [(Path(source.scene), Path(source.labels))]
            extra = {"class_field": source.class_field, "line_width": source.line_width}
            kind = "scene"
        for image, mask in pairs:
            raster = LabelledRaster(
                image, mask, source.coding or coding, classes, config.bands, expected, **extra
            )
            raster.source = index
            expected = len(raster.bands)
            if rasters and raster.dtype != rasters[0].dtype:
                raise InputError(
                    f"Expected {rasters[0].dtype} images like {rasters[0].name}. "
                    f"Received: {raster.dtype} in {image}"
                )
            rasters.append(raster)
            kinds.append(kind)
            files += [image, mask]
    if not rasters:
        raise InputError("Expected at least one tiles folder or scene. Received: none")
    return rasters, kinds, files


def load_data(config: TrainConfig) -> TrainingData:
    """The class table, the rasters (cached as ``config.cache`` says), units, split, statistics.

    Every mask is read once here (:func:`.datasets.scan`): nothing is written before the data
    has been checked.
    """
    classes, coding = class_table(config)
    sets = class_sets(config, coding)
    rasters, kinds, files = open_data(config, classes, coding)
    if config.cache == "memory":
        for raster in rasters:
            raster.load()
    elif config.cache == "auto":
        small = sum(r.memory_bytes for r in rasters) <= CACHE_AUTO_BYTES
        for raster in rasters:
            if small or raster.driver not in ("GTiff", "COG", "VRT"):
                raster.load()
    scale = band_scale(rasters[0].dtype)
    side = DEFAULT_PATCH if config.patch == AUTO_PATCH else config.patch
    units = make_units(rasters, kinds, config.val_block or max(4 * side, 256))
    scan(rasters, units, len(classes), scale)
    if sum(int(u.counts.sum()) for u in units) == 0:
        raise InputError(f"{rasters[0].labels}: no labelled pixels in the training data")
    if config.val_tiles:
        choose_validation(units, [rasters[u.raster].image for u in units], config.val_tiles)
    else:
        split_units(units, config.val_fraction, config.seed)
    mean, std = normalisation_stats(units)
    return TrainingData(classes, coding, sets, rasters, kinds, files, units,
                        Normalization(mean=mean, std=std, scale=scale))


# -- the plan -----------------------------------------------------------------------------------


def plan_run(config: TrainConfig, data: TrainingData,
             say: Callable[[str], None]) -> tuple[TrainConfig, int | None]:
    """The chip side and batch resolved, and the steps of a run not counted in epochs.

    Says what was chosen: the chip side of ``patch="auto"``, the run's length.
    """
    if config.patch == AUTO_PATCH:
        chip = choose_chip(data.rasters, data.train_counts, config.arch.depth)
        say(f"training on {chip.describe([c.name for c in data.classes])}")
        config = dataclasses.replace(config, patch=chip.patch,
                                     batch_size=config.batch_size or chip.batch_size)
    elif config.batch_size is None:
        config = dataclasses.replace(config, batch_size=DEFAULT_BATCH)
    seconds, steps = config.time_limit, None
    if config.epochs is None:
        steps = default_steps(data.labelled_pixels, config.steps_per_epoch,
                              maximum=seconds is None)
        pixels = f"{data.labelled_pixels / 1e6:.2f} Mpx of labelled training pixels"
        if seconds is None:
            say(f"training for {steps:,} steps (the default for {pixels}; the time it takes "
                "depends on this machine and is estimated after the first epoch; set "
                "`time_limit` or `epochs` to choose)")
        else:
            say(f"training for {format_duration(seconds)} or {steps:,} steps, whichever comes "
                f"first (the most for {pixels}: more steps overfit small data; `epochs` sets "
                "another bound)")
    elif seconds is not None:
        say(f"training for {format_duration(seconds)} or {config.epochs} epochs, whichever "
            "comes first")
    return config, steps


def describe_model(config: TrainConfig, data: TrainingData) -> ModelInfo:
    """What the model file will say of itself: network, classes, normalisation, contract."""
    spec = ModelSpec(bands=len(data.rasters[0].bands), classes=len(data.classes),
                     arch=config.arch)
    return ModelInfo(
        spec=spec, band_names=_band_names(data.rasters[0]), normalization=data.normalization,
        classes=data.classes, patch_size=config.patch, input_dtype=data.rasters[0].dtype,
        **input_facts(data.rasters),  # colours, value range, pixel size: the input contract
    )


# -- the run ------------------------------------------------------------------------------------


def _check_outputs(config: TrainConfig, chief: bool = True) -> Path:
    out = Path(config.out)
    if not chief:  # only the chief of a multi-worker run writes the model and the run folder
        return config.run_dir or out.with_suffix(".train")
    if out.suffix != ".keras":
        raise OutputError(f"{out}: expected a model path ending in .keras")
    if out.exists() and not (config.overwrite or config.resume):
        raise OutputError(f"{out}: already exists (`overwrite` replaces it)")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: folder is not writable")
    return config.run_dir or out.with_suffix(".train")


def _sayer(notify: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where the run's one-line messages go: ``notify``, else warnings to the log."""

    def say(text: str) -> None:
        if notify is not None:
            notify(text)
        elif text.startswith("warning: "):
            log.warning("%s", text[len("warning: "):])

    return say


def train(
    config: TrainConfig,
    progress: Progress | None = None,
    report: Report | None = None,
    notify: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a fusion U-Net and write it as one model file.

    Args:
        config: What to train on and how.
        progress: ``progress(done_epochs, total_epochs)`` after every epoch.
        report: ``report(epoch, logs)`` after every epoch (loss, mean IoU, ``elapsed`` and
            ``budget`` seconds, ``budget_steps``, the ``fraction`` of the run done, ...).
        notify: Receives one-line messages for the user: the budget chosen, warnings
            about a validation set too small to decide (also logged).

    Returns:
        A :class:`TrainResult`.

    Raises:
        GeofuseError: InputError for bad data (one line naming the file), OutputError for an
            existing or unwritable model path, ConfigError for bad settings. Nothing is written
            before the data has been checked.
    """
    start = time.perf_counter()
    chief = config.strategy != "multi-worker" or worker_role()[0]
    run_dir = _check_outputs(config, chief)
    if config.init is not None:  # a starting model that cannot be used fails before the data
        Start.read(config.init)
    say = _sayer(notify)
    data = load_data(config)
    for warning in validation_warnings(data.units, data.classes):
        say(f"warning: {warning}")
    started: dict[str, Any] = {}  # fine-tuning: the start's architecture and statistics
    if config.init is not None:
        config, norm, started = begin(config, data.normalization, _band_names(data.rasters[0]),
                                      data.classes, data.rasters[0].dtype, say)
        data = dataclasses.replace(data, normalization=norm)
    config, steps = plan_run(config, data, say)
    weights = _class_weights(config, data.train_counts, data.classes)
    job = FitJob(config, describe_model(config, data), data.rasters, data.units, weights,
                 data.class_sets, steps)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    seconds = config.time_limit
    if seconds is not None:  # the budget covers the whole run: data checks included
        seconds = max(1.0, seconds - (time.perf_counter() - start))
    outcomes = fit_members(job, run_dir, Listeners(progress, report), seconds, say)
    job, outcome = _combined(job, outcomes)
    metrics = _metrics(job, data, outcomes, outcome, (seconds, steps)) | {
        "seconds": round(time.perf_counter() - start, 1)} | (
        {"start_validation": outcomes[0].start_validation} if started else {})
    final = _final_info(job, data, outcome, started)
    if chief:
        write_json(run_dir / "metrics.json", metrics)
        from geofuse.model.calibration import training_chips
        from geofuse.model.modelfile import save_model

        save_model(outcome.export_model, final, config.out,
                   calibration=training_chips(data.rasters, data.units, final.spec.arch.multiple))
    return TrainResult(
        model=Path(config.out) if chief else None, run_dir=run_dir, metrics=metrics,
        epochs=outcome.epochs, best_epoch=outcome.best_epoch, kept_epoch=outcome.kept_epoch,
        seconds=time.perf_counter() - start,
        history=outcome.history,
    )


def _combined(job: FitJob, outcomes: list[FitOutcome]) -> tuple[FitJob, FitOutcome]:
    """The job and outcome of the model file: the one network, or the average of several."""
    if len(outcomes) == 1:
        return job, outcomes[0]
    spec = dataclasses.replace(job.info.spec, members=len(outcomes))
    job = dataclasses.replace(job, info=dataclasses.replace(job.info, spec=spec))
    return job, ensemble_outcome(outcomes, job)


def _metrics(job: FitJob, data: TrainingData, outcomes: list[FitOutcome], outcome: FitOutcome,
             budget: tuple[float | None, int | None]) -> dict[str, Any]:
    """``metrics.json``: validation, epochs, the split, the budget (``(seconds, steps)``)."""
    config, units = job.config, data.units
    train_counts = data.train_counts
    return {
        "members": len(outcomes),
        **({"member_validation": [o.validation for o in outcomes]} if len(outcomes) > 1
           else {}),
        "validation": outcome.validation,
        "best_epoch": outcome.best_epoch,
        "kept_epoch": outcome.kept_epoch,
        "keep": config.keep,
        "epochs_run": outcome.epochs,
        "monitor": outcome.monitor,
        "class_weights": [round(float(w), 4) for w in job.class_weights],
        "class_pixels_train": {c.name: int(n)
                               for c, n in zip(data.classes, train_counts, strict=True)},
        "labelled_pixels_train": data.labelled_pixels,
        "units": {"train": sum(not u.validation for u in units),
                  "validation": sum(u.validation for u in units)},
        "held_out": [_unit_name(data.rasters[u.raster], u, data.kinds[u.raster])
                     for u in units if u.validation],
        "replicas": outcome.replicas,
        "patch": config.patch,  # resolved: the side patch="auto" chose, or the one given
        "batch_size": config.batch_size,
        "time_limit": config.time_limit,
        "budget_seconds": budget[0],
        "budget_steps": budget[1],
        "warnings": validation_warnings(units, data.classes),
    }


def _final_info(job: FitJob, data: TrainingData, outcome: FitOutcome,
                started: dict[str, Any]) -> ModelInfo:
    """The model file's description with its provenance (no absolute paths of this machine).

    ``started``: the model a fine-tuning run started from (name, SHA-256), if any.
    """
    config, spec = job.config, job.info.spec
    provenance = portable({
        "geofuse_version": geofuse.__version__,
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data_digest": data_digest(data.files),
        "data": [_describe_source(s) for s in config.sources],
        "classes": [c.name for c in data.classes],
        "fusion": spec.arch.fusion,
        "members": spec.members,
        "metrics": _short_metrics(outcome.validation),
        "training_config": config.to_dict(),
        **({"init": started} if started else {}),
    })
    return ModelInfo(**{**job.info.__dict__, "provenance": provenance})


def validation_warnings(units: list[Any], classes: tuple[ClassInfo, ...],
                        min_pixels: int = 2000) -> list[str]:
    """Why the validation set may be too small to pick the best weights or stop early.

    One validation tile or block, or fewer than ``min_pixels`` labelled validation pixels of
    a class that the training part has.
    """
    validation = [u for u in units if u.validation]
    if not validation:
        return ["no validation data: the last weights are kept (more tiles, or "
                "`val_fraction`)"]
    problems = []
    if len(validation) == 1:
        problems.append("validation is one tile or block: scores are noisy "
                        "(add tiles, or raise `val_fraction`)")
    val = sum(u.counts for u in validation)
    train = sum(u.counts for u in units if not u.validation)
    few = [f"{c.name} {int(v)}" for c, v, t in zip(classes, val, train, strict=True)
           if t > 0 and v < min_pixels]
    if few:
        problems.append(f"validation has fewer than {min_pixels} labelled pixels of: "
                        + ", ".join(few))
    return problems


def _class_weights(
    config: TrainConfig, counts: np.ndarray, classes: tuple[ClassInfo, ...]
) -> np.ndarray:
    if isinstance(config.class_weights, str):
        return class_weights(counts, power=CLASS_WEIGHTINGS[config.class_weights])
    weights = np.asarray(config.class_weights, np.float64)
    if len(weights) != len(classes):
        raise ConfigError(
            f"Expected {len(classes)} class weights. Received: {len(weights)}"
        )
    return weights


def _band_names(raster: LabelledRaster) -> tuple[str, ...]:
    names = tuple(n if n and n not in ("undefined", "gray") else f"b{b}"
                  for n, b in zip(raster.band_names, raster.bands, strict=True))
    return names if len(set(names)) == len(names) else tuple(f"b{b}" for b in raster.bands)


def _unit_name(raster: LabelledRaster, unit: Any, kind: str) -> str:
    if kind == "tile":
        return str(raster.image)
    w = unit.window
    return f"{raster.image} rows {w.row_off}:{w.row_off + w.height} " \
           f"cols {w.col_off}:{w.col_off + w.width}"


def _describe_source(source: TilesSource | SceneSource) -> dict[str, Any]:
    if isinstance(source, TilesSource):
        return {"tiles": str(source.root), "images": source.images, "masks": source.masks,
                "exclude": list(source.exclude)}
    return {"scene": str(source.scene), "labels": str(source.labels),
            "class_field": source.class_field, "line_width": source.line_width}


def _short_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    if not summary:
        return {}
    return {
        "split": "validation",
        "mean_iou": summary.get("mean_iou"),
        "mean_f1": summary.get("mean_f1"),
        "iou": {k: v["iou"] for k, v in summary.get("classes", {}).items()},
    }

