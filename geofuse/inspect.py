"""Facts about a model file or a scene, for ``geofuse info`` (no TensorFlow needed)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioError

from geofuse.config import Architecture
from geofuse.errors import InputError, first_line
from geofuse.fusion import fusion_mode
from geofuse.model import decoder_sources, file_digest, load_model, read_info


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
        "normalization": {
            "scale": info.normalization.scale,
            "offset": info.normalization.offset,
            "mean": [round(v, 4) for v in info.normalization.mean],
            "std": [round(v, 4) for v in info.normalization.std],
        },
        "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in info.classes],
        "patch_size": info.patch_size,
        "architecture": architecture(spec.arch),
        **({"fusion_weights": fusion_weights(path, spec.arch)} if learns_weights else {}),
        "provenance": dict(info.provenance),
    }


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
    these static weights are further scaled per image by the gates.
    """
    model = load_model(path).model
    weights = {}
    for level in reversed(range(arch.depth)):
        values = model.get_layer(f"fuse{level}").normalized_weights()
        names = [f"decoder{level + 1}"] + [f"enc{j}" for j in decoder_sources(arch, level)]
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
