"""Compare the fusion modes on two real sets and write docs/fusion.md (issue 6, "Compare").

Every mode is trained with ``geofuse.training.train.train`` under the same settings, seeds and data
splits, then scored on held-out data with ``geofuse.training.evaluate.evaluate`` (the real inference
path):

* **spacenet**: ``shared/data/real/spacenet-solaris/sample_geotiff.tif`` (0.5 m panchromatic) with
  ``geotiff_labels.geojson`` (buildings): train on the western two thirds of the columns, score
  building IoU/F1 and the seam metric on the eastern third (the split of the training issue);
* **dubai**: ``shared/data/real/dubai-aerial-hitl`` (RGB, colour-coded masks, 5 classes read
  through data_samples/classes.json; "Unlabeled" and black ignored): train on every tile folder
  but ``--holdout``, score per-class IoU/F1 on it.

Parameter budget: with ``--match-params`` (default) each mode's ``fusion_width`` is chosen from
``WIDTHS`` so that its parameter count is closest to the plain U-Net's (``none``) at the same
depth and base filters. Cost: each mode's trained model (first seed, Dubai) segments the same
2048 x 2048 RGB scene in a fresh process; the script records Mpx/s (second run, after tracing)
and peak RSS.

Each run's result is stored as JSON under ``--work`` and reused on the next call, so the study
can be run in pieces (``--sets``, ``--modes``, ``--seeds``) and ``--report-only`` rebuilds the
document from what is there (``--no-train``: measure the cost of the stored runs, then report).
Every stored run records its settings; runs made with other settings stop the report. Seeds are
the outer loop, so an interrupted study still has every mode on the same seeds. Settings are
fixed up front; nothing is tuned on the held-out data.

docs/fusion.md (about 30 min on a shared 2-core CPU; see the document for the rationale):

    nice -n 5 python scripts/compare_fusion.py --work /tmp/gf-fusion --epochs 2 --steps 25 \
        --batch-size 8 --patience 2 --no-match-params

    nice -n 10 python scripts/compare_fusion.py --sets spacenet --modes none --seeds 0
    nice -n 10 python scripts/compare_fusion.py               # everything (hours on 2 CPUs)
    python scripts/compare_fusion.py --report-only
    python scripts/compare_fusion.py --quick --out /tmp/fusion.md   # smoke run, minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    ROOT,
    SPACENET_LABELS,
    SPACENET_VAL_BLOCK,
    dubai_coding,
    dubai_holdout,
    dubai_training,
    peak_rss_mb,
    spacenet_classes,
    spacenet_split,
    synthetic_scene,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ["none", "concat", "weighted", "attention", "cross_attention"]
SETS = ["spacenet", "dubai"]
WIDTHS = [8, 12, 16, 20, 24, 32, 40, 48]


# -- one run -----------------------------------------------------------------------------------


def param_count(mode: str, bands: int, classes: int, args: argparse.Namespace,
                width: int | None) -> int:
    """Parameters of the network for ``mode`` (untrained; the count does not depend on data)."""
    from geofuse.config import Architecture, ModelSpec
    from geofuse.model import build_unet

    spec = ModelSpec(bands=bands, classes=classes, arch=Architecture(
        depth=args.depth, base_filters=args.filters, fusion=mode, fusion_width=width))
    return build_unet(spec).count_params()


def matched_width(mode: str, bands: int, classes: int, args: argparse.Namespace) -> int | None:
    """The fusion width giving ``mode`` the parameter count closest to the plain U-Net's."""
    if mode == "none" or not args.match_params:
        return None
    target = param_count("none", bands, classes, args, None)
    return min(WIDTHS, key=lambda w: abs(param_count(mode, bands, classes, args, w) - target))


def train_and_score(name: str, mode: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one mode on one set with one seed and score it on the held-out part."""
    from geofuse.config import Architecture, TilingConfig
    from geofuse.model import load_model
    from geofuse.training.config import LabelOptions
    from geofuse.training.evaluate import EvaluateConfig, evaluate
    from geofuse.training.train import SceneSource, TrainConfig, train

    run = args.work / name / f"{mode}_seed{seed}"
    if name == "spacenet":
        west, east = spacenet_split(args.work)
        classes = spacenet_classes()
        sources: tuple = (SceneSource(west, SPACENET_LABELS),)
        bands = 1
    else:
        classes, _ = dubai_coding()
        sources = (dubai_training(args.holdout),)
        bands = 3
    width = matched_width(mode, bands, len(classes), args)
    config = TrainConfig(
        sources=sources, out=run / "model.keras", run_dir=run / "train",
        labels=LabelOptions(classes=classes), arch=Architecture(
            depth=args.depth, base_filters=args.filters, fusion=mode, fusion_width=width),
        patch=args.patch, batch_size=args.batch_size, epochs=args.epochs,
        steps_per_epoch=args.steps, learning_rate=args.lr, val_fraction=0.15,
        patience=args.patience, seed=seed, overwrite=True,
        val_block=SPACENET_VAL_BLOCK if name == "spacenet" else None,
    )
    result = train(config)
    tiling = TilingConfig(tile=args.tile, overlap=args.overlap, batch_size=4)
    if name == "spacenet":
        evaluation = evaluate(EvaluateConfig(
            source=SceneSource(east, SPACENET_LABELS), model=config.out, tiling=tiling,
            seam_width=8))
    else:
        evaluation = evaluate(dubai_holdout(config.out, args.holdout, tiling=tiling))
    report = evaluation.report
    return {
        "set": name, "mode": mode, "seed": seed, "fusion_width": width,
        "settings": settings(args),
        "params": load_model(config.out).model.count_params(),
        "train_seconds": round(result.seconds, 1), "epochs": result.epochs,
        "best_epoch": result.best_epoch, "model": str(config.out),
        "mean_iou": report["mean_iou"],
        "classes": {k: {"iou": v["iou"], "f1": v["f1"]} for k, v in report["classes"].items()},
        "seams": report.get("seams"),
    }


def settings(args: argparse.Namespace) -> dict:
    """The settings a stored run must share with the current call to be reported with it."""
    keys = ("holdout", "depth", "filters", "patch", "batch_size", "epochs", "steps", "lr",
            "patience", "tile", "overlap", "match_params")
    return {k: getattr(args, k) for k in keys}


# -- cost --------------------------------------------------------------------------------------


def cost_scene(work: Path) -> Path:
    """A 2048 x 2048 RGB GeoTIFF (the bench scene), shared by every mode's cost measurement."""
    path = work / "cost_scene_2048.tif"
    if not path.exists():
        synthetic_scene(path, 2048, "sample")
    return path


def measure_child(model: str, scene: str, tile: int, overlap: int) -> None:
    """Segment ``scene`` twice (the first run traces); print Mpx/s of the second and peak RSS."""
    from geofuse.config import SegmentConfig, TilingConfig
    from geofuse.model import load_model
    from geofuse.segment import make_predictor, segment_scene

    loaded = load_model(model)
    config = SegmentConfig(tiling=TilingConfig(tile=tile, overlap=overlap, batch_size=4),
                           overwrite=True)
    predictor = make_predictor(loaded.model, 4, tile, loaded.info.spec.bands)
    out = Path(scene).with_name(f".cost_{os.getpid()}.tif")
    segment_scene(scene, out, loaded, config, predictor=predictor)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = segment_scene(scene, out, loaded, config, predictor=predictor)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    out.unlink(missing_ok=True)
    print(json.dumps({"mpx_s": result.megapixels / seconds,
                      "cpu_s_per_mpx": cpu / result.megapixels, "peak_rss_mb": peak_rss_mb()}))


def measure(model: str, scene: Path, args: argparse.Namespace) -> dict:
    """Run :func:`measure_child` in a fresh interpreter (so peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--measure", model, str(scene), "--tile", str(args.tile),
           "--overlap", str(args.overlap)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"cost measurement failed for {model}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """``mean ± sd (n)`` of the non-missing values."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({len(values)})"


def write_report(results: list[dict], costs: dict[str, dict], args: argparse.Namespace,
                 command: str) -> None:
    """Write the markdown document from every stored result."""
    lines = [
        "# Fusion modes compared",
        "",
        "Produced by `scripts/compare_fusion.py` (do not edit by hand), from the repository "
        "root. Command that wrote this document:",
        "",
        f"    {command}",
        "",
    ]
    trained_by = sorted({r["command"] for r in results if r.get("command")} - {command})
    if trained_by:
        lines += ["The runs it reports were trained by:", ""]
        lines += [f"    {c}" for c in trained_by] + [""]
    lines += [
        f"Settings: depth {args.depth}, base filters {args.filters}, patch {args.patch}, "
        f"batch {args.batch_size}, {args.epochs} epochs x {args.steps} steps, lr {args.lr}, "
        f"patience {args.patience}; inference tile {args.tile}, overlap {args.overlap}. "
        "Each cell: mean ± standard deviation over seeds (number of seeds).",
        "",
    ]
    expected = len(args.sets) * len(args.modes) * len(args.seeds)
    if len(results) < expected:
        lines += [f"**PARTIAL: {len(results)} of {expected} runs completed** "
                  "(cells show how many seeds each figure rests on).", ""]
    lines += budget_lines(results, costs, args)
    for name in SETS:
        runs = [r for r in results if r["set"] == name]
        if not runs:
            continue
        class_names = list(runs[0]["classes"])
        if name == "spacenet":
            class_names = ["building"]
            lines += ["## SpaceNet buildings (train west 2/3, score east 1/3)", "",
                      "Seam metric: pixel accuracy within 8 px of an interior tile boundary "
                      "of the inference grid (seam) and elsewhere (interior) on the eastern "
                      "third; a seam that blends well scores like the interior."
                      + seam_note(runs), ""]
        else:
            lines += [f"## Dubai land cover (held out: {args.holdout})", "",
                      "Trained on every other tile folder; the held-out tile's 9 images "
                      "are scored one by one (tile mode). Class colours are those measured "
                      "in the masks (data_samples/classes.json, see the set's PROVENANCE.md; "
                      "the dataset's own classes.json colours are wrong); Unlabeled "
                      "(#9B9B9B) and black pixels are ignored. `evaluate` computes "
                      "the seam metric for scenes only, so it is reported for SpaceNet.", ""]
        header = ["mode", "fusion width", "params", "train min", "mean IoU"]
        header += [f"IoU {c}" for c in class_names] + [f"F1 {c}" for c in class_names]
        if name == "spacenet":
            header += ["seam accuracy", "interior accuracy"]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for mode in MODES:
            rows = [r for r in runs if r["mode"] == mode]
            if not rows:
                continue
            width = rows[0]["fusion_width"] or (args.filters if mode != "none" else None)
            cells = [mode, str(width or "-"), f"{rows[0]['params']:,}",
                     f"{statistics.mean(r['train_seconds'] for r in rows) / 60:.1f}",
                     spread([r["mean_iou"] for r in rows])]
            cells += [spread([r["classes"][c]["iou"] for r in rows]) for c in class_names]
            cells += [spread([r["classes"][c]["f1"] for r in rows]) for c in class_names]
            if name == "spacenet":
                cells += [spread([r["seams"]["seam"]["accuracy"] for r in rows if r["seams"]]),
                          spread([r["seams"]["interior"]["accuracy"] for r in rows
                                  if r["seams"]])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if costs:
        lines += [f"## Cost (same 2048 x 2048 RGB scene, tile {args.tile}, batch 4, "
                  f"{os.cpu_count()} CPUs; best of {args.cost_rounds} interleaved runs)", "",
                  "Each mode's seed-0 Dubai model segments the same synthetic 2048 x 2048 RGB "
                  "GeoTIFF (scripts/_common.py synthetic_scene, sample texture) through "
                  "`segment_scene`, in a fresh process per measurement: Mpx/s of the second "
                  "pass (the first traces), CPU seconds per Mpx over all threads (less "
                  "sensitive to other jobs on the machine than wall time), peak RSS = VmHWM "
                  "of that process (TensorFlow included).", "",
                  "| mode | params | Mpx/s | time / none | CPU s/Mpx | CPU / none | peak RSS MB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        base = costs.get("none")
        for mode in MODES:
            if mode in costs:
                c = costs[mode]
                ratio = f"{base['mpx_s'] / c['mpx_s']:.2f}" if base else "-"
                cpu_ratio = f"{c['cpu_s_per_mpx'] / base['cpu_s_per_mpx']:.2f}" if base else "-"
                lines.append(f"| {mode} | {c['params']:,} | {c['mpx_s']:.2f} | {ratio} | "
                             f"{c['cpu_s_per_mpx']:.2f} | {cpu_ratio} | "
                             f"{c['peak_rss_mb']:.0f} |")
        lines.append("")
        lines += goal_lines(results, costs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


def seam_note(runs: list[dict]) -> str:
    """Why the seam figure is accuracy: say so when the seam band holds no building labels."""
    seams = [r["seams"] for r in runs if r.get("seams")]
    if any(s["seam"]["iou"].get("building") is None for s in seams):
        return (f" The seam band ({seams[0]['seam']['pixels']:,} px) holds no building pixels "
                "in the labels, so building IoU is undefined there and mean IoU over the band "
                "flips between 0.5 and 1.0 on a single false positive; accuracy is reported "
                "instead (1 - the false-positive share in the band; the column was switched "
                "from mean IoU to accuracy after the first runs showed this).")
    return ""


def budget_lines(results: list[dict], costs: dict[str, dict],
                 args: argparse.Namespace) -> list[str]:
    """The training budget, the parameter-budget rule and what the figures can tell."""
    if not results:
        return []
    run_s = [r.get("run_seconds", r["train_seconds"]) for r in results]
    train_s = [r["train_seconds"] for r in results]
    seeds = sorted({r["seed"] for r in results})
    lines = [
        f"**Training budget.** Every run: {args.epochs * args.steps} optimiser steps "
        f"({args.epochs} epochs x {args.steps} steps) of batch {args.batch_size} "
        f"{args.patch} x {args.patch} px chips, learning rate {args.lr}; the weights of the "
        "epoch with the best validation score are kept (15 % of the training units, "
        "spatially separate, chosen by the seed). "
        f"Training took {min(train_s) / 60:.1f}-{max(train_s) / 60:.1f} min per run "
        f"(mean {statistics.mean(train_s) / 60:.1f}), training plus scoring "
        f"{statistics.mean(run_s) / 60:.1f} min on average, on a shared {os.cpu_count()}-core "
        "CPU with other jobs running; the "
        f"{len(results)} runs took {sum(run_s) / 60:.0f} min in all"
        + (f", the cost measurement {costs['_seconds'] / 60:.1f} min" if "_seconds" in costs
           else "") + ". "
        "This is a very short budget: the models are far from converged, so the table ranks "
        "how fast each mode learns under it rather than what it can reach; differences "
        "smaller than the spread over seeds are noise.",
        "",
        f"**Same conditions.** Every mode is trained with the seeds {seeds}; for a given seed "
        "each mode gets the same weight-initialisation seed, the same validation split and "
        "the same chip sampler, and is scored on the same held-out data with the same tiling. "
        "The settings were fixed before any run and not changed after seeing results.",
        "",
    ]
    if args.match_params:
        lines += ["**Parameter budget.** Each fusion mode's fusion width was chosen from "
                  f"{WIDTHS} to bring its parameter count closest to the plain U-Net's.", ""]
    else:
        lines += [
            "**Parameter budget.** Every mode uses the same depth, base filters and fusion "
            f"width (the default, = base filters = {args.filters}); no per-mode widening "
            "(`--no-match-params`). At these settings every fusion mode already has a "
            "similar but *smaller* parameter count than the plain U-Net (see the params "
            "column), so a fusion mode cannot win by having more parameters. Widening the "
            "fusion width to match the U-Net exactly (`--match-params`) would change each "
            "mode's architecture by a different amount and inflate the attention modes' "
            "compute (attention cost grows with the width), mixing a capacity change into "
            "both the accuracy and the cost comparison.",
            ""]
    return lines


def goal_lines(results: list[dict], costs: dict[str, dict]) -> list[str]:
    """Whether the best fusion mode costs at most 1.5x the plain U-Net's inference time."""
    scores = {}
    for mode in MODES:
        if mode == "none" or mode not in costs:
            continue
        per_set = [statistics.mean(r["mean_iou"] for r in results
                                   if r["set"] == s and r["mode"] == mode)
                   for s in SETS if any(r["set"] == s and r["mode"] == mode for r in results)]
        if per_set:
            scores[mode] = statistics.mean(per_set)
    if not scores or "none" not in costs:
        return []
    best = max(scores, key=scores.get)
    per_set = [statistics.mean(r["mean_iou"] for r in results
                               if r["set"] == s and r["mode"] == "none")
               for s in SETS if any(r["set"] == s and r["mode"] == "none" for r in results)]
    baseline = (f" (plain U-Net: {statistics.mean(per_set):.3f}; compare with the spreads "
                "in the tables before reading anything into the ranking)") if per_set else ""
    ratio = costs["none"]["mpx_s"] / costs[best]["mpx_s"]
    cpu_ratio = costs[best]["cpu_s_per_mpx"] / costs["none"]["cpu_s_per_mpx"]
    verdict = "holds" if ratio <= 1.5 else "does not hold"
    modes = [m for m in MODES if m != "none" and m in costs]
    slowest = max(modes, key=lambda m: costs["none"]["mpx_s"] / costs[m]["mpx_s"])
    slow_ratio = costs["none"]["mpx_s"] / costs[slowest]["mpx_s"]
    return [f"Best fusion mode by mean IoU averaged over the sets: **{best}** "
            f"({scores[best]:.3f}){baseline}. Its inference time is {ratio:.2f}x the plain U-Net's "
            f"(CPU time {cpu_ratio:.2f}x): the goal of at most 1.5x {verdict}. "
            f"The slowest fusion mode, {slowest}, takes {slow_ratio:.2f}x the plain U-Net's "
            "time (the goal "
            f"{'holds' if slow_ratio <= 1.5 else 'does not hold'} for every mode).", ""]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        model, scene = sys.argv[2], sys.argv[3]
        rest = argparse.ArgumentParser()
        rest.add_argument("--tile", type=int)
        rest.add_argument("--overlap", type=int)
        opts = rest.parse_args(sys.argv[4:])
        measure_child(model, scene, opts.tile, opts.overlap)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=None,
                        help="results folder (default /tmp/geofuse-compare[-quick])")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "fusion.md")
    parser.add_argument("--holdout", default="Tile 2")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--match-params", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--no-cost", action="store_true", help="skip the cost measurement")
    parser.add_argument("--cost-rounds", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: measure the cost of the stored runs and report")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch x 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.steps, args.seeds = 1, 3, args.seeds[:1]
    if args.work is None:
        args.work = Path("/tmp/geofuse-compare" + ("-quick" if args.quick else ""))
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python scripts/compare_fusion.py " + " ".join(sys.argv[1:])

    if not (args.report_only or args.no_train):
        # Seed outermost: an interrupted study still has every mode on the same seeds.
        for seed in args.seeds:
            for name in args.sets:
                for mode in args.modes:
                    path = args.work / name / f"{mode}_seed{seed}.json"
                    if path.exists():
                        continue
                    start = time.perf_counter()
                    record = train_and_score(name, mode, seed, args)
                    record["run_seconds"] = round(time.perf_counter() - start, 1)
                    record["command"] = command
                    path.write_text(json.dumps(record, indent=2))
                    print(f"{name} {mode} seed {seed}: mean IoU {record['mean_iou']:.3f} "
                          f"({time.perf_counter() - start:.0f} s)", flush=True)
    results = [json.loads(p.read_text()) for p in sorted(args.work.glob("*/*_seed*.json"))]
    stale = [r for r in results if r.get("settings") != settings(args)]
    if stale:
        sys.exit(f"{len(stale)} stored runs in {args.work} were made with other settings "
                 f"(e.g. {stale[0]['set']} {stale[0]['mode']} seed {stale[0]['seed']}): "
                 "use another --work folder or the same settings")
    costs_path = args.work / "costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.exists() else {}
    if not args.no_cost and not args.report_only:
        scene = cost_scene(args.work)
        models = {}
        for mode in MODES:
            runs = sorted((r for r in results if r["set"] == "dubai" and r["mode"] == mode),
                          key=lambda r: r["seed"])
            if mode not in costs and runs:
                models[mode] = runs[0]
        # Interleaved rounds, best round per mode: background load hits every mode alike.
        cost_start = time.perf_counter()
        for _ in range(args.cost_rounds):
            for mode, run in models.items():
                m = measure(run["model"], scene, args)
                old = costs.get(mode)
                if old is None or m["mpx_s"] > old["mpx_s"]:
                    costs[mode] = m | {"params": run["params"]}
        if models:
            costs["_seconds"] = costs.get("_seconds", 0) + time.perf_counter() - cost_start
        costs_path.write_text(json.dumps(costs, indent=2))
    write_report(results, costs, args, command)


if __name__ == "__main__":
    main()
