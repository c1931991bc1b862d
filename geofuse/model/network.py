"""The fusion U-Net, built from a :class:`~geofuse.model.spec.ModelSpec`.

Also its deeply supervised training form and ensembles of members.

Keras is imported inside the functions that need it, so importing this module stays light.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from geofuse.checks import require
from geofuse.model.fusion import fusion_mode
from geofuse.model.spec import Architecture, ModelSpec
from geofuse.model.tfimport import import_keras

if TYPE_CHECKING:
    import keras


def decoder_sources(arch: Architecture, level: int) -> list[int]:
    """Encoder levels that the decoder at ``level`` fuses (besides the coarser decoder map)."""
    if not fusion_mode(arch.fusion).multi_level:
        return [level]
    if arch.fusion_levels == "adjacent":
        return [j for j in (level - 1, level, level + 1) if 0 <= j < arch.depth]
    return list(range(arch.depth))


def build_unet(
    spec: ModelSpec, name: str = "geofuse_unet", patch: int | None = None
) -> keras.Model:
    """Build the functional fusion U-Net described by ``spec``.

    Encoder level ``i`` (``0`` = full resolution) has ``base_filters * 2**i`` filters; the
    bottleneck sits at level ``depth``. Decoder level ``i`` fuses the decoder map from level
    ``i + 1`` with the encoder levels of :func:`decoder_sources` through the layer of the
    fusion mode (:mod:`geofuse.model.fusion`), then applies a conv-BN-ReLU.

    The model is fully convolutional: input ``(None, None, bands)``, with sides multiples of
    ``2**depth``; output per-pixel class probabilities (softmax, float32). With
    ``spec.members`` above 1 it is an ensemble: that many such networks (sub-models
    ``member0``, ``member1``, ...) on the same input, their probabilities averaged.

    ``patch`` is the training patch side: a windowed mode (``cross_attention`` attends in
    windows, ``attention`` and ``weighted``'s gates pool their context over) ``patch /
    2**level`` pixels at each level, so that it sees the same context on any tile as on a
    training chip.

    Raises:
        ConfigError: For a windowed mode without ``patch``, or a patch that is not a multiple
            of ``2**depth``.
    """
    keras = import_keras()
    from keras import layers

    if spec.members > 1:
        single = dataclasses.replace(spec, members=1)
        image = keras.Input((None, None, spec.bands), name="image")
        parts = [build_unet(single, f"member{k}", patch)(image) for k in range(spec.members)]
        mean = layers.Average(dtype="float32", name="probabilities")(parts)
        return keras.Model(image, mean, name=name)

    from geofuse.model.blocks import ConvBNReLU

    arch = spec.arch
    mode = fusion_mode(arch.fusion)
    if mode.windowed:
        require(patch is not None and patch > 0 and patch % arch.multiple == 0,
                f"Expected the training patch side (a multiple of {arch.multiple}) to build "
                f"fusion {arch.fusion!r}. Received: patch={patch!r}")
    fusion_layer = mode.layer_class()
    inputs = keras.Input((None, None, spec.bands), name="image")
    x = inputs
    skips = []
    for level in range(arch.depth):
        filters = arch.base_filters * 2**level
        x = ConvBNReLU(filters, name=f"enc{level}_a")(x)
        x = ConvBNReLU(filters, name=f"enc{level}_b")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}")(x)
    bottleneck = arch.base_filters * 2**arch.depth
    x = ConvBNReLU(bottleneck, name="bottleneck_a")(x)
    x = ConvBNReLU(bottleneck, name="bottleneck_b")(x)

    for level in reversed(range(arch.depth)):
        filters = arch.base_filters * 2**level
        sources = decoder_sources(arch, level)
        window = {"window": patch // 2**level} if mode.windowed else {}
        fusion = fusion_layer(
            filters=filters, width=arch.width, scales=[1] + [j - level for j in sources],
            name=f"fuse{level}", **window, **arch.fusion_options,
        )
        x = fusion([x] + [skips[j] for j in sources])
        x = ConvBNReLU(filters, name=f"dec{level}")(x)
    logits = layers.Conv2D(spec.classes, 1, name="logits")(x)
    probs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probs, name=name)


def supervision_weights(depth: int, decay: float) -> list[float]:
    """Loss weights of the outputs of :func:`deeply_supervised`: ``decay**level`` per level.

    Level 0 is the network's own output; ``decay`` 0 gives it alone (no auxiliary heads).
    """
    if decay <= 0:
        return [1.0]
    return [decay**level for level in range(depth)]


def deeply_supervised(network: keras.Model, spec: ModelSpec, decay: float) -> keras.Model:
    """A training model of ``network`` (one U-Net of :func:`build_unet`) with deep supervision.

    Each decoder level ``1 .. depth - 1`` gets an auxiliary head (a 1x1 convolution to the
    classes, its logits upsampled bilinearly to full resolution, softmax), as nnU-Net trains
    its decoder. The model returns the network's probabilities and the heads' along the last
    axis, ``(b, h, w, classes * depth)``, to be weighed by :func:`supervision_weights` (the
    loss's ``heads``). It shares its layers with ``network``, which stays the model to save:
    the heads only shape the training.
    """
    keras = import_keras()
    from keras import layers

    require(spec.members == 1, f"Expected one network to supervise. Received: "
                               f"{spec.members} members")
    outputs = [network.output]
    for level in range(1, len(supervision_weights(spec.arch.depth, decay))):
        logits = layers.Conv2D(spec.classes, 1, name=f"aux{level}_logits")(
            network.get_layer(f"dec{level}").output)
        logits = layers.UpSampling2D(2**level, interpolation="bilinear",
                                     name=f"aux{level}_up")(logits)
        outputs.append(layers.Activation("softmax", dtype="float32",
                                         name=f"aux{level}")(logits))
    if len(outputs) == 1:
        return network
    joined = layers.Concatenate(dtype="float32", name="supervised")(outputs)
    return keras.Model(network.input, joined, name=f"{network.name}_supervised")


def member_networks(model: keras.Model, spec: ModelSpec) -> list[keras.Model]:
    """The U-Nets of a network built by :func:`build_unet`: itself, or an ensemble's members."""
    if spec.members == 1:
        return [model]
    return [model.get_layer(f"member{k}") for k in range(spec.members)]


def averaged(
    networks: list[keras.Model], spec: ModelSpec, patch: int | None = None
) -> keras.Model:
    """One network averaging ``networks`` (U-Nets of ``spec`` with one member each).

    ``patch`` is the side of their training chips: a windowed fusion mode needs it
    (:func:`build_unet`).
    """
    spec = dataclasses.replace(spec, members=len(networks))
    model = build_unet(spec, patch=patch)
    for member, network in zip(member_networks(model, spec), networks, strict=True):
        member.set_weights(network.get_weights())
    return model
