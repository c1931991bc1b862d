"""Validity of a scene read at another pixel size, and nodata values that look like colours.

**Majority validity.** A scene read on the model's pixel grid
(:class:`~geofuse.read.reader.SceneReader`) gets one validity value per model pixel. GDAL's own
answer depends on the
resampling: ``nearest`` takes whichever scene pixel lies under the model pixel's centre (one
scattered nodata pixel can void a model pixel), and ``average`` on a nodata mask calls a model
pixel valid when a single scene pixel under it is. Here a model pixel is valid when at least
half of its footprint is valid (:data:`MAJORITY`), from the scene's own validity, area-weighted
(:func:`area_taps`, :func:`majority_valid`).

**Nodata that is also a colour.** Eight-bit imagery often declares 255 (or 0) as nodata while
the same value occurs as a real colour: white roofs, bright sand, saturated water glint. Real
nodata forms borders (collars) and large holes; a colour forms many small patches inside the
scene. :func:`scattered_pixels` counts the invalid pixels that lie in patches smaller than
:data:`SPECK_PIXELS`, not touching the window read; :func:`nodata_colour_notice` turns a count
of at least :data:`SCATTERED_MIN` into one notice, so the user can say the scene has no nodata
(``ignore_nodata``) or which value has that meaning (``nodata``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rasterio.enums import MaskFlags
from rasterio.features import sieve
from rasterio.io import DatasetReader
from rasterio.windows import Window

MAJORITY = 0.5
"""The valid share of a model pixel's footprint from which the model pixel is valid."""
SPECK_PIXELS = 100
"""Invalid patches smaller than this (8-connected pixels) count as scattered."""
SCATTERED_MIN = 20
"""Scattered nodata pixels (in the pixels examined) from which a notice is given."""


def area_taps(
    start: float, span: float, n_out: int, first: int, n_in: int
) -> tuple[np.ndarray, np.ndarray]:
    """Area weights of scene pixels under each of ``n_out`` pixels evenly covering a span.

    Args:
        start: Where the span starts, in scene pixel coordinates (fractional).
        span: Its length in scene pixels (fractional).
        n_out: Output pixels covering the span.
        first: The scene pixel held at index 0 of the input (``floor(start)`` or less).
        n_in: Scene pixels held.

    Returns:
        ``(index, weight)``, both ``(n_out, taps)``: output ``i`` covers the share
        ``weight[i, k]`` of its footprint with input pixel ``index[i, k]``; rows sum to 1.

    """
    step = span / n_out
    lo = start + np.arange(n_out) * step
    taps = int(np.ceil(step)) + 1
    index = np.floor(lo).astype(np.int64)[:, None] + np.arange(taps)
    weight = np.minimum(index + 1, (lo + step)[:, None]) - np.maximum(index, lo[:, None])
    weight = np.clip(weight, 0.0, None)
    index = np.clip(index - first, 0, n_in - 1)  # weight 0 wherever clipped
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)
    return index, weight.astype(np.float32)


def majority_valid(
    valid: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Output pixels whose footprint is at least :data:`MAJORITY` valid.

    Args:
        valid: ``(h, w)`` bool validity of the scene pixels held.
        rows: :func:`area_taps` of the rows.
        cols: :func:`area_taps` of the columns.

    """
    source = valid.astype(np.float32)
    (r_index, r_weight), (c_index, c_weight) = rows, cols
    across = np.zeros((len(r_index), source.shape[1]), np.float32)
    for k in range(r_index.shape[1]):
        across += r_weight[:, k, None] * source[r_index[:, k]]
    share = np.zeros((len(r_index), len(c_index)), np.float32)
    for k in range(c_index.shape[1]):
        share += c_weight[None, :, k] * across[:, c_index[:, k]]
    return share >= MAJORITY - 1e-6


def scattered_pixels(valid: np.ndarray) -> int:
    """Invalid pixels of ``valid`` in 8-connected patches under :data:`SPECK_PIXELS` pixels.

    Patches touching the window's edge are left out: a border or a hole cut by the window
    may look small in it. A window under ``4 * SPECK_PIXELS`` pixels counts none.
    """
    if valid.size < 4 * SPECK_PIXELS or valid.all():  # too small to tell specks from holes
        return 0
    invalid = np.pad(~valid, 1, constant_values=True).astype(np.uint8)
    kept = sieve(invalid, SPECK_PIXELS, connectivity=8)
    return int(np.count_nonzero(invalid[1:-1, 1:-1] & (kept[1:-1, 1:-1] == 0)))


def nodata_colour_notice(
    ds: DatasetReader, bands: Sequence[int], windows: Sequence[Window], name: str
) -> str | None:
    """One notice when a nodata value also occurs scattered inside the scene (or None).

    Args:
        ds: The open scene.
        bands: The bands read (1-based); those whose validity is a nodata value are examined.
        windows: The windows examined: the whole scene, or a sample of it.
        name: The scene, for the message.

    """
    nodata = [b for b in bands if ds.mask_flag_enums[b - 1] == [MaskFlags.nodata]]
    if not nodata:
        return None
    valid = [np.all(ds.read_masks(nodata, window=w) > 0, axis=0) for w in windows]
    count = sum(scattered_pixels(v) for v in valid)
    if count < SCATTERED_MIN:
        return None
    seen, scene_pixels = sum(v.size for v in valid), ds.width * ds.height
    values = ", ".join(f"{v:g}" for v in sorted({ds.nodatavals[b - 1] for b in nodata}))
    how_many = (
        f"{count:,} scattered pixels"
        if seen >= scene_pixels
        else f"about {_rounded(count * scene_pixels / seen):,} scattered pixels "
        f"({count:,} in the {seen:,} examined)"
    )
    return (
        f"{name}: nodata value {values} also occurs in {how_many} inside the scene (patches "
        f"under {SPECK_PIXELS} px, not a border or a hole), as a real colour would; if it is "
        "one there, these pixels are wrongly left out: set `ignore_nodata`, or `nodata` to the "
        "value that marks missing pixels"
    )


def _rounded(value: float) -> int:
    """``value`` to two significant figures (an estimate says no more)."""
    if value < 100:
        return round(value)
    digits = len(str(int(value))) - 2
    return int(round(value, -digits))
