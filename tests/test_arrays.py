"""``geofuse.predict_array``: the same result as ``segment`` on a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import geofuse
from geofuse.cli import main
from geofuse.config import InputConfig, TilingConfig
from geofuse.errors import InputError
from geofuse.model.modelfile import read_info
from tests.helpers import write_geotiff


def scene_data(seed: int, height: int, width: int) -> np.ndarray:
    data = np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)
    data[:, :30, :45] = 0  # a nodata corner
    data[:, 80:, 100:] = 0
    return data


def test_predict_array_equals_segment(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    data = scene_data(0, 150, 130)
    scene = write_geotiff(tmp_path / "s.tif", data, nodata=0)
    result = CliRunner().invoke(main, [
        "segment", str(scene), str(tmp_path / "m.tif"), "--model", str(model), "--tile", "64",
        "--probabilities", str(tmp_path / "p.tif"), "--probability-dtype", "float32", "-q"])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
    with rasterio.open(tmp_path / "p.tif") as ds:
        probs = ds.read()
    assert len(np.unique(mask)) > 2 and (mask == 255).any()

    valid = np.all(data != 0, axis=0)
    tiling = TilingConfig(tile=64)
    first = geofuse.predict_array(model, data, valid, tiling=tiling)
    np.testing.assert_array_equal(first.classes, mask)
    np.testing.assert_array_equal(first.probabilities, probs)  # NaN where nodata, like p.tif
    assert first.class_names == ("class0", "class1", "class2")
    multiple = read_info(model).spec.arch.multiple  # the tile segment fitted to the scene:
    assert first.tiling == tiling.for_scene(150, 130, multiple) and first.tiling.tile != 64

    last = geofuse.predict_array(str(model), np.moveaxis(data, 0, -1), valid, tiling=tiling)
    np.testing.assert_array_equal(last.classes, mask)
    np.testing.assert_array_equal(np.moveaxis(last.probabilities, -1, 0), probs)


def test_small_arrays_and_bad_input(tiny_models) -> None:
    model = tiny_models()
    data = scene_data(1, 40, 36)
    floats = data.astype(np.float32)
    floats[:, data[0] == 0] = np.nan  # NaN is nodata, as in a file
    with pytest.raises(InputError, match="Received: float32 in the array"):  # as segment
        geofuse.predict_array(model, floats)
    result = geofuse.predict_array(model, floats, input=InputConfig(input_range=(0, 255)))
    assert result.tiling.tile == 40 and result.classes.shape == (40, 36)
    assert np.isnan(result.probabilities[:, 0, 0]).all() and result.classes[0, 0] == 255
    with pytest.raises(InputError, match=r"Expected 3 bands\. Received: 2 bands in the array"):
        geofuse.predict_array(model, data[:2], layout="bands_first")
    with pytest.raises(InputError, match="bands first or last"):
        geofuse.predict_array(model, np.zeros((4, 8, 4), np.uint8))
    with pytest.raises(InputError, match="valid mask of shape"):
        geofuse.predict_array(model, data, np.ones((3, 3), bool))
