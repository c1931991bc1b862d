"""Output files: destinations, atomic writes, temporary names and the tags products carry.

- Destinations: :func:`check_destination` refuses existing outputs (unless overwriting) and
  folders that cannot take files, before any work starts.
- Atomic files: write under a hidden temporary name beside the target, then rename
  (:func:`atomic_path`, :func:`write_json`), so a reader (or a resumed batch run) never sees a
  partial file under a final name. Temporary names are ``.<final name>.<pid>-<host>.<random>``
  plus a suffix: :func:`remove_stale_temps` deletes those a killed process left (never those of
  a live one) before the next run for the same output.
- Names: :func:`check_geotiff_name` (rasters are GeoTIFFs, so their names say so).
- Locks: :func:`hold_lock` (an advisory lock file, removed after), :func:`locked_outputs` (one
  ``.<final name>.lock`` beside each output, so two runs never write the same output at once).
- Output tags: the names of the GeoTIFF metadata tags every product carries (:data:`TAGS`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from geofuse.errors import OutputError
from geofuse.write.failures import DISK_ERRORS, write_failure

GEOTIFF_SUFFIXES = (".tif", ".tiff")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_OWNED = re.compile(r"(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.[a-z0-9_]{8}\.")  # then the suffix
_LEGACY = re.compile(r"[a-z0-9_]+\.(?:part|cog)\.tif(?:\.aux\.xml)?")  # before owner names


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
    INPUT = "GEOFUSE_INPUT"  # how the scene was fitted to the model: bands, values, resampling
    RUNTIME = "GEOFUSE_RUNTIME"  # e.g. "openvino 2026.4.1"
    PRECISION = "GEOFUSE_PRECISION"  # "f32" or "bf16"


def check_destination(path: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``), ``-``, or a folder that takes no files.

    A missing folder is created (with its parents), as ``mkdir -p`` would, and temporary files
    of this output that a killed run left are removed (:func:`remove_stale_temps`).

    Raises:
        OutputError: With the path and the reason.

    """
    path = Path(path)
    _refuse_stdout(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected an output file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (use `overwrite` to replace it)")
    parent = _make_folder(path)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: folder {parent} is not writable ({exc.strerror})") from exc
    remove_stale_temps(path)


def _make_folder(path: Path) -> Path:
    """Create the folder of the output ``path`` (with its parents) if missing; return it."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create folder {parent} ({exc.strerror})") from exc
    return parent


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
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}-{_HOST}.",
                                    suffix=suffix, dir=parent)
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

    A full disk or a file-size limit met while writing becomes a one-line
    :class:`~geofuse.errors.OutputError` naming ``dest``
    (:func:`~geofuse.write.failures.write_failure`).

    Example:
        >>> with atomic_path("report.json", ".json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    dest = Path(dest)
    tmp = reserve_temp(dest, suffix)
    try:
        yield tmp
        publish(tmp, dest)
    except OSError as exc:
        if exc.errno in DISK_ERRORS:  # disk full, over quota or over the file-size limit
            raise write_failure(dest, exc, tmp) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)



def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (non-JSON values via ``str``)."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return Path(path)


def _refuse_stdout(path: str | Path) -> None:
    if str(path) == "-":
        raise OutputError("Expected an output file name. Received: '-' (geofuse writes files, "
                          "not standard output)")


def check_geotiff_name(path: Path, hint: str = "") -> None:
    """Refuse a raster output whose name says another format (rasters are written as GeoTIFF).

    Args:
        path: The output.
        hint: Appended to the message, e.g. ``" (for a picture use --preview q.png)"``.

    Raises:
        OutputError: When ``path`` does not end in ``.tif`` or ``.tiff``.

    """
    _refuse_stdout(path)
    if Path(path).suffix.lower() not in GEOTIFF_SUFFIXES:
        raise OutputError(f"Expected a GeoTIFF name ending in .tif or .tiff. Received: {path}"
                          + hint)


def _owner_alive(pid: int, host: str) -> bool:
    """Whether the process that made a temporary file may still be writing it."""
    if host != _HOST or pid == os.getpid():
        return True  # another machine (cannot tell: keep it) or this very process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:  # a zombie (killed, not yet reaped) holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def remove_stale_temps(dest: str | Path, any_owner: bool = False) -> int:
    """Delete the temporary files of ``dest`` that a killed process left; return how many.

    A temporary file belongs to the process named in it (``.<name>.<pid>-<host>.``); files of a
    live process, or of another machine, are kept unless ``any_owner`` (for a caller that holds
    a lock on the whole folder). Temporary files of older geofuse versions (no owner in the
    name) are removed.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        return 0
    prefix = f".{dest.name}."
    removed = 0
    for path in parent.glob(glob.escape(prefix) + "*"):
        name = path.name
        rest = name[len(prefix):]
        owned = _OWNED.match(rest)
        if owned is None:
            if not _LEGACY.fullmatch(rest):
                continue  # not one of ours (e.g. a temporary of "<name>.probs.tif")
        elif not any_owner and _owner_alive(int(owned["pid"]), owned["host"]):
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError:
            continue
    return removed


@contextmanager
def hold_lock(lock: Path, refusal: str) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on the file ``lock``; remove it after.

    Never waits: a lock another process holds raises at once, so a second run is refused
    rather than queued behind a first that may run for hours.

    Args:
        lock: The lock file (created; removed when the block ends).
        refusal: The error message when another process holds the lock.

    Raises:
        OutputError: ``refusal``, or that the lock's folder takes no files.

    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    try:
        handle = open(lock, "a")  # closed below, after the unlock
    except OSError as exc:
        raise OutputError(f"{lock.parent}: cannot make the lock file {lock.name} "
                          f"({exc.strerror})") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A run that just finished may have removed the file we opened: then the lock
            # is on a deleted file, and a third run could take a new one. Hold the live one.
            if os.fstat(handle.fileno()).st_ino != os.stat(lock).st_ino:
                raise OSError("lock file replaced")
        except OSError as exc:
            raise OutputError(refusal) from exc
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(dest: str | Path) -> Path:
    """The lock file of an output: ``.<name>.lock`` beside it."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.lock")


@contextmanager
def locked_outputs(outputs: Iterable[str | Path]) -> Iterator[None]:
    """Hold the lock of each output (:func:`lock_path`) while the block runs.

    A second run on any of the same outputs is refused in one line while the first runs, so
    two runs never write one output at once (each output ends as one run's whole result).
    Missing folders are created, as :func:`check_destination` would.

    Raises:
        OutputError: Another geofuse run holds the lock of one of ``outputs``.

    """
    with ExitStack() as stack:
        for out in sorted({Path(o).absolute() for o in outputs}):
            _make_folder(out)
            stack.enter_context(hold_lock(lock_path(out), (
                f"{out}: another geofuse run is writing this output (wait for it to end, or "
                "write elsewhere)")))
        yield
