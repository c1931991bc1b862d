"""Properties of the pure window math (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from geofuse.config import CALL_SLACK, FIT_RANGE, TilingConfig
from geofuse.errors import ConfigError
from geofuse.read.grid import TileGrid, axis_starts, blend_weights, core_weights


@st.composite
def grids(draw: st.DrawFn) -> TileGrid:
    align = draw(st.sampled_from([1, 1, 4, 8]))
    tile = draw(st.sampled_from([8, 16, 32, 48, 64]))
    tile_width = draw(st.sampled_from([None, None, 8, 24, 40, 64]))
    overlap = draw(st.integers(0, min(tile, tile_width or tile) // align - 1)) * align
    height = draw(st.integers(1, 300))
    width = draw(st.integers(1, 300))
    return TileGrid(height, width, tile, overlap, align, tile_width)


@settings(max_examples=300, deadline=None)
@given(grids())
def test_cores_partition_the_scene_exactly_once(grid: TileGrid) -> None:
    count = np.zeros((grid.height, grid.width), dtype=np.int32)
    for t in grid:
        c = t.core
        count[c.toslices()] += 1
        assert c.width > 0 and c.height > 0
    assert (count == 1).all()


@settings(max_examples=300, deadline=None)
@given(grids())
def test_every_read_window_has_the_tile_size_and_covers_its_core(grid: TileGrid) -> None:
    for t in grid:
        r = t.read
        assert (r.height, r.width) == grid.shape
        assert r.col_off >= 0 and r.row_off >= 0
        # on the lattice, and inside the scene but for less than one lattice step, unless the
        # scene is smaller than a tile on that axis (then at 0)
        assert r.col_off % grid.align == 0 and r.row_off % grid.align == 0
        if grid.width >= grid.shape[1]:
            assert r.col_off + r.width < grid.width + grid.align
        else:
            assert r.col_off == 0
        if grid.height >= grid.shape[0]:
            assert r.row_off + r.height < grid.height + grid.align
        else:
            assert r.row_off == 0
        c = t.core
        assert r.col_off <= c.col_off and c.col_off + c.width <= r.col_off + r.width
        assert r.row_off <= c.row_off and c.row_off + c.height <= r.row_off + r.height


@settings(max_examples=300, deadline=None)
@given(grids())
def test_every_pixel_is_read_and_last_tiles_end_on_the_edge(grid: TileGrid) -> None:
    covered = np.zeros((grid.height, grid.width), dtype=bool)
    for t in grid:
        r = grid.clip(t.read)
        covered[r.toslices()] = True
    assert covered.all()
    rows, cols = grid.shape
    if grid.height >= rows:
        assert 0 <= grid.row_starts[-1] + rows - grid.height < grid.align
    if grid.width >= cols:
        assert 0 <= grid.col_starts[-1] + cols - grid.width < grid.align


@settings(max_examples=300, deadline=None)
@given(grids())
def test_exclusive_windows_are_exactly_the_pixels_one_tile_covers(grid: TileGrid) -> None:
    count = np.zeros((grid.height, grid.width), dtype=np.int32)
    for t in grid:
        count[grid.clip(t.read).toslices()] += 1
    owner = np.full((grid.height, grid.width), -1)
    for t in grid:
        e = grid.exclusive(t.read)
        r = grid.clip(t.read)
        assert e.width >= 0 and e.height >= 0
        if e.width and e.height:  # inside the tile's own read window, and nobody else's
            assert r.row_off <= e.row_off and e.row_off + e.height <= r.row_off + r.height
            assert r.col_off <= e.col_off and e.col_off + e.width <= r.col_off + r.width
            assert (owner[e.toslices()] == -1).all()
            owner[e.toslices()] = t.index
    assert ((owner >= 0) == (count == 1)).all()


@settings(max_examples=200, deadline=None)
@given(grids())
def test_rows_final_after_is_monotonic_and_ends_at_height(grid: TileGrid) -> None:
    finals = [grid.rows_final_after(r) for r in range(len(grid.row_starts))]
    assert finals == sorted(finals)
    assert finals[-1] == grid.height
    # no tile of a later grid row touches a row already final
    for r, final in enumerate(finals[:-1]):
        assert all(start >= final for start in grid.row_starts[r + 1 :])


@given(st.integers(1, 2000), st.integers(1, 256), st.data())
def test_axis_starts_stride_is_respected(length: int, tile: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, tile))
    starts = axis_starts(length, tile, stride)
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= stride).all()


def test_grid_counts_and_patch_pixels() -> None:
    grid = TileGrid(1000, 700, 256, 32)
    assert grid.row_starts == [0, 224, 448, 672, 744]
    assert grid.col_starts == [0, 224, 444]
    aligned = TileGrid(1000, 700, 256, 32, align=8)  # the last column moves onto the lattice
    assert aligned.row_starts == [0, 224, 448, 672, 744]
    assert aligned.col_starts == [0, 224, 448]
    with pytest.raises(ConfigError, match="multiples of 8"):
        TileGrid(1000, 700, 256, 30, align=8)
    assert len(grid) == 15 == len(grid.tiles)
    assert grid.patch_pixels == 15 * 256 * 256


def test_blend_weights_are_smooth_positive_and_symmetric() -> None:
    w = blend_weights(64)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert w.min() > 0 and w.max() <= 1
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)
    assert w[32, 32] > 0.99 and w[0, 0] < 0.01


def test_core_weights_select_the_core() -> None:
    grid = TileGrid(100, 100, 64, 16)
    t = grid.tiles[-1]
    w = core_weights(64, t.core, t.read)
    assert w.sum() == t.core.width * t.core.height


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(0, 5, 8, 0), (5, 5, 8, 8), (5, 5, 8, -1)]
)
def test_invalid_grids_are_refused(height: int, width: int, tile: int, overlap: int) -> None:
    with pytest.raises(ConfigError, match="Expected"):
        TileGrid(height, width, tile, overlap)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([32, 64, 256, 512, 1024]), st.integers(0, 96), st.integers(1, 20000),
       st.integers(1, 20000), st.sampled_from([4, 8, 16, 32]))
def test_the_fitted_tile_never_computes_more_and_stays_in_range(
        tile: int, overlap: int, height: int, width: int, multiple: int) -> None:
    assume(tile % multiple == 0 and overlap < tile // 2)
    nominal = TilingConfig(tile=tile, overlap=overlap)
    fitted = nominal.for_scene(height, width, multiple)
    rows, cols = fitted.shape
    grid = fitted.grid(height, width)
    assert rows % multiple == 0 and cols % multiple == 0 and fitted.overlap < min(rows, cols)
    assert not fitted.fit and fitted.for_scene(height, width, multiple) == fitted
    assert fitted.overlap % multiple == 0
    if len(grid) > 1:  # the overlap asked for, at least, on the lattice
        assert fitted.overlap >= min(overlap, tile - multiple, min(rows, cols) - multiple)
    if max(height, width) <= tile:  # a small scene: one tile of its size, never bigger
        assert rows <= tile and cols <= tile and len(grid) == 1
        assert rows - multiple < height and cols - multiple < width
        return
    # the model computes no more pixels (calls x batch x tile area, the last call padded)
    nominal_grid = TileGrid(height, width, tile, min(fitted.overlap, tile - multiple))
    computed = -(-len(grid) // fitted.batch_size) * fitted.batch_size * rows * cols
    assert computed <= -(-len(nominal_grid) // nominal.batch_size) * nominal.batch_size * tile**2
    # each side moved by at most FIT_RANGE, or grew where fewer tiles per call make up for it,
    # or is the scene's own side (one tile across a strip narrower than the tile); a model
    # call holds at most CALL_SLACK more pixels than asked for (or one tile in range)
    for side, length, starts in ((rows, height, grid.row_starts), (cols, width, grid.col_starts)):
        assert side >= (1 - FIT_RANGE) * tile or (len(starts) == 1 and side - multiple < max(
            length, fitted.overlap + 1))
    call = fitted.batch_size * rows * cols
    assert fitted.batch_size <= nominal.batch_size
    assert call <= nominal.batch_size * tile**2 * (1 + CALL_SLACK) or (
        fitted.batch_size == 1 and rows * cols <= ((1 + FIT_RANGE) * tile) ** 2)
    assert grid.align == multiple
    if rows != cols:  # test-time rotations get a square tile of the same scene
        square = nominal.for_scene(height, width, multiple, square=True)
        assert square.tile_width is None and square.tile % multiple == 0
