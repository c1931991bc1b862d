"""Benchmark ``geofuse vectorize`` on a generated mask larger than comfortable for memory.

Generates a SIZE x SIZE class mask (default 20000 x 20000) on disk, tiled and compressed,
written a band of rows at a time by ``_common.synthetic_scene`` (never whole in memory):
background 0, ~1 building (class 1) per 40 x 40 pixels, a road grid (class 2) that forms one
polygon spanning the whole scene, a few lakes (class 3) of thousands of pixels across, and a
nodata corner. Then runs the real CLI in a subprocess and prints its wall time and peak
resident memory (``getrusage`` of the child).

    python scripts/bench/bench_vectorize.py [--size 20000] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: _common
from _common import Texture, synthetic_scene


def mask_texture(size: int, seed: int = 0) -> Texture:
    """Rows of the class mask (a ``synthetic_scene`` texture): buildings, roads, lakes, nodata."""
    rng = np.random.default_rng(seed)
    n = size * size // 1600
    rows = rng.integers(0, size - 40, n)
    cols = rng.integers(0, size - 40, n)
    heights = rng.integers(6, 36, n)
    widths = rng.integers(6, 36, n)
    order = np.argsort(rows)
    rows, cols, heights, widths = rows[order], cols[order], heights[order], widths[order]
    lakes = [(rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 40, size / 12))
             for _ in range(6)]

    def render(r0: int, r1: int) -> tuple[np.ndarray, None]:
        band = np.zeros((r1 - r0, size), dtype=np.uint8)
        lo = np.searchsorted(rows, r0 - 40)
        hi = np.searchsorted(rows, r1)
        for r, c, h, w in zip(rows[lo:hi], cols[lo:hi], heights[lo:hi], widths[lo:hi],
                              strict=True):
            a, b = max(r, r0), min(r + h, r1)
            if a < b:
                band[a - r0 : b - r0, c : c + w] = 1
        yy = np.arange(r0, r1)[:, None]
        xx = np.arange(size)[None, :]
        for cx, cy, radius in lakes:
            if cy + radius < r0 or cy - radius > r1:
                continue
            band[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = 3
        band[(yy % 600 < 8) | (xx % 600 < 8)] = 2
        band[(xx + yy) < size // 10] = 255  # nodata corner
        return band[None], None

    return render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="Keep the generated files.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="geofuse-bench-vec-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mask, out = workdir / "mask.tif", workdir / "polygons.gpkg"
    t0 = time.perf_counter()
    synthetic_scene(mask, args.size, mask_texture(args.size), nodata=255,
                    tags={"GEOFUSE_CLASSES": "background,building,road,water"})
    print(f"generated {args.size}x{args.size} mask in {time.perf_counter() - t0:.1f} s "
          f"({mask.stat().st_size / 1e6:.1f} MB on disk)")
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "geofuse.cli", "vectorize", str(mask), str(out), "--quiet"],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        print(proc.stderr)
        raise SystemExit(proc.returncode)
    info = pyogrio.read_info(out)
    _, _, _, fields = pyogrio.raw.read(out, columns=["class_name"], read_geometry=False)
    names, counts = np.unique(fields[0], return_counts=True)
    per_class = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))
    print(f"vectorize: {wall:.1f} s wall, peak RSS {peak_mb:.0f} MB, "
          f"{info['features']} polygons ({per_class}), {out.stat().st_size / 1e6:.1f} MB GPKG")
    if not args.keep:
        for path in (mask, out):
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
