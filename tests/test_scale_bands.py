"""``geofuse segment --workers/--scheduler``: one scene in bands of tile rows on Dask."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from geofuse.cli import main
from geofuse.config import ClusterConfig, SegmentConfig, TilingConfig
from geofuse.errors import ConfigError
from geofuse.model.modelfile import load_model
from geofuse.read.grid import TileGrid
from geofuse.scale import bands as scatter
from geofuse.scale.bands import (
    MARKER_SUFFIX,
    band_name,
    finished_bands,
    parts_folder,
    plan_bands,
    segment_scattered,
)
from geofuse.segment import segment_scene
from tests.helpers import make_tiny_model, write_geotiff

TILING = ["--tile", "128", "--overlap", "32", "--batch-size", "3"]


def scene_image(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Smooth-ish random RGB with a nodata collar (value 0) along the top."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 255, (3, height // 8 + 1, width // 8 + 1))
    image = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
    image = (image + rng.integers(0, 40, image.shape)).clip(1, 255).astype(np.uint8)
    image[:, :40] = 0
    return image


def read_all(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        profile = dict(ds.profile, nodata=str(ds.nodata))  # NaN == NaN as text
        facts = {"profile": profile, "tags": ds.tags(), "gcps": ds.gcps,
                 "structure": ds.tags(ns="IMAGE_STRUCTURE"), "overviews": ds.overviews(1),
                 "descriptions": ds.descriptions, "scales": ds.scales,
                 "colormap": ds.colormap(1) if ds.count == 1 else None}
        facts["overview_pixels"] = [ds.read(out_shape=(ds.count, ds.height // f, ds.width // f))
                                    for f in ds.overviews(1)]
        return ds.read(), facts


def assert_same_raster(path: Path, reference: Path) -> None:
    data, facts = read_all(path)
    expected, expected_facts = read_all(reference)
    np.testing.assert_array_equal(data, expected)
    overviews = facts.pop("overview_pixels")
    for got, want in zip(overviews, expected_facts.pop("overview_pixels"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert facts == expected_facts


# -- no cluster --------------------------------------------------------------------------------
def test_plan_bands_cover_the_missing_rows_in_whole_tile_rows() -> None:
    assert plan_bands(14, [], 6) == [(0, 2), (2, 4), (4, 7), (7, 9), (9, 11), (11, 14)]
    assert plan_bands(3, [], 6) == [(0, 1), (1, 2), (2, 3)]  # never less than a tile row
    assert plan_bands(1, [], 4) == [(0, 1)]
    bands = plan_bands(20, [(0, 4), (9, 12)], 4)
    assert bands[0][0] == 4 and bands[-1][1] == 20 and (9, 12) not in bands
    covered = sorted([(0, 4), (9, 12), *bands])
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))
    assert plan_bands(20, [(0, 20)], 4) == []


@pytest.mark.parametrize(
    ("blend", "options"),
    [("hann", {}), ("center", {}), ("hann", {"tta": "flips", "probability_dtype": "float32"}),
     ("hann", {"aoi": True})],
    ids=["hann", "center", "tta-float32", "aoi"],
)
def test_bands_of_tile_rows_give_the_whole_run_to_the_pixel(tiny_models, tmp_path: Path,
                                                             blend: str, options: dict) -> None:
    """Every split of the grid rows into bands joins to the single-process output."""
    scene = write_geotiff(tmp_path / "s.tif", scene_image(300, 200), nodata=0)
    if options.pop("aoi", False):
        aoi = tmp_path / "aoi.geojson"
        x0, y0 = 500123.5 + 20, 5123456.0 - 60  # a triangle over the middle rows
        aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
                [[x0, y0], [x0 + 80, y0 - 20], [x0 + 10, y0 - 100], [x0, y0]]]}}],
            "crs": {"type": "name", "properties": {"name": "EPSG:32633"}}}))
        options["aoi"] = aoi
    loaded = load_model(tiny_models())
    tiling = TilingConfig(tile=64, overlap=24, blend=blend, batch_size=3)
    config = SegmentConfig(tiling=tiling, overwrite=True, **options)
    whole = segment_scene(scene, tmp_path / "m.tif", loaded,
                          replace(config, probabilities=tmp_path / "p.tif"))
    fitted = tiling.for_scene(300, 200, loaded.info.spec.arch.multiple)  # as segment does
    grid = TileGrid(300, 200, fitted.tile, fitted.overlap)
    rows = len(grid.row_starts)
    for split in ([(0, 1), (1, 2), (2, rows)], [(0, rows - 1), (rows - 1, rows)]):
        masks, probs = [], []
        for band in split:
            out, prob = tmp_path / f"{band_name(band)}.tif", tmp_path / f"{band_name(band)}.p.tif"
            result = segment_scene(scene, out, loaded, replace(config, probabilities=prob),
                                   grid_rows=band)
            y0, y1 = grid.band_rows(*band)
            assert result.height == y1 - y0
            with rasterio.open(out) as m, rasterio.open(prob) as p:
                assert m.transform == whole_transform(tmp_path / "m.tif") * Affine.translation(
                    0, y0)
                masks.append(m.read(1))
                probs.append(p.read())
        with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "p.tif") as p:
            np.testing.assert_array_equal(np.concatenate(masks), m.read(1))
            np.testing.assert_array_equal(np.concatenate(probs, axis=1), p.read())
    assert whole.nodata_pixels > 0


def whole_transform(path: Path) -> Affine:
    with rasterio.open(path) as ds:
        return ds.transform


def test_parts_of_other_settings_are_discarded(tmp_path: Path) -> None:
    folder = tmp_path / ".m.tif.parts"
    folder.mkdir()
    key, other = {"tile": 64}, {"tile": 32}
    for band, marker_key in (((0, 2), key), ((2, 4), other), ((4, 6), key)):
        name = band_name(band)
        (folder / f"{name}.tif").write_bytes(b"part")
        (folder / f"{name}{MARKER_SUFFIX}").write_text(json.dumps({
            "key": marker_key, "band": list(band), "mask": f"{name}.tif",
            "probabilities": None}))
    (folder / f".{band_name((6, 7))}.tif.123-abcdef.x1y2z3w4.part.tif").write_bytes(b"tmp")
    (folder / f"{band_name((4, 6))}.tif").unlink()  # a marker without its part: redone
    kept = finished_bands(folder, key, 8)
    assert [m["band"] for m in kept] == [[0, 2]]
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        f"{band_name((0, 2))}.tif", f"{band_name((0, 2))}{MARKER_SUFFIX}"])
    assert finished_bands(folder, key, 1) == []  # another grid: nothing fits


def test_refusals_are_one_line_and_write_nothing(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_image(64, 64))
    out = tmp_path / "out" / "m.tif"
    runner = CliRunner()
    both = runner.invoke(main, ["segment", str(scene), str(out), "--model", str(tiny_models()),
                                "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert both.exit_code == 2 and "not both" in both.output
    gray = write_geotiff(tmp_path / "gray.tif", scene_image(64, 64)[:1])
    bands = runner.invoke(main, ["segment", str(gray), str(out), "--model", str(tiny_models()),
                                 "--workers", "2", "-q"])
    assert bands.exit_code == 1
    assert bands.output.strip() == f"Error: Expected 3 bands. Received: 1 band in {gray}"
    # A scene the model would read at its own pixel size (2 m here, 0.5 m model).
    model = make_tiny_model(tmp_path / "half-metre.keras", contract={"pixel_size": 0.5})
    coarse = write_geotiff(tmp_path / "coarse.tif", scene_image(64, 64),
                           transform=Affine(2.0, 0, 500000, 0, -2.0, 5100000))
    resampled = runner.invoke(main, ["segment", str(coarse), str(out), "--model", str(model),
                                     "--workers", "1", "-q"])
    assert resampled.exit_code == 1
    lines = resampled.output.strip().splitlines()
    assert "Warning:" in lines[0] and len(lines) == 2 and "--resample off" in lines[1]
    assert list(tmp_path.glob("out/*")) + list(tmp_path.glob("out/.*")) == []
    with pytest.raises(ConfigError, match="scheduler address"):
        ClusterConfig(scheduler="localhost:8786")


@pytest.mark.slow  # the client tries for 20 s
def test_unreachable_scheduler_is_one_line(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_image(64, 64))
    out = tmp_path / "m.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model",
                                       str(tiny_models()), "--scheduler", "tcp://127.0.0.1:1",
                                       "-q"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: Expected a reachable Dask scheduler. Received: "
                               "tcp://127.0.0.1:1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


# -- real clusters -----------------------------------------------------------------------------
@pytest.mark.slow
def test_workers_write_the_single_process_outputs(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_image(700, 600), nodata=0)
    model = str(tiny_models())
    runner = CliRunner()
    outputs = {}
    for name, extra in (("one", []), ("two", ["--workers", "2"])):
        out, probs = tmp_path / name / "m.tif", tmp_path / name / "p.tif"
        result = runner.invoke(main, ["segment", str(scene), str(out), "--model", model,
                                      *TILING, "--probabilities", str(probs), "--vector",
                                      str(tmp_path / name / "v.gpkg"), *extra])
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
    assert "bands on local, 2 workers x" in outputs["two"]
    for name in ("m.tif", "p.tif"):
        assert_same_raster(tmp_path / "two" / name, tmp_path / "one" / name)
        assert cog_validate(str(tmp_path / "two" / name))[0]
    with rasterio.open(tmp_path / "two" / "m.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2]
        assert (ds.read(1)[:40] == 255).all() and len(np.unique(ds.read(1))) > 2
    layers = [pyogrio.raw.read(tmp_path / n / "v.gpkg") for n in ("one", "two")]
    assert len(layers[0][2]) == len(layers[1][2]) > 0
    assert layers[0][2].tolist() == layers[1][2].tolist()  # the geometries (WKB)
    for one, two in zip(layers[0][3], layers[1][3], strict=True):  # class, pixels, mean_prob...
        np.testing.assert_array_equal(one, two)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["m.tif", "p.tif", "v.gpkg"]


class Stop(Exception):
    """Raised by the test's progress callback: the run is killed mid-way."""


@pytest.mark.slow
def test_an_interrupted_run_resumes_with_the_finished_bands(
        tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One band per tile row (8 rows), so that bands are still missing when the run stops.
    monkeypatch.setattr(scatter, "BANDS_PER_WORKER", 8)
    scene = write_geotiff(tmp_path / "s.tif", scene_image(400, 256), nodata=0)
    model = tiny_models()
    config = SegmentConfig(tiling=TilingConfig(tile=64, overlap=16, batch_size=3, fit=False),
                           probabilities=tmp_path / "p.tif", probability_dtype="float32")
    out, folder = tmp_path / "m.tif", parts_folder(tmp_path / "m.tif")
    seen = []

    def stop_after_one(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 1:
            raise Stop

    with pytest.raises(Stop):
        segment_scattered(scene, out, model, config, ClusterConfig(workers=1),
                          progress=stop_after_one)
    assert seen[0] == (0, 8) and not out.exists() and not config.probabilities.exists()
    markers = sorted(folder.glob(f"*{MARKER_SUFFIX}"))
    assert 1 <= len(markers) < 8
    finished = [m.stat().st_mtime_ns for m in markers]

    counted, untouched = [], []

    def count(done: int, total: int) -> None:  # the last call comes before the join
        counted.append((done, total))
        untouched.append(all(m.stat().st_mtime_ns == t for m, t in zip(markers, finished,
                                                                          strict=True)))

    result = segment_scattered(scene, out, model, config, ClusterConfig(workers=1),
                               progress=count)
    assert result.reused == len(markers) and result.bands > len(markers) and all(untouched)
    # Only the missing bands ran: progress starts at the reused ones.
    assert counted[0] == (len(markers), result.bands) and counted[-1][0] == result.bands
    assert len(counted) == 1 + result.bands - result.reused
    assert not folder.exists()
    reference = segment_scene(scene, tmp_path / "ref.tif", model,
                              replace(config, probabilities=tmp_path / "ref-p.tif"))
    assert_same_raster(out, reference.mask)
    assert_same_raster(config.probabilities, tmp_path / "ref-p.tif")
    assert result.class_counts == reference.class_counts
    assert result.nodata_pixels == reference.nodata_pixels


@pytest.mark.slow
def test_a_failing_band_names_the_scene_and_the_band(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_image(256, 128), tiled=True,
                          blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(scene) as src:  # the last block: the header opens, its pixels don't
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_3", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_3", "TIFF", bidx=1))
    with open(scene, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    out = tmp_path / "m.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model",
                                       str(tiny_models()), *TILING, "--workers", "1", "-q"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"Error: {scene}: cannot read pixels")
    assert " (band " in lines[0] and "scene rows" in lines[0]
    assert not out.exists()
