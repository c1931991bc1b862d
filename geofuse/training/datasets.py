"""Labelled training data: tiles folders and scenes with labels, checked, split and sampled.

A data set is a list of :class:`LabelledRaster` (an image plus class ids on the same grid: one
tile of a tiles folder, or one whole scene with a label raster or vector labels). Each raster is
cut into *units*: a tile is one unit, a scene is cut into square blocks. Whole units go to
validation (spatially separated, never random pixels); training chips are sampled inside
training units only, on the fly (random positions or a shuffled grid), so nothing is written to
disk first.

:func:`scan` reads every unit once (block by block) to check the masks (size, values outside the
classes), count class pixels (class weights) and accumulate per-band statistics (normalisation).
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geofuse.config import ClassInfo
from geofuse.errors import InputError, first_line
from geofuse.tiling import SceneReader
from geofuse.training.config import TilesSource
from geofuse.training.labels import IGNORE, UNKNOWN, LabelCoding, MaskDecoder, VectorLabels

warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

RASTER_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt", ".bmp", ".gif")
VECTOR_EXTS = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".sqlite")
DTYPE_SCALE = {"uint8": 1 / 255, "uint16": 1 / 65535, "int16": 1 / 32767}


def _ext_ok(path: Path, ext: str | None, allowed: Sequence[str]) -> bool:
    suffix = path.suffix.lower()
    if ext:
        return suffix == ("." + ext.lower().lstrip("."))
    return suffix in allowed


def find_pairs(source: TilesSource) -> list[tuple[Path, Path]]:
    """Image/mask pairs of a tiles folder, sorted by path.

    Raises:
        InputError: Missing folder, no images, or an image without a mask.
    """
    root = Path(source.root)
    if not root.is_dir():
        raise InputError(f"{root}: no such tiles folder")
    if (root / source.images).is_dir():
        folders = [root / source.images]
    else:
        folders = sorted(p for p in root.rglob(source.images)
                         if p.is_dir() and (p.parent / source.masks).is_dir())
    pairs = []
    for folder in folders:
        masks = folder.parent / source.masks
        by_stem: dict[str, list[Path]] = {}
        if masks.is_dir():
            for m in masks.iterdir():
                if m.is_file() and _ext_ok(m, source.mask_ext, RASTER_EXTS):
                    by_stem.setdefault(m.stem, []).append(m)
        for image in sorted(folder.iterdir()):
            if not image.is_file() or not _ext_ok(image, source.image_ext, RASTER_EXTS):
                continue
            rel = image.relative_to(root)
            if any(rel.match(pattern) for pattern in source.exclude):
                continue
            found = sorted(by_stem.get(image.stem, []))
            if not found:
                want = masks / (image.stem + (source.mask_ext or ".*"))
                raise InputError(f"{image}: no mask {want} (expected a mask of the same name)")
            pairs.append((image, found[0]))
    if not pairs:
        raise InputError(
            f"{root}: no image tiles found (expected {source.images}/NAME"
            f"{source.image_ext or '.tif'} with {source.masks}/NAME"
            f"{source.mask_ext or '.tif'})"
        )
    return pairs


_local = threading.local()


def _handles() -> dict[Any, Any]:
    """Per-thread open datasets (rasterio datasets must not be shared between threads)."""
    if not hasattr(_local, "handles"):
        _local.handles = {}
    return _local.handles


class LabelledRaster:
    """An image with class ids on the same grid.

    Args:
        image: The image raster.
        labels: A mask raster of the same size, or a vector file.
        coding: How the mask encodes classes.
        classes: The class table (for vector class names).
        bands: 1-based bands of the image to use (None: all but alpha).
        expected_bands: Band count every image must have.
        class_field: For vector labels.
        line_width: For vector labels.
    """

    def __init__(
        self,
        image: Path,
        labels: Path,
        coding: LabelCoding,
        classes: Sequence[ClassInfo],
        bands: Sequence[int] | None = None,
        expected_bands: int | None = None,
        class_field: str | None = None,
        line_width: float | None = None,
    ) -> None:
        self.image = Path(image)
        self.labels = Path(labels)
        self.coding = coding
        self.source = 0  # index of the data source it came from (set by the caller)
        self.cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        with SceneReader(self.image, bands, None, expected_bands) as reader:
            self.bands = reader.bands
            ds = reader.dataset
            self.height, self.width = ds.height, ds.width
            self.dtype = ds.dtypes[self.bands[0] - 1]
            self.crs, self.transform = ds.crs, ds.transform
            self.driver = ds.driver
            self.band_names = tuple(
                ds.descriptions[b - 1] or ds.colorinterp[b - 1].name for b in self.bands
            )
        self.vector: VectorLabels | None = None
        if self.labels.suffix.lower() in VECTOR_EXTS:
            self.vector = VectorLabels(
                self.labels, self.crs, self.transform, (self.height, self.width), classes,
                class_field, line_width, self.image.name,
            )
            self.decoder = None
        else:
            try:
                with rasterio.open(self.labels) as mask:
                    size = (mask.height, mask.width)
                    grid = (mask.crs, mask.transform)
                    self.decoder = MaskDecoder.for_dataset(mask, coding, str(self.labels))
            except RasterioError as exc:
                raise InputError(f"{self.labels}: not a readable mask ({first_line(exc)})") from exc
            if size != (self.height, self.width):
                raise InputError(
                    f"{self.labels}: expected a mask of {self.width}x{self.height} px like "
                    f"{self.image.name}. Received: {size[1]}x{size[0]} px"
                )
            if grid[0] and self.crs and (
                grid[0] != self.crs or not grid[1].almost_equals(self.transform, 1e-6)
            ):
                raise InputError(
                    f"{self.labels}: expected a mask on the grid of {self.image.name} "
                    f"({self.crs}, origin {self.transform.c:.3f}, {self.transform.f:.3f}). "
                    f"Received: {grid[0]}, origin {grid[1].c:.3f}, {grid[1].f:.3f}"
                )

    @property
    def name(self) -> str:
        """A short name for messages."""
        return self.image.name

    def _open(self) -> tuple[SceneReader, Any]:
        handles = _handles()
        key = id(self)
        if key not in handles:
            reader = SceneReader(self.image, self.bands)
            mask = rasterio.open(self.labels) if self.decoder is not None else None
            handles[key] = (reader, mask)
        return handles[key]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw image ``(bands, h, w)``, validity ``(h, w)`` and labels ``(h, w)`` uint8.

        Labels are IGNORE where the image is invalid. ``window`` must lie inside the raster.
        """
        if self.cached is not None:
            data, valid, labels = self.cached
            r0, c0 = int(window.row_off), int(window.col_off)
            rows = slice(r0, r0 + int(window.height))
            cols = slice(c0, c0 + int(window.width))
            return data[:, rows, cols], valid[rows, cols], labels[rows, cols]
        reader, mask = self._open()
        data, valid = reader.read_window(window)
        if self.vector is not None:
            labels = self.vector.read(window)
        else:
            try:
                raw = mask.read(list(self.decoder.bands), window=window)
            except RasterioError as exc:
                raise InputError(f"{self.labels}: cannot read pixels ({exc})") from exc
            labels = self.decoder.decode(raw)
            if UNKNOWN in labels:
                bad = self.decoder.unknown_values(raw, labels)
                raise InputError(
                    f"{self.labels}: expected mask values {self._accepted()}. "
                    f"Received: {', '.join(bad)}"
                )
        labels = np.where(valid, labels, IGNORE).astype(np.uint8)
        return data, valid, labels

    def _accepted(self) -> str:
        if self.decoder is not None and self.decoder.kind != "ids":
            return "with the class colours " + ", ".join(self.coding.colors or ())
        return f"in {self.coding.accepted()} (classes) or ignored values"

    def load(self) -> None:
        """Hold the whole raster in memory (JPEG/PNG tiles decode once, not per chip)."""
        if self.cached is None:
            self.cached = self.read(Window(0, 0, self.width, self.height))

    def close(self) -> None:
        """Release the calling thread's handles."""
        entry = _handles().pop(id(self), None)
        if entry is not None:
            entry[0].close()
            if entry[1] is not None:
                entry[1].close()


@dataclass
class Unit:
    """A whole tile or a block of a scene: the grain of the validation split."""

    raster: int
    window: Window
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sums: np.ndarray = field(default_factory=lambda: np.zeros(0))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valid_pixels: int = 0
    validation: bool = False

    @property
    def area(self) -> int:
        """Pixels."""
        return int(self.window.width) * int(self.window.height)


def make_units(rasters: Sequence[LabelledRaster], kinds: Sequence[str], block: int) -> list[Unit]:
    """One unit per tile; scenes cut into ``block`` x ``block`` blocks (edge blocks smaller)."""
    units = []
    for i, (raster, kind) in enumerate(zip(rasters, kinds, strict=True)):
        if kind == "tile":
            units.append(Unit(i, Window(0, 0, raster.width, raster.height)))
            continue
        for r in range(0, raster.height, block):
            for c in range(0, raster.width, block):
                h = min(block, raster.height - r)
                w = min(block, raster.width - c)
                units.append(Unit(i, Window(c, r, w, h)))
    return units


def scan(
    rasters: Sequence[LabelledRaster],
    units: Sequence[Unit],
    classes: int,
    scale: float,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Read every unit once: check labels, count classes, sum bands (in the scaled range).

    Fills ``counts``, ``sums`` and ``squares`` of each unit. Raises InputError for mask values
    outside the classes (naming the mask file and the values).
    """
    for n, unit in enumerate(units):
        raster = rasters[unit.raster]
        win = unit.window
        bands = len(raster.bands)
        unit.counts = np.zeros(classes, np.int64)
        unit.sums = np.zeros(bands)
        unit.squares = np.zeros(bands)
        unit.valid_pixels = 0
        step = max(1, (1 << 22) // max(1, int(win.width)))
        for r in range(0, int(win.height), step):
            h = min(step, int(win.height) - r)
            data, valid, labels = raster.read(Window(win.col_off, win.row_off + r, win.width, h))
            unit.counts += np.bincount(labels[labels < classes].ravel(),
                                       minlength=classes)[:classes]
            if valid.any():
                unit.valid_pixels += int(valid.sum())
                x = data[:, valid].astype(np.float64) * scale
                unit.sums += x.sum(axis=1)
                unit.squares += (x * x).sum(axis=1)
        if progress is not None:
            progress(n + 1, len(units))


def split_units(units: Sequence[Unit], fraction: float, seed: int) -> None:
    """Mark about ``fraction`` of the labelled units as validation (seeded, whole units).

    Units are drawn per raster kind so that every source contributes. At least one unit stays
    for training; with ``fraction > 0`` and two or more labelled units at least one validates.
    """
    labelled = [u for u in units if u.counts.sum() > 0]
    if fraction <= 0 or len(labelled) < 2:
        return
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    take = min(len(labelled) - 1, max(1, int(round(fraction * len(labelled)))))
    for i in order[:take]:
        labelled[int(i)].validation = True


def normalisation_stats(units: Sequence[Unit]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std (scaled range) over the valid pixels of training units."""
    train = [u for u in units if not u.validation] or list(units)
    sums = sum(u.sums for u in train)
    squares = sum(u.squares for u in train)
    valid = max(1, sum(u.valid_pixels for u in train))
    mean = sums / valid
    var = np.maximum(squares / valid - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 1e-6, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def class_weights(counts: np.ndarray, cap: float = 10.0) -> np.ndarray:
    """Inverse square-root frequency weights, mean 1 over present classes, capped at ``cap``."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.ones_like(counts)
    if present.sum() < 2:
        return weights
    freq = counts[present] / counts[present].sum()
    w = 1.0 / np.sqrt(freq)
    w /= w.mean()
    weights[present] = np.minimum(w, cap)
    return weights


def data_digest(paths: Sequence[Path]) -> str:
    """SHA-256 over the names and contents of the data files (order-independent of listing)."""
    h = hashlib.sha256()
    for path in sorted({Path(p) for p in paths}, key=str):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def band_scale(dtype: str) -> float:
    """The scale that maps a data type to about 0..1 (1 for floats and wide integers)."""
    return DTYPE_SCALE.get(dtype, 1.0)
