"""Everything about writing outputs, in one place.

- Destinations: :func:`check_destination` refuses existing outputs (unless overwriting) and
  folders that cannot take files, before any work starts.
- Atomic files: write under a hidden temporary name beside the target, then rename
  (:func:`atomic_path`, :func:`write_json`), so a reader (or a resumed batch run) never sees a
  partial file under a final name. Temporary names start with ``.<final name>.`` so stale ones
  from a killed run are easy to find.
- Output tags: the names of the GeoTIFF metadata tags every product carries (:data:`TAGS`).
- :data:`Progress`: the callback type long-running library functions report through.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geofuse.errors import OutputError

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` (tiles, rows, scenes, epochs: the caller says which)."""


class TAGS:
    """Names of the metadata tags written into every geofuse GeoTIFF product."""

    VERSION = "GEOFUSE_VERSION"
    MODEL = "GEOFUSE_MODEL"
    MODEL_SHA256 = "GEOFUSE_MODEL_SHA256"
    TILE = "GEOFUSE_TILE"
    OVERLAP = "GEOFUSE_OVERLAP"
    BLEND = "GEOFUSE_BLEND"
    SOURCE = "GEOFUSE_SOURCE"
    CLASSES = "GEOFUSE_CLASSES"
    TTA = "GEOFUSE_TTA"
    AOI = "GEOFUSE_AOI"


def check_destination(path: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``) or a folder that cannot take files.

    Raises:
        OutputError: With the path and the reason.

    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected an output file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (use --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: folder {parent} is not writable ({exc.strerror})") from exc


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def reserve_temp(dest: Path, suffix: str = ".part") -> Path:
    """Create an empty hidden temporary file beside ``dest`` and return its path.

    Raises:
        OutputError: When the folder does not accept new files.
    """
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=parent)
    except OSError as exc:
        raise OutputError(f"{dest}: cannot write here ({exc.strerror})") from exc
    os.close(fd)
    return Path(name)


def publish(tmp: Path, dest: Path) -> Path:
    """Give ``tmp`` normal permissions (0666 & ~umask) and rename it to ``dest`` atomically."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dest)
    return dest


@contextmanager
def atomic_path(dest: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``dest``, on error it vanishes.

    Example:
        >>> with atomic_path("report.json", ".json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    dest = Path(dest)
    tmp = reserve_temp(dest, suffix)
    try:
        yield tmp
        publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)



def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (non-JSON values via ``str``)."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return Path(path)
