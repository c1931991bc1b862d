"""How long-running library functions report progress (no I/O, no third-party imports).

- :data:`Progress`: the callback type of counted work (tiles, rows, scenes, epochs) and
  :func:`announce` for the phases after the counted work (overviews, COG, polygons).
- :data:`Report`: the callback type of training's per-epoch metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` (tiles, rows, scenes, epochs: the caller says which).

A progress object may also have a ``phase(text)`` method: :func:`announce` tells it what a run
does after (or between) the counted steps, e.g. ``"mask: overviews and COG"``.
"""

Report = Callable[[int, Mapping[str, float]], None]
"""Called as ``report(epoch, metrics)`` after each training epoch."""


def announce(progress: Progress | None, phase: str) -> None:
    """Tell ``progress`` what the run does now, if it listens (has a ``phase`` method)."""
    listener = getattr(progress, "phase", None)
    if listener is not None:
        listener(phase)
