"""Quick-looks readable on real scenes: outlined classes over a grey scene, legends that fit,
and a picture size for ``segment --preview`` and ``batch --preview``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner
from PIL import Image, ImageFont

from geofuse.cli import main
from geofuse.products.preview import FONT_SIZE, LEGEND_MAX_WIDTH, LEGEND_WIDTH, legend_height
from tests.helpers import write_geotiff

BUILDING = (227, 26, 28)  # the default model's building red
ROOF = (200, 30, 30)  # red roofs


def write_mask(path: Path, mask: np.ndarray, names: str, colours: dict) -> Path:
    write_geotiff(path, mask.astype(np.uint8), nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {k: (*v, 255) for k, v in colours.items()} | {255: (0, 0, 0, 0)})
        ds.update_tags(GEOFUSE_CLASSES=names)
    return path


def preview(*args: object) -> object:
    return CliRunner().invoke(main, ["preview", *map(str, args)])


def picture(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_buildings_stand_out_from_red_roofs_in_the_default_style(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    roofs = np.empty((3, 80, 80), np.uint8)
    for band, value in enumerate(ROOF):  # a red scene with a little texture
        roofs[band] = np.clip(value + rng.integers(-8, 9, (80, 80)), 0, 255)
    roofs[:, :, :10], roofs[:, :, 70:] = 40, 230  # shade and bright ground: the 2-98 %
    # stretch keeps the roofs red
    scene = write_geotiff(tmp_path / "roofs.tif", roofs)
    mask = np.full((80, 80), 255, np.uint8)
    mask[20:60, 20:60] = 1
    mask_path = write_mask(
        tmp_path / "m.tif", mask, "land,building", {0: (210, 180, 140), 1: BUILDING}
    )
    inside = np.zeros((80, 80), bool)
    inside[20:60, [20, 59]] = inside[[20, 59], 20:60] = True  # the region's border pixels
    outside = np.zeros((80, 80), bool)
    outside[19:61, [19, 60]] = outside[[19, 60], 19:61] = True  # the ring just outside it

    def contrast(path: Path) -> float:
        image = picture(path)[:80, :80]
        return float(np.linalg.norm(image[inside].mean(0) - image[outside].mean(0)))

    outline, fill = tmp_path / "outline.png", tmp_path / "fill.png"
    assert preview(scene, mask_path, outline).exit_code == 0
    assert preview(scene, mask_path, fill, "--style", "fill").exit_code == 0
    image = picture(outline)[:80, :80]
    assert (image[inside] == BUILDING).all()  # outlined in the class colour
    grey = image[~inside & ~outside & (mask == 255)]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    assert contrast(outline) > 100  # a building edge is plain to see
    assert contrast(fill) < 30  # blended red over red roofs: barely there


def test_long_class_names_fit_in_a_wider_legend_or_wrap(tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", np.full((3, 40, 50), 90, np.uint8))
    mask = np.zeros((40, 50), np.uint8)
    mask[:, 25:] = 1
    font = ImageFont.load_default(size=FONT_SIZE)
    long = "informal settlement with corrugated iron"
    assert LEGEND_WIDTH < font.getlength(f"{long}  50.0 %") + 60 < LEGEND_MAX_WIDTH
    colours = {0: (20, 160, 40), 1: (30, 60, 220)}
    wide = write_mask(tmp_path / "wide.tif", mask, f"crop,{long}", colours)
    out = tmp_path / "wide.png"
    assert preview(scene, wide, out).exit_code == 0
    image = picture(out)
    assert LEGEND_WIDTH < image.shape[1] - 50 <= LEGEND_MAX_WIDTH
    text = (image[:, 50:] < 100).all(axis=-1)  # dark text pixels in the legend
    assert np.flatnonzero(text.any(axis=0)).max() > LEGEND_WIDTH  # drawn past the old width
    assert image.shape[0] == legend_height(2)  # one line each

    longer = " ".join([long] * 3)
    wrapped = write_mask(tmp_path / "wrapped.tif", mask, f"crop,{longer}", colours)
    out = tmp_path / "wrapped.png"
    assert preview(scene, wrapped, out).exit_code == 0
    image = picture(out)
    assert image.shape[1] == 50 + LEGEND_MAX_WIDTH
    text = (image[:, 50:] < 100).all(axis=-1).any(axis=1)
    starts = np.flatnonzero(text[1:] & ~text[:-1])  # one per line of text
    assert len(starts) >= 5  # title, crop, and the long name on three lines or more
    assert image.shape[0] == legend_height(2, len(starts) - 1)


def test_segment_and_batch_take_a_preview_size(tmp_path: Path, tiny_models) -> None:
    chip = np.random.default_rng(1).integers(0, 255, (3, 64, 48), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    scene = write_geotiff(tmp_path / "in" / "chip.tif", chip)
    model = str(tiny_models(bands=3, classes=3))
    png = tmp_path / "chip.png"
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(scene),
            str(tmp_path / "mask.tif"),
            "--model",
            model,
            "--tile",
            "64",
            "--preview",
            str(png),
            "--preview-size",
            "256",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    image = picture(png)
    assert image.shape[:2] == (256, 192 + LEGEND_WIDTH)  # 64 x 48 grown 4 times

    result = CliRunner().invoke(
        main,
        [
            "batch",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--model",
            model,
            "--tile",
            "64",
            "--preview",
            "--preview-size",
            "128",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert picture(tmp_path / "out" / "chip.png").shape[:2] == (
        max(128, legend_height(3)),
        96 + LEGEND_WIDTH,
    )
    refused = CliRunner().invoke(
        main, ["segment", str(scene), str(tmp_path / "x.tif"), "--preview-size", "8"]
    )
    assert refused.exit_code == 2 and "--preview-size" in refused.output
