"""The model's input contract at segment time: band names, data type and range, pixel size,
nodata overrides — driven through the CLI on generated GeoTIFFs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.enums import ColorInterp

from geofuse.cli import main
from geofuse.model.modelfile import read_info
from geofuse.read.contract import pixel_size_m
from tests.helpers import UTM_TRANSFORM, make_tiny_model, write_geotiff

RGB = ("red", "green", "blue")


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny uint8 model trained (as it says) on red, green, blue at 0.5 m."""
    return make_tiny_model(tmp_path_factory.mktemp("m") / "rgb.keras", bands=3, classes=3,
                           contract={"band_names": RGB, "color_interp": RGB, "pixel_size": 0.5,
                                     "value_range": ((10, 240), (12, 235), (8, 250))})


def image(shape: tuple[int, int] = (72, 88), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, *shape), dtype=np.uint8)


def run(*args: object) -> object:
    return CliRunner().invoke(main, ["segment", *map(str, args), "--tile", "64", "--overlap",
                                     "16", "--runtime", "tensorflow"])


def outputs(mask: Path) -> tuple[np.ndarray, np.ndarray | None, rasterio.profiles.Profile]:
    probs = mask.with_name(mask.stem + "_p.tif")
    with rasterio.open(mask) as ds:
        values, profile = ds.read(1), ds.profile
    if not probs.exists():
        return values, None, profile
    with rasterio.open(probs) as ds:
        return values, ds.read(), profile


def probs_args(mask: Path) -> list[str]:
    return ["--probabilities", str(mask.with_name(mask.stem + "_p.tif")),
            "--probability-dtype", "float32"]


def test_bands_stored_blue_green_red_and_tagged_so_give_the_rgb_mask(
    tmp_path: Path, rgb_model: Path
) -> None:
    data = image()
    rgb = write_geotiff(tmp_path / "rgb.tif", data)
    with rasterio.open(rgb, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    bgr = write_geotiff(tmp_path / "bgr.tif", data[::-1].copy())
    with rasterio.open(bgr, "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    described = write_geotiff(tmp_path / "described.tif", data[::-1].copy())
    with rasterio.open(described, "r+") as ds:
        ds.descriptions = ("Blue", "Green", "Red")
    untagged = write_geotiff(tmp_path / "untagged.tif", data[::-1].copy())

    masks = {}
    for scene in (rgb, bgr, described, untagged):
        out = tmp_path / f"{scene.stem}_mask.tif"
        result = run(scene, out, "--model", rgb_model, *probs_args(out))
        assert result.exit_code == 0, result.output
        masks[scene.stem] = outputs(out)
        if scene in (bgr, described):
            assert "bands 3,2,1 matched to the model's red, green, blue by their names" \
                in result.output
    for name in ("bgr", "described"):
        np.testing.assert_array_equal(masks[name][0], masks["rgb"][0])
        np.testing.assert_array_equal(masks[name][1], masks["rgb"][1])
    assert not np.array_equal(masks["untagged"][1], masks["rgb"][1])  # positional: b, g, r

    result = run(rgb, tmp_path / "forced.tif", "--model", rgb_model, "--bands", "3,2,1")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "--bands 3,2,1" in line]
    assert len(warnings) == 1 and "named blue, green, red into the model's red, green, blue" \
        in warnings[0]


def test_another_data_type_is_refused_unless_its_range_is_given(
    tmp_path: Path, rgb_model: Path
) -> None:
    data = image()
    scene8 = write_geotiff(tmp_path / "u8.tif", data)
    scene16 = write_geotiff(tmp_path / "s2.tif", data.astype(np.int16) * 12)  # 255 * 12 = 3060
    out = tmp_path / "mask.tif"
    result = run(scene16, out, "--model", rgb_model)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert lines == [f"Error: Expected uint8 input. Received: int16 in {scene16}; give "
                     "--input-range LOW,HIGH or --stretch percentile"]
    assert not out.exists() and not list(tmp_path.glob(".mask.tif*"))

    result = run(scene16, out, "--model", rgb_model, "--input-range", "0,3060", *probs_args(out))
    assert result.exit_code == 0, result.output
    ref = tmp_path / "ref.tif"
    assert run(scene8, ref, "--model", rgb_model, *probs_args(ref)).exit_code == 0
    mask16, probs16, profile = outputs(out)
    np.testing.assert_allclose(probs16, outputs(ref)[1], atol=1e-5)
    with rasterio.open(out) as ds:
        assert "values 0..3060 -> 0..255" in ds.tags()["GEOFUSE_INPUT"]

    # --stretch percentile: an affine change of the values gives the same mask
    shifted = write_geotiff(tmp_path / "shifted.tif", data.astype(np.int16) * 7 + 100)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert run(shifted, a, "--model", rgb_model, "--stretch", "percentile",
               *probs_args(a)).exit_code == 0
    assert run(scene8, b, "--model", rgb_model, "--stretch", "percentile",
               *probs_args(b)).exit_code == 0
    np.testing.assert_allclose(outputs(a)[1], outputs(b)[1], atol=1e-5)

    both = run(scene16, out, "--model", rgb_model, "--input-range", "0,1", "--stretch",
               "percentile")
    assert both.exit_code == 2 and "Expected --input-range or --stretch" in both.output


def test_values_far_outside_the_training_range_get_a_notice(
    tmp_path: Path, rgb_model: Path
) -> None:
    dark = write_geotiff(tmp_path / "dark.tif", (image() // 40).astype(np.uint8))  # 0..6
    result = run(dark, tmp_path / "m.tif", "--model", rgb_model)
    assert result.exit_code == 0, result.output
    assert "lie outside the model's training range 10..240" in result.output
    ok = write_geotiff(tmp_path / "ok.tif", image())
    result = run(ok, tmp_path / "n.tif", "--model", rgb_model)
    assert "training range" not in result.output


@pytest.mark.parametrize(("size", "notice"), [(2.0, True), (0.6, False)])
def test_coarser_scene_is_read_at_the_models_pixel_size_on_its_own_grid(
    tmp_path: Path, rgb_model: Path, size: float, notice: bool
) -> None:
    data = image((40, 48))
    data[:, :6] = 0  # a nodata collar (the top rows)
    transform = Affine(size, 0, 500100.0, 0, -size, 5123000.0)
    scene = write_geotiff(tmp_path / "coarse.tif", data, transform=transform, nodata=0)
    probabilities = {}
    for mode in ("auto", "off"):
        out = tmp_path / f"{mode}.tif"
        result = run(scene, out, "--model", rgb_model, "--resample", mode, *probs_args(out))
        assert result.exit_code == 0, result.output
        lines = [line for line in result.output.splitlines() if "pixel size" in line]
        if not notice:
            assert lines == []
            continue
        assert len(lines) == 1 and "pixel size 2 m, the model's 0.5 m" in lines[0]
        assert ("reading it at 0.5 m" in lines[0]) == (mode == "auto")
        mask, probs, profile = outputs(out)
        probabilities[mode] = probs
        assert (profile["width"], profile["height"]) == (48, 40)
        assert profile["transform"] == transform and profile["crs"] == "EPSG:32633"
        np.testing.assert_array_equal(mask == 255, (data == 0).all(axis=0))
        np.testing.assert_allclose(probs[:, 6:].sum(axis=0), 1.0, atol=1e-5)
        with rasterio.open(out) as ds:
            assert ("resampled x4" in ds.tags()["GEOFUSE_INPUT"]) == (mode == "auto")
    if notice:
        assert np.abs(probabilities["auto"] - probabilities["off"])[:, 6:].max() > 1e-3


def test_batch_reports_each_scenes_notices_and_refusals(tmp_path: Path, rgb_model: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    coarse = Affine(2.0, 0, 500100.0, 0, -2.0, 5123000.0)
    write_geotiff(folder / "coarse.tif", image((40, 48)), transform=coarse)
    write_geotiff(folder / "s2.tif", image().astype(np.int16) * 12)
    write_geotiff(folder / "plain.tif", image())
    result = CliRunner().invoke(main, ["batch", str(folder), str(tmp_path / "out"), "--model",
                                       str(rgb_model), "--tile", "64", "--runtime",
                                       "tensorflow", "-q"])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "out" / "geofuse-report.json").read_text())
    scenes = {r["scene"]: r for r in report["scenes"]}
    assert scenes["coarse.tif"]["status"] == "done"
    assert len(scenes["coarse.tif"]["notices"]) == 1
    assert "pixel size 2 m, the model's 0.5 m" in scenes["coarse.tif"]["notices"][0]
    assert scenes["plain.tif"]["status"] == "done" and scenes["plain.tif"]["notices"] == []
    assert scenes["s2.tif"]["status"] == "failed"
    assert "Expected uint8 input. Received: int16" in scenes["s2.tif"]["error"]
    with rasterio.open(tmp_path / "out" / "coarse.tif") as ds:
        assert ds.transform == coarse and ds.shape == (40, 48)


def test_nodata_value_that_is_also_a_real_colour(tmp_path: Path, rgb_model: Path) -> None:
    data = image()
    data[:, :, :8] = 0  # a black collar
    data[:, 30:40, 30:50] = 255  # white roofs: a real colour that is also the nodata value
    scene = write_geotiff(tmp_path / "white.tif", data, nodata=255)
    masks = {}
    for name, extra in (("own", []), ("none", ["--no-nodata"]), ("zero", ["--nodata", "0"])):
        out = tmp_path / f"{name}.tif"
        result = run(scene, out, "--model", rgb_model, *extra)
        assert result.exit_code == 0, result.output
        masks[name] = outputs(out)[0]
    white = (data == 255).any(axis=0)
    black = (data == 0).any(axis=0)
    np.testing.assert_array_equal(masks["own"] == 255, white)
    assert not (masks["none"] == 255).any()
    np.testing.assert_array_equal(masks["zero"] == 255, black)
    both = run(scene, tmp_path / "x.tif", "--model", rgb_model, "--nodata", "0", "--no-nodata")
    assert both.exit_code == 2


def test_pixel_sizes_in_metres_for_projected_and_geographic_crs() -> None:
    assert pixel_size_m("EPSG:32633", UTM_TRANSFORM, 100, 100) == pytest.approx(0.5, rel=2e-3)
    deg = 8.983152841195215e-05  # the Sen1Floods11 chip, ~10 m at 38 N
    lonlat = Affine(deg, 0, -0.78, 0, -deg, 38.13)
    assert pixel_size_m("EPSG:4326", lonlat, 512, 512) == pytest.approx(8.84, abs=0.05)
    mercator = Affine(10, 0, 0, 0, -10, 6_800_000)  # Web Mercator 10 m at ~52 N is ~6.2 m
    assert pixel_size_m("EPSG:3857", mercator, 10, 10) == pytest.approx(6.19, abs=0.05)
    assert pixel_size_m(None, UTM_TRANSFORM, 10, 10) is None


def test_info_shows_the_contract(rgb_model: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(rgb_model), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output[result.output.index("{"):])
    assert facts["input"]["pixel_size"] == "0.5 m"
    assert facts["input"]["value_range"].startswith("red 10..240, green 12..235, blue 8..250")
    assert facts["card"]["pixel_size"] == "0.5 m"


def test_training_records_colours_value_range_and_pixel_size(tmp_path: Path) -> None:
    from geofuse.model.spec import Architecture
    from geofuse.training.config import LabelOptions
    from geofuse.training.train import SceneSource, TrainConfig, train
    from tests.helpers import make_scene, write_classes

    scene, labels = make_scene(tmp_path, size=(96, 128), collar=8)
    with rasterio.open(scene, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        data = ds.read()
    config = TrainConfig(
        sources=(SceneSource(scene, labels),), out=tmp_path / "m.keras",
        labels=LabelOptions(classes_file=write_classes(tmp_path / "c.json")),
        arch=Architecture(depth=2, base_filters=4), patch=32, batch_size=4, epochs=1,
        steps_per_epoch=1, val_fraction=0.0,
    )
    train(config)
    info = read_info(tmp_path / "m.keras")
    assert info.color_interp == RGB and info.band_names == RGB
    assert info.pixel_size == pytest.approx(0.5, rel=2e-3)
    valid = (data != 0).all(axis=0)
    expected = np.percentile(data[:, valid].astype(float), (0.5, 99.5), axis=1).T
    np.testing.assert_allclose(info.value_range, expected, rtol=1e-6)


def test_back_resampling_averages_footprints_and_streams_by_rows() -> None:
    from geofuse.write.resample import BackResampler, axis_taps

    index, weight = axis_taps(5, 20)  # 4 model pixels per scene pixel: their mean
    dense = np.zeros((5, 20))
    np.add.at(dense, (np.arange(5)[:, None], index), weight)  # taps past the end weigh 0
    np.testing.assert_allclose(dense, np.kron(np.eye(5), np.full((1, 4), 0.25)), atol=1e-7)
    index, weight = axis_taps(20, 5)  # the other way: interpolation, weights sum to 1
    np.testing.assert_allclose(weight.sum(axis=1), 1.0, rtol=1e-6)

    rng = np.random.default_rng(0)
    probs = rng.random((24, 32, 3)).astype(np.float32)
    covered = np.ones((24, 32), bool)
    covered[:4] = False  # no prediction in the top model rows
    rows: dict[int, tuple] = {}
    resampler = BackResampler((24, 32), (6, 8), 3,
                              lambda r0, c, p, c0: rows.update({r0: (c, p)}),
                              lambda r0, n: np.ones((n, 8), bool))
    for r0 in range(0, 24, 5):  # model rows arrive in uneven bands
        resampler.add(r0, covered[r0:r0 + 5], probs[r0:r0 + 5])
    resampler.finish()
    cover = np.concatenate([rows[r][0] for r in sorted(rows)])
    out = np.concatenate([np.zeros((len(rows[r][0]), 8, 3)) if rows[r][1] is None
                          else rows[r][1] for r in sorted(rows)])
    expected = probs.reshape(6, 4, 8, 4, 3).mean(axis=(1, 3))
    assert not cover[0].any() and cover[1:].all()
    np.testing.assert_allclose(out[1:], expected[1:], rtol=1e-5)
