"""What the library tells the user without stopping: one-line notices, and how lengths read.

A :class:`Notice` is a plain one-line string (it can be logged, listed in a report, compared)
that may carry a ``code`` naming the situation, e.g. :data:`NODATA_COLOUR`. The library never
names command-line options in its messages; a front end that has an option for the situation
maps the code to its own advice (the ``geofuse`` command adds ``--no-nodata`` to a
:data:`NODATA_COLOUR` notice).

Every length shown to the user goes through :func:`metres`: one unit, one rule.
"""

from __future__ import annotations

import math

NODATA_COLOUR = "nodata-colour"
"""The scene's nodata value also occurs scattered inside it, as a real colour would."""
UNNAMED_BANDS = "unnamed-bands"
"""The bands fed to a model of named bands carry no names: they are taken in order."""


class Notice(str):
    """A one-line notice for the user, with an optional ``code`` saying what it is about.

    Args:
        text: The message, naming the file concerned.
        code: One of the codes of this module, or None.

    """

    code: str | None

    def __new__(cls, text: str, code: str | None = None) -> Notice:
        """Make the notice."""
        notice = super().__new__(cls, text)
        notice.code = code
        return notice

    def __reduce__(self) -> tuple[type[Notice], tuple[str, str | None]]:
        """Pickle with the code (notices travel back from Dask workers)."""
        return Notice, (str(self), self.code)


def notice_code(value: object) -> str | None:
    """The code of a notice, or None for a plain string (or anything else)."""
    return getattr(value, "code", None) if isinstance(value, str) else None


def metres(value: float) -> str:
    """A length in metres, to three significant figures: the one rule for printed lengths.

    ``0.4`` -> ``0.4 m``, ``0.0775`` -> ``0.0775 m``, ``0.1`` -> ``0.1 m``,
    ``300.038`` -> ``300 m``, ``12345`` -> ``12345 m``. Always metres, never centimetres or
    kilometres, so a length reads the same in every message and between runs.
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g} m"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{round(value, decimals):.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} m"
