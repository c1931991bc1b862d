"""``evaluate()``: score a model against labels, over a tiles folder or a labelled scene.

Predictions come from the real inference path, :func:`geofuse.segment.segment_scene`, written to a
temporary mask and compared with the labels block by block. Pixels that are invalid in the input,
nodata in the labels, or ignored (``ignore_values`` / ``ignore_colors``) never count.

For a scene, the *seam metric* splits the pixels into a band of ``seam_width`` pixels on each
side of every interior core-window boundary of the :class:`~geofuse.windows.TileGrid` used for
inference, and the tile interiors, and reports IoU for both: seams that blend well score the
same as interiors.

Outputs: a JSON report (per-class IoU, F1, precision, recall, support, the confusion matrix, and
the seam metric) and a confusion-matrix PNG, each written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geofuse.config import SegmentConfig, TilingConfig
from geofuse.datasets import LabelledRaster, find_pairs
from geofuse.errors import ConfigError, InputError
from geofuse.labels import IGNORE, LabelCoding, load_classes
from geofuse.metrics import confusion_matrix, plot_confusion, summarize
from geofuse.stitcher import check_destination
from geofuse.train_config import TilesSource
from geofuse.windows import TileGrid, axis_cores

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation run.

    Attributes:
        model: Model file (None: the embedded default).
        tiles: A tiles folder to score (exclusive with ``scene``).
        scene: A scene to score, with ``labels`` (a label raster or vector file).
        labels: Labels of ``scene``.
        class_field: Vector attribute with class ids or names.
        line_width: Buffer in metres for vector lines.
        classes_file: A classes.json that says how masks encode the model's classes
            (default: ids 0..N-1, or the model's class colours for colour-coded masks).
        ignore_values: Mask values to ignore.
        ignore_colors: Mask colours to ignore.
        mask_mode: ``auto``, ``ids`` or ``colors``.
        tiling: Tile grid for inference (``bands`` selects input bands).
        seam_width: Half-width in pixels of the seam band (0: no seam metric).
        report: JSON report path.
        plot: Confusion-matrix PNG path (default: the report path with ``.png``).
        overwrite: Replace existing report files.
    """

    model: Path | None = None
    tiles: TilesSource | None = None
    scene: Path | None = None
    labels: Path | None = None
    class_field: str | None = None
    line_width: float | None = None
    classes_file: Path | None = None
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[str, ...] = ()
    mask_mode: str = "auto"
    tiling: TilingConfig = field(default_factory=TilingConfig)
    seam_width: int = 8
    report: Path | None = None
    plot: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if (self.tiles is None) == (self.scene is None):
            raise ConfigError("Expected either --tiles or --scene with --labels. Received: "
                              + ("both" if self.tiles is not None else "neither"))
        if self.scene is not None and self.labels is None:
            raise ConfigError(f"Expected --labels for the scene {self.scene}. Received: none")
        if not isinstance(self.seam_width, int) or self.seam_width < 0:
            raise ConfigError(f"Expected seam width >= 0. Received: {self.seam_width!r}")
        if self.report is not None and self.plot is None:
            object.__setattr__(self, "plot", Path(self.report).with_suffix(".png"))


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
    def axis(starts: list[int], length: int) -> np.ndarray:
        band = np.zeros(length, bool)
        for lo, _ in axis_cores(starts, grid.tile, length)[1:]:
            band[max(0, lo - width): lo + width] = True
        return band

    return axis(grid.row_starts, grid.height), axis(grid.col_starts, grid.width)


def _coding(config: EvaluateConfig, classes: tuple[Any, ...]) -> LabelCoding:
    base = LabelCoding(classes=len(classes), colors=tuple(c.color for c in classes))
    if config.classes_file is not None:
        file_classes, base = load_classes(config.classes_file)
        if len(file_classes) != len(classes):
            raise InputError(
                f"{config.classes_file}: expected {len(classes)} classes like the model. "
                f"Received: {len(file_classes)}"
            )
    return LabelCoding(
        classes=len(classes), values=base.values,
        colors=base.colors or tuple(c.color for c in classes),
        ignore_values=base.ignore_values + tuple(config.ignore_values),
        ignore_colors=base.ignore_colors + tuple(config.ignore_colors),
        mode=config.mask_mode if config.mask_mode != "auto" else base.mode,
    )


def _read_prediction(path: Path, window: Window) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1, window=window)


def evaluate(config: EvaluateConfig, progress: Progress | None = None) -> EvaluationResult:
    """Score a model on labelled tiles or a labelled scene.

    Raises:
        GeofuseError: Bad inputs (one line naming the file), existing outputs without
            ``overwrite``. Reports are written only after every input has been scored.
    """
    from geofuse.model import load_model
    from geofuse.segment import make_predictor, segment_scene

    for path in (config.report, config.plot):
        if path is not None:
            check_destination(Path(path), config.overwrite)
    loaded = load_model(config.model)
    info = loaded.info
    classes = info.classes
    names = [c.name for c in classes]
    coding = _coding(config, classes)
    spec = info.spec
    if config.tiling.tile % spec.multiple:
        raise ConfigError(
            f"Expected a tile size that is a multiple of {spec.multiple} for this model. "
            f"Received: {config.tiling.tile}"
        )
    if config.tiles is not None:
        items = [(image, mask) for image, mask in find_pairs(config.tiles)]
    else:
        items = [(Path(config.scene), Path(config.labels))]
    rasters = [
        LabelledRaster(image, mask, coding, classes, config.tiling.bands, spec.bands,
                       config.class_field, config.line_width)
        for image, mask in items
    ]
    predictors: dict[int, Any] = {}
    total = np.zeros((spec.classes, spec.classes), np.int64)
    seam_cm = np.zeros_like(total)
    inner_cm = np.zeros_like(total)
    per_item = []
    scene_mode = config.scene is not None
    with tempfile.TemporaryDirectory(prefix="geofuse-eval-") as tmp:
        for n, raster in enumerate(rasters):
            tile = config.tiling.tile
            if not scene_mode:
                side = max(raster.height, raster.width)
                tile = min(tile, -(-side // spec.multiple) * spec.multiple)
            overlap = min(config.tiling.overlap, tile // 2)
            tiling = TilingConfig(tile=tile, overlap=overlap, blend=config.tiling.blend,
                                  batch_size=config.tiling.batch_size, bands=config.tiling.bands)
            if tile not in predictors:
                predictors[tile] = make_predictor(loaded.model, tiling.batch_size, tile,
                                                  spec.bands)
            out = Path(tmp) / f"pred_{n}.tif"
            segment_scene(raster.image, out, loaded, SegmentConfig(tiling=tiling),
                          predictor=predictors[tile])
            grid = TileGrid(raster.height, raster.width, tile, overlap)
            rows_band, cols_band = seam_band(grid, config.seam_width)
            cm = np.zeros_like(total)
            step = max(1, (1 << 22) // raster.width)
            for r in range(0, raster.height, step):
                window = Window(0, r, raster.width, min(step, raster.height - r))
                _, _, labels = raster.read(window)
                pred = _read_prediction(out, window)
                valid = (labels != IGNORE) & (pred != IGNORE)
                cm += confusion_matrix(labels, pred, spec.classes, valid)
                if scene_mode and config.seam_width:
                    band = rows_band[r:r + window.height, None] | cols_band[None, :]
                    seam_cm += confusion_matrix(labels, pred, spec.classes, valid & band)
                    inner_cm += confusion_matrix(labels, pred, spec.classes, valid & ~band)
            raster.close()
            total += cm
            per_item.append({"image": str(raster.image), "labels": str(raster.labels),
                             "mean_iou": summarize(cm, names)["mean_iou"]})
            if progress is not None:
                progress(n + 1, len(rasters))
    report = summarize(total, names)
    report["model"] = str(loaded.path)
    report["model_sha256"] = loaded.digest
    report["items"] = per_item
    report["tiling"] = {"tile": config.tiling.tile, "overlap": config.tiling.overlap,
                        "blend": config.tiling.blend}
    if scene_mode and config.seam_width:
        seam, inner = summarize(seam_cm, names), summarize(inner_cm, names)
        report["seams"] = {
            "width": config.seam_width,
            "seam": {k: seam[k] for k in ("pixels", "accuracy", "mean_iou")}
            | {"iou": {k: v["iou"] for k, v in seam["classes"].items()}},
            "interior": {k: inner[k] for k in ("pixels", "accuracy", "mean_iou")}
            | {"iou": {k: v["iou"] for k, v in inner["classes"].items()}},
        }
    if config.report is not None:
        _write_report(Path(config.report), report)
    if config.plot is not None:
        tmp_png = Path(config.plot).with_name(f".{Path(config.plot).name}.tmp")
        plot_confusion(total, names, str(tmp_png), title=f"{loaded.path.name}")
        os.replace(tmp_png, config.plot)
    return EvaluationResult(report=report, report_path=config.report, plot_path=config.plot)


def _write_report(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
    os.replace(tmp, path)
