"""GeoPackage polygons carry a default QGIS style: the class colours, read back with sqlite3."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from tests.helpers import write_geotiff

CLASSES = ("background", "building", "water")


def test_geopackage_polygons_open_in_the_class_colours(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), dtype="uint8")
    mask[5:15, 5:15], mask[20:30, 20:35] = 1, 2
    colours = {0: (210, 180, 140, 255), 1: (227, 26, 28, 255), 2: (31, 120, 180, 255)}
    path = write_geotiff(tmp_path / "mask.tif", mask, nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(GEOFUSE_CLASSES=",".join(CLASSES))
        ds.write_colormap(1, colours)
    out = tmp_path / "poly.gpkg"
    result = CliRunner().invoke(main, ["vectorize", str(path), str(out), "--quiet"])
    assert result.exit_code == 0, result.output

    with sqlite3.connect(out) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, "
            "styleQML, styleSLD FROM layer_styles"
        ).fetchall()
        registered = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert registered == ("attributes",)
    ((table, column, name, default, qml, sld),) = rows
    assert (table, column, default) == ("polygons", "geom", 1) and name
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_name"
    categories = {c.get("value"): c.get("symbol") for c in renderer.iter("category")}
    assert sorted(categories) == ["building", "water"]  # background is not vectorized
    fills = {
        s.get("name"): s.find("layer/Option/Option[@name='color']").get("value")
        for s in renderer.iter("symbol")
    }
    for value, rgba in ((1, colours[1]), (2, colours[2])):
        assert fills[categories[CLASSES[value]]] == ",".join(map(str, rgba))
    ET.fromstring(sld.split("\n", 1)[1])  # well-formed
    assert "#e31a1c" in sld and "#1f78b4" in sld
    # the polygons are still the file's first layer
    assert pyogrio.read_info(out, layer=0)["features"] == 2
    assert set(pyogrio.raw.read(out, layer=0)[3][1]) == {"building", "water"}
