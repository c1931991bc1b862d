"""``predict_array()``: segment a numpy array in memory, exactly as ``segment`` does a file.

For notebooks and other pipelines that hold imagery as arrays (bands-first like rasterio and
PyTorch, or bands-last like PIL and Keras). The array is wrapped as an in-memory GeoTIFF
(GDAL's ``/vsimem/``) and read by the same :class:`~geofuse.read.reader.SceneReader` as a file, so
scaling, normalisation and validity (the ``valid`` mask, NaN in float data) are the ones of
``segment``; tiles are chosen by the same :meth:`~geofuse.config.TilingConfig.for_scene`,
predicted by the same runtime and blended by the same :class:`~geofuse.write.stitcher.Stitcher`.
The result equals the mask and float32 probabilities ``segment`` writes for the same pixels.

Example:
    >>> import numpy as np, geofuse
    >>> image = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    >>> result = geofuse.predict_array("default", image)  # doctest: +SKIP
    >>> result.classes.shape, result.probabilities.shape  # doctest: +SKIP
    ((64, 64), (5, 64, 64))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from geofuse.checks import choice
from geofuse.config import TTA_MODES, SegmentConfig, TilingConfig
from geofuse.errors import InputError
from geofuse.model.modelfile import LoadedModel, load_model
from geofuse.progress import Progress
from geofuse.read.feed import read_ahead
from geofuse.read.reader import SUPPORTED_DTYPES, SceneReader
from geofuse.write.stitcher import Stitcher

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
    array: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    tiling: TilingConfig | None = None,
    tta: str = "none",
    layout: str = "auto",
    progress: Progress | None = None,
) -> ArrayPrediction:
    """Segment an image array with the tiling, blending and runtime of ``segment``.

    Args:
        model: A loaded model, a model file, or None / ``"default"`` for the embedded model.
        array: Raw pixels as they would be stored in a file (e.g. uint8 0..255 or uint16
            reflectance): ``(bands, h, w)``, ``(h, w, bands)`` or ``(h, w)`` for one band.
        valid: Optional ``(h, w)`` bool mask; False pixels are nodata (as are NaNs).
        tiling: Tile, overlap, blend, batch size, bands (1-based, of the array) and runtime;
            default ``TilingConfig()``, like ``segment``.
        tta: Test-time augmentation, as ``segment --tta``.
        layout: ``auto`` (by the model's band count), ``bands_first`` or ``bands_last``.
        progress: Optional ``progress(done_tiles, total_tiles)`` callback.

    Returns:
        An :class:`ArrayPrediction`.

    Raises:
        GeofuseError: InputError for an array the model cannot take (band count, data type,
            shape), ModelError, ConfigError for bad settings.

    """
    from geofuse.model.runtime import choose_runtime, pipelined
    from geofuse.model.runtime import make_predictor as runtime_predictor
    from geofuse.model.tta import tta_predictor
    from geofuse.segment import run_pipeline

    choice("tta", tta, TTA_MODES)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    info = loaded.info
    tiling = tiling or TilingConfig()
    data, bands_last = _bands_first(np.asarray(array),
                                    info.spec.bands if tiling.bands is None else None, layout)
    if data.dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"Expected an array of {', '.join(SUPPORTED_DTYPES)}. "
                         f"Received: {data.dtype.name}")
    height, width = data.shape[1:]
    if valid is not None and np.shape(valid) != (height, width):
        raise InputError(f"Expected a valid mask of shape {(height, width)}. "
                         f"Received: {np.shape(valid)}")
    tiling = SegmentConfig(tiling=tiling, tta=tta).tiling_for(height, width,
                                                               info.spec.arch.multiple)
    info.spec.arch.check_tile(tiling.shape)
    classes = info.spec.classes
    mask_sink = _ArraySink(1, height, width, "uint8")
    prob_sink = _ArraySink(classes, height, width, "float32")
    env = {"GDAL_CACHEMAX": 32 * 1024 * 1024, "GDAL_TIFF_INTERNAL_MASK": True}
    with rasterio.Env(**env), MemoryFile(ext=".tif") as memory:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with memory.open(driver="GTiff", width=width, height=height, count=len(data),
                             dtype=data.dtype.name) as ds:
                ds.write(data)
                if valid is not None:
                    ds.write_mask(np.where(np.asarray(valid, bool), 255, 0).astype(np.uint8))
        try:
            reader = SceneReader(memory.name, bands=tiling.bands,
                                 normalization=info.normalization,
                                 expected_bands=info.spec.bands)
        except InputError as exc:
            raise InputError(str(exc).replace(memory.name, "the array")) from None
        with reader:
            grid = tiling.grid(height, width)
            predict, flight = pipelined(runtime_predictor(
                loaded, tiling.batch_size, tiling.shape, choose_runtime(tiling)),
                len(grid), tiling.batch_size)
            stitcher = Stitcher(grid, classes, tiling.blend, mask_sink, prob_sink, "float32")
            batches = read_ahead(lambda slot: reader.patches(grid, slot=slot), tiling.batch_size,
                                 env=env, in_flight=flight)
            try:
                run_pipeline(batches, tta_predictor(predict, tta), stitcher, len(grid), progress,
                             flight)
            finally:
                batches.close()
            stitcher.finish()
    probabilities = prob_sink.array
    return ArrayPrediction(
        classes=mask_sink.array[0],
        probabilities=np.moveaxis(probabilities, 0, -1) if bands_last else probabilities,
        class_names=tuple(c.name for c in info.classes),
        tiling=tiling,
    )
