"""The fusion U-Net and the one-file model format.

A model file is a Keras 3 ``.keras`` archive (a zip holding the network's config and weights)
with one extra member, ``geofuse.json``: the :class:`~geofuse.model_config.ModelInfo` that says
how to use the network (bands, normalisation, classes, patch size, fusion mode, provenance). Keras
ignores the extra member, and :func:`read_info` reads it without importing TensorFlow, which
keeps ``geofuse info`` instant.

Keras is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geofuse.checks import require
from geofuse.errors import ConfigError, ModelError, first_line
from geofuse.fusion import fusion_mode
from geofuse.model_config import Architecture, ModelInfo, ModelSpec
from geofuse.outputs import atomic_path

if TYPE_CHECKING:
    import keras

INFO_MEMBER = "geofuse.json"
DEFAULT_MODEL = "default.keras"
DEFAULT_NAME = "default"
"""The model name that means the embedded model (``--model default``, ``info default``)."""


def default_model_path() -> Path:
    """Path of the embedded default model shipped inside the package."""
    return Path(str(resources.files("geofuse") / "models" / DEFAULT_MODEL))


def resolve_model_path(path: str | Path | None) -> Path:
    """The model file ``path`` names: None or ``"default"`` is the embedded model.

    A file really called ``default`` is reached as ``./default``.
    """
    if path is None or str(path) == DEFAULT_NAME:
        return default_model_path()
    return Path(path)


def _import_keras() -> Any:
    """Import Keras, with TensorFlow's start-up banner hidden (see :mod:`geofuse.tfimport`)."""
    from geofuse.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    return keras


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
    fusion mode (:mod:`geofuse.fusion`), then applies a conv-BN-ReLU.

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
    keras = _import_keras()
    from keras import layers

    if spec.members > 1:
        single = dataclasses.replace(spec, members=1)
        image = keras.Input((None, None, spec.bands), name="image")
        parts = [build_unet(single, f"member{k}", patch)(image) for k in range(spec.members)]
        mean = layers.Average(dtype="float32", name="probabilities")(parts)
        return keras.Model(image, mean, name=name)

    from geofuse.blocks import ConvBNReLU

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
    keras = _import_keras()
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


@dataclass(frozen=True)
class LoadedModel:
    """A network with its metadata and the digest of the file it came from."""

    model: Any
    info: ModelInfo
    path: Path
    digest: str


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_info(path: str | Path) -> ModelInfo:
    """Read a model file's metadata without loading the network (no TensorFlow import).

    Raises:
        ModelError: Missing file, not a ``.keras`` archive, or no/invalid geofuse metadata.

    """
    path = resolve_model_path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(INFO_MEMBER).decode("utf-8")
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path}: not a .keras model file (not a zip archive)") from exc
    except KeyError as exc:
        raise ModelError(
            f"{path}: expected geofuse metadata ({INFO_MEMBER}) in the model file. "
            "Received: a plain Keras model"
        ) from exc
    try:
        return ModelInfo.from_json(text)
    except (ConfigError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: invalid geofuse metadata ({exc})") from exc


def save_model(model: keras.Model, info: ModelInfo, path: str | Path) -> Path:
    """Write ``model`` and ``info`` to one ``.keras`` file, atomically.

    The file is written beside ``path`` under a temporary name and renamed at the end.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: expected a model path ending in .keras")
    if model.output_shape[-1] != info.spec.classes or model.input_shape[-1] != info.spec.bands:
        raise ModelError(
            f"Expected a network with {info.spec.bands} input bands and {info.spec.classes} "
            f"classes. Received: {model.input_shape[-1]} bands, {model.output_shape[-1]} classes"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(INFO_MEMBER, info.to_json())
    return path


def replace_info(path: str | Path, info: ModelInfo) -> Path:
    """Rewrite a model file's metadata (atomically), leaving the network as it is.

    Raises:
        ModelError: When ``info`` does not describe the file's network (band and class
            counts) or the file is not a model file.

    """
    path = Path(path)
    old = read_info(path)
    if (old.spec.bands, old.spec.classes) != (info.spec.bands, info.spec.classes):
        raise ModelError(f"{path}: expected metadata for {old.spec.bands} bands and "
                         f"{old.spec.classes} classes. Received: {info.spec.bands} and "
                         f"{info.spec.classes}")
    with atomic_path(path, ".keras") as tmp, zipfile.ZipFile(path) as src, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename != INFO_MEMBER:
                dst.writestr(item, src.read(item))
        dst.writestr(INFO_MEMBER, info.to_json())
    return path


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Load a model file (default: the embedded model) with its metadata.

    Raises:
        ModelError: When the file is missing, corrupt or disagrees with its metadata.

    """
    keras = _import_keras()

    import geofuse.fusion_layers  # noqa: F401  (registers the custom layers)

    path = resolve_model_path(path)
    info = read_info(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
        raise ModelError(f"{path}: cannot load the network ({first_line(exc)})") from exc
    if model.input_shape[-1] != info.spec.bands or model.output_shape[-1] != info.spec.classes:
        raise ModelError(
            f"{path}: metadata says {info.spec.bands} bands and {info.spec.classes} classes; "
            f"the network has {model.input_shape[-1]} and {model.output_shape[-1]}"
        )
    return LoadedModel(model=model, info=info, path=path, digest=file_digest(path))
