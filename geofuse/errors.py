"""The exception hierarchy of geofuse.

Every error geofuse raises on purpose derives from :class:`GeofuseError`. Messages say what was
expected and what was received, and name the file concerned, on one line, e.g.
``Expected 3 bands. Received: 1 band in scene.tif``.
"""

from __future__ import annotations


class GeofuseError(Exception):
    """Root of all geofuse errors."""


class InputError(GeofuseError):
    """An input file (scene, mask, labels) is missing, unreadable or incompatible."""


class ModelError(GeofuseError):
    """A model file is missing, unreadable or inconsistent with its metadata."""


class OutputError(GeofuseError):
    """An output cannot be written (exists, unwritable folder, disk full, ...)."""


class ConfigError(GeofuseError, ValueError):
    """A configuration value is out of range or inconsistent."""


def plural(count: int, noun: str) -> str:
    """Return ``"1 band"`` / ``"3 bands"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (or its type name), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
