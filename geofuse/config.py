"""Frozen, validated configuration objects and their JSON round trip.

Nothing here imports TensorFlow or rasterio: these are plain values that travel with a model
file (``ModelSpec``, ``ModelInfo``) or describe one run (``TilingConfig``, ``SegmentConfig``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geofuse.checks import bands as check_bands
from geofuse.checks import choice, non_negative, positive_int, require
from geofuse.errors import ConfigError
from geofuse.fusion import fusion_mode

if TYPE_CHECKING:
    from geofuse.windows import TileGrid

BLEND_MODES = ("hann", "center")
PROBABILITY_DTYPES = ("uint8", "float32")
TTA_MODES = ("none", "flips", "rotations", "all")
RUNTIMES = ("auto", "tensorflow", "openvino")  # inference runtimes (geofuse.runtime)
PRECISIONS = ("auto", "f32", "bf16")
VECTOR_FORMATS = ("gpkg", "geojson")
FUSION_LEVELS = ("all", "adjacent")
CLASS_NODATA = 255
RESAMPLE_MODES = ("auto", "off")  # reading a scene at the model's pixel size (InputConfig)
STRETCH_MODES = ("percentile",)
OVERLAP_DIVISOR = 16  # default overlap: a sixteenth of the tile (docs/seams.md)
FIT_RANGE = 0.25  # a big scene's tile may differ from the nominal one by this share (for_scene)
PREVIEW_SIZE = 1024  # default longest side of quick-look pictures (geofuse.preview)
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
READABLE_COLOURS = (  # (word starts in a class name, display colour), first match wins
    (("background", "unlabel", "nodata", "no data", "other"), "#d9d9d9"),  # light grey
    (("water", "river", "lake", "sea", "ocean", "flood", "wet"), "#1f78b4"),  # blue
    (("vegetation", "forest", "tree", "grass", "crop", "farm", "field", "park", "shrub",
      "green", "agri"), "#33a02c"),  # green
    (("building", "roof", "house", "built"), "#e31a1c"),  # red
    (("road", "street", "highway", "paved", "parking", "rail"), "#808080"),  # grey
    (("land", "bare", "soil", "sand", "desert", "ground", "barren", "rock"), "#d2b48c"),  # tan
    (("cloud", "snow", "ice"), "#f0f0f0"),
    (("shadow",), "#404040"),
)
"""Display colours of common classes, by name: what outputs and previews use by default."""
OTHER_COLOURS = ("#6a3d9a", "#ff7f00", "#a6cee3", "#b15928", "#fb9a99", "#cab2d6", "#fdbf6f",
                 "#1b9e77", "#b2df8a", "#e7298a")
"""Distinct colours for classes whose names say nothing (``class3``), by class id."""


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#1f78b4"`` -> ``(31, 120, 180)``."""
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def class_colour(name: str, index: int) -> str:
    """The default display colour of class ``index`` called ``name``.

    Water is blue, vegetation green, buildings red, roads grey, bare land tan (see
    :data:`READABLE_COLOURS`); other names get a distinct colour by index. A ``classes.json``
    that gives colours overrides these.
    """
    lowered = name.lower()
    for words, colour in READABLE_COLOURS:
        if any(re.search(rf"\b{word}", lowered) for word in words):  # words, or their starts
            return colour
    return OTHER_COLOURS[index % len(OTHER_COLOURS)]


@dataclass(frozen=True)
class Architecture:
    """The shape of a fusion U-Net, independent of its bands and classes.

    ``geofuse train`` takes one (every field is a command-line option); a :class:`ModelSpec`
    adds the bands and classes of the data.

    Attributes:
        depth: Number of downsampling steps; tiles must be multiples of ``2**depth``.
        base_filters: Filters of the first encoder level; doubled at each level.
        fusion: How each decoder level fuses encoder levels: a mode of :mod:`geofuse.fusion`.
        fusion_width: Common width of the aligned maps; defaults to ``base_filters``.
        fusion_levels: Encoder levels each decoder level draws on: ``"all"`` or ``"adjacent"``
            (its own level and the ones directly above and below).
        fusion_options: The fusion mode's own options (e.g. ``gates`` for ``weighted``);
            missing ones take the mode's defaults, unknown ones are refused.

    """

    depth: int = 3
    base_filters: int = 16
    fusion: str = "concat"
    fusion_width: int | None = None
    fusion_levels: str = "all"
    fusion_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive_int("depth", self.depth)
        require(self.depth <= 6, f"Expected depth <= 6. Received: {self.depth}")
        positive_int("base_filters", self.base_filters)
        mode = fusion_mode(self.fusion)
        if self.fusion_width is not None:
            positive_int("fusion_width", self.fusion_width)
        choice("fusion_levels", self.fusion_levels, FUSION_LEVELS)
        object.__setattr__(self, "fusion_options", mode.resolve_options(self.fusion_options))

    @property
    def multiple(self) -> int:
        """Tile sides must be multiples of this number."""
        return 2**self.depth

    @property
    def width(self) -> int:
        """The common width of aligned maps in fusion blocks."""
        return self.fusion_width or self.base_filters

    def check_tile(self, tile: int) -> None:
        """Refuse a tile (or patch) side the network cannot take.

        Raises:
            ConfigError: When ``tile`` is not a multiple of ``2**depth``.
        """
        require(tile % self.multiple == 0,
                f"Expected a tile size that is a multiple of {self.multiple} for this model "
                f"(2**depth, depth {self.depth}). Received: {tile}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Rebuild from :func:`dataclasses.asdict` output or an older flat layout.

        Model files written before architectures were nested keep the fields, and the mode's
        options (``gates``, ``attention_size``), flat in the spec.
        """
        data = dict(data)
        if "fusion_options" not in data:
            mode = fusion_mode(data.get("fusion", cls.fusion))
            data["fusion_options"] = {o.name: data[o.name] for o in mode.options if o.name in data}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ModelSpec:
    """A network: its input bands, output classes and architecture.

    Attributes:
        bands: Number of input bands.
        classes: Number of output classes (softmax over classes).
        arch: The architecture.

    """

    bands: int
    classes: int
    arch: Architecture = field(default_factory=Architecture)

    def __post_init__(self) -> None:
        positive_int("bands", self.bands)
        positive_int("classes", self.classes)
        require(
            self.classes >= 2 and self.classes < CLASS_NODATA,
            f"Expected 2 to {CLASS_NODATA - 1} classes. Received: {self.classes}",
        )
        require(isinstance(self.arch, Architecture),
                f"Expected an Architecture. Received: {type(self.arch).__name__}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild from :func:`dataclasses.asdict` output (or an older flat layout)."""
        arch = data["arch"] if "arch" in data else {
            k: v for k, v in data.items() if k not in ("bands", "classes")
        }
        return cls(bands=data["bands"], classes=data["classes"],
                   arch=Architecture.from_dict(arch))


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its id (the pixel value), name and display colour."""

    id: int
    name: str
    color: str = "#808080"

    def __post_init__(self) -> None:
        require(
            isinstance(self.id, int) and 0 <= self.id < CLASS_NODATA,
            f"Expected a class id in 0..{CLASS_NODATA - 1}. Received: {self.id!r}",
        )
        require(
            bool(_HEX_COLOUR.match(self.color)),
            f"Expected a colour like '#1a2b3c' for class {self.name!r}. Received: {self.color!r}",
        )

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as an (r, g, b) tuple of 0..255 ints."""
        return hex_rgb(self.color)


@dataclass(frozen=True)
class Normalization:
    """How raw pixel values become model inputs: ``(raw * scale + offset - mean) / std``.

    ``scale``/``offset`` map the stored data type to a working range (e.g. 1/255 for 8-bit);
    ``mean``/``std`` are per-band statistics of the training data in that range.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        require(
            len(self.mean) == len(self.std),
            f"Expected as many std values as mean values ({len(self.mean)}). "
            f"Received: {len(self.std)}",
        )
        require(
            all(s > 0 for s in self.std),
            f"Expected positive std values. Received: {self.std}",
        )
        require(self.scale != 0, "Expected a non-zero scale. Received: 0")

    @classmethod
    def identity(cls, bands: int, scale: float = 1.0) -> Normalization:
        """Mean 0, std 1 for every band, with a dtype ``scale``."""
        return cls(mean=(0.0,) * bands, std=(1.0,) * bands, scale=scale)


@dataclass(frozen=True)
class ModelInfo:
    """Everything needed to use a model, stored in its ``.keras`` file next to the weights.

    Attributes:
        spec: The architecture.
        band_names: Names of the input bands, in order (e.g. ``("red", "green", "blue")``).
        normalization: Input scaling and per-band statistics.
        classes: The output classes, in output-channel order.
        patch_size: The training patch side in pixels.
        input_dtype: The data type of the training imagery.
        provenance: Free-form facts: geofuse version, data digest, metrics, dates.
        color_interp: GDAL colour interpretation of each training band (``red``, ``nir``,
            ``undefined``, ...), or None when unknown.
        value_range: Per band, the ``(low, high)`` raw values seen in training (their 0.5 and
            99.5 percentiles), or None when unknown.
        pixel_size: Pixel size of the training imagery in metres (median over the
            georeferenced training sources), or None when unknown.
        card: The model card's own words: ``summary``, ``good_for``, ``limits`` (training
            data, classes and scores are in ``provenance``).

    """

    spec: ModelSpec
    band_names: tuple[str, ...]
    normalization: Normalization
    classes: tuple[ClassInfo, ...]
    patch_size: int = 256
    input_dtype: str = "uint8"
    provenance: Mapping[str, Any] = field(default_factory=dict)
    color_interp: tuple[str, ...] | None = None
    value_range: tuple[tuple[float, float], ...] | None = None
    pixel_size: float | None = None
    card: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "band_names", tuple(self.band_names))
        object.__setattr__(self, "classes", tuple(self.classes))
        require(
            len(self.band_names) == self.spec.bands,
            f"Expected {self.spec.bands} band names. Received: {len(self.band_names)}",
        )
        require(
            len(self.normalization.mean) == self.spec.bands,
            f"Expected normalisation for {self.spec.bands} bands. "
            f"Received: {len(self.normalization.mean)}",
        )
        require(
            len(self.classes) == self.spec.classes,
            f"Expected {self.spec.classes} classes. Received: {len(self.classes)}",
        )
        require(
            [c.id for c in self.classes] == list(range(self.spec.classes)),
            "Expected class ids 0..N-1 in order. "
            f"Received: {[c.id for c in self.classes]}",
        )
        positive_int("patch_size", self.patch_size)
        if self.color_interp is not None:
            object.__setattr__(self, "color_interp", tuple(self.color_interp))
            require(len(self.color_interp) == self.spec.bands,
                    f"Expected {self.spec.bands} colour interpretations. "
                    f"Received: {len(self.color_interp)}")
        if self.value_range is not None:
            ranges = tuple((float(lo), float(hi)) for lo, hi in self.value_range)
            object.__setattr__(self, "value_range", ranges)
            require(len(ranges) == self.spec.bands and all(lo <= hi for lo, hi in ranges),
                    f"Expected a (low, high) value range for each of {self.spec.bands} bands. "
                    f"Received: {ranges}")
        if self.pixel_size is not None:
            object.__setattr__(self, "pixel_size", float(self.pixel_size))
            require(self.pixel_size > 0,
                    f"Expected a pixel size > 0 m. Received: {self.pixel_size}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return dataclasses.asdict(self) | {"provenance": dict(self.provenance),
                                           "card": dict(self.card)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Rebuild from :meth:`to_dict` output; raises ConfigError on bad content."""
        try:
            return cls(
                spec=ModelSpec.from_dict(data["spec"]),
                band_names=tuple(data["band_names"]),
                normalization=Normalization(**data["normalization"]),
                classes=tuple(ClassInfo(**c) for c in data["classes"]),
                patch_size=int(data.get("patch_size", 256)),
                input_dtype=str(data.get("input_dtype", "uint8")),
                provenance=dict(data.get("provenance", {})),
                color_interp=data.get("color_interp"),
                value_range=data.get("value_range"),
                pixel_size=data.get("pixel_size"),
                card=dict(data.get("card") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"Expected a complete model description. Received: {exc}") from exc

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class TilingConfig:
    """How a scene is cut into model inputs and stitched back.

    Attributes:
        tile: Side of each square model input, in pixels (a multiple of the model's ``2**depth``).
        overlap: Pixels shared by neighbouring tiles; the stride is ``tile - overlap``.
            None (the default) means ``tile // OVERLAP_DIVISOR`` (32 for the default tile).
        blend: ``"hann"`` (weighted blending) or ``"center"`` (keep each tile's core).
        batch_size: Tiles per model call.
        bands: 1-based band indexes to read, or None for every non-alpha band.
        runtime: Inference runtime, one of ``RUNTIMES``: ``auto`` is OpenVINO where it is
            installed, else TensorFlow (see :mod:`geofuse.runtime`).
        precision: One of ``PRECISIONS``: ``auto`` is bf16 on OpenVINO where the CPU has
            native BF16, else f32; bf16 needs OpenVINO.
        fit: Let :meth:`for_scene` change a big scene's tile by up to ``FIT_RANGE`` so that
            its grid computes the fewest patch pixels; False keeps ``tile`` exactly.
        align: Tiles start on multiples of this: :meth:`for_scene` sets the model's
            ``2**depth`` (see :mod:`geofuse.windows`).

    """

    tile: int = 512
    overlap: int | None = None
    blend: str = "hann"
    batch_size: int = 4
    bands: tuple[int, ...] | None = None
    runtime: str = "auto"
    precision: str = "auto"
    fit: bool = True
    align: int = 1

    def __post_init__(self) -> None:
        positive_int("tile", self.tile)
        if self.overlap is None:
            object.__setattr__(self, "overlap", self.tile // OVERLAP_DIVISOR)
        require(
            isinstance(self.overlap, int) and 0 <= self.overlap < self.tile,
            f"Expected 0 <= overlap < tile ({self.tile}). Received: overlap={self.overlap!r}",
        )
        choice("blend", self.blend, BLEND_MODES)
        positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "bands", check_bands(self.bands))
        choice("runtime", self.runtime, RUNTIMES)
        choice("precision", self.precision, PRECISIONS)

    @property
    def stride(self) -> int:
        """Distance between the origins of neighbouring tiles."""
        return self.tile - self.overlap

    def for_scene(self, height: int, width: int, multiple: int) -> TilingConfig:
        """The tiling to use for a scene of ``height`` x ``width`` pixels.

        The one place that decides the tile for a scene (``segment``, ``batch``, ``evaluate``,
        ``predict_array``, the Dask bands): a scene smaller than the tile is predicted as one
        tile of the smallest side that holds it (rounded up to ``multiple``, the model's
        ``2**depth``), instead of being padded into a big one; the overlap shrinks with it.
        With ``fit``, a bigger scene gets the tile within ``FIT_RANGE`` of ``tile`` (a multiple
        of ``multiple``) whose grid computes the fewest patch pixels, ties going to the
        nominal tile: the grid then fits the scene instead of its last tiles being pushed
        back over their neighbours. A bigger tile gets a smaller ``batch_size`` (rounded,
        at least 1), so that a model call holds about as many pixels (and memory) as before.
        The overlap is rounded up to a multiple of ``multiple`` and tiles are aligned to it
        (``align``). The result has ``fit`` off, so applying it twice changes nothing.
        """
        # a whole number of lattice steps, less than the tile
        overlap = max(0, min(-(-self.overlap // multiple) * multiple, self.tile - multiple))
        side = max(height, width)
        tile = -(-side // multiple) * multiple
        if tile < self.tile:
            return dataclasses.replace(self, tile=tile, fit=False, align=multiple,
                                       overlap=min(overlap, tile // 2) // multiple * multiple)
        if not self.fit:
            return dataclasses.replace(self, overlap=overlap, align=multiple)
        low = max(multiple, -(-int(self.tile * (1 - FIT_RANGE)) // multiple) * multiple,
                  overlap + multiple)
        high = int(self.tile * (1 + FIT_RANGE)) // multiple * multiple
        from geofuse.windows import TileGrid  # numpy, rasterio: not at import (CLI start-up)

        sides = sorted({*range(low, high + 1, multiple), self.tile},
                       key=lambda t: (TileGrid(height, width, t, overlap, multiple).patch_pixels,
                                      abs(t - self.tile)))
        tile = sides[0]
        # a bigger tile takes fewer per model call, so a call holds no more pixels (memory)
        batch = max(1, min(self.batch_size, round(self.batch_size * self.tile**2 / tile**2)))
        return dataclasses.replace(self, tile=tile, overlap=overlap, fit=False,
                                   align=multiple, batch_size=batch)

    def grid(self, height: int, width: int) -> TileGrid:
        """The tile grid of this tiling over a ``height`` x ``width`` scene."""
        from geofuse.windows import TileGrid

        return TileGrid(height, width, self.tile, self.overlap, self.align)



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
    """How a scene is fitted to the model's input contract (see :mod:`geofuse.contract`).

    Attributes:
        input_range: ``(low, high)`` scene values mapped linearly onto the model's input range
            (0..255 for an 8-bit model), values outside clipped. A scene whose data type is
            not the model's needs this or ``stretch``.
        stretch: ``"percentile"``: each band's 0.5 and 99.5 percentiles in the scene are mapped
            onto that band's training range recorded in the model.
        resample: ``"auto"``: a scene whose pixel size differs from the model's by more than
            :data:`~geofuse.contract.RESAMPLE_BEYOND` is read at the model's pixel size, and the
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
                "Expected --input-range or --stretch. Received: both")
        choice("resample", self.resample, RESAMPLE_MODES)
        require(self.nodata is None or not self.ignore_nodata,
                "Expected --nodata VALUE or --no-nodata. Received: both")

    @property
    def adapts_values(self) -> bool:
        """True when scene values are mapped onto the model's range."""
        return self.input_range is not None or self.stretch is not None


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
        input: How the scene is fitted to the model: value mapping, resampling, nodata.

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
    input: InputConfig = field(default_factory=InputConfig)

    def __post_init__(self) -> None:
        choice("probability dtype", self.probability_dtype, PROBABILITY_DTYPES)
        positive_int("gdal_cache_mb", self.gdal_cache_mb)
        choice("tta", self.tta, TTA_MODES)


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
