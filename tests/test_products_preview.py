"""`geofuse preview` and `segment --preview`: quick-look PNGs with the mask and a legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from geofuse.cli import main
from geofuse.colours import class_colour, hex_rgb
from geofuse.model.modelfile import read_info, resolve_model_path
from geofuse.products.preview import LEGEND_WIDTH, legend_height
from tests.helpers import write_geotiff

COLOURS = {0: (200, 30, 30), 1: (20, 160, 40), 2: (30, 60, 220)}


def write_mask(path: Path, mask: np.ndarray) -> Path:
    write_geotiff(path, mask.astype(np.uint8), nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {k: (*v, 255) for k, v in COLOURS.items()} | {255: (0, 0, 0, 0)})
        ds.update_tags(GEOFUSE_CLASSES="soil,forest,water")
    return path


def preview(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["preview", *map(str, args)])


def test_full_resolution_preview_shows_class_colours_and_legend(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scene = write_geotiff(tmp_path / "scene.tif", rng.integers(0, 4000, (4, 90, 120), np.uint16))
    mask = np.full((90, 120), 255, dtype=np.uint8)
    mask[10:40, 10:60] = 0
    mask[50:80, 30:100] = 1
    mask[5:20, 80:110] = 2
    mask_path = write_mask(tmp_path / "mask.tif", mask)
    out = tmp_path / "quick.png"
    result = preview(scene, mask_path, out, "--alpha", "1", "--style", "fill")
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (max(90, legend_height(3)), 120 + LEGEND_WIDTH, 3)
    picture = image[:90, :120]
    for cid, colour in COLOURS.items():
        assert (picture[mask == cid] == colour).all()
        legend = image[:, 120:]
        assert (legend == colour).all(axis=-1).sum() > 100, cid  # a filled swatch per class
    # unlabelled pixels show the scene, stretched 2-98 %: dark to bright, not one colour
    scene_px = picture[mask == 255]
    assert scene_px.min() == 0 and scene_px.max() == 255 and len(np.unique(scene_px)) > 50


def test_big_scene_is_shrunk_to_size_and_blends_over_grey(tmp_path: Path) -> None:
    grey = np.tile(np.linspace(0, 1000, 1000, dtype=np.float32), (600, 1))
    scene = write_geotiff(tmp_path / "pan.tif", grey, tiled=True, blockxsize=256,
                          blockysize=256)
    with rasterio.open(scene, "r+") as ds:
        ds.build_overviews([2, 4, 8])
    mask = np.zeros((600, 1000), dtype=np.uint8)
    mask[:, 500:] = 1
    mask_path = write_mask(tmp_path / "mask.tif", mask)
    out = tmp_path / "quick.png"
    result = preview(scene, mask_path, out, "--size", "250", "--alpha", "0.5")
    assert result.exit_code == 0, result.output
    assert f"{out}: {250 + LEGEND_WIDTH}x150 px" in result.output
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape == (150, 250 + LEGEND_WIDTH, 3)
    # a grey scene: each pixel is (grey + class colour) / 2
    for col, cid in ((60, 0), (200, 1)):
        px = image[75, col]
        grey_value = 2 * px - np.array(COLOURS[cid])
        assert np.ptp(grey_value) <= 2, (col, px)


def test_segment_writes_a_preview(tmp_path: Path, tiny_models) -> None:
    image = np.random.default_rng(1).integers(0, 255, (3, 80, 100), dtype=np.uint8)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    out, png = tmp_path / "mask.tif", tmp_path / "quick.png"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model",
                                       str(tiny_models(bands=3, classes=3)), "--tile", "64",
                                       "--preview", str(png)])
    assert result.exit_code == 0, result.output
    picture = np.asarray(Image.open(png).convert("RGB"))
    assert picture.shape == (max(80, legend_height(3)), 100 + LEGEND_WIDTH, 3)
    assert len(np.unique(picture[:80, :100].reshape(-1, 3), axis=0)) > 100


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("size", "Expected a mask of the scene's size 40x30. Received: 20x30"),
        ("extension", "Expected a preview file ending in .png"),
        ("missing", "no such file"),
        ("exists", "already exists"),
    ],
)
def test_bad_preview_inputs(tmp_path: Path, case: str, message: str) -> None:
    scene = write_geotiff(tmp_path / "scene.tif", np.ones((3, 30, 40), np.uint8))
    mask = write_mask(tmp_path / "mask.tif", np.zeros((30, 40)))
    out = tmp_path / "out.png"
    if case == "size":
        mask = write_mask(tmp_path / "small.tif", np.zeros((30, 20)))
    elif case == "extension":
        out = tmp_path / "out.jpg"
    elif case == "missing":
        scene = tmp_path / "nope.tif"
    elif case == "exists":
        out.write_bytes(b"old")
    result = preview(scene, mask, out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert out.exists() == (case == "exists")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_readable_palette_and_default_model(tmp_path: Path) -> None:
    expected = {"water": "#1f78b4", "vegetation": "#33a02c", "building": "#e31a1c",
                "road": "#808080", "land": "#d2b48c"}
    assert {c.name: c.color for c in read_info("default").classes} == expected
    assert resolve_model_path("default") == resolve_model_path(None)
    assert class_colour("Forest", 7) == "#33a02c" and class_colour("class3", 3) != "#000000"
    scene = write_geotiff(tmp_path / "s.tif", rgb(5, 24, 40))
    result = cli("segment", scene, tmp_path / "m.tif", "--model", "default")
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'm.tif'}: 40x24 px, 1 tile," in result.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.tags()["GEOFUSE_MODEL"] == "default.keras"
        assert ds.tags()["GEOFUSE_TILE"] == "24x40"  # one tile of the scene's shape
        assert ds.colormap(1)[3][:3] == hex_rgb(expected["water"])


def test_preview_size_enlarges_small_scenes(tmp_path: Path, tiny_models) -> None:
    scene = write_geotiff(tmp_path / "s.tif", rgb(6, 30, 40))
    assert cli("segment", scene, tmp_path / "m.tif", "--model", tiny_models(), "-q").exit_code == 0
    assert cli("preview", scene, tmp_path / "m.tif", tmp_path / "a.png").exit_code == 0
    assert Image.open(tmp_path / "a.png").size[0] == 40 + 200  # default: the scene's size
    big = cli("preview", scene, tmp_path / "m.tif", tmp_path / "b.png", "--size", "400")
    assert big.exit_code == 0, big.output
    picture = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"))
    assert picture.shape[:2] == (300, 400 + 200)
    block = picture[10:20, 30:40]  # one scene pixel: a 10 x 10 square of one colour
    assert (block == block[0, 0]).all()
