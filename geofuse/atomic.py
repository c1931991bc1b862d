"""Atomic file output: write under a hidden temporary name beside the target, then rename.

A reader (or a resumed batch run) therefore never sees a partial file under a final name.
Temporary names start with ``.<final name>.`` so stale ones from a killed run are easy to find.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geofuse.errors import OutputError


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

