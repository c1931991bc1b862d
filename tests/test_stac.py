"""STAC in and out: items of outputs, batch collections, STAC input, MLM model items.

Items are checked as a STAC reader sees them (pystac reads them back) and against the JSON
schemas that ship with pystac (core 1.1.0, projection 2.0.0, classification 2.0.0, MLM 1.4.0,
file 2.1.0), offline. The processing extension's schema ships with no package: items declaring
it are validated against the others, and the MLM schema's one reference into it (the shape of a
processing expression, a field geofuse does not write) is given a stand-in that says only that
such an expression is an object with ``format`` and ``expression``.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely.geometry
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from geofuse.cli import main
from geofuse.config import StacConfig
from geofuse.model.modelfile import read_info
from geofuse.products.stac import item_time, scene_time
from geofuse.read.stac import read_stac_scenes
from tests.conftest import ROOT, write_geotiff

TILING = ["--tile", "32", "--overlap", "8", "--batch-size", "2"]
PROCESSING_V110 = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
CLASSES = ("background", "building", "water")


# -- offline validation ------------------------------------------------------------------------
def validator() -> Any:
    """pystac's JSON-schema validator with every schema pystac ships, and no network."""
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    check = JsonSchemaSTACValidator()
    for folder in (importlib.resources.files("pystac.extensions") / "json-schema").iterdir():
        for file in folder.iterdir():
            schema = json.loads(file.read_text())
            check.schema_cache[schema["$id"].rstrip("#")] = schema
    check.schema_cache[PROCESSING_V110] = {  # stand-in: see the module docstring
        "$schema": "http://json-schema.org/draft-07/schema#", "$id": PROCESSING_V110,
        "definitions": {"fields": {"properties": {"processing:expression": {
            "type": "object", "required": ["format", "expression"]}}}}}
    return check


def validate(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Validate core and extensions; return (extension schemas checked, those not available)."""
    check = validator()
    kind = (pystac.STACObjectType.ITEM if data["type"] == "Feature"
            else pystac.STACObjectType(data["type"]))
    check.validate_core(data, kind, data["stac_version"])
    checked, missing = [], []
    for uri in data.get("stac_extensions", []):
        if uri not in check.schema_cache:
            missing.append(uri)
            continue
        check.validate_extension(data, kind, data["stac_version"], uri)
        checked.append(uri)
    return checked, missing


def extension(name: str, data: dict[str, Any]) -> str:
    return next(uri for uri in data["stac_extensions"] if f"/{name}/" in uri)


# -- helpers -------------------------------------------------------------------------------------
def rgb(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (3, height // 8 + 1, width // 8 + 1))
    image = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
    return (image + rng.integers(0, 40, image.shape)).clip(0, 255).astype("uint8")


def tagged(path: Path, seed: int = 1, **tags: str) -> Path:
    write_geotiff(path, rgb(seed, 48, 64))
    if tags:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(**{k: v for k, v in tags.items() if k != "IMAGERY"})
            if "IMAGERY" in tags:
                ds.update_tags(ns="IMAGERY", ACQUISITIONDATETIME=tags["IMAGERY"])
    return path


def footprint_bbox(raster: Path) -> list[float]:
    """The raster's footprint in WGS84, by GDAL's own bounds transformation."""
    with rasterio.open(raster) as ds:
        return list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))


def classes_of(model: Path) -> list[tuple[int, str, str]]:
    return [(c.id, c.name, c.color.lstrip("#").upper()) for c in read_info(model).classes]


@pytest.fixture(scope="module")
def model(tiny_models) -> Path:
    return tiny_models(class_names=CLASSES)


# -- an item per output --------------------------------------------------------------------------
def test_segment_stac_item_describes_each_output(tmp_path: Path, model: Path) -> None:
    scene = tagged(tmp_path / "scene.tif", TIFFTAG_DATETIME="2021:06:15 10:30:00")
    out = tmp_path / "out" / "mask.tif"
    runner = CliRunner()
    args = ["segment", str(scene), str(out), "--model", str(model), *TILING, "--stac",
            "--probabilities", str(out.with_name("mask.probs.tif")),
            "--vector", str(out.with_name("mask.gpkg")), "--preview",
            str(out.with_name("mask.png"))]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"{out.with_suffix('.json')}: STAC item" in result.output

    item = pystac.Item.from_file(str(out.with_suffix(".json")))
    data = item.to_dict(include_self_link=False)
    assert item.id == "mask"
    # the footprint in WGS84: bbox as GDAL transforms the mask's bounds; the geometry agrees
    assert np.allclose(item.bbox, footprint_bbox(out), rtol=0, atol=1e-9)
    assert np.allclose(shapely.geometry.shape(item.geometry).bounds, item.bbox, rtol=0,
                       atol=1e-9)
    # the time from the scene's tags (TIFF DateTime has no zone: UTC)
    assert item.datetime == dt.datetime(2021, 6, 15, 10, 30, tzinfo=dt.timezone.utc)
    assert item.properties["geofuse:datetime_source"] == "TIFFTAG_DATETIME"
    # projection: the mask's own grid
    with rasterio.open(out) as ds:
        assert item.properties["proj:code"] == "EPSG:32633"
        assert item.properties["proj:shape"] == [ds.height, ds.width]
        assert item.properties["proj:transform"] == list(ds.transform)[:6]
        tags = ds.tags()
    # assets: each output, with its media type; the mask's classes are the model's
    hrefs = {key: Path(asset.get_absolute_href()) for key, asset in item.assets.items()}
    assert hrefs == {"mask": out, "probabilities": out.with_name("mask.probs.tif"),
                     "polygons": out.with_name("mask.gpkg"), "preview": out.with_name("mask.png")}
    assert item.assets["mask"].media_type == pystac.MediaType.COG
    assert item.assets["mask"].roles == ["data"]
    assert item.assets["polygons"].media_type == "application/geopackage+sqlite3"
    assert item.assets["preview"].media_type == "image/png"
    classes = item.assets["mask"].extra_fields["classification:classes"]
    assert [(c["value"], c["title"], c["color_hint"]) for c in classes if not c.get("nodata")] \
        == classes_of(model)
    assert [c["value"] for c in classes if c.get("nodata")] == [255]
    # links: the model's MLM item (written beside it), the scene
    (model_link,) = item.get_links("derived_from")
    model_item = pystac.Item.from_file(model_link.get_absolute_href())
    assert Path(model_link.get_absolute_href()) == out.with_name("mask.model.json")
    assert model_item.properties["mlm:name"] == model_link.extra_fields["mlm:name"]
    assert Path(model_item.assets["model"].href) == model.absolute()
    (via,) = item.get_links("via")
    assert via.href == str(scene.absolute())
    # processing: level, software with the runtime that ran, precision
    runtime, version = tags["GEOFUSE_RUNTIME"].split(" ", 1)
    assert item.properties["processing:level"] == "L4"
    assert item.properties["processing:software"] == {"geofuse": tags["GEOFUSE_VERSION"],
                                                      runtime: version}
    assert item.properties["geofuse:precision"] == tags["GEOFUSE_PRECISION"]
    # valid against the schemas pystac ships; the processing schema ships with none
    checked, missing = validate(data)
    assert checked == [extension("projection", data), extension("classification", data)]
    assert missing == [extension("processing", data)]
    assert validate(model_item.to_dict(include_self_link=False))[1] == []

    out.unlink()  # a new mask, but its item would replace one: refused before any work
    again = runner.invoke(main, args[:-6])
    assert again.exit_code == 1
    assert f"{out.with_suffix('.json')}: already exists" in again.output
    assert not out.exists()


def test_an_output_without_georeferencing_gets_an_item_without_footprint(
        tmp_path: Path, model: Path) -> None:
    from affine import Affine

    scene = write_geotiff(tmp_path / "plain.tif", rgb(4, 40, 40), crs=None,
                          transform=Affine.identity())
    out = tmp_path / "plain-mask.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model", str(model),
                                       *TILING, "--stac", "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["geometry"] is None and "bbox" not in data
    assert not any(key.startswith("proj:") for key in data["properties"])
    assert data["properties"]["datetime"] is None  # and the range up to when it was made
    made = dt.datetime.fromtimestamp(out.stat().st_mtime, dt.timezone.utc)
    assert pystac.Item.from_dict(data).common_metadata.end_datetime == made
    assert validate(data)[1] == [extension("processing", data)]


def test_item_time_from_tags_or_an_honest_range(tmp_path: Path) -> None:
    made = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    both = tagged(tmp_path / "both.tif", TIFFTAG_DATETIME="2020:01:01 00:00:00",
                  IMAGERY="2019-05-06 07:08:09")
    assert item_time(StacConfig(), both, made) == (
        dt.datetime(2019, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc), None, None,
        "IMAGERY ACQUISITIONDATETIME")
    sensing = tagged(tmp_path / "s.tif", SENSING_TIME="2018-02-03T04:05:06+02:00",
                     TIFFTAG_DATETIME="not a date")
    assert item_time(StacConfig(), sensing, made)[0] == dt.datetime(
        2018, 2, 3, 2, 5, 6, tzinfo=dt.timezone.utc)
    # nothing known: no datetime, the range from the epoch to when the output was made
    bare = tagged(tmp_path / "bare.tif", TIFFTAG_DATETIME="garbled")
    assert scene_time({"": {"TIFFTAG_DATETIME": "garbled"}}) == (None, "unknown")
    when, start, end, source = item_time(StacConfig(), bare, made)
    assert (when, start, end) == (None, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), made)
    assert source.startswith("unknown")
    # a source STAC item's time wins over the scene's tags
    stac = StacConfig(source_time=(None, "2017-01-01T00:00:00Z", "2017-01-31T00:00:00Z"))
    assert item_time(stac, both, made)[1:] == (
        dt.datetime(2017, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2017, 1, 31, tzinfo=dt.timezone.utc), "source STAC item")


# -- the model as an MLM item --------------------------------------------------------------------
def test_info_stac_prints_the_model_mlm_item_without_tensorflow(model: Path) -> None:
    code = ("import sys, json; from click.testing import CliRunner; from geofuse.cli import main;"
            f"r = CliRunner().invoke(main, ['info', {str(model)!r}, '--stac']);"
            "print(json.dumps({'code': r.exit_code, 'out': r.output,"
            " 'tf': 'tensorflow' in sys.modules or 'keras' in sys.modules}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["code"] == 0 and answer["tf"] is False
    data = json.loads(answer["out"])
    assert validate(data) == ([extension("mlm", data), extension("file", data)], [])

    info = read_info(model)
    props = data["properties"]
    for field in ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output",
                  "mlm:framework", "mlm:accelerator", "mlm:total_parameters"):
        assert field in props, field
    assert props["mlm:tasks"] == ["semantic-segmentation"]
    assert props["mlm:framework"] == "Keras"
    (inp,) = props["mlm:input"]
    assert inp["bands"] == list(info.band_names)
    assert inp["input"] == {"shape": [-1, -1, -1, info.spec.bands],
                            "dim_order": ["batch", "height", "width", "channel"],
                            "data_type": "float32"}
    # the value scaling is the model's normalisation, on raw values
    raw = np.array([0.0, 17.0, 255.0])
    norm = info.normalization
    for b, scaling in enumerate(inp["value_scaling"]):
        assert scaling["type"] == "z-score"
        expected = (raw * norm.scale + norm.offset - norm.mean[b]) / norm.std[b]
        assert np.allclose((raw - scaling["mean"]) / scaling["stddev"], expected)
    (out,) = props["mlm:output"]
    assert out["result"]["shape"] == [-1, -1, -1, info.spec.classes]
    assert [(c["value"], c["name"], c["color_hint"]) for c in out["classification:classes"]] \
        == classes_of(model)
    asset = data["assets"]["model"]
    assert "mlm:model" in asset["roles"] and asset["mlm:artifact_type"]
    assert Path(asset["href"]) == model.absolute()
    import keras  # the parameter count read from the weights matches Keras' own

    assert props["mlm:total_parameters"] == keras.saving.load_model(
        model, compile=False).count_params()


def test_info_stac_refuses_a_scene(tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "scene.tif", rgb(1, 16, 16))
    result = CliRunner().invoke(main, ["info", str(scene), "--stac"])
    assert result.exit_code == 1
    assert f"{scene}: not a .keras model file" in result.output


def test_export_writes_an_mlm_item_of_its_files(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "served"
    result = CliRunner().invoke(main, ["export", str(model), str(out), "--format", "openvino"])
    assert result.exit_code == 0, result.output
    item = pystac.Item.from_file(str(out / "stac-item.json"))
    assert item.assets["model"].href == "./model.xml"
    assert Path(item.assets["model"].get_absolute_href()) == out / "model.xml"
    assert item.assets["model"].extra_fields["mlm:artifact_type"] == "openvino.save_model"
    assert Path(item.assets["weights"].get_absolute_href()).is_file()
    assert item.properties["mlm:framework"] == "OpenVINO"
    exported = json.loads((out / "geofuse.json").read_text())
    assert item.properties["mlm:framework_version"] == exported["versions"]["openvino"]
    data = item.to_dict(include_self_link=False)
    assert validate(data)[1] == []


# -- batches: a collection of the scenes done; STAC input ----------------------------------------
@pytest.mark.slow
def test_batch_collection_holds_the_good_scenes_and_a_resume_updates_it(
        tmp_path: Path, model: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    tagged(src / "a.tif", 1)
    tagged(src / "sub" / "b.tif", 2, TIFFTAG_DATETIME="2022:03:04 05:06:07")
    (src / "garbage.tif").write_bytes(b"II*\x00" + bytes(500))
    args = ["batch", str(src), str(out), "--model", str(model), *TILING, "--recursive",
            "--stac", "--vector", "--workers", "1", "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output  # the garbage scene failed
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    items = {item.id: item for item in collection.get_items()}
    assert sorted(items) == ["a", "sub-b"]
    assert Path(items["sub-b"].get_self_href()) == out / "sub" / "b.json"
    assert Path(items["sub-b"].assets["mask"].get_absolute_href()) == out / "sub" / "b.tif"
    assert items["sub-b"].datetime == dt.datetime(2022, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
    for item in items.values():
        (link,) = item.get_links("derived_from")
        assert Path(link.get_absolute_href()) == out / "model.json"
        assert item.collection_id == collection.id
        assert validate(item.to_dict(include_self_link=False))[1] == [
            extension("processing", item.to_dict())]
    model_item = pystac.Item.from_file(str(out / "model.json"))
    assert validate(model_item.to_dict(include_self_link=False))[1] == []
    bbox = collection.extent.spatial.bboxes[0]
    boxes = np.array([footprint_bbox(out / "a.tif"), footprint_bbox(out / "sub" / "b.tif")])
    assert np.allclose(bbox, [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)], rtol=0, atol=1e-9)
    assert validate(collection.to_dict(include_self_link=False)) == ([], [])
    report = json.loads((out / "geofuse-report.json").read_text())
    assert report["stac_collection"] == str((out / "collection.json").absolute())

    # a resume: the garbage scene replaced by a good one, one item lost
    (src / "garbage.tif").unlink()
    tagged(src / "c.tif", 3)
    (out / "a.json").unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    report = json.loads((out / "geofuse-report.json").read_text())
    assert {r["scene"]: r["status"] for r in report["scenes"]} == {
        "a.tif": "skipped", "c.tif": "done", "sub/b.tif": "skipped"}
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    assert sorted(item.id for item in collection.get_items()) == ["a", "c", "sub-b"]
    assert (out / "a.json").is_file()  # the skipped scene got its item back from its files


@pytest.mark.slow
def test_batch_segments_an_asset_of_each_item_of_an_item_collection(
        tmp_path: Path, model: Path) -> None:
    scenes = tmp_path / "search" / "scenes"
    scenes.mkdir(parents=True)
    tagged(scenes / "one.tif", 1)
    tagged(scenes / "two.tif", 2)
    write_geotiff(scenes / "thumb.tif", rgb(3, 8, 8))
    box = [15.0, 46.2, 15.01, 46.27]

    def item(item_id: str, href: str, when: str) -> dict[str, Any]:
        made = pystac.Item(item_id, shapely.geometry.mapping(shapely.geometry.box(*box)), box,
                           dt.datetime.fromisoformat(when), {})
        made.add_asset("visual", pystac.Asset(href, media_type=pystac.MediaType.GEOTIFF))
        made.add_asset("thumbnail", pystac.Asset("scenes/thumb.tif"))
        return made.to_dict(include_self_link=False)

    items = tmp_path / "search" / "results.json"  # a saved search: relative hrefs
    items.write_text(json.dumps({"type": "FeatureCollection", "features": [
        item("S2A_20240501.T33", "scenes/one.tif", "2024-05-01T10:00:00+00:00"),
        item("S2B_20240611", "./scenes/two.tif", "2024-06-11T10:00:00+00:00")]}))
    out = tmp_path / "out"
    runner = CliRunner()
    missing = runner.invoke(main, ["batch", str(items), str(out), "--model", str(model),
                                   "--asset", "B04", "--quiet"])
    assert missing.exit_code == 1
    assert "expected an asset 'B04' in item 'S2A_20240501.T33'" in missing.output
    assert "Received: visual, thumbnail" in missing.output

    result = runner.invoke(main, ["batch", str(items), str(out), "--model", str(model), *TILING,
                                  "--asset", "visual", "--stac", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "geofuse-report.json").read_text())
    assert {r["scene"]: r["output"] for r in report["scenes"]} == {
        "S2A_20240501.T33": "S2A_20240501.T33.tif", "S2B_20240611": "S2B_20240611.tif"}
    for name, scene in (("S2A_20240501.T33", "one.tif"), ("S2B_20240611", "two.tif")):
        with rasterio.open(out / f"{name}.tif") as mask, rasterio.open(scenes / scene) as src:
            assert (mask.width, mask.height, mask.transform) == (src.width, src.height,
                                                                  src.transform)
        made = pystac.Item.from_file(str(out / f"{name}.json"))
        assert made.id == name
        assert made.properties["geofuse:datetime_source"] == "source STAC item"
        links = {Path(link.get_absolute_href()) for link in made.get_links("derived_from")}
        assert links == {out / "model.json", items}
        (via,) = made.get_links("via")
        assert via.href == str(scenes / scene)
    times = {i.id: i.datetime for i in pystac.Collection.from_file(
        str(out / "collection.json")).get_items()}
    assert times["S2B_20240611"] == dt.datetime(2024, 6, 11, 10, tzinfo=dt.timezone.utc)


def test_static_catalogue_items_resolve_against_their_own_files(tmp_path: Path) -> None:
    catalog = pystac.Catalog("cat", "scenes")
    for n in range(2):
        made = pystac.Item(f"scene-{n}", None, None, dt.datetime(2024, 1, n + 1,
                                                                 tzinfo=dt.timezone.utc), {})
        made.add_asset("data", pystac.Asset(f"./scene-{n}.tif"))
        made.add_asset("remote", pystac.Asset(f"https://example.com/{n}.tif"))
        catalog.add_item(made)
    catalog.normalize_hrefs(str(tmp_path / "stac"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    found = read_stac_scenes(tmp_path / "stac" / "catalog.json", "data")
    assert [(s.item_id, s.scene, Path(s.item_href)) for s in found] == [
        (f"scene-{n}", tmp_path / "stac" / f"scene-{n}" / f"scene-{n}.tif",
         tmp_path / "stac" / f"scene-{n}" / f"scene-{n}.json") for n in range(2)]
    remote = read_stac_scenes(tmp_path / "stac" / "catalog.json", "remote")
    assert [s.scene for s in remote] == ["https://example.com/0.tif", "https://example.com/1.tif"]
    assert found[1].time == ("2024-01-02T00:00:00Z", None, None)


# -- QGIS style of the polygons ------------------------------------------------------------------
def test_geopackage_polygons_open_in_the_class_colours(tmp_path: Path) -> None:
    import sqlite3

    import pyogrio

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
        rows = db.execute("SELECT f_table_name, f_geometry_column, styleName, useAsDefault, "
                          "styleQML, styleSLD FROM layer_styles").fetchall()
        registered = db.execute("SELECT data_type FROM gpkg_contents WHERE table_name = "
                                "'layer_styles'").fetchone()
    assert registered == ("attributes",)
    ((table, column, name, default, qml, sld),) = rows
    assert (table, column, default) == ("polygons", "geom", 1) and name
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_name"
    categories = {c.get("value"): c.get("symbol") for c in renderer.iter("category")}
    assert sorted(categories) == ["building", "water"]  # background is not vectorized
    fills = {s.get("name"): s.find("layer/Option/Option[@name='color']").get("value")
             for s in renderer.iter("symbol")}
    for value, rgba in ((1, colours[1]), (2, colours[2])):
        assert fills[categories[CLASSES[value]]] == ",".join(map(str, rgba))
    ET.fromstring(sld.split("\n", 1)[1])  # well-formed
    assert "#e31a1c" in sld and "#1f78b4" in sld
    # the polygons are still the file's first layer
    assert pyogrio.read_info(out, layer=0)["features"] == 2
    assert set(pyogrio.raw.read(out, layer=0)[3][1]) == {"building", "water"}


@pytest.mark.slow
def test_segment_on_workers_writes_the_same_item(tmp_path: Path, model: Path) -> None:
    scene = tagged(tmp_path / "scene.tif", IMAGERY="2023-07-08 09:10:11")
    out = tmp_path / "mask.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model", str(model),
                                       *TILING, "--stac", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    item = pystac.Item.from_file(str(out.with_suffix(".json")))
    assert item.datetime == dt.datetime(2023, 7, 8, 9, 10, 11, tzinfo=dt.timezone.utc)
    assert np.allclose(item.bbox, footprint_bbox(out), rtol=0, atol=1e-9)
    assert Path(item.assets["mask"].get_absolute_href()) == out
    assert not list(tmp_path.glob(".mask*"))  # no parts or temporary files left


def test_an_asset_key_needs_stac_input(tmp_path: Path) -> None:
    from geofuse.config import BatchConfig
    from geofuse.errors import InputError
    from geofuse.scale.plan import plan_jobs

    write_geotiff(tmp_path / "a.tif", rgb(1, 16, 16))
    with pytest.raises(InputError, match=r"expected a STAC file \(\.json\) to take asset 'visual' "
                       r"from\. Received: a folder"):
        plan_jobs(tmp_path, tmp_path / "out", BatchConfig(asset="visual"))
