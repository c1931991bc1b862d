"""Frozen, validated configuration of a training run (no TensorFlow, no rasterio).

``TrainConfig`` names the data (:class:`TilesSource` folders and :class:`SceneSource` scenes),
the classes and how masks encode them, the architecture, and how to fit. It is stored in the
trained model's provenance (:meth:`TrainConfig.to_dict`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geofuse.checks import bands as check_bands
from geofuse.checks import choice, positive_int, require
from geofuse.config import TTA_MODES, InputConfig, TilingConfig
from geofuse.errors import ConfigError
from geofuse.model.spec import Architecture, ClassInfo
from geofuse.sources import as_source
from geofuse.training.init import FINETUNE_LEARNING_RATE, FREEZE_PARTS
from geofuse.training.labels import MASK_MODES, LabelCoding

AUTO_PATCH = "auto"
"""The ``patch`` value that chooses the chip side from the labels (:mod:`.chipsize`): the
default."""
DEFAULT_PATCH = 64
"""Reference chip side in pixels (with :data:`DEFAULT_BATCH`, the pixels of a training step),
and the side ``auto`` takes when the labels hold no object to measure."""
DEFAULT_BATCH = 16
"""Training chips per step of :data:`DEFAULT_PATCH` px (the batch of a side given)."""
SIDE_FACTOR = 1.5
"""``auto``: chip side over the area-weighted object side of the rarest class."""
SIDE_BOUNDS = (48, 64)
"""``auto``: smallest and largest chip side. Chips shrink for small objects but grow no
larger than :data:`DEFAULT_PATCH`: 80 px gained on Inria's buildings of 52 px but lost on
Massachusetts roads and forest, whose regions also ask for more, and 128 px lost on forest and
Dubai (the training study, ``scripts/studies/training``)."""
LOSSES = ("ce+dice", "focal+dice", "ce+lovasz", "ce", "focal", "dice", "lovasz")
STRATEGIES = ("none", "mirrored", "multi-worker")
CACHES = ("auto", "memory", "disk")
CACHE_AUTO_BYTES = 2 << 30  # cache="auto" holds data sets up to this size in memory
SAMPLING = ("random", "balanced", "grid")
# named class weightings -> exponent of the inverse class frequency (0: all classes weigh 1)
CLASS_WEIGHTINGS = {"auto": 0.5, "inverse": 1.0, "none": 0.0}
KEEP = ("last", "best")
DEFAULT_LEARNING_RATE = 3e-3
"""Peak learning rate of a run from random weights."""


@dataclass(frozen=True)
class TilesSource:
    """Labelled tiles: a folder, or a text file listing image paths (one per line).

    Masks are found, for each image ``NAME.ext``, as ``MASKS/NAME.*`` (``ROOT/IMAGES`` with
    ``ROOT/MASKS``; when ``ROOT/IMAGES`` does not exist, every folder named ``IMAGES`` below
    ``ROOT`` with a sibling ``MASKS`` folder, e.g. ``Tile 1/images``), or as
    ``NAME<suffix>.*`` beside the image or in ``MASKS``, for ``mask_suffix`` or, when that is
    None, any of :data:`MASK_SUFFIXES` (``X.tif`` with ``X_mask.png``, ``X.mask.tif``,
    ``X_label.tif``, ...). Files that are masks by their suffix are never taken as images.

    Attributes:
        root: The tiles folder, or a ``.txt`` list of image files (relative to the list).
        images: Name of the image folder.
        masks: Name of the mask folder.
        image_ext: Image extension (``.jpg``); None accepts every raster extension.
        mask_ext: Mask extension; None finds the mask with the image's stem.
        exclude: Glob patterns (relative to ``root``, or file names) of images to leave out.
        mask_suffix: The suffix that turns an image stem into its mask's stem (e.g. ``_mask``).
        coding: How this folder's masks encode classes (None: the run's coding).
    """

    root: Path
    images: str = "images"
    masks: str = "masks"
    image_ext: str | None = None
    mask_ext: str | None = None
    exclude: tuple[str, ...] = ()
    coding: LabelCoding | None = None
    mask_suffix: str | None = None

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
        # GDAL names (/vsizip/..., https://...) stay strings, exactly as given
        object.__setattr__(self, "scene", as_source(self.scene))
        object.__setattr__(self, "labels", as_source(self.labels))
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
        class_names: Names for the classes, in id order, where the labels do not name them
            (binary masks, vectors without a class field); replaces inferred names.
    """

    classes: tuple[ClassInfo, ...] | None = None
    classes_file: Path | None = None
    coding: LabelCoding | None = None
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[str, ...] = ()
    mask_mode: str = "auto"
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        require(all(self.class_names) and len(set(self.class_names)) == len(self.class_names),
                f"Expected distinct, non-empty class names. Received: {self.class_names}")
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
            sets=base.sets, set_values=base.set_values, set_colors=base.set_colors,
            set_names=base.set_names,
        )


MASK_SUFFIXES = ("_mask", ".mask", "-mask", "_label", "_labels", ".label", "_gt", "_seg")
"""Mask name suffixes recognised next to images when no ``mask_suffix`` is given."""

DEFAULT_STEPS = (600, 1300, 4600)
"""Default training length in optimiser steps: ``(minimum, steps per million labelled
training pixels, maximum)``.

Counted in steps, not seconds, so a slower CPU trains longer rather than less: the same
defaults give the same converged model on every machine. A time budget (``--time-limit``)
stops at these steps too, without the maximum, if it gets there first: on small data more
steps overfit, while large data (the Dubai set's 87 Mpx: 113,000 steps) keeps its time. The figures
were chosen on the SpaceNet runs of the training study, ``scripts/studies/training`` (half a
megapixel of labels: about 1,200 steps scored better than 2,000-3,850 on every seed, and better than
450-1,000); its entry "Step bound" has the checks on other sets. Large sets reach the maximum.
"""


AUTO_MEMBERS = 3
"""Networks a time-limited run trains at most by default (``TrainConfig.members``).

Averaging two networks trained apart scored 0.01 to 0.04 IoU above the mean of the two on
three small sets (the training study, ``scripts/studies/training``). On SpaceNet (three runs of
four networks each, scored as the average of their first 1, 2, 3 and 4) the mean building IoU
was 0.400, 0.410, 0.435 and 0.415: a third network added +0.056, +0.009, +0.009 over two, a
fourth lost on every run. Inference costs as many times a network, so the default stops at
three; a run gets them only when each one's time is left over (small data, a generous limit).
"""

MEMBER_TIME_SHARE = 1.0
"""A further network is trained by default only if the time left is at least this share of
the time the first one took, so that it reaches the same steps. Second networks cut short by
the clock (1,000-1,050 steps against 1,200 on SpaceNet) added +0.008 IoU on average to the first
over five runs (-0.036 to +0.059; the training study, ``scripts/studies/training``, with 0.8 and
0.75 here), while every later prediction costs twice as much; two networks of full steps
added +0.030."""


def default_steps(labelled_pixels: int, steps_per_epoch: int, maximum: bool = True) -> int:
    """Optimiser steps of training for this much labelled training data.

    Grows with the data from ``DEFAULT_STEPS``'s minimum, rounded up to whole epochs.
    ``maximum``: at most ``DEFAULT_STEPS``'s maximum (the length of a run given no
    budget); without, the most steps this data should get under a time limit, which large
    data never reaches.
    """
    low, per_mpx, high = DEFAULT_STEPS
    steps = low + per_mpx * labelled_pixels / 1e6
    if maximum:
        steps = min(high, steps)
    return -(-int(steps) // steps_per_epoch) * steps_per_epoch


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1h``, ``1h30m`` or ``2.5m``.

    Raises:
        ConfigError: For anything else.
    """
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    match = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?\s*[hms]\s*)+|\d+(?:\.\d+)?)\s*", str(text))
    if not match:
        raise ConfigError(f"Expected a duration like 90s, 10m or 1h. Received: {text!r}")
    body = match.group(1)
    if body.replace(".", "").isdigit():
        return float(body)
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", body))


def format_duration(seconds: float) -> str:
    """``90`` -> ``1:30`` (minutes and seconds)."""
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


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
        patch: Chip side in pixels (a multiple of ``2**depth``), or ``"auto"`` (the
            default): chosen from the size of the rarest class's objects in the labels
            (:mod:`geofuse.training.chipsize`).
        batch_size: Chips per step (a multiple of the replica count with a strategy). None:
            :data:`DEFAULT_BATCH`, or with ``patch="auto"`` as many pixels in chips of the
            side chosen.
        time_limit: Training time in seconds. The learning-rate schedule (warm-up, then cosine)
            is laid over it, so the run ends at the end of its schedule; the run stops
            sooner, annealed, if it reaches its steps first (``epochs``, or by default
            :func:`default_steps` without its maximum). None: the run lasts the default steps.
        members: Networks to train and average into one model file (an ensemble; each
            from its own seed, on the same training and validation split). None (the
            default): 1, or, with a time limit, :data:`AUTO_MEMBERS` when the first network
            reaches its steps early enough that another gets as much time
            (:data:`MEMBER_TIME_SHARE`; small data on a fast machine: the time buys more
            networks instead of steps that overfit). With a time limit, the networks share it.
        epochs: Number of epochs (None: a default number of steps from the amount of
            labelled data, :func:`default_steps`); with a time budget, an upper bound. Without
            ``time_limit``, the run is counted in steps, not seconds (reproducible).
        steps_per_epoch: Steps per epoch (validation and checkpoints run after each epoch).
        warmup: Share of the run over which the learning rate rises linearly to its peak.
        learning_rate: Adam peak learning rate (cosine decay to 5 % over the run). None:
            ``DEFAULT_LEARNING_RATE`` (3e-3), or
            :data:`~geofuse.training.init.FINETUNE_LEARNING_RATE` for a run with ``init``.
        weight_decay: Decoupled weight decay of the convolution kernels (each step shrinks
            them by ``weight_decay * learning rate``; 0: none).
        ema: Momentum of an exponential moving average of the weights, which the model file
            then gets instead of the last weights (0: off; 0.99 averages about the last 100
            steps). Validation during the run, checkpoints and ``keep="best"`` use the raw
            weights.
        deep_supervision: Deep supervision (nnU-Net's): each decoder level ``l`` below full
            resolution gets an auxiliary output whose loss weighs ``deep_supervision**l``
            against the network's own (0: off; 0.5 as nnU-Net). The heads shape the training
            only; the model file has the network alone.
        loss: ``ce+dice``, ``focal+dice``, ``ce+lovasz``, ``ce``, ``focal``, ``dice`` or
            ``lovasz`` (the Lovász-softmax surrogate of the mean IoU).
        class_weights: ``auto`` (inverse square-root frequency), ``inverse`` (inverse
            frequency), ``none`` or one per class.
        augment: 8 flips/rotations and brightness/contrast jitter.
        jitter: Brightness/contrast jitter range (normalised units).
        zoom: Random zoom range of ``augment``: chips cover ``1 / (1 + zoom)`` to
            ``1 + zoom`` times the patch side, resampled to the patch (0: off).
        rotate: Random rotation range of ``augment`` in degrees (at most 45): chips are
            turned by an angle uniform in ``[-rotate, rotate]`` before the 8 flips/rotations,
            so 45 gives every angle (0: off).
        shadow: Share of chips ``augment`` darkens inside a random soft-edged ellipse to
            0.3–0.7 of their values, as a cast shadow would (0: off).
        cutmix: Share of chips ``augment`` pastes a rectangle of another chip of the batch
            into, image and labels (CutMix; about 1/4 to 1/2 of the chip; 0: off).
        sampling: ``balanced`` (the default: random chip positions, half of them moved onto
            a pixel of a class drawn uniformly), ``random`` or a shuffled ``grid``.
        source_weights: Share of random chips drawn from each source (None: by area).
        val_fraction: Share of tiles / scene blocks held out for validation.
        val_block: Side of the scene blocks (None: ``max(4 * patch, 256)``; 256 with
            ``patch="auto"``, whose side is chosen after the blocks are scanned).
        max_val_chips: Cap on validation chips per epoch.
        patience: Epochs without improvement of the smoothed validation score before stopping
            (0, the default: never stop early, the run ends with its annealed schedule, which
            measured better in ``scripts/studies/training``); never acts before ``min_fraction``.
        keep: Which weights the model file gets: ``last`` (the end of the annealed schedule,
            the default: on small validation sets the pick by validation measured worse on held-out
            data, ``scripts/studies/training``) or ``best`` (by the smoothed validation score, among
            the epochs after ``min_fraction``).
        min_fraction: Share of the run (time or steps) before the best weights are picked and
            early stopping may act.
        smoothing: Weight of the previous smoothed score in the exponential moving average of
            the validation score that picks the best weights and drives early stopping.
        val_tiles: Names (file names, stems or glob patterns) of the tiles to validate on,
            instead of a random ``val_fraction`` of them.
        seed: Seed of everything random.
        init: A model file to start from (``"default"``: the embedded model), whose
            architecture, weights and, where the bands pair, normalisation the run takes
            (:mod:`geofuse.training.init`); None: random weights.
        freeze: With ``init``: ``encoder`` keeps the encoder and bottleneck as the model had
            them; ``none`` trains every layer.
        deterministic: Enable TensorFlow op determinism.
        resume: Continue from the run folder's last checkpoint.
        overwrite: Replace an existing model file.
        strategy: ``none``, ``mirrored`` (all local devices) or ``multi-worker`` (TF_CONFIG).
        cache: ``auto`` (hold the data in memory when it takes at most
            ``CACHE_AUTO_BYTES``, else only non-GeoTIFF images: chips are then sliced from
            arrays instead of read and decoded by GDAL), ``memory`` or ``disk``.
        workers: Python threads reading and augmenting batches of chips (:mod:`.chipfeed`).
    """

    sources: tuple[TilesSource | SceneSource, ...]
    out: Path
    run_dir: Path | None = None
    labels: LabelOptions = field(default_factory=LabelOptions)
    bands: tuple[int, ...] | None = None
    arch: Architecture = field(default_factory=Architecture)
    patch: int | str = AUTO_PATCH
    batch_size: int | None = None
    time_limit: float | None = None
    members: int | None = None
    epochs: int | None = None
    steps_per_epoch: int = 50
    warmup: float = 0.05
    learning_rate: float | None = None
    weight_decay: float = 0.0
    ema: float = 0.0
    deep_supervision: float = 0.0
    loss: str = "ce+dice"
    class_weights: str | tuple[float, ...] = "auto"
    augment: bool = True
    jitter: float = 0.2
    zoom: float = 0.0
    rotate: float = 0.0
    shadow: float = 0.0
    cutmix: float = 0.0
    sampling: str = "balanced"
    source_weights: tuple[float, ...] | None = None
    val_fraction: float = 0.1
    val_block: int | None = None
    max_val_chips: int = 256
    patience: int = 0
    keep: str = "last"
    min_fraction: float = 0.5
    smoothing: float = 0.5
    val_tiles: tuple[str, ...] = ()
    seed: int = 0
    init: str | Path | None = None
    freeze: str = "none"
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
               "Expected tiles folders or scenes with labels in `sources`. "
               "Received: no training data")
        self._check_run()
        self._check_ranges()

    def _check_run(self) -> None:
        """The named choices, the run's length and the validation tiles."""
        choice("loss", self.loss, LOSSES)
        choice("strategy", self.strategy, STRATEGIES)
        choice("cache", self.cache, CACHES)
        choice("sampling", self.sampling, SAMPLING)
        choice("keep", self.keep, KEEP)
        if isinstance(self.class_weights, str):
            choice("class weights", self.class_weights, tuple(CLASS_WEIGHTINGS))
        if self.epochs is not None:
            positive_int("epochs", self.epochs)
        if self.members is not None:
            positive_int("members", self.members)
            require(self.members == 1 or self.strategy != "multi-worker",
                    f"Expected one network with the multi-worker strategy. Received: "
                    f"members={self.members}")
        if self.time_limit is not None:
            require(isinstance(self.time_limit, int | float) and self.time_limit > 0,
                    f"Expected a positive time limit. Received: {self.time_limit!r}")
        object.__setattr__(self, "val_tiles", tuple(self.val_tiles))

    def _check_ranges(self) -> None:
        """Every number in its range; the chip side a multiple of the network's."""
        for name in ("warmup", "min_fraction", "smoothing"):
            value = getattr(self, name)
            require(isinstance(value, int | float) and 0 <= value < 1,
                    f"Expected 0 <= {name} < 1. Received: {value!r}")
        for name in ("steps_per_epoch", "max_val_chips", "workers"):
            positive_int(name, getattr(self, name))
        if self.batch_size is not None:
            positive_int("batch_size", self.batch_size)
        if self.patch != AUTO_PATCH:
            require(isinstance(self.patch, int) and not isinstance(self.patch, bool)
                    and self.patch > 0,
                    f"Expected a positive chip side or {AUTO_PATCH!r}. Received: {self.patch!r}")
            self.arch.check_tile(self.patch)
        require(0.0 <= self.val_fraction < 1.0,
               f"Expected 0 <= val_fraction < 1. Received: {self.val_fraction}")
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE if self.init is None
                               else FINETUNE_LEARNING_RATE)
        choice("freeze", self.freeze, FREEZE_PARTS)
        require(self.init is not None or self.freeze == "none",
                f"Expected a model to start from with freeze={self.freeze!r}. Received: none")
        require(self.learning_rate > 0,
               f"Expected a positive learning rate. Received: {self.learning_rate}")
        require(isinstance(self.weight_decay, int | float) and 0 <= self.weight_decay < 1,
                f"Expected 0 <= weight_decay < 1. Received: {self.weight_decay!r}")
        require(isinstance(self.ema, int | float) and 0 <= self.ema < 1,
                f"Expected 0 <= ema < 1. Received: {self.ema!r}")
        require(isinstance(self.deep_supervision, int | float)
                and 0 <= self.deep_supervision < 1,
                f"Expected 0 <= deep_supervision < 1. Received: {self.deep_supervision!r}")
        require(0.0 <= self.jitter < 1.0, f"Expected 0 <= jitter < 1. Received: {self.jitter}")
        require(isinstance(self.zoom, int | float) and 0 <= self.zoom <= 1,
                f"Expected 0 <= zoom <= 1. Received: {self.zoom!r}")
        require(isinstance(self.rotate, int | float) and 0 <= self.rotate <= 45,
                f"Expected 0 <= rotate <= 45 (degrees). Received: {self.rotate!r}")
        require(isinstance(self.shadow, int | float) and 0 <= self.shadow <= 1,
                f"Expected 0 <= shadow <= 1. Received: {self.shadow!r}")
        require(isinstance(self.cutmix, int | float) and 0 <= self.cutmix <= 1,
                f"Expected 0 <= cutmix <= 1. Received: {self.cutmix!r}")
        require(isinstance(self.patience, int) and self.patience >= 0,
               f"Expected patience >= 0. Received: {self.patience!r}")
        if self.val_block is not None:  # (an "auto" side is checked once it is chosen)
            least = self.patch if isinstance(self.patch, int) else 1
            require(isinstance(self.val_block, int) and self.val_block >= least,
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
        labels: How masks encode the model's classes (a ``classes_file`` says, or a tiles
            folder's ``classes.json`` of as many classes as the model; default: ids 0..N-1, or
            the model's class colours for colour-coded masks) and what to ignore.
        label_class: The model class that one-class masks label (values 0 and 1, or 0 and
            255): its pixels are that class, the others "any other class" (a class set), so
            the class is scored against the rest. None: the masks hold class ids.
        tiling: Tile grid for inference (``bands`` selects input bands).
        seam_width: Half-width in pixels of the seam band (0: no seam metric).
        report: JSON report path.
        plot: Confusion-matrix PNG path (default: the report path with ``.png``).
        overwrite: Replace existing report files.
        input: How each image is fitted to the model (as ``segment``'s ``--input-range``,
            ``--stretch``, ``--resample``, ``--nodata``).
        tta: Test-time augmentation of the predictions scored (as ``segment``'s ``--tta``).
    """

    source: TilesSource | SceneSource
    model: Path | None = None
    labels: LabelOptions = field(default_factory=LabelOptions)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    seam_width: int = 8
    report: Path | None = None
    plot: Path | None = None
    overwrite: bool = False
    input: InputConfig = field(default_factory=InputConfig)
    tta: str = "none"
    label_class: str | None = None

    def __post_init__(self) -> None:
        choice("tta", self.tta, TTA_MODES)
        require(self.label_class is None or (isinstance(self.label_class, str)
                                             and self.label_class.strip() != ""),
                f"Expected a class name as `label_class`. Received: {self.label_class!r}")
        require(self.label_class is None or (self.labels.classes_file is None
                                             and self.labels.coding is None),
                "Expected `label_class` or a classes file (`classes_file`), not both. "
                f"Received: {self.label_class!r} and {self.labels.classes_file}")
        require(isinstance(self.source, TilesSource | SceneSource),
                "Expected a `source`: a TilesSource or a SceneSource. Received: "
                f"{type(self.source).__name__}")
        require(isinstance(self.seam_width, int) and self.seam_width >= 0,
                f"Expected seam width >= 0. Received: {self.seam_width!r}")
        if self.report is not None and self.plot is None:
            object.__setattr__(self, "plot", Path(self.report).with_suffix(".png"))
