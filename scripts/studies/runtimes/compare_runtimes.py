"""Do the inference runtimes agree? Pixels whose class differs, and IoU with each runtime.

1. Agreement: every scene is segmented with TensorFlow f32 (the reference) and with each other
   runtime/precision, with the embedded model (or ``--model``); the table gives the share of
   valid pixels whose class differs from the reference, per scene and over all of them.
2. Dubai: mean IoU of the embedded model on the held-out Dubai tile folder (``Tile 2``: the
   default model was trained on the other tiles), with each runtime.
3. SpaceNet (with ``--spacenet-model``, a model trained on the western part, e.g. by
   ``scripts/studies/training/spacenet_experiment.py --keep M.keras``): building IoU on the
   eastern third.

    python scripts/studies/runtimes/compare_runtimes.py    # samples + real RGB scenes, Dubai
    python scripts/studies/runtimes/compare_runtimes.py --spacenet-model spacenet.keras --skip-dubai
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import DUBAI, REAL, SAMPLES, SPACENET_LABELS, dubai_holdout, spacenet_split

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = ("tensorflow:f32", "openvino:f32", "openvino:bf16")
SCENES = (
    SAMPLES / "scene_a.tif",
    SAMPLES / "scene_b.tif",
    REAL / "landsat-rasterio" / "RGB.byte.tif",
    REAL / "inria-austin-deeposlandia" / "aerial_sample_image.tif",
    REAL / "zanzibar-drone-deeposlandia" / "tanzania_sample_image.tif",
    *sorted((DUBAI / "Tile 2" / "images").glob("*.jpg")),
)


def agreement(scenes: list[Path], model: str | None, variants: list[str], tile: int) -> None:
    """Print the share of valid pixels whose class differs from the first variant."""
    import rasterio

    from geofuse.config import SegmentConfig, TilingConfig
    from geofuse.segment import segment_scene

    ref, others = variants[0], variants[1:]
    print(f"share of valid pixels whose class differs from {ref} (tile {tile})")
    print(f"{'scene':<34} {'Mpx':>6} " + " ".join(f"{v:>15}" for v in others), flush=True)
    total_valid, total_diff = 0, dict.fromkeys(others, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for n, scene in enumerate(scenes):
            masks = {}
            for variant in variants:
                runtime, precision = variant.split(":")
                config = SegmentConfig(tiling=TilingConfig(tile=tile, runtime=runtime,
                                                           precision=precision))
                out = Path(tmp) / f"{n}_{runtime}_{precision}.tif"
                segment_scene(scene, out, model, config)
                with rasterio.open(out) as ds:
                    masks[variant] = ds.read(1)
            valid = masks[ref] != 255
            total_valid += int(valid.sum())
            cells = []
            for variant in others:
                diff = int(((masks[variant] != masks[ref]) & valid).sum())
                total_diff[variant] += diff
                cells.append(f"{100 * diff / max(int(valid.sum()), 1):>14.4f}%")
            print(f"{scene.name[:34]:<34} {valid.size / 1e6:>6.2f} " + " ".join(cells),
                  flush=True)
    print(f"{'all':<34} {total_valid / 1e6:>6.2f} " + " ".join(
        f"{100 * total_diff[v] / max(total_valid, 1):>14.4f}%" for v in others) + "\n")


def dubai(variants: list[str], tile: int) -> None:
    """Mean IoU of the embedded model on the held-out Dubai tile folder, per runtime."""
    from dataclasses import replace

    from geofuse.config import TilingConfig
    from geofuse.training.evaluate import evaluate

    print("Dubai 'Tile 2' (held out from the embedded model's training): mean IoU")
    for variant in variants:
        runtime, precision = variant.split(":")
        config = dubai_holdout(None, "Tile 2")
        config = replace(config, tiling=TilingConfig(tile=tile, runtime=runtime,
                                                     precision=precision))
        report = evaluate(config).report
        ious = " ".join(f"{k} {v['iou']:.4f}" for k, v in report["classes"].items()
                        if v["iou"] is not None)
        print(f"  {report['runtime']:<28} mean IoU {report['mean_iou']:.4f}  ({ious})",
              flush=True)
    print()


def spacenet(model: Path, variants: list[str], tile: int) -> None:
    """Building IoU of a SpaceNet model on the eastern third, per runtime."""
    from geofuse.config import TilingConfig
    from geofuse.training.config import EvaluateConfig, SceneSource
    from geofuse.training.evaluate import evaluate

    print(f"SpaceNet east third, {model.name}: building IoU")
    with tempfile.TemporaryDirectory() as tmp:
        _, east = spacenet_split(Path(tmp))
        for variant in variants:
            runtime, precision = variant.split(":")
            config = EvaluateConfig(source=SceneSource(east, SPACENET_LABELS), model=model,
                                    tiling=TilingConfig(tile=tile, runtime=runtime,
                                                        precision=precision))
            report = evaluate(config).report
            building = report["classes"]["building"]
            print(f"  {report['runtime']:<28} building IoU {building['iou']:.4f}  "
                  f"F1 {building['f1']:.4f}  mean IoU {report['mean_iou']:.4f}", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="*", type=Path, help="Scenes (default: see above).")
    parser.add_argument("--model", default=None, help="Model file (default: embedded model).")
    parser.add_argument("--runtimes", nargs="+", default=list(VARIANTS),
                        help="runtime:precision pairs; the first is the reference.")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-dubai", action="store_true")
    parser.add_argument("--spacenet-model", type=Path, default=None)
    args = parser.parse_args()
    scenes = args.scenes or [p for p in SCENES if p.exists()]
    if scenes and not args.skip_agreement:
        agreement(scenes, args.model, args.runtimes, args.tile)
    if not args.skip_dubai:
        dubai(args.runtimes, args.tile)
    if args.spacenet_model is not None:
        spacenet(args.spacenet_model, args.runtimes, args.tile)


if __name__ == "__main__":
    main()
