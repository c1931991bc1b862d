"""The layers of the fusion modes (the registry that names them is :mod:`geofuse.model.fusion`).

Every fusion layer takes a list of feature maps from different pyramid levels and returns one
map at the *target* level. Each input is first **aligned**
(:class:`~geofuse.model.blocks.Align`): reduced by a 1x1 conv to a common ``width`` at its own
resolution (cheap), then resized to the target resolution (bilinear upsampling for coarser
maps, max pooling for finer ones). The aligned maps are then
fused, and a 3x3 conv-BN-ReLU brings the result to ``filters`` channels. The fusions:

- ``none`` (:class:`SkipFusion`): the plain U-Net skip (no alignment, no convolution);
- ``concat`` (:class:`ConcatFusion`): concatenate (UNet 3+);
- ``weighted`` (:class:`WeightedFusion`): BiFPN fast normalised weighted sum, optional gates;
- ``attention`` (:class:`AttentionFusion`): merge, then channel (SE) and spatial attention;
- ``cross_attention`` (:class:`CrossAttentionFusion`): the decoder map attends to itself and to
  the encoder maps on a pooled token grid; the update is upsampled and added back.

Levels are described by ``scales`` (see :mod:`geofuse.model.blocks`).

All layers follow Keras's anatomy (``__init__``, ``build``, ``call``,
``compute_output_shape``, ``get_config``) and are registered serialisable under ``geofuse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from geofuse.model.blocks import (
    PACKAGE,
    MergedFusion,
    MultiLevelFusion,
    Upsample,
    blocks_to_pixels,
    check_int,
    check_scales,
    context_means,
    resize_bilinear,
    spatial_size,
)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SkipFusion(layers.Layer):
    """The plain U-Net skip: upsample the decoder map, concatenate the same-level encoder map.

    Takes ``[decoder, encoder]`` with ``scales=[k, 0]`` (the decoder map is ``2**k`` times
    coarser); ``filters`` and ``width`` are accepted for a uniform signature and unused (the
    decoder's conv-BN-ReLU follows).
    """

    def __init__(self, filters: int, width: int, scales: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.width = check_int("width", width)
        self.scales = check_scales(scales)
        if len(self.scales) != 2 or self.scales[1] != 0 or self.scales[0] < 1:
            raise ValueError(f"Expected scales [k, 0] with k >= 1. Received: {self.scales}")
        self.up = Upsample(2 ** self.scales[0], name="up")

    def build(self, input_shape: Sequence[tuple]) -> None:
        """Nothing to create."""

    def call(self, inputs: Sequence[Any]) -> Any:
        """Upsample the decoder map and concatenate the encoder map."""
        return ops.concatenate([self.up(inputs[0]), inputs[1]], axis=-1)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        """The encoder map's shape with both maps' channels."""
        channels = input_shape[0][-1] + input_shape[1][-1]
        return (*tuple(input_shape[1])[:-1], channels)

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
        return super().get_config() | {
            "filters": self.filters, "width": self.width, "scales": list(self.scales),
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


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedFusion(MultiLevelFusion):
    """BiFPN fast normalised fusion: a weighted sum with learned non-negative weights.

    The static weight of input ``i`` is ``w_i = relu(a_i) / (sum_j relu(a_j) + epsilon)``, so the
    weights are non-negative and sum to one (up to ``epsilon``); they start equal. With
    ``gates=True`` each input also gets an input-dependent gate ``g_i = sigmoid(dense_i(gap(x_i)))``
    computed from its own aligned map by global average pooling; the mixing weights are then
    ``relu(a_i) * g_i`` normalised to sum to one, per image; with ``window`` (what
    :func:`~geofuse.model.network.build_unet` gives: the training chip's side at this level) the
    gates
    pool over that context around each pixel instead (:func:`~geofuse.model.blocks.context_means`),
    so the weights vary across a tile but not with its size.

    Args:
        filters: Output channels.
        width: Common channel width of the aligned maps.
        scales: Per input, its level minus the target level.
        gates: Add the input-dependent gates.
        epsilon: Small positive constant of the normalisation.
        window: Side in pixels of the context the gates pool over, or None for the whole map.

    """

    def __init__(
        self,
        filters: int,
        width: int,
        scales: Sequence[int],
        gates: bool = False,
        epsilon: float = 1e-4,
        window: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, width, scales, **kwargs)
        self.window = None if window is None else check_int("window", window)
        if not isinstance(gates, bool):
            raise ValueError(f"Expected gates to be True or False. Received: {gates!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (
            0 < epsilon < 1
        ):
            raise ValueError(f"Expected epsilon to be a number in (0, 1). Received: {epsilon!r}")
        self.gates = gates
        self.epsilon = float(epsilon)
        # Zero kernels: every gate starts at sigmoid(0) = 0.5, i.e. at the static weights.
        self.gate_layers = [
            layers.Dense(1, kernel_initializer="zeros", name=f"gate_{i}")
            for i in range(len(self.scales) if gates else 0)
        ]

    def build_fusion(self, aligned_shape: tuple) -> None:
        """Create the static level weights (all ones) and the gates."""
        self.level_weights = self.add_weight(
            name="level_weights", shape=(len(self.scales),), initializer="ones"
        )
        for gate in self.gate_layers:
            gate.build((aligned_shape[0], self.width))

    def mixing_weights(self, aligned: list[Any]) -> Any:
        """Normalised weights, the inputs on the last axis.

        ``(1, inputs)`` without gates, ``(batch, inputs)`` with whole-map gates,
        ``(batch, rows, cols, inputs)`` with gates pooled over ``window``.
        """
        weights = ops.expand_dims(ops.relu(self.level_weights), 0)
        if not self.gates:
            return weights / (ops.sum(weights, axis=-1, keepdims=True) + self.epsilon)
        if self.window is None:
            pooled = [ops.mean(x, axis=(1, 2)) for x in aligned]
        else:
            pooled = [context_means(x, self.window) for x in aligned]
        gates = [ops.sigmoid(gate(p)) for gate, p in zip(self.gate_layers, pooled, strict=True)]
        weights = weights * ops.concatenate(gates, axis=-1)
        weights = weights / (ops.sum(weights, axis=-1, keepdims=True) + self.epsilon)
        if self.window is None:
            return weights
        return blocks_to_pixels(weights, self.window, spatial_size(aligned[0]))

    def fuse(self, aligned: list[Any], training: bool | None = None) -> Any:
        """Weighted sum of the aligned maps."""
        weights = ops.cast(self.mixing_weights(aligned), aligned[0].dtype)
        if len(weights.shape) == 2:
            weights = ops.expand_dims(ops.expand_dims(weights, 1), 1)
        fused = None
        for i, x in enumerate(aligned):
            term = weights[..., i : i + 1] * x
            fused = term if fused is None else fused + term
        return fused

    def input_weights(self, inputs: Sequence[Any], training: bool = False) -> Any:
        """Return the mixing weights this layer gives ``inputs``, ``(batch or 1, inputs)``."""
        aligned = [a(x, training=training) for a, x in zip(self.aligners, inputs, strict=True)]
        return self.mixing_weights(aligned)

    def normalized_weights(self) -> np.ndarray:
        """Return the static normalised weight of each input (non-negative, summing to one)."""
        raw = np.maximum(ops.convert_to_numpy(self.level_weights).astype(np.float64), 0.0)
        return raw / (raw.sum() + self.epsilon)

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
        return super().get_config() | {
            "gates": self.gates, "epsilon": self.epsilon, "window": self.window,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionFusion(MergedFusion):
    """Merge, then channel attention (squeeze-excitation) and spatial attention (CBAM-style).

    Channel attention: average pooling, a bottleneck of ``max(4, width // reduction)`` units and
    a sigmoid give factors per channel. Spatial attention: the channel mean and max, a
    ``spatial_kernel``-wide conv and a sigmoid give one factor per pixel.

    Without ``window`` the channel pooling is global: one factor per channel for the whole
    map, so a model trained on small chips meets other statistics on a large tile, and the
    factors change from one tile to the next (measured: 0.367 building IoU on 64-px tiles,
    0.307 on 512-px ones, for one model). With ``window`` (what
    :func:`~geofuse.model.network.build_unet`
    gives: the training chip's side at this level) the statistics are local
    (:func:`~geofuse.model.blocks.context_means`, the factors interpolated between its blocks): on a
    training chip exactly the global form, on a tile of any size about the context a pixel had
    in training.

    Args:
        filters: Output channels.
        width: Common channel width of the aligned maps.
        scales: Per input, its level minus the target level.
        merge: ``"concat"`` (1x1 conv over the concatenation) or ``"sum"``.
        reduction: Channel reduction ratio of the squeeze-excitation bottleneck.
        spatial_kernel: Side of the spatial-attention convolution (odd).
        window: Side in pixels of the context of the channel attention, or None for the whole
            map.

    """

    def __init__(
        self,
        filters: int,
        width: int,
        scales: Sequence[int],
        merge: str = "concat",
        reduction: int = 4,
        spatial_kernel: int = 7,
        window: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, width, scales, merge=merge, **kwargs)
        self.window = None if window is None else check_int("window", window)
        self.reduction = check_int("reduction", reduction)
        self.spatial_kernel = check_int("spatial_kernel", spatial_kernel)
        if spatial_kernel % 2 == 0:
            raise ValueError(f"Expected an odd spatial_kernel. Received: {spatial_kernel}")
        # At least 4 units: a lone ReLU unit is dead at init about half the time (measured).
        self.hidden = max(4, width // reduction)
        self.squeeze = layers.Dense(self.hidden, activation="relu", name="se_squeeze")
        self.excite = layers.Dense(width, activation="sigmoid", name="se_excite")
        self.spatial = layers.Conv2D(
            1, spatial_kernel, padding="same", activation="sigmoid", name="spatial"
        )

    def build_fusion(self, aligned_shape: tuple) -> None:
        """Create the merge and attention weights."""
        super().build_fusion(aligned_shape)
        self.squeeze.build((aligned_shape[0], self.width))
        self.excite.build((aligned_shape[0], self.hidden))
        self.spatial.build((*aligned_shape[:-1], 2))

    def fuse(self, aligned: list[Any], training: bool | None = None) -> Any:
        """Merge, reweight channels, reweight pixels."""
        x = self.merge_maps(aligned, training=training)
        if self.window is None:
            channel = self.excite(self.squeeze(ops.mean(x, axis=(1, 2))))
            x = x * ops.expand_dims(ops.expand_dims(channel, 1), 1)
        else:
            x = x * self.local_channel_factors(x)
        pooled = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        return x * self.spatial(pooled)

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
        return super().get_config() | {
            "reduction": self.reduction,
            "spatial_kernel": self.spatial_kernel,
            "window": self.window,
        }

    def local_channel_factors(self, x: Any) -> Any:
        """Channel factors per pixel from the context of a training chip around it."""
        factors = self.excite(self.squeeze(context_means(x, self.window)))
        return blocks_to_pixels(factors, self.window, spatial_size(x))


@keras.saving.register_keras_serializable(package=PACKAGE)
class CrossAttentionFusion(MergedFusion):
    """The decoder level attends to itself, then to the encoder levels, on a pooled grid.

    Input 0 is the decoder map (the queries); inputs 1.. are encoder maps (keys and values).
    After alignment, every map is pooled (antialiased bilinear) to at most
    ``attention_size`` x ``attention_size`` tokens, whatever the tile size, so the cost and
    memory of attention stay small and constant (a 512-px tile at level 0 needs a few MB).
    A depthwise 3x3 conv on each token grid adds positional information, and a learned embedding
    tells the encoder levels apart. The decoder tokens go through self-attention, then
    cross-attention over the tokens of all encoder maps (pre-norm, residual). The attention
    update is upsampled (bilinear) back to the target resolution and added to the merged
    full-resolution maps, which keep all the fine detail.

    With ``window`` (what :func:`~geofuse.model.network.build_unet` gives: the side of the map in
    training, the patch side over ``2**level``), the maps are cut into windows of that side
    (the last ones zero-padded) and attention runs in each window on its own, so a token covers
    the same pixels on a tile of any size as on a training chip. Without it (models written
    before windows existed) the whole map is pooled to one grid, so one token covers more pixels on
    a larger tile: such a model, trained on 64-px chips, found no building on 512-px tiles.

    Args:
        filters: Output channels.
        width: Common channel width of the aligned maps (also the attention width).
        scales: Per input, its level minus the target level; at least two inputs.
        attention_size: Largest side of the token grid (of a window).
        heads: Attention heads; must divide ``width``.
        merge: ``"concat"`` (1x1 conv over the concatenation) or ``"sum"``.
        window: Side in pixels of the windows attention runs in, or None for the whole map.

    """

    def __init__(
        self,
        filters: int,
        width: int,
        scales: Sequence[int],
        attention_size: int = 16,
        heads: int = 2,
        merge: str = "concat",
        window: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filters, width, scales, merge=merge, **kwargs)
        self.window = None if window is None else check_int("window", window)
        if len(self.scales) < 2:
            raise ValueError(
                "Expected at least 2 inputs (the decoder map, then encoder maps). "
                f"Received: scales {self.scales}"
            )
        self.attention_size = check_int("attention_size", attention_size)
        self.heads = check_int("heads", heads)
        if width % heads:
            raise ValueError(f"Expected heads to divide width {width}. Received: heads={heads}")
        key_dim = width // heads
        # No bias: TF 2.21's oneDNN remapper fails on "x + depthwise_conv_with_bias(x)" (grappler
        # logs "has an empty op name" and skips its fusions for the whole graph).
        self.position_query = layers.DepthwiseConv2D(
            3, padding="same", use_bias=False, name="position_query"
        )
        self.position_memory = layers.DepthwiseConv2D(
            3, padding="same", use_bias=False, name="position_memory"
        )
        self.norm_self = layers.LayerNormalization(name="norm_self")
        self.self_attention = layers.MultiHeadAttention(heads, key_dim, name="self_attention")
        self.norm_query = layers.LayerNormalization(name="norm_query")
        self.norm_memory = layers.LayerNormalization(name="norm_memory")
        self.cross_attention = layers.MultiHeadAttention(heads, key_dim, name="cross_attention")

    def build_fusion(self, aligned_shape: tuple) -> None:
        """Create the merge, positional, embedding, norm and attention weights."""
        super().build_fusion(aligned_shape)
        grid = (aligned_shape[0], None, None, self.width)
        tokens = (aligned_shape[0], None, self.width)
        self.position_query.build(grid)
        self.position_memory.build(grid)
        self.level_embedding = self.add_weight(
            name="level_embedding",
            shape=(len(self.scales) - 1, self.width),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        for norm in (self.norm_self, self.norm_query, self.norm_memory):
            norm.build(tokens)
        self.self_attention.build(tokens, tokens)
        self.cross_attention.build(tokens, tokens)

    def fuse(self, aligned: list[Any], training: bool | None = None) -> Any:
        """Merge at full resolution; attend on the pooled grid; add the upsampled update."""
        merged = self.merge_maps(aligned, training=training)
        if self.window is None:
            return merged + self.attend(aligned, training)
        side = self.window
        rows, cols = (tf.shape(aligned[0])[i] for i in (1, 2))
        pad_rows, pad_cols = (-rows) % side, (-cols) % side
        down, across = (rows + pad_rows) // side, (cols + pad_cols) // side

        def windows(x: Any) -> Any:
            x = tf.pad(x, [[0, 0], [0, pad_rows], [0, pad_cols], [0, 0]])
            x = tf.reshape(x, (-1, down, side, across, side, self.width))
            return tf.reshape(tf.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, side, side, self.width))

        update = self.attend([windows(x) for x in aligned], training)
        update = tf.reshape(update, (-1, down, across, side, side, self.width))
        update = tf.transpose(update, (0, 1, 3, 2, 4, 5))
        update = tf.reshape(update, (-1, down * side, across * side, self.width))
        return merged + update[:, :rows, :cols, :]

    def attend(self, aligned: list[Any], training: bool | None = None) -> Any:
        """The attention update of ``aligned`` (same shape as each map), on the pooled grid."""
        size = spatial_size(aligned[0])
        side = self.attention_size
        grid = [min(n, side) if isinstance(n, int) else tf.minimum(n, side) for n in size]
        batch = tf.shape(aligned[0])[0]

        def tokens_of(x: Any, position: layers.Layer) -> Any:
            x = resize_bilinear(x, grid, antialias=True)
            return x + position(x)

        query_grid = tokens_of(aligned[0], self.position_query)
        query = tf.reshape(query_grid, (batch, -1, self.width))
        embedding = ops.cast(self.level_embedding, aligned[0].dtype)
        memory = ops.concatenate(
            [
                tf.reshape(tokens_of(x, self.position_memory) + level, (batch, -1, self.width))
                for x, level in zip(aligned[1:], ops.unstack(embedding), strict=True)
            ],
            axis=1,
        )
        h = self.norm_self(query)
        tokens = query + self.self_attention(h, h, training=training)
        memory = self.norm_memory(memory)
        tokens = tokens + self.cross_attention(
            self.norm_query(tokens), memory, training=training
        )
        update = tf.reshape(tokens - query, (batch, grid[0], grid[1], self.width))
        return resize_bilinear(update, size)

    def get_config(self) -> dict[str, Any]:
        """Return the serialisable arguments."""
        return super().get_config() | {
            "attention_size": self.attention_size,
            "heads": self.heads,
            "window": self.window,
        }
