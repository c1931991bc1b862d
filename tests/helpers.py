"""Helpers shared by the tests: paths, a GeoTIFF writer, tiny model files, tiny labelled data.

Tiny labelled data sets for the train/evaluate tests (tiles folders and scenes): images are RGB
uint8 noise with red squares (class 1) and blue bars (class 2) on a grey-green background
(class 0), so a tiny model learns something in a few steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from geofuse.model.spec import Architecture, ClassInfo, ModelInfo, ModelSpec, Normalization

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
# the shared real data beside the checkout; GEOFUSE_REAL_DATA points elsewhere
REAL = Path(os.environ.get("GEOFUSE_REAL_DATA") or ROOT.parent / "shared" / "data" / "real")
# set (CI does): a missing real-data folder fails the tests that need it instead of skipping them
REQUIRE_REAL = os.environ.get("GEOFUSE_REQUIRE_REAL_DATA", "") not in ("", "0")
SAMPLES = ROOT / "data_samples"
UTM_TRANSFORM = Affine(0.5, 0.0, 500123.5, 0.0, -0.5, 5123456.0)


def write_geotiff(
    path: Path,
    data: np.ndarray,
    crs: str | None = "EPSG:32633",
    transform: Affine = UTM_TRANSFORM,
    **profile: object,
) -> Path:
    """Write a ``(bands, h, w)`` array as a GeoTIFF with a real CRS and transform."""
    if data.ndim == 2:
        data = data[None]
    kwargs: dict = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
    return path


def tiny_spec(bands: int, classes: int, depth: int = 2, filters: int = 4,
              fusion: str = "concat", **options: object) -> ModelSpec:
    """A ModelSpec; ``options`` are Architecture fields or options of the fusion mode."""
    fields = {f.name for f in dataclasses.fields(Architecture)}
    arch = {k: v for k, v in options.items() if k in fields}
    mode_options = {k: v for k, v in options.items() if k not in fields}
    return ModelSpec(bands=bands, classes=classes, arch=Architecture(
        depth=depth, base_filters=filters, fusion=fusion, fusion_options=mode_options, **arch))


def make_tiny_model(
    path: Path,
    bands: int = 3,
    classes: int = 3,
    fusion: str = "concat",
    depth: int = 2,
    filters: int = 4,
    scale: float = 1 / 255,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
    input_dtype: str = "uint8",
    contract: dict | None = None,
    **spec_options: object,
) -> Path:
    """Build, save and return a tiny untrained fusion U-Net model file.

    ``contract`` sets more :class:`ModelInfo` fields (``band_names``, ``pixel_size``,
    ``value_range``, ...). ``spec_options`` go to :func:`tiny_spec` (e.g. ``gates=True``).
    """
    import keras

    from geofuse.model.modelfile import save_model
    from geofuse.model.network import build_unet

    keras.utils.set_random_seed(seed)
    spec = tiny_spec(bands, classes, depth, filters, fusion, **spec_options)
    info = ModelInfo(
        spec=spec,
        band_names=tuple(f"b{i + 1}" for i in range(bands)),
        normalization=Normalization.identity(bands, scale=scale),
        classes=tuple(ClassInfo(i, class_names[i] if class_names else f"class{i}",
                                f"#{40 * i % 256:02x}5a{(200 - 40 * i) % 256:02x}")
                      for i in range(classes)),
        patch_size=64,
        input_dtype=input_dtype,
    )
    info = dataclasses.replace(info, **(contract or {}))
    return save_model(build_unet(spec, patch=info.patch_size), info, path)


COLOURS = {0: (120, 130, 100), 1: (210, 60, 50), 2: (40, 70, 200)}
CLASSES = [
    {"id": 0, "name": "background", "color": "#787864"},
    {"id": 1, "name": "building", "color": "#d23c32"},
    {"id": 2, "name": "water", "color": "#2846c8"},
]


def synth(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(3, h, w)`` uint8 image and ``(h, w)`` uint8 labels 0..2."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint8)
    for _ in range(max(2, height * width // 700)):
        r, c = rng.integers(0, height - 6), rng.integers(0, width - 6)
        if rng.random() < 0.5:
            labels[r:r + rng.integers(5, 14), c:c + rng.integers(5, 14)] = 1
        else:
            labels[r:r + 4, c:c + rng.integers(8, 30)] = 2
    image = np.zeros((3, height, width), np.float32)
    for cls, colour in COLOURS.items():
        image[:, labels == cls] = np.asarray(colour, np.float32)[:, None]
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 1, 255).astype(np.uint8), labels


def write_classes(path: Path, extra: dict | None = None) -> Path:
    """A classes.json with the three test classes."""
    data = {"classes": CLASSES} | (extra or {})
    path.write_text(json.dumps(data))
    return path


def make_tiles(
    root: Path, count: int = 6, size: int = 64, seed: int = 0, images: str = "images",
    masks: str = "masks", fmt: str = "tif", classes: bool = True,
) -> Path:
    """A tiles folder: ``root/images/tNN.tif`` with ``root/masks/tNN.tif`` (+ classes.json).

    ``fmt="jpg"`` writes JPEG images with PNG id masks.
    """
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, labels = synth(seed + i, size, size)
        if fmt == "tif":
            write_geotiff(root / images / f"t{i:02d}.tif", image)
            write_geotiff(root / masks / f"t{i:02d}.tif", labels)
        else:
            Image.fromarray(np.moveaxis(image, 0, -1)).save(root / images / f"t{i:02d}.jpg",
                                                           quality=95)
            Image.fromarray(labels).save(root / masks / f"t{i:02d}.png")
    if classes:
        write_classes(root / "classes.json")
    return root


def make_scene(
    folder: Path, size: tuple[int, int] = (160, 192), seed: int = 5, collar: int = 0,
    name: str = "scene",
) -> tuple[Path, Path]:
    """A 3-band UTM scene (nodata 0, optional nodata collar) with its id label raster."""
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = synth(seed, *size)
    labels = labels.copy()
    if collar:
        image[:, :collar, :] = 0
        labels[:collar, :] = 255
    scene = write_geotiff(folder / f"{name}.tif", image, nodata=0)
    mask = write_geotiff(folder / f"{name}_labels.tif", labels, nodata=255)
    return scene, mask


def scene_transform():  # noqa: ANN201 - re-export for tests
    """The transform every test raster uses."""
    return UTM_TRANSFORM


class MemorySink:
    """Collects the row bands a Stitcher writes, checking they arrive in order."""

    def __init__(self, count: int, height: int, width: int, dtype: str) -> None:
        self.array = np.full((count, height, width), 77, dtype=dtype)
        self.next_row = 0

    def write(self, row0: int, array: np.ndarray) -> None:
        assert row0 == self.next_row, "row bands out of order or overlapping"
        self.array[:, row0:row0 + array.shape[1]] = array
        self.next_row = row0 + array.shape[1]


# -- STAC ----------------------------------------------------------------------------------------
STAC_PROCESSING_V110 = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"


def stac_validator() -> object:
    """pystac's JSON-schema validator holding every schema pystac ships; it never downloads.

    The processing extension's schema ships with no package. The MLM schema refers to one of
    its definitions (the shape of a processing expression, a field geofuse does not write):
    that definition gets a stand-in saying only that such an expression is an object with
    ``format`` and ``expression``.
    """
    import importlib.resources

    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    check = JsonSchemaSTACValidator()
    for folder in (importlib.resources.files("pystac.extensions") / "json-schema").iterdir():
        for file in folder.iterdir():
            schema = json.loads(file.read_text())
            check.schema_cache[schema["$id"].rstrip("#")] = schema
    check.schema_cache[STAC_PROCESSING_V110] = {
        "$schema": "http://json-schema.org/draft-07/schema#", "$id": STAC_PROCESSING_V110,
        "definitions": {"fields": {"properties": {"processing:expression": {
            "type": "object", "required": ["format", "expression"]}}}}}
    return check


def stac_validate(data: dict) -> tuple[list[str], list[str]]:
    """Validate STAC JSON offline: core 1.1.0 and each extension whose schema pystac ships.

    Returns ``(extension schemas validated, extension schemas not available)``; raises
    pystac's STACValidationError on an invalid object.
    """
    import pystac

    check = stac_validator()
    kind = (pystac.STACObjectType.ITEM if data["type"] == "Feature"
            else pystac.STACObjectType(data["type"]))
    check.validate_core(data, kind, data["stac_version"])
    checked, missing = [], []
    for uri in data.get("stac_extensions", []):
        if uri not in check.schema_cache:
            missing.append(uri)
            continue
        check.validate_extension(data, kind, data["stac_version"], uri)
        checked.append(uri)
    return checked, missing


def stac_extension(name: str, data: dict) -> str:
    """The schema URI of extension ``name`` (``projection``, ``mlm``, ...) that ``data`` uses."""
    return next(uri for uri in data["stac_extensions"] if f"/{name}/" in uri)


def smooth_rgb(seed: int, height: int, width: int) -> np.ndarray:
    """A blocky random 3-band uint8 image, so a tiny model's classes vary over it."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (3, height // 8 + 1, width // 8 + 1))
    image = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
    return (image + rng.integers(0, 40, image.shape)).clip(0, 255).astype("uint8")


def tagged_scene(path: Path, seed: int = 1, **tags: str) -> Path:
    """A 48 x 64 RGB scene with metadata ``tags``; ``IMAGERY=...`` sets GDAL's
    ``IMAGERY`` ``ACQUISITIONDATETIME``."""
    write_geotiff(path, smooth_rgb(seed, 48, 64))
    if tags:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(**{k: v for k, v in tags.items() if k != "IMAGERY"})
            if "IMAGERY" in tags:
                ds.update_tags(ns="IMAGERY", ACQUISITIONDATETIME=tags["IMAGERY"])
    return path


def footprint_bbox(raster: Path) -> list[float]:
    """A raster's footprint in WGS84, by GDAL's own bounds transformation (21 points an edge)."""
    from rasterio.warp import transform_bounds

    with rasterio.open(raster) as ds:
        return list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))
