"""Validators shared by every configuration dataclass (no TensorFlow, no rasterio).

Each raises :class:`~geofuse.errors.ConfigError` with a Keras-style message: what was expected
and what was received.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from geofuse.errors import ConfigError


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(``message``) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
    """``value`` must be an int > 0."""
    require(is_int(value) and value > 0,
            f"Expected {name} to be a positive integer. Received: {value!r}")


def non_negative(name: str, value: Any) -> None:
    """``value`` must be a real number >= 0."""
    require(isinstance(value, int | float) and not isinstance(value, bool) and value >= 0,
            f"Expected {name} >= 0. Received: {value!r}")


def choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    require(value in choices,
            f"Expected {name} to be one of {', '.join(choices)}. Received: {value!r}")


def bands(value: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Validate 1-based band indexes (None: every band) and return them as a tuple."""
    if value is None:
        return None
    value = tuple(value)
    require(len(value) > 0, "Expected at least one band. Received: none")
    for b in value:
        positive_int("band index (1-based)", b)
    return value
