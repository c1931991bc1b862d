"""Seams: a tiled result must agree with one whole-scene prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.model.modelfile import default_model_path, read_info
from tests.helpers import SAMPLES


def run_segment(scene: Path, out: Path, tile: int, overlap: int, blend: str) -> np.ndarray:
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--tile", str(tile),
                                       "--overlap", str(overlap), "--blend", blend, "--quiet"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        return ds.read(1)


def test_tiled_hann_blend_agrees_with_a_whole_scene_prediction(tmp_path: Path) -> None:
    scene = SAMPLES / "scene_b.tif"
    multiple = read_info(default_model_path()).spec.arch.multiple
    with rasterio.open(scene) as ds:
        side = -(-max(ds.shape) // multiple) * multiple
        labels_valid = ds.read_masks(1) > 0
    whole = run_segment(scene, tmp_path / "whole.tif", side, 0, "hann")
    valid = whole != 255
    np.testing.assert_array_equal(valid, labels_valid)
    shares = {}
    for blend in ("hann", "center"):
        tiled = run_segment(scene, tmp_path / f"{blend}.tif", 128, 32, blend)
        np.testing.assert_array_equal(tiled == 255, ~valid)
        shares[blend] = float((tiled[valid] != whole[valid]).mean())
    print(f"\nseam disagreement vs whole scene (tile 128, overlap 32): {shares}")
    # 42 tiles of 128 px over an 896 x 704 scene; measured 0.14 % (hann), 0.14 % (center)
    assert shares["hann"] <= 0.005


def test_a_strip_gets_tiles_as_narrow_as_it_and_agrees_with_one_whole_tile(
        tmp_path: Path) -> None:
    """A 40-row strip: tiles 40 rows high (not 128² of mostly padding), seams held."""
    with rasterio.open(SAMPLES / "scene_b.tif") as ds:
        window = rasterio.windows.Window(0, 200, ds.width, 40)
        profile = ds.profile | {"height": 40, "transform": ds.window_transform(window)}
        data = ds.read(window=window)
    scene = tmp_path / "strip.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)

    def segment(out: str, *options: str) -> tuple[np.ndarray, dict[str, str], str]:
        result = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / out),
                                           "--runtime", "tensorflow", *options])
        assert result.exit_code == 0, result.output
        with rasterio.open(tmp_path / out) as ds:
            assert ds.shape == (40, profile["width"]) and ds.crs == profile["crs"]
            assert ds.transform == profile["transform"]
            return ds.read(1), ds.tags(), result.output

    whole, tags, _ = segment("whole.tif", "--tile", "1024")  # the strip fits one call
    assert tags["GEOFUSE_TILE"] == f"40x{-(-profile['width'] // 8) * 8}"
    tiled, tags, output = segment("tiled.tif", "--tile", "128", "--batch-size", "1")
    rows, cols = map(int, tags["GEOFUSE_TILE"].split("x"))
    assert rows == 40 and cols >= 96  # 40 rows high, several tiles along the strip
    assert ", 1 tile," not in output
    valid = whole != 255
    assert valid.any() and np.array_equal(tiled == 255, ~valid)
    assert float((tiled[valid] != whole[valid]).mean()) <= 0.005
