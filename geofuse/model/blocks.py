"""Building blocks of the fusion layers: alignment, upsampling, conv-BN-ReLU, fusion bases.

:class:`MultiLevelFusion` is the base of the fusion layers
(:mod:`geofuse.model.fusion_layers`): it aligns
each input map to the target level with :class:`Align`, lets the subclass fuse them, and applies
a 3x3 conv-BN-ReLU. :class:`MergedFusion` adds the ``merge`` step of the attention modes.

Levels are described by ``scales``: for each input, ``level_of_input - target_level``. A
positive scale ``k`` means the input is ``2**k`` times coarser (upsampled); a negative one means
finer (pooled); 0 is the target resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import layers, ops

PACKAGE = "geofuse"


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise ``ValueError``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}. Received: {value!r}")
    return value


def check_scales(scales: Sequence[int]) -> list[int]:
    """Return ``scales`` as a list if it is a non-empty list of level offsets in -8..8."""
    scales = list(scales)
    if not scales or not all(isinstance(s, int) and abs(s) <= 8 for s in scales):
        raise ValueError(
            f"Expected a non-empty list of integer level offsets in -8..8. Received: {scales!r}"
        )
    return scales


def spatial_size(x: Any) -> list[Any]:
    """Height and width of a ``(B, H, W, C)`` tensor: Python ints where known, else tensors."""
    dynamic = tf.shape(x)
    return [x.shape[i] if x.shape[i] is not None else dynamic[i] for i in (1, 2)]


def resize_bilinear(x: Any, size: Sequence[Any], antialias: bool = False) -> Any:
    """Bilinear resize to ``size`` (ints or scalar tensors), keeping the dtype."""
    return tf.cast(tf.image.resize(x, size, method="bilinear", antialias=antialias), x.dtype)


def context_block(window: int) -> int:
    """Side in px of the blocks :func:`context_means` cuts a map into for ``window``."""
    return max(1, window // 4)


def context_means(x: Any, window: int) -> Any:
    """Channel means of ``x`` over the context of a ``window``-px training chip, per block.

    ``x`` is cut into blocks of :func:`context_block` px (the last ones partial); each block gets
    the mean over the ``2n - 1`` blocks around it (``n`` blocks to a window; padding not
    counted). On a map of ``window`` px every block so sees the whole map: the global mean. On a
    larger tile a block sees about the context a training chip gave it, whatever the tile's
    size. :func:`blocks_to_pixels` brings values on this grid back to pixels.
    """
    block = context_block(window)
    span = 2 * -(-window // block) - 1
    means = tf.nn.avg_pool2d(x, block, block, "SAME")  # SAME: padding not counted
    return tf.nn.avg_pool2d(means, span, 1, "SAME")


def blocks_to_pixels(values: Any, window: int, size: Sequence[Any]) -> Any:
    """Values on the block grid of :func:`context_means`, interpolated between block centres."""
    block = context_block(window)
    if block == 1:
        return values
    grid = spatial_size(values)
    return resize_bilinear(values, [grid[0] * block, grid[1] * block])[:, :size[0], :size[1], :]


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    if value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise ValueError(f"Expected {name} to be {options}. Received: {value!r}")
    return value


@keras.saving.register_keras_serializable(package=PACKAGE)
class Upsample(layers.Layer):
    """Bilinear upsampling by an integer ``factor`` that also works on unknown spatial sizes.

    ``keras.layers.UpSampling2D(interpolation="bilinear")`` fails inside a graph whose spatial
    size is unknown (``(None, None)``) in Keras 3.15: its resize checks the target size as Python
    numbers (keras-team/keras#22079). This layer computes the same half-pixel bilinear resize with
    ``tf.image.resize``, so a fully convolutional model accepts any tile size.

    Args:
        factor: Integer upsampling factor for both height and width.

    """

    def __init__(self, factor: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = check_int("factor", factor)

    def build(self, input_shape: tuple) -> None:
        """Nothing to create."""

    def call(self, x: Any) -> Any:
        """Resize to ``factor`` times the height and width."""
        return resize_bilinear(x, [n * self.factor for n in spatial_size(x)])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Return the shape with height and width times ``factor``."""
        h, w = (None if n is None else n * self.factor for n in input_shape[1:3])
        return (input_shape[0], h, w, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
        return super().get_config() | {"factor": self.factor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBNReLU(layers.Layer):
    """A ``kernel``x``kernel`` convolution (no bias), batch normalisation and ReLU."""

    def __init__(self, filters: int, kernel: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.kernel = check_int("kernel", kernel)
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
        """Return the same spatial shape with ``filters`` channels."""
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
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
        self.width = check_int("width", width)
        self.scale = check_scales([scale])[0]
        self.reduce = ConvBNReLU(width, kernel=1, name="reduce")
        if scale > 0:
            self.resize: layers.Layer | None = Upsample(2**scale, name="up")
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
        """Return the serialisable arguments."""
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
        self.filters = check_int("filters", filters)
        self.width = check_int("width", width)
        self.scales = check_scales(scales)
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
        """Return the serialisable arguments."""
        return super().get_config() | {
            "filters": self.filters,
            "width": self.width,
            "scales": list(self.scales),
        }


class MergedFusion(MultiLevelFusion):
    """Base of the attention modes: merge the aligned maps into one ``width``-channel map.

    ``merge="sum"`` adds them; ``merge="concat"`` concatenates them and applies a 1x1
    conv-BN-ReLU back to ``width`` channels (a learned mix, cheap at full resolution).
    """

    def __init__(
        self, filters: int, width: int, scales: Sequence[int], merge: str = "concat",
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, width, scales, **kwargs)
        self.merge = check_choice("merge", merge, ("sum", "concat"))
        self.merger = ConvBNReLU(width, kernel=1, name="merge") if merge == "concat" else None

    def build_fusion(self, aligned_shape: tuple) -> None:
        """Create the merge weights."""
        if self.merger is not None:
            self.merger.build((*aligned_shape[:-1], self.width * len(self.scales)))

    def merge_maps(self, aligned: list[Any], training: bool | None = None) -> Any:
        """One ``width``-channel map from the aligned maps."""
        if self.merger is None:
            return ops.sum(ops.stack(aligned, axis=0), axis=0)
        return self.merger(ops.concatenate(aligned, axis=-1), training=training)

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
        return super().get_config() | {"merge": self.merge}
