"""Scenes from STAC: the assets of the items of an ItemCollection, catalogue or collection file.

``geofuse batch ITEMS.json OUT_DIR --asset KEY`` segments asset ``KEY`` of every item of a saved
search result (a GeoJSON FeatureCollection of items), of a single item, or of a static catalogue
or collection (every item under it). Hrefs are resolved as STAC says: relative to the item's own
location where it has one, else to the file that holds it; remote hrefs (``https://``,
``s3://``) reach GDAL unchanged (:mod:`geofuse.sources`). Each item's id names its outputs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from geofuse.errors import InputError, first_line
from geofuse.sources import Source, as_source, is_gdal_name

STAC_SUFFIXES = (".json", ".geojson")
STAC_TYPES = ("FeatureCollection", "Feature", "Catalog", "Collection")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StacScene:
    """One item's asset to segment.

    Attributes:
        item_id: The item's id (it names the outputs and their STAC item).
        scene: The asset: a local path, or a GDAL name kept as written.
        item_href: Where the item is (its own file or self link, else the file holding it).
        time: The item's ``(datetime, start_datetime, end_datetime)`` as written, None each.

    """

    item_id: str
    scene: Source
    item_href: str
    time: tuple[str | None, str | None, str | None]


def is_stac_file(path: Path) -> bool:
    """Whether a batch input file is STAC (a JSON file), not a list of scenes."""
    return Path(path).suffix.lower() in STAC_SUFFIXES


def output_name(item_id: str) -> str:
    """A file name from an item id: characters other than letters, digits, ``._-`` become ``_``."""
    return _UNSAFE.sub("_", item_id).strip("._") or "item"


def _source(href: str) -> Source:
    """An asset href as a scene: ``file://`` URIs become paths; other URIs stay as written."""
    if href.startswith("file://"):
        return Path(unquote(urlsplit(href).path))
    return as_source(href)


def _resolve(href: str, base: str) -> str:
    """``href`` relative to the location ``base`` (a local path or a URL), as STAC resolves."""
    from pystac.utils import make_absolute_href

    if is_gdal_name(href) or os.path.isabs(href):
        return href
    return make_absolute_href(href, base)


def _items(path: Path, data: dict[str, Any]) -> list[tuple[Any, str]]:
    """The items of a STAC file with the location each item's relative hrefs resolve against."""
    import pystac

    kind = data.get("type")
    if kind == "FeatureCollection":
        collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
        return [(item, item.get_self_href() or str(path.absolute())) for item in collection]
    if kind == "Feature":
        item = pystac.Item.from_file(str(path))
        return [(item, item.get_self_href() or str(path.absolute()))]
    catalog = pystac.read_file(str(path))
    if not isinstance(catalog, pystac.Catalog):
        raise InputError(f"{path}: expected a STAC catalogue or collection")
    return [
        (item, item.get_self_href() or str(path.absolute()))
        for item in catalog.get_items(recursive=True)
    ]


def read_stac_scenes(path: str | Path, asset: str | None) -> list[StacScene]:
    """The assets ``asset`` of the items of a STAC file (ItemCollection, item, catalogue).

    Raises:
        InputError: Not a STAC file, no items, no asset key, or an item without that asset
            (the message lists the keys it has).

    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable STAC file ({first_line(exc)})") from exc
    if not isinstance(data, dict) or data.get("type") not in STAC_TYPES:
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"{path}: expected a STAC ItemCollection, item, catalogue or "
            f"collection. Received: type {kind!r}"
        )
    try:
        items = _items(path, data)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pystac raises many types for bad STAC
        raise InputError(f"{path}: not valid STAC ({first_line(exc)})") from exc
    if not items:
        raise InputError(f"{path}: expected STAC items. Received: none")
    if asset is None:
        raise InputError(
            f"{path}: expected the key of the asset to segment. Received: none "
            f"(the first item's assets: {', '.join(items[0][0].assets) or 'none'})"
        )
    scenes = []
    for item, base in items:
        if asset not in item.assets:
            raise InputError(
                f"{path}: expected an asset {asset!r} in item {item.id!r}. "
                f"Received: {', '.join(item.assets) or 'no assets'}"
            )
        props = item.properties
        time = (props.get("datetime"), props.get("start_datetime"), props.get("end_datetime"))
        scenes.append(
            StacScene(item.id, _source(_resolve(item.assets[asset].href, base)), base, time)
        )
    return scenes
