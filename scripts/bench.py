"""Benchmark `segment_scene`: end-to-end vs model-only throughput, and peak memory.

For each scene size it generates a 3-band uint8 GeoTIFF (tiled, deflate; textured from the
bundled sample scene), then, each in a fresh process so peak RSS is its own:

* **end-to-end**: ``segment_scene`` with a warmed-up predictor (read, normalise, predict,
  stitch, write, COG conversion);
* **model-only**: the same predictor on the scene's first batches (read and normalised
  beforehand), timed just before and just after the end-to-end run and scaled to its batch
  count.

It prints Mpx/s for both, their ratio (model-only time / end-to-end time for the same patches;
1.0 means the pipeline adds nothing), patch pixels / scene pixels, and the peak RSS of each
end-to-end run, plus the ratio of the largest to the smallest scene's peak RSS.

    python scripts/bench.py                   # 2048 and 8192, default model
    python scripts/bench.py --sizes 1024 2048 --tile 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb, synthetic_scene


def run_child(scene: str, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, __file__, "--child", "--scene", scene, "--tile", str(args.tile),
           "--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
    if args.model:
        cmd += ["--model", args.model]
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        sys.exit(f"bench run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(args: argparse.Namespace) -> None:
    """End-to-end segmentation, bracketed by model-only timings of the same batch shape.

    The model-only time per batch is sampled just before and just after the end-to-end run
    (so both see the same machine load) and scaled to the end-to-end run's batch count.
    """
    import rasterio

    from geofuse.config import SegmentConfig, TilingConfig
    from geofuse.model import load_model
    from geofuse.segment import make_predictor, segment_scene
    from geofuse.tiling import SceneReader, batched, stack_batch
    from geofuse.windows import TileGrid

    loaded = load_model(args.model)
    bands = loaded.info.spec.bands
    predict = make_predictor(loaded.model, args.batch_size, args.tile, bands)
    with rasterio.open(args.scene) as ds:
        grid = TileGrid(ds.height, ds.width, args.tile, args.overlap)
    n_batches = -(-len(grid) // args.batch_size)
    sample = min(n_batches, 8)
    # model-only inputs: the scene's own first patches, normalised as segment_scene does
    with SceneReader(args.scene, normalization=loaded.info.normalization) as reader:
        patches = reader.patches(grid, grid.tiles[: sample * args.batch_size])
        inputs = [stack_batch(b, args.batch_size) for b in batched(patches, args.batch_size)]
    predict(inputs[0])  # trace once, outside the timings

    def model_only() -> float:
        start = time.perf_counter()
        for x in inputs:
            predict(x)
        return (time.perf_counter() - start) / len(inputs)

    before = model_only()
    config = SegmentConfig(tiling=TilingConfig(tile=args.tile, overlap=args.overlap,
                                               batch_size=args.batch_size))
    with tempfile.TemporaryDirectory(dir=Path(args.scene).parent) as tmp:
        start = time.perf_counter()
        segment_scene(args.scene, Path(tmp) / "mask.tif", loaded, config, predictor=predict)
        e2e = time.perf_counter() - start
    peak = peak_rss_mb()
    after = model_only()
    print(json.dumps({"e2e_seconds": e2e, "model_seconds": (before + after) / 2 * n_batches,
                      "tiles": len(grid), "batches": n_batches,
                      "scene_px": grid.height * grid.width, "patch_px": grid.patch_pixels,
                      "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", default=None, help="Model file (default: embedded model).")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"geofuse bench: tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}, "
          f"model {args.model or 'embedded default'}, {os.cpu_count()} CPUs")
    header = (f"{'scene':>11} {'tiles':>6} {'patch/scene':>11} {'e2e Mpx/s':>10} "
              f"{'(patch)':>8} {'model Mpx/s':>12} {'ratio':>6} {'peak RSS MB':>12}")
    print(header)
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            scene = Path(tmp) / f"scene_{size}.tif"
            synthetic_scene(scene, size, "sample")
            e2e = run_child(str(scene), args)
            scene.unlink()
            scene_mpx, patch_mpx = e2e["scene_px"] / 1e6, e2e["patch_px"] / 1e6
            peaks.append(e2e["peak_rss_mb"])
            print(f"{size:>5}x{size:<5} {e2e['tiles']:>6} {patch_mpx / scene_mpx:>11.2f} "
                  f"{scene_mpx / e2e['e2e_seconds']:>10.2f} {patch_mpx / e2e['e2e_seconds']:>8.2f} "
                  f"{patch_mpx / e2e['model_seconds']:>12.2f} "
                  f"{e2e['model_seconds'] / e2e['e2e_seconds']:>6.2f} "
                  f"{e2e['peak_rss_mb']:>12.0f}",
                  flush=True)
    if len(peaks) > 1:
        print(f"peak RSS largest/smallest scene: {peaks[-1] / peaks[0]:.2f}x")
    print("ratio = model-only seconds / end-to-end seconds on the same patches (goal >= 0.90)")


if __name__ == "__main__":
    main()
