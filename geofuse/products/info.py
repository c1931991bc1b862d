"""Facts about a model file or a scene, for ``geofuse info`` (no TensorFlow needed).

:func:`describe` takes a model file, ``default`` (the embedded model), or a scene: a local
file or any name GDAL opens (``/vsizip/...``, ``https://...``). :func:`format_facts` lays the
facts out as indented ``key: value`` lines.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from geofuse.model.calibration import (
    int8_check,
    int8_evidence,
    largest_iou_change,
    model_calibration,
)
from geofuse.model.fusion import fusion_mode
from geofuse.model.modelfile import (
    DEFAULT_NAME,
    file_digest,
    load_model,
    read_info,
    resolve_model_path,
)
from geofuse.model.network import decoder_sources, member_networks
from geofuse.model.spec import Architecture, ModelInfo
from geofuse.read.contract import pixel_size_m
from geofuse.read.rasterfile import open_raster
from geofuse.sources import Source, as_source
from geofuse.units import metres


def describe_model(path: Path) -> dict[str, Any]:
    """Metadata of a model file."""
    info = read_info(path)
    spec = info.spec
    learns_weights = fusion_mode(spec.arch.fusion).learns_level_weights
    return {
        "model": str(path),
        "sha256": file_digest(path),
        "bands": f"{spec.bands} ({', '.join(info.band_names)})",
        "input_dtype": info.input_dtype,
        "input": input_contract(info),
        "normalization": {
            "scale": info.normalization.scale,
            "offset": info.normalization.offset,
            "mean": [round(v, 4) for v in info.normalization.mean],
            "std": [round(v, 4) for v in info.normalization.std],
        },
        "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in info.classes],
        "patch_size": info.patch_size,
        "architecture": architecture(spec.arch),
        **({"ensemble": f"{spec.members} networks of this architecture, probabilities "
                        "averaged (inference costs as much as that many models)"}
           if spec.members > 1 else {}),
        **({"fusion_weights": fusion_weights(path, spec.arch)} if learns_weights else {}),
        "int8": int8_facts(path),
        "provenance": dict(info.provenance),
        "card": model_card(info),
    }


def int8_facts(path: Path) -> dict[str, Any]:
    """The calibration chips a model carries, and whether ``precision auto`` picks int8 and why.

    With the file's int8 record (:func:`geofuse.model.calibration.record_int8_check`): each
    held-out set's class agreement and largest IoU change, int8 against f32.
    """
    calibration = model_calibration(path)
    picks, why = int8_evidence(path)
    facts: dict[str, Any] = {
        "calibration_chips": "none (precision int8 needs a folder of calibration images)"
        if calibration is None
        else f"{len(calibration.chips)} of {calibration.chips.shape[1]}x"
        f"{calibration.chips.shape[2]} px, sha256 {calibration.digest[:12]}",
        "auto": f"{'int8' if picks else 'not int8'} ({why})",
    }
    record = int8_check(path)
    if record and record.get("sets"):
        facts["held_out"] = {
            name: f"agreement {float(scores.get('agreement', 0.0)):.2%}, largest IoU change "
            f"{largest_iou_change(scores):.4f}"
            for name, scores in record["sets"].items()
        }
    return facts


def input_contract(info: ModelInfo) -> dict[str, Any]:
    """What a scene is checked against at segment time (see :mod:`geofuse.read.contract`)."""
    unknown = "unknown (not recorded)"
    return {
        "band_names": ", ".join(info.band_names),
        "color_interp": ", ".join(info.color_interp) if info.color_interp else unknown,
        "dtype": info.input_dtype,
        "value_range": (", ".join(f"{name} {lo:g}..{hi:g}" for name, (lo, hi)
                                  in zip(info.band_names, info.value_range, strict=True))
                        + " (0.5-99.5 percentiles of the training images)"
                        if info.value_range else unknown),
        "pixel_size": metres(info.pixel_size) if info.pixel_size else unknown,
    }


def model_card(info: ModelInfo) -> dict[str, Any]:
    """A short model card: what it was trained on, its classes and scores, what it is for."""
    provenance = info.provenance
    data = []
    for source in provenance.get("data", []):
        data.append(source.get("scene") or source.get("tiles") or str(source))
    scores = {"validation": (provenance.get("metrics") or {}).get("mean_iou")}
    for name, figures in (provenance.get("evaluation") or {}).items():
        scores[name] = figures.get("mean_iou")
    return {
        **({"summary": info.card["summary"]} if "summary" in info.card else {}),
        "training_data": "; ".join(map(str, data)) or "not recorded",
        "pixel_size": metres(info.pixel_size) if info.pixel_size else "not recorded",
        "classes": ", ".join(c.name for c in info.classes),
        **({"started_from": started_from(provenance["init"])} if provenance.get("init") else {}),
        "mean_iou": ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if v is not None)
        or "not recorded",
        **{k: v for k, v in info.card.items() if k != "summary"},
    }


def started_from(init: dict[str, Any]) -> str:
    """The model a fine-tuned model started from, as the card says it."""
    carried = init.get("classes_carried")
    return (f"{init.get('model')} (sha256 {init.get('sha256')})"
            + (f"; classes carried over: {', '.join(carried)}" if carried else ""))


def architecture(arch: Architecture) -> dict[str, Any]:
    """The architecture facts, with the options of the model's fusion mode."""
    return {
        "fusion": arch.fusion,
        "fusion_doc": fusion_mode(arch.fusion).doc,
        **arch.fusion_options,
        "depth": arch.depth,
        "base_filters": arch.base_filters,
        "fusion_width": arch.width,
        "fusion_levels": arch.fusion_levels,
        "tile_multiple": arch.multiple,
    }


def fusion_weights(path: Path, arch: Architecture) -> dict[str, str]:
    """The learned normalised weight of each input of each decoder block that learns them.

    Loads the network (this imports TensorFlow). Keys are the decoder blocks, coarsest first
    (``"level 2"``); values list each input with its weight: ``decoder3`` is the decoder map
    coming up from level 3, ``enc0`` the encoder map of level 0 (full resolution). With gates,
    these static weights are further scaled by the gates (per pixel, or per image in models
    written before gates were pooled locally).
    """
    loaded = load_model(path)
    networks = member_networks(loaded.model, loaded.info.spec)
    weights = {}
    for k, network in enumerate(networks):  # an ensemble: each member's, ``member 1 level 2``
        for level in reversed(range(arch.depth)):
            values = network.get_layer(f"fuse{level}").normalized_weights()
            names = [f"decoder{level + 1}"] + [f"enc{j}" for j in decoder_sources(arch, level)]
            key = f"level {level}" if len(networks) == 1 else f"member {k} level {level}"
            weights[key] = ", ".join(
                f"{name} {value:.3f}" for name, value in zip(names, values, strict=True)
            )
    return weights


def describe_scene(path: Source) -> dict[str, Any]:
    """Georeferencing, bands and validity layout of a raster (a local file or a GDAL name)."""
    with open_raster(path) as ds:
        return {
            "scene": str(path),
            "driver": ds.driver,
            "size": f"{ds.width} x {ds.height} px",
            "bands": ds.count,
            "dtypes": ", ".join(ds.dtypes),
            "colorinterp": ", ".join(ci.name for ci in ds.colorinterp),
            "crs": ds.crs.to_string() if ds.crs else "none",
            "transform": list(ds.transform)[:6],
            "pixel_size": f"{ds.res[0]:g} x {ds.res[1]:g}",
            "ground_pixel_size": _ground_size(ds),
            "bounds": list(ds.bounds),
            "nodata": ds.nodata,
            "mask_flags": ", ".join(
                "+".join(f.name for f in flags) for flags in ds.mask_flag_enums
            ),
            "block_shapes": str(ds.block_shapes[0]),
            "overviews": ds.overviews(1),
            "tags": ds.tags(),
        }


def _ground_size(ds: Any) -> str:
    """The central pixel's ground size, in the one unit of printed lengths."""
    size = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
    return metres(size) if size is not None else "unknown (no CRS or geotransform)"


def describe(path: str | Path) -> dict[str, Any]:
    """A model file (zip/.keras, or ``default`` for the embedded model) or a scene."""
    if str(path) == DEFAULT_NAME:
        return describe_model(resolve_model_path(path))
    source = as_source(path)
    if isinstance(source, Path) and (
        source.suffix == ".keras" or (source.is_file() and zipfile.is_zipfile(source))
    ):
        return describe_model(source)
    return describe_scene(source)


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list | tuple)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) if value else "none"
    return "none" if value is None else str(value)


def _flat(value: Any) -> bool:
    """A scalar, a list of scalars, or a dict of scalars: fits on one line."""
    if isinstance(value, dict):
        return all(_scalar(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_scalar(v) for v in value)
    return True


def format_facts(facts: Any, indent: int = 0) -> list[str]:
    """Lay out nested facts as indented ``key: value`` lines (YAML-like, no Python reprs).

    Lists of scalars become ``a, b, c``; list items that are dicts become ``- k=v, ...``
    lines, or indented blocks when they nest further.
    """
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(facts, dict):
        for key, value in facts.items():
            if _scalar(value) or not value or (isinstance(value, list | tuple) and _flat(value)):
                lines.append(f"{pad}{key}: {_text(value)}")
            else:
                lines.append(f"{pad}{key}:")
                lines += format_facts(value, indent + 1)
    elif isinstance(facts, list | tuple):
        for item in facts:
            if _flat(item):
                lines.append(f"{pad}- {_text(item)}")
            else:
                block = format_facts(item, indent + 1)
                lines += [f"{pad}- {block[0].lstrip()}", *block[1:]]
    else:
        lines.append(f"{pad}{_text(facts)}")
    return lines
