"""`segment --stac`: a STAC Item per output, as a STAC reader and the schemas see it.

Validated offline against the schemas pystac ships (see :func:`tests.helpers.stac_validate`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely.geometry
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.config import StacConfig
from geofuse.model.modelfile import read_info
from geofuse.products.stac import item_time, scene_time
from tests.helpers import (
    footprint_bbox,
    smooth_rgb,
    stac_extension,
    stac_validate,
    tagged_scene,
    write_geotiff,
)

TILING = ["--tile", "32", "--overlap", "8", "--batch-size", "2"]
CLASSES = ("background", "building", "water")


@pytest.fixture(scope="module")
def model(tiny_models) -> Path:
    return tiny_models(class_names=CLASSES)


def classes_of(model: Path) -> list[tuple[int, str, str]]:
    return [(c.id, c.name, c.color.lstrip("#").upper()) for c in read_info(model).classes]


def test_segment_stac_item_describes_each_output(tmp_path: Path, model: Path) -> None:
    scene = tagged_scene(tmp_path / "scene.tif", TIFFTAG_DATETIME="2021:06:15 10:30:00")
    out = tmp_path / "out" / "mask.tif"
    runner = CliRunner()
    args = [
        "segment",
        str(scene),
        str(out),
        "--model",
        str(model),
        *TILING,
        "--stac",
        "--probabilities",
        str(out.with_name("mask.probs.tif")),
        "--vector",
        str(out.with_name("mask.gpkg")),
        "--preview",
        str(out.with_name("mask.png")),
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"{out.with_suffix('.json')}: STAC item" in result.output

    item = pystac.Item.from_file(str(out.with_suffix(".json")))
    data = item.to_dict(include_self_link=False)
    assert item.id == "mask"
    # the footprint in WGS84: bbox as GDAL transforms the mask's bounds; the geometry agrees
    assert np.allclose(item.bbox, footprint_bbox(out), rtol=0, atol=1e-9)
    assert np.allclose(shapely.geometry.shape(item.geometry).bounds, item.bbox, rtol=0, atol=1e-9)
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
    assert hrefs == {
        "mask": out,
        "probabilities": out.with_name("mask.probs.tif"),
        "polygons": out.with_name("mask.gpkg"),
        "preview": out.with_name("mask.png"),
    }
    assert item.assets["mask"].media_type == pystac.MediaType.COG
    assert item.assets["mask"].roles == ["data"]
    assert item.assets["polygons"].media_type == "application/geopackage+sqlite3"
    assert item.assets["preview"].media_type == "image/png"
    classes = item.assets["mask"].extra_fields["classification:classes"]
    assert [
        (c["value"], c["title"], c["color_hint"]) for c in classes if not c.get("nodata")
    ] == classes_of(model)
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
    assert item.properties["processing:software"] == {
        "geofuse": tags["GEOFUSE_VERSION"],
        runtime: version,
    }
    assert item.properties["geofuse:precision"] == tags["GEOFUSE_PRECISION"]
    # valid against the schemas pystac ships; the processing schema ships with none
    checked, missing = stac_validate(data)
    assert checked == [stac_extension("projection", data), stac_extension("classification", data)]
    assert missing == [stac_extension("processing", data)]
    assert stac_validate(model_item.to_dict(include_self_link=False))[1] == []

    out.unlink()  # a new mask, but its item would replace one: refused before any work
    again = runner.invoke(main, args[:-6])
    assert again.exit_code == 1
    assert f"{out.with_suffix('.json')}: already exists" in again.output
    assert not out.exists()


def test_an_output_without_georeferencing_gets_an_item_without_footprint(
    tmp_path: Path, model: Path
) -> None:
    from affine import Affine

    scene = write_geotiff(
        tmp_path / "plain.tif", smooth_rgb(4, 40, 40), crs=None, transform=Affine.identity()
    )
    out = tmp_path / "plain-mask.tif"
    result = CliRunner().invoke(
        main, ["segment", str(scene), str(out), "--model", str(model), *TILING, "--stac", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["geometry"] is None and "bbox" not in data
    assert not any(key.startswith("proj:") for key in data["properties"])
    assert data["properties"]["datetime"] is None  # and the range up to when it was made
    made = dt.datetime.fromtimestamp(out.stat().st_mtime, dt.timezone.utc)
    assert pystac.Item.from_dict(data).common_metadata.end_datetime == made
    assert stac_validate(data)[1] == [stac_extension("processing", data)]


def test_item_time_from_tags_or_an_honest_range(tmp_path: Path) -> None:
    made = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    both = tagged_scene(
        tmp_path / "both.tif", TIFFTAG_DATETIME="2020:01:01 00:00:00", IMAGERY="2019-05-06 07:08:09"
    )
    assert item_time(StacConfig(), both, made) == (
        dt.datetime(2019, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
        None,
        None,
        "IMAGERY ACQUISITIONDATETIME",
    )
    sensing = tagged_scene(
        tmp_path / "s.tif", SENSING_TIME="2018-02-03T04:05:06+02:00", TIFFTAG_DATETIME="not a date"
    )
    assert item_time(StacConfig(), sensing, made)[0] == dt.datetime(
        2018, 2, 3, 2, 5, 6, tzinfo=dt.timezone.utc
    )
    # nothing known: no datetime, the range from the epoch to when the output was made
    bare = tagged_scene(tmp_path / "bare.tif", TIFFTAG_DATETIME="garbled")
    assert scene_time({"": {"TIFFTAG_DATETIME": "garbled"}}) == (None, "unknown")
    when, start, end, source = item_time(StacConfig(), bare, made)
    assert (when, start, end) == (None, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), made)
    assert source.startswith("unknown")
    # a source STAC item's time wins over the scene's tags
    stac = StacConfig(source_time=(None, "2017-01-01T00:00:00Z", "2017-01-31T00:00:00Z"))
    assert item_time(stac, both, made)[1:] == (
        dt.datetime(2017, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2017, 1, 31, tzinfo=dt.timezone.utc),
        "source STAC item",
    )


@pytest.mark.slow
def test_segment_on_workers_writes_the_same_item(tmp_path: Path, model: Path) -> None:
    scene = tagged_scene(tmp_path / "scene.tif", IMAGERY="2023-07-08 09:10:11")
    out = tmp_path / "mask.tif"
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(scene),
            str(out),
            "--model",
            str(model),
            *TILING,
            "--stac",
            "--workers",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    item = pystac.Item.from_file(str(out.with_suffix(".json")))
    assert item.datetime == dt.datetime(2023, 7, 8, 9, 10, 11, tzinfo=dt.timezone.utc)
    assert np.allclose(item.bbox, footprint_bbox(out), rtol=0, atol=1e-9)
    assert Path(item.assets["mask"].get_absolute_href()) == out
    assert not list(tmp_path.glob(".mask*"))  # no parts or temporary files left
