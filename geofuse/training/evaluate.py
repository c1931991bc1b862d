"""``evaluate()``: score a model against labels, over a tiles folder or a labelled scene.

Predictions come from the real inference path, :func:`geofuse.segment.segment_scene`, written to a
temporary mask and compared with the labels block by block. Pixels that are invalid in the input,
nodata in the labels, or ignored (``ignore_values`` / ``ignore_colors``) never count.

Labels may cover only some of the model's classes: a class set ("one of these classes", from a
classes file) or one-class masks with ``label_class`` (0/1 or 0/255 masks: that class against
the rest). Only the classes with labelled pixels are scored (:func:`.metrics.summarize`); a set's
pixels predicted as a class the set excludes are false positives of that class. When masks of
two values meet a model of more classes without ``label_class``, a notice says so.

For a scene, the *seam metric* splits the pixels into a band of ``seam_width`` pixels on each
side of every interior core-window boundary of the :class:`~geofuse.read.grid.TileGrid` used for
inference, and the tile interiors, and reports IoU for both: seams that blend well score the
same as interiors.

Outputs: a JSON report (per-class IoU, F1, precision, recall, support, the confusion matrix, the
class sets' predictions, per image, and the seam metric) and a confusion-matrix PNG, each
written to a temporary name and renamed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geofuse.config import SegmentConfig
from geofuse.model.spec import ClassInfo
from geofuse.progress import Progress
from geofuse.read.grid import TileGrid
from geofuse.sources import as_source
from geofuse.training.config import EvaluateConfig, SceneSource
from geofuse.training.coverage import evaluation_coding
from geofuse.training.datasets import VECTOR_EXTS, LabelledRaster, find_pairs
from geofuse.training.labels import IGNORE, LabelCoding
from geofuse.training.metrics import (
    confusion_matrix,
    excluded_predictions,
    plot_confusion,
    set_predictions,
    summarize,
)
from geofuse.write.outputs import atomic_path, check_destination, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """The report (also written as JSON when asked)."""

    report: dict[str, Any]
    report_path: Path | None
    plot_path: Path | None


@dataclass
class Labels:
    """The labels to score against, decoded to the model's classes.

    Attributes:
        rasters: One labelled raster per tile, or the scene.
        coding: How they encode the classes (class sets included).
        scene: Whether the source is a scene (the seam metric applies).
        notices: What the user should know about how the labels are read.
    """

    rasters: list[LabelledRaster]
    coding: LabelCoding
    scene: bool
    notices: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """Confusion matrices of everything scored so far.

    Attributes:
        total: All pixels, ``(classes, classes)``.
        set_rows: Per class set, its pixels predicted as each class (``(sets, classes)``).
        seam: The seam band's pixels (scenes).
        inner: The tile interiors' pixels (scenes).
        items: Per image: its name, labels and scores.
    """

    total: np.ndarray
    set_rows: np.ndarray
    seam: np.ndarray
    inner: np.ndarray
    items: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, classes: int, sets: int) -> Tally:
        """Nothing counted yet."""
        zeros = np.zeros((classes, classes), np.int64)
        return cls(zeros.copy(), np.zeros((sets, classes), np.int64), zeros.copy(),
                   zeros.copy())


def seam_band(grid: TileGrid, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns within ``width`` pixels of an interior core boundary.

    Returns:
        ``(rows, cols)`` boolean vectors; a pixel is in the seam band when its row or its
        column is.
    """
    def axis(cores: list[tuple[int, int]], length: int) -> np.ndarray:
        band = np.zeros(length, bool)
        for lo, _ in cores[1:]:
            band[max(0, lo - width): lo + width] = True
        return band

    return axis(grid.row_cores, grid.height), axis(grid.col_cores, grid.width)


def open_labels(config: EvaluateConfig, classes: tuple[ClassInfo, ...],
                expected_bands: int | None) -> Labels:
    """The source's images and labels as labelled rasters, and how the labels are read."""
    source = config.source
    scene = isinstance(source, SceneSource)
    if scene:
        vector = Path(source.labels).suffix.lower() in VECTOR_EXTS
        pairs = [(source.scene, source.labels)]
        masks = [] if vector else [as_source(source.labels)]
        extra = (source.class_field, source.line_width)
    else:
        pairs = find_pairs(source)
        masks = [mask for _, mask in pairs]
        extra = (None, None)
    coding, notices = evaluation_coding(config, classes, masks)
    coding = source.coding or coding
    rasters = [LabelledRaster(image, mask, coding, classes, config.tiling.bands, expected_bands,
                              *extra) for image, mask in pairs]
    return Labels(rasters, coding, scene, notices)


def evaluate(config: EvaluateConfig, progress: Progress | None = None,
             notify: Callable[[str], None] | None = None) -> EvaluationResult:
    """Score a model on labelled tiles or a labelled scene.

    Args:
        config: What to score, against which labels, and how to predict.
        progress: ``progress(done_images, total_images)``.
        notify: Receives one-line notices (labels that may be read other than meant,
            resampling); without it they are logged as warnings.

    Raises:
        GeofuseError: Bad inputs (one line naming the file), existing outputs without
            ``overwrite``. Reports are written only after every input has been scored.
    """
    from geofuse.model.modelfile import load_model

    for path in (config.report, config.plot):
        if path is not None:
            check_destination(Path(path), config.overwrite)
    loaded = load_model(config.model)
    spec = loaded.info.spec
    spec.arch.check_tile(config.tiling.shape)
    # without bands, segment_scene picks the bands (by name where the image names them)
    labels = open_labels(config, loaded.info.classes, spec.bands if config.tiling.bands else None)
    tally, runtime, notices = _score(config, loaded, labels, progress)
    report = _report(config, loaded, labels, tally)
    report["runtime"] = runtime
    report["notices"] = list(dict.fromkeys(labels.notices + notices))
    for notice in report["notices"]:
        if notify is not None:
            notify(notice)
        else:
            log.warning("%s", notice)
    _write(config, loaded, labels.coding, tally, report)
    return EvaluationResult(report=report, report_path=config.report, plot_path=config.plot)


def _score(config: EvaluateConfig, loaded: Any, labels: Labels,
           progress: Progress | None) -> tuple[Tally, str | None, list[str]]:
    """Predict every image as ``segment`` would and count it against its labels.

    Returns:
        The tally, the runtime's label, and the notices of the predictions.
    """
    from geofuse.model.runtime import choose_runtime, make_predictor, recent_predictor
    from geofuse.segment import segment_scene

    spec = loaded.info.spec
    names = [c.name for c in loaded.info.classes]
    tally = Tally.empty(spec.classes, len(labels.coding.sets))
    notices: list[str] = []
    predictors: dict[tuple[int, int], Any] = {}  # by tile shape, the most recent few
    choice = choose_runtime(config.tiling)
    segment = SegmentConfig(tiling=config.tiling, input=config.input, tta=config.tta)
    with tempfile.TemporaryDirectory(prefix="geofuse-eval-") as tmp:
        for n, raster in enumerate(labels.rasters):
            # the tile segment_scene picks for this image (smaller for a small chip)
            tiling = segment.tiling_for(raster.height, raster.width, spec.arch.multiple)
            predictor = recent_predictor(predictors, tiling.shape, lambda t=tiling:
                                         make_predictor(loaded, t.batch_size, t.shape, choice))
            out = Path(tmp) / f"pred_{n}.tif"
            result = segment_scene(raster.image, out, loaded, replace(segment, tiling=tiling),
                                   predictor=predictor, notify=notices.append)
            # read at the model's pixel size, the tile seams are not on the scene's grid
            seams = labels.scene and config.seam_width and not result.resampled
            grid = tiling.grid(raster.height, raster.width) if seams else None
            cm, rows = _count(raster, out, tally, grid, config.seam_width)
            raster.close()
            tally.items.append(_item(raster, cm, rows, labels.coding, names))
            if progress is not None:
                progress(n + 1, len(labels.rasters))
    runtime = next(iter(predictors.values())).choice.label if predictors else None
    return tally, runtime, notices


def _count(raster: LabelledRaster, prediction: Path, tally: Tally, grid: TileGrid | None,
           seam_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Add one image's pixels to ``tally`` (block by block); its own matrix and set rows.

    ``grid``: the tile grid of the prediction, for the seam metric (None: no seam metric).
    """
    classes = tally.total.shape[0]
    cm = np.zeros_like(tally.total)
    rows = np.zeros_like(tally.set_rows)
    if grid is not None:
        rows_band, cols_band = seam_band(grid, seam_width)
    step = max(1, (1 << 22) // raster.width)
    with rasterio.open(prediction) as predicted:
        for r in range(0, raster.height, step):
            window = Window(0, r, raster.width, min(step, raster.height - r))
            _, _, labels = raster.read(window)
            pred = predicted.read(1, window=window)
            valid = (labels != IGNORE) & (pred != IGNORE)
            cm += confusion_matrix(labels, pred, classes, valid)
            rows += set_predictions(labels, pred, len(rows), classes)
            if grid is not None:
                band = rows_band[r:r + window.height, None] | cols_band[None, :]
                tally.seam += confusion_matrix(labels, pred, classes, valid & band)
                tally.inner += confusion_matrix(labels, pred, classes, valid & ~band)
    tally.total += cm
    tally.set_rows += rows
    return cm, rows


def _set_fp(rows: np.ndarray, coding: LabelCoding) -> np.ndarray | None:
    """False positives the class sets add per class (None: the labels use no set)."""
    return excluded_predictions(rows, coding.sets) if coding.sets else None


def _item(raster: LabelledRaster, cm: np.ndarray, rows: np.ndarray, coding: LabelCoding,
          names: list[str]) -> dict[str, Any]:
    """One image's line of the report: its pixels, mean IoU, and the IoU of every class."""
    summary = summarize(cm, names, _set_fp(rows, coding))
    return {"image": str(raster.image), "labels": str(raster.labels),
            "pixels": summary["pixels"], "set_pixels": int(rows.sum()),
            "mean_iou": summary["mean_iou"],
            "iou": {name: c["iou"] for name, c in summary["classes"].items()}}


def _report(config: EvaluateConfig, loaded: Any, labels: Labels, tally: Tally) -> dict[str, Any]:
    """The JSON report: the scores, the class sets' pixels, per image, seams, settings."""
    names = [c.name for c in loaded.info.classes]
    coding = labels.coding
    report = summarize(tally.total, names, _set_fp(tally.set_rows, coding))
    if coding.sets:
        report["set_pixels"] = int(tally.set_rows.sum())  # scored pixels labelled with a set
        report["class_sets"] = [
            {"name": coding.set_name(k), "classes": [names[c] for c in members],
             "pixels": int(row.sum()),
             "predicted": {name: int(v) for name, v in zip(names, row, strict=True)},
             "false_positives": {names[c]: int(row[c]) for c in range(len(names))
                                 if c not in members and row[c]}}
            for k, (members, row) in enumerate(zip(coding.sets, tally.set_rows, strict=True))]
    report["label_class"] = config.label_class
    report["model"] = str(loaded.path)
    report["model_sha256"] = loaded.digest
    report["items"] = tally.items
    report["tiling"] = {"tile": config.tiling.tile, "overlap": config.tiling.overlap,
                        "blend": config.tiling.blend}
    report["tta"] = config.tta
    if labels.scene and config.seam_width and tally.seam.any():
        seam, inner = summarize(tally.seam, names), summarize(tally.inner, names)
        report["seams"] = {
            "width": config.seam_width,
            "seam": {k: seam[k] for k in ("pixels", "accuracy", "mean_iou")}
            | {"iou": {k: v["iou"] for k, v in seam["classes"].items()}},
            "interior": {k: inner[k] for k in ("pixels", "accuracy", "mean_iou")}
            | {"iou": {k: v["iou"] for k, v in inner["classes"].items()}},
        }
    return report


def _write(config: EvaluateConfig, loaded: Any, coding: LabelCoding, tally: Tally,
           report: dict[str, Any]) -> None:
    """The JSON report and the confusion-matrix picture, where asked."""
    if config.report is not None:
        write_json(config.report, report)
    if config.plot is not None:
        names = [c.name for c in loaded.info.classes]
        sets = coding.sets
        with atomic_path(config.plot, ".png") as tmp_png:
            plot_confusion(tally.total, names, str(tmp_png), title=f"{loaded.path.name}",
                           set_rows=tally.set_rows if sets else None,
                           set_names=[coding.set_name(k) for k in range(len(sets))],
                           sets=sets)
