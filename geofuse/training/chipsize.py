"""A training chip side chosen from the labels: ``--patch auto``, the default.

Half of the training chips are centred on a pixel of a class drawn uniformly (balanced
sampling), the pixel drawn by area, so a chip centred on the rarest class lies in one of its
objects, and the chip side sets how much of the chip that object fills: the share of the class
the network is trained on, and with it the balance of precision and recall it learns
(the training study, ``scripts/studies/training``: 48-px chips won on SpaceNet, whose
buildings are about 31 px a side, and on the Inria crop at half its resolution, 27 px, and lost
on Inria at full resolution, whose buildings, drawn by area, are about 52 px). ``auto`` sets
the side to :data:`~geofuse.training.config.SIDE_FACTOR` times the *area-weighted side* of the
rarest class's objects: the square root of each connected component's area, averaged with the
areas as weights (the size of the object a pixel drawn by area lies in), within
:data:`~geofuse.training.config.SIDE_BOUNDS`. Larger chips are not chosen: 80 px won on
Inria but lost on roads and forest (large regions, which ask for more), 128 px lost on forest
and Dubai. So ``auto`` gives 48 px to small objects (below about 37 px)
and the reference 64 px to everything else. The batch keeps the pixels of a step of the
reference chips (:data:`STEP_PIXELS`).

Pure NumPy and rasterio; no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry import shape

from geofuse.training.config import DEFAULT_BATCH, DEFAULT_PATCH, SIDE_BOUNDS, SIDE_FACTOR
from geofuse.training.datasets import LabelledRaster

SIDE_STEP = 16
"""``auto`` sides are multiples of this (and so of ``2**depth`` up to depth 4)."""
STEP_PIXELS = DEFAULT_BATCH * DEFAULT_PATCH**2
"""The pixels of a training step, :data:`~geofuse.training.config.DEFAULT_BATCH` chips of
:data:`~geofuse.training.config.DEFAULT_PATCH` px."""
SAMPLE_WINDOWS = 16
"""Windows of at most ``SAMPLE_SIDE`` px over which objects are measured."""
SAMPLE_SIDE = 1024


@dataclass(frozen=True)
class ChipSize:
    """The chip side and batch ``auto`` chose, and why.

    Attributes:
        patch: Chip side in pixels.
        batch_size: Chips per step.
        class_id: The rarest class, whose objects set the side.
        object_side: Their area-weighted side in pixels (None: no object found).
    """

    patch: int
    batch_size: int
    class_id: int
    object_side: float | None

    def describe(self, names: Sequence[str]) -> str:
        """One line for the user."""
        if self.object_side is None:
            return (f"chips of {self.patch} px, batches of {self.batch_size} (`patch` auto: "
                    f"no {names[self.class_id]} objects to measure)")
        return (f"chips of {self.patch} px, batches of {self.batch_size} (`patch` auto: "
                f"{names[self.class_id]}, the rarest class, in objects of "
                f"{self.object_side:.0f} px a side, weighted by area)")


def area_weighted_side(labels: np.ndarray, class_id: int) -> tuple[float, float]:
    """``(sum of area**1.5, sum of area)`` over the 4-connected objects of ``class_id``.

    Their ratio is the area-weighted side; sums let windows be pooled.
    """
    mask = (labels == class_id).astype(np.uint8)
    if not mask.any():
        return 0.0, 0.0
    areas = np.array([shape(g).area for g, _ in shapes(mask, mask=mask.astype(bool))],
                     np.float64)  # pixel coordinates: areas in pixels
    return float((areas**1.5).sum()), float(areas.sum())


def sample_windows(rasters: Sequence[LabelledRaster]) -> list[tuple[int, Window]]:
    """Where objects are measured: up to :data:`SAMPLE_WINDOWS` windows over the rasters.

    Each is a raster's top-left ``SAMPLE_SIDE`` px square (whole tiles where smaller); the
    rasters picked are spread evenly over the list.
    """
    picks = np.unique(np.linspace(0, len(rasters) - 1, min(len(rasters), SAMPLE_WINDOWS))
                      .round().astype(int))
    return [(int(i), Window(0, 0, min(rasters[i].width, SAMPLE_SIDE),
                            min(rasters[i].height, SAMPLE_SIDE))) for i in picks]


def choose_chip(rasters: Sequence[LabelledRaster], class_pixels: np.ndarray,
                depth: int) -> ChipSize:
    """The chip side and batch for ``auto`` (see the module docstring).

    Args:
        rasters: The labelled rasters.
        class_pixels: Labelled training pixels per class; the rarest present class is measured.
        depth: The network's depth (sides must be multiples of ``2**depth``).
    """
    present = np.flatnonzero(np.asarray(class_pixels) > 0)
    rarest = int(present[np.argmin(np.asarray(class_pixels)[present])])
    weighted = total = 0.0
    for i, window in sample_windows(rasters):
        a, b = area_weighted_side(rasters[i].read(window)[2], rarest)
        weighted, total = weighted + a, total + b
    side = weighted / total if total else None
    step = max(SIDE_STEP, 2**depth)
    low, high = (math.ceil(bound / step) * step for bound in SIDE_BOUNDS)
    patch = DEFAULT_PATCH if side is None else SIDE_FACTOR * side
    patch = int(min(high, max(low, step * round(patch / step))))
    return ChipSize(patch, max(2, round(STEP_PIXELS / patch**2)), rarest, side)
