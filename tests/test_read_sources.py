"""Names GDAL opens reach GDAL unchanged: scenes inside a zip and over HTTP.

The HTTP scenes are served by a small Range-capable server started here on 127.0.0.1: GDAL's
/vsicurl/ reads the parts of a GeoTIFF it needs with Range requests.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.sources import as_source, is_gdal_name, source_name
from tests.helpers import write_geotiff

TILING = ["--tile", "32", "--overlap", "8"]


def rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def pixels(path: str | Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(), {"crs": ds.crs, "transform": ds.transform, "tags": ds.tags()}


def requests(log: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split(" ", 2)) for line in log.read_text().splitlines()]


def test_gdal_names_are_kept_verbatim() -> None:
    for name in ("/vsizip//data/chips.zip/a.tif", "https://host/x/scene.tif?sig=a/b",
                 "s3://bucket/key.tif", "/vsicurl/https://h/s.tif", "gs://b/k.tif"):
        assert is_gdal_name(name) and as_source(name) == name
    assert as_source("data/a.tif") == Path("data/a.tif")
    assert source_name("/vsizip//data/chips.zip/sub/a.tif") == "a.tif"
    assert source_name("https://host/x/scene.tif?sig=a/b") == "scene.tif"
    assert source_name("/vsicurl/https://h/s.tif") == "s.tif"


def test_scene_inside_a_zip(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    scene = write_geotiff(tmp_path / "a.tif", rgb(1, 40, 56))
    archive = tmp_path / "chips.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(scene, "sub/a.tif")
    inside = f"/vsizip/{archive}/sub/a.tif"  # "/vsizip//abs/path/...": the double slash matters
    assert "//" in inside

    result = cli("segment", inside, tmp_path / "zipped.tif", "--model", model, *TILING, "-q")
    assert result.exit_code == 0, result.output
    direct = cli("segment", scene, tmp_path / "direct.tif", "--model", model, *TILING, "-q")
    assert direct.exit_code == 0, direct.output
    got, geo = pixels(tmp_path / "zipped.tif")
    want, want_geo = pixels(tmp_path / "direct.tif")
    np.testing.assert_array_equal(got, want)
    assert geo["crs"] == want_geo["crs"] and geo["transform"] == want_geo["transform"]
    assert geo["tags"]["GEOFUSE_SOURCE"] == "a.tif"

    info = cli("info", inside)
    assert info.exit_code == 0, info.output
    assert "size: 56 x 40 px" in info.output and "EPSG:32633" in info.output
    picture = cli("preview", inside, tmp_path / "zipped.tif", tmp_path / "q.png")
    assert picture.exit_code == 0, picture.output

    missing = cli("segment", f"/vsizip/{archive}/nope.tif", tmp_path / "m.tif", "--model", model,
                  "-q")
    assert missing.exit_code == 1
    lines = missing.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: /vsizip/{archive}/nope.tif: ")
    assert not (tmp_path / "m.tif").exists()


def test_evaluate_a_zipped_scene(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    scene = write_geotiff(tmp_path / "s.tif", rgb(2, 48, 48))
    labels = write_geotiff(tmp_path / "l.tif", (rgb(3, 48, 48)[0] % 3).astype(np.uint8))
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(scene, "s.tif")
        zf.write(labels, "l.tif")
    reports = []
    for image, mask, name in ((f"/vsizip/{archive}/s.tif", f"/vsizip/{archive}/l.tif", "z"),
                              (scene, labels, "d")):
        result = cli("evaluate", "--model", model, "--scene", image, "--labels", mask, *TILING,
                     "--report", tmp_path / f"{name}.json", "-q")
        assert result.exit_code == 0, result.output
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]


def test_scene_over_http_with_range_requests(tmp_path: Path, served, tiny_models) -> None:
    base, folder, log = served
    model = tiny_models()
    scene = write_geotiff(folder / "remote.tif", rgb(4, 64, 72), tiled=True, blockxsize=32,
                          blockysize=32, compress="deflate")
    url = f"{base}/remote.tif"
    result = cli("segment", url, tmp_path / "m.tif", "--model", model, *TILING, "-q")
    assert result.exit_code == 0, result.output
    local = cli("segment", scene, tmp_path / "local.tif", "--model", model, *TILING, "-q")
    assert local.exit_code == 0, local.output
    got, geo = pixels(tmp_path / "m.tif")
    want, want_geo = pixels(tmp_path / "local.tif")
    np.testing.assert_array_equal(got, want)
    assert geo["transform"] == want_geo["transform"] and geo["crs"] == want_geo["crs"]
    assert geo["tags"]["GEOFUSE_SOURCE"] == "remote.tif"
    gets = [r for method, path, r in requests(log) if method == "GET" and path == "/remote.tif"]
    assert gets and all(r.startswith("bytes=") for r in gets), "GDAL read it by Range only"

    info = cli("info", url)
    assert info.exit_code == 0 and "size: 72 x 64 px" in info.output, info.output

    missing = cli("segment", f"{base}/missing.tif", tmp_path / "x.tif", "--model", model, "-q")
    assert missing.exit_code == 1
    lines = missing.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {base}/missing.tif: "), lines
    assert not (tmp_path / "x.tif").exists()
