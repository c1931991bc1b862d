"""Test-time augmentation (`segment --tta`) and areas of interest (`segment --aoi`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from pyproj import Transformer
from rasterio.features import geometry_mask

from geofuse.cli import main
from geofuse.config import SegmentConfig, TilingConfig
from geofuse.model.tta import passes, tta_predictor
from geofuse.read.grid import TileGrid
from geofuse.read.reader import SceneReader
from tests.helpers import UTM_TRANSFORM, write_geotiff


# (forward, inverse) on (batch, rows, cols, channels), written out independently of
# geofuse.model.tta
def _t(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 1, 3)


DIHEDRAL = {
    "identity": (lambda x: x, lambda y: y),
    "left-right": (lambda x: x[:, :, ::-1], lambda y: y[:, :, ::-1]),
    "up-down": (lambda x: x[:, ::-1], lambda y: y[:, ::-1]),
    "half-turn": (lambda x: x[:, ::-1, ::-1], lambda y: y[:, ::-1, ::-1]),
    "quarter-turn": (lambda x: _t(x)[:, ::-1], lambda y: _t(y[:, ::-1])),
    "three-quarter-turn": (lambda x: _t(x)[:, :, ::-1], lambda y: _t(y[:, :, ::-1])),
    "transpose": (_t, _t),
    "anti-transpose": (lambda x: _t(x[:, ::-1, ::-1]), lambda y: _t(y)[:, ::-1, ::-1]),
}
MODES = {
    "flips": ["identity", "left-right", "up-down", "half-turn"],
    "rotations": ["identity", "quarter-turn", "half-turn", "three-quarter-turn"],
    "all": list(DIHEDRAL),
}


def position_dependent(x: np.ndarray) -> np.ndarray:
    """Not equivariant under any flip or rotation: the output depends on where a pixel is."""
    rows, cols = np.mgrid[: x.shape[1], : x.shape[2]]
    ramp = (0.3 * rows + 0.01 * cols**2 + 0.07 * rows * cols)[None, :, :, None]
    shifted = np.roll(x, 1, axis=2)  # mixes in the left neighbour
    return np.tanh(x * 0.5 + shifted * 0.25 + ramp)


@pytest.mark.parametrize("mode", list(MODES))
def test_tta_equals_the_mean_of_the_transformed_predictions(mode: str) -> None:
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype(np.float32)
    expected = np.mean(
        [inv(position_dependent(fwd(x))) for fwd, inv in (DIHEDRAL[n] for n in MODES[mode])],
        axis=0,
    )
    got = tta_predictor(position_dependent, mode)(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert passes(mode) == len(MODES[mode])
    assert not np.allclose(got, position_dependent(x), atol=1e-3)  # the test can tell


@pytest.mark.parametrize("mode", list(MODES))
def test_tta_of_any_function_is_equivariant_and_of_a_pixelwise_one_is_unchanged(
    mode: str,
) -> None:
    x = np.random.default_rng(1).normal(size=(1, 10, 10, 2)).astype(np.float32)
    averaged = tta_predictor(position_dependent, mode)
    for name in MODES[mode]:
        fwd, _ = DIHEDRAL[name]
        np.testing.assert_allclose(averaged(fwd(x)), fwd(averaged(x)), rtol=1e-5, atol=1e-6)

    def pixelwise(v: np.ndarray) -> np.ndarray:
        return np.tanh(v @ np.array([[1.0, -2.0, 0.5], [0.3, 0.8, -1.0]], np.float32))

    np.testing.assert_allclose(tta_predictor(pixelwise, mode)(x), pixelwise(x), atol=1e-6)
    assert tta_predictor(pixelwise, "none") is pixelwise and passes("none") == 1


def _read(path: Path, band: int | None = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band) if band else ds.read()


def test_segment_tta_matches_segmenting_the_eight_transformed_scenes(
    tmp_path: Path, tiny_models
) -> None:
    from geofuse.model.modelfile import load_model
    from geofuse.segment import make_predictor, segment_scene

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    model = tiny_models(bands=3, classes=3)
    result = CliRunner().invoke(main, [
        "segment", str(scene), str(tmp_path / "tta.tif"), "--model", str(model), "--tile", "64",
        "--tta", "--probabilities", str(tmp_path / "tta_p.tif"), "--probability-dtype", "float32",
        "--runtime", "tensorflow",  # compared below with TensorFlow's own predictions
    ])
    assert result.exit_code == 0, result.output
    assert "1 tile x 8 TTA passes = 8 model passes" in result.output
    with rasterio.open(tmp_path / "tta_p.tif") as ds:
        tta = np.moveaxis(ds.read(), 0, -1)[None]
        assert ds.tags()["GEOFUSE_TTA"] == "all"

    loaded = load_model(model)
    predictor = make_predictor(loaded.model, 1, 64, 3)  # one tile: a batch of one
    config = TilingConfig(tile=64, overlap=8)
    outputs = []
    for i, (fwd, inv) in enumerate(DIHEDRAL.values()):
        moved = np.moveaxis(fwd(np.moveaxis(image, 0, -1)[None])[0], -1, 0)
        path = write_geotiff(tmp_path / f"t{i}.tif", np.ascontiguousarray(moved))
        probs = tmp_path / f"t{i}_p.tif"
        segment_scene(path, tmp_path / f"t{i}_m.tif", loaded,
                      SegmentConfig(tiling=config, probabilities=probs,
                                    probability_dtype="float32"), predictor=predictor)
        outputs.append(inv(np.moveaxis(_read(probs, None), 0, -1)[None]))
    np.testing.assert_allclose(tta, np.mean(outputs, axis=0), atol=1e-5)
    assert np.abs(tta - outputs[0]).max() > 1e-3  # TTA really changed the answer


@pytest.mark.parametrize(("mode", "tile"), [("flips", "48x80"), ("rotations", "80")])
def test_tta_on_a_scene_that_is_not_square(tmp_path: Path, tiny_models, mode: str,
                                           tile: str) -> None:
    """Flips keep a 48 x 80 tile's shape; quarter turns need a square one: either way the
    result is the mean of segmenting the transformed scenes."""
    from geofuse.model.modelfile import load_model
    from geofuse.segment import segment_scene

    image = np.random.default_rng(3).integers(0, 256, (3, 48, 80), dtype=np.uint8)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    model = tiny_models(bands=3, classes=3)
    result = CliRunner().invoke(main, [
        "segment", str(scene), str(tmp_path / "tta.tif"), "--model", str(model), "--tta", mode,
        "--probabilities", str(tmp_path / "tta_p.tif"), "--probability-dtype", "float32",
        "--runtime", "tensorflow"])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "tta_p.tif") as ds:
        tta = np.moveaxis(ds.read(), 0, -1)[None]
        assert ds.tags()["GEOFUSE_TILE"] == tile and ds.shape == (48, 80)
    loaded = load_model(model)
    config = TilingConfig(runtime="tensorflow")
    outputs = []
    for i, name in enumerate(MODES[mode]):
        fwd, inv = DIHEDRAL[name]
        moved = np.moveaxis(fwd(np.moveaxis(image, 0, -1)[None])[0], -1, 0)
        path = write_geotiff(tmp_path / f"t{i}.tif", np.ascontiguousarray(moved))
        probs = tmp_path / f"t{i}_p.tif"
        segment_scene(path, tmp_path / f"t{i}_m.tif", loaded,
                      SegmentConfig(tiling=config, probabilities=probs,
                                    probability_dtype="float32"))
        outputs.append(inv(np.moveaxis(_read(probs, None), 0, -1)[None]))
    if mode == "rotations":  # TTA read an 80² tile, padded; each scene alone got its own shape
        difference = np.abs(tta - np.mean(outputs, axis=0))  # measured: 0.0085 at most
        assert difference.max() < 0.05 and difference.mean() < 1e-3
    else:
        np.testing.assert_allclose(tta, np.mean(outputs, axis=0), atol=1e-5)


def test_tta_changes_nothing_for_a_pixelwise_model_and_keeps_nodata(tmp_path: Path) -> None:
    import keras

    from geofuse.model.modelfile import save_model
    from geofuse.model.spec import Architecture, ClassInfo, ModelInfo, ModelSpec, Normalization

    keras.utils.set_random_seed(3)
    net = keras.Sequential([keras.Input((None, None, 3)),
                            keras.layers.Conv2D(3, 1, activation="softmax")])
    info = ModelInfo(spec=ModelSpec(bands=3, classes=3, arch=Architecture(depth=2, base_filters=4)),
                     band_names=("r", "g", "b"),
                     normalization=Normalization.identity(3, scale=1 / 255),
                     classes=tuple(ClassInfo(i, f"c{i}") for i in range(3)))
    model = save_model(net, info, tmp_path / "pixelwise.keras")
    image = np.random.default_rng(4).integers(1, 256, (3, 100, 90), dtype=np.uint8)
    image[:, 70:, :20] = 0  # nodata corner
    scene = write_geotiff(tmp_path / "scene.tif", image, nodata=0)
    masks = {}
    for tta in ("none", "all"):
        out = tmp_path / f"{tta}.tif"
        result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model",
                                           str(model), "--tile", "32", "--tta", tta, "-q"])
        assert result.exit_code == 0, result.output
        masks[tta] = _read(out)
    np.testing.assert_array_equal(masks["all"], masks["none"])
    assert (masks["all"][70:, :20] == 255).all() and (masks["all"][:70] != 255).all()


# -- areas of interest ------------------------------------------------------------------------

def _scene(tmp_path: Path, shape: tuple[int, int] = (200, 160)) -> Path:
    image = np.random.default_rng(5).integers(0, 256, (3, *shape), dtype=np.uint8)
    return write_geotiff(tmp_path / "scene.tif", image)


def _pixel_polygon(points: list[tuple[float, float]]) -> shapely.Polygon:
    """A polygon given in (column, row) pixel positions, in the scene's UTM coordinates."""
    return shapely.Polygon([UTM_TRANSFORM * p for p in points])


def _write_geojson_lonlat(path: Path, polygon: shapely.Polygon) -> Path:
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    ring = [list(to_lonlat.transform(x, y)) for x, y in polygon.exterior.coords]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                          "coordinates": [ring]}}]}))
    return path


@pytest.mark.parametrize("blend", ["hann", "center"])
def test_aoi_in_another_crs_leaves_nodata_outside_and_full_results_inside(
    tmp_path: Path, tiny_models, blend: str
) -> None:
    scene = _scene(tmp_path)
    triangle = _pixel_polygon([(30.3, 40.7), (120.2, 70.1), (50.6, 150.4)])
    aoi = _write_geojson_lonlat(tmp_path / "aoi.geojson", triangle)
    model = tiny_models(bands=3, classes=3)
    common = ["--model", str(model), "--tile", "64", "--overlap", "16", "--blend", blend, "-q"]
    runner = CliRunner()
    assert runner.invoke(main, ["segment", str(scene), str(tmp_path / "full.tif"),
                                *common]).exit_code == 0
    result = runner.invoke(main, ["segment", str(scene), str(tmp_path / "aoi.tif"), *common,
                                  "--aoi", str(aoi)])
    assert result.exit_code == 0, result.output
    full, part = _read(tmp_path / "full.tif"), _read(tmp_path / "aoi.tif")
    inside = geometry_mask([triangle], out_shape=full.shape, transform=UTM_TRANSFORM,
                           invert=True)
    assert 0 < inside.sum() < inside.size / 2
    assert (part[~inside] == 255).all()
    np.testing.assert_array_equal(part[inside], full[inside])
    with rasterio.open(tmp_path / "aoi.tif") as ds:
        assert ds.crs == "EPSG:32633" and ds.transform == UTM_TRANSFORM
        assert ds.tags()["GEOFUSE_AOI"] == "aoi.geojson"


def test_aoi_windows_outside_are_never_read(
    tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = _scene(tmp_path)
    rectangle = _pixel_polygon([(10.2, 5.5), (70.8, 5.5), (70.8, 60.1), (10.2, 60.1)])
    aoi = tmp_path / "aoi.gpkg"  # a GeoPackage in the scene CRS this time
    pyogrio.raw.write(aoi, shapely.to_wkb(np.array([rectangle])), [], [], crs="EPSG:32633",
                      driver="GPKG", geometry_type="Polygon")
    reads: list[tuple[int, int, int, int]] = []
    original = SceneReader._data  # every read of pixel values goes through it

    def recording(self: SceneReader, window: rasterio.windows.Window, valid: object) -> tuple:
        reads.append((int(window.col_off), int(window.row_off), int(window.width),
                      int(window.height)))
        return original(self, window, valid)

    monkeypatch.setattr(SceneReader, "_data", recording)
    model = tiny_models(bands=3, classes=3)
    result = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "out.tif"),
                                       "--model", str(model), "--tile", "64", "--exact-tile",
                                       "--overlap", "16", "--aoi", str(aoi)])
    assert result.exit_code == 0, result.output

    inside = geometry_mask([rectangle], out_shape=(200, 160), transform=UTM_TRANSFORM,
                           invert=True)
    grid = TileGrid(200, 160, 64, 16)
    needed = set()
    for tile in grid:
        c0, r0 = int(tile.read.col_off), int(tile.read.row_off)
        if inside[r0 : r0 + 64, c0 : c0 + 64].any():
            needed.add((c0, r0, min(64, 160 - c0), min(64, 200 - r0)))
    assert sorted(reads) == sorted(needed)
    assert 0 < len(needed) < len(grid)
    assert f"{len(needed)} tiles of {len(grid)} (area of interest)" in result.output
    mask = _read(tmp_path / "out.tif")
    assert (mask[~inside] == 255).all() and (mask[inside] != 255).all()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("outside", "the area of interest does not overlap the scene"),
        ("points", "Expected polygons in"),
        ("missing", "no such file"),
        ("garbage", "not a readable vector file"),
    ],
)
def test_bad_aoi_gives_one_line_error_and_no_output(
    tmp_path: Path, tiny_models, case: str, message: str
) -> None:
    scene = _scene(tmp_path, (64, 64))
    aoi = tmp_path / "aoi.geojson"
    if case == "outside":
        _write_geojson_lonlat(aoi, _pixel_polygon([(100, 100), (200, 100), (200, 200)]))
    elif case == "points":
        aoi.write_text('{"type": "Point", "coordinates": [15.0, 46.2]}')
    elif case == "garbage":
        aoi.write_text("not a vector file")
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model",
                                       str(tiny_models(bands=3, classes=3)), "--tile", "64",
                                       "--aoi", str(aoi), "-q"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(aoi) in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scene.tif"] + (["aoi.geojson"] if case != "missing" else [])
    )
