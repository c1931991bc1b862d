"""A model as a STAC Item of the Machine Learning Model (MLM) extension.

:func:`model_item` describes a ``.keras`` model file the way STAC catalogues, model registries and
pipelines read models: ``mlm:name``, ``mlm:architecture``, ``mlm:tasks``, ``mlm:input`` (bands,
shape, dimension order, data type and the value scaling that is the model's normalisation),
``mlm:output`` (the class probabilities with ``classification:classes``), framework,
accelerator and parameter count, and the model file as the ``mlm:model`` asset (with the file
extension's size and checksum). :func:`export_item` describes the files of ``geofuse export``.

Nothing here imports TensorFlow: the metadata comes from the file's ``geofuse.json``, Keras'
``metadata.json`` and the weights' shapes in ``model.weights.h5`` (read with h5py). pystac is
imported when an item is made.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geofuse
from geofuse.config import CLASS_NODATA, UNKNOWN_START, TilingConfig
from geofuse.errors import ModelError
from geofuse.model.modelfile import file_digest, read_info, resolve_model_path
from geofuse.model.spec import ClassInfo, ModelInfo

if TYPE_CHECKING:
    import pystac

MLM_ARCHITECTURE = "U-Net"
ACCELERATOR = "amd64"
ACCELERATOR_SUMMARY = (
    "x86-64 CPU through OpenVINO or TensorFlow; TensorFlow also runs it on a "
    "CUDA GPU where one is set up"
)
KERAS_MEDIA_TYPE = "application/octet-stream; framework=keras"
KERAS_ARTIFACT = "keras.Model.save"
_NAME_OK = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]$")  # mlm:name's pattern
_CLASS_NAME_BAD = re.compile(r"[^0-9A-Za-z_-]+")  # classification v2 names: letters, digits, -_
INPUT_DIMS = ["batch", "height", "width", "channel"]
OUTPUT_DIMS = ["batch", "height", "width", "class"]


def mlm_name(stem: str) -> str:
    """A model name that ``mlm:name`` accepts, from a file name: ``my model!`` -> ``my-model``."""
    name = re.sub(r"[^a-zA-Z0-9_.\-]+", "-", stem).strip("-_. ")
    if not name or not name[0].isalpha():
        name = f"model-{name}".rstrip("-")
    return name if _NAME_OK.match(name) else f"{name}-model"


def class_name(name: str) -> str:
    """A class name as the classification extension (v2) wants it: letters, digits, ``-``, ``_``."""
    return _CLASS_NAME_BAD.sub("_", name).strip("_") or "class"


def classification_classes(classes: tuple[ClassInfo, ...], nodata: bool = False) -> list[Any]:
    """The classes as ``classification:classes`` objects: value, name, title, colour.

    ``description`` (required by the extension's version 1.1 that MLM outputs use) is the
    class's own name. ``nodata`` adds the mask's nodata value (255) as a nodata class.
    """
    from pystac.extensions.classification import Classification

    made = [
        Classification.create(
            value=c.id,
            name=class_name(c.name),
            title=c.name,
            description=c.name,
            color_hint=c.color.lstrip("#").upper(),
        )
        for c in classes
    ]
    if nodata:
        made.append(
            Classification.create(
                value=CLASS_NODATA,
                name="nodata",
                description="no prediction (outside the scene's valid pixels)",
                nodata=True,
            )
        )
    return made


def count_parameters(path: Path) -> int | None:
    """Weights in a ``.keras`` file (trainable and not), from its HDF5 weights; None if unread.

    Counts every array of ``model.weights.h5`` outside an optimizer's state: the number Keras'
    ``count_params()`` gives, without loading TensorFlow.
    """
    try:
        import h5py

        with (
            zipfile.ZipFile(path) as archive,
            h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights,
        ):
            total = 0

            def add(name: str, node: Any) -> None:
                nonlocal total
                if isinstance(node, h5py.Dataset) and not name.startswith("optimizer"):
                    total += int(node.size)

            weights.visititems(add)
            return total
    except (ImportError, OSError, KeyError, zipfile.BadZipFile):
        return None


def keras_metadata(path: Path) -> dict[str, Any]:
    """Keras' own ``metadata.json`` of a ``.keras`` file (``keras_version``, ``date_saved``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return dict(json.loads(archive.read("metadata.json")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def model_time(info: ModelInfo, saved: str | None) -> dt.datetime | None:
    """When the model was made: its training's end, else when Keras saved it; None if unknown."""
    trained = info.provenance.get("trained")
    for text, fmt in ((trained, None), (saved, "%Y-%m-%d@%H:%M:%S")):
        if not text:
            continue
        try:
            when = (
                dt.datetime.fromisoformat(str(text))
                if fmt is None
                else dt.datetime.strptime(str(text), fmt)
            )
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return None


def model_inputs(info: ModelInfo) -> list[Any]:
    """``mlm:input``: the scene's bands, float32 NHWC, the normalisation as z-scores per band.

    geofuse computes ``(raw * scale + offset - mean) / std``; on raw values that is a z-score
    with mean ``(mean - offset) / scale`` and standard deviation ``std / scale``.
    """
    from pystac.extensions.mlm import InputStructure, ModelInput, ValueScaling, ValueScalingType

    norm = info.normalization
    scaling = [
        ValueScaling.create(
            ValueScalingType.Z_SCORE, mean=(m - norm.offset) / norm.scale, stddev=s / norm.scale
        )
        for m, s in zip(norm.mean, norm.std, strict=True)
    ]
    multiple = info.spec.arch.multiple
    made = ModelInput.create(
        name="image",
        bands=list(info.band_names),
        input=InputStructure.create(
            shape=[-1, -1, -1, info.spec.bands], dim_order=INPUT_DIMS, data_type="float32"
        ),
        description=(
            f"{info.spec.bands} bands ({', '.join(info.band_names)}) of "
            f"{info.input_dtype} imagery, height and width any multiple of {multiple} "
            f"(trained on {info.patch_size}-pixel patches"
            + (f" at {info.pixel_size:g} m" if info.pixel_size else "")
            + ")"
        ),
    )
    # one object per band, as the schema says (pystac's setter takes a single one)
    made.properties["value_scaling"] = [s.to_dict() for s in scaling]
    return [made]


def model_outputs(info: ModelInfo) -> list[Any]:
    """``mlm:output``: per-pixel class probabilities, with the classes and their colours."""
    from pystac.extensions.mlm import ModelOutput, ResultStructure, TaskType

    return [
        ModelOutput.create(
            name="probabilities",
            tasks=[TaskType.SEMANTIC_SEGMENTATION],
            result=ResultStructure.create(
                shape=[-1, -1, -1, info.spec.classes], dim_order=OUTPUT_DIMS, data_type="float32"
            ),
            description="per-pixel class probabilities (softmax); the class is their argmax",
            classes=classification_classes(info.classes),
        )
    ]


def _bands(info: ModelInfo) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` of the model's input (MLM's band names refer to them)."""
    bands = []
    for i, name in enumerate(info.band_names):
        facts = [f"input band {i + 1}"]
        if info.color_interp:
            facts.append(f"colour interpretation {info.color_interp[i]}")
        if info.value_range:
            low, high = info.value_range[i]
            facts.append(f"training values {low:g}..{high:g} (0.5-99.5 percentiles)")
        bands.append({"name": name, "description": ", ".join(facts), "data_type": info.input_dtype})
    return bands


def _hyperparameters(info: ModelInfo) -> dict[str, Any]:
    arch = info.spec.arch
    return {
        "depth": arch.depth,
        "base_filters": arch.base_filters,
        "fusion": arch.fusion,
        "fusion_width": arch.width,
        "fusion_levels": arch.fusion_levels,
        **dict(arch.fusion_options),
        "members": info.spec.members,
        "patch_size": info.patch_size,
        "tile_multiple": arch.multiple,
    }


def describe_model(
    item: pystac.Item,
    info: ModelInfo,
    framework: str,
    framework_version: str | None,
    total_parameters: int | None,
) -> None:
    """Set the MLM fields of ``item`` (and the core ``bands`` its inputs name)."""
    from pystac.extensions.mlm import AcceleratorType, Hyperparameters, MLMExtension, TaskType

    training = info.provenance.get("training_config") or {}
    init = training.get("init") if isinstance(training, Mapping) else None
    MLMExtension.ext(item, add_if_missing=True).apply(
        name=item.id,
        architecture=MLM_ARCHITECTURE,
        tasks=[TaskType.SEMANTIC_SEGMENTATION],
        input=model_inputs(info),
        output=model_outputs(info),
        framework=framework,
        framework_version=framework_version,
        total_parameters=total_parameters,
        pretrained=bool(init),
        pretrained_source=str(init) if init else None,
        batch_size_suggestion=TilingConfig().batch_size,
        accelerator=AcceleratorType(ACCELERATOR),
        accelerator_constrained=False,
        accelerator_summary=ACCELERATOR_SUMMARY,
        hyperparameters=Hyperparameters.create(**_hyperparameters(info)),
    )
    if "mlm:pretrained_source" not in item.properties:  # explicit null when trained anew
        item.properties["mlm:pretrained_source"] = None
    # STAC 1.1 bands, which MLM's band names refer to: in the properties, and on the model
    # asset (the core schema allows them in the properties only when an asset has bands)
    item.properties["bands"] = _bands(info)
    if info.pixel_size:
        item.common_metadata.gsd = info.pixel_size
    if "summary" in info.card:
        item.properties["description"] = info.card["summary"]


def _item(item_id: str, when: dt.datetime | None, end: dt.datetime) -> pystac.Item:
    """An item without a footprint, at ``when`` or, unknown, over ``UNKNOWN_START .. end``."""
    import pystac

    if when is not None:
        return pystac.Item(item_id, None, None, when, {})
    start = dt.datetime.fromisoformat(UNKNOWN_START.replace("Z", "+00:00"))
    return pystac.Item(item_id, None, None, None, {}, start_datetime=start, end_datetime=end)


def add_model_asset(
    item: pystac.Item,
    href: str,
    path: Path,
    media_type: str,
    artifact: str,
    title: str,
    roles: list[str],
) -> pystac.Asset:
    """Add the ``model`` asset: MLM role and artifact type, input bands, file size and SHA-256.

    Call it after :func:`describe_model` (the asset repeats the item's bands).
    """
    import pystac
    from pystac.extensions.file import FileExtension
    from pystac.extensions.mlm import AssetGeneralMLMExtension

    asset = pystac.Asset(
        href,
        title=title,
        media_type=media_type,
        roles=roles,
        extra_fields={"bands": item.properties.get("bands", [])},
    )
    item.add_asset("model", asset)
    AssetGeneralMLMExtension.ext(asset, add_if_missing=True).apply(artifact_type=artifact)
    file = FileExtension.ext(asset, add_if_missing=True)
    file.size = path.stat().st_size
    file.checksum = "1220" + file_digest(path)  # multihash: sha2-256, 32 bytes
    return asset


def model_item(model: str | Path | None = None, href: str | None = None) -> pystac.Item:
    """The MLM item of a ``.keras`` model file (``geofuse info MODEL --stac``).

    Args:
        model: The model file, or None (or ``"default"``) for the embedded model.
        href: How the item names the model file (its asset href); default: its absolute path.

    Returns:
        A pystac Item with no footprint (a model has none), its time the end of its training
        (or when Keras saved it; if neither is recorded, the range from ``UNKNOWN_START`` to
        the file's modification time).

    Raises:
        ModelError: Not a geofuse model file.

    """
    path = resolve_model_path(model)
    info = read_info(path)
    meta = keras_metadata(path)
    end = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    item = _item(mlm_name(path.stem), model_time(info, meta.get("date_saved")), end)
    describe_model(item, info, "Keras", meta.get("keras_version"), count_parameters(path))
    add_model_asset(
        item,
        href or str(path.absolute()),
        path,
        KERAS_MEDIA_TYPE,
        KERAS_ARTIFACT,
        f"{path.name}: network, weights and geofuse metadata (a Keras 3 archive)",
        ["mlm:model", "mlm:checkpoint", "model", "data"],
    )
    item.properties["geofuse:version"] = geofuse.__version__
    return item


EXPORT_ARTIFACTS = {  # format: framework, artifact type, media type, model file(s)
    "openvino": (
        "OpenVINO",
        "openvino.save_model",
        "application/octet-stream; framework=openvino",
        ("model.xml", "model.bin"),
    ),
    "onnx": (
        "ONNX",
        "keras.Model.export(format='onnx')",
        "application/octet-stream; framework=onnx",
        ("model.onnx",),
    ),
    "saved_model": (
        "TensorFlow",
        "keras.Model.export(format='tf_saved_model')",
        "application/octet-stream; framework=tensorflow",
        ("saved_model.pb",),
    ),
}


def export_item(
    folder: Path, info: ModelInfo, source: Path, fmt: str, versions: Mapping[str, str]
) -> pystac.Item:
    """The MLM item of an export folder: its network file as the model asset (relative hrefs).

    Args:
        folder: The folder holding the exported files (relative hrefs point into it).
        info: The model's metadata.
        source: The ``.keras`` file it was exported from (its parameter count and time).
        fmt: The export format (a key of ``EXPORT_ARTIFACTS``).
        versions: Library versions recorded by the export (``openvino``, ``tensorflow``).

    """
    import pystac

    if fmt not in EXPORT_ARTIFACTS:
        raise ModelError(
            f"Expected an export format among {', '.join(EXPORT_ARTIFACTS)}. Received: {fmt!r}"
        )
    framework, artifact, media_type, files = EXPORT_ARTIFACTS[fmt]
    meta = keras_metadata(source)
    end = dt.datetime.fromtimestamp(source.stat().st_mtime, dt.timezone.utc)
    item = _item(mlm_name(source.stem), model_time(info, meta.get("date_saved")), end)
    describe_model(item, info, framework, versions.get(framework.lower()), count_parameters(source))
    add_model_asset(
        item,
        f"./{files[0]}",
        folder / files[0],
        media_type,
        artifact,
        f"{files[0]}: the network exported from {source.name} ({fmt})",
        ["mlm:model", "model", "data"],
    )
    for extra in files[1:]:
        item.add_asset(
            "weights",
            pystac.Asset(
                f"./{extra}",
                title=f"{extra}: the network's weights",
                media_type=media_type,
                roles=["mlm:weights", "weights"],
            ),
        )
    item.add_asset(
        "metadata",
        pystac.Asset(
            "./geofuse.json",
            title="geofuse.json: bands, normalisation, classes, layout",
            media_type=pystac.MediaType.JSON,
            roles=["metadata"],
        ),
    )
    item.properties["geofuse:version"] = geofuse.__version__
    return item
