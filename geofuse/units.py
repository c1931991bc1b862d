"""How lengths read: every length shown to the user goes through :func:`metres`.

One unit, one rule, so a pixel size reads the same in every message, in ``geofuse info`` and
between runs (not ``0.1 m`` in one place and ``10 cm`` in another).
"""

from __future__ import annotations

import math


def metres(value: float) -> str:
    """A length in metres, to three significant figures: the one rule for printed lengths.

    ``0.4`` -> ``0.4 m``, ``0.0775`` -> ``0.0775 m``, ``0.1`` -> ``0.1 m``,
    ``300.038`` -> ``300 m``, ``12345`` -> ``12345 m``. Always metres, never centimetres or
    kilometres.
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g} m"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{round(value, decimals):.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} m"
