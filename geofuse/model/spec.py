"""What a model is, as plain values that travel inside its file.

:class:`Architecture` (the U-Net's shape and its fusion), :class:`ModelSpec` (plus bands and
classes), :class:`ClassInfo`, :class:`Normalization` and :class:`ModelInfo` (everything needed
to use the model: bands, normalisation, classes, patch and pixel size, provenance), each frozen,
validated, with a JSON round trip. Nothing here imports TensorFlow or rasterio.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geofuse.checks import choice, positive_int, require
from geofuse.colours import HEX_COLOUR, hex_rgb
from geofuse.config import CLASS_NODATA, FUSION_LEVELS
from geofuse.errors import ConfigError
from geofuse.model.fusion import fusion_mode


@dataclass(frozen=True)
class Architecture:
    """The shape of a fusion U-Net, independent of its bands and classes.

    ``geofuse train`` takes one (every field is a command-line option); a :class:`ModelSpec`
    adds the bands and classes of the data.

    Attributes:
        depth: Number of downsampling steps; tiles must be multiples of ``2**depth``.
        base_filters: Filters of the first encoder level; doubled at each level.
        fusion: How each decoder level fuses encoder levels: a mode of :mod:`geofuse.model.fusion`.
            The default, ``none`` (the plain U-Net skip), is what the fusion study supports
            (``scripts/studies/fusion``: no mode beat it on SpaceNet or Dubai, and it is the
            cheapest).
        fusion_width: Common width of the aligned maps; defaults to ``base_filters``.
        fusion_levels: Encoder levels each decoder level draws on: ``"all"`` or ``"adjacent"``
            (its own level and the ones directly above and below).
        fusion_options: The fusion mode's own options (e.g. ``gates`` for ``weighted``);
            missing ones take the mode's defaults, unknown ones are refused.

    """

    depth: int = 3
    base_filters: int = 16
    fusion: str = "none"
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

    def check_tile(self, tile: int | tuple[int, int]) -> None:
        """Refuse a tile (or patch) side, or ``(rows, cols)``, the network cannot take.

        Raises:
            ConfigError: When a side is not a multiple of ``2**depth``.
        """
        sides = (tile,) if isinstance(tile, int) else tuple(tile)
        require(all(side % self.multiple == 0 for side in sides),
                f"Expected a tile size that is a multiple of {self.multiple} for this model "
                f"(2**depth, depth {self.depth}). Received: "
                f"{'x'.join(str(side) for side in sides)}")

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
        arch: The architecture (of each member).
        members: Networks of this architecture, trained apart, whose probabilities the model
            averages (an ensemble; 1: a single network).

    """

    bands: int
    classes: int
    arch: Architecture = field(default_factory=Architecture)
    members: int = 1

    def __post_init__(self) -> None:
        positive_int("bands", self.bands)
        positive_int("classes", self.classes)
        positive_int("members", self.members)
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
                   arch=Architecture.from_dict(arch), members=data.get("members", 1))


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
            bool(HEX_COLOUR.match(self.color)),
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
