"""The cache of OpenVINO networks: converting a Keras model, storing f32 and int8 IR, checking it.

The ``.keras`` file stays the one source of truth. For OpenVINO the network is traced once
(``tf.function`` -> ``openvino.convert_model``) and saved as OpenVINO IR in the user cache
folder. Two kinds of entry live there:

* **f32**: the network traced with a fixed batch shape, one entry per model and input shape. It
  serves f32 and bf16 (precision is a compile-time setting).
* **int8**: the network traced with any batch and tile size, quantized by NNCF with the model's
  calibration chips (:mod:`geofuse.model.quantize`), one entry per model and calibration set;
  each run reshapes it to its batch shape, so every scene and every Dask band runs the same
  int8 network.

An entry is keyed by the model file's SHA-256, the input shape (f32) or the calibration data's
SHA-256 (int8), the OpenVINO (and NNCF) version and the entry layout. It is written under a
temporary name and renamed into place, and its ``entry.json`` records the size and SHA-256 of
each file: a truncated, corrupt or half-copied entry is noticed on reading and rebuilt, never
trusted. Reading an entry needs neither TensorFlow nor NNCF: a warm cache serves without them.

OpenVINO is imported without its usage telemetry (which would otherwise report every import and
conversion over the network and keep a client id in ``~/intel``): see
:func:`~geofuse.model.ovimport.import_quietly`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geofuse
from geofuse.errors import ModelError, first_line
from geofuse.model.modelfile import LoadedModel, file_digest
from geofuse.model.ovimport import import_openvino, ov_core, probe_openvino
from geofuse.model.quantize import QUANTIZATION, nncf_version, quantize

log = logging.getLogger(__name__)

CACHE_ENV = "GEOFUSE_CACHE_DIR"
"""Environment variable naming the cache folder (by default ``$XDG_CACHE_HOME/geofuse``)."""
CACHE_LAYOUT = 2
"""Version of the cache entry layout, part of every key (2 records file sizes, and int8)."""
CACHE_ENTRIES = 64
"""Conversions kept (one per model and tile shape; 3.5 MB each for the default model); the
least recently used go first."""
_ENTRY = "entry.json"
_IR_FILES = ("model.xml", "model.bin")
_unconvertible: dict[str, ModelError] = {}
"""Conversion failures of this process by cache key, so a failing model is tried once."""


# --------------------------------------------------------------------------- conversion


def ov_reason(exc: BaseException) -> str:
    """The informative line of a converter's error (OpenVINO's first line is a source file)."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip(" -")]
    for needle in ("No conversion rule", "not supported", "Unsupported"):
        for line in lines:
            if needle in line:
                return line
    return lines[-1] if lines else type(exc).__name__


def convert_to_openvino(model: Any, shape: tuple[int | None, ...]) -> Any:
    """Trace a Keras model for ``shape`` (None = dynamic) and convert it to an ``ov.Model``.

    Raises:
        ModelError: With the operations OpenVINO cannot convert.

    """
    from geofuse.model.tfimport import import_tensorflow

    ov = import_openvino()
    tf = import_tensorflow()
    function = tf.function(lambda x: model(x, training=False))
    root = logging.getLogger()
    level = root.level
    try:
        concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="image"))
        ov_model = ov.convert_model(concrete)
    except Exception as exc:  # noqa: BLE001 - conversion failures come as many types
        raise ModelError(
            f"Expected a network OpenVINO can convert. Received: {ov_reason(exc)}"
        ) from exc
    finally:  # a failed conversion leaves the root logger at ERROR: our warnings went unseen
        root.setLevel(level)
    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


# --------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """The geofuse cache folder: ``$GEOFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/geofuse``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geofuse"


def cache_key(digest: str, shape: tuple[int, ...], ov_version: str) -> str:
    """Key of an f32 entry: model digest, input shape, OpenVINO version, layout version."""
    return _key({"digest": digest, "shape": list(shape), "openvino": ov_version})


def int8_key(digest: str, calibration: str, ov_version: str, nncf_version: str) -> str:
    """Key of an int8 entry: model and calibration digests, OpenVINO and NNCF versions."""
    return _key(
        {
            "digest": digest,
            "calibration": calibration,
            "openvino": ov_version,
            "nncf": nncf_version,
            "quantization": QUANTIZATION,
            "kind": "int8",
        }
    )


def _key(fields: dict[str, Any]) -> str:
    text = json.dumps([CACHE_LAYOUT, fields], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_entry(entry: Path, expected: dict[str, Any]) -> Any:
    """Read a cache entry, checking its manifest, file sizes and digests; ValueError if bad."""
    manifest = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
    if any(manifest.get(k) != v for k, v in ({"layout": CACHE_LAYOUT} | expected).items()):
        raise ValueError("its manifest is for another model, shape, calibration or version")
    for name in _IR_FILES:
        size = (entry / name).stat().st_size
        if size != manifest["sizes"][name]:
            raise ValueError(f"{name} has {size} bytes, not the {manifest['sizes'][name]} recorded")
        if file_digest(entry / name) != manifest["files"][name]:
            raise ValueError(f"{name} does not match its recorded SHA-256")
    return ov_core().read_model(str(entry / "model.xml"))


def prune_cache(root: Path) -> None:
    """Discard the least recently used entries beyond ``CACHE_ENTRIES``.

    There is one entry per model and tile shape: scenes of many shapes would otherwise fill
    the disk. Entries are marked as used when read (their folder's modification time).
    """

    def used(entry: Path) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:
            return 0.0

    try:
        entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return
    for entry in sorted(entries, key=used)[: max(0, len(entries) - CACHE_ENTRIES)]:
        discard_folder(entry)


def discard_folder(entry: Path) -> None:
    """Move a folder out of the way (atomic for readers), then delete it."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def cached_ir(key: str, expected: dict[str, Any], build: Callable[[], Any], describe: str) -> Any:
    """The ``ov.Model`` of cache entry ``key``: read when it is sound, else built and stored.

    A missing, corrupt or mismatched entry is (re)built by ``build()``, written into a
    temporary folder beside it, then renamed into place. When the cache folder cannot be
    written the model is kept in memory only (with a warning).

    Args:
        key: The entry's name (:func:`cache_key`, :func:`int8_key`).
        expected: Manifest fields the entry must have (anything else: rebuilt).
        build: Makes the ``ov.Model`` (converting, quantizing); may raise ModelError.
        describe: What is built, for the log (``default.keras for (4, 512, 512, 3)``).

    Raises:
        ModelError: From ``build`` (remembered: a key that failed is not tried again).

    """
    root = cache_dir() / "openvino"
    entry = root / key
    if entry.is_dir():
        try:
            ov_model = _read_entry(entry, expected)
            with contextlib.suppress(OSError):  # used now: the last to be pruned
                os.utime(entry)
            return ov_model
        except Exception as exc:  # noqa: BLE001 - anything wrong with an entry means rebuild
            log.warning(
                "OpenVINO cache entry %s is unusable (%s); rebuilding it", entry, first_line(exc)
            )
            discard_folder(entry)
    if key in _unconvertible:
        raise _unconvertible[key]
    start = time.perf_counter()
    try:
        ov_model = build()
    except ModelError as exc:
        _unconvertible[key] = exc
        raise
    seconds = time.perf_counter() - start
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    except OSError as exc:
        log.warning(
            "cannot write the OpenVINO cache in %s (%s); converting in memory",
            root,
            exc.strerror or exc,
        )
        return ov_model
    try:
        _write_entry(tmp, ov_model, expected | {"build_seconds": round(seconds, 3)})
        os.rename(tmp, entry)
    except OSError:  # another process published the same entry first, or a full disk
        shutil.rmtree(tmp, ignore_errors=True)
    prune_cache(root)
    log.info("built %s in %.1f s", describe, seconds)
    return ov_model


def _write_entry(tmp: Path, ov_model: Any, fields: dict[str, Any]) -> None:
    import_openvino().save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
    manifest = {
        "layout": CACHE_LAYOUT,
        **fields,
        "geofuse": geofuse.__version__,
        "sizes": {name: (tmp / name).stat().st_size for name in _IR_FILES},
        "files": {name: file_digest(tmp / name) for name in _IR_FILES},
    }
    (tmp / _ENTRY).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o755)


# --------------------------------------------------------------------------- the two kinds


def openvino_model(loaded: LoadedModel, shape: tuple[int, int, int, int]) -> Any:
    """The f32 ``ov.Model`` of ``loaded`` for a fixed input ``shape``, from the cache if sound.

    Only a conversion loads the network (and imports TensorFlow).

    Raises:
        ModelError: When the network cannot be loaded or OpenVINO cannot convert it.

    """
    version = probe_openvino().version or "none"
    expected = {
        "model_sha256": loaded.digest,
        "shape": list(shape),
        "openvino": version,
        "model": loaded.path.name,
    }

    def build() -> Any:
        network = _network(loaded)
        return convert_to_openvino(network, shape)

    return cached_ir(
        cache_key(loaded.digest, shape, version),
        expected,
        build,
        f"the OpenVINO network of {loaded.path.name} for {shape}",
    )


def int8_model(loaded: LoadedModel, calibration: Any) -> Any:
    """The int8 ``ov.Model`` of ``loaded`` (any batch and tile size), from the cache if sound.

    Args:
        loaded: The model.
        calibration: Its :class:`~geofuse.model.calibration.Calibration`.

    Only a cache miss converts (TensorFlow) and quantizes (NNCF).

    Raises:
        ModelError: When the network cannot be converted or quantized, or NNCF is missing.

    """
    version = probe_openvino().version or "none"
    nncf = nncf_version()
    expected = {
        "model_sha256": loaded.digest,
        "calibration_sha256": calibration.digest,
        "openvino": version,
        "nncf": nncf,
        "precision": "int8",
        "model": loaded.path.name,
        "calibration": calibration.source,
        "calibration_chips": len(calibration.chips),
    }

    def build() -> Any:
        network = _network(loaded)
        dynamic = convert_to_openvino(network, (None, None, None, loaded.info.spec.bands))
        return quantize(dynamic, calibration.inputs(loaded.info))

    return cached_ir(
        int8_key(loaded.digest, calibration.digest, version, nncf),
        expected,
        build,
        f"the int8 network of {loaded.path.name}",
    )


def _network(loaded: LoadedModel) -> Any:
    """The Keras network, loaded outside any conversion: its errors are not conversion ones."""
    try:
        return loaded.model
    except ModelError as exc:
        raise NetworkLoadError(str(exc)) from exc


class NetworkLoadError(ModelError):
    """The model file's network cannot be loaded.

    A broken file, not a network OpenVINO cannot convert: no other runtime can run it either.
    """
