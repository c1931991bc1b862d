"""Progress display of the command line (a helper of :mod:`geofuse.cli`, the other click user).

The library reports through ``progress(done, total)`` and, for the phases after the counted
work, ``progress.phase(text)`` (see :func:`geofuse.progress.announce`). In a terminal this
draws a bar whose right-hand side names the phase, so a bar at 100 % says what is still
running (``mask: overviews and COG``, ``polygons``). Outside a terminal (a pipe, a log file,
CI) there is no bar and never a bare label line: nothing for the steps of one scene (the
command's summary line follows), and with ``lines`` one line per finished item, e.g.
``[3/7] sub/c.tif: done`` for the scenes of a batch.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click


class ProgressBar:
    """A progress display fed by the library's ``progress(done, total)`` callback.

    Args:
        label: What is counted (``tiles``, ``scenes``).
        quiet: Show nothing.
        lines: Outside a terminal, print one line per reported item (``phase`` text).
        stream: Where to draw; stderr by default.

    """

    def __init__(self, label: str, quiet: bool, lines: bool = False,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.quiet = quiet
        self.lines = lines
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: Any = None
        self.done = 0
        self.total = 0
        self.item: str | None = None

    def __call__(self, done: int, total: int) -> None:
        """Advance to ``done`` of ``total``."""
        if self.quiet:
            return
        if not self.tty:
            if self.lines and self.item is not None:
                click.echo(f"[{done}/{total}] {self.item}", file=self.stream)
                self.item = None
            self.done, self.total = done, total
            return
        self._open(total)
        self.bar.length = total
        self.bar.update(done - self.done, self.item)
        self.done, self.total = done, total

    def phase(self, text: str) -> None:
        """Show what runs now: after the counted work, or the item just finished."""
        if self.quiet:
            return
        self.item = text
        if self.tty:
            self._open(self.total or 1)
            self.bar.current_item = text
            self.bar.render_progress()

    def _open(self, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label,
                                         file=self.stream, item_show_func=lambda item: item)
            self.bar.__enter__()

    def close(self) -> None:
        """Finish the bar line."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
