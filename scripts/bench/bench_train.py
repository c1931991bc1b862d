"""Is the training input pipeline the bottleneck? Step time with chips read from GeoTIFFs
(on the fly, as `geofuse train` does) versus the same chips already held in memory.

It writes a tiled, deflate-compressed RGB GeoTIFF scene with a label raster, draws one table of
random chips (with augmentation), and times the same compiled training step fed by

  * disk:   geofuse.training.chipfeed.ChipFeed -> GeoTIFF window reads + augmentation in
            Python threads, handed to tf.data through a queue
  * memory: the identical batches, precomputed into arrays (tf.data from_tensor_slices)
  * cached: the rasters held as arrays (``--cache auto`` up to CACHE_AUTO_BYTES of data), chips
    sliced, augmented and batched by the same pipeline as disk
  * numpy_function: the pipeline of `geofuse train` before the chip feed: the tables from a
    Python generator (``Dataset.from_generator``), the same reads run by
    ``tf.numpy_function`` inside ``Dataset.map`` (Python in tf.data's threads); measured
    last, since it may slow the process's later steps too

plus the pipeline alone (no model). Goal: disk / memory <= 1.15.

    nice -n 10 python scripts/bench/bench_train.py [--size 4096 --steps 60 --batch-size 16 \\
        --patch 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: _common
from _common import synthetic_scene

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: geofuse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from geofuse.model.network import build_unet
    from geofuse.model.spec import Architecture, ClassInfo, ModelSpec, Normalization
    from geofuse.training.chipfeed import ChipFeed
    from geofuse.training.chips import Augmentation, ChipLoader
    from geofuse.training.config import CACHE_AUTO_BYTES
    from geofuse.training.datasets import (
        LabelledRaster,
        band_scale,
        make_units,
        normalisation_stats,
        scan,
    )
    from geofuse.training.labels import LabelCoding
    from geofuse.training.losses import SegmentationLoss

    classes = tuple(ClassInfo(i, f"c{i}") for i in range(5))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        scene, labels = Path(tmp) / "scene.tif", Path(tmp) / "labels.tif"
        synthetic_scene(scene, args.size, "blocks", labels=labels, block=256)
        raster = LabelledRaster(scene, labels, LabelCoding(classes=5), classes)
        units = make_units([raster], ["scene"], 512)
        scan([raster], units, 5, band_scale("uint8"))
        mean, std = normalisation_stats(units)
        norm = Normalization(mean, std, scale=1 / 255)
        loader = ChipLoader([raster], units, args.patch, norm, Augmentation(augment=True))
        n = (args.steps + 5) * args.batch_size
        rows = loader.epoch_rows(0, n)

        keras.utils.set_random_seed(0)
        model = build_unet(ModelSpec(bands=3, classes=5, arch=Architecture(
            depth=args.depth, base_filters=args.filters)))
        model.compile(keras.optimizers.Adam(1e-3), SegmentationLoss(5))

        def feed(chips: ChipLoader) -> ChipFeed:
            return ChipFeed(chips, [rows], args.batch_size, args.workers)

        def numpy_function_pipeline(chips: ChipLoader) -> object:
            """The tf.data pipeline `geofuse train` used before the chip feed (epoch_dataset)."""
            p, b = chips.patch, chips.bands

            def read(r: object) -> tuple[object, object]:
                x, y = tf.numpy_function(chips.load, [r], [tf.float32, tf.uint8],
                                         stateful=False)
                x.set_shape((None, p, p, b))
                y.set_shape((None, p, p))
                return x, y

            ds = tf.data.Dataset.from_generator(
                lambda: iter([rows]), output_signature=tf.TensorSpec(rows.shape, tf.int64))
            ds = ds.unbatch().batch(args.batch_size, drop_remainder=True)
            return ds.map(read, num_parallel_calls=args.workers,
                          deterministic=True).prefetch(2)

        # pipeline alone
        t = time.perf_counter()
        with feed(loader) as alone:
            for _ in alone.dataset():
                pass
        pipeline = (time.perf_counter() - t) / (n // args.batch_size)

        # the same batches in memory
        t = time.perf_counter()
        xs, ys = loader.load(rows)
        load_all = time.perf_counter() - t
        memory = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(
            args.batch_size, drop_remainder=True).prefetch(2)
        # what `geofuse train --cache auto` does with data sets up to CACHE_AUTO_BYTES: the
        # rasters held as arrays, chips sliced, augmented and batched by the same pipeline
        held = LabelledRaster(scene, labels, LabelCoding(classes=5), classes)
        held.load()
        held_loader = ChipLoader([held], units, args.patch, norm, Augmentation(augment=True))

        def timed(ds: object) -> float:
            stamps: list[float] = []
            cb = keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda b, logs: stamps.append(time.perf_counter()))
            model.fit(ds, epochs=1, steps_per_epoch=args.steps + 5, verbose=0,
                      callbacks=[cb], shuffle=False)
            steps = np.diff(stamps[4:])  # skip warm-up steps
            return float(np.median(steps)), float(np.mean(steps))

        timed(memory)  # trace once
        results: dict[str, list[tuple[float, float]]] = {}
        for _ in range(2):
            results.setdefault("memory", []).append(timed(memory))
            with feed(loader) as disk:
                results.setdefault("disk", []).append(timed(disk.dataset()))
            with feed(held_loader) as cached:
                results.setdefault("cached", []).append(timed(cached.dataset()))
        # last: once Python has run in tf.data's threads, later steps are slow as well
        results["numpy_function"] = [timed(numpy_function_pipeline(held_loader))]
        results["memory after"] = [timed(memory)]
        raster.close()

    mem = np.mean([r[1] for r in results["memory"]])
    dsk = np.mean([r[1] for r in results["disk"]])
    mpx = args.batch_size * args.patch**2 / 1e6
    print(f"scene {args.size}x{args.size} GeoTIFF (tiled 256, deflate), chips {args.patch} px, "
          f"batch {args.batch_size}, model depth {args.depth} / {args.filters} filters, "
          f"{args.workers} parallel reads, {args.steps} timed steps x 2 rounds")
    print(f"pipeline alone (read + augment): {pipeline * 1e3:7.1f} ms/batch "
          f"({mpx / pipeline:.1f} Mpx/s); loading all {n} chips up front took {load_all:.1f} s")
    print(f"train step, chips in memory    : {mem * 1e3:7.1f} ms/step "
          f"(median {np.mean([r[0] for r in results['memory']]) * 1e3:.1f})")
    print(f"train step, chips from GeoTIFF : {dsk * 1e3:7.1f} ms/step "
          f"(median {np.mean([r[0] for r in results['disk']]) * 1e3:.1f})")
    cch = np.mean([r[1] for r in results["cached"]])
    print(f"train step, rasters held (auto): {cch * 1e3:7.1f} ms/step "
          f"(median {np.mean([r[0] for r in results['cached']]) * 1e3:.1f})")
    npf = np.mean([r[1] for r in results["numpy_function"]])
    after = np.mean([r[1] for r in results["memory after"]])
    print(f"train step, numpy_function (old): {npf * 1e3:6.1f} ms/step, rasters held; "
          f"then chips in memory again: {after * 1e3:.1f} ms/step")
    print(f"ratio disk / memory            : {dsk / mem:.3f} (goal <= 1.15)")
    print(f"ratio held rasters / memory    : {cch / mem:.3f} (--cache auto up to "
          f"{CACHE_AUTO_BYTES >> 30} GiB of data)")
    print(f"ratio numpy_function / held    : {npf / cch:.3f} (the pipeline before the chip feed)")


if __name__ == "__main__":
    main()
