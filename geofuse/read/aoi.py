"""Areas of interest: restrict ``segment`` to the tiles a polygon touches.

An AOI is read from any OGR vector file (GeoJSON, GeoPackage, Shapefile, ...) with pyogrio,
reprojected to the scene CRS and turned into *pixel coordinates* of the scene (x = column,
y = row). A pixel belongs to the area when its centre lies inside it (GDAL's rasterisation
rule). :meth:`AreaOfInterest.select` keeps the grid tiles that contain such a pixel, so tiles
outside the area are never read; :meth:`AreaOfInterest.tile_mask` gives the per-tile mask that is
folded into the stitcher's validity weight, so pixels outside the area come out as nodata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyogrio.errors import DataLayerError, DataSourceError, FeatureError, GeometryError
from pyogrio.raw import read as read_vector
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely import affinity
from shapely.geometry import mapping, shape
from shapely.geometry.base import GEOMETRY_TYPES

from geofuse.errors import InputError, first_line
from geofuse.read.grid import Tile, TileGrid

log = logging.getLogger(__name__)

_EDGE = 0.49  # shrink windows so that only pixel centres count (a superset test, never fewer)


class OutsideAoiError(InputError):
    """The area of interest does not overlap the scene."""


def read_polygons(path: Path) -> tuple[shapely.Geometry, str | None]:
    """Union of the polygons of the first layer of a vector file, and its CRS.

    Raises:
        InputError: Missing/unreadable file, no features, or no polygons.

    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        meta, _, wkb, _ = read_vector(path, columns=[])
    except (DataSourceError, DataLayerError, FeatureError, GeometryError, OSError) as exc:
        raise InputError(f"{path}: not a readable vector file ({first_line(exc)})") from exc
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.array([], dtype=object)
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    if len(geoms) == 0:
        raise InputError(f"Expected at least one polygon in {path}. Received: no geometries")
    parts = shapely.get_parts(geoms)
    kinds = set(shapely.get_type_id(parts).tolist())
    polygon_parts = parts[shapely.get_type_id(parts) == 3]
    if len(polygon_parts) == 0:
        names = sorted({GEOMETRY_TYPES[k] for k in kinds})
        raise InputError(
            f"Expected polygons in {path}. Received: {', '.join(names)} geometries"
        )
    area = shapely.union_all(shapely.make_valid(polygon_parts))
    return area, meta.get("crs")


@dataclass(frozen=True)
class AreaOfInterest:
    """An area of interest in a scene's pixel coordinates.

    Attributes:
        path: The vector file it came from.
        pixels: The area in pixel coordinates (x = column, y = row), clipped to the scene.

    """

    path: Path
    pixels: shapely.Geometry

    @classmethod
    def load(
        cls,
        path: str | Path,
        scene: str | Path,
        crs: CRS | None,
        transform: Affine,
        width: int,
        height: int,
    ) -> AreaOfInterest:
        """Read ``path``, reproject it to the scene CRS and clip it to the scene.

        Raises:
            InputError: Unreadable file, no polygons, or a scene without a CRS.
            OutsideAoiError: When the area does not overlap the scene.

        """
        path = Path(path)
        area, aoi_crs = read_polygons(path)
        if crs is None:
            raise InputError(
                f"Expected a scene with a CRS to place the area of interest {path}. "
                f"Received: no CRS in {scene}"
            )
        if aoi_crs is None:
            log.warning("%s has no CRS; assuming the scene's (%s)", path, crs)
        else:
            try:
                source = CRS.from_user_input(aoi_crs)
            except CRSError as exc:
                raise InputError(f"{path}: unknown CRS ({aoi_crs})") from exc
            if source != crs:
                area = shape(transform_geom(source, crs, mapping(area)))
        inv = ~transform
        pixels = affinity.affine_transform(
            area, [inv.a, inv.b, inv.d, inv.e, inv.xoff, inv.yoff]
        )
        pixels = shapely.intersection(shapely.make_valid(pixels), shapely.box(0, 0, width, height))
        if pixels.is_empty or pixels.area == 0:
            raise OutsideAoiError(
                f"{path}: the area of interest does not overlap the scene {scene}"
            )
        shapely.prepare(pixels)
        return cls(path=path, pixels=pixels)

    def _window_box(self, col0: int, row0: int, cols: int, rows: int) -> shapely.Geometry:
        return shapely.box(col0 + _EDGE, row0 + _EDGE, col0 + cols - _EDGE, row0 + rows - _EDGE)

    def select(self, grid: TileGrid, blend: str) -> list[Tile]:
        """Tiles of ``grid`` that own a pixel of the area (in grid order).

        With ``hann`` blending every tile covering an area pixel contributes to it, so a tile is
        kept when its read window holds an area pixel; with ``center`` only its core counts.
        Within the area the output is then identical to a run over the whole scene.
        """
        boxes = []
        for tile in grid.tiles:
            window = grid.influence(tile, blend)
            boxes.append(
                self._window_box(
                    int(window.col_off), int(window.row_off), int(window.width),
                    int(window.height),
                )
            )
        hits = shapely.intersects(self.pixels, np.array(boxes, dtype=object))
        return [tile for tile, hit in zip(grid.tiles, hits, strict=True) if hit]

    def tile_mask(self, tile: Tile) -> np.ndarray:
        """``(rows, cols)`` bool of the tile: True where the pixel centre lies in the area."""
        return self.window_mask(tile.read)

    def window_mask(self, window: Window) -> np.ndarray:
        """``(rows, cols)`` bool for a scene window: True where the pixel centre is inside."""
        col0, row0 = int(window.col_off), int(window.row_off)
        rows, cols = int(window.height), int(window.width)
        box = self._window_box(col0, row0, cols, rows)
        if shapely.contains(self.pixels, box):
            return np.ones((rows, cols), dtype=bool)
        if not shapely.intersects(self.pixels, box):
            return np.zeros((rows, cols), dtype=bool)
        return geometry_mask(
            [self.pixels], out_shape=(rows, cols), transform=Affine.translation(col0, row0),
            invert=True,
        )
