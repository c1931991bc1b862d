"""Input names: local paths, or anything else GDAL opens, passed to GDAL unchanged.

GDAL reads much more than local files: ``/vsizip/chips.zip/a.tif``, ``/vsicurl/https://...``,
``https://host/scene.tif``, ``s3://bucket/key.tif``, ``gs://...``. Such names must reach GDAL
exactly as written: a :class:`~pathlib.Path` collapses ``//`` (``/vsizip//data/x.zip`` becomes
``/vsizip/data/x.zip``, ``https://h`` becomes ``https:/h``) and asks the local file system
whether they exist. :func:`as_source` keeps them as strings and turns everything else into a
``Path``; rasterio (and so GDAL) opens both.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Source = str | Path
"""A local path (``Path``) or a GDAL name kept verbatim (``str``)."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_gdal_name(name: str | os.PathLike[str]) -> bool:
    """True for a name only GDAL resolves: ``/vsi...`` or ``scheme://...`` (http, s3, gs, ...)."""
    text = os.fspath(name)
    return text.startswith("/vsi") or bool(_SCHEME.match(text))


def as_source(name: str | os.PathLike[str]) -> Source:
    """``name`` as a GDAL name (unchanged ``str``) or a local ``Path``."""
    if isinstance(name, Path):
        return name
    text = os.fspath(name)
    return text if is_gdal_name(text) else Path(text)


def absolute_source(name: str | os.PathLike[str]) -> str:
    """A name that means the same from any working directory (GDAL names stay as they are)."""
    source = as_source(name)
    return source if isinstance(source, str) else str(source.absolute())


def source_name(name: str | os.PathLike[str]) -> str:
    """The file name part: ``a.tif`` for ``/vsizip/x.zip/a.tif`` or ``https://h/a.tif?sig=1``."""
    source = as_source(name)
    if isinstance(source, Path):
        return source.name
    text = source
    if _SCHEME.match(text) or text.startswith(("/vsicurl/", "/vsicurl?")):
        text = urlsplit(text.split("/vsicurl/", 1)[-1]).path
    return text.rstrip("/").rsplit("/", 1)[-1]


def portable(value: Any) -> Any:
    """``value`` (nested dicts and lists) with absolute local paths cut to their file names.

    For facts stored in a model file (provenance): they travel to other machines, so they
    name files the way the user gave them (relative paths stay) and never a machine's own
    folders (``/home/alice/runs/m.keras`` becomes ``m.keras``).
    """
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, Path | str) and not is_gdal_name(value) and os.path.isabs(value):
        return Path(value).name
    return value
