"""The reader's pixel arithmetic: values to the model's input, invalid pixels, edges, samples.

:class:`Scaling` maps a scene's raw band values to what the model was trained on (the
contract's value mapping, then the model's normalisation) in as few passes as the case
allows; the functions zero invalid pixels, fill a patch past the scene edge by reflection,
and place the windows a value sample is read from. :class:`~geofuse.read.reader.SceneReader`
uses them on every patch, so each is written to touch the data as few times as it can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from rasterio.windows import Window

from geofuse.model.spec import Normalization

SAMPLE_WINDOW = 128
"""Side of the windows a value sample reads from a big scene (px)."""
SAMPLE_WINDOWS = 64
"""The least number of windows a value sample reads."""


@dataclass(frozen=True)
class Scaling:
    """Raw band values to the model's input: ``(clip(v * g + b) * scale + shift) / std``.

    ``g``, ``b`` and the clip are the contract's value mapping (:attr:`values`), when there is
    one. Without it this is one multiply-add per value (:attr:`gain` and :attr:`offset` fold
    the normalisation's scale, shift and standard deviation together).

    Attributes:
        scale: The normalisation's value scale.
        shift: Its offset minus the band means, per band.
        inv_std: One over the band standard deviations.
        gain: ``scale * inv_std`` per band.
        offset: ``shift * inv_std`` per band.
        values: The contract's value mapping ``(gain, bias, clip)`` per band, or None.
    """

    scale: float
    shift: np.ndarray
    inv_std: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    values: tuple[np.ndarray, np.ndarray, tuple[float, float] | None] | None = None

    @classmethod
    def of(cls, norm: Normalization) -> Scaling:
        """The scaling of a model's normalisation, with no value mapping."""
        scale = np.float32(norm.scale)
        shift = np.float32(norm.offset) - np.asarray(norm.mean, np.float32)
        inv_std = 1.0 / np.asarray(norm.std, np.float32)
        return cls(
            scale,
            shift,
            inv_std,
            (scale * inv_std).astype(np.float32),
            (shift * inv_std).astype(np.float32),
        )

    def mapped(self, gain: object, bias: object, clip: tuple[float, float] | None) -> Scaling:
        """This scaling after the value mapping ``v * gain + bias`` (clipped to ``clip``)."""
        return replace(
            self, values=(np.asarray(gain, np.float32), np.asarray(bias, np.float32), clip)
        )

    def apply(
        self,
        data: np.ndarray,
        valid: np.ndarray,
        out: np.ndarray | None = None,
        finite: bool = True,
    ) -> np.ndarray:
        """Raw ``(bands, h, w)`` to scaled ``(h, w, bands)`` float32; invalid pixels to 0.

        Args:
            data: The raw values.
            valid: ``(h, w)`` bool; False pixels become 0.
            out: A float32 ``(h, w, bands)`` array to write into (a slot of the model's batch).
            finite: Whether ``data`` cannot hold NaN (integer bands): see :func:`zero_invalid`.
        """
        bands, h, w = data.shape
        x = np.empty((h, w, bands), dtype=np.float32) if out is None else out
        # band by band: each band's rows are contiguous in ``data`` (a transposing multiply
        # over all bands at once measured 2.5 times slower)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32: +-inf
            if self.values is None:  # one multiply-add: (v * scale + shift) / std
                for i in range(bands):
                    np.multiply(data[i], self.gain[i], out=x[..., i], dtype=np.float32)
                add_per_band(x, self.offset)
            else:
                for i in range(bands):
                    x[..., i] = data[i]
                gain, bias, clip = self.values
                x *= gain
                x += bias
                if clip is not None:
                    np.clip(x, *clip, out=x)
                x *= self.scale
                x += self.shift
                x *= self.inv_std
        if not valid.all():
            zero_invalid(x, valid, finite)
        return x


def sample_windows(height: int, width: int, pixels: int) -> list[Window]:
    """Square windows spread evenly over a ``height`` x ``width`` scene, ``pixels`` in all.

    At least :data:`SAMPLE_WINDOWS` of them (smaller ones for a small sample), at most
    :data:`SAMPLE_WINDOW` px on a side.
    """
    side = min(SAMPLE_WINDOW, max(16, math.isqrt(pixels // SAMPLE_WINDOWS)), width, height)
    count = max(1, pixels // side**2)
    rows = max(1, min(round(math.sqrt(count * height / width)), height // side))
    cols = max(1, min(math.ceil(count / rows), width // side))
    return [
        Window(
            (width - side) * j // max(1, cols - 1) if cols > 1 else (width - side) // 2,
            (height - side) * i // max(1, rows - 1) if rows > 1 else (height - side) // 2,
            side,
            side,
        )
        for i in range(rows)
        for j in range(cols)
    ]


def valid_values(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(bands, n)`` values of the valid pixels of ``(bands, h, w)`` data (no copy if all)."""
    flat = data.reshape(len(data), -1)
    # np.compress: a third of the time of data[:, valid] here
    return flat if valid.all() else np.compress(valid.ravel(), flat, axis=1)


def zero_invalid(x: np.ndarray, valid: np.ndarray, finite: bool) -> None:
    """Set the ``(h, w, bands)`` pixels of ``x`` that ``valid`` rules out to 0, in place.

    Only the box around the invalid pixels is touched (nodata is mostly a collar or a hole);
    ``finite`` values there are multiplied by the mask (a third faster than boolean indexing;
    it would keep a NaN, so float scenes assign through the mask).
    """
    invalid = ~valid
    rows = np.flatnonzero(invalid.any(axis=1))
    cols = np.flatnonzero(invalid[rows[0] : rows[-1] + 1].any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    if finite:
        x[box] *= valid[box][..., None]
    else:
        x[box][invalid[box]] = 0.0


def add_per_band(x: np.ndarray, values: np.ndarray) -> None:
    """``x += values`` over the last axis of ``x`` (bands), along whole rows where possible."""
    if x.flags.c_contiguous:  # one long inner loop per row instead of one per pixel
        rows = x.reshape(x.shape[0], -1)
        rows += np.tile(values, x.shape[1])
    else:
        x += values


def exact_integer(value: float | None, dtype: str) -> bool:
    """Whether ``value`` is a whole number that a band of integer ``dtype`` can hold."""
    if value is None or np.dtype(dtype).kind not in "iu" or not float(value).is_integer():
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def reflect(x: np.ndarray, h: int, w: int) -> None:
    """Fill ``x`` past its first ``h`` rows and ``w`` columns by mirroring them, in place.

    The same values as ``np.pad(x[:h, :w], ..., mode="symmetric")``: the edge pixel repeats,
    and a pad longer than the data mirrors it again, back and forth.
    """
    rows, cols = x.shape[:2]
    if rows > h:
        x[h:, :w] = x[mirror(h, rows), :w]
    if cols > w:
        x[:, w:] = x[:, mirror(w, cols)]


def mirror(n: int, size: int) -> np.ndarray:
    """Source indices (among the first ``n``) of positions ``n .. size - 1``, symmetric pad."""
    k = np.arange(n, size) % (2 * n)
    return np.where(k < n, k, 2 * n - 1 - k)


def any_inside(valid: np.ndarray, window: Window, inner: Window) -> bool:
    """Whether ``valid`` (the pixels of ``window``) has a True pixel inside ``inner``."""
    r0 = int(inner.row_off - window.row_off)
    c0 = int(inner.col_off - window.col_off)
    return bool(valid[r0 : r0 + int(inner.height), c0 : c0 + int(inner.width)].any())
