"""SpaceNet buildings: train on the western 2/3 of a real scene, score the eastern 1/3.

Data: ../shared/data/real/spacenet-solaris/sample_geotiff.tif (900 x 900 px, 0.5 m,
panchromatic uint16, EPSG:32616) with geotiff_labels.geojson (43 building footprints).
SpaceNet / CosmiQ Works, Maxar, CC BY-SA 4.0.

The scene is split into a western part (columns 0-599) and an eastern part (600-899), each
written to a temporary GeoTIFF with its own transform; the vector labels are rasterised onto
each part by geofuse itself. The script prints building IoU, F1, precision and recall for:

  1. geofuse train (scene + vector labels) then geofuse evaluate on the eastern part;
  2. the all-background baseline;
  3. the best single global brightness threshold (either direction), chosen on the western
     part by building IoU and applied to the eastern part.

    nice -n 10 python scripts/studies/training/spacenet_experiment.py [--epochs 30 --steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import (
    SPACENET_LABELS,
    SPACENET_VAL_BLOCK,
    building_scores,
    epoch_report,
    figure,
    spacenet_classes,
    spacenet_split,
)
from rasterio.windows import Window

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def labelled_pixels(scene: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image values, building labels and validity of a part, via geofuse's own rasteriser."""
    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import LabelCoding

    raster = LabelledRaster(scene, SPACENET_LABELS, LabelCoding(classes=2), spacenet_classes())
    data, valid, labels = raster.read(Window(0, 0, raster.width, raster.height))
    raster.close()
    return data[0].astype(np.float64), labels, valid


def best_threshold(values: np.ndarray, labels: np.ndarray) -> tuple[float, str, float]:
    """The global threshold (and direction) with the best building IoU on these pixels."""
    best = (0.0, ">", -1.0)
    candidates = np.unique(np.quantile(values, np.linspace(0.0, 1.0, 401)))
    truth = labels == 1
    for t in candidates:
        for direction in (">", "<"):
            pred = values > t if direction == ">" else values < t
            tp = np.sum(pred & truth)
            iou = tp / max(np.sum(pred | truth), 1)
            if iou > best[2]:
                best = (float(t), direction, float(iou))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--fusion", default="concat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--val-block", type=int, default=SPACENET_VAL_BLOCK)
    parser.add_argument("--loss", default="ce+dice")
    parser.add_argument("--class-weights", default="auto")
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--keep", type=Path, default=None, help="copy the model here")
    args = parser.parse_args()

    from geofuse.model.spec import Architecture
    from geofuse.training.config import LabelOptions
    from geofuse.training.evaluate import EvaluateConfig, evaluate
    from geofuse.training.train import SceneSource, TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="spacenet-") as tmp:
        tmp = Path(tmp)
        west, east = spacenet_split(tmp)
        model = args.keep or tmp / "spacenet.keras"
        config = TrainConfig(
            sources=(SceneSource(west, SPACENET_LABELS),), out=model, run_dir=tmp / "run",
            labels=LabelOptions(classes=spacenet_classes()), arch=Architecture(
                fusion=args.fusion, depth=args.depth, base_filters=args.filters),
            patch=args.patch,
            batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps,
            learning_rate=args.lr, val_fraction=args.val_fraction, val_block=args.val_block,
            loss=args.loss, class_weights=args.class_weights, jitter=args.jitter, patience=0,
            seed=args.seed, overwrite=True,
        )
        result = train(config, report=epoch_report(args.epochs, "val_iou_building"))
        train_seconds = result.seconds
        ev = evaluate(EvaluateConfig(source=SceneSource(east, SPACENET_LABELS), model=model,
                                     seam_width=8))
        building = ev.report["classes"]["building"]

        values_w, labels_w, valid_w = labelled_pixels(west)
        values_e, labels_e, valid_e = labelled_pixels(east)
        keep_w = valid_w & (labels_w < 2)
        keep_e = valid_e & (labels_e < 2)
        t, direction, train_iou = best_threshold(values_w[keep_w], labels_w[keep_w])
        pred_t = values_e > t if direction == ">" else values_e < t
        threshold = building_scores(labels_e, pred_t, keep_e)
        background = building_scores(labels_e, np.zeros_like(labels_e), keep_e)

    rows = {
        "geofuse": building,
        "all background": background,
        f"threshold {direction} {t:.0f}": threshold,
    }
    print(f"\nSpaceNet sample, eastern third ({int(keep_e.sum())} valid px, "
          f"{int(labels_e[keep_e].sum())} building px); training {train_seconds:.0f} s "
          f"(best epoch {result.best_epoch} of {result.epochs})")
    print(f"{'method':<22}{'IoU':>8}{'F1':>8}{'prec':>8}{'recall':>8}")
    for name, s in rows.items():
        print(f"{name:<22}" + "".join(figure(s[k]) for k in ("iou", "f1", "precision",
                                                              "recall")))
    print(f"(threshold chosen on the western part: train IoU {train_iou:.3f})")
    print("seams:", json.dumps(ev.report.get("seams", {}).get("seam", {}).get("mean_iou")),
          "interior:", json.dumps(ev.report.get("seams", {}).get("interior", {})
                                  .get("mean_iou")))


if __name__ == "__main__":
    main()
