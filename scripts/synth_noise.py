"""Pure-numpy noise, blur and shape helpers for the synthetic scene generator.

Everything here is deterministic for a given ``numpy.random.Generator`` state and
avoids per-pixel transcendental functions, so results do not depend on the SIMD
code path numpy picks on a particular CPU.
"""

from __future__ import annotations

import numpy as np

Shape = tuple[int, int]


def value_noise(rng: np.random.Generator, shape: Shape, cell: int) -> np.ndarray:
    """Smooth value noise in [0, 1] made by bilinearly upsampling a random grid.

    Args:
        rng: Random generator (advanced by the call).
        shape: Output ``(height, width)``.
        cell: Grid spacing in pixels; larger means lower frequency.

    Returns:
        Float64 array of ``shape`` with values in [0, 1].
    """
    h, w = shape
    cell = max(int(cell), 1)
    grid = rng.random((h // cell + 3, w // cell + 3))
    off_y, off_x = rng.random(2) * cell

    def _axis(n: int, off: float) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(n) + off) / cell
        idx = pos.astype(np.int64)
        frac = pos - idx
        return idx, frac * frac * (3.0 - 2.0 * frac)  # smoothstep

    yi, fy = _axis(h, off_y)
    xi, fx = _axis(w, off_x)
    rows = grid[yi] * (1.0 - fy)[:, None] + grid[yi + 1] * fy[:, None]
    return rows[:, xi] * (1.0 - fx) + rows[:, xi + 1] * fx


def fbm(
    rng: np.random.Generator, shape: Shape, cell: int, octaves: int = 4, gain: float = 0.5
) -> np.ndarray:
    """Fractal (multi-octave) value noise, roughly zero-mean in [-1, 1].

    Args:
        rng: Random generator.
        shape: Output ``(height, width)``.
        cell: Grid spacing of the coarsest octave in pixels.
        octaves: Number of octaves; each halves the cell size.
        gain: Amplitude factor between successive octaves.

    Returns:
        Float64 array of ``shape``.
    """
    total = np.zeros(shape)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        total += amp * value_noise(rng, shape, cell)
        norm += amp
        amp *= gain
        cell = max(cell // 2, 1)
    return 2.0 * total / norm - 1.0


def box_blur(a: np.ndarray, radius: int, passes: int = 3) -> np.ndarray:
    """Approximate a gaussian blur of a 2-D array by repeated box filters.

    Args:
        a: 2-D input array.
        radius: Box half-width in pixels.
        passes: Number of box passes (3 is close to gaussian).

    Returns:
        Blurred float64 array of the same shape (edges replicated).
    """
    out = a.astype(np.float64)
    k = 2 * radius + 1
    for _ in range(passes):
        c = np.cumsum(np.pad(out, ((radius + 1, radius), (0, 0)), mode="edge"), axis=0)
        out = (c[k:] - c[:-k]) / k
        c = np.cumsum(np.pad(out, ((0, 0), (radius + 1, radius)), mode="edge"), axis=1)
        out = (c[:, k:] - c[:, :-k]) / k
    return out


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D array by whole pixels, filling vacated cells with zeros.

    Args:
        mask: 2-D array.
        dy: Rows to move down (negative moves up).
        dx: Columns to move right (negative moves left).

    Returns:
        Shifted array of the same shape and dtype.
    """
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    out[max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)] = src
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a square structuring element.

    Args:
        mask: 2-D boolean array.
        radius: Half-width of the square in pixels.

    Returns:
        Dilated boolean array.
    """
    return box_blur(mask.astype(np.float64), radius, passes=1) > 1e-9


def line_coords(
    xx: np.ndarray, yy: np.ndarray, px: float, py: float, cos_t: float, sin_t: float
) -> tuple:
    """Project pixel coordinates onto a line through ``(px, py)`` with direction ``(cos_t, sin_t)``.

    Args:
        xx: Pixel column coordinates.
        yy: Pixel row coordinates.
        px: Line anchor column.
        py: Line anchor row.
        cos_t: Direction cosine.
        sin_t: Direction sine.

    Returns:
        ``(along, across)`` signed distances in pixels.
    """
    dx, dy = xx - px, yy - py
    return dx * cos_t + dy * sin_t, -dx * sin_t + dy * cos_t
