"""Class probabilities from the model's pixel grid back onto the scene's own (``--resample``).

A scene whose pixel size differs from the model's is read on a grid of the model's pixel size
covering the same extent (:class:`~geofuse.read.reader.SceneReader`). The stitcher blends
probabilities on that grid; :class:`BackResampler` maps its row bands onto the scene's grid
*before* the argmax, so the mask lines up with the scene to the pixel: averages over each scene
pixel's footprint where the model grid is finer, bilinear interpolation where it is coarser.
Model-grid pixels without a prediction take no part; scene pixels that are invalid in the scene
itself are nodata. Rows stream through: memory grows with the width, never the area.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Writer = Callable[[int, np.ndarray, np.ndarray | None, int], None]
"""``write(row0, covered, probs, col0)``, as
:meth:`geofuse.write.stitcher.Stitcher.write_classes`."""

CHUNK = 16  # scene rows resampled at a time (bounds the temporaries)


def axis_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear weights mapping ``n_in`` samples onto ``n_out`` over the same extent.

    Returns:
        ``(index, weight)``, both ``(n_out, taps)``: output ``i`` is the sum over ``k`` of
        ``weight[i, k] * input[index[i, k]]``; each row of weights sums to 1. With more inputs
        than outputs the weights are each output pixel's footprint (area average); otherwise
        bilinear interpolation at the output pixel centres (clamped at the edges).

    """
    scale = n_in / n_out  # input samples per output sample
    if scale > 1:
        taps = int(np.ceil(scale)) + 1
        lo = np.arange(n_out) * scale
        index = np.floor(lo).astype(np.int64)[:, None] + np.arange(taps)
        weight = np.minimum(index + 1, (lo + scale)[:, None]) - np.maximum(index, lo[:, None])
        weight = np.clip(weight, 0.0, None)
        index = np.minimum(index, n_in - 1)  # past the end the weight is 0
    else:
        x = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0.0, n_in - 1)
        first = np.floor(x).astype(np.int64)
        index = np.stack([first, np.minimum(first + 1, n_in - 1)], axis=1)
        weight = np.stack([1.0 - (x - first), x - first], axis=1)
    weight /= weight.sum(axis=1, keepdims=True)
    return index, weight.astype(np.float32)


class BackResampler:
    """Receives model-grid row bands in order and writes scene-grid rows.

    Args:
        model_shape: ``(rows, cols)`` of the model grid.
        scene_shape: ``(rows, cols)`` of the scene grid.
        classes: Number of classes.
        write: Receives the scene rows (see :data:`Writer`).
        valid: ``valid(row0, rows)`` -> ``(rows, cols)`` bool: the scene's own validity.

    """

    def __init__(self, model_shape: tuple[int, int], scene_shape: tuple[int, int], classes: int,
                 write: Writer, valid: Callable[[int, int], np.ndarray]) -> None:
        self.scene_shape = scene_shape
        self.classes = classes
        self.write = write
        self.valid = valid
        self.rows = axis_taps(scene_shape[0], model_shape[0])
        self.cols = axis_taps(scene_shape[1], model_shape[1])
        width = model_shape[1]
        self._probs = np.zeros((0, width, classes), dtype=np.float32)  # weighted by coverage
        self._cover = np.zeros((0, width), dtype=np.float32)
        self._base = 0  # model row held at buffer row 0
        self._next = 0  # next scene row to write

    def add(self, row0: int, covered: np.ndarray, probs: np.ndarray | None = None,
            col0: int = 0) -> None:
        """Take model-grid rows from ``row0`` (arguments as :data:`Writer`)."""
        if row0 != self._base + len(self._cover):
            raise ValueError(f"Expected model row {self._base + len(self._cover)}. "
                             f"Received: {row0}")
        rows, width = covered.shape
        band = np.zeros((rows, width, self.classes), dtype=np.float32)
        if probs is not None:
            span = slice(col0, col0 + probs.shape[1])
            band[:, span] = probs * covered[:, span, None]
        self._probs = np.concatenate([self._probs, band])
        self._cover = np.concatenate([self._cover, covered.astype(np.float32)])
        self._emit()

    def finish(self) -> None:
        """Write the remaining scene rows (every model row must have arrived)."""
        self._emit()
        if self._next < self.scene_shape[0]:
            raise ValueError(f"Expected every model row. Received: scene rows up to {self._next}")

    def _emit(self) -> None:
        index, weight = self.rows
        have = self._base + len(self._cover)
        while self._next < self.scene_shape[0]:
            stop = self._next
            while (stop < self.scene_shape[0] and stop - self._next < CHUNK
                   and index[stop].max() < have):
                stop += 1
            if stop == self._next:
                return
            self._write(self._next, stop)
            self._next = stop
            if self._next < self.scene_shape[0]:
                keep = int(index[self._next].min()) - self._base
                self._probs, self._cover = self._probs[keep:], self._cover[keep:]
                self._base += keep

    def _write(self, start: int, stop: int) -> None:
        r_index, r_weight = self.rows[0][start:stop] - self._base, self.rows[1][start:stop]
        c_index, c_weight = self.cols
        probs = np.zeros((stop - start, self._probs.shape[1], self.classes), np.float32)
        cover = np.zeros((stop - start, self._cover.shape[1]), np.float32)
        for k in range(r_index.shape[1]):
            probs += r_weight[:, k, None, None] * self._probs[r_index[:, k]]
            cover += r_weight[:, k, None] * self._cover[r_index[:, k]]
        out = np.zeros((stop - start, self.scene_shape[1], self.classes), np.float32)
        out_cover = np.zeros((stop - start, self.scene_shape[1]), np.float32)
        for k in range(c_index.shape[1]):
            out += c_weight[None, :, k, None] * probs[:, c_index[:, k]]
            out_cover += c_weight[None, :, k] * cover[:, c_index[:, k]]
        covered = (out_cover > 0) & self.valid(start, stop - start)
        out /= np.where(out_cover > 0, out_cover, 1.0)[..., None]
        self.write(start, covered, out if covered.any() else None, 0)
