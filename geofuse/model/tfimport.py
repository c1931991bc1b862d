"""Import TensorFlow once, optionally hiding its C++ start-up banner.

TensorFlow's banner (oneDNN notice, CPU features) is written straight to file descriptor 2
before any Python logging exists, so it cannot be filtered; stderr is pointed at /dev/null for
the duration of the import instead. Python exceptions still propagate.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_quiet = [True]  # the default of import_tensorflow(quiet=None): set_quiet


def set_quiet(quiet: bool) -> None:
    """Whether TensorFlow's banner is hidden when it is imported later (default: hidden).

    Commands import TensorFlow only where they need it (converting a model, the TensorFlow
    runtime, training); this says, before that, whether its banner may show.
    """
    _quiet[0] = quiet


def import_tensorflow(quiet: bool | None = None) -> Any:
    """Import and return the ``tensorflow`` module; with ``quiet``, silence its banner.

    Args:
        quiet: Hide the banner; None: as :func:`set_quiet` said (hidden by default).

    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if quiet is None:
        quiet = _quiet[0]
    if quiet and "tensorflow" not in sys.modules:
        try:
            saved = os.dup(2)
        except OSError:  # no real stderr (e.g. captured by a test runner)
            saved = -1
        if saved >= 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                sys.stderr.flush()
                os.dup2(devnull, 2)
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)
    import tensorflow as tf

    return tf


def import_keras() -> Any:
    """Import and return Keras, with TensorFlow's start-up banner hidden."""
    import_tensorflow()
    import keras

    return keras
