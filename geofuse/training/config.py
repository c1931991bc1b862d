"""Frozen, validated configuration of a training run (no TensorFlow, no rasterio).

``TrainConfig`` names the data (:class:`TilesSource` folders and :class:`SceneSource` scenes),
the classes and how masks encode them, the architecture, and how to fit. It is stored in the
trained model's provenance (:meth:`TrainConfig.to_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geofuse.checks import bands as check_bands
from geofuse.checks import choice, positive_int, require
from geofuse.config import Architecture, ClassInfo, TilingConfig
from geofuse.errors import ConfigError
from geofuse.training.labels import MASK_MODES, LabelCoding

LOSSES = ("ce+dice", "focal+dice", "ce", "focal", "dice")
STRATEGIES = ("none", "mirrored", "multi-worker")
CACHES = ("auto", "memory", "disk")
SAMPLING = ("random", "grid")


@dataclass(frozen=True)
class TilesSource:
    """A tiles folder: ``ROOT/IMAGES/NAME.ext`` with ``ROOT/MASKS/NAME.ext``.

    When ``ROOT/IMAGES`` does not exist, every folder named ``IMAGES`` below ``ROOT`` that has a
    sibling ``MASKS`` folder is used (e.g. ``Tile 1/images``, ``Tile 2/images``, ...).

    Attributes:
        root: The tiles folder.
        images: Name of the image folder.
        masks: Name of the mask folder.
        image_ext: Image extension (``.jpg``); None accepts every raster extension.
        mask_ext: Mask extension; None finds the mask with the image's stem.
        exclude: Glob patterns (relative to ``root``) of images to leave out.
        coding: How this folder's masks encode classes (None: the run's coding).
    """

    root: Path
    images: str = "images"
    masks: str = "masks"
    image_ext: str | None = None
    mask_ext: str | None = None
    exclude: tuple[str, ...] = ()
    coding: LabelCoding | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class SceneSource:
    """A scene with labels: a label raster on the scene's grid or vector labels.

    Attributes:
        scene: The image.
        labels: A mask raster of the same size, or a vector file (GeoJSON, GeoPackage, ...).
        class_field: Vector attribute holding class ids or names (None: every feature class 1).
        line_width: Buffer width in metres for vector lines and points.
        coding: How the label raster encodes classes (None: the run's coding).
    """

    scene: Path
    labels: Path
    class_field: str | None = None
    line_width: float | None = None
    coding: LabelCoding | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene", Path(self.scene))
        object.__setattr__(self, "labels", Path(self.labels))
        if self.line_width is not None and not self.line_width > 0:
            raise ConfigError(f"Expected a positive line width. Received: {self.line_width}")


@dataclass(frozen=True)
class LabelOptions:
    """How label masks encode classes: shared by ``train`` and ``evaluate``.

    Attributes:
        classes: The class table; None reads ``classes_file``, a tiles folder's
            ``classes.json``, or (training) infers ids from the masks.
        classes_file: A ``classes.json`` (names, colours, mask values, ignored values).
        coding: How masks encode classes (None: from the classes file / class colours).
        ignore_values: Id-mask values to ignore (e.g. -1 or 0).
        ignore_colors: Mask colours to ignore (``#rrggbb``).
        mask_mode: ``auto``, ``ids`` or ``colors``.
    """

    classes: tuple[ClassInfo, ...] | None = None
    classes_file: Path | None = None
    coding: LabelCoding | None = None
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[str, ...] = ()
    mask_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.classes_file is not None:
            object.__setattr__(self, "classes_file", Path(self.classes_file))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "ignore_values", tuple(int(v) for v in self.ignore_values))
        object.__setattr__(self, "ignore_colors", tuple(self.ignore_colors))
        choice("mask mode", self.mask_mode, MASK_MODES)

    def merge(self, base: LabelCoding | None, classes: tuple[ClassInfo, ...]) -> LabelCoding:
        """``base`` (default: the class colours) plus these ignored values and mask mode.

        Raises:
            ConfigError: When ``base`` codes another number of classes.
        """
        base = base or LabelCoding(classes=len(classes), colors=tuple(c.color for c in classes))
        require(base.classes == len(classes),
                f"Expected a coding for {len(classes)} classes. Received: {base.classes}")
        return LabelCoding(
            classes=base.classes, values=base.values,
            colors=base.colors or tuple(c.color for c in classes),
            ignore_values=tuple(dict.fromkeys(base.ignore_values + self.ignore_values)),
            ignore_colors=tuple(dict.fromkeys(base.ignore_colors + self.ignore_colors)),
            mode=self.mask_mode if self.mask_mode != "auto" else base.mode,
        )


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        sources: Tiles folders and/or scenes with labels.
        out: The model file to write (``.keras``).
        run_dir: Folder for history, curves, metrics and checkpoints (default ``OUT.train``).
        labels: The class table and how masks encode it.
        bands: 1-based image bands to use (None: all but alpha).
        arch: The network's architecture (fusion mode and its options included).
        patch: Chip side in pixels (a multiple of ``2**depth``).
        batch_size: Chips per step (a multiple of the replica count with a strategy).
        epochs: Maximum epochs.
        steps_per_epoch: Steps per epoch.
        learning_rate: Adam learning rate (cosine decay to 5 % over the run).
        loss: ``ce+dice``, ``focal+dice``, ``ce``, ``focal`` or ``dice``.
        class_weights: ``auto`` (inverse square-root frequency), ``none`` or one per class.
        augment: 8 flips/rotations and brightness/contrast jitter.
        jitter: Brightness/contrast jitter range (normalised units).
        sampling: ``random`` chip positions or a shuffled ``grid``.
        source_weights: Share of random chips drawn from each source (None: by area).
        val_fraction: Share of tiles / scene blocks held out for validation.
        val_block: Side of the scene blocks (None: ``max(4 * patch, 256)``).
        max_val_chips: Cap on validation chips per epoch.
        patience: Epochs without improvement before stopping (0: never stop early).
        seed: Seed of everything random.
        deterministic: Enable TensorFlow op determinism.
        resume: Continue from the run folder's last checkpoint.
        overwrite: Replace an existing model file.
        strategy: ``none``, ``mirrored`` (all local devices) or ``multi-worker`` (TF_CONFIG).
        cache: ``auto`` (hold non-GeoTIFF images in memory), ``memory`` or ``disk``.
        workers: Parallel chip-reading calls in the tf.data pipeline.
    """

    sources: tuple[TilesSource | SceneSource, ...]
    out: Path
    run_dir: Path | None = None
    labels: LabelOptions = field(default_factory=LabelOptions)
    bands: tuple[int, ...] | None = None
    arch: Architecture = field(default_factory=Architecture)
    patch: int = 64
    batch_size: int = 16
    epochs: int = 20
    steps_per_epoch: int = 50
    learning_rate: float = 3e-3
    loss: str = "ce+dice"
    class_weights: str | tuple[float, ...] = "auto"
    augment: bool = True
    jitter: float = 0.2
    sampling: str = "random"
    source_weights: tuple[float, ...] | None = None
    val_fraction: float = 0.2
    val_block: int | None = None
    max_val_chips: int = 256
    patience: int = 5
    seed: int = 0
    deterministic: bool = True
    resume: bool = False
    overwrite: bool = False
    strategy: str = "none"
    cache: str = "auto"
    workers: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "out", Path(self.out))
        if self.run_dir is not None:
            object.__setattr__(self, "run_dir", Path(self.run_dir))
        object.__setattr__(self, "bands", check_bands(self.bands))
        if self.source_weights is not None:
            object.__setattr__(self, "source_weights",
                               tuple(float(w) for w in self.source_weights))
            require(len(self.source_weights) == len(self.sources)
                   and all(w >= 0 for w in self.source_weights)
                   and sum(self.source_weights) > 0,
                   f"Expected {len(self.sources)} non-negative source weights. "
                   f"Received: {self.source_weights}")
        if not isinstance(self.class_weights, str):
            object.__setattr__(self, "class_weights",
                               tuple(float(w) for w in self.class_weights))
        require(len(self.sources) > 0,
               "Expected --tiles or --scene with --labels. Received: no training data")
        choice("loss", self.loss, LOSSES)
        choice("strategy", self.strategy, STRATEGIES)
        choice("cache", self.cache, CACHES)
        choice("sampling", self.sampling, SAMPLING)
        if isinstance(self.class_weights, str):
            choice("class weights", self.class_weights, ("auto", "none"))
        for name in ("patch", "batch_size", "epochs", "steps_per_epoch", "max_val_chips",
                     "workers"):
            positive_int(name, getattr(self, name))
        self.arch.check_tile(self.patch)
        require(0.0 <= self.val_fraction < 1.0,
               f"Expected 0 <= val_fraction < 1. Received: {self.val_fraction}")
        require(self.learning_rate > 0,
               f"Expected a positive learning rate. Received: {self.learning_rate}")
        require(0.0 <= self.jitter < 1.0, f"Expected 0 <= jitter < 1. Received: {self.jitter}")
        require(isinstance(self.patience, int) and self.patience >= 0,
               f"Expected patience >= 0. Received: {self.patience!r}")
        if self.val_block is not None:
            require(isinstance(self.val_block, int) and self.val_block >= self.patch,
                   f"Expected val_block >= patch ({self.patch}). Received: {self.val_block!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (paths as strings)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            return value

        return plain(self)


@dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation run.

    Attributes:
        source: A tiles folder, or a scene with its labels (a label raster or vector file).
        model: Model file (None: the embedded default).
        labels: How masks encode the model's classes (a ``classes_file`` says; default: ids
            0..N-1, or the model's class colours for colour-coded masks) and what to ignore.
        tiling: Tile grid for inference (``bands`` selects input bands).
        seam_width: Half-width in pixels of the seam band (0: no seam metric).
        report: JSON report path.
        plot: Confusion-matrix PNG path (default: the report path with ``.png``).
        overwrite: Replace existing report files.
    """

    source: TilesSource | SceneSource
    model: Path | None = None
    labels: LabelOptions = field(default_factory=LabelOptions)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    seam_width: int = 8
    report: Path | None = None
    plot: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        require(isinstance(self.source, TilesSource | SceneSource),
                "Expected --tiles or --scene with --labels. Received: "
                f"{type(self.source).__name__}")
        require(isinstance(self.seam_width, int) and self.seam_width >= 0,
                f"Expected seam width >= 0. Received: {self.seam_width!r}")
        if self.report is not None and self.plot is None:
            object.__setattr__(self, "plot", Path(self.report).with_suffix(".png"))
