"""Multi-level feature fusion layers.

Every fusion layer takes a list of feature maps from different pyramid levels and returns one
map at the *target* level. Each input is first **aligned** (:class:`Align`): reduced by a 1x1
conv to a common ``width`` at its own resolution (cheap), then resized to the target resolution
(bilinear upsampling for coarser maps, max pooling for finer ones). The aligned maps are then
fused, and a 3x3 conv-BN-ReLU brings the result to ``filters`` channels.

Levels are described by ``scales``: for each input, ``level_of_input - target_level``. A
positive scale ``k`` means the input is ``2**k`` times coarser (upsampled); a negative one means
finer (pooled); 0 is the target resolution.

All layers follow Keras's anatomy (``__init__``, ``build``, ``call``,
``compute_output_shape``, ``get_config``) and are registered serialisable under ``geofuse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

PACKAGE = "geofuse"


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}. Received: {value!r}")
    return value


def _check_scales(scales: Sequence[int]) -> list[int]:
    scales = list(scales)
    if not scales or not all(isinstance(s, int) and abs(s) <= 8 for s in scales):
        raise ValueError(
            f"Expected a non-empty list of integer level offsets in -8..8. Received: {scales!r}"
        )
    return scales


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBNReLU(layers.Layer):
    """A ``kernel``x``kernel`` convolution (no bias), batch normalisation and ReLU."""

    def __init__(self, filters: int, kernel: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = _check_int("filters", filters)
        self.kernel = _check_int("kernel", kernel)
        self.conv = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name="conv")
        self.norm = layers.BatchNormalization(name="bn")

    def build(self, input_shape: tuple) -> None:
        """Create the conv and norm weights."""
        self.conv.build(input_shape)
        self.norm.build((*input_shape[:-1], self.filters))

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Apply conv, BN and ReLU."""
        return ops.relu(self.norm(self.conv(x), training=training))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Same spatial shape, ``filters`` channels."""
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:
        """Serialisable arguments."""
        return super().get_config() | {"filters": self.filters, "kernel": self.kernel}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Align(layers.Layer):
    """Reduce a map to ``width`` channels at its own resolution, then resize it by ``2**scale``.

    Args:
        width: Output channels of the 1x1 reduction.
        scale: ``k > 0`` upsamples by ``2**k`` (bilinear), ``k < 0`` max-pools by ``2**-k``.
    """

    def __init__(self, width: int, scale: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = _check_int("width", width)
        self.scale = _check_scales([scale])[0]
        self.reduce = ConvBNReLU(width, kernel=1, name="reduce")
        if scale > 0:
            self.resize: layers.Layer | None = layers.UpSampling2D(
                size=2**scale, interpolation="bilinear", name="up"
            )
        elif scale < 0:
            self.resize = layers.MaxPooling2D(pool_size=2 ** (-scale), name="pool")
        else:
            self.resize = None

    def build(self, input_shape: tuple) -> None:
        """Create the reduction weights."""
        self.reduce.build(input_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Reduce, then resize."""
        x = self.reduce(x, training=training)
        return self.resize(x) if self.resize is not None else x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Spatial size times ``2**scale``, ``width`` channels."""
        def resize(n: int | None) -> int | None:
            if n is None:
                return None
            return n * 2**self.scale if self.scale >= 0 else n // 2 ** (-self.scale)

        return (input_shape[0], resize(input_shape[1]), resize(input_shape[2]), self.width)

    def get_config(self) -> dict[str, Any]:
        """Serialisable arguments."""
        return super().get_config() | {"width": self.width, "scale": self.scale}


class MultiLevelFusion(layers.Layer):
    """Base class: align every input to the target level, fuse, then a 3x3 conv-BN-ReLU.

    Subclasses implement :meth:`fuse` on the list of aligned ``(B, H, W, width)`` maps and may
    override :meth:`fused_channels` and :meth:`build_fusion`.

    Args:
        filters: Output channels.
        width: Common channel width of the aligned maps.
        scales: Per input, its level minus the target level (see module docstring).
    """

    def __init__(self, filters: int, width: int, scales: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = _check_int("filters", filters)
        self.width = _check_int("width", width)
        self.scales = _check_scales(scales)
        self.aligners = [
            Align(width, s, name=f"align_{i}") for i, s in enumerate(self.scales)
        ]
        self.out = ConvBNReLU(filters, kernel=3, name="out")

    def _check_inputs(self, input_shape: Sequence[tuple]) -> None:
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(self.scales):
            received = len(input_shape) if isinstance(input_shape, (list, tuple)) else "1 tensor"
            raise ValueError(
                f"Expected {len(self.scales)} input maps (one per scale {self.scales}). "
                f"Received: {received}"
            )

    def target_shape(self, input_shape: Sequence[tuple]) -> tuple:
        """Shape of each aligned map."""
        return self.aligners[0].compute_output_shape(tuple(input_shape[0]))

    def fused_channels(self) -> int:
        """Channels of :meth:`fuse`'s output."""
        return self.width

    def build_fusion(self, aligned_shape: tuple) -> None:
        """Create the weights of the fusion itself (none by default)."""

    def build(self, input_shape: Sequence[tuple]) -> None:
        """Create alignment, fusion and output weights."""
        self._check_inputs(input_shape)
        for aligner, shape in zip(self.aligners, input_shape, strict=True):
            aligner.build(tuple(shape))
        aligned = self.target_shape(input_shape)
        self.build_fusion(aligned)
        self.out.build((*aligned[:-1], self.fused_channels()))

    def fuse(self, aligned: list[Any], training: bool | None = None) -> Any:
        """Combine the aligned maps into one."""
        raise NotImplementedError

    def call(self, inputs: Sequence[Any], training: bool | None = None) -> Any:
        """Align, fuse, convolve."""
        aligned = [a(x, training=training) for a, x in zip(self.aligners, inputs, strict=True)]
        return self.out(self.fuse(aligned, training=training), training=training)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        """Target-level spatial shape, ``filters`` channels."""
        return (*self.target_shape(input_shape)[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:
        """Serialisable arguments."""
        return super().get_config() | {
            "filters": self.filters,
            "width": self.width,
            "scales": list(self.scales),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConcatFusion(MultiLevelFusion):
    """Full-scale concatenation (UNet 3+ style): concatenate the aligned maps along channels."""

    def fused_channels(self) -> int:
        """``width`` per input."""
        return self.width * len(self.scales)

    def fuse(self, aligned: list[Any], training: bool | None = None) -> Any:
        """Concatenate along channels."""
        return ops.concatenate(aligned, axis=-1)


FUSION_LAYERS: dict[str, type[MultiLevelFusion]] = {"concat": ConcatFusion}


def make_fusion(
    mode: str, filters: int, width: int, scales: Sequence[int], name: str, **options: Any
) -> MultiLevelFusion:
    """Build the fusion layer for ``mode`` (any mode in ``FUSION_LAYERS``)."""
    try:
        cls = FUSION_LAYERS[mode]
    except KeyError:
        raise ValueError(
            f"Expected a fusion mode among {', '.join(sorted(FUSION_LAYERS))}. Received: {mode!r}"
        ) from None
    return cls(filters=filters, width=width, scales=scales, name=name, **options)
