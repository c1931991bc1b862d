"""SIGTERM and SIGHUP stop a run the way Ctrl-C does: cleanly, with no partial outputs.

Python turns Ctrl-C (SIGINT) into ``KeyboardInterrupt``, which unwinds the stack through every
``finally`` that removes temporary files. SIGTERM (``kill``, ``timeout``, a batch scheduler) and
SIGHUP (a closed terminal) end the process at once by default, leaving them behind. Inside
:func:`signals_interrupt` they raise :class:`Terminated`, a ``KeyboardInterrupt``, instead.
The first signal interrupts; later ones are ignored so the clean-up itself is not cut short.
:func:`exit_code` gives the shell's convention: 128 + the signal number (130 for Ctrl-C, 143
for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                    if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when a termination signal arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal that interrupted: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or :class:`Terminated` behind ``exc``, if one is in its chain of causes.

    A signal's handler raises wherever the main thread is, also inside a C extension calling
    back into Python (TensorFlow turning a numpy array into a tensor), which may wrap the
    interruption in an error of its own (``SystemError`` from ``TypeError``): the run was
    still interrupted, not broken.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def signal_name(exc: BaseException) -> str:
    """``SIGTERM`` for a :class:`Terminated`, ``SIGINT`` (Ctrl-C) otherwise."""
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within this block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Outside the main thread (where handlers cannot be installed) this does nothing. The
    previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return  # already unwinding: let the clean-up finish
        fired = True
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATING}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
