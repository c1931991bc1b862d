"""STAC in batches: a collection of the scenes done (`batch --stac`), STAC files as input.

Validated offline against the schemas pystac ships (see :func:`tests.helpers.stac_validate`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely.geometry
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.read.stac import read_stac_scenes
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


@pytest.mark.slow
def test_batch_collection_holds_the_good_scenes_and_a_resume_updates_it(
    tmp_path: Path, model: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    tagged_scene(src / "a.tif", 1)
    tagged_scene(src / "sub" / "b.tif", 2, TIFFTAG_DATETIME="2022:03:04 05:06:07")
    (src / "garbage.tif").write_bytes(b"II*\x00" + bytes(500))
    args = [
        "batch",
        str(src),
        str(out),
        "--model",
        str(model),
        *TILING,
        "--recursive",
        "--stac",
        "--vector",
        "--workers",
        "1",
        "--quiet",
    ]
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
        assert stac_validate(item.to_dict(include_self_link=False))[1] == [
            stac_extension("processing", item.to_dict())
        ]
    model_item = pystac.Item.from_file(str(out / "model.json"))
    assert stac_validate(model_item.to_dict(include_self_link=False))[1] == []
    bbox = collection.extent.spatial.bboxes[0]
    boxes = np.array([footprint_bbox(out / "a.tif"), footprint_bbox(out / "sub" / "b.tif")])
    assert np.allclose(bbox, [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)], rtol=0, atol=1e-9)
    assert stac_validate(collection.to_dict(include_self_link=False)) == ([], [])
    report = json.loads((out / "geofuse-report.json").read_text())
    assert report["stac_collection"] == str((out / "collection.json").absolute())

    # a resume: the garbage scene replaced by a good one, one item lost
    (src / "garbage.tif").unlink()
    tagged_scene(src / "c.tif", 3)
    (out / "a.json").unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    report = json.loads((out / "geofuse-report.json").read_text())
    assert {r["scene"]: r["status"] for r in report["scenes"]} == {
        "a.tif": "skipped",
        "c.tif": "done",
        "sub/b.tif": "skipped",
    }
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    assert sorted(item.id for item in collection.get_items()) == ["a", "c", "sub-b"]
    assert (out / "a.json").is_file()  # the skipped scene got its item back from its files


@pytest.mark.slow
def test_batch_segments_an_asset_of_each_item_of_an_item_collection(
    tmp_path: Path, model: Path
) -> None:
    scenes = tmp_path / "search" / "scenes"
    scenes.mkdir(parents=True)
    tagged_scene(scenes / "one.tif", 1)
    tagged_scene(scenes / "two.tif", 2)
    write_geotiff(scenes / "thumb.tif", smooth_rgb(3, 8, 8))
    box = [15.0, 46.2, 15.01, 46.27]

    def item(item_id: str, href: str, when: str) -> dict[str, Any]:
        made = pystac.Item(
            item_id,
            shapely.geometry.mapping(shapely.geometry.box(*box)),
            box,
            dt.datetime.fromisoformat(when),
            {},
        )
        made.add_asset("visual", pystac.Asset(href, media_type=pystac.MediaType.GEOTIFF))
        made.add_asset("thumbnail", pystac.Asset("scenes/thumb.tif"))
        return made.to_dict(include_self_link=False)

    items = tmp_path / "search" / "results.json"  # a saved search: relative hrefs
    items.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    item("S2A_20240501.T33", "scenes/one.tif", "2024-05-01T10:00:00+00:00"),
                    item("S2B_20240611", "./scenes/two.tif", "2024-06-11T10:00:00+00:00"),
                ],
            }
        )
    )
    out = tmp_path / "out"
    runner = CliRunner()
    missing = runner.invoke(
        main, ["batch", str(items), str(out), "--model", str(model), "--asset", "B04", "--quiet"]
    )
    assert missing.exit_code == 1
    assert "expected an asset 'B04' in item 'S2A_20240501.T33'" in missing.output
    assert "Received: visual, thumbnail" in missing.output

    result = runner.invoke(
        main,
        [
            "batch",
            str(items),
            str(out),
            "--model",
            str(model),
            *TILING,
            "--asset",
            "visual",
            "--stac",
            "--workers",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "geofuse-report.json").read_text())
    assert {r["scene"]: r["output"] for r in report["scenes"]} == {
        "S2A_20240501.T33": "S2A_20240501.T33.tif",
        "S2B_20240611": "S2B_20240611.tif",
    }
    for name, scene in (("S2A_20240501.T33", "one.tif"), ("S2B_20240611", "two.tif")):
        with rasterio.open(out / f"{name}.tif") as mask, rasterio.open(scenes / scene) as src:
            assert (mask.width, mask.height, mask.transform) == (
                src.width,
                src.height,
                src.transform,
            )
        made = pystac.Item.from_file(str(out / f"{name}.json"))
        assert made.id == name
        assert made.properties["geofuse:datetime_source"] == "source STAC item"
        links = {Path(link.get_absolute_href()) for link in made.get_links("derived_from")}
        assert links == {out / "model.json", items}
        (via,) = made.get_links("via")
        assert via.href == str(scenes / scene)
    times = {
        i.id: i.datetime
        for i in pystac.Collection.from_file(str(out / "collection.json")).get_items()
    }
    assert times["S2B_20240611"] == dt.datetime(2024, 6, 11, 10, tzinfo=dt.timezone.utc)


def test_static_catalogue_items_resolve_against_their_own_files(tmp_path: Path) -> None:
    catalog = pystac.Catalog("cat", "scenes")
    for n in range(2):
        made = pystac.Item(
            f"scene-{n}", None, None, dt.datetime(2024, 1, n + 1, tzinfo=dt.timezone.utc), {}
        )
        made.add_asset("data", pystac.Asset(f"./scene-{n}.tif"))
        made.add_asset("remote", pystac.Asset(f"https://example.com/{n}.tif"))
        catalog.add_item(made)
    catalog.normalize_hrefs(str(tmp_path / "stac"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    found = read_stac_scenes(tmp_path / "stac" / "catalog.json", "data")
    assert [(s.item_id, s.scene, Path(s.item_href)) for s in found] == [
        (
            f"scene-{n}",
            tmp_path / "stac" / f"scene-{n}" / f"scene-{n}.tif",
            tmp_path / "stac" / f"scene-{n}" / f"scene-{n}.json",
        )
        for n in range(2)
    ]
    remote = read_stac_scenes(tmp_path / "stac" / "catalog.json", "remote")
    assert [s.scene for s in remote] == ["https://example.com/0.tif", "https://example.com/1.tif"]
    assert found[1].time == ("2024-01-02T00:00:00Z", None, None)


def test_an_asset_key_needs_stac_input(tmp_path: Path) -> None:
    from geofuse.config import BatchConfig
    from geofuse.errors import InputError
    from geofuse.scale.plan import plan_jobs

    write_geotiff(tmp_path / "a.tif", smooth_rgb(1, 16, 16))
    with pytest.raises(
        InputError,
        match=r"expected a STAC file \(\.json\) to take asset 'visual' "
        r"from\. Received: a folder",
    ):
        plan_jobs(tmp_path, tmp_path / "out", BatchConfig(asset="visual"))
