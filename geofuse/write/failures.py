"""Failed writes: why an output could not be written, and GeoTIFFs that a full disk cut short.

A disk that fills up (``ENOSPC``), a quota (``EDQUOT``) or a file-size limit (``ulimit -f``,
``EFBIG``) does not always surface as an error: Python raises ``OSError``, but GDAL and libtiff
often only log the failed write and close the file as if it were whole, leaving blocks that
were never written (read back as nodata) or a file that ends early. So every GeoTIFF geofuse
writes is checked before it is renamed into place (:func:`check_geotiff_complete`), and a
failure is reported in one line naming the output and the reason (:func:`write_failure`).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from geofuse.errors import OutputError, first_line

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
FULL_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full


def _file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``), or None when unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def disk_reason(written: Path | None = None, exc: BaseException | None = None) -> str | None:
    """Why a write failed when the disk is to blame: full, over quota, or over the size limit.

    Args:
        written: The file that was being written (its size and its folder's free space are
            looked at), when known.
        exc: The error raised, when there was one; an ``OSError``'s errno is trusted first.

    Returns:
        A short reason, or None when neither the error nor the disk explains the failure.

    """
    code = getattr(exc, "errno", None)
    limit = _file_size_limit()
    if code == errno.EFBIG or (
        code is None and written is not None and limit is not None and _size(written) >= limit
    ):
        where = f"the file-size limit (ulimit -f) is {limit} bytes" if limit is not None else ""
        return f"file too large: {where}" if where else "file too large"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return os.strerror(code).lower()
    if written is not None:
        try:
            free = shutil.disk_usage(written.parent).free
        except OSError:
            return None
        if free < FULL_BYTES:
            return f"no space left on device: {free} bytes free"
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def write_failure(
    dest: Path,
    exc: BaseException | None = None,
    written: Path | None = None,
    what: str = "cannot write",
) -> OutputError:
    """The one-line :class:`~geofuse.errors.OutputError` of a failed write of ``dest``.

    Args:
        dest: The output's final name (the one the user gave).
        exc: The error raised, if any.
        written: The temporary file that was being written, if any.
        what: What failed, e.g. ``"cannot write polygons"``.

    """
    reason = disk_reason(written, exc)
    if reason is None:
        reason = first_line(exc) if exc is not None else "the file was not completely written"
        limit = _file_size_limit()
        if limit is not None:  # e.g. SQLite rolls back, leaving no oversized file to see
            reason += f"; files over {limit} bytes are refused here (ulimit -f)"
    return OutputError(f"{dest}: {what} ({reason})")


def check_geotiff_complete(path: Path, dest: Path) -> None:
    """Check that every block of every band and overview of the GeoTIFF ``path`` is on disk.

    A complete GeoTIFF (written without ``SPARSE_OK``) has a non-empty block at an offset that
    lies within the file for each tile or strip; a write that failed leaves blocks unwritten
    (offset 0) or past the end of the file, which GDAL reads back as nodata or fails on later.

    Raises:
        OutputError: Naming ``dest`` (the final name) and the reason, when ``path`` does not
            open or a block is missing.

    """
    import rasterio
    from rasterio.errors import RasterioError

    size = _size(path)
    try:
        with rasterio.open(path) as ds:
            levels = len(ds.overviews(1)) if ds.count else 0
            complete = _blocks_on_disk(ds, size)
        for level in range(levels):
            if not complete:
                break
            with rasterio.open(path, overview_level=level) as ds:
                complete = _blocks_on_disk(ds, size)
    except (RasterioError, OSError, ValueError) as exc:
        raise write_failure(dest, exc, path) from exc
    if not complete:
        raise write_failure(dest, None, path)


def _blocks_on_disk(ds: Any, size: int) -> bool:
    """Whether each block of the rasterio dataset ``ds`` is non-empty and within ``size``."""
    interleaved = ds.interleaving is None or ds.interleaving.name == "PIXEL"
    bands = [1] if interleaved else range(1, ds.count + 1)
    rows, cols = (-(-n // b) for n, b in zip(ds.shape, ds.block_shapes[0], strict=True))
    for band in bands:
        for row in range(rows):
            for col in range(cols):
                offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                length = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                if (
                    not offset
                    or not length
                    or int(offset) <= 0
                    or int(length) <= 0
                    or int(offset) + int(length) > size
                ):
                    return False
    return True
