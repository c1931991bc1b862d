"""``geofuse export``: a model for serving elsewhere, with its metadata beside it.

The ``.keras`` file stays the one source of truth; an export is a folder holding the network
in another format (OpenVINO IR, ONNX or a TensorFlow SavedModel) and ``geofuse.json``, which
says how to use it (bands, normalisation, classes, input/output layout, source digest).
OpenVINO and ONNX take the network traced with any batch and tile size (sides multiples of
``2**depth``). An OpenVINO export may be the int8 network (``precision="int8"``): the one
``segment --precision int8`` runs, quantized with the model's calibration chips (or a folder's)
and taken from the cache when it is there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import geofuse
from geofuse.config import EXPORT_FORMATS, EXPORT_PRECISIONS
from geofuse.errors import ConfigError, ModelError, OutputError, first_line
from geofuse.model.calibration import calibration_for
from geofuse.model.modelfile import LoadedModel
from geofuse.model.ovcache import convert_to_openvino, discard_folder, int8_model, ov_reason
from geofuse.model.ovimport import import_openvino, probe_openvino
from geofuse.model.quantize import QUANTIZATION, nncf_version
from geofuse.model.runtime import tensorflow_version
from geofuse.model.stac import export_item

EXPORT_INFO = "geofuse.json"
EXPORT_ITEM = "stac-item.json"  # the export as a STAC Item of the MLM extension


def export_model(loaded: LoadedModel, out: str | Path, fmt: str = "openvino",
                 overwrite: bool = False, precision: str = "f32",
                 calibration: str | Path | None = None) -> Path:
    """Export a model for serving elsewhere, with its metadata as ``geofuse.json`` beside it.

    ``out`` becomes a folder holding ``model.xml``/``model.bin`` (openvino), ``model.onnx``
    (onnx) or a TensorFlow SavedModel (saved_model), plus ``stac-item.json`` (the export as a
    STAC Item of the Machine Learning Model extension, :mod:`geofuse.model.stac`, its assets
    relative to the folder) and ``geofuse.json``: bands and their
    order, normalisation (``(raw * scale + offset - mean) / std``), classes and colours, patch
    size and provenance, the input/output layout and the source model's SHA-256. The input is
    float32 NHWC with any batch and any height/width that are multiples of ``2**depth``; the
    output is per-pixel class probabilities. The folder is built under a temporary name and
    renamed at the end.

    Args:
        loaded: The model.
        out: The export folder.
        fmt: One of ``EXPORT_FORMATS``.
        overwrite: Replace an existing ``out``.
        precision: ``f32``, or ``int8`` (openvino only): the quantized network, whose
            ``geofuse.json`` names the calibration data's SHA-256.
        calibration: For int8, a folder of calibration images instead of the model's chips.

    Raises:
        ConfigError: Unknown format or precision, int8 in another format than openvino, or
            the ONNX converter is not installed.
        OutputError: ``out`` exists (without ``overwrite``) or cannot be written.
        ModelError: The network cannot be converted to that format (or quantized).

    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"Expected format one of {', '.join(EXPORT_FORMATS)}. Received: {fmt!r}")
    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(f"Expected precision one of {', '.join(EXPORT_PRECISIONS)}. "
                          f"Received: {precision!r}")
    if precision == "int8" and fmt != "openvino":
        raise ConfigError(f"Expected format 'openvino' for precision 'int8'. Received: {fmt!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists (use `overwrite` to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, expected an export folder name")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write here ({exc.strerror})") from exc
    try:
        _export_into(loaded, tmp, fmt, precision, calibration)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            discard_folder(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _export_into(loaded: LoadedModel, folder: Path, fmt: str, precision: str,
                 calibration: str | Path | None) -> None:
    spec = loaded.info.spec
    shape = (None, None, None, spec.bands)
    versions = {"geofuse": geofuse.__version__, "tensorflow": tensorflow_version()}
    quantized: dict[str, object] = {}
    if fmt == "openvino":
        ov = import_openvino()
        if precision == "int8":
            chips = calibration_for(loaded.path, loaded.info, calibration)
            network = int8_model(loaded, chips)
            versions["nncf"] = nncf_version()
            quantized = {"calibration": chips.source, "calibration_sha256": chips.digest,
                         "calibration_chips": len(chips.chips), "quantization": QUANTIZATION}
        else:
            network = convert_to_openvino(loaded.model, shape)
        ov.save_model(network, str(folder / "model.xml"), compress_to_fp16=False)
        files = ["model.xml", "model.bin"]
        versions["openvino"] = probe_openvino().version or ov.get_version()
    elif fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401
        except ImportError as exc:
            raise ConfigError("Expected the ONNX converter for format 'onnx' "
                              "(pip install 'geofuse[onnx]'). Received: "
                              f"{first_line(exc)}") from exc
        _keras_export(loaded, str(folder / "model.onnx"), "onnx")
        files = ["model.onnx"]
    else:
        _keras_export(loaded, str(folder), "tf_saved_model")
        files = ["saved_model.pb", "variables/"]
    meta = {
        "format": fmt,
        "precision": precision,
        **quantized,
        "files": files,
        "source_model": loaded.path.name,
        "source_model_sha256": loaded.digest,
        "input": {"name": "image", "dtype": "float32", "layout": "NHWC",
                  "shape": [None, None, None, spec.bands], "side_multiple": spec.arch.multiple,
                  "bands": list(loaded.info.band_names),
                  "normalization": "(raw * scale + offset - mean) / std"},
        "output": {"name": "probabilities", "dtype": "float32", "layout": "NHWC",
                   "shape": [None, None, None, spec.classes],
                   "meaning": "per-pixel class probabilities (softmax); class = argmax"},
        "versions": versions,
        "model": loaded.info.to_dict(),
    }
    (folder / EXPORT_INFO).write_text(json.dumps(meta, indent=2, default=str) + "\n",
                                      encoding="utf-8")
    item = export_item(folder, loaded.info, loaded.path, fmt, versions)
    (folder / EXPORT_ITEM).write_text(
        json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n", encoding="utf-8")


def _keras_export(loaded: LoadedModel, path: str, fmt: str) -> None:
    try:
        loaded.model.export(path, format=fmt, verbose=False)
    except Exception as exc:  # noqa: BLE001 - converters raise many types
        raise ModelError(f"{loaded.path}: cannot export to {fmt} ({ov_reason(exc)})") from exc


