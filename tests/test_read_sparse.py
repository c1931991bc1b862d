"""Tiles without a valid pixel never reach the model, and the output does not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.config import SegmentConfig, TilingConfig
from geofuse.read.grid import TileGrid
from geofuse.read.reader import SceneReader
from geofuse.segment import segment_scene
from tests.helpers import write_geotiff

SHAPE = (200, 160)
TILE, OVERLAP = 64, 16


def footprint(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A rotated rectangle in the middle of the scene: the valid pixels (a collar around)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    u = (cols - 80) * 0.8 + (rows - 90) * 0.6
    v = -(cols - 80) * 0.6 + (rows - 90) * 0.8
    return (np.abs(u) < 45) & (np.abs(v) < 30)


def collar_scene(path: Path, dtype: str = "uint8", sparse: bool = False) -> Path:
    """Random pixels inside :func:`footprint`, nodata (0, or NaN for floats) outside."""
    inside = footprint()
    data = np.random.default_rng(3).integers(1, 256, (3, *SHAPE)).astype(dtype)
    data[:, ~inside] = np.nan if dtype.startswith("float") else 0
    return write_geotiff(path, data, nodata=float("nan") if dtype.startswith("float") else 0,
                         tiled=True, blockxsize=32, blockysize=32, compress="deflate",
                         SPARSE_OK=sparse)


def needed_tiles(valid: np.ndarray, blend: str) -> int:
    """Tiles whose window holds a valid pixel, counted without geofuse's reader."""
    grid = TileGrid(*valid.shape, TILE, OVERLAP)
    count = 0
    for tile in grid:
        w = tile.core if blend == "center" else grid.clip(tile.read)
        r0, c0 = int(w.row_off), int(w.col_off)
        count += bool(valid[r0 : r0 + int(w.height), c0 : c0 + int(w.width)].any())
    return count


def segment(scene: Path, out: Path, model: Path, blend: str) -> str:
    result = CliRunner().invoke(main, [
        "segment", str(scene), str(out), "--model", str(model), "--tile", str(TILE),
        "--exact-tile", "--overlap", str(OVERLAP), "--blend", blend, "--probabilities",
        str(out.with_suffix(".probs.tif")), "--probability-dtype", "float32",
        "--runtime", "tensorflow"])
    assert result.exit_code == 0, result.output
    return result.output


def read(path: Path) -> tuple[np.ndarray, np.ndarray, rasterio.Affine]:
    with rasterio.open(path) as ds, rasterio.open(path.with_suffix(".probs.tif")) as probs:
        return ds.read(1), probs.read(), ds.transform


def without_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reader hand every tile to the model, as before tiles were skipped."""
    patches = SceneReader.patches
    monkeypatch.setattr(SceneReader, "known_empty", lambda self, window: False)
    monkeypatch.setattr(SceneReader, "patches",
                        lambda self, grid, tiles=None, keep=None, skip_empty=None, slot=None:
                        patches(self, grid, tiles, keep, None, slot))


@pytest.mark.parametrize(("dtype", "sparse", "blend"), [
    ("uint8", False, "hann"), ("uint8", True, "hann"), ("uint8", False, "center"),
    ("float32", False, "hann"),
])
def test_empty_tiles_skip_the_model_and_change_no_pixel(
    tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch, dtype: str, sparse: bool,
    blend: str,
) -> None:
    scene = collar_scene(tmp_path / "scene.tif", dtype, sparse)
    model = tiny_models(bands=3, classes=3, input_dtype=dtype)
    grid_tiles = len(TileGrid(*SHAPE, TILE, OVERLAP))
    needed = needed_tiles(footprint(), blend)
    assert 0 < needed < grid_tiles

    reads: list[int] = []
    data = SceneReader._data

    def recording(self: SceneReader, window: object, valid: np.ndarray) -> np.ndarray:
        reads.append(1)
        return data(self, window, valid)

    with monkeypatch.context() as patch:
        patch.setattr(SceneReader, "_data", recording)
        output = segment(scene, tmp_path / "skip.tif", model, blend)
    assert (f"{needed} tiles of {grid_tiles} ({grid_tiles - needed} without a valid pixel)"
            in output)
    # every tile is read at most once (a nodata value, like NaN, is found in the values read;
    # GDAL's mask would decode the same blocks), and left-out blocks are not read at all
    assert needed <= len(reads) <= grid_tiles
    if sparse:
        assert len(reads) < grid_tiles

    with monkeypatch.context() as patch:
        without_skipping(patch)
        output = segment(scene, tmp_path / "all.tif", model, blend)
    assert f"{grid_tiles} tiles," in output

    mask, probs, transform = read(tmp_path / "skip.tif")
    mask_all, probs_all, transform_all = read(tmp_path / "all.tif")
    np.testing.assert_array_equal(mask, mask_all)
    # A tile sits at another place in its batch once others are skipped. On some CPUs (seen on
    # a 2-core AMD EPYC with AVX2: 5 of 96,000 values, 6e-8 apart) TensorFlow's kernels then
    # round a few sums differently; the probabilities agree to float32 rounding.
    np.testing.assert_allclose(probs, probs_all, rtol=0, atol=1e-6)
    assert transform == transform_all
    np.testing.assert_array_equal(mask == 255, ~footprint())


def test_sparse_blocks_are_known_empty_without_reading(tmp_path: Path) -> None:
    scene = collar_scene(tmp_path / "scene.tif", sparse=True)
    plain = collar_scene(tmp_path / "plain.tif", sparse=False)
    grid = TileGrid(*SHAPE, TILE, OVERLAP)
    with SceneReader(scene) as sparse_reader, SceneReader(plain) as plain_reader:
        known = [t for t in grid if sparse_reader.known_empty(grid.clip(t.read))]
        assert not any(plain_reader.known_empty(grid.clip(t.read)) for t in grid)
    valid = footprint()
    assert known  # the corners of the scene are empty blocks
    for tile in known:
        w = grid.clip(tile.read)
        r0, c0 = int(w.row_off), int(w.col_off)
        assert not valid[r0 : r0 + int(w.height), c0 : c0 + int(w.width)].any()


def test_a_scene_without_any_valid_pixel_gives_all_nodata(tmp_path: Path, tiny_models) -> None:
    scene = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 100, 90), np.uint8), nodata=0)
    calls: list[int] = []
    progress: list[tuple[int, int]] = []

    def predictor(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return np.full((*x.shape[:3], 3), 1 / 3, np.float32)

    result = segment_scene(scene, tmp_path / "mask.tif", tiny_models(bands=3, classes=3),
                           SegmentConfig(tiling=TilingConfig(tile=TILE, overlap=OVERLAP,
                                                             fit=False)),
                           progress=lambda done, total: progress.append((done, total)),
                           predictor=predictor)
    assert calls == [] and progress == []
    assert (result.tiles, result.empty_tiles, result.grid_tiles) == (0, 4, 4)
    with rasterio.open(tmp_path / "mask.tif") as ds:
        assert (ds.read(1) == 255).all() and ds.transform == result_transform(scene)


def result_transform(scene: Path) -> rasterio.Affine:
    with rasterio.open(scene) as ds:
        return ds.transform


def test_progress_counts_the_tiles_that_need_the_model(tmp_path: Path, tiny_models) -> None:
    scene = collar_scene(tmp_path / "scene.tif")
    needed = needed_tiles(footprint(), "hann")
    progress: list[tuple[int, int]] = []
    batches: list[int] = []

    def predictor(x: np.ndarray) -> np.ndarray:
        batches.append(len(x))
        return np.full((*x.shape[:3], 3), 1 / 3, np.float32)

    result = segment_scene(scene, tmp_path / "mask.tif", tiny_models(bands=3, classes=3),
                           SegmentConfig(tiling=TilingConfig(tile=TILE, overlap=OVERLAP,
                                                             batch_size=4, fit=False)),
                           progress=lambda done, total: progress.append((done, total)),
                           predictor=predictor)
    assert result.tiles == needed
    assert progress[-1] == (needed, needed)
    assert all(total >= needed for _, total in progress)
    assert batches == [4] * -(-needed // 4)  # fixed batch shape, filled from the needed tiles
