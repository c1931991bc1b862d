"""The fusion modes and their registry.

A decoder level of the U-Net fuses the decoder map coming up from the level below with feature
maps of several encoder levels. *How* is a fusion mode, and every mode describes itself here in
one :class:`FusionMode` entry: its Keras layer, its options (with defaults, limits and help
text) and one doc line. :func:`geofuse.model.network.build_unet`, the configuration and the command
line
read this registry; nothing else names a mode. Adding a mode is one layer class (a subclass of
:class:`geofuse.model.blocks.MultiLevelFusion`, registered serialisable) plus one
:func:`register_fusion` call.

This module does not import TensorFlow: the built-in layers are named by import path and
loaded on first use, so configuration and ``geofuse --help`` stay instant.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from geofuse.checks import is_int, require
from geofuse.errors import ConfigError


@dataclass(frozen=True)
class FusionOption:
    """One option of a fusion mode, passed to its layer's constructor.

    Attributes:
        name: Keyword argument of the layer (and, with dashes, the command-line flag).
        default: Default value; its type (bool, int, float or str) is the option's type.
        help: One line for ``--help``.
        minimum: Smallest accepted value for numbers.
    """

    name: str
    default: bool | int | float | str
    help: str
    minimum: int | float | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--attention-size``."""
        return "--" + self.name.replace("_", "-")

    def check(self, mode: str, value: Any) -> Any:
        """Return ``value`` if it has the option's type and range, else raise ConfigError."""
        kind = type(self.default)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = is_int(value)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        require(ok, f"Expected {mode} option {self.name} to be a {kind.__name__}. "
                    f"Received: {value!r}")
        if self.minimum is not None:
            require(value >= self.minimum, f"Expected {mode} option {self.name} >= "
                                           f"{self.minimum}. Received: {value!r}")
        return float(value) if kind is float else value


@dataclass(frozen=True)
class FusionMode:
    """A fusion mode: its layer, its options and what it is.

    Attributes:
        name: The mode's name (``--fusion NAME``, stored in model files).
        layer: The layer class, or its import path ``"package.module:Class"`` (loaded lazily).
            It is called as ``layer(filters=, width=, scales=, name=, **options)`` on the list
            ``[decoder map, encoder maps...]``; ``scales`` gives, per input, its level minus
            the target level.
        doc: One line for ``--help`` and the docs.
        options: The mode's own options.
        multi_level: False for a mode that only takes the encoder map at its own level (the
            plain U-Net skip); True draws on the levels chosen by ``fusion_levels``.
        learns_level_weights: The layer has ``normalized_weights()``, the learned weight of
            each input level (``geofuse info`` shows them).
        windowed: The layer also takes ``window``: the side, in pixels at its level, of the
            map it sees in training (the patch side over ``2**level``), so that it works on
            windows of that size at any tile size (:class:`CrossAttentionFusion
            <geofuse.model.fusion_layers.CrossAttentionFusion>`), or pools its context over that
            size (:class:`AttentionFusion <geofuse.model.fusion_layers.AttentionFusion>`, the gates
            of
            :class:`WeightedFusion <geofuse.model.fusion_layers.WeightedFusion>`).
    """

    name: str
    layer: str | type
    doc: str
    options: tuple[FusionOption, ...] = ()
    multi_level: bool = True
    learns_level_weights: bool = False
    windowed: bool = False

    def layer_class(self) -> type:
        """The layer class (imports its module on first use)."""
        if not isinstance(self.layer, str):
            return self.layer
        module, _, name = self.layer.partition(":")
        return getattr(importlib.import_module(module), name)

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every option of this mode: ``given`` values checked, the rest at their defaults.

        Raises:
            ConfigError: For an option this mode does not have, or a bad value.
        """
        given = dict(given or {})
        known = {o.name for o in self.options}
        unknown = sorted(set(given) - known)
        require(not unknown, f"Expected options of fusion {self.name!r} among "
                             f"{', '.join(sorted(known)) or 'none'}. Received: {unknown}")
        return {o.name: o.check(self.name, given.get(o.name, o.default)) for o in self.options}


_REGISTRY: dict[str, FusionMode] = {}


def register_fusion(mode: FusionMode) -> FusionMode:
    """Add ``mode`` to the registry (replacing a mode of the same name) and return it."""
    require(bool(mode.name) and mode.name.isidentifier(),
            f"Expected a fusion mode name like 'my_mode'. Received: {mode.name!r}")
    _REGISTRY[mode.name] = mode
    return mode


def unregister_fusion(name: str) -> None:
    """Remove a mode (used by tests that register their own)."""
    _REGISTRY.pop(name, None)


def fusion_mode(name: str) -> FusionMode:
    """The registered mode called ``name``.

    Raises:
        ConfigError: When no such mode is registered.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"Expected fusion to be one of {', '.join(_REGISTRY)}. Received: {name!r}"
        ) from None


def fusion_modes() -> tuple[str, ...]:
    """Names of the registered modes, in registration order."""
    return tuple(_REGISTRY)


def all_options() -> dict[str, FusionOption]:
    """Every option of every registered mode, by name (a name shared by modes appears once)."""
    return {o.name: o for mode in _REGISTRY.values() for o in mode.options}


_LAYERS = "geofuse.model.fusion_layers"

register_fusion(FusionMode(
    "none", f"{_LAYERS}:SkipFusion",
    "plain U-Net skip: upsample the decoder map, concatenate the same-level encoder map",
    multi_level=False,
))
register_fusion(FusionMode(
    "concat", f"{_LAYERS}:ConcatFusion",
    "full-scale concatenation of the aligned levels (UNet 3+)",
))
register_fusion(FusionMode(
    "weighted", f"{_LAYERS}:WeightedFusion",
    "learned non-negative weighted sum of the aligned levels (BiFPN fast normalised fusion)",
    options=(FusionOption("gates", False, "weighted fusion: add input-dependent gates "
                                          "(pooling over the training chip's size, one "
                                          "sigmoid per level)"),),
    learns_level_weights=True,
    windowed=True,
))
register_fusion(FusionMode(
    "attention", f"{_LAYERS}:AttentionFusion",
    "merge the aligned levels, then channel (squeeze-excitation) and spatial attention",
    windowed=True,
))
register_fusion(FusionMode(
    "cross_attention", f"{_LAYERS}:CrossAttentionFusion",
    "the decoder level attends to itself and to the encoder levels on a pooled token grid",
    options=(FusionOption("attention_size", 16, "cross_attention: side of the pooled grid "
                                               "attention runs on", minimum=1),),
    windowed=True,
))
