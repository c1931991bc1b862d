"""What a model records about its training imagery, for the input contract at segment time.

:func:`input_facts` gives the :class:`~geofuse.model.spec.ModelInfo` fields that
:mod:`geofuse.read.contract` compares with a scene: each band's colour interpretation, the value
range
seen in training (the 0.5 and 99.5 percentiles of each band over a decimated read of every
training image) and the pixel size in metres (the median over the georeferenced images;
geographic CRSs are converted at each image's latitude).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geofuse.read.contract import PERCENTILES, pixel_size_m
from geofuse.read.reader import SceneReader

SAMPLE_PIXELS = 1 << 22
"""Pixels sampled over all training images together for the value range."""


def input_facts(rasters: Sequence[Any]) -> dict[str, Any]:
    """``color_interp``, ``value_range`` and ``pixel_size`` of the training images.

    Args:
        rasters: The training images (:class:`~geofuse.training.datasets.LabelledRaster`:
            ``image``, ``bands``, ``crs``, ``transform``, ``width``, ``height``).

    """
    per_image = max(4096, SAMPLE_PIXELS // max(1, len(rasters)))
    samples, sizes, colours = [], [], None
    for raster in rasters:
        with SceneReader(raster.image, raster.bands) as reader:
            samples.append(reader.sample(per_image))
            if colours is None:
                colours = tuple(reader.dataset.colorinterp[b - 1].name for b in reader.bands)
        size = pixel_size_m(raster.crs, raster.transform, raster.width, raster.height)
        if size is not None:
            sizes.append(size)
    values = np.concatenate(samples, axis=1)
    value_range = None
    if values.shape[1]:
        lows, highs = np.percentile(values, PERCENTILES, axis=1)
        value_range = tuple((round(float(lo), 6), round(float(hi), 6))
                            for lo, hi in zip(lows, highs, strict=True))
    return {"color_interp": colours, "value_range": value_range,
            "pixel_size": round(float(np.median(sizes)), 6) if sizes else None}
