"""A scene coarser than the model's pixels: building IoU with ``--resample auto`` vs ``off``.

The eastern third of the SpaceNet sample (../shared/data/real/spacenet-solaris, 0.5 m,
held out by scripts/studies/training/spacenet_experiment.py) is downsampled 2x (pixel
averages: 1 m), then segmented by a SpaceNet building model trained at 0.5 m, once read at the
model's 0.5 m (``--resample auto``, the default: the output is still on the 1 m grid) and once
as it is (``--resample off``). Building IoU against the footprints rasterised on each grid;
the 0.5 m original is the reference.

    python scripts/studies/training/spacenet_experiment.py --keep spacenet.keras  # trains it
    python scripts/studies/resampling/resample_experiment.py --model spacenet.keras

A model file without a recorded pixel size (trained before models recorded it) is annotated
with ``--pixel-size`` in a temporary copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import (
    SPACENET_LABELS,
    building_scores,
    downsampled,
    figure,
    spacenet_classes,
    spacenet_split,
)
from rasterio.windows import Window

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def labels_of(scene: Path) -> tuple[np.ndarray, np.ndarray]:
    """Building labels (0/1) and validity on the grid of ``scene`` (geofuse's rasteriser)."""
    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import LabelCoding

    raster = LabelledRaster(scene, SPACENET_LABELS, LabelCoding(classes=2), spacenet_classes())
    _, valid, labels = raster.read(Window(0, 0, raster.width, raster.height))
    raster.close()
    return labels, valid & (labels < 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="A SpaceNet building model trained at 0.5 m.")
    parser.add_argument("--pixel-size", type=float, default=0.5,
                        help="Record this pixel size when the model file has none.")
    parser.add_argument("--factor", type=int, default=2, help="Downsampling factor.")
    args = parser.parse_args()

    from geofuse.config import InputConfig, SegmentConfig, TilingConfig
    from geofuse.model.modelfile import read_info, replace_info
    from geofuse.segment import segment_scene

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model
        info = read_info(model)
        if info.pixel_size is None:
            model = Path(shutil.copy(model, folder / "model.keras"))
            replace_info(model, dataclasses.replace(info, pixel_size=args.pixel_size))
        _, east = spacenet_split(folder)
        coarse = downsampled(east, folder / "east_coarse.tif", args.factor)
        print(f"model {args.model.name} (trained at {args.pixel_size:g} m); building IoU on "
              "the eastern third of the SpaceNet sample")
        print(f"{'scene':<18}{'--resample':<12}{'IoU':>8}{'F1':>8}{'prec':>8}{'recall':>8}")
        for name, scene in ((f"east {args.pixel_size:g} m", east),
                            (f"east {args.pixel_size * args.factor:g} m", coarse)):
            labels, valid = labels_of(scene)
            for mode in ("auto", "off"):
                out = folder / f"mask_{mode}.tif"
                result = segment_scene(
                    scene, out, model,
                    SegmentConfig(tiling=TilingConfig(), overwrite=True,
                                  input=InputConfig(resample=mode)),
                    notify=lambda text: print(f"  notice: {text}"))
                with rasterio.open(out) as ds:
                    pred = ds.read(1)
                    assert ds.shape == labels.shape
                scores = building_scores(labels, pred, valid & (pred != 255))
                print(f"{name:<18}{mode:<12}{figure(scores['iou'])}{figure(scores['f1'])}"
                      f"{figure(scores['precision'])}{figure(scores['recall'])}"
                      + ("   (resampled)" if result.resampled else ""), flush=True)


if __name__ == "__main__":
    main()
