"""Rebuild the embedded default model, geofuse/models/default.keras, through training.train().

Training data:
  * the synthetic sample scene data_samples/scene_a.tif with scene_a_labels.tif (class ids);
  * the Dubai aerial land-cover set (../shared/data/real/dubai-aerial-hitl, CC0, Humans in the
    Loop / MBRSC): colour-coded masks read through the colours of data_samples/classes.json,
    which are the colours measured in the masks (the set's own classes.json is wrong, see its
    PROVENANCE.md). Land, building, road, water and vegetation map onto our classes 0..4;
    "Unlabeled" (#9B9B9B) and black are ignored. One Dubai tile folder is held out.

After training it evaluates the model on the held-out Dubai tile and on data_samples/scene_b.tif
(never seen in training), prints both, and stores them in the model's provenance.

    nice -n 10 python scripts/train_default.py            # about 10 CPU minutes
    nice -n 10 python scripts/train_default.py --quick    # about 3 minutes, synthetic only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import _common
from _common import ROOT, dubai_holdout, dubai_training, epoch_report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# relative to the repository root (the script changes into it), so that the provenance stored
# in the model names the data without machine-specific paths
SAMPLES = Path(os.path.relpath(_common.SAMPLES, ROOT))
DUBAI = Path(os.path.relpath(_common.DUBAI, ROOT))


def display_info(info, provenance):  # noqa: ANN001, ANN201
    """``info`` with ``provenance`` (machine paths cut) and readable class colours."""
    from dataclasses import replace

    from geofuse.colours import class_colour
    from geofuse.sources import portable

    classes = tuple(replace(c, color=class_colour(c.name, c.id)) for c in info.classes)
    return replace(info, classes=classes, provenance=portable(provenance))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "geofuse" / "models" / "default.keras")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/geofuse-default.train"))
    parser.add_argument("--holdout", default="Tile 2", help="Dubai tile folder held out")
    parser.add_argument("--quick", action="store_true", help="synthetic samples only, short")
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--synthetic-share", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training; evaluate --out and record the scores")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.run_dir = args.run_dir.resolve()
    os.chdir(ROOT)
    logging.basicConfig(level=logging.WARNING)

    from geofuse.model import load_model, save_model
    from geofuse.model_config import Architecture
    from geofuse.training.config import LabelOptions
    from geofuse.training.evaluate import EvaluateConfig, evaluate
    from geofuse.training.labels import LabelCoding, load_classes
    from geofuse.training.train import SceneSource, TrainConfig, train

    classes, _ = load_classes(SAMPLES / "classes.json")
    sources: list = [SceneSource(SAMPLES / "scene_a.tif", SAMPLES / "scene_a_labels.tif",
                                 coding=LabelCoding(classes=len(classes), mode="ids"))]
    weights = None
    if not args.quick:
        sources.append(dubai_training(args.holdout, DUBAI))
        weights = (args.synthetic_share, 1.0 - args.synthetic_share)
    epochs, steps = (12, 40) if args.quick else (args.epochs, args.steps)
    config = TrainConfig(
        sources=tuple(sources), out=args.out, run_dir=args.run_dir,
        labels=LabelOptions(classes=classes),
        arch=Architecture(depth=args.depth, base_filters=args.filters), patch=args.patch,
        batch_size=args.batch_size, epochs=epochs, steps_per_epoch=steps,
        learning_rate=args.lr, val_fraction=0.15, patience=10, seed=args.seed,
        source_weights=weights, overwrite=True, max_val_chips=384,
    )
    if not args.evaluate_only:
        result = train(config, report=epoch_report(epochs, "mean_iou", "val_mean_iou"))
        print(f"trained in {result.seconds:.0f} s; best epoch {result.best_epoch}")

    evaluations = {}
    scene_b = evaluate(EvaluateConfig(
        source=SceneSource(SAMPLES / "scene_b.tif", SAMPLES / "scene_b_labels.tif"),
        model=args.out, seam_width=8))
    evaluations["scene_b"] = scene_b.report
    if not args.quick:
        holdout = evaluate(dubai_holdout(args.out, args.holdout, DUBAI))
        evaluations[f"dubai {args.holdout}"] = holdout.report
    for name, rep in evaluations.items():
        ious = ", ".join(f"{k} {v['iou']:.3f}" for k, v in rep["classes"].items()
                         if v["iou"] is not None)
        print(f"{name}: mean IoU {rep['mean_iou']:.3f}, accuracy {rep['accuracy']:.3f} "
              f"({ious})")
    # store the held-out scores in the model's provenance (with no paths of this machine), and
    # give the classes readable display colours: the colours of classes.json are the ones
    # measured in the Dubai masks (purple land and buildings), right for decoding only
    loaded = load_model(args.out)
    provenance = dict(loaded.info.provenance)
    provenance["evaluation"] = {
        name: {"mean_iou": rep["mean_iou"], "accuracy": rep["accuracy"],
               "iou": {k: v["iou"] for k, v in rep["classes"].items()}}
        for name, rep in evaluations.items()
    }
    info = display_info(loaded.info, provenance)
    save_model(loaded.model, info, args.out)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "evaluation.json").write_text(json.dumps(evaluations, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
