"""A nodata value that is also a real colour, in a scene read at the model's pixel size.

Validity on the model's grid follows the majority of each model pixel's footprint (scattered
nodata pixels do not void the model pixels they fall in), and one notice says when the nodata
value looks like a colour: many small patches inside the scene, not a border or a hole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.windows import Window

from geofuse.cli import main
from geofuse.model.modelfile import read_info
from geofuse.read.grid import TileGrid
from geofuse.read.reader import SceneReader
from tests.helpers import make_tiny_model, write_geotiff

FINE = Affine(0.1, 0.0, 500_000.0, 0.0, -0.1, 5_000_000.0)  # 0.1 m pixels, UTM
SIDE = 128  # scene pixels; 32 model pixels of 0.4 m
SAND = 461  # pixels of the nodata value 255 that are really bright sand


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-band uint8 model trained at 0.4 m."""
    return make_tiny_model(tmp_path_factory.mktemp("m") / "m.keras", contract={"pixel_size": 0.4})


def sandy_scene(path: Path) -> tuple[Path, np.ndarray]:
    """A 0.1 m scene with 461 pixels of the nodata value: patches of 1 to 16 pixels."""
    rng = np.random.default_rng(3)
    data = rng.integers(20, 200, (3, SIDE, SIDE), dtype=np.uint8)
    sand = np.zeros((SIDE, SIDE), dtype=bool)
    sand[40:44, 40:44] = True  # a whole model pixel
    sand[80:83, 80:84] = True  # three quarters of one
    sand[100:102, 100:104] = True  # half of one: still valid
    blocks = np.zeros_like(sand)
    blocks[40:44, 40:44] = blocks[80:84, 80:84] = blocks[100:104, 100:104] = True
    free = np.flatnonzero(~blocks[2:-2, 2:-2].ravel())  # away from the edge and the blocks
    chosen = rng.choice(free, SAND - int(sand.sum()), replace=False)
    rows, cols = np.unravel_index(chosen, (SIDE - 4, SIDE - 4))
    sand[rows + 2, cols + 2] = True
    assert sand.sum() == SAND
    data[:, sand] = 255
    return write_geotiff(path, data, transform=FINE, nodata=255), sand


def segment(*args: object) -> object:
    return CliRunner().invoke(
        main,
        ["segment", *map(str, args), "--tile", "64", "--overlap", "16", "--runtime", "tensorflow"],
    )


def test_model_pixels_are_invalid_only_where_most_of_their_footprint_is(
    tmp_path: Path, model: Path
) -> None:
    scene, sand = sandy_scene(tmp_path / "sand.tif")
    valid_share = (~sand).reshape(32, 4, 32, 4).mean(axis=(1, 3))
    expected = valid_share >= 0.5
    assert (~expected).sum() == 2  # the whole and the three-quarter block, nothing else
    assert ((valid_share < 1) & expected).sum() > 100  # model pixels holding scattered sand
    with SceneReader(scene, model=read_info(model)) as reader:
        assert reader.resampled and (reader.height, reader.width) == (32, 32)
        _, valid = reader.read_window(Window(0, 0, 32, 32))
        np.testing.assert_array_equal(valid, expected)
        patches = list(reader.patches(TileGrid(32, 32, tile=16, overlap=4)))
    seen = np.zeros((32, 32), dtype=bool)
    for patch in patches:  # the tiles the model gets agree with the window read
        core = patch.tile.core
        r, c = int(core.row_off), int(core.col_off)
        rr, cc = r - int(patch.tile.read.row_off), c - int(patch.tile.read.col_off)
        h, w = int(core.height), int(core.width)
        seen[r : r + h, c : c + w] = patch.valid[rr : rr + h, cc : cc + w]
    np.testing.assert_array_equal(seen, expected)


def test_scattered_nodata_gets_one_notice_and_stays_nodata_unless_told(
    tmp_path: Path, model: Path
) -> None:
    scene, sand = sandy_scene(tmp_path / "sand.tif")
    result = segment(scene, tmp_path / "own.tif", "--model", model)
    assert result.exit_code == 0, result.output
    notices = [line for line in result.stderr.splitlines() if "nodata value" in line]
    assert notices == [
        f"Warning: {scene}: nodata value 255 also occurs in {SAND} scattered pixels inside "
        "the scene (patches under 100 px, not a border or a hole), as a real colour would; if "
        "it is one there, these pixels are wrongly left out: set --no-nodata, or --nodata to "
        "the value that marks missing pixels"
    ]
    with rasterio.open(tmp_path / "own.tif") as ds:
        np.testing.assert_array_equal(ds.read(1) == 255, sand)  # the user decides, not geofuse

    told = segment(scene, tmp_path / "none.tif", "--model", model, "--no-nodata")
    assert told.exit_code == 0, told.output
    assert "nodata value" not in told.stderr
    with rasterio.open(tmp_path / "none.tif") as ds:
        assert not (ds.read(1) == 255).any()


def test_borders_and_holes_are_nodata_without_a_notice(tmp_path: Path, model: Path) -> None:
    data = np.random.default_rng(4).integers(20, 200, (3, SIDE, SIDE), dtype=np.uint8)
    data[:, :10] = 255  # a collar along the top
    data[:, 60:80, 30:60] = 255  # a hole of 600 pixels
    data[:, 100:102, 100:102] = 255  # and a few specks: fewer than a colour would make
    scene = write_geotiff(tmp_path / "collar.tif", data, transform=FINE, nodata=255)
    with SceneReader(scene, model=read_info(model)) as reader:
        assert not [n for n in reader.notices if "nodata value" in n]
    result = segment(scene, tmp_path / "out.tif", "--model", model)
    assert result.exit_code == 0, result.output
    assert "nodata value" not in result.stderr
    with rasterio.open(tmp_path / "out.tif") as ds:
        np.testing.assert_array_equal(ds.read(1) == 255, (data == 255).all(axis=0))


def test_a_big_scene_is_judged_from_a_sample(tmp_path: Path, model: Path) -> None:
    rng = np.random.default_rng(5)
    side = 2200  # more than 4 Mpx: sampled in windows
    data = rng.integers(20, 200, (3, side, side), dtype=np.uint8)
    specks = rng.random((side, side)) < 0.002
    data[:, specks] = 255
    scene = write_geotiff(
        tmp_path / "big.tif",
        data,
        transform=FINE,
        nodata=255,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with SceneReader(scene, model=read_info(model)) as reader:
        (notice,) = [n for n in reader.notices if "nodata value" in n]
    estimate = int(notice.split("about ")[1].split(" ")[0].replace(",", ""))
    assert estimate == pytest.approx(specks.sum(), rel=0.15)
