"""The public Python API: importable without TensorFlow, and held to the command line's contract.

``predict_array`` goes through the input contract of ``geofuse segment`` (pixel size and
resampling, data type and value range, nodata), so the API and the CLI give identical masks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import geofuse
from geofuse.cli import main
from geofuse.config import InputConfig, TilingConfig
from geofuse.errors import InputError
from tests.helpers import ROOT, UTM_TRANSFORM, make_tiny_model, write_geotiff

PUBLIC = ("segment_scene", "SegmentConfig", "TilingConfig", "InputConfig", "BatchConfig",
          "load_model", "predict_array", "ArrayPrediction", "train", "TrainConfig", "evaluate",
          "EvaluateConfig", "segment_directory", "GeofuseError")


def test_the_public_api_imports_without_tensorflow() -> None:
    code = (f"import sys, geofuse\nfrom geofuse import {', '.join(PUBLIC)}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'openvino')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert set(PUBLIC) <= set(geofuse.__all__)


def cli_mask(tmp_path: Path, scene: Path, model: Path, *options: str) -> np.ndarray:
    out = tmp_path / f"{scene.stem}.mask.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model", str(model),
                                       "--tile", "64", "-q", "--overwrite", *options])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def half_metre_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-band uint8 model trained (so it says) on 0.5 m pixels named red, green, blue."""
    return make_tiny_model(tmp_path_factory.mktemp("api") / "m.keras", contract={
        "pixel_size": 0.5, "band_names": ("red", "green", "blue"),
        "value_range": ((0.0, 255.0),) * 3})


def test_an_array_of_another_pixel_size_is_resampled_as_segment_does(
        tmp_path: Path, half_metre_model: Path) -> None:
    data = np.random.default_rng(1).integers(0, 255, (3, 140, 120), dtype=np.uint8)
    transform = Affine(0.2, 0, UTM_TRANSFORM.c, 0, -0.2, UTM_TRANSFORM.f)
    scene = write_geotiff(tmp_path / "fine.tif", data, transform=transform)
    mask = cli_mask(tmp_path, scene, half_metre_model)
    tiling = TilingConfig(tile=64)
    notices: list[str] = []
    result = geofuse.predict_array(half_metre_model, data, transform=transform, crs="EPSG:32633",
                                   tiling=tiling, notify=notices.append)
    np.testing.assert_array_equal(result.classes, mask)
    assert any("reading it at 0.5 m" in n for n in notices), notices
    by_size = geofuse.predict_array(half_metre_model, data, pixel_size=0.2, tiling=tiling,
                                    notify=notices.append)
    assert (by_size.classes == mask).mean() > 0.99  # the same resampling, another CRS
    as_is = geofuse.predict_array(half_metre_model, data, tiling=tiling)  # size unknown
    assert (as_is.classes != mask).any()
    with rasterio.open(scene) as ds:  # an open dataset is read as the file is
        np.testing.assert_array_equal(geofuse.predict_array(half_metre_model, ds,
                                                            tiling=tiling).classes, mask)


def test_an_int16_array_is_refused_or_stretched_as_segment_does(
        tmp_path: Path, half_metre_model: Path) -> None:
    data = np.random.default_rng(2).integers(-200, 4000, (3, 96, 80)).astype(np.int16)
    scene = write_geotiff(tmp_path / "int16.tif", data, photometric="RGB")
    refused = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "x.tif"),
                                        "--model", str(half_metre_model)])
    assert refused.exit_code == 1 and "--input-range" in refused.output
    with pytest.raises(InputError, match=r"Expected uint8 input\. Received: int16 in the array"):
        geofuse.predict_array(half_metre_model, data, pixel_size=0.5)
    for options, adapt in ((["--input-range", "0,3000"], InputConfig(input_range=(0, 3000))),
                           (["--stretch", "percentile"], InputConfig(stretch="percentile"))):
        mask = cli_mask(tmp_path, scene, half_metre_model, *options)
        result = geofuse.predict_array(half_metre_model, data, transform=UTM_TRANSFORM,
                                       crs="EPSG:32633", colours=("red", "green", "blue"),
                                       input=adapt, tiling=TilingConfig(tile=64))
        np.testing.assert_array_equal(result.classes, mask)


def test_nodata_of_an_array_is_honoured_as_segment_does(
        tmp_path: Path, half_metre_model: Path) -> None:
    data = np.random.default_rng(3).integers(1, 255, (3, 90, 100), dtype=np.uint8)
    data[:, 10:40, 20:70] = 7
    scene = write_geotiff(tmp_path / "nodata.tif", data, nodata=7)
    mask = cli_mask(tmp_path, scene, half_metre_model)
    result = geofuse.predict_array(half_metre_model, data, nodata=7, pixel_size=0.5,
                                   tiling=TilingConfig(tile=64))
    np.testing.assert_array_equal(result.classes, mask)
    assert (result.classes[10:40, 20:70] == 255).all() and (mask != 255).sum() > 0
    ignored = geofuse.predict_array(half_metre_model, data, nodata=7, pixel_size=0.5,
                                    input=InputConfig(ignore_nodata=True),
                                    tiling=TilingConfig(tile=64))
    np.testing.assert_array_equal(ignored.classes,
                                  cli_mask(tmp_path, scene, half_metre_model, "--no-nodata"))
