"""``segment_scene``: tiling reader -> fusion U-Net -> stitcher -> georeferenced outputs.

Reads run in a background thread ahead of the model; batches have a fixed shape so the compiled
prediction function is traced once; the stitcher streams full-width row bands to the writers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

import geofuse
from geofuse.aoi import AreaOfInterest
from geofuse.config import CLASS_NODATA, SegmentConfig
from geofuse.errors import OutputError
from geofuse.model import LoadedModel, load_model
from geofuse.outputs import TAGS, Progress, check_destination
from geofuse.stitcher import PROB_SCALE, GeoTiffSink, Stitcher
from geofuse.tiling import Patch, SceneReader, batched, prefetch, stack_batch
from geofuse.tta import passes, tta_predictor
from geofuse.windows import TileGrid

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class SegmentResult:
    """What one ``segment_scene`` run produced and measured."""

    scene: Path
    mask: Path
    probabilities: Path | None
    width: int
    height: int
    tiles: int
    patch_pixels: int
    seconds: float
    class_counts: dict[str, int] = field(default_factory=dict)
    nodata_pixels: int = 0
    grid_tiles: int = 0
    tta_passes: int = 1
    windows_read: int = 0
    vector: Path | None = None
    polygons: int | None = None
    preview: Path | None = None

    @property
    def megapixels(self) -> float:
        """Scene size in millions of pixels."""
        return self.width * self.height / 1e6


def make_predictor(model: Any, batch: int, tile: int, bands: int) -> Callable[[np.ndarray], Any]:
    """A ``tf.function`` with a fixed input signature, so it is traced exactly once."""
    import tensorflow as tf

    @tf.function(
        input_signature=[tf.TensorSpec((batch, tile, tile, bands), tf.float32)],
        reduce_retracing=True,
    )
    def predict(x: Any) -> Any:
        return model(x, training=False)

    return lambda x: predict(tf.constant(x)).numpy()


def class_colormap(loaded: LoadedModel) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class colours, nodata transparent."""
    cmap = {c.id: (*c.rgb, 255) for c in loaded.info.classes}
    cmap[CLASS_NODATA] = (0, 0, 0, 0)
    return cmap


def output_tags(loaded: LoadedModel, config: SegmentConfig, scene: Path) -> dict[str, str]:
    """Tags recorded in every output: version, model digest, tiling, classes."""
    tiling = config.tiling
    return {
        TAGS.VERSION: geofuse.__version__,
        TAGS.MODEL: loaded.path.name,
        TAGS.MODEL_SHA256: loaded.digest,
        TAGS.TILE: str(tiling.tile),
        TAGS.OVERLAP: str(tiling.overlap),
        TAGS.BLEND: tiling.blend,
        TAGS.SOURCE: scene.name,
        TAGS.CLASSES: ",".join(c.name for c in loaded.info.classes),
        TAGS.TTA: config.tta,
    } | ({TAGS.AOI: Path(config.aoi).name} if config.aoi else {})


def run_pipeline(
    patches: Iterator[Patch],
    predict: Callable[[np.ndarray], Any],
    stitcher: Stitcher,
    batch_size: int,
    total: int,
    progress: Progress | None = None,
) -> None:
    """Predict fixed-size batches and stitch them, stitching batch k while predicting k + 1.

    Reads already run ahead in their own thread (``patches`` comes from :func:`prefetch`);
    here stitching runs in a second thread, so the model is never idle waiting for numpy.
    Batches are stitched strictly in order.
    """
    def stitch(batch: list[Patch], probs: np.ndarray) -> int:
        for patch, p in zip(batch, probs, strict=False):
            stitcher.add(patch.tile.read, patch.tile.core, patch.tile.row, patch.valid, p)
        return len(batch)

    done = 0
    inputs = None
    pending: Future[int] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geofuse-stitch") as pool:
        for batch in batched(patches, batch_size):
            inputs = stack_batch(batch, batch_size, out=inputs)
            probs = predict(inputs)
            if pending is not None:
                done += pending.result()
                if progress is not None:
                    progress(done, total)
            pending = pool.submit(stitch, batch, probs)
        if pending is not None:
            done += pending.result()
            if progress is not None:
                progress(done, total)


def segment_scene(
    scene: str | Path,
    out: str | Path,
    model: LoadedModel | str | Path | None = None,
    config: SegmentConfig | None = None,
    progress: Progress | None = None,
    predictor: Callable[[np.ndarray], Any] | None = None,
) -> SegmentResult:
    """Segment one scene into a class-mask COG (and optional probabilities).

    Args:
        scene: Input raster.
        out: Output class mask (GeoTIFF, same CRS/transform/size as the scene; nodata 255).
        model: A loaded model, a model file, or None for the embedded default.
        config: Tiling and outputs; defaults to ``SegmentConfig()``.
        progress: Optional ``progress(done_tiles, total_tiles)`` callback.
        predictor: Optional prebuilt prediction function (reused across scenes by batch jobs).

    Returns:
        A :class:`SegmentResult`.

    Raises:
        GeofuseError: InputError for a bad scene, OutputError for an unwritable or existing
            output, ModelError for a bad model, ConfigError for bad settings. Nothing is left
            under the output names on failure.

    """
    start = time.perf_counter()
    config = config or SegmentConfig()
    scene, out = Path(scene), Path(out)
    prob_path = Path(config.probabilities) if config.probabilities else None
    check_destination(out, config.overwrite)
    if prob_path is not None:
        if prob_path.resolve() == out.resolve():
            raise OutputError(f"{prob_path}: probabilities and mask must be different files")
        check_destination(prob_path, config.overwrite)
    _check_products(config, out, prob_path)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    loaded.info.spec.arch.check_tile(config.tiling.tile)
    info, tiling = loaded.info, config.tiling
    env = {"GDAL_CACHEMAX": config.gdal_cache_mb * 1024 * 1024}

    with rasterio.Env(**env), SceneReader(
        scene, bands=tiling.bands, normalization=info.normalization, expected_bands=info.spec.bands
    ) as reader:
        grid = TileGrid(reader.height, reader.width, tiling.tile, tiling.overlap)
        aoi = None if config.aoi is None else AreaOfInterest.load(
            config.aoi, scene, reader.crs, reader.transform, reader.width, reader.height
        )
        tiles = grid.tiles if aoi is None else aoi.select(grid, tiling.blend)
        common = {
            "width": reader.width,
            "height": reader.height,
            "crs": reader.crs,
            "transform": reader.transform,
            "gcps": reader.gcps,
            "tags": output_tags(loaded, config, scene),
        }
        sinks = Sinks(loaded, config, out, prob_path, common)
        try:
            stitcher = Stitcher(
                grid, info.spec.classes, tiling.blend, sinks.mask, sinks.probabilities,
                config.probability_dtype,
            )
            predict = tta_predictor(predictor or make_predictor(
                loaded.model, tiling.batch_size, tiling.tile, info.spec.bands
            ), config.tta)
            patches = prefetch(
                lambda: _masked(reader.patches(grid, tiles), aoi), depth=2 * tiling.batch_size,
                env=env,
            )
            run_pipeline(patches, predict, stitcher, tiling.batch_size, len(tiles), progress)
            stitcher.finish()
            sinks.commit()
            polygons = _products(config, scene, out, sinks.probabilities_file)
        finally:
            sinks.abort()
    seconds = time.perf_counter() - start
    counts = {c.name: int(n) for c, n in zip(info.classes, stitcher.class_counts, strict=True)}
    log.info("%s: %d tiles in %.1f s", scene.name, len(tiles), seconds)
    return SegmentResult(
        scene=scene, mask=out, probabilities=prob_path, width=reader.width,
        height=reader.height, tiles=len(tiles), patch_pixels=len(tiles) * tiling.tile ** 2,
        seconds=seconds, class_counts=counts, nodata_pixels=stitcher.nodata_pixels,
        grid_tiles=len(grid), tta_passes=passes(config.tta), windows_read=reader.reads,
        vector=Path(config.vector) if config.vector else None, polygons=polygons,
        preview=Path(config.preview) if config.preview else None,
    )


class Sinks:
    """The writers of one run: the class mask, and probabilities when asked or needed.

    Probabilities are written when the user asks for them (``config.probabilities``), or, for
    ``--vector`` alone, to a scratch file beside the polygons that gives each polygon its mean
    probability and is deleted at the end (never committed).
    """

    def __init__(self, loaded: LoadedModel, config: SegmentConfig, out: Path,
                 prob_path: Path | None, common: dict[str, Any]) -> None:
        info = loaded.info
        self.keep_probabilities = prob_path is not None
        self.mask = GeoTiffSink(
            out, count=1, dtype="uint8", nodata=CLASS_NODATA, colormap=class_colormap(loaded),
            band_descriptions=["class"], overview_resampling="nearest", **common,
        )
        self.probabilities: GeoTiffSink | None = None
        try:
            if prob_path is not None:
                uint8 = config.probability_dtype == "uint8"
                self.probabilities = GeoTiffSink(
                    prob_path, count=info.spec.classes, dtype=config.probability_dtype,
                    nodata=255 if uint8 else float("nan"),
                    band_descriptions=[c.name for c in info.classes],
                    overview_resampling="average",
                    scale=1.0 / PROB_SCALE if uint8 else None, **common,
                )
            elif config.vector is not None:
                scratch = Path(config.vector).with_name(Path(config.vector).name + ".probs.tif")
                self.probabilities = GeoTiffSink(
                    scratch, count=info.spec.classes, dtype="uint8", nodata=255,
                    scale=1.0 / PROB_SCALE, **common,
                )
        except BaseException:
            self.mask.abort()
            raise

    @property
    def probabilities_file(self) -> Path | None:
        """Where the finished probabilities are: the output, or the scratch file."""
        if self.probabilities is None:
            return None
        return self.probabilities.path if self.keep_probabilities else self.probabilities.tmp

    def commit(self) -> None:
        """Publish the outputs; a scratch probability file is only closed (read, then removed)."""
        self.mask.commit()
        if self.probabilities is not None:
            if self.keep_probabilities:
                self.probabilities.commit()
            else:
                self.probabilities.dataset.close()

    def abort(self) -> None:
        """Remove every temporary file (a committed output is never touched)."""
        self.mask.abort()
        if self.probabilities is not None:
            self.probabilities.abort()


def _masked(patches: Iterator[Patch], aoi: AreaOfInterest | None) -> Iterator[Patch]:
    """Fold the area of interest into each patch's validity (outside it: zero weight)."""
    for patch in patches:
        if aoi is not None:
            patch = replace(patch, valid=patch.valid & aoi.tile_mask(patch.tile))
        yield patch


def _check_products(config: SegmentConfig, out: Path, prob_path: Path | None) -> None:
    """Refuse existing or clashing --vector/--preview destinations before any work."""
    taken = {out.resolve(), *([prob_path.resolve()] if prob_path else [])}
    for extra in (config.vector, config.preview):
        if extra is None:
            continue
        if Path(extra).resolve() in taken:
            raise OutputError(f"{extra}: the same file as another output")
        check_destination(Path(extra), config.overwrite)
        taken.add(Path(extra).resolve())
    if config.vector is not None:
        from geofuse.vector_io import output_format

        output_format(Path(config.vector), config.vectorize.format)


def _products(
    config: SegmentConfig, scene: Path, out: Path, probabilities: Path | None
) -> int | None:
    """Write the optional polygons and quick-look from the finished mask."""
    polygons = None
    if config.vector is not None:
        from geofuse.vectorize import vectorize_mask

        options = replace(config.vectorize, overwrite=config.overwrite)
        polygons = vectorize_mask(out, config.vector, options, probabilities).polygons
    if config.preview is not None:
        from geofuse.preview import render_preview

        render_preview(scene, out, config.preview, bands=config.tiling.bands,
                       overwrite=config.overwrite)
    return polygons
