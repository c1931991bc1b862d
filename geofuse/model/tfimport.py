"""Import TensorFlow once, optionally hiding its C++ start-up banner.

TensorFlow's banner (oneDNN notice, CPU features) is written straight to file descriptor 2
before any Python logging exists, so it cannot be filtered; stderr is pointed at /dev/null for
the duration of the import instead. Python exceptions still propagate.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def import_tensorflow(quiet: bool = True) -> Any:
    """Import and return the ``tensorflow`` module; with ``quiet``, silence its banner."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
