"""The one-file model format: a ``.keras`` archive that carries its own metadata.

A model file is a Keras 3 ``.keras`` archive (a zip holding the network's config and weights)
with one extra member, ``geofuse.json``: the :class:`~geofuse.model.spec.ModelInfo` that says
how to use the network (bands, normalisation, classes, patch size, fusion mode, provenance). Keras
ignores the extra member, and :func:`read_info` reads it without importing TensorFlow, which
keeps ``geofuse info`` instant.

Keras is imported inside the functions that need it (:func:`~geofuse.model.tfimport.import_keras`).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geofuse.errors import ConfigError, ModelError, first_line
from geofuse.model.spec import ModelInfo
from geofuse.model.tfimport import import_keras
from geofuse.write.outputs import atomic_path

if TYPE_CHECKING:
    import keras

INFO_MEMBER = "geofuse.json"
DEFAULT_MODEL = "default.keras"
DEFAULT_NAME = "default"
"""The model name that means the embedded model (``--model default``, ``info default``)."""


def default_model_path() -> Path:
    """Path of the embedded default model shipped inside the package."""
    return Path(str(resources.files("geofuse.model") / DEFAULT_MODEL))


def resolve_model_path(path: str | Path | None) -> Path:
    """The model file ``path`` names: None or ``"default"`` is the embedded model.

    A file really called ``default`` is reached as ``./default``.
    """
    if path is None or str(path) == DEFAULT_NAME:
        return default_model_path()
    return Path(path)


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
    keras = import_keras()

    import geofuse.model.fusion_layers  # noqa: F401  (registers the custom layers)

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
