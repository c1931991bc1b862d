"""``segment_scene``: a scene file in, georeferenced output files out.

The inference chain itself is :mod:`geofuse.pipeline`; here are the outputs around it: checks
before any work, the GeoTIFF sinks (mask, probabilities), their tags and colour table, the
atomic commit, and the products made from the finished mask (polygons, quick-look). The
stitcher streams full-width row bands to the writers (full-height column bands for a scene
wider than tall, so memory follows the shorter side).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint

import geofuse
from geofuse.config import CLASS_NODATA, SegmentConfig
from geofuse.errors import ConfigError, OutputError
from geofuse.model.modelfile import LoadedModel, load_model, read_info
from geofuse.model.runtime import RuntimeChoice, tensorflow_function
from geofuse.model.tta import passes
from geofuse.pipeline import plan_scene, predict_scene
from geofuse.products.stac import describe_outputs, stac_destinations
from geofuse.progress import Progress, announce
from geofuse.read.rasterfile import is_georeferenced
from geofuse.read.reader import SceneReader
from geofuse.sources import Source, as_source, source_name
from geofuse.write.outputs import (
    TAGS,
    check_destination,
    check_geotiff_name,
    locked_outputs,
    remove_stale_temps,
)
from geofuse.write.stitcher import PROB_SCALE, GeoTiffSink

log = logging.getLogger(__name__)
COLUMNS_WHEN_WIDER = True  # stitch scenes wider than tall by columns (memory ~ their height)



@dataclass(frozen=True)
class SegmentResult:
    """What one ``segment_scene`` run produced and measured.

    ``tiles`` went through the model; ``empty_tiles`` (of the ``grid_tiles``, inside the area of
    interest) held no valid pixel and were left out. ``notices`` are the input contract's;
    ``resampled``: the scene was read at the model's pixel size (``width`` and ``height`` are
    the scene's own).
    """

    scene: Source
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
    empty_tiles: int = 0
    tta_passes: int = 1
    windows_read: int = 0
    vector: Path | None = None
    polygons: int | None = None
    preview: Path | None = None
    runtime: str | None = None
    notices: tuple[str, ...] = ()
    resampled: bool = False
    georeferenced: bool = True
    item: Path | None = None  # the outputs' STAC item (config.stac)

    @property
    def megapixels(self) -> float:
        """Scene size in millions of pixels."""
        return self.width * self.height / 1e6


def make_predictor(model: Any, batch: int, tile: int | tuple[int, int],
                   bands: int) -> Callable[[np.ndarray], Any]:
    """A TensorFlow predictor of a bare Keras model, traced once (:mod:`geofuse.model.runtime`)."""
    return tensorflow_function(model, batch, tile, bands)


def class_colormap(loaded: LoadedModel) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class colours, nodata transparent."""
    cmap = {c.id: (*c.rgb, 255) for c in loaded.info.classes}
    cmap[CLASS_NODATA] = (0, 0, 0, 0)
    return cmap


def output_tags(loaded: LoadedModel, config: SegmentConfig, scene: Source,
                choice: RuntimeChoice | None = None) -> dict[str, str]:
    """Tags recorded in every output: version, model digest, tiling, classes, runtime."""
    tiling = config.tiling
    runtime = {} if choice is None else {
        TAGS.RUNTIME: f"{choice.runtime} {choice.version}", TAGS.PRECISION: choice.precision,
    }
    return runtime | {
        TAGS.VERSION: geofuse.__version__,
        TAGS.MODEL: loaded.path.name,
        TAGS.MODEL_SHA256: loaded.digest,
        TAGS.TILE: tiling.label,
        TAGS.OVERLAP: str(tiling.overlap),
        TAGS.BLEND: tiling.blend,
        TAGS.SOURCE: source_name(scene),
        TAGS.CLASSES: ",".join(c.name for c in loaded.info.classes),
        TAGS.TTA: config.tta,
    } | ({TAGS.AOI: Path(config.aoi).name} if config.aoi else {})


def segment_scene(
    scene: str | Path,
    out: str | Path,
    model: LoadedModel | str | Path | None = None,
    config: SegmentConfig | None = None,
    progress: Progress | None = None,
    predictor: Callable[[np.ndarray], Any] | None = None,
    notify: Callable[[str], None] | None = None,
    grid_rows: tuple[int, int] | None = None,
) -> SegmentResult:
    """Segment one scene into a class-mask COG (and optional probabilities).

    Each output is locked while the run writes it (``.<name>.lock`` beside it,
    :func:`~geofuse.write.outputs.locked_outputs`): a second run on any of them is refused
    until the first ends, so an output always holds one run's whole result.

    The scene is first checked against the model's input contract (:mod:`geofuse.read.contract`):
    bands matched by name, data type and value range, pixel size; ``config.input`` says how to
    adapt it. A scene read at the model's pixel size still gets its output on its own grid.
    With ``grid_rows`` only one band of the output is made, pixel for pixel as in the whole run
    (one task of :mod:`geofuse.scale.bands`).

    Args:
        scene: Input raster.
        out: Output class mask (GeoTIFF, same CRS/transform/size as the scene; nodata 255).
        model: A loaded model, a model file, or None for the embedded default.
        config: Tiling and outputs; defaults to ``SegmentConfig()``.
        progress: Optional ``progress(done_tiles, total_tiles)`` callback.
        predictor: Optional prebuilt prediction function (reused across scenes by batch jobs);
            default: :func:`geofuse.model.runtime.make_predictor` for ``config.tiling``'s runtime
            and precision. A :class:`~geofuse.model.runtime.Predictor`'s runtime goes into the tags.
        notify: Receives the contract's one-line notices (default: logged as warnings); they
            are in the result too.
        grid_rows: ``(first, stop)``: only the scene rows that the cores of these rows of the
            tile grid own (:meth:`~geofuse.read.grid.TileGrid.band_rows`), predicted from every
            tile that reaches them. ``out`` (and ``config.probabilities``) then hold just those
            rows, full width, as plain tiled GeoTIFFs (transform shifted, no overviews), and
            ``height`` in the result is theirs. Not with ``vector``/``preview`` or a resampled
            scene.

    Returns:
        A :class:`SegmentResult`.

    Raises:
        GeofuseError: InputError for a bad scene, OutputError for an unwritable or existing
            output (or one another run is writing), ModelError for a bad model, ConfigError
            for bad settings. Nothing partial is left under the output names on failure.

    """
    args = (scene, out, model, config, progress, predictor, notify, grid_rows)
    if grid_rows is not None:  # a part of a distributed run: its client holds the locks
        return _segment_scene(*args)
    check_outputs(Path(out), config or SegmentConfig())  # bad names fail before any lock
    with locked_outputs(run_outputs(out, config or SegmentConfig())):
        return _segment_scene(*args)


def run_outputs(out: str | Path, config: SegmentConfig) -> list[Path]:
    """Every file a run writes: the mask, its probabilities, polygons, quick-look, STAC items."""
    extras = (config.probabilities, config.vector, config.preview)
    return [Path(out), *(Path(p) for p in extras if p is not None),
            *stac_destinations(config, Path(out))]


def _segment_scene(
    scene: str | Path,
    out: str | Path,
    model: LoadedModel | str | Path | None,
    config: SegmentConfig | None,
    progress: Progress | None,
    predictor: Callable[[np.ndarray], Any] | None,
    notify: Callable[[str], None] | None,
    grid_rows: tuple[int, int] | None,
) -> SegmentResult:
    """:func:`segment_scene`, its outputs locked by the caller."""
    start = time.perf_counter()
    config = config or SegmentConfig()
    scene, out = as_source(scene), Path(out)
    if grid_rows is not None and (config.vector or config.preview or config.stac):
        raise ConfigError("Expected no polygons, quick-look or STAC item for a band of a scene")
    prob_path = check_outputs(out, config)
    # every check that needs only metadata comes before the network loads (TensorFlow)
    loaded = model if isinstance(model, LoadedModel) else None
    info, tiling = loaded.info if loaded else read_info(model), config.tiling
    info.spec.arch.check_tile(config.tiling.shape)  # before any I/O
    env = {"GDAL_CACHEMAX": config.gdal_cache_mb * 1024 * 1024}

    with rasterio.Env(**env), SceneReader(
        scene, bands=tiling.bands, model=info, adapt=config.input
    ) as reader:
        for notice in reader.notices:
            (notify or log.warning)(notice)
        loaded = loaded or load_model(model)  # the scene passed the input contract
        plan = plan_scene(reader, loaded, config, grid_rows, predictor)
        config, tiling, rows = plan.config, plan.tiling, plan.rows
        georeferenced = is_georeferenced(reader.dataset)
        ds = reader.dataset  # outputs are on the scene's own grid, even when it is resampled
        y0, y1 = rows or (0, ds.height)
        common = {
            "width": ds.width,
            "height": y1 - y0,
            "crs": reader.crs,
            "transform": ds.transform * Affine.translation(0, y0),
            "gcps": _shift_gcps(reader.gcps, y0),
            "tags": output_tags(loaded, config, scene, plan.choice)
            | {TAGS.INPUT: reader.plan.describe(reader.bands, config.input)},
        }
        sinks = Sinks(loaded, config, out, prob_path, common, cog=rows is None)
        try:
            stitcher = predict_scene(reader, plan, info.spec.classes, sinks.mask,
                                     sinks.probabilities, progress, env)
            sinks.commit(progress if rows is None else None)
            polygons = make_products(config, scene, out, sinks.probabilities_file, progress)
            item = describe_outputs(config, scene, out, loaded.path)
        finally:
            sinks.abort()
    seconds = time.perf_counter() - start
    counts = {c.name: int(n) for c, n in zip(info.classes, stitcher.class_counts, strict=True)}
    predicted = len(plan.tiles) - reader.empty_tiles
    log.info("%s: %d tiles in %.1f s", source_name(scene), predicted, seconds)
    choice = plan.choice
    return SegmentResult(
        scene=scene, mask=out, probabilities=prob_path, width=ds.width,
        height=y1 - y0, tiles=predicted, patch_pixels=predicted * math.prod(tiling.shape),
        empty_tiles=plan.known_empty + reader.empty_tiles,
        seconds=seconds, class_counts=counts, nodata_pixels=stitcher.nodata_pixels,
        grid_tiles=len(plan.grid), tta_passes=passes(config.tta), windows_read=reader.reads,
        vector=Path(config.vector) if config.vector else None, polygons=polygons,
        preview=Path(config.preview) if config.preview else None,
        runtime=choice.label if choice is not None else None,
        georeferenced=georeferenced, notices=tuple(reader.notices), resampled=reader.resampled,
        item=item,
    )


def check_outputs(out: Path, config: SegmentConfig) -> Path | None:
    """Check every output of a run before any work; return the probabilities' path, if any.

    Raises:
        OutputError: A name that is no GeoTIFF, an existing output (without ``overwrite``),
            an unwritable folder, two outputs on one file.

    """
    prob_path = Path(config.probabilities) if config.probabilities else None
    check_geotiff_name(out, f" (masks are GeoTIFFs; for a picture use `preview` "
                            f"{Path(out).stem}.png)")
    check_destination(out, config.overwrite)
    if prob_path is not None:
        check_geotiff_name(prob_path)
        if prob_path.resolve() == out.resolve():
            raise OutputError(f"{prob_path}: probabilities and mask must be different files")
        check_destination(prob_path, config.overwrite)
    _check_products(config, out, prob_path)
    if config.vector is not None:  # the others went with check_destination
        remove_stale_temps(scratch_probabilities(config.vector))
    return prob_path


def _shift_gcps(gcps: tuple[list, Any] | None, row0: int) -> tuple[list, Any] | None:
    """Ground control points of the rows from ``row0`` on (a band's output)."""
    if not gcps or not row0:
        return gcps
    points, crs = gcps
    return [GroundControlPoint(row=p.row - row0, col=p.col, x=p.x, y=p.y, z=p.z, id=p.id,
                               info=p.info) for p in points], crs


class Sinks:
    """The writers of one run: the class mask, and probabilities when asked or needed.

    Probabilities are written when the user asks for them (``config.probabilities``), or, for
    ``--vector`` alone, to a scratch file beside the polygons that gives each polygon its mean
    probability and is deleted at the end (never committed).
    """

    def __init__(self, loaded: LoadedModel, config: SegmentConfig, out: Path,
                 prob_path: Path | None, common: dict[str, Any], cog: bool = True) -> None:
        info = loaded.info
        common = common | {"cog": cog}
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
                self.probabilities = GeoTiffSink(
                    scratch_probabilities(config.vector), count=info.spec.classes,
                    dtype="uint8", nodata=255, scale=1.0 / PROB_SCALE, **common,
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

    def commit(self, progress: Progress | None = None) -> None:
        """Publish the outputs; a scratch probability file is only closed (read, then removed)."""
        announce(progress, "mask: overviews and COG")
        self.mask.commit()
        if self.probabilities is not None:
            if self.keep_probabilities:
                announce(progress, "probabilities: overviews and COG")
                self.probabilities.commit()
            else:
                self.probabilities.close()  # checked whole: the polygons read it

    def abort(self) -> None:
        """Remove every temporary file (a committed output is never touched)."""
        self.mask.abort()
        if self.probabilities is not None:
            self.probabilities.abort()


def _check_products(config: SegmentConfig, out: Path, prob_path: Path | None) -> None:
    """Refuse existing or clashing --vector/--preview destinations before any work."""
    taken = {out.resolve(), *([prob_path.resolve()] if prob_path else [])}
    for extra in (config.vector, config.preview, *stac_destinations(config, out)):
        if extra is None:
            continue
        if Path(extra).resolve() in taken:
            raise OutputError(f"{extra}: the same file as another output")
        check_destination(Path(extra), config.overwrite)
        taken.add(Path(extra).resolve())
    if config.vector is not None:
        from geofuse.products.vector_io import output_format

        output_format(Path(config.vector), config.vectorize.format)


def scratch_probabilities(vector: str | Path) -> Path:
    """The temporary probability raster beside ``--vector`` polygons (for their mean_prob)."""
    return Path(vector).with_name(Path(vector).name + ".probs.tif")


def make_products(
    config: SegmentConfig, scene: Source, out: Path, probabilities: Path | None,
    progress: Progress | None = None,
) -> int | None:
    """Write the optional polygons and quick-look from the finished mask; return the polygons."""
    polygons = None
    if config.vector is not None:
        from geofuse.products.vectorize import vectorize_mask

        announce(progress, "polygons")

        options = replace(config.vectorize, overwrite=config.overwrite)
        polygons = vectorize_mask(out, config.vector, options, probabilities).polygons
    if config.preview is not None:
        from geofuse.products.preview import render_preview

        announce(progress, "quick-look")

        render_preview(scene, out, config.preview, size=config.preview_size,
                       bands=config.tiling.bands, overwrite=config.overwrite)
    return polygons
