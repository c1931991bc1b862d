"""SpaceNet sample: TTA's effect on building IoU, and polygons compared with the footprints.

Needs a model trained on the western 600 columns of the SpaceNet sample (e.g. by
``scripts/studies/training/spacenet_experiment.py --keep M.keras``). On the eastern 300
columns (held out) it prints building IoU, model passes and time for ``--tta none / flips /
rotations / all``; then it vectorizes the predicted mask (``geofuse vectorize`` defaults)
and compares the polygons with the label footprints: counts, area distribution and
SpaceNet-style object matching (a polygon and a footprint match at IoU >= 0.5, one to one),
for the held-out part and the whole scene.

The last block vectorizes the footprints themselves, rasterised onto the scene grid: the
ceiling that the vectorizer allows.

Data: ../shared/data/real/spacenet-solaris (SpaceNet / CosmiQ Works, Maxar, CC BY-SA 4.0).

    nice -n 10 python scripts/studies/products/spacenet_products.py --model M.keras [--tile 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import SPACENET_LABELS, SPACENET_SCENE, building_scores, figure, spacenet_split
from rasterio.features import rasterize

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def footprints(bounds: tuple[float, float, float, float]) -> np.ndarray:
    _, _, wkb, _ = pyogrio.raw.read(SPACENET_LABELS)
    geoms = shapely.from_wkb(wkb)
    return shapely.intersection(geoms[shapely.intersects(geoms, shapely.box(*bounds))],
                                shapely.box(*bounds))


def polygons(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _, _, wkb, fields = pyogrio.raw.read(path, columns=["area_m2"])
    return shapely.from_wkb(wkb), fields[0]


def match(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> int:
    """Greedy one-to-one matches at IoU >= threshold (SpaceNet's building metric)."""
    pairs = []
    ti_all, pi_all = shapely.STRtree(pred).query(truth, predicate="intersects")
    for ti, pi in zip(ti_all, pi_all, strict=True):
        inter = shapely.area(shapely.intersection(truth[ti], pred[pi]))
        iou = inter / shapely.area(shapely.union(truth[ti], pred[pi]))
        if iou >= threshold:
            pairs.append((iou, ti, pi))
    used_t, used_p, n = set(), set(), 0
    for _, ti, pi in sorted(pairs, reverse=True):
        if ti not in used_t and pi not in used_p:
            used_t.add(ti)
            used_p.add(pi)
            n += 1
    return n


def describe(areas: np.ndarray) -> str:
    if len(areas) == 0:
        return "none"
    q = np.percentile(areas, [0, 25, 50, 75, 100])
    return (f"n={len(areas):3d}  min {q[0]:7.1f}  q25 {q[1]:7.1f}  median {q[2]:7.1f}  "
            f"q75 {q[3]:7.1f}  max {q[4]:7.1f}  total {areas.sum():8.0f} m²")


def compare(name: str, poly_path: Path, bounds: tuple[float, float, float, float]) -> None:
    pred, areas = polygons(poly_path)
    truth = footprints(bounds)
    truth_areas = shapely.area(truth)
    matched = match(pred, truth)
    precision = matched / max(len(pred), 1)
    recall = matched / max(len(truth), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    print(f"\n{name}")
    print(f"  footprints  {describe(truth_areas)}")
    print(f"  polygons    {describe(areas)}")
    print(f"  matched at IoU>=0.5: {matched}  precision {precision:.2f}  recall {recall:.2f}  "
          f"F1 {f1:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--min-area", type=float, default=0.0)
    args = parser.parse_args()

    from geofuse.config import SegmentConfig, TilingConfig, VectorizeConfig
    from geofuse.model.modelfile import load_model
    from geofuse.products.vectorize import vectorize_mask
    from geofuse.segment import make_predictor, segment_scene

    loaded = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="spacenet-products-") as tmp:
        tmp = Path(tmp)
        _, east = spacenet_split(tmp)
        with rasterio.open(east) as ds:
            tiling = TilingConfig(tile=args.tile, batch_size=4).for_scene(
                ds.height, ds.width, loaded.info.spec.arch.multiple)  # as segment fits it
            predictor = make_predictor(loaded.model, tiling.batch_size, tiling.shape, 1)
            valid = ds.read_masks(1) > 0
            truth = rasterize(footprints(tuple(ds.bounds)), out_shape=ds.shape,
                              transform=ds.transform) > 0
            east_bounds = tuple(ds.bounds)
        print(f"held-out eastern part: {valid.sum()} valid px, {truth[valid].sum()} building px")
        # trace the model once before timing
        segment_scene(east, tmp / "warm.tif", loaded, SegmentConfig(tiling=tiling),
                      predictor=predictor)
        print(f"{'tta':<10}{'passes':>8}{'seconds':>9}{'IoU':>8}{'F1':>8}")
        for tta in ("none", "flips", "rotations", "all"):
            out = tmp / f"east_{tta}.tif"
            config = SegmentConfig(tiling=tiling, tta=tta)
            result = segment_scene(east, out, loaded, config, predictor=predictor)
            with rasterio.open(out) as ds:
                pred = ds.read(1) == 1
            scores = building_scores(truth, pred, valid)
            print(f"{tta:<10}{result.tiles * result.tta_passes:>8}{result.seconds:>9.2f}"
                  f"{figure(scores['iou'])}{figure(scores['f1'])}")

        vector = VectorizeConfig(min_area=args.min_area, classes=("building",))
        vectorize_mask(tmp / "east_none.tif", tmp / "east.gpkg", vector)
        compare("held-out eastern part, --tta none", tmp / "east.gpkg", east_bounds)
        vectorize_mask(tmp / "east_all.tif", tmp / "east_tta.gpkg", vector)
        compare("held-out eastern part, --tta all", tmp / "east_tta.gpkg", east_bounds)
        full = segment_scene(SPACENET_SCENE, tmp / "full.tif", loaded, SegmentConfig(tiling=tiling),
                             predictor=predictor)
        vectorize_mask(full.mask, tmp / "full.gpkg", vector)
        with rasterio.open(SPACENET_SCENE) as ds:
            compare("whole scene (western 2/3 were training data), --tta none",
                    tmp / "full.gpkg", tuple(ds.bounds))
            # ceiling: the footprints rasterised onto the scene grid, then vectorized
            ceiling = tmp / "footprints.tif"
            burnt = rasterize(footprints(tuple(ds.bounds)), out_shape=ds.shape,
                              transform=ds.transform).astype(np.uint8)
            with rasterio.open(ceiling, "w", **(ds.profile | {"dtype": "uint8", "nodata": 255,
                                                               "count": 1})) as dst:
                dst.write(burnt, 1)
                dst.update_tags(GEOFUSE_CLASSES="background,building")
            vectorize_mask(ceiling, tmp / "footprints.gpkg", vector)
            compare("ceiling: the footprints rasterised, then vectorized", tmp / "footprints.gpkg",
                    tuple(ds.bounds))


if __name__ == "__main__":
    main()
