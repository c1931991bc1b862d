"""The rolling-band stitcher and the GeoTIFF sink, driven directly (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from geofuse.config import CLASS_NODATA
from geofuse.errors import OutputError
from geofuse.read.grid import TileGrid
from geofuse.write.classids import class_ids
from geofuse.write.stitcher import (
    PROB_SCALE,
    ColumnStitcher,
    GeoTiffSink,
    Stitcher,
    move_up,
    sparse_zeros,
)
from tests.helpers import UTM_TRANSFORM, MemorySink


class WindowSink:
    """Collects the windows a ColumnStitcher writes: every pixel exactly once."""

    def __init__(self, count: int, height: int, width: int, dtype: str) -> None:
        self.array = np.full((count, height, width), 77, dtype=dtype)
        self.written = np.zeros((height, width), np.int32)

    def write_window(self, window, array: np.ndarray) -> None:  # noqa: ANN001
        rows, cols = window.toslices()
        assert array.shape[1:] == (rows.stop - rows.start, cols.stop - cols.start)
        self.array[:, rows, cols] = array
        self.written[rows, cols] += 1


def field(height: int, width: int, classes: int, seed: int = 0) -> np.ndarray:
    """Per-pixel class probabilities with a clear winner everywhere."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(height, width, classes)).astype(np.float32)
    winner = rng.integers(0, classes, size=(height, width))
    np.put_along_axis(logits, winner[..., None], 5.0, axis=-1)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def stitch(grid: TileGrid, probs: np.ndarray, valid: np.ndarray, blend: str
           ) -> tuple[MemorySink, MemorySink, Stitcher]:
    classes = probs.shape[-1]
    mask = MemorySink(1, grid.height, grid.width, "uint8")
    prob = MemorySink(classes, grid.height, grid.width, "uint8")
    stitcher = Stitcher(grid, classes, blend, mask, prob, "uint8")  # type: ignore[arg-type]
    pad = grid.tile
    padded = np.pad(probs, ((0, pad), (0, pad), (0, 0)))
    padded_valid = np.pad(valid, ((0, pad), (0, pad)))
    for tile in grid:
        r, c = int(tile.read.row_off), int(tile.read.col_off)
        stitcher.add(tile.read, tile.core, tile.row, padded_valid[r:r + grid.tile, c:c + grid.tile],
                     padded[r:r + grid.tile, c:c + grid.tile])
    stitcher.finish()
    return mask, prob, stitcher


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 90),
       tile=st.sampled_from([16, 32]), overlap=st.integers(0, 12),
       blend=st.sampled_from(["hann", "center"]))
def test_tiles_that_agree_stitch_to_the_same_field(height: int, width: int, tile: int,
                                                    overlap: int, blend: str) -> None:
    grid = TileGrid(height, width, tile, overlap)
    probs = field(height, width, 3)
    valid = np.ones((height, width), bool)
    valid[::7, ::5] = False  # invalid input pixels are nodata in every output
    mask, prob, stitcher = stitch(grid, probs, valid, blend)
    expected = np.where(valid, probs.argmax(-1), CLASS_NODATA)
    np.testing.assert_array_equal(mask.array[0], expected)
    quantised = np.rint(np.moveaxis(probs, -1, 0) * PROB_SCALE)
    np.testing.assert_allclose(prob.array[:, valid], quantised[:, valid], atol=1)
    assert (prob.array[:, ~valid] == 255).all()
    assert stitcher.nodata_pixels == int((~valid).sum())
    assert stitcher.class_counts.sum() == int(valid.sum())


def test_tiles_out_of_grid_order_are_refused() -> None:
    grid = TileGrid(64, 64, 32, 8)
    mask = MemorySink(1, 64, 64, "uint8")
    stitcher = Stitcher(grid, 2, "hann", mask)  # type: ignore[arg-type]
    later, first = grid.tiles[-1], grid.tiles[0]
    ones = np.ones((32, 32), bool)
    stitcher.add(later.read, later.core, later.row, ones, np.full((32, 32, 2), 0.5, np.float32))
    with pytest.raises(ValueError, match="Expected tiles in grid order"):
        stitcher.add(first.read, first.core, first.row, ones, np.zeros((32, 32, 2), np.float32))


def test_sink_commits_a_georeferenced_cog_and_abort_leaves_nothing(tmp_path: Path) -> None:
    common = dict(width=40, height=30, count=1, dtype="uint8", crs="EPSG:32633",
                  transform=UTM_TRANSFORM, nodata=CLASS_NODATA, tags={"GEOFUSE_TILE": "32"})
    sink = GeoTiffSink(tmp_path / "out.tif", colormap={0: (1, 2, 3, 255)}, **common)
    data = np.arange(1200, dtype=np.uint8).reshape(1, 30, 40) % 3
    sink.write(0, data[:, :10])
    sink.write(10, data[:, 10:])
    assert not (tmp_path / "out.tif").exists()
    sink.commit()
    sink.abort()  # after a commit: touches nothing
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == UTM_TRANSFORM
        assert ds.nodata == CLASS_NODATA and ds.tags()["GEOFUSE_TILE"] == "32"
        assert ds.colormap(1)[0] == (1, 2, 3, 255)
        np.testing.assert_array_equal(ds.read(), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]

    failed = GeoTiffSink(tmp_path / "failed.tif", **common)
    failed.write(0, data)
    failed.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_sink_in_a_missing_folder_is_a_one_line_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="missing"):
        GeoTiffSink(tmp_path / "missing" / "out.tif", width=4, height=4, count=1, dtype="uint8",
                    crs=None, transform=UTM_TRANSFORM, nodata=0)


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 120),
       tile=st.sampled_from([16, 32]), overlap=st.sampled_from([0, 4, 8, 12]),
       blend=st.sampled_from(["hann", "center"]), seed=st.integers(0, 3))
def test_columns_stitch_what_rows_stitch(height: int, width: int, tile: int, overlap: int,
                                         blend: str, seed: int) -> None:
    """Tiles that disagree, stitched column by column, give the row-order output."""
    grid = TileGrid(height, width, tile, overlap, align=4)
    rng = np.random.default_rng(seed)
    valid = rng.random((height, width)) > 0.1
    rows = (MemorySink(1, height, width, "uint8"), MemorySink(3, height, width, "float32"))
    cols = (WindowSink(1, height, width, "uint8"), WindowSink(3, height, width, "float32"))
    by_rows = Stitcher(grid, 3, blend, *rows, "float32")  # type: ignore[arg-type]
    by_cols = ColumnStitcher(grid, 3, blend, *cols, "float32")  # type: ignore[arg-type]
    tiles = {t.index: (field(tile, tile, 3, seed * 1000 + t.index),
                       np.pad(valid, ((0, tile), (0, tile)))[
                           int(t.read.row_off):int(t.read.row_off) + tile,
                           int(t.read.col_off):int(t.read.col_off) + tile]) for t in grid}
    for t in grid:
        by_rows.add(t.read, t.core, t.row, tiles[t.index][1], tiles[t.index][0])
    for t in sorted(grid, key=lambda t: (t.col, t.row)):
        by_cols.add(t.read, t.core, t.row, tiles[t.index][1], tiles[t.index][0])
    by_rows.finish()
    by_cols.finish()
    assert (cols[0].written == 1).all() and (cols[1].written == 1).all()
    np.testing.assert_array_equal(cols[0].array, rows[0].array)
    np.testing.assert_allclose(cols[1].array, rows[1].array, rtol=1e-5, atol=1e-6)
    assert by_cols.nodata_pixels == by_rows.nodata_pixels == int((~valid).sum())
    np.testing.assert_array_equal(by_cols.class_counts, by_rows.class_counts)


@settings(max_examples=30, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 120),
       tile=st.sampled_from([16, 32]), overlap=st.sampled_from([0, 4, 8, 12, 20]),
       blend=st.sampled_from(["hann", "center"]), seed=st.integers(0, 3))
def test_a_mask_alone_is_the_mask_written_beside_probabilities(
        height: int, width: int, tile: int, overlap: int, blend: str, seed: int) -> None:
    """Without probabilities, pixels one tile covers take its classes directly: same mask."""
    assume(overlap < tile)
    grid = TileGrid(height, width, tile, overlap, align=4)
    rng = np.random.default_rng(seed)
    valid = rng.random((height, width)) > 0.1
    padded = np.pad(valid, ((0, tile), (0, tile)))
    tiles = {t.index: (field(tile, tile, 4, seed * 1000 + t.index),
                       padded[int(t.read.row_off):int(t.read.row_off) + tile,
                              int(t.read.col_off):int(t.read.col_off) + tile]) for t in grid}
    both = (MemorySink(1, height, width, "uint8"), MemorySink(4, height, width, "float32"))
    alone = MemorySink(1, height, width, "uint8")
    columns = WindowSink(1, height, width, "uint8")
    stitchers = [Stitcher(grid, 4, blend, *both, "float32"),  # type: ignore[arg-type]
                 Stitcher(grid, 4, blend, alone),  # type: ignore[arg-type]
                 ColumnStitcher(grid, 4, blend, columns)]  # type: ignore[arg-type]
    assert stitchers[1]._labels is not None and stitchers[0]._labels is None
    for t in grid:
        for s in stitchers[:2]:
            s.add(t.read, t.core, t.row, tiles[t.index][1], tiles[t.index][0])
    for t in sorted(grid, key=lambda t: (t.col, t.row)):
        stitchers[2].add(t.read, t.core, t.row, tiles[t.index][1], tiles[t.index][0])
    for s in stitchers:
        s.finish()
    np.testing.assert_array_equal(alone.array, both[0].array)
    np.testing.assert_array_equal(columns.array, both[0].array)
    assert (alone.array[0][~valid] == CLASS_NODATA).all()
    for s in stitchers[1:]:
        assert s.nodata_pixels == stitchers[0].nodata_pixels == int((~valid).sum())
        np.testing.assert_array_equal(s.class_counts, stitchers[0].class_counts)


@settings(max_examples=60, deadline=None)
@given(classes=st.integers(1, 20), rows=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e6]))
def test_class_ids_are_the_argmax(classes: int, rows: int, seed: int, scale: float) -> None:
    """Packed-bit class ids equal numpy's argmax away from near-ties, and ties go low."""
    rng = np.random.default_rng(seed)
    scores = (rng.random((rows, 7, classes)) * scale).astype(np.float32)
    scores[0, 0] = 0.0  # an exact tie of every class: class 0, as np.argmax
    if classes > 1:
        scores[0, 1, -2:] = scores[0, 1].max() * 2  # the last two tie at the top
    top2 = np.sort(scores, axis=-1)[..., -2:] if classes > 1 else None
    clear = np.ones(scores.shape[:-1], bool) if top2 is None else (
        (top2[..., 1] - top2[..., 0] > top2[..., 1] * 2.0**-18) | (top2[..., 1] == top2[..., 0]))
    ids = class_ids(scores)
    assert ids.dtype == np.uint8 and ids.shape == scores.shape[:-1]
    np.testing.assert_array_equal(ids[clear], np.argmax(scores, axis=-1)[clear])
    if classes > 1:
        assert ids[0, 1] == classes - 2


@pytest.mark.parametrize("shape", [(5,), (70_000, 5), (2, 300, 130, 3), (3, 190, 180, 5),
                                   (0, 9, 4)])
def test_class_ids_of_arrays_larger_than_a_chunk(shape: tuple[int, ...]) -> None:
    """Arrays of more pixels than one pass takes, contiguous or strided views, any rank."""
    rng = np.random.default_rng(len(shape))
    scores = rng.random(shape, dtype=np.float32)
    expected = np.argmax(scores, axis=-1)
    np.testing.assert_array_equal(class_ids(scores), expected)
    if len(shape) > 2:  # a strided view (the part of a tile one tile alone covers)
        view = scores[..., 3:-2, :]
        np.testing.assert_array_equal(class_ids(view), expected[..., 3:-2])


@pytest.mark.parametrize("shape", [(0, 4), (3, 5, 2), (616, 300, 6)])
def test_sparse_zeros_are_zeros_to_write_into(shape: tuple[int, ...]) -> None:
    a = sparse_zeros(shape, np.float32)
    assert a.shape == shape and a.dtype == np.float32 and a.flags.writeable
    assert not a.any()
    if a.size:
        a[-1] += 2.5
        assert a.sum() == 2.5 * a[-1].size


@given(rows=st.integers(1, 40), n=st.integers(0, 40), cols=st.integers(1, 3))
def test_move_up_equals_the_copy_of_the_rows_below(rows: int, n: int, cols: int) -> None:
    """``move_up`` is ``a[:rows - n] = a[n:].copy()``, whatever the overlap of the two."""
    n = min(n, rows)
    a = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    expected = a.copy()
    expected[: rows - n] = a[n:].copy()
    move_up(a, n)
    np.testing.assert_array_equal(a, expected)
