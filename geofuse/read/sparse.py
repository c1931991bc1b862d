"""Which blocks a GeoTIFF leaves out, from its block index alone (nothing is decoded).

A GeoTIFF written with GDAL's ``SPARSE_OK`` omits the blocks that are all nodata (or all 0);
GDAL reads them back as that value without decoding anything. :class:`MissingBlocks` asks
GDAL's block index (``block_size``) whether every block under a window is left out, so that
tiles in such a place are never read (:meth:`geofuse.read.reader.SceneReader.known_empty`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rasterio.errors import RasterBlockError, RasterioError
from rasterio.windows import Window

SPARSE_DRIVERS = ("GTiff", "COG")


class MissingBlocks:
    """The left-out blocks of some bands of a GeoTIFF (answers are cached).

    Args:
        dataset: An open rasterio dataset.
        bands: 1-based bands to look at (empty: nothing is ever known missing).

    """

    def __init__(self, dataset: Any, bands: Sequence[int]) -> None:
        self.dataset = dataset
        self.bands = tuple(bands) if dataset.driver in SPARSE_DRIVERS else ()
        self._missing: dict[tuple[int, int, int], bool] = {}

    def covers(self, window: Window) -> bool:
        """True when, for one of the bands, every block under ``window`` is left out."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + max(1, int(window.height)), c0 + max(1, int(window.width))
        for band in self.bands:
            bh, bw = self.dataset.block_shapes[band - 1]
            if all(self._missing_block(band, i, j)
                   for i in range(r0 // bh, (r1 - 1) // bh + 1)
                   for j in range(c0 // bw, (c1 - 1) // bw + 1)):
                return True
        return False

    def _missing_block(self, band: int, i: int, j: int) -> bool:
        key = (band, i, j)
        if key not in self._missing:
            try:
                self._missing[key] = self.dataset.block_size(band, i, j) == 0
            except RasterBlockError:  # GDAL has no offset for it: left out
                self._missing[key] = True
            except RasterioError:
                self._missing[key] = False
        return self._missing[key]
