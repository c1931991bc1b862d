"""The one inference pipeline: tiling reader -> predictor (and TTA) -> stitcher.

:func:`plan_scene` fits the tiling to an opened scene and chooses the tiles and the predictor;
:func:`predict_scene` streams those tiles through the model into a stitcher whose sinks the
caller owns. ``segment_scene`` (GeoTIFF sinks), ``predict_array`` (in-memory sinks) and the
Dask bands of one large scene (``segment_scene`` restricted to grid rows) all run through these
two functions, so a change to the chain is made once.

Reads run in a background thread ahead of the model; batches have a fixed shape so the compiled
prediction function is traced once; stitching runs in a second thread while the next batch is
predicted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from geofuse.config import SegmentConfig, TilingConfig
from geofuse.errors import ConfigError
from geofuse.model.modelfile import LoadedModel
from geofuse.model.runtime import RuntimeChoice, choose_runtime, pipelined
from geofuse.model.runtime import make_predictor as runtime_predictor
from geofuse.model.tta import tta_predictor
from geofuse.progress import Progress
from geofuse.read.feed import lower_priority, read_ahead
from geofuse.read.grid import Tile, TileGrid
from geofuse.read.reader import Patch, SceneReader
from geofuse.sources import source_name
from geofuse.write.stitcher import ColumnStitcher, Stitcher

if TYPE_CHECKING:
    from geofuse.read.aoi import AreaOfInterest

COLUMNS_WHEN_WIDER = True  # stitch scenes wider than tall by columns (memory ~ their height)

Sink = Any
"""Where the stitcher writes finished bands: ``sink.write(row0, array)`` (or ``None``)."""


@dataclass(frozen=True)
class ScenePlan:
    """What :func:`plan_scene` decided for one opened scene.

    Attributes:
        config: The run's configuration with its tiling fitted to the scene.
        grid: The tile grid over the scene as read (at the model's pixel size if resampled).
        tiles: The tiles to read and predict, in the order they are stitched.
        rows: ``(first, stop)`` scene rows made (a band of the scene), or None for all.
        aoi: The area of interest, if any.
        known_empty: Tiles left out because the file's block index says they hold no data.
        predictor: The batch predictor (its ``shape`` matches the fitted tiling).
        by_columns: Stitch full-height column bands (a wide, tiled scene) instead of rows.

    """

    config: SegmentConfig
    grid: TileGrid
    tiles: list[Tile]
    rows: tuple[int, int] | None
    aoi: AreaOfInterest | None
    known_empty: int
    predictor: Callable[[np.ndarray], Any]
    by_columns: bool

    @property
    def tiling(self) -> TilingConfig:
        """The fitted tiling."""
        return self.config.tiling

    @property
    def choice(self) -> RuntimeChoice | None:
        """The runtime and precision of the predictor, when it says."""
        return getattr(self.predictor, "choice", None)


def plan_scene(
    reader: SceneReader,
    loaded: LoadedModel,
    config: SegmentConfig,
    grid_rows: tuple[int, int] | None = None,
    predictor: Callable[[np.ndarray], Any] | None = None,
) -> ScenePlan:
    """Fit the tiling to ``reader``'s scene and choose its tiles and predictor.

    Args:
        reader: The opened scene (with the model's input contract applied).
        loaded: The model.
        config: The run's settings (tiling, TTA, area of interest).
        grid_rows: ``(first, stop)`` rows of the tile grid whose core rows to make, or None.
        predictor: A prebuilt predictor to reuse when its batch shape fits the scene's tiling.

    Raises:
        ConfigError: A band of a scene read at another pixel size; a tile the network cannot
            take.

    """
    info = loaded.info
    info.spec.arch.check_tile(config.tiling.shape)
    tiling = config.tiling_for(reader.height, reader.width, info.spec.arch.multiple)
    config = replace(config, tiling=tiling)
    grid = tiling.grid(reader.height, reader.width)
    rows = None if grid_rows is None else grid.band_rows(*grid_rows)
    if rows is not None and reader.resampled:
        raise ConfigError(f"{source_name(reader.path)}: expected a scene read on its own pixel "
                          "grid for a band. Received: a resampled one")
    aoi = load_aoi(config, reader.crs, reader.transform, reader.width, reader.height, reader)
    tiles = grid.tiles if aoi is None else aoi.select(grid, tiling.blend)
    if rows is not None:
        tiles = [t for t in tiles if grid.reaches(t, tiling.blend, rows)]
    selected = len(tiles)
    tiles = [t for t in tiles if not reader.known_empty(grid.influence(t, tiling.blend))]
    wanted = (tiling.batch_size, *tiling.shape)
    if predictor is None or tuple(getattr(predictor, "shape", wanted)[:3]) != wanted:
        # none given, or one built for the nominal tiling where this scene's fitted one differs
        predictor = runtime_predictor(loaded, tiling.batch_size, tiling.shape,
                                      choose_runtime(tiling))
    ds = reader.dataset
    # a wide scene is stitched column by column: memory follows its shorter side (when its
    # file is tiled: columns of a striped file would decode every strip per column)
    by_columns = COLUMNS_WHEN_WIDER and rows is None and not reader.resampled \
        and grid.width > grid.height and ds.block_shapes[0][1] < ds.width
    if by_columns:
        tiles = sorted(tiles, key=lambda t: (t.col, t.row))
    return ScenePlan(config=config, grid=grid, tiles=tiles, rows=rows, aoi=aoi,
                     known_empty=selected - len(tiles), predictor=predictor,
                     by_columns=by_columns)


def predict_scene(
    reader: SceneReader,
    plan: ScenePlan,
    classes: int,
    mask: Sink,
    probabilities: Sink | None,
    progress: Progress | None = None,
    env: dict[str, Any] | None = None,
) -> Stitcher | ColumnStitcher:
    """Read, predict and stitch the planned tiles into ``mask`` (and ``probabilities``).

    Returns the finished stitcher (class counts, nodata pixels); the caller commits or
    discards its sinks.
    """
    config, grid, tiling = plan.config, plan.grid, plan.tiling
    if plan.by_columns:
        stitcher: Stitcher | ColumnStitcher = ColumnStitcher(
            grid, classes, tiling.blend, mask, probabilities, config.probability_dtype)
    else:
        stitcher = Stitcher(grid, classes, tiling.blend, mask, probabilities,
                            config.probability_dtype, plan.rows)
    if reader.resampled:
        stitcher.resample_to((reader.dataset.height, reader.dataset.width),
                             scene_validity(reader, config))
    tiles, aoi = plan.tiles, plan.aoi
    fn, flight = pipelined(plan.predictor, len(tiles), tiling.batch_size)
    batches = read_ahead(
        lambda slot: reader.patches(grid, tiles, keep=aoi and aoi.tile_mask,
                                    skip_empty=tiling.blend, slot=slot),
        tiling.batch_size, env=env, in_flight=flight,
    )
    try:
        run_pipeline(batches, tta_predictor(fn, config.tta), stitcher,
                     lambda: len(tiles) - reader.empty_tiles, progress, flight)
    finally:
        batches.close()  # stops the reading thread before the scene is closed
    stitcher.finish()
    return stitcher


def load_aoi(config: SegmentConfig, crs: Any, transform: Any, width: int, height: int,
             reader: SceneReader) -> AreaOfInterest | None:
    """The run's area of interest on the given grid of ``reader``'s scene, or None.

    Its module (shapely, pyogrio: half a second of start-up) is imported only for a run that
    has one.
    """
    if config.aoi is None:
        return None
    from geofuse.read.aoi import AreaOfInterest

    return AreaOfInterest.load(config.aoi, reader.path, crs, transform, width, height)


def scene_validity(reader: SceneReader, config: SegmentConfig) -> Callable[[int, int], Any]:
    """``valid(row0, rows)`` on the scene's own grid: its masks, and the area of interest."""
    ds = reader.dataset
    aoi = load_aoi(config, ds.crs, ds.transform, ds.width, ds.height, reader)

    def valid(row0: int, rows: int) -> np.ndarray:
        window = Window(0, row0, ds.width, rows)
        mask = reader.native_validity(window)
        return mask if aoi is None else mask & aoi.window_mask(window)

    return valid


def run_pipeline(
    batches: Iterator[tuple[list[Patch], np.ndarray]],
    predict: Callable[[np.ndarray], Any],
    stitcher: Stitcher | ColumnStitcher,
    total: int | Callable[[], int],
    progress: Progress | None = None,
    in_flight: int = 1,
) -> None:
    """Predict batches and stitch them, stitching batch k while predicting k + 1.

    Reading, normalising and stacking already run ahead in their own thread (``batches``
    comes from :func:`~geofuse.read.feed.read_ahead`); here stitching runs in a second thread, so
    the model is never idle waiting for numpy. Batches are stitched strictly in order.
    ``total`` (the tiles that need the model) may be a function: tiles found empty while
    reading lower it as the run goes. ``in_flight`` above 1: ``predict`` is called from that
    many threads, one batch each (:func:`geofuse.model.runtime.pipelined`; ``batches`` must not
    reuse an array sooner).
    """
    count = total if callable(total) else lambda: total

    def stitch(batch: list[Patch], probs: np.ndarray) -> int:
        for patch, p in zip(batch, probs, strict=False):
            stitcher.add(patch.tile.read, patch.tile.core, patch.tile.row, patch.valid, p)
        return len(batch)

    done = 0
    pending: Future[int] | None = None
    predicting: deque[tuple[list[Patch], Future[Any]]] = deque()

    def stitch_next() -> None:
        nonlocal done, pending
        batch, probs = predicting.popleft()
        probs = probs.result()
        if pending is not None:
            done += pending.result()
            if progress is not None:
                progress(done, count())
        pending = stitching.submit(stitch, batch, probs)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geofuse-stitch",
                            initializer=lower_priority) as stitching, \
            ThreadPoolExecutor(max_workers=in_flight,
                               thread_name_prefix="geofuse-predict") as models:
        for batch, inputs in batches:
            if in_flight > 1:
                predicting.append((batch, models.submit(predict, inputs)))
            else:  # in this thread, as a single-threaded runtime may want
                predicting.append((batch, _done(predict(inputs))))
            if len(predicting) == in_flight:
                stitch_next()
        while predicting:
            stitch_next()
        if pending is not None:
            done += pending.result()
            if progress is not None:
                progress(done, count())


def _done(value: Any) -> Future[Any]:
    """A future already holding ``value``."""
    future: Future[Any] = Future()
    future.set_result(value)
    return future
