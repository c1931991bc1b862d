"""Facts about a model file or a scene, for ``geofuse info`` (no TensorFlow needed)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from geofuse.config import ModelSpec
from geofuse.errors import InputError, first_line
from geofuse.model import decoder_sources, file_digest, load_model, read_info


def describe_model(path: Path) -> dict[str, Any]:
    """Metadata of a model file."""
    info = read_info(path)
    spec = info.spec
    return {
        "model": str(path),
        "sha256": file_digest(path),
        "bands": f"{spec.bands} ({', '.join(info.band_names)})",
        "input_dtype": info.input_dtype,
        "normalization": {
            "scale": info.normalization.scale,
            "offset": info.normalization.offset,
            "mean": [round(v, 4) for v in info.normalization.mean],
            "std": [round(v, 4) for v in info.normalization.std],
        },
        "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in info.classes],
        "patch_size": info.patch_size,
        "architecture": architecture(spec),
        **({"fusion_weights": fusion_weights(path, spec)} if spec.fusion == "weighted" else {}),
        "provenance": dict(info.provenance),
    }


def architecture(spec: ModelSpec) -> dict[str, Any]:
    """The architecture facts, with the options of the model's fusion mode."""
    facts: dict[str, Any] = {
        "fusion": spec.fusion,
        "depth": spec.depth,
        "base_filters": spec.base_filters,
        "fusion_width": spec.width,
        "fusion_levels": spec.fusion_levels,
        "tile_multiple": spec.multiple,
    }
    if spec.fusion == "weighted":
        facts["gates"] = spec.gates
    if spec.fusion == "cross_attention":
        facts["attention_size"] = spec.attention_size
    return facts


def fusion_weights(path: Path, spec: ModelSpec) -> dict[str, str]:
    """The learned normalised weight of each input of each ``weighted`` decoder block.

    Loads the network (this imports TensorFlow). Keys are the decoder blocks, coarsest first
    (``"level 2"``); values list each input with its weight: ``decoder3`` is the decoder map
    coming up from level 3, ``enc0`` the encoder map of level 0 (full resolution). With gates,
    these static weights are further scaled per image by the gates.
    """
    model = load_model(path).model
    weights = {}
    for level in reversed(range(spec.depth)):
        values = model.get_layer(f"fuse{level}").normalized_weights()
        names = [f"decoder{level + 1}"] + [f"enc{j}" for j in decoder_sources(spec, level)]
        weights[f"level {level}"] = ", ".join(
            f"{name} {value:.3f}" for name, value in zip(names, values, strict=True)
        )
    return weights


def describe_scene(path: Path) -> dict[str, Any]:
    """Georeferencing, bands and validity layout of a raster."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        with rasterio.open(path) as ds:
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
                "bounds": list(ds.bounds),
                "nodata": ds.nodata,
                "mask_flags": ", ".join(
                    "+".join(f.name for f in flags) for flags in ds.mask_flag_enums
                ),
                "block_shapes": str(ds.block_shapes[0]),
                "overviews": ds.overviews(1),
                "tags": ds.tags(),
            }
    except RasterioError as exc:
        raise InputError(f"{path}: not a readable raster ({first_line(exc)})") from exc


def describe(path: Path) -> dict[str, Any]:
    """A model file (zip/.keras) or a scene."""
    if path.suffix == ".keras" or (path.is_file() and zipfile.is_zipfile(path)):
        return describe_model(path)
    return describe_scene(path)
