"""Vector labels: read with pyogrio, reprojected, buffered, rasterised window by window.

Anything OGR reads (GeoJSON, GeoPackage, Shapefile, ...) becomes class ids on a scene's grid:
features are reprojected to the scene CRS, lines and points are buffered, and polygons are
rasterised per window with ``rasterio.features`` (the class table: :mod:`.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geofuse.errors import InputError, first_line
from geofuse.model.spec import ClassInfo


@dataclass
class VectorLabels:
    """Vector labels rasterised on demand onto a scene's grid.

    Geometries are read with pyogrio, reprojected to the scene CRS, lines and points buffered
    by ``line_width / 2`` metres, and kept in a shapely STRtree so each window rasterises only
    what touches it. Later features win where polygons overlap. Pixels under no feature are
    class 0 (background).

    Args:
        path: Any OGR vector file (GeoJSON, GeoPackage, Shapefile, ...).
        crs: The scene CRS.
        transform: The scene transform.
        shape: Scene ``(height, width)``.
        classes: The class table (names match string values of ``class_field``).
        class_field: Attribute holding the class (an id or a class name); None = class 1.
        line_width: Buffer width in metres for lines and points (required when there are any).
        scene_name: For messages.

    """

    path: Path
    crs: Any
    transform: Any
    shape: tuple[int, int]
    classes: Sequence[ClassInfo]
    class_field: str | None = None
    line_width: float | None = None
    scene_name: str = "scene"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        geoms, values = read_vector_labels(
            self.path, self.crs, self.class_field, self.line_width, self.classes
        )
        from rasterio.transform import array_bounds
        from shapely import STRtree, box

        height, width = self.shape
        west, south, east, north = array_bounds(height, width, self.transform)
        scene_box = box(west, south, east, north)
        tree = STRtree(geoms) if geoms else None
        hits = tree.query(scene_box, predicate="intersects") if tree is not None else []
        if len(hits) == 0:
            raise InputError(
                f"{self.path}: no label geometry overlaps {self.scene_name} "
                f"(labels in {len(geoms)} features; scene bounds "
                f"{west:.1f}, {south:.1f}, {east:.1f}, {north:.1f})"
            )
        self.geoms = [geoms[i] for i in sorted(hits)]
        self.values = [values[i] for i in sorted(hits)]
        self.tree = STRtree(self.geoms)

    def read(self, window: Any) -> np.ndarray:
        """Class ids for a ``rasterio.windows.Window`` (inside the scene)."""
        from rasterio import features, windows
        from shapely import box

        h, w = int(window.height), int(window.width)
        transform = windows.transform(window, self.transform)
        west, south, east, north = windows.bounds(window, self.transform)
        idx = sorted(self.tree.query(box(west, south, east, north)))
        if not idx:
            return np.zeros((h, w), np.uint8)
        return features.rasterize(
            [(self.geoms[i], self.values[i]) for i in idx],
            out_shape=(h, w), transform=transform, fill=0, dtype="uint8",
        )


def _utm_for(lon: float, lat: float) -> str:
    zone = int((lon + 180) // 6) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def _class_of(value: Any, classes: Sequence[ClassInfo], field: str, path: Path) -> int:
    if value is None:
        raise InputError(f"{path}: a feature has no value in field {field!r}")
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        cls = int(value)
        if 0 <= cls < len(classes):
            return cls
        raise InputError(
            f"{path}: expected class ids 0..{len(classes) - 1} in field {field!r}. "
            f"Received: {cls}"
        )
    names = {c.name.lower(): c.id for c in classes}
    key = str(value).strip().lower()
    if key in names:
        return names[key]
    raise InputError(
        f"{path}: expected class names among {', '.join(c.name for c in classes)} in field "
        f"{field!r}. Received: {value!r}"
    )


def vector_class_names(path: str | Path, class_field: str | None) -> list[str]:
    """Distinct class names of a vector file (sorted), for building a class table."""
    path = Path(path)
    if class_field is None:
        return [path.stem]
    _, _, _, fields = _read_raw(path, [class_field])
    return sorted({str(v) for v in fields[0] if v is not None})


def _read_raw(path: Path, columns: list[str]) -> tuple[Any, Any, Any, Any]:
    import pyogrio
    from pyogrio.errors import DataSourceError, FieldError

    if not path.exists():
        raise InputError(f"{path}: no such labels file")
    try:
        meta, _, geometry, fields = pyogrio.raw.read(path, columns=columns)
    except FieldError as exc:
        raise InputError(f"{path}: no field {columns[0]!r} ({exc})") from exc
    except (DataSourceError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable vector file ({first_line(exc)})") from exc
    if columns and columns[0] not in list(meta["fields"]):
        raise InputError(
            f"{path}: expected a field {columns[0]!r}. "
            f"Received: fields {', '.join(meta['fields']) or 'none'}"
        )
    return meta, None, geometry, fields


def read_vector_labels(
    path: Path,
    crs: Any,
    class_field: str | None,
    line_width: float | None,
    classes: Sequence[ClassInfo],
) -> tuple[list[Any], list[int]]:
    """Read, reproject and buffer label geometries.

    Returns:
        ``(geometries, class_ids)`` in the scene CRS; features without geometry are dropped.

    """
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    meta, _, wkb, fields = _read_raw(path, [class_field] if class_field else [])
    src_crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else CRS.from_epsg(4326)
    dst_crs = crs if crs is not None else src_crs
    geoms_src = shapely.from_wkb(wkb)
    values = (
        [_class_of(v, classes, class_field, path) for v in fields[0]]
        if class_field else [min(1, len(classes) - 1)] * len(geoms_src)
    )
    geoms: list[Any] = []
    out_values: list[int] = []
    for geom, value in zip(geoms_src, values, strict=True):
        if geom is None or geom.is_empty:
            continue
        linear = geom.geom_type in ("LineString", "MultiLineString", "Point", "MultiPoint")
        if linear:
            if not line_width or line_width <= 0:
                raise InputError(
                    f"{path}: expected `line_width` (metres) to rasterise {geom.geom_type} "
                    "labels. Received: none"
                )
            geom = _buffer_metres(geom, line_width / 2, src_crs)
        if src_crs != dst_crs:
            geom = shapely.geometry.shape(transform_geom(src_crs, dst_crs, geom.__geo_interface__))
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        geoms.append(geom)
        out_values.append(value)
    return geoms, out_values


def _buffer_metres(geom: Any, distance: float, crs: Any) -> Any:
    """Buffer ``geom`` (in ``crs``) by ``distance`` metres, through UTM if ``crs`` is angular."""
    import shapely
    from rasterio.warp import transform_geom

    if crs.is_projected:
        factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
        return geom.buffer(distance / factor)
    centre = geom.centroid
    lonlat = shapely.geometry.shape(transform_geom(crs, "EPSG:4326", centre.__geo_interface__))
    utm = _utm_for(lonlat.x, lonlat.y)
    projected = shapely.geometry.shape(transform_geom(crs, utm, geom.__geo_interface__))
    return shapely.geometry.shape(
        transform_geom(utm, crs, projected.buffer(distance).__geo_interface__)
    )
