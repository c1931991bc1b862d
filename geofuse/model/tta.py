"""Test-time augmentation: average predictions over flips and rotations of each tile.

A transform is ``(k, flip)``: mirror the tile left-right when ``flip``, then rotate it ``k``
quarter turns. A batch is transformed, predicted, transformed back and averaged, so the
stitcher sees ordinary ``(batch, rows, cols, classes)`` probabilities. A quarter turn swaps a
tile's rows and columns, so modes with one (:func:`turns`) get square tiles
(:meth:`SegmentConfig.tiling_for <geofuse.config.SegmentConfig.tiling_for>`): every transform
keeps the tile's shape and the compiled model never retraces. Probabilities are averaged
before the argmax. Pure numpy: no TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from geofuse.config import TTA_MODES, TTA_TRANSFORMS
from geofuse.errors import ConfigError

Transform = tuple[int, bool]
"""``(quarter_turns, mirror_left_right)``."""


def forward(x: np.ndarray, t: Transform) -> np.ndarray:
    """Apply ``t`` to a ``(batch, rows, cols, channels)`` array."""
    k, flip = t
    if flip:
        x = x[:, :, ::-1]
    return np.rot90(x, k, axes=(1, 2))


def inverse(y: np.ndarray, t: Transform) -> np.ndarray:
    """Undo :func:`forward` on a ``(batch, rows, cols, channels)`` array."""
    k, flip = t
    y = np.rot90(y, -k, axes=(1, 2))
    if flip:
        y = y[:, :, ::-1]
    return y


def passes(mode: str) -> int:
    """Model passes per tile for a TTA mode."""
    return len(transforms(mode))


def turns(mode: str) -> bool:
    """Whether a TTA mode turns tiles a quarter turn (so needs square tiles)."""
    return any(k % 2 for k, _ in transforms(mode))


def transforms(mode: str) -> tuple[Transform, ...]:
    """The transforms of a TTA mode.

    Raises:
        ConfigError: For an unknown mode.

    """
    if mode not in TTA_TRANSFORMS:
        raise ConfigError(f"Expected tta one of {', '.join(TTA_MODES)}. Received: {mode!r}")
    return TTA_TRANSFORMS[mode]


def tta_predictor(
    predict: Callable[[np.ndarray], Any], mode: str
) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a batch predictor so it returns the mean over the transforms of ``mode``.

    Args:
        predict: Maps ``(batch, rows, cols, bands)`` to ``(batch, rows, cols, classes)``.
        mode: One of ``TTA_MODES``; ``none`` returns ``predict`` unchanged.

    Returns:
        A predictor with the same signature.

    """
    chosen = transforms(mode)
    if len(chosen) == 1:
        return predict

    def averaged(x: np.ndarray) -> np.ndarray:
        total = np.zeros((), dtype=np.float32)
        for t in chosen:
            total = total + inverse(np.asarray(predict(np.ascontiguousarray(forward(x, t)))), t)
        total /= np.float32(len(chosen))
        return total

    return averaged
