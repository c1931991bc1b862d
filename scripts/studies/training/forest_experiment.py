"""Sentinel-2 forest: train on the 468 training chips, report forest IoU on the 117 test chips.

Data: ../shared/data/real/sentinel2-forest-hu (github.com/bencetaro/CV_sentinel_segment;
contains modified Copernicus Sentinel data). `cnn_N.jpg` images with `cnn_N.png` masks in
`train_images/` + `train_labels/` and `test_images/` + `test_labels/`; mask value 1 = forest,
2 = background, 0 = ignore (edge/no-data). The layout is used as is, through the folder and
extension options, exactly like

    geofuse train --tiles DIR --images-dir train_images --masks-dir train_labels \
        --image-ext .jpg --mask-ext .png --classes forest-classes.json --out forest.keras
    geofuse evaluate --model forest.keras --tiles DIR --images-dir test_images \
        --masks-dir test_labels --classes forest-classes.json

with forest-classes.json = {"classes": [{"name": "background", "value": 2},
{"name": "forest", "value": 1}], "ignore": [0]}.

    nice -n 10 python scripts/studies/training/forest_experiment.py [--epochs 25 --steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import REAL, epoch_report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA = REAL / "sentinel2-forest-hu"
CLASSES = {"classes": [{"id": 0, "name": "background", "color": "#e6e6b4", "value": 2},
                       {"id": 1, "name": "forest", "color": "#1b7837", "value": 1}],
           "ignore": [0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="copy the model here")
    args = parser.parse_args()

    from geofuse.model.spec import Architecture
    from geofuse.training.config import LabelOptions
    from geofuse.training.evaluate import EvaluateConfig, evaluate
    from geofuse.training.train import TilesSource, TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="forest-") as tmp:
        tmp = Path(tmp)
        classes = tmp / "forest-classes.json"
        classes.write_text(json.dumps(CLASSES))
        model = args.keep or tmp / "forest.keras"
        config = TrainConfig(
            sources=(TilesSource(DATA, "train_images", "train_labels", ".jpg", ".png"),),
            out=model, run_dir=tmp / "run", labels=LabelOptions(classes_file=classes),
            arch=Architecture(depth=args.depth, base_filters=args.filters),
            patch=args.patch, batch_size=args.batch_size,
            epochs=args.epochs, steps_per_epoch=args.steps, val_fraction=0.1, patience=0,
            seed=args.seed, overwrite=True,
        )
        result = train(config, report=epoch_report(args.epochs, "val_iou_forest"))
        ev = evaluate(EvaluateConfig(
            source=TilesSource(DATA, "test_images", "test_labels", ".jpg", ".png"),
            model=model, labels=LabelOptions(classes_file=classes),
        ))
    r = ev.report
    forest = r["classes"]["forest"]
    print(f"\nSentinel-2 forest, {len(r['items'])} test chips, {r['pixels']} labelled px; "
          f"training {result.seconds:.0f} s (best epoch {result.best_epoch} of {result.epochs})")
    print(f"forest IoU {forest['iou']:.3f}  F1 {forest['f1']:.3f}  precision "
          f"{forest['precision']:.3f}  recall {forest['recall']:.3f}")
    print(f"background IoU {r['classes']['background']['iou']:.3f}; mean IoU {r['mean_iou']:.3f}; "
          f"accuracy {r['accuracy']:.3f}")
    share = forest["support"] / max(r["pixels"], 1)
    print(f"(forest share of test pixels {share:.3f}; all-forest baseline IoU {share:.3f})")


if __name__ == "__main__":
    main()
