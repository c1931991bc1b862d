"""Rolling-band stitcher and the atomic, georeferenced GeoTIFF writer.

:class:`Stitcher` accumulates ``weight * probability`` and ``weight`` for every pixel, where
``weight`` is the tile's blend window (Hann, or 1 on its core for ``center``) times the input
validity. Tiles arrive in row-major grid order; once a grid row is complete, the scene rows no
later tile touches are normalised, turned into classes and handed to the sinks. Only one tile
height of rows is held, so memory grows with the scene *width* and never with its area. Pixels
where no valid input contributed get the output nodata. :class:`ColumnStitcher` does the same
column by column for a scene wider than tall, so that memory grows with its shorter side.
When only the class mask is written, a pixel that one tile alone covers
(:meth:`TileGrid.exclusive <geofuse.read.grid.TileGrid.exclusive>`: most of each tile) takes that
tile's class directly; the weighted sums are kept only for the strips tiles share.

:class:`GeoTiffSink` writes into an uncompressed tiled temporary GeoTIFF beside the destination,
then converts it to a compressed Cloud-Optimised GeoTIFF with overviews, a colour map and tags,
and renames it into place (or, with ``cog=False``, renames the tiled GeoTIFF itself: the parts
of a distributed run, :mod:`geofuse.scale.bands`). Until :meth:`GeoTiffSink.commit` succeeds nothing
exists under the final name.
"""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geofuse.config import CLASS_NODATA
from geofuse.read.grid import TileGrid, blend_weights, core_weights
from geofuse.write.classids import class_ids
from geofuse.write.failures import check_geotiff_complete, write_failure
from geofuse.write.outputs import publish, reserve_temp
from geofuse.write.resample import BackResampler

PROB_SCALE = 254  # uint8 probabilities: value / 254; 255 is nodata
FLUSH_ROWS = 64  # rows normalised and written at a time


def write_cog(src: str | Path, dest: Path, overview_resampling: str) -> None:
    """Convert ``src`` (any raster GDAL opens: a GeoTIFF, a VRT) into the COG ``dest``.

    DEFLATE, 512-px blocks and overviews made with ``overview_resampling`` (``nearest`` for
    classes, ``average`` for probabilities): every geofuse raster product is written here.
    """
    rasterio.shutil.copy(
        src,
        dest,
        driver="COG",
        COMPRESS="DEFLATE",
        BLOCKSIZE=512,
        OVERVIEW_RESAMPLING=overview_resampling.upper(),
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
    )


def sparse_zeros(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A zeroed array whose memory is made only where it is written: no huge pages.

    numpy asks the kernel for 2 MB pages for big arrays. The stitcher writes its sums only in
    the strips that tiles share, and a 2 MB page costs zeroing (and possibly compacting memory
    for) far more than a strip: stitching an 8192²-wide grid alone took 44-56 ms per patch Mpx
    with them against 22-25 without. Anonymous memory advised against huge pages is zeroed by
    the kernel a 4 kB page at a time, where first written.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes == 0 or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype)
    memory = mmap.mmap(-1, nbytes)
    memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype).reshape(shape)  # the array keeps the mapping alive


def move_up(rows: np.ndarray, n: int) -> None:
    """Move ``rows[n:]`` to the top of ``rows``, in place, without a temporary copy.

    numpy copies overlapping source rows to a temporary first: when the last row of tiles
    (shifted inward) shares most of its rows with the one before, that is a buffer-sized
    allocation whose fresh pages cost more than the copy. Blocks of at most ``n`` rows, top
    first, never overlap their own destination.
    """
    keep = rows.shape[0] - n
    for start in range(0, keep, max(n, 1)):
        stop = min(keep, start + n)
        rows[start:stop] = rows[n + start : n + stop]


class GeoTiffSink:
    """Receives full-width row bands and produces one COG under ``path`` on commit.

    Args:
        path: Final destination.
        width: Columns.
        height: Rows.
        count: Bands.
        dtype: Numpy/GDAL data type name.
        crs: Output CRS (the scene's), or None.
        transform: Output transform (the scene's).
        nodata: Nodata value.
        colormap: Optional colour table for band 1 (``{value: (r, g, b, a)}``).
        tags: Dataset tags.
        band_descriptions: Optional band descriptions.
        overview_resampling: ``nearest`` for classes, ``average`` for probabilities.
        scale: Optional band scale (e.g. 1/254 for quantised probabilities).
        gcps: Optional ground control points and their CRS.
        cog: False: commit the tiled, uncompressed GeoTIFF as it is (no overviews): a part of a
            distributed run, joined into a COG later.

    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        count: int,
        dtype: str,
        crs: CRS | None,
        transform: Affine,
        nodata: float,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        tags: Mapping[str, str] | None = None,
        band_descriptions: Sequence[str] | None = None,
        overview_resampling: str = "nearest",
        scale: float | None = None,
        gcps: tuple[list, CRS | None] | None = None,
        cog: bool = True,
    ) -> None:
        self.path = Path(path)
        self.overview_resampling = overview_resampling
        self.cog = cog
        self._tmp_paths: list[Path] = []
        self.tmp = self._reserve(".part.tif")
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": dtype,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "interleave": "pixel" if count <= 4 else "band",
            "BIGTIFF": "IF_SAFER",
        }
        try:
            with warnings.catch_warnings():  # the scene's own lack was reported when read
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.dataset = rasterio.open(self.tmp, "w", **profile)
            if colormap:
                self.dataset.write_colormap(1, dict(colormap))
            if tags:
                self.dataset.update_tags(**{k: str(v) for k, v in tags.items()})
            for i, text in enumerate(band_descriptions or (), start=1):
                self.dataset.set_band_description(i, text)
            if scale is not None:
                self.dataset.scales = (scale,) * count
            if gcps:
                self.dataset.gcps = gcps
        except (RasterioError, OSError) as exc:
            self.abort()
            raise write_failure(self.path, exc, self.tmp, "cannot create output") from exc

    def _reserve(self, suffix: str) -> Path:
        tmp = reserve_temp(self.path, suffix)
        self._tmp_paths.append(tmp)
        return tmp

    def write(self, row0: int, array: np.ndarray) -> None:
        """Write ``array`` (``(count, rows, width)``) starting at scene row ``row0``."""
        self.write_window(Window(0, row0, array.shape[2], array.shape[1]), array)

    def write_window(self, window: Window, array: np.ndarray) -> None:
        """Write ``array`` (``(count, rows, cols)``) into ``window``."""
        try:
            self.dataset.write(array, window=window)
        except (RasterioError, OSError) as exc:
            raise write_failure(self.path, exc, self.tmp, "write failed") from exc

    def close(self) -> Path:
        """Close the temporary GeoTIFF and check it was written whole; return its path.

        Raises:
            OutputError: Naming the output and the reason (e.g. the disk is full).

        """
        try:
            self.dataset.close()
        except (RasterioError, OSError) as exc:
            raise write_failure(self.path, exc, self.tmp, "cannot finish output") from exc
        check_geotiff_complete(self.tmp, self.path)
        return self.tmp

    def commit(self) -> Path:
        """Convert to a COG with overviews (unless ``cog`` is False) and rename it into place.

        Each file is checked to be whole first
        (:func:`~geofuse.write.failures.check_geotiff_complete`): a disk that fills up never
        leaves a cut file under ``path``.
        """
        final_tmp = self.tmp
        try:
            self.close()
            if self.cog:
                final_tmp = self._reserve(".cog.tif")
                write_cog(self.tmp, final_tmp, self.overview_resampling)
                check_geotiff_complete(final_tmp, self.path)
            publish(final_tmp, self.path)
        except (RasterioError, OSError) as exc:
            raise write_failure(self.path, exc, final_tmp, "cannot finish output") from exc
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Close and delete every temporary file; the final path is never touched."""
        dataset = getattr(self, "dataset", None)
        if dataset is not None and not dataset.closed:
            dataset.close()
        for tmp in self._tmp_paths:
            tmp.unlink(missing_ok=True)
            Path(f"{tmp}.aux.xml").unlink(missing_ok=True)
        self._tmp_paths.clear()


class Stitcher:
    """Blends per-tile class probabilities into full-width row bands, streaming.

    Args:
        grid: The tile grid (tiles must be added in its row-major order).
        classes: Number of classes.
        blend: ``"hann"`` or ``"center"``.
        mask_sink: Receives ``(1, rows, width)`` uint8 class ids (nodata 255).
        prob_sink: Optional; receives ``(classes, rows, width)`` probabilities.
        prob_dtype: ``"uint8"`` (``p * 254``, nodata 255) or ``"float32"`` (nodata NaN).
        rows: Only scene rows ``[lo, hi)`` go to the sinks, as their rows from 0 (a band of a
            distributed run); the tiles that reach them must be added, from the first grid row
            that reaches ``lo``. Default: every row.

    The sinks receive rows of the grid's size, unless :meth:`resample_to` puts the scene's own
    grid after it.

    """

    def __init__(
        self,
        grid: TileGrid,
        classes: int,
        blend: str,
        mask_sink: GeoTiffSink,
        prob_sink: GeoTiffSink | None = None,
        prob_dtype: str = "uint8",
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.grid = grid
        self.rows = rows or (0, grid.height)
        self.classes = classes
        self.blend = blend
        self.mask_sink = mask_sink
        self.prob_sink = prob_sink
        self.prob_dtype = prob_dtype
        rows = min(grid.shape[0], grid.height)
        self._acc = sparse_zeros((rows, grid.width, classes), np.float32)
        self._weight = sparse_zeros((rows, grid.width), np.float32)
        self._scratch = np.empty((*grid.shape, classes), dtype=np.float32)
        self._row = next(g for g, start in enumerate(grid.row_starts)  # grid row accumulated
                         if start + grid.shape[0] > self.rows[0])
        self._top = grid.row_starts[self._row]  # scene row held at buffer row 0
        self._hann = blend_weights(grid.shape) if blend == "hann" else None
        # the Hann window once per class: multiplying the probabilities by it runs along whole
        # rows (broadcasting one weight over a short class axis measured twice as slow)
        self._hann_classes = None if self._hann is None else np.repeat(
            self._hann[..., None], classes, axis=-1)
        # Class ids of the pixels only one tile covers, straight from that tile (no weighted
        # sum needed there); None when probabilities are written or resampled (they need the
        # blended probabilities of every pixel).
        self._labels: np.ndarray | None = None
        if prob_sink is None:
            self._labels = np.full((rows, grid.width), CLASS_NODATA, dtype=np.uint8)
        self.class_counts = np.zeros(classes, dtype=np.int64)
        self.nodata_pixels = 0
        self._out = self.write_classes
        self._resampler: BackResampler | None = None

    def resample_to(self, shape: tuple[int, int], valid: Callable[[int, int], np.ndarray]) -> None:
        """Write the output on a scene grid of ``shape`` covering the grid's extent.

        Probabilities are resampled from the grid to the scene (:mod:`geofuse.write.resample`)
        before
        the argmax; ``valid(row0, rows)`` gives the scene's own validity of its rows.
        """
        self._resampler = BackResampler((self.grid.height, self.grid.width), shape, self.classes,
                                        self.write_classes, valid)
        self._out = self._resampler.add
        self._labels = None

    def add(self, tile_read: Window, tile_core: Window, grid_row: int, valid: np.ndarray,
            probs: np.ndarray) -> None:
        """Accumulate one tile's ``(rows, cols, classes)`` probabilities."""
        if grid_row < self._row:
            raise ValueError(f"Expected tiles in grid order. Received: row {grid_row} late")
        while grid_row > self._row:
            self._flush_until(self.grid.rows_final_after(self._row))
            self._row += 1
        r0, c0 = int(tile_read.row_off), int(tile_read.col_off)
        h = min(self.grid.shape[0], self.grid.height - r0)
        w = min(self.grid.shape[1], self.grid.width - c0)
        b0 = r0 - self._top
        base = self._hann if self._hann is not None else core_weights(
            self.grid.shape, tile_core, tile_read)
        every = bool(valid[:h, :w].all())  # no invalid pixel: no per-pixel masking
        parts = [(slice(0, h), slice(0, w))]
        if self._labels is not None:
            only = self.grid.exclusive(tile_read)
            e0, e1 = int(only.row_off) - r0, int(only.row_off + only.height) - r0
            f0, f1 = int(only.col_off) - c0, int(only.col_off + only.width) - c0
            if e1 > e0 and f1 > f0:  # this tile alone: its classes as they are
                rows, cols = slice(e0, e1), slice(f0, f1)
                labels = class_ids(probs[rows, cols])
                if not every:
                    labels[~valid[rows, cols]] = CLASS_NODATA
                self._labels[b0 + e0 : b0 + e1, c0 + f0 : c0 + f1] = labels
                parts = [(slice(0, e0), slice(0, w)), (slice(e1, h), slice(0, w)),
                         (rows, slice(0, f0)), (rows, slice(f1, w))]
        for rows, cols in parts:  # the pixels other tiles share: weighted sums
            weight = base[rows, cols] if every else base[rows, cols] * valid[rows, cols]
            if weight.size == 0:
                continue
            out_rows = slice(b0 + rows.start, b0 + rows.stop)
            out_cols = slice(c0 + cols.start, c0 + cols.stop)
            self._weight[out_rows, out_cols] += weight
            per_class = self._hann_classes[rows, cols] if every and \
                self._hann_classes is not None else weight[..., None]
            scratch = np.multiply(probs[rows, cols], per_class,
                                  out=self._scratch[: weight.shape[0], : weight.shape[1]])
            self._acc[out_rows, out_cols] += scratch

    def finish(self) -> None:
        """Flush every remaining row, a buffer at a time (grid rows may have had no tiles)."""
        end = self.rows[1]
        while self._top < end:
            self._flush_until(min(end, self._top + self._acc.shape[0]))
        if self._resampler is not None:
            self._resampler.finish()

    def _flush_until(self, row: int) -> None:
        n = row - self._top
        if n <= 0:
            return
        for start in range(0, n, FLUSH_ROWS):
            self._emit(start, min(n, start + FLUSH_ROWS))
        keep = self._acc.shape[0] - n
        # Mask only, every row written: the emitted rows were cleared where they held sums
        # (_emit_labels), so only the rows moved up need clearing behind them.
        clear = max(keep, n) if self._labels is not None and self.rows == (
            0, self.grid.height) else keep
        move_up(self._acc, n)
        self._acc[clear:] = 0
        move_up(self._weight, n)
        self._weight[clear:] = 0
        if self._labels is not None:
            move_up(self._labels, n)
            self._labels[keep:] = CLASS_NODATA
        self._top = row

    def _emit(self, start: int, stop: int) -> None:
        """Normalise buffer rows ``[start, stop)`` and hand them on to be classified.

        Done in chunks of ``FLUSH_ROWS`` so the temporaries stay small on wide scenes. Only the
        columns between the first and the last covered pixel are normalised; rows that no tile
        covered (nodata collars, tiles without valid pixels) cost no per-pixel work. Rows
        outside ``rows`` are dropped.
        """
        lo, hi = self.rows
        start, stop = max(start, lo - self._top), min(stop, hi - self._top)
        if start >= stop:
            return
        weight = self._weight[start:stop]
        covered = weight > 0
        if self._labels is not None:
            self._emit_labels(self._top + start - lo, start, stop, covered)
            return
        cols = np.flatnonzero(covered.any(axis=0))
        if cols.size == 0:
            self._out(self._top + start - lo, covered, None, 0)
            return
        span = slice(int(cols[0]), int(cols[-1]) + 1)
        probs = self._acc[start:stop, span] / np.where(covered[:, span], weight[:, span],
                                                       1.0)[..., None]
        self._out(self._top + start - lo, covered, probs, span.start)

    def _emit_labels(self, row0: int, start: int, stop: int, covered: np.ndarray) -> None:
        """Write class ids of buffer rows ``[start, stop)``: a tile's own, or of the blend.

        Shared pixels take the class of the largest weighted sum (the weight is a positive
        factor per pixel: no division needed); only runs of columns with shared pixels are
        looked at.
        """
        labels = self._labels[start:stop].copy()
        shared = np.concatenate(([0], covered.any(axis=0).view(np.int8), [0]))
        edges = np.flatnonzero(np.diff(shared))
        for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
            part = class_ids(self._acc[start:stop, c0:c1])
            np.copyto(labels[:, c0:c1], part, where=covered[:, c0:c1])
            self._acc[start:stop, c0:c1] = 0  # every sum of these rows lies in these runs
            self._weight[start:stop, c0:c1] = 0
        counts = np.bincount(labels.ravel(), minlength=256)
        self.class_counts += counts[: self.classes]
        self.nodata_pixels += int(counts[CLASS_NODATA])
        self.mask_sink.write(row0, labels[None])

    def write_classes(self, row0: int, covered: np.ndarray, probs: np.ndarray | None = None,
                      col0: int = 0) -> None:
        """Classify and write full-width output rows starting at ``row0``.

        Args:
            row0: First output row.
            covered: ``(rows, width)`` bool: pixels with a prediction (the others are nodata).
            probs: ``(rows, cols, classes)`` probabilities of columns ``col0 : col0 + cols``
                (every covered pixel lies there); None when nothing is covered.
            col0: First column of ``probs``.

        """
        labels = np.full(covered.shape, CLASS_NODATA, dtype=np.uint8)
        if probs is not None:
            span = slice(col0, col0 + probs.shape[1])
            part = class_ids(probs)
            part[~covered[:, span]] = CLASS_NODATA
            labels[:, span] = part
        self.class_counts += np.bincount(labels[covered], minlength=self.classes)[: self.classes]
        self.nodata_pixels += int(covered.size - np.count_nonzero(covered))
        self.mask_sink.write(row0, labels[None])
        if self.prob_sink is not None:
            self.prob_sink.write(row0, self._encode_probs(covered, probs, col0))

    def _encode_probs(self, covered: np.ndarray, probs: np.ndarray | None,
                      col0: int) -> np.ndarray:
        uint8 = self.prob_dtype == "uint8"
        out = np.full((self.classes, *covered.shape), 255 if uint8 else np.nan,
                      dtype=np.uint8 if uint8 else np.float32)
        if probs is None:
            return out
        span = slice(col0, col0 + probs.shape[1])
        part = np.moveaxis(probs, -1, 0)
        if uint8:
            part = np.rint(np.clip(part, 0.0, 1.0) * PROB_SCALE).astype(np.uint8)
            part[:, ~covered[:, span]] = 255
        else:
            part = part.astype(np.float32)
            part[:, ~covered[:, span]] = np.nan
        out[:, :, span] = part
        return out


class ColumnSink:
    """A :class:`GeoTiffSink` fed by a :class:`Stitcher` of the transposed scene.

    The stitcher's rows are the scene's columns: ``write(col0, array)`` writes the transposed
    ``(count, cols, height)`` array as scene columns ``col0 ..``.
    """

    def __init__(self, sink: GeoTiffSink) -> None:
        self.sink = sink

    def write(self, col0: int, array: np.ndarray) -> None:
        """Write stitcher rows ``col0 ..`` (scene columns) of ``(count, cols, height)``."""
        self.sink.write_window(Window(col0, 0, array.shape[1], array.shape[2]),
                               np.ascontiguousarray(array.transpose(0, 2, 1)))


class ColumnStitcher:
    """Stitches a wide scene column by column: memory grows with its height, not its width.

    Wraps a :class:`Stitcher` of the transposed grid
    (:meth:`~geofuse.read.grid.TileGrid.transposed`) whose sinks are :class:`ColumnSink`
    objects: tiles arrive column-major with the scene's windows, and are transposed on the way
    in. Each pixel is blended from the same tiles with the same weights
    as in row order; only the order of the additions differs (where three or four tiles
    overlap, float rounding may differ in the last bit).
    """

    def __init__(self, grid: TileGrid, classes: int, blend: str, mask_sink: GeoTiffSink,
                 prob_sink: GeoTiffSink | None = None, prob_dtype: str = "uint8") -> None:
        self.inner = Stitcher(grid.transposed(), classes, blend, ColumnSink(mask_sink),
                              None if prob_sink is None else ColumnSink(prob_sink), prob_dtype)
        self._column = {start: c for c, start in enumerate(grid.col_starts)}

    @property
    def class_counts(self) -> np.ndarray:
        """Pixels per class written so far."""
        return self.inner.class_counts

    @property
    def nodata_pixels(self) -> int:
        """Nodata pixels written so far."""
        return self.inner.nodata_pixels

    def add(self, tile_read: Window, tile_core: Window, grid_row: int, valid: np.ndarray,
            probs: np.ndarray) -> None:
        """Accumulate one tile of the scene (its windows, ``(rows, cols, classes)``)."""
        self.inner.add(_swap(tile_read), _swap(tile_core), self._column[int(tile_read.col_off)],
                       valid.T, probs.transpose(1, 0, 2))

    def finish(self) -> None:
        """Flush every remaining column."""
        self.inner.finish()


def _swap(window: Window) -> Window:
    return Window(window.row_off, window.col_off, window.height, window.width)
