"""Seams: a tiled result must agree with one whole-scene prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.model import default_model_path, read_info
from tests.conftest import SAMPLES


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
