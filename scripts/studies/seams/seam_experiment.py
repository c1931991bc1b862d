"""Seams against compute: how tile size, overlap and blend change the output, on real scenes.

The seam metric of a tiling is the share of valid pixels whose class differs from one
whole-scene prediction (the scene fed to the model as a single tile: no seams at all), counted
away from the scene border (``BORDER`` pixels): there the reference itself differs, because
its single square tile is padded past the scene's short side (mirrored pixels), where the
tiles of a grid end on the edge (the network's zero padding). Both shares are recorded. Beside
it, the patch pixels the tiling computes per scene pixel on that scene, and (pure grid math,
no prediction) on 4096² and 8192² scenes, with the grid geofuse would use for each.

Scenes and models (each from ``../shared`` or generated, never copied into the repo):

* ``spacenet``: ``spacenet-solaris/sample_geotiff.tif`` with a SpaceNet building model
  (``--spacenet-model``, e.g. one from ``scripts/studies/training/train_recipes.py``; skipped
  without it);
* ``dubai``: the images of Dubai ``Tile 2`` (held out of the embedded model's training) with the
  embedded model;
* ``generated``: a ``--size``² scene textured from the bundled sample, with the embedded model.

One JSON file per scene and ``--label`` goes to ``runs/`` (skipped when it exists) and the
tables to ``REPORT.md``, both in this folder. ``unaligned`` marks the runs made before tiles
were aligned to the model's pooling lattice (geofuse commit in each file).

    python scripts/studies/seams/seam_experiment.py --spacenet-model WORK/spacenet-default-0/m.keras
    python scripts/studies/seams/seam_experiment.py --report-only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import REAL, git_commit, synthetic_scene, write_json_atomic

RUNS = Path(__file__).resolve().parent / "runs"
TILES = (256, 384, 512, 768, 1024)
OVERLAPS = (0, 16, 32, 64, 128)
BLENDS = ("hann", "center")
LARGE = (4096, 8192)
BORDER = 32  # pixels along the scene edges left out of the seam share


def scenes(args: argparse.Namespace, work: Path) -> dict[str, tuple[list[Path], str | None]]:
    """Scene name -> (image files, model file or None for the embedded one)."""
    found: dict[str, tuple[list[Path], str | None]] = {}
    if args.spacenet_model:
        found["spacenet"] = ([REAL / "spacenet-solaris" / "sample_geotiff.tif"],
                             args.spacenet_model)
    found["dubai"] = (sorted((REAL / "dubai-aerial-hitl" / "Tile 2" / "images").glob("*.jpg")),
                      None)
    generated = work / f"generated-{args.size}.tif"
    if not generated.exists():
        synthetic_scene(generated, args.size, "sample")
    found["generated"] = ([generated], None)
    return found


def patch_ratio(height: int, width: int, tile: int, overlap: int, multiple: int,
                fit: bool = True) -> float:
    """Patch pixels per scene pixel of the grid geofuse uses for this scene."""
    from geofuse.config import TilingConfig

    tiling = TilingConfig(tile=tile, overlap=overlap, fit=fit).for_scene(height, width,
                                                                        multiple)
    grid = tiling.grid(height, width)
    return grid.patch_pixels / (height * width)


def measure(name: str, files: list[Path], model_path: str | None, tiles: tuple[int, ...] = TILES,
            overlaps: tuple[int, ...] = OVERLAPS, blends: tuple[str, ...] = BLENDS,
            fit: bool = True) -> dict:
    """Every tile/overlap/blend on the scene's images against their whole-image prediction."""
    from geofuse.arrays import predict_array
    from geofuse.config import TilingConfig
    from geofuse.model.modelfile import load_model

    model = load_model(model_path)
    multiple = model.info.spec.arch.multiple
    images = []
    for path in files:
        with rasterio.open(path) as ds:
            images.append(ds.read())
    rows = []
    references = []
    for image in images:
        side = -(-max(image.shape[1:]) // multiple) * multiple
        references.append(predict_array(model, image, tiling=TilingConfig(
            tile=side, overlap=0, batch_size=1, runtime="tensorflow", precision="f32")).classes)
    for tile in tiles:
        for overlap in overlaps:
            for blend in blends:
                if overlap == 0 and blend == "hann":
                    continue  # no overlap to blend: the same as center
                differ = valid = differ_all = valid_all = patch = scene = 0
                fitted = set()
                started = time.perf_counter()
                for image, reference in zip(images, references, strict=True):
                    tiling = TilingConfig(tile=tile, overlap=overlap, blend=blend, fit=fit,
                                          runtime="tensorflow", precision="f32")
                    prediction = predict_array(model, image, tiling=tiling)
                    fitted.add(prediction.tiling.label)
                    ok = reference != 255
                    wrong = (prediction.classes != reference) & ok
                    differ_all += int(np.count_nonzero(wrong))
                    valid_all += int(np.count_nonzero(ok))
                    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
                    differ += int(np.count_nonzero(wrong[inner]))
                    valid += int(np.count_nonzero(ok[inner]))
                    h, w = image.shape[1:]
                    patch += patch_ratio(h, w, tile, overlap, multiple, fit) * h * w
                    scene += h * w
                rows.append({
                    "tile": tile, "overlap": overlap, "blend": blend,
                    "seam_share": differ / max(valid, 1),
                    "seam_share_with_border": differ_all / max(valid_all, 1),
                    "tiles_used": sorted(fitted),
                    "patch_per_scene_pixel": patch / scene,
                    "large_scene_patch_per_scene_pixel": {
                        str(s): patch_ratio(s, s, tile, overlap, multiple, fit) for s in LARGE},
                    "seconds": round(time.perf_counter() - started, 2),
                })
                print(f"{name} tile {tile} overlap {overlap} {blend}: "
                      f"seam {rows[-1]['seam_share']:.4%} (with the border "
                      f"{rows[-1]['seam_share_with_border']:.4%})", flush=True)
    return {"scene": name, "files": [p.name for p in files], "model": model_path or "default",
            "model_sha256": model.digest, "border": BORDER,
            "scene_pixels": sum(i.shape[1] * i.shape[2] for i in images),
            "rows": rows, "geofuse_commit": git_commit(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def report() -> str:
    """The markdown table of every result file."""
    lines = []
    for path in sorted(RUNS.glob("*.json")):
        run = json.loads(path.read_text())
        lines += [f"### {run['scene']}, {path.stem.split('-', 1)[1]} "
                  f"({run['scene_pixels'] / 1e6:.2f} Mpx, model {Path(run['model']).name})", "",
                  f"| tile | fitted | overlap | blend | seam (valid pixels {run['border']} px "
                  "inside the border) | with the border | patch px / scene px | at 4096² "
                  "| at 8192² |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in run["rows"]:
            large = r["large_scene_patch_per_scene_pixel"]
            fitted = ", ".join(map(str, r["tiles_used"]))
            lines.append(f"| {r['tile']} | {fitted} | {r['overlap']} | {r['blend']} | "
                         f"{r['seam_share']:.3%} | {r['seam_share_with_border']:.3%} | "
                         f"{r['patch_per_scene_pixel']:.3f} | "
                         f"{large['4096']:.3f} | {large['8192']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacenet-model", default=None)
    parser.add_argument("--size", type=int, default=3072, help="Generated scene side.")
    parser.add_argument("--scenes", default=None, help="Comma-separated subset.")
    parser.add_argument("--label", default="aligned", help="Name of this code's runs.")
    parser.add_argument("--tiles", type=int, nargs="+", default=list(TILES),
                        help="Nominal tiles (segment fits each to the scene).")
    parser.add_argument("--overlaps", type=int, nargs="+", default=list(OVERLAPS))
    parser.add_argument("--blends", nargs="+", default=list(BLENDS), choices=BLENDS)
    parser.add_argument("--exact-tile", action="store_true",
                        help="Keep each --tiles side as it is (segment --exact-tile).")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        RUNS.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            for name, (files, model) in scenes(args, Path(tmp)).items():
                out = RUNS / f"{name}-{args.label}.json"
                if out.exists() or (args.scenes and name not in args.scenes.split(",")):
                    continue
                write_json_atomic(out, measure(name, files, model, tuple(args.tiles),
                                               tuple(args.overlaps), tuple(args.blends),
                                               not args.exact_tile))
    table = report()
    print(table)
    doc = RUNS.parent / "REPORT.md"
    text = doc.read_text() if doc.exists() else ""
    start, end = "<!-- results -->\n", "<!-- /results -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        doc.write_text(head + start + table + "\n" + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
