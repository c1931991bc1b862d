"""Writing polygon layers through pyogrio (GDAL/OGR), atomically.

GeoPackage output is written in batches (each an append to the layer, one transaction per
batch), so memory does not grow with the number of polygons, and gets a default QGIS style in
the class colours (:mod:`geofuse.products.qgis_style`). GDAL's GeoJSON driver rewrites the
whole file on every append, so GeoJSON features are kept (as compact WKB) and written in one
call at the end. Either way the file is built under a hidden temporary name beside the
destination and renamed into place only when complete.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import numpy as np
from pyogrio.errors import DataSourceError, FeatureError, FieldError, GeometryError
from pyogrio.raw import write as write_vector
from rasterio.crs import CRS

from geofuse.config import VECTOR_FORMATS
from geofuse.errors import OutputError
from geofuse.products.qgis_style import Classes, add_class_style
from geofuse.write.failures import write_failure
from geofuse.write.outputs import publish, reserve_temp

DRIVERS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson")}
LAYER = "polygons"


def output_format(out: Path, fmt: str | None) -> str:
    """``gpkg`` or ``geojson``, from ``fmt`` or else from the file extension.

    Raises:
        OutputError: When the extension says neither and no format is given.

    """
    if fmt is not None:
        return fmt
    suffix = out.suffix.lower()
    if suffix == ".gpkg":
        return "gpkg"
    if suffix in (".geojson", ".json"):
        return "geojson"
    raise OutputError(
        f"Expected an output ending in .gpkg or .geojson (or `format` "
        f"{'/'.join(VECTOR_FORMATS)}). Received: {out}"
    )


def _crs_text(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


class FeatureWriter:
    """A polygon layer under construction; nothing exists under ``dest`` until :meth:`commit`.

    Fields: ``class_id`` (int32), ``class_name``, ``pixels`` (int64), ``area_m2`` (float64) and,
    ``with_prob``, ``mean_prob`` (float64). ``style``: the classes' names and colours, the
    GeoPackage layer's default QGIS style.
    """

    def __init__(self, dest: Path, fmt: str, crs: CRS | None, with_prob: bool,
                 style: Classes | None = None) -> None:
        self.dest = dest
        self.style = style
        self.driver, suffix = DRIVERS[fmt]
        self.crs = _crs_text(crs)
        self.names = ["class_id", "class_name", "pixels", "area_m2"]
        self.dtypes = [np.int32, object, np.int64, np.float64]
        if with_prob:
            self.names.append("mean_prob")
            self.dtypes.append(np.float64)
        self.tmp = reserve_temp(dest, ".part" + suffix)
        self.tmp.unlink()  # GDAL creates the file itself
        self.created = False
        self.streaming = self.driver == "GPKG"
        self._held: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []

    def write(self, wkb: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Add features: WKB geometries and one array per field."""
        if not len(wkb):
            return
        if self.streaming:
            self._write(wkb, columns)
        else:
            self._held.append((wkb, columns))

    def _write(self, wkb: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        try:
            with warnings.catch_warnings():  # a mask without a CRS is said once, by vectorize
                warnings.filterwarnings("ignore", message="'crs' was not provided")
                write_vector(
                    self.tmp, wkb, [columns[n] for n in self.names], self.names, crs=self.crs,
                    driver=self.driver, geometry_type="Polygon", layer=LAYER,
                    append=self.created, promote_to_multi=False,
                )
        except (DataSourceError, FeatureError, FieldError, GeometryError, OSError) as exc:
            raise write_failure(self.dest, exc, self.tmp, "cannot write polygons") from exc
        self.created = True

    def commit(self) -> Path:
        """Write what is held (GeoJSON), make sure the layer exists, and rename into place."""
        if self._held:
            wkb = np.concatenate([w for w, _ in self._held])
            columns = {n: np.concatenate([c[n] for _, c in self._held]) for n in self.names}
            self._held = []
            self._write(wkb, columns)
        if not self.created:
            empty = {n: np.array([], dtype=d) for n, d in zip(self.names, self.dtypes, strict=True)}
            self._write(np.array([], dtype=object), empty)
        if self.style and self.driver == "GPKG":
            try:
                add_class_style(self.tmp, LAYER, self.style)
            except sqlite3.Error as exc:
                raise OutputError(f"{self.dest}: cannot write its layer style ({exc})") from exc
        try:
            publish(self.tmp, self.dest)
        except OSError as exc:
            raise OutputError(f"{self.dest}: cannot finish output ({exc.strerror})") from exc
        return self.dest

    def abort(self) -> None:
        """Delete the temporary file (and any SQLite side files)."""
        for extra in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.tmp}{extra}").unlink(missing_ok=True)
