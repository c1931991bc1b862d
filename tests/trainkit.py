"""Tiny labelled data sets for the train/evaluate tests: tiles folders and scenes.

Images are RGB uint8 noise with red squares (class 1) and blue bars (class 2) on a grey-green
background (class 0), so a tiny model learns something in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import UTM_TRANSFORM, write_geotiff

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
