"""Benchmark `geofuse batch`: scenes per minute for 1 and 2 local Dask workers.

Generates N scenes (default 8 of 1024x1024, 3-band uint8, tiled deflate GeoTIFFs: random
32-pixel blocks plus noise, ``_common.synthetic_scene``) in a temporary folder, then runs
``segment_directory`` on them once per worker count, each time into a fresh output folder. It
uses the embedded default model when ``geofuse/model/default.keras`` exists (copied first, so
a retrain meanwhile cannot change it), else a small untrained fusion U-Net built on the fly
(base filters 16, depth 3; same cost).

Printed per worker count: wall time from the call to the report (cluster start, model loads
and everything), scenes/minute over that wall time, the mean worker seconds per scene, and the
model load time. On a 2-core machine expect little gain from a second worker: both already
share the same cores, TensorFlow threads are split between them.

    python scripts/bench/bench_batch.py
    python scripts/bench/bench_batch.py --workers 1 2 4 --scenes 16 --size 512 --tile 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: _common
from _common import synthetic_scene


def get_model(folder: Path) -> tuple[Path, str]:
    """The default model (copied into ``folder``) or a freshly built small one."""
    from geofuse.model.modelfile import default_model_path

    default = default_model_path()
    if default.exists():
        return Path(shutil.copy(default, folder / "default.keras")), "embedded default"
    import keras

    from geofuse.model.modelfile import save_model
    from geofuse.model.network import build_unet
    from geofuse.model.spec import Architecture, ClassInfo, ModelInfo, ModelSpec, Normalization

    keras.utils.set_random_seed(0)
    spec = ModelSpec(bands=3, classes=5, arch=Architecture(depth=3, base_filters=16))
    info = ModelInfo(spec=spec, band_names=("red", "green", "blue"),
                     normalization=Normalization.identity(3, scale=1 / 255),
                     classes=tuple(ClassInfo(i, f"class{i}") for i in range(5)), patch_size=64)
    return save_model(build_unet(spec), info, folder / "small.keras"), "built (16 filters, depth 3)"


def main() -> None:
    """Generate the scenes, run the batches, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=None, help="default: tile / 8")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from geofuse.config import BatchConfig, SegmentConfig, TilingConfig
    from geofuse.scale.batch import available_cpus, segment_directory

    overlap = args.tile // 8 if args.overlap is None else args.overlap
    segment = SegmentConfig(tiling=TilingConfig(tile=args.tile, overlap=overlap,
                                                batch_size=args.batch_size))
    with tempfile.TemporaryDirectory(prefix="geofuse-bench-batch-") as tmp:
        folder = Path(tmp)
        scenes = folder / "scenes"
        scenes.mkdir()
        for i in range(args.scenes):
            synthetic_scene(scenes / f"scene{i:02d}.tif", args.size, "blocks", seed=i, cell=32)
        model, which = get_model(folder)
        print(f"{args.scenes} scenes of {args.size}x{args.size} px, tile {args.tile}, overlap "
              f"{overlap}, batch {args.batch_size}; model: {which}; {available_cpus()} CPUs")
        print(f"{'workers':>7} {'wall s':>8} {'scenes/min':>10} {'s/scene (worker)':>17} "
              f"{'model load s':>12}  cluster")
        for workers in args.workers:
            config = BatchConfig(segment=segment, workers=workers, resume=False)
            start = time.perf_counter()
            report = segment_directory(scenes, folder / f"out{workers}", model, config)
            wall = time.perf_counter() - start
            if report.failed:
                raise SystemExit(f"failures: {[r.error for r in report.failed]}")
            per_scene = np.mean([r.seconds for r in report.scenes])
            loads = [w["model_load_seconds"] for w in report.workers.values()]
            print(f"{workers:>7} {wall:>8.1f} {60 * args.scenes / wall:>10.2f} "
                  f"{per_scene:>17.2f} {np.mean(loads):>12.1f}  {report.cluster}")


if __name__ == "__main__":
    main()
