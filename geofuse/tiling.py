"""The tiling reader: a scene becomes a stream of georeferenced, normalised patches.

A :class:`SceneReader` opens the scene once, works out which bands feed the model (every band
but an alpha band, unless ``bands`` says otherwise) and reads each tile of a
:class:`~geofuse.windows.TileGrid` together with its validity mask. Validity follows GDAL's
mask semantics (``read_masks``: nodata value, alpha band, internal or external ``.msk`` masks)
plus NaN; a pixel is valid when every selected band is. Invalid pixels are fed to the model as
the band mean (0 after normalisation) and carry zero weight when stitching.

:func:`prefetch` runs any iterator in a background thread so reads overlap the model (GDAL
releases the GIL while it decodes).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geofuse.config import Normalization
from geofuse.errors import InputError, plural
from geofuse.windows import Tile, TileGrid

T = TypeVar("T")

SUPPORTED_DTYPES = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"
)


@dataclass(frozen=True)
class Patch:
    """One tile of a scene, ready for the model, with its georeferencing.

    Attributes:
        tile: Where the patch sits in the grid (read window and core window).
        data: ``(tile, tile, bands)`` float32, normalised; invalid pixels are 0.
        valid: ``(tile, tile)`` bool; False for invalid input pixels and for padding.
        transform: Affine transform of the patch's top-left pixel.
        crs: The scene's CRS (None for a scene without one).

    """

    tile: Tile
    data: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: CRS | None


def gdal_reason(exc: BaseException) -> str:
    """The most specific one-line reason in a rasterio/GDAL exception chain.

    rasterio often raises "Read failed. See previous exception for details." with the GDAL
    message (e.g. a TIFFReadEncodedTile error) as the cause; prefer that.
    """
    reasons = []
    while exc is not None:
        text = str(exc).strip()
        if text and "See previous exception" not in text:
            reasons.append(text.splitlines()[0])
        exc = exc.__cause__ or exc.__context__
    return reasons[-1] if reasons else "unknown GDAL error"


def open_raster(path: Path) -> rasterio.io.DatasetReader:
    """Open a raster for reading, or raise InputError with one line naming the file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a raster file")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise InputError(f"{path}: not a readable raster ({gdal_reason(exc)})") from exc


class SceneReader:
    """Reads normalised patches and validity masks from one scene.

    Args:
        path: The scene (any GDAL raster; GeoTIFF expected).
        bands: 1-based band indexes to use, or None for every non-alpha band.
        normalization: Scaling and per-band statistics; identity when None.
        expected_bands: The model's band count; a mismatch raises InputError.

    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[int] | None = None,
        normalization: Normalization | None = None,
        expected_bands: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.dataset = open_raster(self.path)
        try:
            self._setup(bands, normalization, expected_bands)
        except BaseException:
            self.dataset.close()
            raise
        self.reads = 0

    def _setup(
        self,
        bands: Sequence[int] | None,
        normalization: Normalization | None,
        expected_bands: int | None,
    ) -> None:
        ds = self.dataset
        name = str(self.path)
        alpha = [
            i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha
        ]
        if bands is None:
            bands = [i for i in range(1, ds.count + 1) if i not in alpha]
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(
                f"Expected band numbers between 1 and {ds.count}. "
                f"Received: {','.join(map(str, bad))} for {name}"
            )
        self.bands = tuple(bands)
        if expected_bands is not None and len(self.bands) != expected_bands:
            raise InputError(
                f"Expected {plural(expected_bands, 'band')}. "
                f"Received: {plural(len(self.bands), 'band')} in {name}"
                + (" (choose bands with --bands)" if len(self.bands) > expected_bands else "")
            )
        dtypes = {ds.dtypes[b - 1] for b in self.bands}
        unsupported = sorted(dtypes - set(SUPPORTED_DTYPES))
        if unsupported:
            raise InputError(
                f"Expected band data types among {', '.join(SUPPORTED_DTYPES)}. "
                f"Received: {', '.join(unsupported)} in {name}"
            )
        self.normalization = normalization or Normalization.identity(len(self.bands))
        if len(self.normalization.mean) != len(self.bands):
            raise InputError(
                f"Expected {plural(len(self.normalization.mean), 'band')}. "
                f"Received: {plural(len(self.bands), 'band')} in {name}"
            )
        norm = self.normalization
        self._scale = np.float32(norm.scale)
        self._shift = (np.float32(norm.offset) - np.asarray(norm.mean, np.float32))
        self._inv_std = 1.0 / np.asarray(norm.std, np.float32)
        self.is_float = any(np.dtype(d).kind == "f" for d in dtypes)
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        self.has_mask = self.is_float or any(f != [MaskFlags.all_valid] for f in flags)

    # -- metadata -----------------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Scene rows."""
        return self.dataset.height

    @property
    def width(self) -> int:
        """Scene columns."""
        return self.dataset.width

    @property
    def crs(self) -> CRS | None:
        """Scene CRS, or None."""
        return self.dataset.crs

    @property
    def transform(self) -> Affine:
        """Scene geotransform."""
        return self.dataset.transform

    @property
    def gcps(self) -> tuple[list, CRS | None] | None:
        """Ground control points and their CRS, when the scene is georeferenced by GCPs."""
        points, crs = self.dataset.gcps
        return (points, crs) if points else None

    def close(self) -> None:
        """Release the dataset."""
        self.dataset.close()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------
    def read_window(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read raw data and validity for a window inside the scene.

        Returns:
            ``(data, valid)``: ``(bands, h, w)`` in the file's dtype and ``(h, w)`` bool.

        Raises:
            InputError: When GDAL cannot decode the window (corrupt file).

        """
        try:
            data = self.dataset.read(self.bands, window=window)
            if self.has_mask:
                masks = self.dataset.read_masks(self.bands, window=window)
                valid = np.all(masks > 0, axis=0)
            else:
                valid = np.ones(data.shape[1:], dtype=bool)
        except RasterioError as exc:
            raise InputError(f"{self.path}: cannot read pixels ({gdal_reason(exc)})") from exc
        if self.is_float:
            valid &= np.all(np.isfinite(data), axis=0)
        self.reads += 1
        return data, valid

    def normalise(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Raw ``(bands, h, w)`` to normalised ``(h, w, bands)`` float32; invalid pixels to 0."""
        x = np.moveaxis(data, 0, -1).astype(np.float32)
        x *= self._scale
        x += self._shift
        x *= self._inv_std
        x[~valid] = 0.0
        return x

    def read_patch(self, tile: Tile, grid: TileGrid) -> Patch:
        """Read one tile as a model-ready patch, padding by reflection past the scene edge."""
        inner = grid.clip(tile.read)
        data, valid = self.read_window(inner)
        x = self.normalise(data, valid)
        size = int(tile.read.height), int(tile.read.width)
        pad_r, pad_c = size[0] - x.shape[0], size[1] - x.shape[1]
        if pad_r or pad_c:
            x = np.pad(x, ((0, pad_r), (0, pad_c), (0, 0)), mode="symmetric")
            valid = np.pad(valid, ((0, pad_r), (0, pad_c)), constant_values=False)
        return Patch(
            tile=tile,
            data=x,
            valid=valid,
            transform=self.dataset.window_transform(tile.read),
            crs=self.crs,
        )

    def patches(self, grid: TileGrid, tiles: Sequence[Tile] | None = None) -> Iterator[Patch]:
        """Patches of ``tiles`` (default: the whole grid) in grid order."""
        for tile in grid.tiles if tiles is None else tiles:
            yield self.read_patch(tile, grid)


_DONE = object()


def prefetch(
    make_iter: Callable[[], Iterator[T]], depth: int = 2, env: dict[str, Any] | None = None
) -> Iterator[T]:
    """Run ``make_iter()`` in a background thread, ``depth`` items ahead of the consumer.

    Exceptions raised in the thread are re-raised in the consumer. Stopping early (``close()``
    or garbage collection of the generator) stops the thread.

    Args:
        make_iter: Builds the iterator inside the worker thread.
        depth: Queue size (items read ahead).
        env: GDAL options for a ``rasterio.Env`` around the worker (GDAL config is per thread).

    """
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with rasterio.Env(**(env or {})):
                for item in make_iter():
                    if not put(item):
                        return
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
            put(exc)
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="geofuse-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def batched(patches: Iterator[Patch], size: int) -> Iterator[list[Patch]]:
    """Group patches into lists of at most ``size``."""
    batch: list[Patch] = []
    for patch in patches:
        batch.append(patch)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stack_batch(batch: Sequence[Patch], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Stack patches into a ``(size, tile, tile, bands)`` array, zero-padding a short batch.

    A fixed batch shape keeps the compiled model from retracing on the last batch. Passing the
    previous result as ``out`` reuses its memory (no fresh page faults for every batch).
    """
    shape = (size, *batch[0].data.shape)
    if out is None or out.shape != shape:
        out = np.empty(shape, dtype=np.float32)
    for i, patch in enumerate(batch):
        out[i] = patch.data
    out[len(batch) :] = 0.0
    return out
