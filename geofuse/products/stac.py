"""A STAC Item per output: ``NAME.json`` beside the mask ``NAME.tif`` (``segment --stac``).

The item is made from the published files, so a finished output can be described at any time
(a resumed batch describes the scenes it skipped): footprint, projection, runtime and precision
come from the mask and its tags, the classes and colours from the model file, the time from the
scene. It holds:

- ``geometry`` and ``bbox`` in WGS84: the mask's footprint, its edges densified
  (``DENSIFY`` points each) before being reprojected, cut at the antimeridian;
- the time: the source STAC item's, or the scene's acquisition tags (GDAL's ``IMAGERY``
  domain ``ACQUISITIONDATETIME``, then acquisition or sensing tags of the default domain, then
  ``TIFFTAG_DATETIME``, taken as UTC when they name no zone); when none is known, ``datetime``
  is null and the range runs from ``geofuse.config.UNKNOWN_START`` to when the output was
  made (STAC then requires a range; this one says only "acquired before it was processed").
  ``geofuse:datetime_source`` says which;
- the projection extension (code, or WKT2 for a CRS without one; shape, transform, bbox);
- assets: the mask (``data``, a cloud-optimised GeoTIFF, with the classification extension's
  classes, values, names and colours), and the probabilities, polygons and quick-look that
  exist;
- links: ``derived_from`` the model's MLM item (:mod:`geofuse.model.stac`) and the scene's STAC
  item when it came from one; ``via`` the scene's raster;
- the processing extension: level L4, software (geofuse and the inference runtime), time,
  lineage; ``geofuse:precision``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_gcps
from rasterio.warp import transform_bounds, transform_geom

import geofuse
from geofuse.config import UNKNOWN_START, SegmentConfig, StacConfig
from geofuse.errors import OutputError
from geofuse.model.spec import ModelInfo
from geofuse.model.stac import classification_classes, mlm_name, model_item
from geofuse.read.rasterfile import open_raster
from geofuse.sources import Source, as_source, source_name
from geofuse.write.outputs import TAGS, write_json

if TYPE_CHECKING:
    import pystac

DENSIFY = 21  # points added along each footprint edge before reprojection
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
"""The processing extension; pystac has no class for it, so its fields are set as named."""
PROCESSING_LEVEL = "L4"  # model output derived from the scene's values
ACQUISITION_TAG = re.compile(r"(ACQUI|SENSING|IMAGING).*(DATE|TIME)|DATE.*ACQUI", re.I)
_TIFF_TIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}:\d{2}:\d{2})$")


def item_path(mask: Path) -> Path:
    """Where the item of a mask goes: ``NAME.json`` beside ``NAME.tif``."""
    return Path(mask).with_suffix(".json")


def model_item_path(item: Path) -> Path:
    """Where ``segment`` writes the model's MLM item: ``NAME.model.json`` beside the item."""
    return item.with_name(item.stem + ".model.json")


def parse_time(text: str) -> dt.datetime | None:
    """A time from a tag: RFC 3339 / ISO 8601, or TIFF's ``YYYY:MM:DD HH:MM:SS``; UTC if naive."""
    text = text.strip().replace("Z", "+00:00")
    tiff = _TIFF_TIME.match(text)
    if tiff:
        text = f"{tiff[1]}-{tiff[2]}-{tiff[3]}T{tiff[4]}"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def scene_time(tags: Mapping[str, Mapping[str, str]]) -> tuple[dt.datetime | None, str]:
    """The acquisition time in a scene's tags (by metadata domain) and the tag it came from.

    ``IMAGERY`` ``ACQUISITIONDATETIME`` (what GDAL's satellite metadata readers fill in), then
    a default-domain tag naming acquisition, sensing or imaging time, then ``TIFFTAG_DATETIME``
    (the TIFF's own date: for most products when the image was made). None: none parses.
    """
    imagery, default = tags.get("IMAGERY", {}), tags.get("", {})
    candidates = [(f"IMAGERY {k}", v) for k, v in imagery.items() if k == "ACQUISITIONDATETIME"]
    candidates += [(k, v) for k, v in sorted(default.items()) if ACQUISITION_TAG.search(k)]
    candidates += [(k, v) for k, v in default.items() if k == "TIFFTAG_DATETIME"]
    for name, value in candidates:
        when = parse_time(value)
        if when is not None:
            return when, name
    return None, "unknown"


def read_scene_tags(scene: Source) -> dict[str, dict[str, str]]:
    """The scene's default and ``IMAGERY`` metadata; empty when it cannot be opened."""
    try:
        with open_raster(scene) as ds:
            return {"": dict(ds.tags()), "IMAGERY": dict(ds.tags(ns="IMAGERY"))}
    except Exception:  # noqa: BLE001 - the time is then unknown, the item still made
        return {}


@dataclass(frozen=True)
class Footprint:
    """Where an output lies: WGS84 geometry and bbox, and its own grid for the projection."""

    geometry: dict[str, Any] | None
    bbox: list[float] | None
    crs: CRS | None
    transform: Affine | None
    shape: tuple[int, int]
    native_bbox: list[float] | None


def footprint(ds: Any) -> Footprint:
    """The footprint of an open raster (GCP-only rasters: an affine fit of their GCPs)."""
    crs, transform = ds.crs, ds.transform
    points, gcp_crs = ds.gcps
    if crs is None and points:
        crs, transform = gcp_crs, from_gcps(points)
    shape = (ds.height, ds.width)
    if crs is None:
        return Footprint(None, None, None, None, shape, None)
    steps = DENSIFY + 1
    edge = [(ds.width * i / steps, 0) for i in range(steps)]
    edge += [(ds.width, ds.height * i / steps) for i in range(steps)]
    edge += [(ds.width * (1 - i / steps), ds.height) for i in range(steps)]
    edge += [(0, ds.height * (1 - i / steps)) for i in range(steps)]
    ring = [transform * xy for xy in edge]
    ring.append(ring[0])
    xs, ys = [x for x, _ in ring], [y for _, y in ring]
    native = [min(xs), min(ys), max(xs), max(ys)]
    geometry = transform_geom(
        crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}, antimeridian_cutting=True
    )
    if transform.b == 0 and transform.d == 0:  # north-up: GDAL's bounds, antimeridian-aware
        bbox = list(transform_bounds(crs, "EPSG:4326", *native, densify_pts=DENSIFY))
    else:
        lons, lats = _coordinates(geometry)
        bbox = [min(lons), min(lats), max(lons), max(lats)]
    return Footprint(dict(geometry), bbox, crs, transform, shape, native)


def _coordinates(geometry: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    polygons = (
        [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    )
    points = [p for polygon in polygons for ring in polygon for p in ring]
    return [p[0] for p in points], [p[1] for p in points]


def _relative(path: Path, folder: Path) -> str:
    """``path`` as an href from ``folder``: ``./name`` beside it, else a relative path."""
    rel = os.path.relpath(Path(path).absolute(), Path(folder).absolute())
    return rel if rel.startswith("..") else f"./{Path(rel).as_posix()}"


def _href(source: Source) -> str:
    """A scene as a link target: an absolute local path, or a GDAL name as written."""
    source = as_source(source)
    return str(source.absolute()) if isinstance(source, Path) else source


def _time(text: str | None) -> dt.datetime | None:
    return None if not text else parse_time(text)


def item_time(
    stac: StacConfig, scene: Source, made: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None, dt.datetime | None, str]:
    """``(datetime, start, end, where from)`` of an output item.

    The source item's time, else the scene's tags, else unknown: no datetime, and the range
    ``UNKNOWN_START .. made``.
    """
    if stac.source_time is not None and any(stac.source_time):
        when, start, end = (_time(t) for t in stac.source_time)
        if when is not None or (start is not None and end is not None):
            return when, start, end, "source STAC item"
    when, source = scene_time(read_scene_tags(scene))
    if when is not None:
        return when, None, None, source
    return None, parse_time(UNKNOWN_START), made, "unknown: acquired before it was processed"


def _projection(item: pystac.Item, where: Footprint) -> None:
    from pystac.extensions.projection import ProjectionExtension

    if where.crs is None:
        return
    epsg = where.crs.to_epsg()
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(
        code=f"EPSG:{epsg}" if epsg else None,
        wkt2=None if epsg else where.crs.to_wkt(version="WKT2_2019"),
        shape=list(where.shape),
        transform=list(where.transform)[:6],
        bbox=where.native_bbox,
    )


def _processing(item: pystac.Item, tags: Mapping[str, str], made: dt.datetime) -> None:
    def tag(name: str) -> str:
        return tags.get(name, "?")

    runtime = tags.get(TAGS.RUNTIME, "")
    software = {"geofuse": tags.get(TAGS.VERSION, geofuse.__version__)}
    if runtime:
        name, _, version = runtime.partition(" ")
        software[name] = version or "unknown"
    lineage = (
        f"Semantic segmentation of {tag(TAGS.SOURCE)} by geofuse with the model "
        f"{tag(TAGS.MODEL)} (sha256 {tag(TAGS.MODEL_SHA256)}): tile {tag(TAGS.TILE)}, overlap "
        f"{tag(TAGS.OVERLAP)}, blend {tag(TAGS.BLEND)}, test-time augmentation {tag(TAGS.TTA)}, "
        f"runtime {runtime or '?'}, precision {tag(TAGS.PRECISION)}; input {tag(TAGS.INPUT)}"
    )
    item.stac_extensions.append(PROCESSING_SCHEMA)
    item.properties.update(
        {
            "processing:level": PROCESSING_LEVEL,
            "processing:software": software,
            "processing:version": software["geofuse"],
            "processing:datetime": made.isoformat().replace("+00:00", "Z"),
            "processing:lineage": lineage,
        }
    )
    if TAGS.PRECISION in tags:
        item.properties["geofuse:precision"] = tags[TAGS.PRECISION]
    item.common_metadata.created = made


def _add_assets(
    item: pystac.Item, folder: Path, info: ModelInfo, mask: Path, config: SegmentConfig
) -> None:
    import pystac
    from pystac.extensions.classification import ClassificationExtension

    asset = pystac.Asset(
        _relative(mask, folder),
        title="class mask",
        description="one class id per pixel (nodata 255); colours in its colour table",
        media_type=pystac.MediaType.COG,
        roles=["data"],
    )
    item.add_asset("mask", asset)
    ClassificationExtension.ext(asset, add_if_missing=True).classes = classification_classes(
        info.classes, nodata=True
    )
    products = (
        (
            "probabilities",
            config.probabilities,
            pystac.MediaType.COG,
            ["data"],
            "class probabilities",
            "band k holds class k-1; uint8: p x 254 (nodata 255), float32: p (nodata NaN)",
        ),
        (
            "polygons",
            config.vector,
            _vector_type(config.vector),
            ["data"],
            "class polygons",
            "fields class_id, class_name, pixels, area_m2, mean_prob",
        ),
        (
            "preview",
            config.preview,
            pystac.MediaType.PNG,
            ["overview", "visual"],
            "quick-look",
            "the scene with the mask overlaid, and a legend",
        ),
    )
    for key, path, media_type, roles, title, description in products:
        if path is None or not Path(path).is_file():
            continue
        extra = (
            {"bands": [{"name": c.name} for c in info.classes]} if key == "probabilities" else {}
        )
        item.add_asset(
            key,
            pystac.Asset(
                _relative(Path(path), folder),
                title=title,
                description=description,
                media_type=media_type,
                roles=roles,
                extra_fields=extra,
            ),
        )


def _vector_type(path: Path | None) -> str:
    import pystac

    if path is not None and Path(path).suffix.lower() in (".geojson", ".json"):
        return pystac.MediaType.GEOJSON
    return pystac.MediaType.GEOPACKAGE


def output_item(
    mask: str | Path,
    scene: Source,
    model: str | Path,
    config: SegmentConfig,
    model_href: str,
    dest: Path,
) -> pystac.Item:
    """The STAC Item of a finished output (see the module).

    Args:
        mask: The published class mask.
        scene: The scene it was made from (a path or a GDAL name).
        model: The model file that made it (classes and colours, its MLM item's name).
        config: The run's settings: the other outputs, and ``config.stac`` (id, source item).
        model_href: The href of the model's MLM item, as the item links to it.
        dest: Where the item will be written (asset hrefs are relative to its folder).

    """
    import pystac

    from geofuse.model.modelfile import read_info, resolve_model_path

    mask, stac = Path(mask), config.stac or StacConfig()
    model_path = resolve_model_path(model)
    info = read_info(model_path)
    with rasterio.open(mask) as ds:
        where, tags = footprint(ds), dict(ds.tags())
    made = dt.datetime.fromtimestamp(mask.stat().st_mtime, dt.timezone.utc)
    when, start, end, source = item_time(stac, scene, made)
    item = pystac.Item(
        stac.item_id or mask.stem,
        where.geometry,
        where.bbox,
        when,
        {"geofuse:datetime_source": source},
        start_datetime=start,
        end_datetime=end,
    )
    _projection(item, where)
    _processing(item, tags, made)
    _add_assets(item, dest.parent, info, mask, config)
    item.add_link(
        pystac.Link(
            "derived_from",
            model_href,
            pystac.MediaType.GEOJSON,
            f"the model ({model_path.name})",
            extra_fields={"mlm:name": mlm_name(model_path.stem)},
        )
    )
    if stac.source_item:
        item.add_link(
            pystac.Link(
                "derived_from", stac.source_item, pystac.MediaType.GEOJSON, "the scene's STAC item"
            )
        )
    item.add_link(
        pystac.Link(
            "via", _href(scene), pystac.MediaType.GEOTIFF, f"the scene ({source_name(scene)})"
        )
    )
    return item


def write_output_item(
    mask: str | Path, scene: Source, model: str | Path, config: SegmentConfig
) -> Path:
    """Write the item of a finished output as ``NAME.json`` beside it; return its path.

    Without ``config.stac.model_item`` the model's MLM item is written beside it too, as
    ``NAME.model.json``. Both are written atomically.

    Raises:
        OutputError: An item that cannot be written.

    """
    mask, stac = Path(mask), config.stac or StacConfig()
    dest = item_path(mask)
    model_dest = Path(stac.model_item) if stac.model_item else model_item_path(dest)
    try:
        if stac.model_item is None:
            write_json(model_dest, model_item(model).to_dict(include_self_link=False))
        item = output_item(mask, scene, model, config, _relative(model_dest, dest.parent), dest)
        write_json(dest, item.to_dict(include_self_link=False, transform_hrefs=False))
    except OSError as exc:
        raise OutputError(f"{dest}: cannot write the STAC item ({exc.strerror})") from exc
    return dest


def stac_destinations(config: SegmentConfig, out: Path) -> list[Path]:
    """The STAC files ``config.stac`` asks for beside ``out``, to check before any work.

    ``OUT.json``, and ``OUT.model.json`` unless the model's item is elsewhere; none without
    ``config.stac``.
    """
    if config.stac is None:
        return []
    item = item_path(out)
    return [item] + ([] if config.stac.model_item else [model_item_path(item)])


def describe_outputs(config: SegmentConfig, scene: Source, out: Path, model: Path) -> Path | None:
    """After the outputs are published: their item when ``config.stac`` asks, else None."""
    return None if config.stac is None else write_output_item(out, scene, model, config)
