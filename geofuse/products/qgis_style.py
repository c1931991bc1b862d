"""A GeoPackage layer's default QGIS style: the class colours, so polygons open coloured.

QGIS keeps the styles of a GeoPackage's layers in a ``layer_styles`` table (the columns QGIS
creates when it saves a style into a GeoPackage) and applies the one marked ``useAsDefault``
when the layer is opened. :func:`add_class_style` writes such a row: a categorized renderer on
``class_name`` with one fill per class in the mask's colours (QML, what QGIS reads), and the
same rules as an OGC SLD for other readers. The table is registered in ``gpkg_contents`` as an
attributes table, as GDAL and QGIS do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

STYLE_NAME = "geofuse classes"
FIELD = "class_name"
OUTLINE = (35, 35, 35)  # dark grey polygon edges
FILL_ALPHA = 255
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
    f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"""

Classes = Mapping[int, tuple[str, tuple[int, int, int]]]
"""Class id -> (name, (r, g, b))."""


def _rgba(rgb: tuple[int, int, int], alpha: int = FILL_ALPHA) -> str:
    return ",".join(str(int(v)) for v in (*rgb, alpha))


def class_style_qml(classes: Classes) -> str:
    """QML of a categorized fill renderer on ``class_name``, one category per class."""
    categories, symbols = [], []
    for k, (_, (name, rgb)) in enumerate(sorted(classes.items())):
        categories.append(
            f'<category symbol="{k}" value={quoteattr(name)} '
            f'label={quoteattr(name)} render="true" type="string"/>'
        )
        props = {
            "color": _rgba(rgb),
            "outline_color": _rgba(OUTLINE),
            "outline_style": "solid",
            "outline_width": "0.26",
            "outline_width_unit": "MM",
            "style": "solid",
        }
        options = "".join(
            f'<Option name="{key}" type="QString" value="{value}"/>' for key, value in props.items()
        )
        legacy = "".join(f'<prop k="{key}" v="{value}"/>' for key, value in props.items())
        symbols.append(
            f'<symbol name="{k}" type="fill" alpha="1" clip_to_extent="1" '
            f'force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" '
            f'pass="0"><Option type="Map">{options}</Option>{legacy}</layer>'
            f"</symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr="{FIELD}" symbollevels="0" '
        'enableorderby="0" forceraster="0" referencescale="-1">'
        f"<categories>{''.join(categories)}</categories>"
        f"<symbols>{''.join(symbols)}</symbols>"
        "</renderer-v2></qgis>\n"
    )


def class_style_sld(classes: Classes, layer: str) -> str:
    """The same style as an OGC SLD 1.1: one rule per class, filtered on ``class_name``."""
    rules = []
    for _, (name, rgb) in sorted(classes.items()):
        fill = "#{:02x}{:02x}{:02x}".format(*rgb)
        outline = "#{:02x}{:02x}{:02x}".format(*OUTLINE)
        rules.append(
            f"<se:Rule><se:Name>{escape(name)}</se:Name>"
            f"<ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>{FIELD}</ogc:PropertyName>"
            f"<ogc:Literal>{escape(name)}</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>"
            f'<se:PolygonSymbolizer><se:Fill><se:SvgParameter name="fill">{fill}'
            f'</se:SvgParameter></se:Fill><se:Stroke><se:SvgParameter name="stroke">'
            f'{outline}</se:SvgParameter><se:SvgParameter name="stroke-width">1'
            f"</se:SvgParameter></se:Stroke></se:PolygonSymbolizer></se:Rule>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor version="1.1.0" '
        'xmlns="http://www.opengis.net/sld" xmlns:ogc="http://www.opengis.net/ogc" '
        'xmlns:se="http://www.opengis.net/se" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<NamedLayer><se:Name>{escape(layer)}</se:Name><UserStyle>"
        f"<se:Name>{escape(STYLE_NAME)}</se:Name><se:FeatureTypeStyle>{''.join(rules)}"
        "</se:FeatureTypeStyle></UserStyle></NamedLayer></StyledLayerDescriptor>\n"
    )


def add_class_style(gpkg: Path, layer: str, classes: Classes) -> None:
    """Give ``layer`` of the GeoPackage ``gpkg`` its default QGIS style in the class colours.

    Raises:
        sqlite3.Error: The file is not a GeoPackage holding ``layer``.

    """
    connection = sqlite3.connect(gpkg)
    try:
        with connection:
            row = connection.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                (layer,),
            ).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"{gpkg}: no layer {layer!r}")
            connection.execute(CREATE_TABLE)
            connection.execute(
                "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, "
                "description, last_change) VALUES ('layer_styles', 'attributes', "
                "'layer_styles', 'QGIS layer styles', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
            )
            connection.execute(
                "UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,)
            )
            connection.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL)",
                (
                    layer,
                    row[0],
                    STYLE_NAME,
                    class_style_qml(classes),
                    class_style_sld(classes, layer),
                    "the classes in their mask colours",
                ),
            )
    finally:
        connection.close()
