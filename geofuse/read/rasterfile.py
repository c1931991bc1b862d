"""Opening rasters: one-line errors that name the file, and what GDAL said."""

from __future__ import annotations

import warnings
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from geofuse.errors import InputError
from geofuse.sources import as_source


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


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """Open a raster for reading, or raise InputError with one line naming the file.

    ``path`` is a local file or any name GDAL opens (``/vsizip/...``, ``https://...``,
    ``s3://...``), passed to GDAL unchanged (see :mod:`geofuse.sources`). rasterio's
    NotGeoreferencedWarning is not raised: see :func:`is_georeferenced`.
    """
    source = as_source(path)
    if isinstance(source, Path):
        if not source.exists():
            raise InputError(f"{source}: no such file")
        if source.is_dir():
            raise InputError(f"{source}: is a directory, expected a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(source)
    except RasterioError as exc:
        raise InputError(f"{source}: not a readable raster ({gdal_reason(exc)})") from exc


def is_georeferenced(ds: rasterio.io.DatasetReader) -> bool:
    """True when a dataset has a CRS, a geotransform, GCPs or RPCs."""
    return bool(ds.crs or not ds.transform.is_identity or ds.gcps[0] or ds.rpcs)
