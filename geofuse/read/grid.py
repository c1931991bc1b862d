"""Pure window math: the tile grid, core windows and blend weights.

No I/O happens here. A scene of ``height`` x ``width`` pixels is covered by tiles of
``tile`` rows and ``tile_width`` columns (square unless given) placed every ``stride = side -
overlap`` pixels along each axis; the last row and column of tiles is
shifted inward so that it ends on the scene edge (no ragged tiles, no missed pixels). With
``align`` (the model's ``2**depth``), every tile starts on a multiple of it, so that each tile's
pooling lattice is the whole scene's: a U-Net is only shift-equivariant by multiples of
``2**depth``, and a tile shifted by 4 px changes 1-5 % of a real scene's classes where an aligned
one changes almost none (``scripts/studies/seams``). The last tile then ends up to ``align - 1``
pixels past the edge. A scene side shorter than a tile gets a single tile at offset 0 that reaches
past the edge; the reader pads it and the stitcher crops the padding off again.

Each tile also owns a *core* window: the cores split every overlap at its middle, so they
partition the scene exactly once. The ``center`` blend keeps only cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from rasterio.windows import Window

from geofuse.errors import ConfigError


def axis_starts(length: int, tile: int, stride: int, align: int = 1) -> list[int]:
    """Offsets of the tiles along one axis.

    Args:
        length: Scene size along the axis (pixels, > 0).
        tile: Tile size (> 0).
        stride: Distance between tile origins (0 < stride <= tile, a multiple of ``align``).
        align: Every offset is a multiple of this.

    Returns:
        Increasing offsets; when ``length >= tile`` the last tile ends at ``length`` (or less
        than ``align`` pixels past it).

    """
    if length <= 0 or tile <= 0 or not 0 < stride <= tile or align <= 0 or stride % align:
        raise ConfigError(
            "Expected length > 0, tile > 0, 0 < stride <= tile and stride a multiple of align. "
            f"Received: length={length}, tile={tile}, stride={stride}, align={align}"
        )
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(-(-(length - tile) // align) * align)
    return starts


def axis_cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Half-open core intervals ``[lo, hi)`` that split each overlap at its middle."""
    bounds = [0]
    for previous, start in zip(starts, starts[1:], strict=False):
        bounds.append((previous + tile + start) // 2)
    bounds.append(length)
    return list(zip(bounds, bounds[1:], strict=False))


def axis_exclusive(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Half-open intervals ``[lo, hi)`` that only one tile of the axis covers (may be empty).

    A pixel there takes its output from that tile alone, whatever the blend, so the stitcher
    needs no weighted sum for it.
    """
    spans = []
    for i, start in enumerate(starts):
        lo = start if i == 0 else max(start, starts[i - 1] + tile)
        hi = min(start + tile, length) if i + 1 == len(starts) else min(starts[i + 1], length)
        spans.append((lo, max(lo, hi)))
    return spans


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    Attributes:
        index: Position in row-major order.
        row: Grid row.
        col: Grid column.
        read: The tile-sized window read for the model (may reach past the scene edge when the
            scene is smaller than a tile).
        core: The part of the scene this tile owns; cores partition the scene.

    """

    index: int
    row: int
    col: int
    read: Window
    core: Window


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a ``height`` x ``width`` scene.

    Attributes:
        height: Scene rows.
        width: Scene columns.
        tile: Tile rows (and columns, unless ``tile_width`` is given).
        overlap: Pixels shared by neighbouring tiles, along either axis.
        align: Tiles start on multiples of this (the model's ``2**depth``); the tile's sides
            and ``overlap`` must be multiples of it.
        tile_width: Tile columns when they differ from ``tile`` (a scene narrower than a
            square tile along one axis); None: square tiles.

    """

    height: int
    width: int
    tile: int
    overlap: int
    align: int = 1
    tile_width: int | None = None

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ConfigError(
                f"Expected a scene of at least 1x1 pixels. Received: {self.width}x{self.height}"
            )
        rows, cols = self.shape
        if not 0 <= self.overlap < min(rows, cols):
            raise ConfigError(f"Expected 0 <= overlap < tile ({min(rows, cols)}). "
                              f"Received: overlap={self.overlap}")
        if self.align <= 0 or rows % self.align or cols % self.align or self.overlap % self.align:
            raise ConfigError(f"Expected tile and overlap to be multiples of {self.align}. "
                              f"Received: tile={rows}x{cols}, overlap={self.overlap}")

    @property
    def shape(self) -> tuple[int, int]:
        """The tile's ``(rows, columns)``."""
        return self.tile, self.tile if self.tile_width is None else self.tile_width

    @cached_property
    def row_starts(self) -> list[int]:
        """Row offsets of the grid rows."""
        return axis_starts(self.height, self.shape[0], self.shape[0] - self.overlap, self.align)

    @cached_property
    def col_starts(self) -> list[int]:
        """Column offsets of the grid columns."""
        return axis_starts(self.width, self.shape[1], self.shape[1] - self.overlap, self.align)

    @cached_property
    def row_cores(self) -> list[tuple[int, int]]:
        """Scene rows ``[lo, hi)`` owned by the cores of each grid row (they partition rows)."""
        return axis_cores(self.row_starts, self.shape[0], self.height)

    @cached_property
    def col_cores(self) -> list[tuple[int, int]]:
        """Scene columns ``[lo, hi)`` owned by the cores of each grid column."""
        return axis_cores(self.col_starts, self.shape[1], self.width)

    @cached_property
    def row_exclusive(self) -> dict[int, tuple[int, int]]:
        """Per grid row start, the scene rows ``[lo, hi)`` no other grid row's tiles cover."""
        spans = axis_exclusive(self.row_starts, self.shape[0], self.height)
        return dict(zip(self.row_starts, spans, strict=True))

    @cached_property
    def col_exclusive(self) -> dict[int, tuple[int, int]]:
        """Per grid column start, the scene columns no other grid column's tiles cover."""
        spans = axis_exclusive(self.col_starts, self.shape[1], self.width)
        return dict(zip(self.col_starts, spans, strict=True))

    def exclusive(self, read: Window) -> Window:
        """The part of the tile read at ``read`` that no other tile of the grid covers.

        Its output comes from this tile alone (empty where every pixel is shared).
        """
        r0, r1 = self.row_exclusive[int(read.row_off)]
        c0, c1 = self.col_exclusive[int(read.col_off)]
        return Window(c0, r0, c1 - c0, r1 - r0)

    @cached_property
    def tiles(self) -> list[Tile]:
        """Every tile in row-major order (the block-friendly read order)."""
        row_cores, col_cores = self.row_cores, self.col_cores
        rows, cols = self.shape
        tiles = []
        for r, (r0, (rc0, rc1)) in enumerate(zip(self.row_starts, row_cores, strict=True)):
            for c, (c0, (cc0, cc1)) in enumerate(zip(self.col_starts, col_cores, strict=True)):
                tiles.append(
                    Tile(
                        index=len(tiles),
                        row=r,
                        col=c,
                        read=Window(c0, r0, cols, rows),
                        core=Window(cc0, rc0, cc1 - cc0, rc1 - rc0),
                    )
                )
        return tiles

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def transposed(self) -> TileGrid:
        """The same grid over the transposed scene (rows and columns swapped)."""
        rows, cols = self.shape
        return TileGrid(self.width, self.height, cols, self.overlap, self.align,
                        None if rows == cols else rows)

    def clip(self, window: Window) -> Window:
        """The part of ``window`` inside the scene."""
        col0, row0 = int(window.col_off), int(window.row_off)
        return Window(
            col0,
            row0,
            min(int(window.width), self.width - col0),
            min(int(window.height), self.height - row0),
        )

    def influence(self, tile: Tile, blend: str) -> Window:
        """The scene pixels whose output ``tile`` can change.

        That is its core for the ``center`` blend, its read window (inside the scene) otherwise.
        A tile without a valid pixel there adds zero weight everywhere, so leaving it out
        changes nothing.
        """
        return tile.core if blend == "center" else self.clip(tile.read)

    def band_rows(self, first: int, stop: int) -> tuple[int, int]:
        """Scene rows ``[lo, hi)`` owned by the cores of grid rows ``first .. stop - 1``.

        Raises:
            ConfigError: Unless ``0 <= first < stop <= n``, ``n`` the number of grid rows.
        """
        if not 0 <= first < stop <= len(self.row_starts):
            raise ConfigError(f"Expected grid rows 0 <= first < stop <= {len(self.row_starts)}. "
                              f"Received: {first}, {stop}")
        return self.row_cores[first][0], self.row_cores[stop - 1][1]

    def reaches(self, tile: Tile, blend: str, rows: tuple[int, int]) -> bool:
        """Whether ``tile`` can change an output pixel of scene rows ``[lo, hi)``."""
        window = self.influence(tile, blend)
        return window.row_off < rows[1] and window.row_off + window.height > rows[0]

    def rows_final_after(self, grid_row: int) -> int:
        """Scene rows below this index receive no more tiles once ``grid_row`` is done."""
        if grid_row + 1 < len(self.row_starts):
            return self.row_starts[grid_row + 1]
        return self.height

    @property
    def patch_pixels(self) -> int:
        """Pixels fed to the model for the whole scene (tiles x tile area)."""
        return len(self) * self.shape[0] * self.shape[1]


def tile_shape(tile: int | tuple[int, int]) -> tuple[int, int]:
    """A tile's ``(rows, cols)`` from its side or its shape."""
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def blend_weights(tile: int | tuple[int, int], floor: float = 1e-3) -> np.ndarray:
    """A smooth 2-D window (separable squared sine, i.e. Hann) with a positive floor.

    Weights fall towards tile edges, where predictions have the least context, so that
    overlapping tiles fade into each other without seams. The floor keeps every pixel of a
    tile weighted, which matters where a single tile covers a pixel (scene edges).

    Args:
        tile: The tile's side, or its ``(rows, columns)``.
        floor: The smallest weight.

    Returns:
        A ``(rows, columns)`` float32 array in ``[floor, 1]``.

    """
    rows, cols = tile_shape(tile)
    if rows <= 0 or cols <= 0:
        raise ConfigError(f"Expected tile > 0. Received: {tile}")

    def window(n: int) -> np.ndarray:
        x = (np.arange(n, dtype=np.float64) + 0.5) / n
        return np.maximum(np.sin(np.pi * x) ** 2, floor)

    return np.outer(window(rows), window(cols)).astype(np.float32)


def core_weights(tile: int | tuple[int, int], core: Window, read: Window) -> np.ndarray:
    """Weights for the ``center`` blend: 1 inside the tile's core, 0 elsewhere."""
    w = np.zeros(tile_shape(tile), dtype=np.float32)
    r0 = int(core.row_off - read.row_off)
    c0 = int(core.col_off - read.col_off)
    w[r0 : r0 + int(core.height), c0 : c0 + int(core.width)] = 1.0
    return w
