#!/usr/bin/env python
"""Generate deterministic synthetic satellite scenes for geofuse demos and tests.

Writes two 3-band uint8 RGB GeoTIFFs (``scene_a.tif`` for training/demo,
``scene_b.tif`` held out for IoU), a matching single-band label raster for each
(``*_labels.tif``; 0 land, 1 building, 2 road, 3 water, 4 vegetation, 255 nodata)
and ``classes.json``. Re-running with the same arguments gives byte-identical files.

Usage:
    python scripts/make_samples.py [--out data_samples]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LABEL_NODATA, geotiff_profile
from synth_noise import value_noise
from synth_scene import (
    Canvas,
    finish,
    render_buildings,
    render_land,
    render_roads,
    render_vegetation,
    render_water,
)

CLASSES = [
    {"id": 0, "name": "land", "color": "#8429F6"},
    {"id": 1, "name": "building", "color": "#3C1098"},
    {"id": 2, "name": "road", "color": "#6EC1E4"},
    {"id": 3, "name": "water", "color": "#E2A929"},
    {"id": 4, "name": "vegetation", "color": "#FEDD3A"},
]


@dataclass(frozen=True)
class SceneSpec:
    """Parameters of one synthetic scene.

    Attributes:
        name: File stem, e.g. ``scene_a``.
        width: Width in pixels.
        height: Height in pixels.
        seed: Seed for ``numpy.random.default_rng``.
        origin: Upper-left corner ``(x, y)`` in EPSG:32633 metres (``_common.CRS``).
        water: ``"river"`` or ``"lake"``.
        buildings: Target number of buildings.
        collar: Nodata collar edges as ``(edge, start_px, end_px)``; the collar is
            ``start_px`` deep at one end of the edge and ``end_px`` at the other.
    """

    name: str
    width: int
    height: int
    seed: int
    origin: tuple[float, float]
    water: str
    buildings: int
    collar: tuple[tuple[str, float, float], ...]


SCENES = (
    SceneSpec(
        "scene_a", 1024, 768, 20240501, (500123.5, 5123456.0), "river", 70, (("left", 16.0, 88.0),)
    ),
    SceneSpec(
        "scene_b",
        896,
        704,
        20240502,
        (503321.0, 5120987.5),
        "lake",
        60,
        (("top", 2.0, 42.0), ("right", 6.0, 34.0)),
    ),
)


def collar_mask(rng: np.random.Generator, spec: SceneSpec) -> np.ndarray:
    """Build the slanted, slightly ragged nodata footprint collar.

    Args:
        rng: Random generator.
        spec: Scene parameters.

    Returns:
        Boolean array, True where the image is nodata.
    """
    h, w = spec.height, spec.width
    mask = np.zeros((h, w), bool)
    for edge, start, end in spec.collar:
        n = h if edge in ("left", "right") else w
        jag = np.round(3.0 * (value_noise(rng, (n, 1), 6)[:, 0] - 0.5) + rng.integers(0, 2, n))
        depth = start + (end - start) * np.arange(n) / (n - 1) + jag
        if edge == "left":
            mask |= np.arange(w)[None, :] < depth[:, None]
        elif edge == "right":
            mask |= np.arange(w)[None, :] >= w - depth[:, None]
        elif edge == "top":
            mask |= np.arange(h)[:, None] < depth[None, :]
        else:
            mask |= np.arange(h)[:, None] >= h - depth[None, :]
    return mask


def generate_scene(spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene.

    Args:
        spec: Scene parameters.

    Returns:
        ``(rgb, labels)``: uint8 arrays of shape ``(3, h, w)`` and ``(h, w)``.
    """
    rng = np.random.default_rng(spec.seed)
    cv = Canvas(rng, (spec.height, spec.width))
    render_land(cv)
    render_water(cv, spec.water)
    render_roads(cv)
    render_vegetation(cv)
    render_buildings(cv, spec.buildings)
    img = np.clip(np.rint(finish(cv)), 1, 255).astype(np.uint8)
    labels = cv.labels.copy()
    nodata = collar_mask(rng, spec)
    img[nodata] = 0
    labels[nodata] = LABEL_NODATA
    return np.ascontiguousarray(img.transpose(2, 0, 1)), labels


def _profile(spec: SceneSpec, count: int, nodata: int) -> dict:
    return geotiff_profile(spec.width, spec.height, count, nodata, origin=spec.origin, block=256,
                           predictor=2, zlevel=9, interleave="pixel")


def write_scene(out: Path, spec: SceneSpec, rgb: np.ndarray, labels: np.ndarray) -> list[Path]:
    """Write the RGB and label GeoTIFFs of one scene.

    Args:
        out: Output directory.
        spec: Scene parameters.
        rgb: ``(3, h, w)`` uint8 image.
        labels: ``(h, w)`` uint8 class ids.

    Returns:
        Paths written.
    """
    img_path, lbl_path = out / f"{spec.name}.tif", out / f"{spec.name}_labels.tif"
    with rasterio.open(img_path, "w", photometric="RGB", **_profile(spec, 3, 0)) as dst:
        dst.write(rgb)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(
            SCENE=spec.name, SOURCE="geofuse synthetic sample (scripts/make_samples.py)"
        )
    with rasterio.open(lbl_path, "w", **_profile(spec, 1, LABEL_NODATA)) as dst:
        dst.write(labels, 1)
        dst.colorinterp = [ColorInterp.gray]
        dst.update_tags(
            SCENE=spec.name, CLASSES=",".join(f"{c['id']}={c['name']}" for c in CLASSES)
        )
    return [img_path, lbl_path]


def class_shares(labels: np.ndarray) -> dict[str, float]:
    """Fraction of valid pixels per class (plus the nodata share of all pixels).

    Args:
        labels: Label raster.

    Returns:
        Mapping of class name (and ``"nodata"``) to fraction.
    """
    counts = np.bincount(labels.ravel(), minlength=256)
    valid = counts[: len(CLASSES)].sum()
    shares = {c["name"]: float(counts[c["id"]] / valid) for c in CLASSES}
    shares["nodata"] = float(counts[LABEL_NODATA] / labels.size)
    return shares


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data_samples"),
        help="output directory (default: data_samples)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = [args.out / "classes.json"]
    written[0].write_text(json.dumps({"classes": CLASSES}, indent=2) + "\n")
    shares = {}
    for spec in SCENES:
        rgb, labels = generate_scene(spec)
        written += write_scene(args.out, spec, rgb, labels)
        shares[spec.name] = class_shares(labels)
    elapsed = time.perf_counter() - start
    total = 0
    for path in written:
        size = path.stat().st_size
        total += size
        print(f"{path}  {size / 1024:8.1f} KiB")
    print(f"total {total / 1024 / 1024:.2f} MiB, generated in {elapsed:.1f} s")
    for name, sh in shares.items():
        print(f"{name}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in sh.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
