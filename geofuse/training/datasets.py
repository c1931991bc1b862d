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

import fnmatch
import glob
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

from geofuse.errors import InputError, first_line
from geofuse.model.spec import ClassInfo
from geofuse.read.reader import SceneReader
from geofuse.sources import as_source, source_name
from geofuse.training.config import MASK_SUFFIXES, TilesSource
from geofuse.training.labels import IGNORE, SET_BASE, UNKNOWN, LabelCoding, MaskDecoder
from geofuse.training.vector_labels import VectorLabels

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
    """Image/mask pairs of a tiles folder or list, sorted by path.

    Raises:
        InputError: Missing folder, no images, or an image without a mask (naming where the
            mask was looked for).
    """
    root = Path(source.root)
    suffixes = (source.mask_suffix,) if source.mask_suffix is not None else MASK_SUFFIXES
    if root.is_file():
        images = _listed_images(root)
        root = root.parent
    elif root.is_dir():
        images = _folder_images(root, source)
    else:
        raise InputError(f"{root}: no such tiles folder or list")
    pairs = []
    for image in images:
        if not _ext_ok(image, source.image_ext, RASTER_EXTS) or _is_mask(image, suffixes):
            continue
        rel = image.relative_to(root) if image.is_relative_to(root) else Path(image.name)
        if any(rel.match(p) or image.name == p for p in source.exclude):
            continue
        places = [image.parent / source.masks, image.parent.parent / source.masks, image.parent]
        places = list(dict.fromkeys(p for p in places if p.is_dir()))
        stems = [image.stem + s for s in suffixes] if source.mask_suffix else \
            [image.stem] + [image.stem + s for s in suffixes]
        mask = _find_mask(image, places, stems, source.mask_ext)
        if mask is None:
            looked = ", ".join(str(p / (stem + (source.mask_ext or ".*")))
                               for p in places[:2] for stem in stems[:3])
            raise InputError(f"{image}: no mask found (looked for {looked}; set `masks` or "
                             "`mask_suffix`)")
        pairs.append((image, mask))
    if not pairs:
        raise InputError(
            f"{source.root}: no image tiles found (expected {source.images}/NAME"
            f"{source.image_ext or '.tif'} with {source.masks}/NAME"
            f"{source.mask_ext or '.tif'}, or NAME.tif with NAME_mask.tif beside it)"
        )
    return pairs


def _listed_images(listing: Path) -> list[Path]:
    """Image paths from a text file, one per line (relative to the file; # comments)."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{listing}: not a readable list of image files ({exc})") from exc
    images = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            path = Path(text) if Path(text).is_absolute() else listing.parent / text
            if not path.is_file():
                raise InputError(f"{listing}: listed image {text} does not exist")
            images.append(path)
    return images


def _folder_images(root: Path, source: TilesSource) -> list[Path]:
    """The images of a tiles folder (see :class:`TilesSource`)."""
    if (root / source.images).is_dir():
        folders = [root / source.images]
    else:
        folders = sorted(p for p in root.rglob(source.images)
                         if p.is_dir() and (p.parent / source.masks).is_dir()) or [root]
    return sorted(p for folder in folders for p in folder.iterdir() if p.is_file())


def _is_mask(path: Path, suffixes: Sequence[str]) -> bool:
    stem = path.stem
    return any(s and stem.endswith(s) and len(stem) > len(s) for s in suffixes)


def _find_mask(image: Path, places: Sequence[Path], stems: Sequence[str],
               ext: str | None) -> Path | None:
    for place in places:
        for stem in stems:
            found = sorted(m for m in place.glob(glob.escape(stem) + ".*")
                           if m.is_file() and m != image and _ext_ok(m, ext, RASTER_EXTS))
            if found:
                return found[0]
    return None


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
        self.image = as_source(image)  # a local path, or a GDAL name kept as written
        self.labels = as_source(labels)
        self.coding = coding
        self.source = 0  # index of the data source it came from (set by the caller)
        self.cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # Per-thread handles owned by this object (rasterio datasets must not be shared
        # between threads); they go with it, so a later raster never finds them.
        self._local = threading.local()
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
        if Path(source_name(self.labels)).suffix.lower() in VECTOR_EXTS:
            self.vector = VectorLabels(
                self.labels, self.crs, self.transform, (self.height, self.width), classes,
                class_field, line_width, source_name(self.image),
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
                    f"{source_name(self.image)}. Received: {size[1]}x{size[0]} px"
                )
            if grid[0] and self.crs and (
                grid[0] != self.crs or not grid[1].almost_equals(self.transform, 1e-6)
            ):
                raise InputError(
                    f"{self.labels}: expected a mask on the grid of {source_name(self.image)} "
                    f"({self.crs}, origin {self.transform.c:.3f}, {self.transform.f:.3f}). "
                    f"Received: {grid[0]}, origin {grid[1].c:.3f}, {grid[1].f:.3f}"
                )

    @property
    def name(self) -> str:
        """A short name for messages."""
        return source_name(self.image)

    def _open(self) -> tuple[SceneReader, Any]:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            reader = SceneReader(self.image, self.bands)
            mask = rasterio.open(self.labels) if self.decoder is not None else None
            handles = self._local.handles = (reader, mask)
        return handles

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

    @property
    def memory_bytes(self) -> int:
        """Bytes :meth:`load` holds: the image bands, validity and labels."""
        bands = len(self.bands) * np.dtype(self.dtype).itemsize
        return self.height * self.width * (bands + 2)

    def load(self) -> None:
        """Hold the whole raster in memory (JPEG/PNG tiles decode once, not per chip)."""
        if self.cached is None:
            self.cached = self.read(Window(0, 0, self.width, self.height))

    def close(self) -> None:
        """Release the calling thread's handles."""
        entry = getattr(self._local, "handles", None)
        self._local.handles = None
        if entry is not None:
            entry[0].close()
            if entry[1] is not None:
                entry[1].close()


POINTS = 512  # pixel positions kept per class and unit for class-balanced chip sampling


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
    set_pixels: int = 0  # pixels labelled with a class set ("one of these classes")
    # per class id: up to POINTS (row, col) raster positions of its pixels (for sampling)
    points: dict[int, np.ndarray] = field(default_factory=dict)

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

    Fills ``counts``, ``set_pixels``, ``sums``, ``squares`` and ``points`` (a seeded sample of
    each class's pixel positions) of each unit. Raises InputError for mask values outside the
    classes (naming the mask file and the values).
    """
    for n, unit in enumerate(units):
        rng = np.random.default_rng(n)
        found: dict[int, list[np.ndarray]] = {}
        raster = rasters[unit.raster]
        win = unit.window
        bands = len(raster.bands)
        unit.counts = np.zeros(classes, np.int64)
        unit.sums = np.zeros(bands)
        unit.squares = np.zeros(bands)
        unit.valid_pixels = 0
        unit.set_pixels = 0
        step = max(1, (1 << 22) // max(1, int(win.width)))
        for r in range(0, int(win.height), step):
            h = min(step, int(win.height) - r)
            data, valid, labels = raster.read(Window(win.col_off, win.row_off + r, win.width, h))
            strip = np.bincount(labels[labels < classes].ravel(), minlength=classes)[:classes]
            unit.counts += strip
            unit.set_pixels += int(((labels >= SET_BASE) & (labels < UNKNOWN)).sum())
            for c in np.flatnonzero(strip):
                rows, cols = np.nonzero(labels == c)
                pick = rng.choice(len(rows), size=min(POINTS, len(rows)), replace=False)
                found.setdefault(int(c), []).append(np.column_stack(
                    [rows[pick] + int(win.row_off) + r, cols[pick] + int(win.col_off)]))
            if valid.any():
                unit.valid_pixels += int(valid.sum())
                x = data[:, valid].astype(np.float64) * scale
                unit.sums += x.sum(axis=1)
                unit.squares += (x * x).sum(axis=1)
        for c, parts in found.items():
            both = np.concatenate(parts)
            keep = rng.choice(len(both), size=min(POINTS, len(both)), replace=False)
            unit.points[c] = both[np.sort(keep)].astype(np.int64)
        if progress is not None:
            progress(n + 1, len(units))


def split_units(units: Sequence[Unit], fraction: float, seed: int) -> None:
    """Mark about ``fraction`` of the labelled units as validation (seeded, whole units).

    Units are drawn in one seeded order over all sources. At least one unit stays for
    training; with ``fraction > 0`` and two or more labelled units at least one validates.
    """
    labelled = [u for u in units if u.counts.sum() > 0]
    if fraction <= 0 or len(labelled) < 2:
        return
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    take = min(len(labelled) - 1, max(1, int(round(fraction * len(labelled)))))
    for i in order[:take]:
        labelled[int(i)].validation = True


def choose_validation(units: Sequence[Unit], images: Sequence[Path],
                      names: Sequence[str]) -> None:
    """Mark as validation the units whose image matches one of ``names``.

    A name matches an image's file name, its stem, or (as a glob) its path.

    Raises:
        InputError: For a name that matches no image, or when nothing is left to train on.
    """
    matched: set[str] = set()
    for unit, image in zip(units, images, strict=True):
        for name in names:
            if name in (image.name, image.stem) or fnmatch.fnmatch(str(image), name) \
                    or fnmatch.fnmatch(image.name, name):
                unit.validation = True
                matched.add(name)
    missing = [n for n in names if n not in matched]
    if missing:
        shown = ", ".join(sorted({p.name for p in images})[:5])
        raise InputError(f"Expected validation tiles among the training images ({shown}, ...). "
                         f"Received: {', '.join(missing)}, which match none")
    if all(u.validation for u in units):
        raise InputError(f"Expected tiles left for training besides the validation tiles "
                         f"{', '.join(names)}. Received: every tile chosen for validation")


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


def class_weights(counts: np.ndarray, power: float = 0.5, cap: float = 10.0) -> np.ndarray:
    """Inverse frequency weights ``freq ** -power``, mean 1 over present classes, capped at ``cap``.

    ``power`` 0.5 (the ``auto`` weighting) is the inverse square root, 1 the inverse frequency.
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.ones_like(counts)
    if present.sum() < 2:
        return weights
    freq = counts[present] / counts[present].sum()
    w = freq ** -float(power)
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
