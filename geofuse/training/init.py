"""Start a training run from a model's weights (fine-tuning): ``TrainConfig.init``.

A run given a starting model takes, from it:

- **its architecture** (fusion mode, depth, filters): the weights only fit the network they
  were trained in, so the init model's architecture wins over the run's own;
- **every weight**, where the new network's layer has the same shape. Two layers may differ:

  - the first convolution, when the data has other bands: each new band whose name is one of
    the init model's bands (``red``, ``nir``, ...) gets that band's filter; when no name
    matches (or bands are only numbered, ``b1``, ``b2``), bands pair by position. Extra bands
    get the mean of the init model's filters (as geoai does); with fewer bands, the filters of
    the bands left over are shared equally by the bands kept, so a grey input (all bands
    equal) meets the same filters as before
    (one band gets their sum, as segmentation_models_pytorch does);
  - the class head (``logits``), when the classes differ: a new class whose name is one of the
    init model's classes (case-insensitive, e.g. ``building``) gets that class's row (kernel
    column and bias); the other classes start from fresh weights;

- **not its normalisation statistics**: the run standardises its data with the data's own,
  as a run from scratch does (:data:`KEEP_NORMALIZATION` says why).

``freeze="encoder"`` keeps the encoder and bottleneck (their convolutions and batch
normalisation statistics) as the init model had them; only the decoder and the head learn.

Reading what a model starts from needs no TensorFlow; :func:`apply_start` imports it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geofuse.errors import ModelError
from geofuse.model.modelfile import (
    DEFAULT_NAME,
    default_model_path,
    file_digest,
    read_info,
    resolve_model_path,
)
from geofuse.model.spec import ClassInfo, ModelInfo, Normalization

FREEZE_PARTS = ("none", "encoder")
"""What ``freeze`` may keep as the init model had it."""

FINETUNE_LEARNING_RATE = 1e-3
"""Peak learning rate of a run that starts from a model (from scratch:
``geofuse.training.config.DEFAULT_LEARNING_RATE``). See
``scripts/studies/finetune/REPORT.md`` for the runs that chose it."""

KEEP_NORMALIZATION = False
"""Whether a run from a model keeps the model's normalisation statistics (where its bands pair
one to one with the data's, of the same data type) instead of computing the data's own.

Not kept: the data's own statistics standardise it as the model's standardised its training
data, so the activations after the first convolution fall where the model's batch
normalisation statistics expect them, even for imagery unlike the model's (a new sensor, a
new season); the weights carry over either way. Compared on two chips and two seeds with a
two-minute budget (``scripts/studies/finetune/REPORT.md``): on the Sentinel-2 forest chips
(10 m, unlike the embedded model's 0.4 m aerial imagery) the data's own statistics scored
+0.176 and +0.003 IoU above the model's; on Dubai (the embedded model's own imagery) -0.008
and +0.005. Small evidence; the reason above decides where it is silent."""

REST_ROW = False
"""Whether a single new class (``background`` beside ``building``, say) starts as the start's
classes that no class took (then the start scores ``building`` against everything else from
the first step, as it scored its own classes) instead of from fresh weights.

Not by default: with two chips and a two-minute budget it scored -0.035 and -0.040 IoU below
fresh weights on Dubai Tile 2's buildings against the rest, and +0.025 and -0.023 on the
Sentinel-2 forest chips (``scripts/studies/finetune/REPORT.md``)."""

FIRST_CONV = "enc0_a"
"""The layer that reads the input bands (:func:`geofuse.model.network.build_unet`)."""
HEAD = "logits"
"""The layer that gives one output per class."""
ENCODER_PREFIXES = ("enc", "bottleneck")
"""Layers that ``freeze="encoder"`` keeps: the encoder levels and the bottleneck."""


@dataclass(frozen=True)
class Start:
    """The model a run starts from.

    Attributes:
        path: Its file.
        name: ``default`` for the embedded model, else the file's name.
        digest: SHA-256 of the file.
        info: Its metadata.
    """

    path: Path
    name: str
    digest: str
    info: ModelInfo

    @classmethod
    def read(cls, init: str | Path) -> Start:
        """The model ``init`` names (``default``: the embedded one); no TensorFlow.

        Raises:
            ModelError: A missing file, or one that is not a geofuse model file.
        """
        path = resolve_model_path(init)
        name = DEFAULT_NAME if path == default_model_path() else path.name
        info = read_info(path)
        return cls(path=path, name=name, digest=file_digest(path), info=info)


@dataclass(frozen=True)
class Transfer:
    """How the init model's weights map onto the new network.

    Attributes:
        bands: Per new band, the weight of each init band's filter in its filter
            (``new x init``).
        classes: Per new class, the init class whose head row it takes (None: fresh).
        matched_bands: Whether the bands paired by name (else by position).
    """

    bands: np.ndarray
    classes: tuple[int | None, ...]
    matched_bands: bool

    @property
    def one_to_one(self) -> bool:
        """Every new band is one init band (the same bands, maybe reordered or fewer)."""
        rows = self.bands
        return bool(np.all(rows.sum(axis=1) == 1) and np.all(np.isin(rows, (0.0, 1.0))))

    @property
    def same_bands(self) -> bool:
        """The new bands are the init model's, in its order."""
        return self.bands.shape[0] == self.bands.shape[1] and bool(
            np.array_equal(self.bands, np.eye(self.bands.shape[0]))
        )

    @property
    def same_classes(self) -> bool:
        """The new classes are the init model's, in its order."""
        return self.classes == tuple(range(len(self.classes)))


def band_map(init_names: Sequence[str], names: Sequence[str]) -> tuple[np.ndarray, bool]:
    """Weights of each init band's filter in each new band's filter, and whether by name.

    See the module docstring for the rules.
    """
    old = [n.lower() for n in init_names]
    new = [n.lower() for n in names]
    rows = np.zeros((len(new), len(old)))
    named = not any(re.fullmatch(r"b\d+", n) for n in (*old, *new))  # b1, b2: positions
    by_name = named and len(set(old)) == len(old) and any(n in old for n in new)
    if by_name:
        for j, name in enumerate(new):
            if name in old:
                rows[j, old.index(name)] = 1.0
            else:
                rows[j, :] = 1.0 / len(old)
        return rows, True
    shared = min(len(old), len(new))
    rows[:shared, :shared] = np.eye(shared)
    if len(new) > len(old):
        rows[len(old) :, :] = 1.0 / len(old)
    elif len(new) < len(old):
        rows[:, len(new) :] = 1.0 / len(new)
    return rows, False


def class_map(
    init_classes: Sequence[ClassInfo], classes: Sequence[ClassInfo]
) -> tuple[int | None, ...]:
    """Per new class, the index of the init class of the same name (None: none)."""
    old = {c.name.lower(): i for i, c in enumerate(init_classes)}
    return tuple(old.get(c.name.lower()) for c in classes)


def plan(start: Start, band_names: Sequence[str], classes: Sequence[ClassInfo]) -> Transfer:
    """The :class:`Transfer` from ``start`` to a network of these bands and classes."""
    bands, by_name = band_map(start.info.band_names, band_names)
    return Transfer(
        bands=bands, classes=class_map(start.info.classes, classes), matched_bands=by_name
    )


def adopt_architecture(config: Any, start: Start, say: Callable[[str], None]) -> Any:
    """``config`` with the architecture of ``start`` (its weights fit no other)."""
    from geofuse.model.spec import Architecture

    arch = start.info.spec.arch
    if config.arch not in (arch, Architecture()):
        say(
            f"warning: the architecture options (`fusion`, `depth`, `filters`) are set "
            f"aside: {start.name} has fusion "
            f"{arch.fusion}, depth {arch.depth}, {arch.base_filters} filters"
        )
    return dataclasses.replace(config, arch=arch)


def start_normalization(
    start: Start, transfer: Transfer, data: Normalization, dtype: str
) -> tuple[Normalization, bool]:
    """The normalisation of a run from ``start``, and whether it is the init model's.

    ``data``: the statistics of the run's own training data (with its data type's scale).
    """
    own = start.info.normalization
    if not (
        KEEP_NORMALIZATION
        and transfer.one_to_one
        and dtype == start.info.input_dtype
        and np.isclose(own.scale, data.scale)
        and own.offset == data.offset
    ):
        return data, False
    index = transfer.bands.argmax(axis=1)
    return Normalization(
        mean=tuple(own.mean[i] for i in index),
        std=tuple(own.std[i] for i in index),
        scale=own.scale,
        offset=own.offset,
    ), True


def describe(
    start: Start,
    transfer: Transfer,
    classes: Sequence[ClassInfo],
    kept_normalization: bool,
    freeze: str,
) -> str:
    """One line for the user: what the run takes from ``start``."""
    parts = [f"starting from {start.name} (sha256 {start.digest[:12]})"]
    if transfer.same_classes and len(classes) == len(start.info.classes):
        parts.append("all its weights")
    else:
        carried = [c.name for c, k in zip(classes, transfer.classes, strict=True) if k is not None]
        fresh = [c.name for c, k in zip(classes, transfer.classes, strict=True) if k is None]
        parts.append(
            "a new class head: rows carried over for "
            + (", ".join(carried) or "no class")
            + "; new: "
            + (", ".join(fresh) or "none")
        )
    if not transfer.same_bands:
        old, new = transfer.bands.shape[1], transfer.bands.shape[0]
        how = "by name" if transfer.matched_bands else "by position"
        parts.append(f"first convolution adapted from {old} to {new} bands ({how})")
    parts.append("its normalisation" if kept_normalization else "normalisation from these data")
    if freeze != "none":
        parts.append(f"{freeze} frozen")
    return "; ".join(parts)


def provenance(
    start: Start,
    transfer: Transfer,
    classes: Sequence[ClassInfo],
    kept_normalization: bool,
    freeze: str,
) -> dict[str, Any]:
    """What the model file records about where its weights started."""
    return {
        "model": start.name,
        "sha256": start.digest,
        "classes_carried": [
            c.name for c, k in zip(classes, transfer.classes, strict=True) if k is not None
        ],
        "bands": "same"
        if transfer.same_bands
        else f"first convolution adapted from {transfer.bands.shape[1]} to "
        f"{transfer.bands.shape[0]} bands",
        "normalization": "kept" if kept_normalization else "recomputed",
        "freeze": freeze,
    }


# -- the weights (TensorFlow) ------------------------------------------------------------------


def start_weights(source: Any, network: Any, transfer: Transfer) -> None:
    """Set ``network``'s weights from ``source`` (one U-Net of the same architecture).

    Raises:
        ModelError: When a layer other than the first convolution and the head differs in
            shape (the architectures differ).
    """
    for layer in network.layers:
        values = layer.get_weights()
        if not values:
            continue
        try:
            old = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise ModelError(
                f"Expected a layer {layer.name!r} in the starting model. "
                "Received: a network without it"
            ) from None
        if layer.name == FIRST_CONV:
            old = [np.einsum("hwif,ni->hwnf", old[0], transfer.bands), *old[1:]]
        elif layer.name == HEAD:
            old = _head(old, values, transfer.classes)
        shapes = [v.shape for v in values]
        if [v.shape for v in old] != shapes:
            raise ModelError(
                f"Expected the starting model's layer {layer.name!r} to hold "
                f"{shapes}. Received: {[v.shape for v in old]}"
            )
        layer.set_weights(old)


def _head(
    old: list[np.ndarray], fresh: list[np.ndarray], classes: tuple[int | None, ...]
) -> list[np.ndarray]:
    """The head's kernel and bias: carried rows from ``old``, the rest from ``fresh``.

    With :data:`REST_ROW`, a single new class takes the start's classes that no class took:
    the mean of their rows, its bias raised by the log of their number (their log-sum-exp,
    were their scores equal).
    """
    kernel, bias = (np.array(v) for v in fresh)
    for new, k in enumerate(classes):
        if k is not None:
            kernel[..., new] = old[0][..., k]
            bias[new] = old[1][k]
    unused = [k for k in range(old[1].shape[0]) if k not in classes]
    added = [i for i, k in enumerate(classes) if k is None]
    if REST_ROW and len(added) == 1 and unused:
        kernel[..., added[0]] = old[0][..., unused].mean(axis=-1)
        bias[added[0]] = old[1][unused].mean() + np.log(len(unused))
    return [kernel, bias]


def freeze_layers(network: Any, part: str) -> None:
    """Keep ``part`` (``encoder``: the encoder levels and the bottleneck) from learning."""
    if part == "none":
        return
    for layer in network.layers:
        if layer.name.startswith(ENCODER_PREFIXES):
            layer.trainable = False


def apply_start(network: Any, info: ModelInfo, config: Any, load: bool = True) -> None:
    """Start ``network`` (the run's U-Net) from ``config.init``; freeze ``config.freeze``.

    ``load``: False when a checkpoint will give the weights (a resumed run): only freezes.
    An ensemble's first network is the start of every network of the run.
    """
    if load:
        from geofuse.model.modelfile import load_model
        from geofuse.model.network import member_networks

        start = Start.read(config.init)
        loaded = load_model(start.path)
        source = member_networks(loaded.model, loaded.info.spec)[0]
        start_weights(source, network, plan(start, info.band_names, info.classes))
    freeze_layers(network, config.freeze)


def begin(
    config: Any,
    normalization: Normalization,
    band_names: Sequence[str],
    classes: Sequence[ClassInfo],
    dtype: str,
    say: Callable[[str], None],
) -> tuple[Any, Normalization, dict[str, Any]]:
    """What a run from ``config.init`` changes before it fits, told to ``say`` in one line.

    Returns:
        ``config`` with the init model's architecture, the run's normalisation (the init
        model's, or ``normalization``: the data's own) and the provenance of the start.

    Raises:
        ModelError: When ``config.init`` is no model file.
    """
    start = Start.read(config.init)
    config = adopt_architecture(config, start, say)
    transfer = plan(start, band_names, classes)
    normalization, kept = start_normalization(start, transfer, normalization, dtype)
    say(describe(start, transfer, classes, kept, config.freeze))
    return config, normalization, provenance(start, transfer, classes, kept, config.freeze)
