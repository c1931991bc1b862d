"""``train()``: labelled tiles or scenes -> a fitted fusion U-Net in the one-file model format.

Steps: find and open the data (:mod:`.datasets`), check it and count classes in one pass,
hold out whole tiles or scene blocks for validation, compute per-band normalisation and class
weights on the training part, then fit on chips sampled on the fly (:mod:`.chips`) with
CE + Dice (:mod:`.losses`), keeping the best weights, stopping early, and checkpointing
every epoch so ``resume=True`` continues after a kill. The run folder receives ``history.csv``,
``curves.png``, ``metrics.json`` and ``checkpoints/``; the model file is written atomically at the
end with its provenance.

TensorFlow is imported inside :func:`train`.
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
from typing import Any

import numpy as np

import geofuse
from geofuse.errors import ConfigError, InputError, OutputError
from geofuse.model.spec import ClassInfo, ModelInfo, ModelSpec, Normalization
from geofuse.progress import Progress, Report
from geofuse.sources import portable
from geofuse.training.chipsize import choose_chip
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
    VECTOR_EXTS,
    LabelledRaster,
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
from geofuse.training.labels import (
    LabelCoding,
    binary_coding,
    default_colour,
    load_classes,
    mask_values,
)
from geofuse.write.outputs import write_json

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


# -- data assembly ------------------------------------------------------------------------------


def _resolve_classes(config: TrainConfig) -> tuple[tuple[ClassInfo, ...], LabelCoding | None]:
    """The class table: explicit, from a classes file, from a tiles folder's classes.json."""
    labels = config.labels
    if labels.classes is not None:
        return tuple(labels.classes), labels.coding
    if labels.classes_file is not None:
        return load_classes(labels.classes_file)
    for source in config.sources:
        if isinstance(source, TilesSource) and (Path(source.root) / "classes.json").is_file():
            return load_classes(Path(source.root) / "classes.json")
    return (), None


def _rename(classes: tuple[ClassInfo, ...], names: tuple[str, ...]) -> tuple[ClassInfo, ...]:
    """The classes under the user's names (``--class-names``), if any."""
    if not names:
        return classes
    if len(names) != len(classes):
        raise ConfigError(f"Expected {len(classes)} class names "
                          f"({', '.join(c.name for c in classes)}). Received: {len(names)}")
    return tuple(ClassInfo(c.id, n, c.color) for c, n in zip(classes, names, strict=True))


def _foreground_name(source: TilesSource | SceneSource) -> str:
    """The name of the one labelled class of binary labels: the label file's or folder's."""
    if isinstance(source, SceneSource):
        return Path(source.labels).stem
    generic = {"masks", "mask", "labels", "label", "gt", "annotations", "y"}
    return source.masks if source.masks.lower() not in generic else "foreground"


def _infer_classes(config: TrainConfig) -> tuple[tuple[ClassInfo, ...], LabelCoding | None]:
    """Class table when none is given: vector class names, or ids seen in id-coded masks.

    Binary labels (a vector without a class field, masks of 0 and 1, or 0 and 255) give
    ``background`` and the label file's (or mask folder's) name.
    """
    from geofuse.training.vector_labels import vector_class_names

    for source in config.sources:
        if isinstance(source, SceneSource) and Path(source.labels).suffix.lower() in VECTOR_EXTS:
            if source.class_field is None:
                names = ["background", Path(source.labels).stem]
            else:
                found = vector_class_names(source.labels, source.class_field)
                if all(n.lstrip("-").isdigit() for n in found):
                    top = max(1, max(int(n) for n in found))
                    names = [f"class{i}" for i in range(top + 1)]
                else:
                    names = ["background", *found]
            return tuple(ClassInfo(i, n, default_colour(i, n)) for i, n in enumerate(names)), None
    top = 1
    seen: set[int] = set()
    ignore = set(config.labels.ignore_values)
    masks = [m for s in config.sources for m in _mask_paths(s)]
    for path in masks:
        values = mask_values(path, ignore)
        if values is None:
            raise InputError(
                f"{path}: expected a classes file (--classes) with colours for "
                "colour-coded masks. Received: none"
            )
        if values and min(values) < 0:
            raise InputError(
                f"{path}: expected class ids >= 0. Received: {min(values)} "
                "(use --ignore-value)"
            )
        top = max([top, *values])
        seen.update(values)
    foreground = _foreground_name(config.sources[0])
    binary = [ClassInfo(0, "background", default_colour(0, "background")),
              ClassInfo(1, foreground, default_colour(1, foreground))]
    if coding := binary_coding(seen):
        return tuple(binary), coding
    if top == 1:
        return tuple(binary), None
    return tuple(ClassInfo(i, f"class{i}", default_colour(i)) for i in range(top + 1)), None


def _class_sets(config: TrainConfig, coding: LabelCoding) -> tuple[tuple[int, ...], ...]:
    """The class sets of the run: those of every coding that gives any (they must agree).

    A source with partial labels (its own coding, with sets) may train beside fully labelled
    ones (no sets).

    Raises:
        ConfigError: When two codings give different class sets.
    """
    codings = [coding, *(getattr(s, "coding", None) for s in config.sources)]
    given = [c.sets for c in codings if c is not None and c.sets]
    for sets in given[1:]:
        if sets != given[0]:
            raise ConfigError(f"Expected the same class sets in every labels coding. "
                              f"Received: {list(given[0])} and {list(sets)}")
    return given[0] if given else ()


def _mask_paths(source: TilesSource | SceneSource) -> list[Path]:
    if isinstance(source, TilesSource):
        return [m for _, m in find_pairs(source)]
    return [Path(source.labels)]


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


# -- the run ------------------------------------------------------------------------------------


def _check_outputs(config: TrainConfig, chief: bool = True) -> Path:
    out = Path(config.out)
    if not chief:  # only the chief of a multi-worker run writes the model and the run folder
        return config.run_dir or out.with_suffix(".train")
    if out.suffix != ".keras":
        raise OutputError(f"{out}: expected a model path ending in .keras")
    if out.exists() and not (config.overwrite or config.resume):
        raise OutputError(f"{out}: already exists (use --overwrite to replace it)")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: folder is not writable")
    return config.run_dir or out.with_suffix(".train")


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
        from geofuse.training.init import Start

        Start.read(config.init)
    classes, coding = _resolve_classes(config)
    if not classes:
        classes, coding = _infer_classes(config)
    classes = _rename(classes, config.labels.class_names)
    coding = config.labels.merge(coding, classes)
    class_sets = _class_sets(config, coding)
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
    auto = config.patch == AUTO_PATCH
    block = config.val_block or max(4 * (DEFAULT_PATCH if auto else config.patch), 256)
    units = make_units(rasters, kinds, block)
    scan(rasters, units, len(classes), scale)
    if sum(int(u.counts.sum()) for u in units) == 0:
        raise InputError(f"{rasters[0].labels}: no labelled pixels in the training data")
    if config.val_tiles:
        choose_validation(units, [rasters[u.raster].image for u in units], config.val_tiles)
    else:
        split_units(units, config.val_fraction, config.seed)
    mean, std = normalisation_stats(units)
    norm = Normalization(mean=mean, std=std, scale=scale)
    train_counts = sum(u.counts for u in units if not u.validation)
    def say(text: str) -> None:
        if notify is not None:
            notify(text)
        elif text.startswith("warning: "):
            log.warning("%s", text[len("warning: "):])

    for warning in validation_warnings(units, classes):
        say(f"warning: {warning}")
    started: dict[str, Any] = {}  # fine-tuning: the start's architecture and statistics
    if config.init is not None:
        from geofuse.training.init import begin

        config, norm, started = begin(config, norm, _band_names(rasters[0]), classes,
                                      rasters[0].dtype, say)
    if auto:
        chip = choose_chip(rasters, train_counts, config.arch.depth)
        say(f"training on {chip.describe([c.name for c in classes])}")
        config = dataclasses.replace(config, patch=chip.patch,
                                     batch_size=config.batch_size or chip.batch_size)
    elif config.batch_size is None:
        config = dataclasses.replace(config, batch_size=DEFAULT_BATCH)
    seconds, steps = config.time_limit, None
    if config.epochs is None:
        steps = default_steps(int(train_counts.sum()), config.steps_per_epoch,
                              maximum=seconds is None)
        data = f"{train_counts.sum() / 1e6:.2f} Mpx of labelled training pixels"
        if seconds is None:
            say(f"training for {steps:,} steps (the default for {data}; the time it takes "
                "depends on this machine and is estimated after the first epoch; set "
                "--time-limit or --epochs to choose)")
        else:
            say(f"training for {format_duration(seconds)} or {steps:,} steps, whichever comes "
                f"first (the most for {data}: more steps overfit small data; --epochs sets "
                "another bound)")
    elif seconds is not None:
        say(f"training for {format_duration(seconds)} or {config.epochs} epochs, whichever "
            "comes first")
    weights = _class_weights(config, train_counts, classes)
    spec = ModelSpec(bands=len(rasters[0].bands), classes=len(classes), arch=config.arch)
    info = ModelInfo(
        spec=spec, band_names=_band_names(rasters[0]), normalization=norm, classes=classes,
        patch_size=config.patch, input_dtype=rasters[0].dtype,
        **input_facts(rasters),  # colours, value range, pixel size: the input contract
    )
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    if seconds is not None:  # the budget covers the whole run: data checks included
        seconds = max(1.0, seconds - (time.perf_counter() - start))
    from geofuse.training.members import ensemble_outcome, fit_members

    outcomes = fit_members(config, info, rasters, units, weights, run_dir, progress, report,
                           seconds, class_sets, steps, say)
    outcome = outcomes[0]
    if len(outcomes) > 1:
        spec = dataclasses.replace(spec, members=len(outcomes))
        info = dataclasses.replace(info, spec=spec)
        outcome = ensemble_outcome(outcomes, spec, config.batch_size,
                                   [c.name for c in classes], info.patch_size)
    digest = data_digest(files)
    metrics = {
        "members": len(outcomes),
        **({"member_validation": [o.validation for o in outcomes]} if len(outcomes) > 1
           else {}),
        "validation": outcome.validation,
        "best_epoch": outcome.best_epoch,
        "kept_epoch": outcome.kept_epoch,
        "keep": config.keep,
        "epochs_run": outcome.epochs,
        "monitor": outcome.monitor,
        "class_weights": [round(float(w), 4) for w in weights],
        "class_pixels_train": {c.name: int(n) for c, n in zip(classes, train_counts, strict=True)},
        "units": {"train": sum(not u.validation for u in units),
                  "validation": sum(u.validation for u in units)},
        "held_out": [_unit_name(rasters[u.raster], u, kinds[u.raster])
                     for u in units if u.validation],
        "replicas": outcome.replicas,
        "patch": config.patch,  # resolved: the side --patch auto chose, or the one given
        "batch_size": config.batch_size,
        "seconds": round(time.perf_counter() - start, 1),
        "time_limit": config.time_limit,
        "budget_seconds": seconds,
        "budget_steps": steps,
        "warnings": validation_warnings(units, classes),
        **({"start_validation": outcomes[0].start_validation} if started else {}),
    }
    provenance = portable({  # no absolute paths of this machine in the model file
        "geofuse_version": geofuse.__version__,
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data_digest": digest,
        "data": [_describe_source(s) for s in config.sources],
        "classes": [c.name for c in classes],
        "fusion": spec.arch.fusion,
        "members": spec.members,
        "metrics": _short_metrics(outcome.validation),
        "training_config": config.to_dict(),
        **({"init": started} if started else {}),
    })
    final = ModelInfo(**{**info.__dict__, "provenance": provenance})
    if chief:
        write_json(run_dir / "metrics.json", metrics)
        from geofuse.model.modelfile import save_model

        save_model(outcome.export_model, final, config.out)
    return TrainResult(
        model=Path(config.out) if chief else None, run_dir=run_dir, metrics=metrics,
        epochs=outcome.epochs, best_epoch=outcome.best_epoch, kept_epoch=outcome.kept_epoch,
        seconds=time.perf_counter() - start,
        history=outcome.history,
    )


def validation_warnings(units: list[Any], classes: tuple[ClassInfo, ...],
                        min_pixels: int = 2000) -> list[str]:
    """Why the validation set may be too small to pick the best weights or stop early.

    One validation tile or block, or fewer than ``min_pixels`` labelled validation pixels of
    a class that the training part has.
    """
    validation = [u for u in units if u.validation]
    if not validation:
        return ["no validation data: the last weights are kept (more tiles, or --val-fraction)"]
    problems = []
    if len(validation) == 1:
        problems.append("validation is one tile or block: scores are noisy "
                        "(add tiles, or raise --val-fraction)")
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

