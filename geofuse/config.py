"""Frozen, validated configuration objects and their JSON round trip.

Nothing here imports TensorFlow or rasterio: these are plain values that describe one run
(``TilingConfig``, ``SegmentConfig``, ...). What a model is (``ModelSpec``, ``ModelInfo``), which
travels inside its file, lives in :mod:`geofuse.model.spec`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geofuse.checks import bands as check_bands
from geofuse.checks import choice, is_int, non_negative, positive_int, require
from geofuse.errors import ConfigError

if TYPE_CHECKING:
    from geofuse.read.grid import TileGrid

BLEND_MODES = ("hann", "center")
PROBABILITY_DTYPES = ("uint8", "float32")
TTA_TRANSFORMS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    # identity, left-right, up-down (= half turn of the mirror), half turn
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "rotations": ((0, False), (1, False), (2, False), (3, False)),
    "all": tuple((k, flip) for flip in (False, True) for k in range(4)),
}
"""Test-time augmentation modes: ``(quarter_turns, mirror_left_right)`` per pass
(:mod:`geofuse.model.tta` applies them)."""
TTA_MODES = tuple(TTA_TRANSFORMS)
RUNTIMES = ("auto", "tensorflow", "openvino")  # inference runtimes (geofuse.model.runtime)
PRECISIONS = ("auto", "f32", "bf16", "int8")
VECTOR_FORMATS = ("gpkg", "geojson")
EXPORT_FORMATS = ("openvino", "onnx", "saved_model")  # geofuse export (geofuse.model.export)
EXPORT_PRECISIONS = ("f32", "int8")  # int8: OpenVINO only
FUSION_LEVELS = ("all", "adjacent")
CLASS_NODATA = 255
RESAMPLE_MODES = ("auto", "off")  # reading a scene at the model's pixel size (InputConfig)
STRETCH_MODES = ("percentile",)
OVERLAP_DIVISOR = 16  # default overlap: a sixteenth of the tile (scripts/studies/seams)
FIT_RANGE = 0.25  # a big scene's tile may differ from the nominal one by this share (for_scene)
CALL_SLACK = 0.1  # a fitted tiling's model call may hold this share more pixels (for_scene)
PREVIEW_SIZE = 1024  # default longest side of quick-look pictures (geofuse.products.preview)
PREVIEW_STYLES = ("outline", "fill")  # quick-look styles, the default first
UNKNOWN_START = "1970-01-01T00:00:00Z"
"""Start of the time range a STAC item gives when its acquisition time is unknown (docs/stac.md):
the range then runs from here to when the product was made."""
@dataclass(frozen=True)
class TilingConfig:
    """How a scene is cut into model inputs and stitched back.

    Attributes:
        tile: Side of each square model input, in pixels (a multiple of the model's ``2**depth``);
            its rows when ``tile_width`` is given.
        overlap: Pixels shared by neighbouring tiles; the stride is ``tile - overlap``.
            None (the default) means ``tile // OVERLAP_DIVISOR`` (32 for the default tile).
        blend: ``"hann"`` (weighted blending) or ``"center"`` (keep each tile's core).
        batch_size: Tiles per model call.
        bands: 1-based band indexes to read, or None for every non-alpha band.
        runtime: Inference runtime, one of ``RUNTIMES``: ``auto`` is OpenVINO where it is
            installed, else TensorFlow (see :mod:`geofuse.model.runtime`).
        precision: One of ``PRECISIONS``: ``auto`` is int8 on OpenVINO for a model whose file
            shows int8 costs it nothing worth noting, else bf16 where the CPU has native BF16,
            else f32; bf16 and int8 need OpenVINO (see :mod:`geofuse.model.runtime`).
        calibration: A folder of images to calibrate the int8 network on, instead of the
            chips the model file carries (:mod:`geofuse.model.calibration`).
        fit: Let :meth:`for_scene` change a big scene's tile by up to ``FIT_RANGE`` so that
            its grid computes the fewest patch pixels; False keeps ``tile`` exactly.
        align: Tiles start on multiples of this: :meth:`for_scene` sets the model's
            ``2**depth`` (see :mod:`geofuse.read.grid`).
        tile_width: The tile's columns where :meth:`for_scene` fitted a tile that is not
            square (a scene narrower than the tile along one axis); None: square.

    """

    tile: int = 512
    overlap: int | None = None
    blend: str = "hann"
    batch_size: int = 4
    bands: tuple[int, ...] | None = None
    runtime: str = "auto"
    precision: str = "auto"
    calibration: str | None = None
    fit: bool = True
    align: int = 1
    tile_width: int | None = None

    def __post_init__(self) -> None:
        positive_int("tile", self.tile)
        if self.tile_width is not None:
            positive_int("tile_width", self.tile_width)
        if self.overlap is None:
            object.__setattr__(self, "overlap", self.tile // OVERLAP_DIVISOR)
        side = min(self.shape)
        require(
            isinstance(self.overlap, int) and 0 <= self.overlap < side,
            f"Expected 0 <= overlap < tile ({side}). Received: overlap={self.overlap!r}",
        )
        choice("blend", self.blend, BLEND_MODES)
        positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "bands", check_bands(self.bands))
        choice("runtime", self.runtime, RUNTIMES)
        choice("precision", self.precision, PRECISIONS)

    @property
    def shape(self) -> tuple[int, int]:
        """The tile's ``(rows, columns)``."""
        return self.tile, self.tile if self.tile_width is None else self.tile_width

    def for_scene(self, height: int, width: int, multiple: int,
                  square: bool = False) -> TilingConfig:
        """The tiling to use for a scene of ``height`` x ``width`` pixels.

        The one place that decides the tile for a scene (``segment``, ``batch``, ``evaluate``,
        ``predict_array``, the Dask bands): a scene smaller than the tile is predicted as one
        tile of the smallest shape that holds it (its sides rounded up to ``multiple``, the
        model's ``2**depth``), instead of being padded into a big square one; the overlap
        shrinks with it. With ``fit``, a bigger scene gets the tile whose grid makes the model
        compute the fewest pixels (its model calls, the last one padded, times their pixels),
        ties going to a square tile, then to the nominal one: the grid then fits the scene
        instead of its last tiles being pushed back over their neighbours. Each side is a
        multiple of ``multiple``, at least ``FIT_RANGE`` below ``tile`` and at most
        ``FIT_RANGE`` above it, or above that where fewer tiles per call make up for it, or
        the whole scene's side (a strip narrower than the tile gets tiles as narrow as it);
        a model call never holds more than ``batch_size * tile**2`` pixels plus
        ``CALL_SLACK`` (its memory), or one tile of at most ``(1 + FIT_RANGE)**2 * tile**2``,
        so a 4 x 512 px call may become 3 x 616, 1 x 1040 or one 768 x 1024 px tile of a
        768 x 1024 scene. ``square`` keeps the tile square (test-time
        rotations turn a tile's rows into columns). The overlap is rounded up to a multiple of
        ``multiple`` and tiles are aligned to it (``align``). A scene of fewer tiles than
        ``batch_size`` gets a batch of its tiles (a padded call computes for nothing). The
        result has ``fit`` off, so applying it twice changes nothing.
        """
        if square and self.tile_width not in (None, self.tile):
            return dataclasses.replace(self, tile=max(self.shape), tile_width=None).for_scene(
                height, width, multiple, square)
        rows, cols = self.shape
        # a whole number of lattice steps, less than the tile
        overlap = max(0, min(-(-self.overlap // multiple) * multiple, min(rows, cols) - multiple))
        whole = [-(-n // multiple) * multiple for n in (height, width)]  # one tile per axis
        if square:
            whole = [max(whole)] * 2
        call = self.batch_size * rows * cols * (1 + CALL_SLACK)  # pixels one call may hold
        low = max(multiple, -(-int(self.tile * (1 - FIT_RANGE)) // multiple) * multiple,
                  overlap + multiple)
        high = max(int(self.tile * (1 + FIT_RANGE)), math.isqrt(int(call))) // multiple * multiple
        if (whole[0] <= rows and whole[1] <= cols) or (self.fit and whole[0] * whole[1] <= high**2):
            return dataclasses.replace(  # one tile, a call of one
                self, tile=whole[0], tile_width=None if whole[0] == whole[1] else whole[1],
                fit=False, align=multiple, batch_size=1,
                overlap=min(overlap, min(whole) // 2) // multiple * multiple)
        from geofuse.read.grid import axis_starts  # numpy, rasterio: not at import (CLI start-up)

        def count(length: int, side: int) -> int:  # tiles along one axis
            return len(axis_starts(length, side, side - overlap, multiple))

        def cost(pair: tuple[int, int]) -> tuple[int, int]:  # (pixels computed, batch)
            tiles = count(height, pair[0]) * count(width, pair[1])
            batch = max(1, min(self.batch_size, tiles, int(call // (pair[0] * pair[1]))))
            return -(-tiles // batch) * batch * pair[0] * pair[1], batch  # last call padded

        if not self.fit:
            return dataclasses.replace(self, overlap=overlap, align=multiple,
                                       batch_size=cost((rows, cols))[1])

        def sides(one: int) -> set[int]:  # the candidate sides along an axis
            one = max(one, overlap + multiple)  # one tile across: no shorter than the overlap
            return {*range(low, min(high, one) + 1, multiple), one, min(self.tile, one)}

        pairs = [(a, b) for a in sides(whole[0]) for b in sides(whole[1])
                 if a * b <= high * high and (a == b or not square)]
        best = min(pairs, key=lambda p: (cost(p)[0], p[0] != p[1],
                                         abs(p[0] - self.tile) + abs(p[1] - self.tile)))
        return dataclasses.replace(self, tile=best[0],
                                   tile_width=None if best[0] == best[1] else best[1],
                                   overlap=overlap, fit=False, align=multiple,
                                   batch_size=cost(best)[1])

    @property
    def label(self) -> str:
        """The tile as its outputs' ``GEOFUSE_TILE`` tag gives it: ``512`` or ``768x1024``."""
        rows, cols = self.shape
        return str(rows) if rows == cols else f"{rows}x{cols}"

    def grid(self, height: int, width: int) -> TileGrid:
        """The tile grid of this tiling over a ``height`` x ``width`` scene."""
        from geofuse.read.grid import TileGrid

        return TileGrid(height, width, self.tile, self.overlap, self.align, self.tile_width)


@dataclass(frozen=True)
class VectorizeConfig:
    """How a class mask becomes polygons (``geofuse vectorize``, ``segment --vector``).

    Attributes:
        simplify: Douglas-Peucker tolerance in *pixels* (topology-preserving); 0 keeps the exact
            pixel outlines. The default, 1.5, is 1.5 x the pixel size on the ground.
        min_area: Drop polygons smaller than this many square metres (ellipsoidal area).
        classes: Class names or ids (as strings) to turn into polygons; None means every class
            except one named ``background``.
        format: ``"gpkg"`` or ``"geojson"``; None picks it from the file extension.
        overwrite: Replace an existing output instead of refusing.
        block_pixels: Pixels read per block (full-width row bands); bounds memory.

    """

    simplify: float = 1.5
    min_area: float = 0.0
    classes: tuple[str, ...] | None = None
    format: str | None = None
    overwrite: bool = False
    block_pixels: int = 1 << 24

    def __post_init__(self) -> None:
        for name in ("simplify", "min_area"):
            value = getattr(self, name)
            non_negative(name, value)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c).strip() for c in self.classes))
            require(all(self.classes), f"Expected class names or ids. Received: {self.classes}")
        require(
            self.format is None or self.format in VECTOR_FORMATS,
            f"Expected format one of {', '.join(VECTOR_FORMATS)}. Received: {self.format!r}",
        )
        positive_int("block_pixels", self.block_pixels)


@dataclass(frozen=True)
class InputConfig:
    """How a scene is fitted to the model's input contract (see :mod:`geofuse.read.contract`).

    Attributes:
        input_range: ``(low, high)`` scene values mapped linearly onto the model's input range
            (0..255 for an 8-bit model), values outside clipped. A scene whose data type is
            not the model's needs this or ``stretch``.
        stretch: ``"percentile"``: each band's 0.5 and 99.5 percentiles in the scene are mapped
            onto that band's training range recorded in the model.
        resample: ``"auto"``: a scene whose pixel size differs from the model's by more than
            :data:`~geofuse.read.contract.RESAMPLE_BEYOND` is read at the model's pixel size, and
            the
            output written on the scene's own grid; ``"off"``: never.
        nodata: A nodata value replacing the scene's own, in every band.
        ignore_nodata: Ignore the scene's nodata value (alpha bands, mask files and NaN still
            mark invalid pixels).

    """

    input_range: tuple[float, float] | None = None
    stretch: str | None = None
    resample: str = "auto"
    nodata: float | None = None
    ignore_nodata: bool = False

    def __post_init__(self) -> None:
        if self.input_range is not None:
            low, high = (float(v) for v in self.input_range)
            require(low < high, f"Expected an input range LOW,HIGH with LOW < HIGH. "
                                f"Received: {low:g},{high:g}")
            object.__setattr__(self, "input_range", (low, high))
        if self.stretch is not None:
            choice("stretch", self.stretch, STRETCH_MODES)
        require(self.input_range is None or self.stretch is None,
                "Expected `input_range` or `stretch`. Received: both")
        choice("resample", self.resample, RESAMPLE_MODES)
        require(self.nodata is None or not self.ignore_nodata,
                "Expected `nodata` or `ignore_nodata`. Received: both")

    @property
    def adapts_values(self) -> bool:
        """True when scene values are mapped onto the model's range."""
        return self.input_range is not None or self.stretch is not None


@dataclass(frozen=True)
class StacConfig:
    """How a run's outputs are described as a STAC Item (``NAME.json`` beside ``NAME.tif``).

    Attributes:
        item_id: The item's id; None: the mask's file name without its suffix.
        model_item: The model's MLM item that the output item links to (``derived_from``);
            None: it is written beside the output item as ``NAME.model.json``.
        source_item: Where the STAC item of the scene is (a path or URL), when the scene came
            from one: the output item links to it and takes its time.
        source_time: ``(datetime, start_datetime, end_datetime)`` of that source item, as
            RFC 3339 text or None each; None: the time comes from the scene's own tags.

    """

    item_id: str | None = None
    model_item: Path | None = None
    source_item: str | None = None
    source_time: tuple[str | None, str | None, str | None] | None = None

    def __post_init__(self) -> None:
        require(self.item_id is None or bool(self.item_id.strip()),
                f"Expected a STAC item id. Received: {self.item_id!r}")
        if self.source_time is not None:
            require(len(self.source_time) == 3,
                    f"Expected (datetime, start, end) of the source item. Received: "
                    f"{self.source_time!r}")
            object.__setattr__(self, "source_time", tuple(self.source_time))


@dataclass(frozen=True)
class SegmentConfig:
    """One ``segment`` run: tiling plus what to write.

    Attributes:
        tiling: Tile grid and blending.
        probabilities: Optional path of a per-class probability GeoTIFF.
        probability_dtype: ``"uint8"`` (0..255 quantised) or ``"float32"``.
        overwrite: Replace existing outputs instead of refusing.
        gdal_cache_mb: GDAL block-cache cap, which keeps memory independent of scene area.
        tta: Test-time augmentation, one of ``TTA_MODES``: ``none`` (1 model pass per tile),
            ``flips`` or ``rotations`` (4), ``all`` (the 8 flips/rotations).
        aoi: Optional vector file (any OGR format and CRS): only tiles that intersect it are
            read and predicted, and pixels outside it are nodata.
        vector: Optional polygon output (GeoPackage or GeoJSON) made from the mask.
        vectorize: Settings for ``vector``.
        preview: Optional quick-look PNG of the scene with the mask overlaid.
        preview_size: Longest side of the quick-look's picture in pixels (at least 16);
            None: the scene's size, at most ``PREVIEW_SIZE``.
        input: How the scene is fitted to the model: value mapping, resampling, nodata.
        stac: Also describe the outputs with a STAC Item (:mod:`geofuse.products.stac`);
            None: no item.

    """

    tiling: TilingConfig = field(default_factory=TilingConfig)
    probabilities: Path | None = None
    probability_dtype: str = "uint8"
    overwrite: bool = False
    gdal_cache_mb: int = 32
    tta: str = "none"
    aoi: Path | None = None
    vector: Path | None = None
    vectorize: VectorizeConfig = field(default_factory=VectorizeConfig)
    preview: Path | None = None
    preview_size: int | None = None
    input: InputConfig = field(default_factory=InputConfig)
    stac: StacConfig | None = None

    def __post_init__(self) -> None:
        choice("probability dtype", self.probability_dtype, PROBABILITY_DTYPES)
        if self.preview_size is not None and not (
                is_int(self.preview_size) and self.preview_size >= 16):
            raise ConfigError("Expected a preview size of at least 16 pixels. "
                              f"Received: {self.preview_size!r}")
        positive_int("gdal_cache_mb", self.gdal_cache_mb)
        choice("tta", self.tta, TTA_MODES)

    def tiling_for(self, height: int, width: int, multiple: int) -> TilingConfig:
        """``tiling.for_scene`` of a scene, square where ``tta`` turns tiles a quarter turn."""
        turns = any(k % 2 for k, _ in TTA_TRANSFORMS[self.tta])
        return self.tiling.for_scene(height, width, multiple, square=turns)


@dataclass(frozen=True)
class ClusterConfig:
    """Where Dask tasks run.

    Attributes:
        workers: Worker processes of the local cluster (ignored with ``scheduler``).
        scheduler: Address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.

    """

    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.workers, int) and self.workers > 0):
            raise ConfigError(f"Expected workers to be a positive integer. Received: "
                              f"{self.workers!r}")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ConfigError(f"Expected a scheduler address like tcp://host:8786. "
                              f"Received: {self.scheduler!r}")


@dataclass(frozen=True)
class BatchConfig:
    """One ``batch`` run.

    Attributes:
        segment: Per-scene tiling and output options (tiling, probability dtype, TTA, AOI,
            polygon settings). Its ``probabilities``, ``vector`` and ``preview`` paths and
            ``overwrite`` are ignored: batch names the outputs and decides what to redo.
        pattern: Glob pattern for scene file names (folder input).
        recursive: Also search sub-folders (their structure is mirrored under the output).
        probabilities: Also write ``NAME.probs.tif`` beside each mask.
        vector: Also write polygons, ``NAME.gpkg`` (``.geojson`` with that vectorize format).
        preview: Also write a quick-look ``NAME.png``.
        resume: Skip scenes whose outputs are complete; False redoes and replaces everything.
        workers: Worker processes of the local cluster (ignored with ``scheduler``).
        scheduler: Address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
        stac: Also write a STAC Item per scene and a static collection of them,
            ``OUT_DIR/collection.json`` (:mod:`geofuse.scale.catalog`).
        asset: With STAC input (an ItemCollection, catalogue or collection file): the key of
            the asset to segment in each item.

    """

    segment: SegmentConfig = field(default_factory=SegmentConfig)
    pattern: str = "*.tif"
    recursive: bool = False
    probabilities: bool = False
    vector: bool = False
    preview: bool = False
    resume: bool = True
    workers: int = 1
    scheduler: str | None = None
    stac: bool = False
    asset: str | None = None

    def __post_init__(self) -> None:
        require(self.asset is None or bool(self.asset.strip()),
                f"Expected an asset key. Received: {self.asset!r}")
        if not self.pattern:
            raise ConfigError("Expected a file name pattern like '*.tif'. Received: ''")
        self.cluster  # noqa: B018 - validates workers and scheduler

    @property
    def cluster(self) -> ClusterConfig:
        """Where the scenes run (:mod:`geofuse.scale.cluster` makes it)."""
        return ClusterConfig(self.workers, self.scheduler)


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``"1,2,3"`` into ``(1, 2, 3)``; None or empty stays None."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        return tuple(int(b) for b in text)
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(
            f"Expected comma-separated 1-based band numbers like 1,2,3. Received: {text!r}"
        ) from exc
