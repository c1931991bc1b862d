"""Fusion evidence: every decoder fusion mode, same recipe, seeds, splits and time.

Usage: compare_fusion.py [--sets S,..] [--modes M,..] [--seeds K ..] [--budget 5m] [--report-only]

Protocol (fixed before any run). Every *mode* is trained with the library's training recipe
(``TrainConfig`` defaults); the script sets only the data, the seed, the fusion mode with its
options and width, and ``time_limit`` (``--budget``, default 5 minutes per run, the data checks
included: a costlier mode gets fewer optimiser steps in the same time, as a user would). The
modes are the fusion registry's (``geofuse.model.fusion``): each registered mode with its default
options, plus one variant per boolean option switched on (``weighted-gates``). Where a mode's
parameter count differs from the plain U-Net's (``none``) by more than 10 %, a width-matched
variant (``<mode>-matched``) is run too: its ``fusion_width`` is the one in ``WIDTHS`` whose
network (built and counted, not guessed) comes closest to ``none``'s count (``--no-match-params``:
no matched variants). Data sets, scored on data the run never saw (``_common.held_out_protocol``,
as ``scripts/studies/training/train_recipes.py`` runs them):

* ``spacenet``: train on the western 600 columns of the SpaceNet scene, score building IoU on
  the eastern 300 (with the seam metric of ``evaluate``);
* ``dubai``: train on every Dubai tile folder but ``--holdout`` (default ``Tile 8``: the largest
  folder, 29 % of the set's pixels, so the steadiest score, and every class is at least 5 % of
  it), score mean IoU over the five classes on it.

Resumability. Each finished run writes ``runs/<set>-<mode>-seed<k>.json``
(temporary file, then rename); runs whose file exists are skipped, so the study can be stopped
and restarted, or run in pieces (``--sets``, ``--modes``, ``--seeds``). Seeds are the outer
loop, so an interrupted study has every mode on the same seeds. A call whose budget or hold-out
differs from an existing file's stops instead of mixing them. ``--report-only`` regenerates
``REPORT.md`` from the result files alone; ``--cost`` measures each mode's inference cost
(an untrained network of the Dubai shape segments one 2048 x 2048 RGB scene in a fresh process;
the weights do not change the cost) into ``runs/cost-<mode>.json``, then reports.

    nice -n 19 python scripts/studies/fusion/compare_fusion.py          # the whole study (hours)
    nice -n 19 python scripts/studies/fusion/compare_fusion.py --cost   # inference cost per mode
    python scripts/studies/fusion/compare_fusion.py --report-only       # REPORT.md from the files
    nohup bash scripts/fusion_resume.sh &     # the rest of the study, frozen recipe, committed
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import (
    SPACENET_SPLIT,
    dubai_coding,
    git_commit,
    held_out_protocol,
    package_modified,
    peak_rss_mb,
    spacenet_classes,
    synthetic_scene,
    write_json_atomic,
)
from fusion_report import SETS, TOLERANCE, fmt, variant_specs, write_report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNS = Path(__file__).resolve().parent / "runs"
DOC = Path(__file__).resolve().parent / "REPORT.md"
HOLDOUT = "Tile 8"
SHAPES = {"spacenet": 1, "dubai": 3}  # input bands of each set's network
WIDTHS = tuple(range(4, 257, 4))  # fusion widths a matched variant may take (heads divide them)
COST_SCENE = 2048
# TrainConfig fields the script sets itself (all others are the library's defaults)
SET_BY_SCRIPT = ("sources", "out", "run_dir", "labels", "arch", "seed", "time_limit",
                 "overwrite")


# -- the modes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a registry mode, its options and fusion width."""

    name: str
    fusion: str
    options: tuple[tuple[str, Any], ...] = ()
    width: int | None = None  # None: the default (base filters)
    matched: bool = False

    def arch(self) -> Any:
        """The ``Architecture`` (library defaults but for the fusion)."""
        from geofuse.model.spec import Architecture

        return Architecture(fusion=self.fusion, fusion_options=dict(self.options),
                            fusion_width=self.width)


def base_variants() -> list[Variant]:
    """Every registered fusion mode, plus one variant per boolean option switched on."""
    return [Variant(name, mode, options) for name, mode, options in variant_specs()]


class ParamCounter:
    """Parameter counts of built (untrained) networks, cached."""

    def __init__(self) -> None:
        self.cache: dict[tuple, int] = {}

    def __call__(self, dataset: str, variant: Variant, width: int | None = None) -> int:
        key = (dataset, variant.fusion, variant.options, width)
        if key not in self.cache:
            import keras

            from geofuse.model.network import build_unet
            from geofuse.model.spec import ModelSpec
            from geofuse.training.config import TrainConfig

            arch = replace(variant, width=width).arch()
            spec = ModelSpec(bands=SHAPES[dataset], classes=n_classes(dataset), arch=arch)
            self.cache[key] = build_unet(spec, patch=TrainConfig.patch).count_params()
            keras.utils.clear_session()
        return self.cache[key]


def n_classes(dataset: str) -> int:
    """Output classes of the set's network."""
    return len(spacenet_classes() if dataset == "spacenet" else dubai_coding()[0])


def matched_width(dataset: str, variant: Variant, count: ParamCounter, target: int) -> int:
    """The width in :data:`WIDTHS` whose parameter count is closest to ``target``.

    Counts grow with the width, so a bisection finds the first width at or above the target;
    it or the one before is the closest.
    """
    lo, hi = 0, len(WIDTHS) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if count(dataset, variant, WIDTHS[mid]) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [WIDTHS[i] for i in (lo - 1, lo) if 0 <= i < len(WIDTHS)]
    best = min(candidates, key=lambda w: abs(count(dataset, variant, w) - target))
    if abs(count(dataset, variant, best) - target) > TOLERANCE * target:
        sys.exit(f"{variant.name}: no fusion width in {WIDTHS[0]}..{WIDTHS[-1]} comes within "
                 f"{TOLERANCE:.0%} of none's {target:,} parameters")
    return best


def plan(dataset: str, tokens: list[str] | None, match: bool,
         count: ParamCounter) -> list[Variant]:
    """The variants to run on ``dataset``: ``tokens`` (all when None) and their matched twins."""
    bases = base_variants()
    known = {v.name for v in bases}
    for token in tokens or []:
        if token.removesuffix("-matched") not in known:
            sys.exit(f"unknown mode {token!r}: expected among {', '.join(sorted(known))} "
                     "(a name selects its -matched variant too)")
    target = count(dataset, Variant("none", "none"))
    variants = []
    for variant in bases:
        wanted = tokens is None or variant.name in tokens
        twin_wanted = wanted or (tokens is not None and f"{variant.name}-matched" in tokens)
        if wanted:
            variants.append(variant)
        if not (match and twin_wanted and variant.fusion != "none"):
            continue
        if abs(count(dataset, variant) - target) > TOLERANCE * target:
            width = matched_width(dataset, variant, count, target)
            variants.append(replace(variant, name=f"{variant.name}-matched", width=width,
                                    matched=True))
    return variants


# -- one run -----------------------------------------------------------------------------------


def level_weights(model: Any, arch: Any) -> dict[str, dict[str, float]]:
    """Per decoder block (coarsest first), the normalised learned weight of each source level.

    ``decoderN`` is the decoder map coming up from level N, ``encJ`` the encoder map of level J
    (0: full resolution); with gates these static weights are further scaled per image.
    """
    from geofuse.model.network import decoder_sources

    weights = {}
    for level in reversed(range(arch.depth)):
        values = model.get_layer(f"fuse{level}").normalized_weights()
        names = [f"decoder{level + 1}"] + [f"enc{j}" for j in decoder_sources(arch, level)]
        weights[f"level {level}"] = {n: round(float(v), 4)
                                     for n, v in zip(names, values, strict=True)}
    return weights


def run_once(dataset: str, variant: Variant, seed: int, budget: float, holdout: str,
             work: Path) -> dict[str, Any]:
    """Train ``variant`` on ``dataset`` for ``budget`` seconds and score the held-out part."""
    import keras

    from geofuse.model.fusion import fusion_mode
    from geofuse.model.modelfile import load_model
    from geofuse.training.evaluate import evaluate
    from geofuse.training.train import TrainConfig, train

    run = work / f"{dataset}-{variant.name}-seed{seed}"
    protocol = held_out_protocol("spacenet" if dataset == "spacenet" else f"dubai-{holdout}",
                                 work, run / "m.keras")
    arch = variant.arch()
    config = TrainConfig(sources=protocol.sources, out=run / "m.keras", run_dir=run / "train",
                         labels=protocol.labels, arch=arch, time_limit=budget, seed=seed,
                         overwrite=True, **protocol.train_options)
    result = train(config)
    report = evaluate(protocol.evaluation).report
    model = load_model(config.out).model
    weights = (level_weights(model, arch) if fusion_mode(arch.fusion).learns_level_weights
               else None)
    parameters = model.count_params()
    keras.utils.clear_session()
    seams = report.get("seams") or {}
    return {
        "dataset": dataset, "mode": variant.name, "fusion": arch.fusion,
        "options": {"fusion_options": dict(arch.fusion_options), "fusion_width": arch.width,
                    "width_matched": variant.matched},
        "architecture": {"depth": arch.depth, "base_filters": arch.base_filters,
                         "fusion_levels": arch.fusion_levels},
        "held_out": holdout if dataset == "dubai" else f"columns {SPACENET_SPLIT}-",
        "seed": seed, "budget_seconds": budget,
        "train_seconds": round(result.seconds, 1), "epochs": result.epochs,
        "best_epoch": result.best_epoch, "steps": result.epochs * config.steps_per_epoch,
        "parameters": parameters,
        "score_name": protocol.score_name, "score": protocol.score(report),
        "mean_iou": report["mean_iou"],
        "classes": {k: {"iou": v["iou"], "f1": v["f1"]} for k, v in report["classes"].items()},
        "seam_width": seams.get("width"), "seam": seams.get("seam"),
        "interior": seams.get("interior"),
        "level_weights": weights,
        "validation_mean_iou": (result.metrics.get("validation") or {}).get("mean_iou"),
        "recipe": {k: v for k, v in config.to_dict().items() if k not in SET_BY_SCRIPT},
        "evaluation_tiling": report.get("tiling"),
        "warnings": result.metrics.get("warnings", []),
        "geofuse_commit": git_commit(), "geofuse_modified": package_modified(),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def study(args: argparse.Namespace, command: str) -> None:
    """Every missing run: seeds outermost, then sets, then modes."""
    from geofuse.training.config import parse_duration

    budget = parse_duration(args.budget)
    count = ParamCounter()
    plans = {name: plan(name, args.modes, args.match_params, count) for name in args.sets}
    for name, variants in plans.items():
        print(f"{name}: " + ", ".join(
            f"{v.name} ({count(name, v, v.width):,} params"
            + (f", width {v.width})" if v.width else ")") for v in variants), flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="geofuse-fusion-"))
    work.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.sets:
            for variant in plans[name]:
                out = args.runs / f"{name}-{variant.name}-seed{seed}.json"
                if out.exists():
                    old = json.loads(out.read_text())
                    if old["budget_seconds"] != budget or (
                            name == "dubai" and old["held_out"] != args.holdout):
                        sys.exit(f"{out} was run with budget {old['budget_seconds']:g} s, held "
                                 f"out {old['held_out']}; this call asks for {budget:g} s, "
                                 f"{args.holdout}: move the files aside or use --runs")
                    print(f"skip {out.name}", flush=True)
                    continue
                record = run_once(name, variant, seed, budget, args.holdout, work)
                record["command"] = command
                write_json_atomic(out, record)
                print(f"{out.name}: {record['score_name']} {fmt(record['score'])}, "
                      f"{record['steps']} steps in {record['train_seconds']:.0f} s", flush=True)


# -- cost --------------------------------------------------------------------------------------


def cost_model(variant: Variant, work: Path) -> Path:
    """An untrained network of ``variant`` in the Dubai shape (RGB, 5 classes), as a model file."""
    import keras

    from geofuse.model.modelfile import save_model
    from geofuse.model.network import build_unet
    from geofuse.model.spec import ModelInfo, ModelSpec, Normalization

    classes = dubai_coding()[0]
    spec = ModelSpec(bands=3, classes=len(classes), arch=variant.arch())
    keras.utils.set_random_seed(0)
    info = ModelInfo(spec=spec, band_names=("red", "green", "blue"),
                     normalization=Normalization(mean=(0.5,) * 3, std=(0.25,) * 3,
                                                 scale=1 / 255),
                     classes=classes, patch_size=64)
    path = save_model(build_unet(spec, patch=info.patch_size), info,
                      work / f"cost-{variant.name}.keras")
    keras.utils.clear_session()
    return path


def measure_child(model: str, scene: str) -> None:
    """Segment ``scene`` twice (the first run traces); print Mpx/s of the second and peak RSS."""
    import rasterio

    from geofuse.config import SegmentConfig, TilingConfig
    from geofuse.model.modelfile import load_model
    from geofuse.segment import make_predictor, segment_scene

    loaded = load_model(model)
    with rasterio.open(scene) as ds:  # what `geofuse segment` uses by default, fitted
        tiling = TilingConfig().for_scene(ds.height, ds.width, loaded.info.spec.arch.multiple)
    config = SegmentConfig(tiling=tiling, overwrite=True)
    predictor = make_predictor(loaded.model, tiling.batch_size, tiling.shape,
                               loaded.info.spec.bands)
    out = Path(scene).with_name(f".cost_{os.getpid()}.tif")
    segment_scene(scene, out, loaded, config, predictor=predictor)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = segment_scene(scene, out, loaded, config, predictor=predictor)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    out.unlink(missing_ok=True)
    print(json.dumps({"mpx_s": result.megapixels / seconds,
                      "cpu_s_per_mpx": cpu / result.megapixels, "peak_rss_mb": peak_rss_mb(),
                      "tiling": {"tile": tiling.tile, "overlap": tiling.overlap,
                                 "batch_size": tiling.batch_size}}))


def measure(model: Path, scene: Path) -> dict:
    """Run :func:`measure_child` in a fresh interpreter (so peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--measure", str(model), str(scene)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"cost measurement failed for {model}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_costs(args: argparse.Namespace, command: str) -> None:
    """``cost-<mode>.json`` for every planned mode that has none, in interleaved rounds."""
    count = ParamCounter()
    variants = [v for v in plan("dubai", args.modes, args.match_params, count)
                if not (args.runs / f"cost-{v.name}.json").exists()]
    if not variants:
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="geofuse-fusion-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"cost_scene_{COST_SCENE}.tif"
    if not scene.exists():
        synthetic_scene(scene, COST_SCENE, "sample")
    models = {v.name: cost_model(v, work) for v in variants}
    best: dict[str, dict] = {}
    # Interleaved rounds, best round per mode: background load hits every mode alike.
    for _ in range(args.cost_rounds):
        for variant in variants:
            m = measure(models[variant.name], scene)
            if variant.name not in best or m["mpx_s"] > best[variant.name]["mpx_s"]:
                best[variant.name] = m
    for variant in variants:
        arch = variant.arch()
        write_json_atomic(args.runs / f"cost-{variant.name}.json", best[variant.name] | {
            "mode": variant.name, "fusion_width": arch.width,
            "fusion_options": dict(arch.fusion_options),
            "parameters": count("dubai", variant, variant.width),
            "scene": f"{COST_SCENE} x {COST_SCENE} RGB uint8", "rounds": args.cost_rounds,
            "cpus": os.cpu_count(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "geofuse_commit": git_commit(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command})
        print(f"cost-{variant.name}: {best[variant.name]['mpx_s']:.2f} Mpx/s", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="Comma-separated: spacenet,dubai.")
    parser.add_argument("--modes", default=None,
                        help="Comma-separated modes (default: all of the fusion registry and "
                        "their option variants, e.g. weighted-gates); a mode brings its "
                        "-matched variant when it has one.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", default="5m", help="Training time per run (90s, 5m, ...).")
    parser.add_argument("--holdout", default=HOLDOUT, help="Held-out Dubai tile folder.")
    parser.add_argument("--match-params", action=argparse.BooleanOptionalAction, default=True,
                        help="Also run width-matched variants of modes whose parameter count "
                        f"is more than {TOLERANCE * 100:.0f} %% from none's.")
    parser.add_argument("--cost", action="store_true",
                        help="Measure each mode's inference cost (no training), then report.")
    parser.add_argument("--cost-rounds", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--runs", type=Path, default=RUNS, help="Result files folder.")
    parser.add_argument("--out", type=Path, default=DOC, help="The document to write.")
    parser.add_argument("--work", type=Path, default=None,
                        help="Scratch folder for split scenes and models (default: a new one).")
    args = parser.parse_args()
    args.sets = args.sets.split(",")
    if unknown := sorted(set(args.sets) - set(SETS)):
        parser.error(f"unknown sets {unknown}: expected among {', '.join(SETS)}")
    args.modes = args.modes.split(",") if args.modes else None
    args.runs, args.out = args.runs.resolve(), args.out.resolve()
    command = " ".join(["python scripts/studies/fusion/compare_fusion.py",
                        shlex.join(sys.argv[1:])]).rstrip()
    if args.cost:
        measure_costs(args, command)
    elif not args.report_only:
        study(args, command)
    write_report(args.runs, args.out, command)


if __name__ == "__main__":
    main()
