"""``predict_array()``: segment an image array in memory, exactly as ``segment`` does a file.

For notebooks and other pipelines that hold imagery as arrays (bands-first like rasterio and
PyTorch, or bands-last like PIL and Keras), or an open rasterio dataset. The array is wrapped as
an in-memory GeoTIFF (GDAL's ``/vsimem/``) with the georeferencing, nodata and band colours it
is given, and goes through the one pipeline of ``segment`` (:mod:`geofuse.pipeline`): the same
input contract (band names, data type and value range with ``input_range``/``stretch``, pixel
size and resampling, nodata), the same tiling, runtime and blending. The result equals the mask
and float32 probabilities ``segment`` writes for the same pixels.

Example:
    >>> import numpy as np, geofuse
    >>> image = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    >>> result = geofuse.predict_array("default", image, pixel_size=0.5)  # doctest: +SKIP
    >>> result.classes.shape, result.probabilities.shape  # doctest: +SKIP
    ((64, 64), (5, 64, 64))
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader, MemoryFile

from geofuse.checks import choice
from geofuse.config import InputConfig, SegmentConfig, TilingConfig
from geofuse.errors import InputError
from geofuse.model.modelfile import LoadedModel, load_model
from geofuse.pipeline import plan_scene, predict_scene
from geofuse.progress import Progress
from geofuse.read.contract import SUPPORTED_DTYPES
from geofuse.read.reader import SceneReader

log = logging.getLogger(__name__)

ARRAY_NAME = "the array"
"""How messages name an array input."""

LOCAL_METRES = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=0 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 "
                              "+units=m +no_defs")
"""The CRS an array with only a ``pixel_size`` is given: metres, true scale at its origin."""

LAYOUTS = ("auto", "bands_first", "bands_last")


@dataclass(frozen=True)
class ArrayPrediction:
    """What :func:`predict_array` returns.

    Attributes:
        classes: ``(height, width)`` uint8 class ids; 255 where no valid input contributed.
        probabilities: Per-class float32 probabilities in the input's layout,
            ``(classes, height, width)`` or ``(height, width, classes)``; NaN where
            ``classes`` is 255.
        class_names: The model's class names, in class-id order.
        tiling: The tiling used (small arrays get one smaller tile, as in ``segment``).

    """

    classes: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    tiling: TilingConfig


class _ArraySink:
    """Collects the stitcher's full-width row bands in memory (a sink like GeoTiffSink)."""

    def __init__(self, count: int, height: int, width: int, dtype: str) -> None:
        self.array = np.empty((count, height, width), dtype=dtype)

    def write(self, row0: int, array: np.ndarray) -> None:
        self.array[:, row0:row0 + array.shape[1]] = array


def _bands_first(array: np.ndarray, bands: int | None, layout: str) -> tuple[np.ndarray, bool]:
    """``(bands, h, w)`` view of ``array`` and whether the input was bands-last.

    ``auto`` picks the axis whose length is the model's band count ``bands`` (None when the
    caller chose bands), else the shorter of the first and last axes.
    """
    choice("layout", layout, LAYOUTS)
    if array.ndim == 2:
        return array[None], False
    if array.ndim != 3:
        raise InputError(f"Expected a 2-D or 3-D image array. Received: shape {array.shape}")
    if layout == "auto":
        first, last = array.shape[0], array.shape[2]
        if bands is not None and (first == bands) != (last == bands):
            layout = "bands_first" if first == bands else "bands_last"
        elif first != last:
            layout = "bands_first" if first < last else "bands_last"
        else:
            raise InputError(f"Expected an array with its bands first or last. Received: "
                             f"shape {array.shape} (pass layout='bands_first' or 'bands_last')")
    if layout == "bands_last":
        return np.moveaxis(array, -1, 0), True
    return array, False


def predict_array(
    model: LoadedModel | str | Path | None,
    array: np.ndarray | DatasetReader,
    valid: np.ndarray | None = None,
    *,
    pixel_size: float | None = None,
    transform: Affine | None = None,
    crs: CRS | str | None = None,
    nodata: float | None = None,
    colours: Sequence[str] | None = None,
    tiling: TilingConfig | None = None,
    tta: str = "none",
    input: InputConfig | None = None,
    layout: str = "auto",
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> ArrayPrediction:
    """Segment an image array with the input contract, tiling, blending and runtime of ``segment``.

    Args:
        model: A loaded model, a model file, or None / ``"default"`` for the embedded model.
        array: Raw pixels as they would be stored in a file (e.g. uint8 0..255, or int16/uint16
            with ``input``'s ``input_range`` or ``stretch``): ``(bands, h, w)``,
            ``(h, w, bands)`` or ``(h, w)`` for one band; or an open rasterio dataset, which is
            read as ``segment`` reads its file (georeferencing, nodata, masks, colours).
        valid: Optional ``(h, w)`` bool mask; False pixels are nodata (as are NaNs).
        pixel_size: Ground size of a pixel in metres, when neither ``transform`` nor the
            dataset says it: a scene of another pixel size than the model's is resampled as
            ``segment`` does (see ``input.resample``). Without any, the array is taken as is.
        transform: The array's geotransform (with ``crs``), as rasterio's.
        crs: The coordinate reference system of ``transform``.
        nodata: A value that marks pixels with no data, as a file's nodata value.
        colours: Colour interpretation of each band, by GDAL's names (``"red"``, ``"green"``,
            ``"blue"``, ``"gray"``, ``"undefined"``, ...), matched against the model's band
            names as a file's are; default: red, green, blue for three bands of uint8, as GDAL
            writes such a GeoTIFF.
        tiling: Tile, overlap, blend, batch size, bands (1-based, of the array) and runtime;
            default ``TilingConfig()``, like ``segment``.
        tta: Test-time augmentation, as ``SegmentConfig.tta``.
        input: How the array is fitted to the model (value range, resampling, nodata), as
            ``SegmentConfig.input``.
        layout: ``auto`` (by the model's band count), ``bands_first`` or ``bands_last``.
        progress: Optional ``progress(done_tiles, total_tiles)`` callback.
        notify: Receives the input contract's one-line notices (default: logged as warnings).

    Returns:
        An :class:`ArrayPrediction`.

    Raises:
        GeofuseError: InputError for an array the model cannot take (band count, data type,
            value range, shape), ModelError, ConfigError for bad settings.

    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    info = loaded.info
    config = SegmentConfig(tiling=tiling or TilingConfig(), tta=tta, input=input or InputConfig(),
                           probability_dtype="float32")
    info.spec.arch.check_tile(config.tiling.shape)
    env = {"GDAL_CACHEMAX": config.gdal_cache_mb * 1024 * 1024, "GDAL_TIFF_INTERNAL_MASK": True}
    bands_last = False
    with rasterio.Env(**env), _as_scene(array, valid, info.spec.bands, config, layout,
                                        pixel_size, transform, crs, nodata, colours) as scene:
        scene_name, bands_last, shown = scene
        try:
            reader = SceneReader(scene_name, bands=config.tiling.bands, model=info,
                                 adapt=config.input)
        except InputError as exc:
            raise InputError(str(exc).replace(scene_name, shown)) from None
        with reader:
            for notice in reader.notices:
                (notify or log.warning)(notice.replace(scene_name, shown))
            plan = plan_scene(reader, loaded, config)
            height, width = reader.dataset.height, reader.dataset.width
            mask = _ArraySink(1, height, width, "uint8")
            probabilities = _ArraySink(info.spec.classes, height, width, "float32")
            predict_scene(reader, plan, info.spec.classes, mask, probabilities, progress, env)
    probs = probabilities.array
    return ArrayPrediction(
        classes=mask.array[0],
        probabilities=np.moveaxis(probs, 0, -1) if bands_last else probs,
        class_names=tuple(c.name for c in info.classes),
        tiling=plan.tiling,
    )


@contextmanager
def _as_scene(array: np.ndarray | DatasetReader, valid: np.ndarray | None, model_bands: int,
              config: SegmentConfig, layout: str, pixel_size: float | None,
              transform: Affine | None, crs: CRS | str | None, nodata: float | None,
              colours: Sequence[str] | None) -> Iterator[tuple[str, bool, str]]:
    """Yield the scene's GDAL name, whether it was bands-last, and its name in messages.

    The scene is the dataset's own file, or an in-memory GeoTIFF of the array.
    """
    if isinstance(array, DatasetReader):
        if valid is not None or pixel_size or transform or crs or nodata is not None or colours:
            raise InputError("Expected a dataset alone: its own georeferencing, nodata and "
                             "masks are used. Received: a dataset with other settings")
        yield array.name, False, array.name
        return
    data, bands_last = _bands_first(np.asarray(array),
                                    model_bands if config.tiling.bands is None else None, layout)
    if data.dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"Expected an array of {', '.join(SUPPORTED_DTYPES)}. "
                         f"Received: {data.dtype.name}")
    height, width = data.shape[1:]
    if valid is not None and np.shape(valid) != (height, width):
        raise InputError(f"Expected a valid mask of shape {(height, width)}. "
                         f"Received: {np.shape(valid)}")
    if transform is None and pixel_size is not None:
        if not pixel_size > 0:
            raise InputError(f"Expected a positive pixel_size in metres. Received: {pixel_size}")
        transform, crs = Affine(pixel_size, 0, 0, 0, -pixel_size, 0), crs or LOCAL_METRES
    interp = _colour_interp(colours, len(data), data.dtype.name)
    profile: dict[str, Any] = {"driver": "GTiff", "width": width, "height": height,
                               "count": len(data), "dtype": data.dtype.name, "nodata": nodata}
    if transform is not None:
        profile |= {"transform": transform, "crs": CRS.from_user_input(crs) if crs else None}
    with MemoryFile(ext=".tif") as memory:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with memory.open(**profile) as ds:
                ds.write(data)
                if interp is not None:
                    ds.colorinterp = interp
                if valid is not None:
                    ds.write_mask(np.where(np.asarray(valid, bool), 255, 0).astype(np.uint8))
        yield memory.name, bands_last, ARRAY_NAME


def _colour_interp(colours: Sequence[str] | None, count: int,
                   dtype: str) -> list[ColorInterp] | None:
    """GDAL colour interpretations of the bands: as given, or GDAL's own default (None)."""
    if colours is None:
        return None
    if len(colours) != count:
        raise InputError(f"Expected {count} colours, one per band. Received: {list(colours)}")
    try:
        return [ColorInterp[c.lower()] for c in colours]
    except KeyError as exc:
        raise InputError(f"Expected colours named as GDAL's ({', '.join(ColorInterp.__members__)})."
                         f" Received: {list(colours)}") from exc
