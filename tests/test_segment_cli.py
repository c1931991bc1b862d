"""`geofuse segment` driven through the CLI on real and generated GeoTIFFs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from geofuse.cli import main
from tests.helpers import ROOT, write_geotiff


def segment(*args: str | Path) -> object:
    result = CliRunner().invoke(main, ["segment", *map(str, args), "--quiet"])
    return result


def expected_validity(path: Path) -> np.ndarray:
    """Validity computed independently of geofuse, per documented layout."""
    with rasterio.open(path) as ds:
        alpha = [i for i, ci in enumerate(ds.colorinterp, 1) if ci.name == "alpha"]
        bands = [i for i in range(1, ds.count + 1) if i not in alpha]
        data = ds.read(bands)
        valid = np.ones(data.shape[1:], dtype=bool)
        if alpha:
            valid &= ds.read(alpha[0]) > 0
        if Path(f"{path}.msk").exists():
            with rasterio.open(f"{path}.msk") as msk:
                valid &= msk.read(1) > 0
        if ds.nodata is not None and not np.isnan(ds.nodata):
            valid &= np.all(data != ds.nodata, axis=0)
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
    return valid


REAL_SCENES = [
    "landsat-rasterio/RGB.byte.tif",
    "landsat-rasterio/RGB2.byte.tif",
    "landsat-rasterio/RGBA.byte.tif",
    "landsat-rasterio/float_nan.tif",
    "landsat-rasterio/shade.tif",
    "landsat-rasterio/world.byte.tif",
    "sen1floods11-sample/S1/Spain_7370579_S1Hand.tif",
    "sen1floods11-sample/S2/Spain_7370579_S2Hand.tif",
    "sen1floods11-sample/Labels/Spain_7370579_LabelHand.tif",
    "spacenet-solaris/sample_geotiff.tif",
    "spacenet-solaris/ms1.tif",
    "spacenet-solaris/pan1.tif",
    "spacenet-solaris/road_mask_input.tif",
]


@pytest.mark.parametrize("name", REAL_SCENES)
def test_output_lines_up_with_every_real_scene(
    real: Path, tiny_models, tmp_path: Path, name: str
) -> None:
    scene = real / name
    with rasterio.open(scene) as ds:
        alpha = sum(ci.name == "alpha" for ci in ds.colorinterp)
        bands, crs, transform, shape = ds.count - alpha, ds.crs, ds.transform, ds.shape
        scale = 1 / 255 if ds.dtypes[0] == "uint8" else 1 / 1000
        dtype = ds.dtypes[0]
    model = tiny_models(bands=bands, scale=scale, input_dtype=dtype)
    out = tmp_path / "mask.tif"
    result = segment(scene, out, "--model", model, "--tile", "128", "--overlap", "16")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.crs == crs
        assert dst.transform == transform
        assert dst.shape == shape
        assert dst.nodata == 255
        mask = dst.read(1)
    valid = expected_validity(scene)
    np.testing.assert_array_equal(mask == 255, ~valid)
    assert mask[valid].max() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_wrong_band_count_names_both_counts(real: Path, tiny_models, tmp_path: Path) -> None:
    out = tmp_path / "m.tif"
    result = segment(real / "landsat-rasterio/shade.tif", out, "--model", tiny_models(bands=3))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == ["Error: Expected 3 bands. Received: 1 band in "
                     f"{real / 'landsat-rasterio/shade.tif'}"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_band_selection_feeds_the_model(real: Path, tiny_models, tmp_path: Path) -> None:
    scene = real / "sen1floods11-sample/S2/Spain_7370579_S2Hand.tif"
    out = tmp_path / "rgb.tif"
    result = segment(scene, out, "--model", tiny_models(bands=3, scale=1e-4, input_dtype="int16"),
                     "--bands", "4,3,2", "--tile", "256")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert dst.transform == src.transform and dst.crs == src.crs
        valid = np.all(src.read([4, 3, 2]) != 0, axis=0)
        np.testing.assert_array_equal(dst.read(1) == 255, ~valid)


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.tif", "missing.tif: no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "junk.tif").write_text("not a raster") and d / "junk.tif",
         "junk.tif: not a readable raster"),
    ],
    ids=["missing", "directory", "not-a-raster"],
)
def test_bad_inputs_fail_in_one_line(tiny_models, tmp_path: Path, make_input, message) -> None:
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    scene = make_input(src_dir)
    out = tmp_path / "out.tif"
    result = segment(scene, out, "--model", tiny_models())
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in"]


def test_corrupt_tiff_leaves_no_output(tiny_models, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scene = write_geotiff(tmp_path / "cut.tif", rng.integers(0, 255, (3, 256, 256), np.uint8),
                          tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    scene.write_bytes(scene.read_bytes()[:20000])
    out = tmp_path / "out" / "mask.tif"
    out.parent.mkdir()
    result = segment(scene, out, "--model", tiny_models(), "--tile", "64")
    assert result.exit_code == 1
    assert "cut.tif" in result.output and len(result.output.strip().splitlines()) == 1
    assert list(out.parent.iterdir()) == []


def test_unwritable_destination(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", np.ones((3, 32, 32), np.uint8))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    # root ignores permission bits; /sys refuses new files to everyone
    target = ro / "m.tif" if os.geteuid() != 0 else Path("/sys/geofuse-test.tif")
    result = segment(scene, target, "--model", tiny_models())
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {target}: folder {target.parent} is not writable")
    assert not target.exists()


def test_destination_in_missing_folder_is_created(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", np.ones((3, 32, 32), np.uint8))
    result = segment(scene, tmp_path / "nope" / "deeper" / "m.tif", "--model", tiny_models())
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "nope" / "deeper" / "m.tif") as dst:
        assert dst.shape == (32, 32)


def test_existing_output_needs_overwrite(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", np.full((3, 40, 40), 9, np.uint8))
    out = tmp_path / "m.tif"
    out.write_bytes(b"precious")
    result = segment(scene, out, "--model", tiny_models(), "--tile", "32")
    assert result.exit_code == 1 and "already exists" in result.output
    assert out.read_bytes() == b"precious"
    result = segment(scene, out, "--model", tiny_models(), "--tile", "32", "--overwrite")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.shape == (40, 40)


def test_output_is_a_valid_cog_with_tags_colours_and_overviews(tiny_models, tmp_path: Path):
    rng = np.random.default_rng(3)
    scene = write_geotiff(tmp_path / "s.tif", rng.integers(1, 255, (3, 700, 600), np.uint8))
    out = tmp_path / "m.tif"
    model = tiny_models()
    result = segment(scene, out, "--model", model, "--tile", "256", "--overlap", "32")
    assert result.exit_code == 0, result.output
    is_valid, errors, _ = cog_validate(str(out))
    assert is_valid, errors
    with rasterio.open(out) as dst:
        tags = dst.tags()
        # the tile fitted to the scene: 2 tiles of 368 x 600 px (as wide as the scene, within
        # one call's pixels) compute fewer pixels than 2 x 2 of 368² px two per call, or 3 x 3
        # of 256 px in three calls of four (the last one padded)
        assert tags["GEOFUSE_TILE"] == "368x600" and tags["GEOFUSE_OVERLAP"] == "32"
        assert tags["GEOFUSE_BLEND"] == "hann"
        assert len(tags["GEOFUSE_MODEL_SHA256"]) == 64
        assert dst.overviews(1) == [2]
        assert dst.colormap(1)[255][3] == 0
        assert dst.compression is not None and dst.profile["tiled"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_probabilities_sum_to_one_and_match_the_mask(tiny_models, tmp_path: Path, dtype: str):
    rng = np.random.default_rng(4)
    data = rng.integers(1, 255, (3, 100, 90), np.uint8)
    data[:, :10, :] = 0
    scene = write_geotiff(tmp_path / "s.tif", data, nodata=0)
    out, probs = tmp_path / "m.tif", tmp_path / "p.tif"
    result = segment(scene, out, "--model", tiny_models(), "--tile", "32", "--overlap", "8",
                     "--probabilities", probs, "--probability-dtype", dtype)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as m, rasterio.open(probs) as p:
        mask = m.read(1)
        prob = p.read().astype(np.float64)
        assert p.count == 3 and p.transform == m.transform and p.crs == m.crs
        assert p.descriptions == ("class0", "class1", "class2")
        valid = mask != 255
        if dtype == "uint8":
            assert (prob[:, ~valid] == 255).all()
            prob = prob * p.scales[0]
            tolerance = 3 / 254
        else:
            assert np.isnan(prob[:, ~valid]).all()
            tolerance = 1e-5
        np.testing.assert_allclose(prob[:, valid].sum(axis=0), 1.0, atol=tolerance)
        # the mask's class has the highest probability (up to one quantisation step)
        chosen = np.take_along_axis(prob, np.where(valid, mask, 0)[None].astype(int), 0)[0]
        assert (chosen[valid] >= prob.max(axis=0)[valid] - tolerance).all()
    assert not valid[:10].any() and valid[10:].all()


def test_center_blend_and_tile_must_fit_the_model(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", np.full((3, 50, 50), 100, np.uint8))
    out = tmp_path / "m.tif"
    result = segment(scene, out, "--model", tiny_models(depth=3), "--tile", "36")
    assert result.exit_code == 1 and "multiple of 8" in result.output and not out.exists()
    result = segment(scene, out, "--model", tiny_models(depth=3), "--tile", "32", "--blend",
                     "center")
    assert result.exit_code == 0, result.output


def test_help_is_instant_and_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from geofuse.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); "
            "assert r.exit_code == 0 and 'segment' in r.output; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gcp_georeferencing_is_carried_over(tiny_models, tmp_path: Path) -> None:
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    gcps = [GroundControlPoint(row=r, col=c, x=10 + c * 1e-4, y=45 - r * 1e-4)
            for r, c in [(0, 0), (0, 63), (47, 0), (47, 63)]]
    scene = tmp_path / "gcp.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=48, count=3, dtype="uint8",
                       gcps=gcps, crs=CRS.from_epsg(4326)) as dst:
        dst.write(np.full((3, 48, 64), 50, np.uint8))
    out = tmp_path / "m.tif"
    result = segment(scene, out, "--model", tiny_models(), "--tile", "32")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        points, crs = dst.gcps
        assert crs == CRS.from_epsg(4326)
        def key(p):
            return (p.row, p.col, p.x, p.y)

        assert [key(p) for p in points] == [key(p) for p in gcps]


@pytest.mark.parametrize(
    "name",
    ["sentinel2-forest-hu/test_images/cnn_0.jpg",  # georeferenced by a .aux.xml sidecar
     "dubai-aerial-hitl/Tile 1/images/image_part_001.jpg",  # no georeferencing, space in path
     "massachusetts-roads-subset/images/17428750_15.png"],
)
def test_jpeg_and_png_scenes(real: Path, tiny_models, tmp_path: Path, name: str) -> None:
    scene = real / name
    out = tmp_path / "out dir" / "mask.tif"
    out.parent.mkdir()
    result = segment(scene, out, "--model", tiny_models(), "--tile", "256")
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert (dst.crs is not None) == ("sentinel2" in name)
        assert (dst.read(1) != 255).all()


@pytest.mark.parametrize("blend", ["hann", "center"])
def test_a_wide_scene_stitched_by_columns_matches_row_order(
        tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch, blend: str) -> None:
    """A scene wider than tall is stitched column by column (memory ~ its height): same output."""
    from geofuse import segment as segment_module

    rng = np.random.default_rng(5)
    coarse = rng.integers(1, 255, (3, 9, 41))
    data = np.kron(coarse, np.ones((8, 8)))[:, :70, :321].astype(np.uint8)
    data[:, 30:40, 100:130] = 0  # a nodata hole
    scene = write_geotiff(tmp_path / "wide.tif", data, nodata=0, tiled=True, blockxsize=64,
                          blockysize=64)  # columns only for a tiled file
    outputs = {}
    for columns in (True, False):
        monkeypatch.setattr(segment_module, "COLUMNS_WHEN_WIDER", columns)
        out = tmp_path / f"m-{columns}.tif"
        result = segment(scene, out, "--model", tiny_models(), "--tile", "32", "--blend", blend,
                         "--probabilities", tmp_path / f"p-{columns}.tif",
                         "--probability-dtype", "float32", "-q")
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as m, rasterio.open(tmp_path / f"p-{columns}.tif") as p:
            outputs[columns] = (m.read(1), p.read(), m.crs, m.transform)
    by_columns, by_rows = outputs[True], outputs[False]
    assert len(np.unique(by_rows[0])) > 1 and (by_rows[0][30:40, 100:130] == 255).all()
    np.testing.assert_array_equal(by_columns[0], by_rows[0])
    np.testing.assert_allclose(by_columns[1], by_rows[1], rtol=1e-5, atol=1e-6)
    assert by_columns[2:] == by_rows[2:]


def rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_png_input_warns_in_one_clean_line(tmp_path: Path, tiny_models) -> None:
    Image.fromarray(np.moveaxis(rgb(7, 32, 32), 0, -1)).save(tmp_path / "x.png")
    result = subprocess.run(
        [sys.executable, "-m", "geofuse.cli", "segment", str(tmp_path / "x.png"),
         str(tmp_path / "m.tif"), "--model", str(tiny_models()), "-q"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Warning: {tmp_path / 'x.png'} is not georeferenced (no CRS, geotransform or GCPs), "
        f"so neither is {tmp_path / 'm.tif'}"]
