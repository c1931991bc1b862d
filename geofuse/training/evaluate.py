"""``evaluate()``: score a model against labels, over a tiles folder or a labelled scene.

Predictions come from the real inference path, :func:`geofuse.segment.segment_scene`, written to a
temporary mask and compared with the labels block by block. Pixels that are invalid in the input,
nodata in the labels, or ignored (``ignore_values`` / ``ignore_colors``) never count.

For a scene, the *seam metric* splits the pixels into a band of ``seam_width`` pixels on each
side of every interior core-window boundary of the :class:`~geofuse.read.grid.TileGrid` used for
inference, and the tile interiors, and reports IoU for both: seams that blend well score the
same as interiors.

Outputs: a JSON report (per-class IoU, F1, precision, recall, support, the confusion matrix, and
the seam metric) and a confusion-matrix PNG, each written to a temporary name and renamed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geofuse.config import SegmentConfig
from geofuse.errors import InputError
from geofuse.model.spec import ClassInfo
from geofuse.progress import Progress
from geofuse.read.grid import TileGrid
from geofuse.training.config import EvaluateConfig, LabelOptions, SceneSource
from geofuse.training.datasets import VECTOR_EXTS, LabelledRaster, find_pairs
from geofuse.training.labels import IGNORE, LabelCoding, binary_coding, load_classes, mask_values
from geofuse.training.metrics import (
    confusion_matrix,
    plot_confusion,
    set_false_positives,
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


def _coding(options: LabelOptions, classes: tuple[ClassInfo, ...],
            masks: list[Path]) -> LabelCoding:
    """The model's classes as the masks encode them.

    A classes file (or a coding) may say how. Without one, a two-class model scored on
    one-band masks of 0 and 255 reads 255 as its second class, as ``train`` does.
    """
    base = options.coding
    if options.classes_file is not None:
        file_classes, base = load_classes(options.classes_file)
        if len(file_classes) != len(classes):
            raise InputError(
                f"{options.classes_file}: expected {len(classes)} classes like the model. "
                f"Received: {len(file_classes)}"
            )
    if base is None and len(classes) == 2 and options.mask_mode != "colors" and masks:
        seen: set[int] = set()
        for mask in masks:
            values = mask_values(mask, options.ignore_values)
            if values is None:
                break
            seen |= values
        else:
            base = binary_coding(seen)
    return options.merge(base, classes)


def _read_prediction(path: Path, window: Window) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1, window=window)


def evaluate(config: EvaluateConfig, progress: Progress | None = None) -> EvaluationResult:
    """Score a model on labelled tiles or a labelled scene.

    Raises:
        GeofuseError: Bad inputs (one line naming the file), existing outputs without
            ``overwrite``. Reports are written only after every input has been scored.
    """
    from geofuse.model.modelfile import load_model
    from geofuse.model.runtime import choose_runtime, make_predictor, recent_predictor
    from geofuse.segment import segment_scene

    for path in (config.report, config.plot):
        if path is not None:
            check_destination(Path(path), config.overwrite)
    loaded = load_model(config.model)
    info = loaded.info
    classes = info.classes
    names = [c.name for c in classes]
    spec = info.spec
    spec.arch.check_tile(config.tiling.shape)
    source = config.source
    scene_mode = isinstance(source, SceneSource)
    if scene_mode:
        vector = Path(source.labels).suffix.lower() in VECTOR_EXTS
        masks = [] if vector else [Path(source.labels)]
    else:
        pairs = find_pairs(source)
        masks = [mask for _, mask in pairs]
    coding = _coding(config.labels, classes, masks)
    # without --bands, segment_scene picks the bands (by name where the image names them)
    expected = spec.bands if config.tiling.bands else None
    if scene_mode:
        rasters = [LabelledRaster(source.scene, source.labels, source.coding or coding, classes,
                                  config.tiling.bands, expected, source.class_field,
                                  source.line_width)]
    else:
        rasters = [LabelledRaster(image, mask, source.coding or coding, classes,
                                  config.tiling.bands, expected)
                   for image, mask in pairs]
    notices: list[str] = []
    predictors: dict[tuple[int, int], Any] = {}  # by tile shape, the most recent few
    choice = choose_runtime(config.tiling)
    total = np.zeros((spec.classes, spec.classes), np.int64)
    sets = (source.coding or coding).sets  # partial labels: "one of these classes"
    set_fp = np.zeros(spec.classes, np.int64) if sets else None
    set_pixels = 0
    seam_cm = np.zeros_like(total)
    inner_cm = np.zeros_like(total)
    per_item = []
    segment = SegmentConfig(tiling=config.tiling, input=config.input, tta=config.tta)
    with tempfile.TemporaryDirectory(prefix="geofuse-eval-") as tmp:
        for n, raster in enumerate(rasters):
            # the tile segment_scene picks for this image (smaller for a small chip)
            tiling = segment.tiling_for(raster.height, raster.width, spec.arch.multiple)
            predictor = recent_predictor(predictors, tiling.shape, lambda t=tiling:
                                         make_predictor(loaded, t.batch_size, t.shape, choice))
            out = Path(tmp) / f"pred_{n}.tif"
            result = segment_scene(raster.image, out, loaded,
                                   replace(segment, tiling=tiling),
                                   predictor=predictor, notify=notices.append)
            # read at the model's pixel size, the tile seams are not on the scene's grid
            seams = scene_mode and config.seam_width and not result.resampled
            grid = tiling.grid(raster.height, raster.width)
            rows_band, cols_band = seam_band(grid, config.seam_width)
            cm = np.zeros_like(total)
            step = max(1, (1 << 22) // raster.width)
            for r in range(0, raster.height, step):
                window = Window(0, r, raster.width, min(step, raster.height - r))
                _, _, labels = raster.read(window)
                pred = _read_prediction(out, window)
                valid = (labels != IGNORE) & (pred != IGNORE)
                cm += confusion_matrix(labels, pred, spec.classes, valid)
                if set_fp is not None:
                    counts, pixels = set_false_positives(labels, pred, sets, spec.classes)
                    set_fp += counts
                    set_pixels += pixels
                if seams:
                    band = rows_band[r:r + window.height, None] | cols_band[None, :]
                    seam_cm += confusion_matrix(labels, pred, spec.classes, valid & band)
                    inner_cm += confusion_matrix(labels, pred, spec.classes, valid & ~band)
            raster.close()
            total += cm
            per_item.append({"image": str(raster.image), "labels": str(raster.labels),
                             "mean_iou": summarize(cm, names)["mean_iou"]})
            if progress is not None:
                progress(n + 1, len(rasters))
    report = summarize(total, names, set_fp)
    if set_fp is not None:
        report["set_pixels"] = set_pixels  # scored pixels labelled with a class set
    report["model"] = str(loaded.path)
    report["model_sha256"] = loaded.digest
    report["items"] = per_item
    report["tiling"] = {"tile": config.tiling.tile, "overlap": config.tiling.overlap,
                        "blend": config.tiling.blend}
    report["tta"] = config.tta
    report["notices"] = list(dict.fromkeys(notices))
    for notice in report["notices"]:
        log.warning("%s", notice)
    report["runtime"] = next(iter(predictors.values())).choice.label if predictors else None
    if scene_mode and config.seam_width and seam_cm.any():
        seam, inner = summarize(seam_cm, names), summarize(inner_cm, names)
        report["seams"] = {
            "width": config.seam_width,
            "seam": {k: seam[k] for k in ("pixels", "accuracy", "mean_iou")}
            | {"iou": {k: v["iou"] for k, v in seam["classes"].items()}},
            "interior": {k: inner[k] for k in ("pixels", "accuracy", "mean_iou")}
            | {"iou": {k: v["iou"] for k, v in inner["classes"].items()}},
        }
    if config.report is not None:
        write_json(config.report, report)
    if config.plot is not None:
        with atomic_path(config.plot, ".png") as tmp_png:
            plot_confusion(total, names, str(tmp_png), title=f"{loaded.path.name}")
    return EvaluationResult(report=report, report_path=config.report, plot_path=config.plot)

