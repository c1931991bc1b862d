"""The 60-line plain U-Net baseline, rebuilt, on the SpaceNet (or Inria) split.

A reference point for ``geofuse train``, outside geofuse's training loop: a plain Keras U-Net
(filters 8-16-32, two 3x3 conv + batch norm + ReLU per level), 64-px chips drawn uniformly from
the western part, batch 32, Adam 3e-3 (constant), binary cross-entropy + soft Dice on a
sigmoid output, D4 flips, each band standardised by the west's mean and standard deviation,
trained for a wall-clock budget; the eastern part is then predicted in one pass (threshold 0.5)
and scored as ``train_recipes.py`` scores geofuse (building IoU, geofuse's metrics).
Labels are read by geofuse itself (SpaceNet's vectors rasterised, Inria's 0/255 raster), as for
every other figure of these sets (``held_out_protocol`` in ``_common.py``).

One result file per run in ``runs/baseline/`` of this study (finished runs are skipped):

    python scripts/studies/training/baseline_unet.py --set spacenet --seeds 0,1,2 --budget 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import (
    building_scores,
    git_commit,
    held_out_protocol,
    spacenet_classes,
    write_json_atomic,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RUNS = Path(__file__).resolve().parent / "runs" / "baseline"


def unet(bands: int, filters: tuple[int, ...] = (8, 16, 32)):
    """A plain U-Net with a one-channel sigmoid output."""
    import keras
    from keras import layers

    def block(x, f):
        for _ in range(2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        return x

    inputs = keras.Input((None, None, bands))
    x, skips = inputs, []
    for f in filters[:-1]:
        x = block(x, f)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, filters[-1])
    for f, skip in zip(reversed(filters[:-1]), reversed(skips), strict=True):
        x = layers.Conv2DTranspose(f, 2, strides=2)(x)
        x = block(layers.Concatenate()([x, skip]), f)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def bce_dice(y_true, y_pred):
    """Binary cross-entropy + (1 - soft Dice) over the labelled pixels (weight channel 1)."""
    import tensorflow as tf

    y, w = y_true[..., :1], y_true[..., 1:]
    p = tf.clip_by_value(y_pred, 1e-7, 1 - 1e-7)
    bce = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    bce = tf.reduce_sum(bce * w) / tf.maximum(tf.reduce_sum(w), 1.0)
    dice = (2 * tf.reduce_sum(p * y * w) + 1) / (tf.reduce_sum((p + y) * w) + 1)
    return bce + 1 - dice


def chips(image, target, rng, count: int, size: int):
    """``count`` random chips (uniform positions, random D4 transform) of image and target."""
    h, w = image.shape[:2]
    xs, ys = [], []
    for _ in range(count):
        r, c = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        x, y = image[r:r + size, c:c + size], target[r:r + size, c:c + size]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.integers(2):
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys)


def labelled(source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``(h, w, bands)``, building labels 0/1 and the scored pixels of a scene source."""
    from rasterio.windows import Window

    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import LabelCoding

    coding = LabelCoding(classes=2, values=(0, 255)) if source.labels.suffix == ".tif" \
        else LabelCoding(classes=2)
    raster = LabelledRaster(source.scene, source.labels, coding, spacenet_classes())
    data, valid, labels = raster.read(Window(0, 0, raster.width, raster.height))
    raster.close()
    keep = valid & (labels < 2)
    return (np.moveaxis(data, 0, -1).astype(np.float64), np.where(keep, labels, 0)
            .astype(np.float32), keep)


def run(dataset: str, seed: int, budget: float, work: Path) -> dict:
    """Train one seed for ``budget`` seconds and score the east."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    protocol = held_out_protocol(dataset, work, work / "unused.keras")
    values, labels, keep = labelled(protocol.sources[0])
    mean, std = values[keep].mean(axis=0), values[keep].std(axis=0)
    image = ((values - mean) / std).astype(np.float32)
    target = np.stack([labels, keep.astype(np.float32)], axis=-1)

    model = unet(image.shape[-1])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=bce_dice)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        x, y = chips(image, target, rng, 32, 64)
        model.train_on_batch(x, y)
        steps += 1
    seconds = time.perf_counter() - start

    values, labels, keep = labelled(protocol.evaluation.source)
    x = ((values - mean) / std).astype(np.float32)[None]
    prob = model.predict(x, verbose=0)[0, ..., 0]
    scores = building_scores(labels.astype(np.uint8), (prob > 0.5).astype(np.uint8), keep)
    return {"set": dataset, "seed": seed, "budget_s": budget, "train_seconds": round(seconds, 1),
            "steps": steps, "building": scores, "geofuse_commit": git_commit(),
            "loadavg_end": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="spacenet", choices=("spacenet", "inria"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds")
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="baseline-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            out = RUNS / f"{args.set}-{args.budget:.0f}-{seed}.json"
            if out.exists():
                print(f"{out.name}: done, skipped")
                continue
            result = run(args.set, seed, args.budget, Path(tmp))
            write_json_atomic(out, result)
            print(f"{out.name}: building IoU {result['building']['iou']:.3f} "
                  f"({result['steps']} steps)", flush=True)
            print(json.dumps(result["building"]))


if __name__ == "__main__":
    main()
