"""The one-file model format: a ``.keras`` archive that carries its own metadata.

A model file is a Keras 3 ``.keras`` archive (a zip holding the network's config and weights)
with one extra member, ``geofuse.json``: the :class:`~geofuse.model.spec.ModelInfo` that says
how to use the network (bands, normalisation, classes, patch size, fusion mode, provenance). Keras
ignores the extra member, and :func:`read_info` reads it without importing TensorFlow, which
keeps ``geofuse info`` instant. A file may carry calibration chips too
(:mod:`geofuse.model.calibration`), for the int8 runtime.

:func:`load_model` reads the metadata and the file's digest only: the network is loaded (and
Keras imported, :func:`~geofuse.model.tfimport.import_keras`) on first use of
:attr:`LoadedModel.model`, so serving from the OpenVINO cache never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geofuse.errors import ConfigError, ModelError, first_line
from geofuse.model.spec import ModelInfo
from geofuse.model.tfimport import import_keras
from geofuse.write.outputs import atomic_path

if TYPE_CHECKING:
    import keras

INFO_MEMBER = "geofuse.json"
CALIBRATION_MEMBER = "calibration.npy"
"""The calibration chips, raw ``(n, rows, cols, bands)`` inputs in the model's data type
(:mod:`geofuse.model.calibration`)."""
INT8_CHECK_MEMBER = "int8.json"
"""The measured cost of the int8 network against f32 (:mod:`geofuse.model.calibration`)."""
NETWORK_MEMBERS = ("config.json", "model.weights.h5")
"""The members of a Keras 3 archive that hold the network."""
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


class LoadedModel:
    """A model file's metadata and digest, and its network, loaded on first use.

    Args:
        info: The file's metadata.
        path: The model file.
        digest: The file's SHA-256 (keys the OpenVINO cache: a warm cache never needs the
            network).
        model: The Keras network when already in memory; else :attr:`model` loads it.

    """

    def __init__(self, info: ModelInfo, path: Path, digest: str, model: Any = None) -> None:
        self.info = info
        self.path = Path(path)
        self.digest = digest
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> keras.Model:
        """The Keras network, loaded (TensorFlow imported) on first use.

        Raises:
            ModelError: When the network cannot be loaded or disagrees with the metadata.

        """
        with self._lock:
            if self._model is None:
                self._model = load_network(self.path, self.info)
            return self._model

    @property
    def network_loaded(self) -> bool:
        """Whether the network is in memory (so TensorFlow has been imported)."""
        return self._model is not None

    def __repr__(self) -> str:
        return f"LoadedModel({str(self.path)!r}, sha256={self.digest[:12]})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the network: another process loads it when it needs it."""
        return {"info": self.info, "path": self.path, "digest": self.digest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


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


def save_model(model: keras.Model, info: ModelInfo, path: str | Path,
               calibration: np.ndarray | None = None) -> Path:
    """Write ``model`` and ``info`` to one ``.keras`` file, atomically.

    The file is written beside ``path`` under a temporary name and renamed at the end.

    Args:
        model: The network.
        info: Its metadata.
        path: The ``.keras`` file to write.
        calibration: Raw ``(n, rows, cols, bands)`` input chips the file carries for int8
            quantization (:func:`geofuse.model.calibration.training_chips`), or None.

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
            if calibration is not None:
                archive.writestr(CALIBRATION_MEMBER, array_bytes(calibration))
    return path


def array_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_member(path: str | Path, name: str) -> bytes | None:
    """The bytes of one member of a model file, or None when it has no such member.

    Raises:
        ModelError: When the file is missing or not a zip archive.

    """
    path = resolve_model_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(name) if name in archive.namelist() else None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a readable model file ({first_line(exc)})") from exc


def replace_members(path: str | Path, members: dict[str, bytes | str | None]) -> Path:
    """Rewrite a model file (atomically) with ``members`` added or replaced (None: removed).

    The network and every other member stay as they are.
    """
    path = Path(path)
    with atomic_path(path, ".keras") as tmp, zipfile.ZipFile(path) as src, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename not in members:
                dst.writestr(item, src.read(item))
        for name, data in members.items():
            if data is not None:
                dst.writestr(name, data)
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
    return replace_members(path, {INFO_MEMBER: info.to_json()})


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Open a model file (default: the embedded model): its metadata and digest.

    The network itself is loaded on first use of :attr:`LoadedModel.model` (which imports
    TensorFlow); running from the OpenVINO cache never needs it.

    Raises:
        ModelError: When the file is missing, not a model file, or lacks the network.

    """
    path = resolve_model_path(path)
    info = read_info(path)
    with zipfile.ZipFile(path) as archive:
        missing = [m for m in NETWORK_MEMBERS if m not in archive.namelist()]
    if missing:
        raise ModelError(f"{path}: expected a Keras network in the model file. "
                         f"Received: no {', '.join(missing)}")
    return LoadedModel(info=info, path=path, digest=file_digest(path))


def load_network(path: Path, info: ModelInfo) -> keras.Model:
    """Load the Keras network of a model file and check it against its metadata.

    Raises:
        ModelError: When the file is corrupt or disagrees with its metadata.

    """
    keras = import_keras()

    import geofuse.model.fusion_layers  # noqa: F401  (registers the custom layers)

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
        raise ModelError(f"{path}: cannot load the network ({first_line(exc)})") from exc
    if model.input_shape[-1] != info.spec.bands or model.output_shape[-1] != info.spec.classes:
        raise ModelError(
            f"{path}: metadata says {info.spec.bands} bands and {info.spec.classes} classes; "
            f"the network has {model.input_shape[-1]} and {model.output_shape[-1]}"
        )
    return model
