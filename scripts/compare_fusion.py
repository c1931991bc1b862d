"""Fusion evidence (issue 11): every decoder fusion mode, same recipe, seeds, splits and time.

Usage: compare_fusion.py [--sets S,..] [--modes M,..] [--seeds K ..] [--budget 5m] [--report-only]

Protocol (fixed before any run). Every *mode* is trained with the library's training recipe
(``TrainConfig`` defaults); the script sets only the data, the seed, the fusion mode with its
options and width, and ``time_limit`` (``--budget``, default 5 minutes per run, the data checks
included: a costlier mode gets fewer optimiser steps in the same time, as a user would). The
modes are the fusion registry's (``geofuse.fusion``): each registered mode with its default
options, plus one variant per boolean option switched on (``weighted-gates``). Where a mode's
parameter count differs from the plain U-Net's (``none``) by more than 10 %, a width-matched
variant (``<mode>-matched``) is run too: its ``fusion_width`` is the one in ``WIDTHS`` whose
network (built and counted, not guessed) comes closest to ``none``'s count (``--no-match-params``:
no matched variants). Data sets, scored on data the run never saw (``_common.held_out_protocol``,
as ``scripts/train_recipes.py`` runs them):

* ``spacenet``: train on the western 600 columns of the SpaceNet scene, score building IoU on
  the eastern 300 (with the seam metric of ``evaluate``);
* ``dubai``: train on every Dubai tile folder but ``--holdout`` (default ``Tile 8``: the largest
  folder, 29 % of the set's pixels, so the steadiest score, and every class is at least 5 % of
  it), score mean IoU over the five classes on it.

Resumability. Each finished run writes ``docs/fusion-runs/<set>-<mode>-seed<k>.json``
(temporary file, then rename); runs whose file exists are skipped, so the study can be stopped
and restarted, or run in pieces (``--sets``, ``--modes``, ``--seeds``). Seeds are the outer
loop, so an interrupted study has every mode on the same seeds. A call whose budget or hold-out
differs from an existing file's stops instead of mixing them. ``--report-only`` regenerates
``docs/fusion.md`` from the result files alone; ``--cost`` measures each mode's inference cost
(an untrained network of the Dubai shape segments one 2048 x 2048 RGB scene in a fresh process;
the weights do not change the cost) into ``docs/fusion-runs/cost-<mode>.json``, then reports.

    nice -n 19 python scripts/compare_fusion.py                  # the whole study (hours)
    nice -n 19 python scripts/compare_fusion.py --cost           # inference cost per mode
    python scripts/compare_fusion.py --report-only               # docs/fusion.md from the files
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNS = ROOT / "docs" / "fusion-runs"
DOC = ROOT / "docs" / "fusion.md"
SETS = ("spacenet", "dubai")
HOLDOUT = "Tile 8"
SHAPES = {"spacenet": 1, "dubai": 3}  # input bands of each set's network
TOLERANCE = 0.10  # a mode further than this from none's parameter count gets a matched variant
WIDTHS = tuple(range(4, 257, 4))  # fusion widths a matched variant may take (heads divide them)
COST_SCENE = 2048
# two-sided 95 % quantiles of Student's t by degrees of freedom (no scipy here)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
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
        from geofuse.model_config import Architecture

        return Architecture(fusion=self.fusion, fusion_options=dict(self.options),
                            fusion_width=self.width)


def base_variants() -> list[Variant]:
    """Every registered fusion mode, plus one variant per boolean option switched on."""
    from geofuse.fusion import fusion_mode, fusion_modes

    variants = []
    for mode in fusion_modes():
        variants.append(Variant(mode, mode))
        for option in fusion_mode(mode).options:
            if isinstance(option.default, bool) and not option.default:
                variants.append(Variant(f"{mode}-{option.name}", mode, ((option.name, True),)))
    return variants


@functools.cache
def base_names() -> list[str]:
    """Names of :func:`base_variants`, in order."""
    return [v.name for v in base_variants()]


def mode_order(name: str) -> tuple[int, int, str]:
    """Sort key: registry order, each matched variant right after its mode."""
    names = base_names()
    base = name.removesuffix("-matched")
    return (names.index(base) if base in names else len(names), name != base, name)


class ParamCounter:
    """Parameter counts of built (untrained) networks, cached."""

    def __init__(self) -> None:
        self.cache: dict[tuple, int] = {}

    def __call__(self, dataset: str, variant: Variant, width: int | None = None) -> int:
        key = (dataset, variant.fusion, variant.options, width)
        if key not in self.cache:
            import keras

            from geofuse.model import build_unet
            from geofuse.model_config import ModelSpec

            arch = replace(variant, width=width).arch()
            spec = ModelSpec(bands=SHAPES[dataset], classes=n_classes(dataset), arch=arch)
            self.cache[key] = build_unet(spec).count_params()
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
    from geofuse.model import decoder_sources

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

    from geofuse.fusion import fusion_mode
    from geofuse.model import load_model
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

    from geofuse.model import build_unet, save_model
    from geofuse.model_config import ModelInfo, ModelSpec, Normalization

    classes = dubai_coding()[0]
    spec = ModelSpec(bands=3, classes=len(classes), arch=variant.arch())
    keras.utils.set_random_seed(0)
    info = ModelInfo(spec=spec, band_names=("red", "green", "blue"),
                     normalization=Normalization(mean=(0.5,) * 3, std=(0.25,) * 3,
                                                 scale=1 / 255),
                     classes=classes, patch_size=64)
    path = save_model(build_unet(spec), info, work / f"cost-{variant.name}.keras")
    keras.utils.clear_session()
    return path


def measure_child(model: str, scene: str) -> None:
    """Segment ``scene`` twice (the first run traces); print Mpx/s of the second and peak RSS."""
    import rasterio

    from geofuse.config import SegmentConfig, TilingConfig
    from geofuse.model import load_model
    from geofuse.segment import make_predictor, segment_scene

    loaded = load_model(model)
    with rasterio.open(scene) as ds:  # what `geofuse segment` uses by default, fitted
        tiling = TilingConfig().for_scene(ds.height, ds.width, loaded.info.spec.arch.multiple)
    config = SegmentConfig(tiling=tiling, overwrite=True)
    predictor = make_predictor(loaded.model, tiling.batch_size, tiling.tile,
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


# -- statistics --------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``5 min`` or ``8 s``."""
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def fmt(value: float | None, signed: bool = False) -> str:
    """Three decimals (``-`` when undefined)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def t95(df: int) -> float:
    """The 97.5 % quantile of Student's t (the nearest tabulated df at or below ``df``)."""
    return T95[max(k for k in T95 if k <= df)]


def mean_spread(values: list[float | None]) -> str:
    """``mean ± sd`` of the defined values (``mean`` alone for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def paired(diffs: list[float]) -> tuple[float, float, float, str] | None:
    """Mean paired difference with a t-based 95 % interval (n >= 3), else its min and max."""
    if not diffs:
        return None
    mean = statistics.mean(diffs)
    if len(diffs) == 1:
        return mean, mean, mean, "one seed"
    if len(diffs) >= 3:
        half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        return mean, mean - half, mean + half, "t95"
    return mean, min(diffs), max(diffs), "min/max"


def paired_diffs(runs: list[dict], base: list[dict], key: str = "score") -> list[float]:
    """``run - base`` for every seed both have (with a defined value)."""
    base_by_seed = {r["seed"]: r[key] for r in base if r[key] is not None}
    return [r[key] - base_by_seed[r["seed"]] for r in runs
            if r[key] is not None and r["seed"] in base_by_seed]


def show_paired(result: tuple[float, float, float, str] | None) -> str:
    """``+0.012 [-0.020, +0.044] (t95)``."""
    if result is None:
        return "-"
    mean, lo, hi, kind = result
    if kind == "one seed":
        return f"{mean:+.3f} (one seed)"
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] ({kind})"


# -- report ------------------------------------------------------------------------------------


def load(runs: Path) -> tuple[list[dict], dict[str, dict]]:
    """The run results and the cost results stored in ``runs``."""
    results, costs = [], {}
    for path in sorted(runs.glob("*.json")):
        data = json.loads(path.read_text())
        if path.name.startswith("cost-"):
            costs[data["mode"]] = data
        else:
            results.append(data)
    return results, costs


def by_mode(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by mode, in :func:`mode_order`, each group sorted by seed."""
    groups: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: (mode_order(r["mode"]), r["seed"])):
        groups.setdefault(r["mode"], []).append(r)
    return groups


def method_lines(results: list[dict]) -> list[str]:
    """The protocol, the recipe the runs used and the modes."""
    from geofuse.fusion import fusion_mode, fusion_modes

    keeps = {r["recipe"].get("keep", "best") for r in results}
    kept = ("the weights at the end of that schedule" if keeps == {"last"} else
            "best weights by a smoothed validation score in the second half of the run")
    lines = [
        "## Method", "",
        "Each run trains one fusion mode on one data set with one seed for a fixed **time "
        "budget** and scores the trained model on data it never saw, through `geofuse`'s "
        "own inference path (`geofuse.training.evaluate`). Every mode gets the library's "
        "training recipe (the `TrainConfig` defaults: warm-up then a cosine learning rate "
        f"laid over the budget, {kept}); the script sets only the data, the seed, the fusion "
        "mode with its options and width, and the time limit.", "",
        "**Same conditions.** For a given seed every mode gets the same weight-initialisation "
        "seed, the same validation split and the same chip sampler, and is scored on the same "
        "held-out data with the same tiling. The protocol was fixed before any run and not "
        "changed after seeing results. Seeds are the outer loop of the study, so a partial "
        "study has every mode on the same seeds.", "",
        "**Equal time, not equal steps.** The budget covers the whole run (data checks "
        "included), so a mode that costs more per step gets fewer optimiser steps (the "
        "steps column): the comparison is what a user gets from `geofuse train` in the same "
        "minutes. Each run's load average at its end is stored with it; other jobs on the "
        "machine take steps from every mode, not necessarily alike.", "",
        "**Parameter budget.** Every mode runs at the library's depth, base filters and "
        "fusion width. Where a mode's parameter count differs from the plain U-Net's "
        f"(`none`) by more than {TOLERANCE * 100:.0f} %, a width-matched variant "
        "(`<mode>-matched`) is run as well, with the fusion width whose network (built and "
        "counted) comes closest to `none`'s count; wider fusion also costs more compute per "
        "step, which the time budget charges to it.", "",
        "**Modes** (from the fusion registry, `geofuse.fusion`):", "",
    ]
    for mode in fusion_modes():
        entry = fusion_mode(mode)
        lines.append(f"- `{mode}`: {entry.doc}.")
        for option in entry.options:
            if isinstance(option.default, bool) and not option.default:
                lines.append(f"- `{mode}-{option.name}`: `{mode}` with `{option.name}` on "
                             f"({option.help}).")
    lines.append("")
    recipes = {json.dumps(r.get("recipe"), sort_keys=True) for r in results}
    if len(recipes) == 1 and results[0].get("recipe"):
        recipe = results[0]["recipe"]
        keys = ("patch", "batch_size", "steps_per_epoch", "learning_rate", "warmup",
                "weight_decay", "loss", "class_weights", "augment", "jitter", "sampling",
                "val_fraction", "patience", "keep", "cache")
        arch = results[0]["architecture"]
        lines += ["**Recipe of every run** (the defaults when they ran): "
                  + ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe)
                  + f"; depth {arch['depth']}, base filters {arch['base_filters']}, fusion "
                  f"levels {arch['fusion_levels']}. Held-out scoring: "
                  + ", ".join(f"{k} {v}" for k, v in
                              (results[0].get("evaluation_tiling") or {}).items())
                  + " (the `evaluate` defaults).", ""]
    elif results:
        lines += [f"**Warning: the runs used {len(recipes)} different recipes** (the library "
                  "defaults changed between runs); see the `recipe` of each result file.", ""]
    return lines


def summary_lines(results: list[dict]) -> list[str]:
    """Budget, time, load, commits and completeness."""
    budgets = sorted({r["budget_seconds"] for r in results})
    loads = [r["load_average_at_end"][0] for r in results]
    commits = sorted({r["geofuse_commit"] for r in results})
    modified = sum(bool(r.get("geofuse_modified")) for r in results)
    lines = [
        f"**Runs.** {len(results)} result files; budget "
        + ", ".join(duration(b) for b in budgets) + " per run"
        + (" (**mixed budgets: not comparable**)" if len(budgets) > 1 else "")
        + f"; training took {min(r['train_seconds'] for r in results):.0f}-"
        f"{max(r['train_seconds'] for r in results):.0f} s; 1-minute load average at the "
        f"end of a run {min(loads):.1f}-{max(loads):.1f} on a {os.cpu_count()}-core machine; "
        f"geofuse commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
        + (f" ({modified} runs with uncommitted changes in geofuse/)" if modified else "")
        + ".", ""]
    seeds = {name: {m: sorted(r["seed"] for r in runs) for m, runs in
                    by_mode([r for r in results if r["dataset"] == name]).items()}
             for name in SETS}
    uneven = [name for name, modes in seeds.items()
              if len({tuple(s) for s in modes.values()}) > 1]
    if uneven:
        lines += [f"**PARTIAL:** the modes do not all have the same seeds on {', '.join(uneven)} "
                  "(the n column says how many each figure rests on; differences are paired "
                  "on the seeds both modes have).", ""]
    return lines


def set_lines(name: str, runs: list[dict]) -> list[str]:
    """The table of one data set."""
    groups = by_mode(runs)
    base = groups.get("none", [])
    first = runs[0]
    if name == "spacenet":
        lines = [f"## SpaceNet buildings (train west {SPACENET_SPLIT} columns, score east)", "",
                 "`../shared/data/real/spacenet-solaris/sample_geotiff.tif` (0.5 m "
                 "panchromatic) with `geotiff_labels.geojson`: train on the western 600 "
                 "columns (validation: 200-px blocks of them), score **building IoU** on the "
                 "eastern 300. Seam metric: pixel accuracy within "
                 f"{first.get('seam_width') or 8} px of an interior tile boundary of the "
                 "inference grid (seam) and elsewhere (interior); a seam that blends well "
                 "scores like the interior." + seam_note(runs), ""]
    else:
        lines = [f"## Dubai land cover (held out: {first['held_out']})", "",
                 "`../shared/data/real/dubai-aerial-hitl` (RGB): train on every other tile "
                 "folder, score **mean IoU over the five classes** on the held-out one, image "
                 "by image. Class colours are those measured in the masks "
                 "(data_samples/classes.json, see the set's PROVENANCE.md; the dataset's own "
                 "classes.json colours are wrong); Unlabeled (#9B9B9B) and black pixels are "
                 "ignored. `evaluate` computes the seam metric for scenes only, so it is "
                 "reported for SpaceNet.", ""]
    score_name = first["score_name"]
    header = ["mode", "fusion width", "params (vs none)", "n", "steps", f"{score_name}",
              "vs none, paired by seed"] + (["mean IoU"] if score_name != "mean IoU" else [])
    if name == "spacenet":
        header += ["F1 building", "seam accuracy", "interior accuracy"]
    lines += [f"Each cell: mean ± standard deviation over the n seeds. *vs none*: mean paired "
              f"difference in {score_name} from `none` on the same seeds, with its interval: "
              "mean ± t(0.975, n-1) x sd / sqrt(n) (t95) for n >= 3 paired seeds; for 2, the "
              "smallest and largest paired difference (min/max); for one, the difference "
              "alone.", "",
              "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    base_params = base[0]["parameters"] if base else None
    for mode, rows in groups.items():
        params = rows[0]["parameters"]
        share = (f" ({(params / base_params - 1) * 100:+.1f} %)" if base_params and mode != "none"
                 else "")
        width = rows[0]["options"]["fusion_width"] if rows[0]["fusion"] != "none" else "-"
        cells = [f"`{mode}`", str(width), f"{params:,}{share}", str(len(rows)),
                 f"{statistics.mean(r['steps'] for r in rows):,.0f}",
                 mean_spread([r["score"] for r in rows]),
                 "" if mode == "none" else show_paired(paired(paired_diffs(rows, base)))]
        if score_name != "mean IoU":
            cells.append(mean_spread([r["mean_iou"] for r in rows]))
        if name == "spacenet":
            cells += [mean_spread([r["classes"]["building"]["f1"] for r in rows]),
                      mean_spread([(r.get("seam") or {}).get("accuracy") for r in rows]),
                      mean_spread([(r.get("interior") or {}).get("accuracy") for r in rows])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if name != "spacenet":
        classes = list(first["classes"])
        lines += ["Per class, mean over seeds (IoU, then F1):", "",
                  "| mode | " + " | ".join(f"IoU {c}" for c in classes) + " | "
                  + " | ".join(f"F1 {c}" for c in classes) + " |",
                  "|" + " --- |" * (1 + 2 * len(classes))]
        for mode, rows in groups.items():
            cells = [mean_of([r["classes"][c][k] for r in rows]) for k in ("iou", "f1")
                     for c in classes]
            lines.append(f"| `{mode}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += weight_lines(groups)
    return lines


def mean_of(values: list[float | None]) -> str:
    """Mean of the defined values."""
    values = [v for v in values if v is not None]
    return fmt(statistics.mean(values)) if values else "-"


def seam_note(runs: list[dict]) -> str:
    """Why the seam figure is accuracy, when the seam band holds no building labels."""
    seams = [r["seam"] for r in runs if r.get("seam")]
    if seams and any(s["iou"].get("building") is None for s in seams):
        return (f" The seam band ({seams[0]['pixels']:,} px) holds no building pixels in the "
                "labels, so building IoU is undefined there and mean IoU over the band flips "
                "between 0.5 and 1.0 on a single false positive; accuracy is reported instead.")
    return ""


def weight_lines(groups: dict[str, list[dict]]) -> list[str]:
    """The learned level weights of the modes that learn them, mean over seeds."""
    learned = {m: rows for m, rows in groups.items() if rows[0].get("level_weights")}
    if not learned:
        return []
    levels = list(next(iter(learned.values()))[0]["level_weights"])
    lines = ["Learned level weights (normalised, mean over seeds): per decoder block, the "
             "weight of each input: `decoderN` is the decoder map coming up from level N, "
             "`encJ` the encoder map of level J (0: full resolution). With gates these static "
             "weights are further scaled per image by the gates.", "",
             "| mode | n | " + " | ".join(f"block at {lv}" for lv in levels) + " |",
             "|" + " --- |" * (2 + len(levels))]
    for mode, rows in learned.items():
        cells = []
        for lv in levels:
            sources = rows[0]["level_weights"][lv]
            cells.append(", ".join(
                f"{s} {statistics.mean(r['level_weights'][lv][s] for r in rows):.2f}"
                for s in sources))
        lines.append(f"| `{mode}` | {len(rows)} | " + " | ".join(cells) + " |")
    return lines + [""]


def cost_lines(costs: dict[str, dict]) -> list[str]:
    """The inference cost table."""
    if not costs:
        return []
    any_cost = next(iter(costs.values()))
    tiling = any_cost["tiling"]
    lines = [f"## Inference cost ({any_cost['scene']} scene, tile {tiling['tile']}, overlap "
             f"{tiling['overlap']}, batch {tiling['batch_size']}, {any_cost['cpus']} CPUs; "
             f"best of {any_cost['rounds']} interleaved runs)", "",
             "Each mode's network, in the Dubai shape (3 bands, 5 classes) and untrained (the "
             "weights do not change the cost), segments the same synthetic GeoTIFF "
             "(scripts/_common.py synthetic_scene, sample texture) through `segment_scene` "
             "with the default tiling, in a fresh process per measurement: Mpx/s of the "
             "second pass (the first traces), CPU seconds per Mpx over all threads (less "
             "sensitive to other jobs on the machine than wall time), peak RSS = VmHWM of that "
             "process (TensorFlow included).", "",
             "| mode | fusion width | params | Mpx/s | time / none | CPU s/Mpx | CPU / none | "
             "peak RSS MB |", "|" + " --- |" * 8]
    base = costs.get("none")
    for mode in sorted(costs, key=mode_order):
        c = costs[mode]
        ratio = f"{base['mpx_s'] / c['mpx_s']:.2f}" if base else "-"
        cpu_ratio = f"{c['cpu_s_per_mpx'] / base['cpu_s_per_mpx']:.2f}" if base else "-"
        width = c["fusion_width"] if mode != "none" else "-"
        lines.append(f"| `{mode}` | {width} | {c['parameters']:,} | {c['mpx_s']:.2f} | {ratio} | "
                     f"{c['cpu_s_per_mpx']:.2f} | {cpu_ratio} | {c['peak_rss_mb']:.0f} |")
    return lines + [""]


def conclusion_lines(results: list[dict], costs: dict[str, dict]) -> list[str]:
    """Which mode, if any, beats none by more than its interval on both sets."""
    lines = ["## Conclusion", ""]
    sets = [s for s in SETS if any(r["dataset"] == s for r in results)]
    per_set = {s: by_mode([r for r in results if r["dataset"] == s]) for s in sets}
    if len(sets) < 2 or any("none" not in g for g in per_set.values()):
        return lines + ["Not enough runs for a conclusion yet: it needs `none` and the other "
                        "modes on both data sets.", ""]
    modes = sorted({m for g in per_set.values() for m in g} - {"none"}, key=mode_order)
    verdicts: dict[str, dict[str, tuple]] = {}
    for mode in modes:
        verdicts[mode] = {s: paired(paired_diffs(per_set[s][mode], per_set[s]["none"]))
                          for s in sets if mode in per_set[s]}
    decided = {m: v for m, v in verdicts.items()
               if len(v) == len(sets) and all(p and p[3] == "t95" for p in v.values())}
    if not decided:
        return lines + ["Too few seeds for a conclusion: a mode needs at least 3 seeds paired "
                        "with `none` on both sets for a t-based interval.", ""]

    def describe(mode: str) -> str:
        return "; ".join(f"{s} {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"
                         for s, v in decided[mode].items())

    better = [m for m, v in decided.items() if all(p[1] > 0 for p in v.values())]
    worse = [m for m, v in decided.items() if all(p[2] < 0 for p in v.values())]
    one_set = [m for m, v in decided.items() if m not in better
               and any(p[1] > 0 for p in v.values())]
    if better:
        best = max(better, key=lambda m: statistics.mean(p[0] for p in decided[m].values()))
        text = (f"**`{best}`** beats the plain U-Net (`none`) by more than its 95 % interval "
                f"on both sets at {duration(results[0]['budget_seconds'])} per run (mean "
                f"paired difference in each set's score [interval]: {describe(best)})")
        if len(better) > 1:
            text += "; so do " + ", ".join(f"`{m}` ({describe(m)})" for m in better
                                           if m != best)
            text += f"; of these, `{best}` gains most on average"
        text += "."
        if best in costs and "none" in costs:
            text += (f" Its inference takes {costs['none']['mpx_s'] / costs[best]['mpx_s']:.2f}x "
                     "the plain U-Net's time.")
    else:
        text = ("**No fusion mode beats the plain U-Net (`none`) here**: none of them is "
                "better than `none` by more than its 95 % interval on both sets at this "
                f"budget ({duration(results[0]['budget_seconds'])} per run).")
        means = {m: statistics.mean(p[0] for p in v.values()) for m, v in decided.items()}
        top = max(means, key=means.get)
        text += (f" The largest mean paired difference is `{top}`'s ({describe(top)}), within "
                 "the noise of the seeds on at least one set.")
    lines.append(text)
    extra = []
    if one_set:
        extra.append("Better than `none` beyond the interval on one set only: "
                     + ", ".join(f"`{m}` ({describe(m)})" for m in one_set) + ".")
    if worse:
        extra.append("Worse than `none` beyond the interval on both sets: "
                     + ", ".join(f"`{m}` ({describe(m)})" for m in worse) + ".")
    undecided = sorted(set(verdicts) - set(decided), key=mode_order)
    if undecided:
        extra.append("Not judged (fewer than 3 paired seeds on a set): "
                     + ", ".join(f"`{m}`" for m in undecided) + ".")
    if extra:
        lines += ["", " ".join(extra)]
    return lines + [""]


def write_report(runs: Path, out: Path, command: str) -> None:
    """Regenerate the document from the result files in ``runs`` alone."""
    results, costs = load(runs)
    rel = os.path.relpath(runs, ROOT) if runs.is_relative_to(ROOT) else str(runs)
    lines = [
        "# Fusion modes compared",
        "",
        "Does multi-level fusion in the U-Net decoder beat the plain U-Net skip? Each decoder "
        "fusion mode is trained for the same time budget, with the same recipe, seeds and "
        "splits, on two real data sets, and scored on held-out data. Produced by "
        f"`scripts/compare_fusion.py` (do not edit by hand) from the result files in `{rel}/` "
        "alone; command that wrote this document (from the repository root):",
        "",
        f"    {command}",
        "",
    ]
    trained_by = sorted({r["command"] for r in results if r.get("command")}
                        | {c["command"] for c in costs.values() if c.get("command")})
    if trained_by:
        lines += ["The runs it reports were made by:", ""]
        lines += [f"    {c}" for c in trained_by] + [""]
    lines += method_lines(results)
    if not results:
        lines += [f"No runs yet: `{rel}/` holds no result files.", ""]
    else:
        lines += summary_lines(results)
        for name in SETS:
            rows = [r for r in results if r["dataset"] == name]
            if rows:
                lines += set_lines(name, rows)
    lines += cost_lines(costs)
    if results:
        lines += conclusion_lines(results, costs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines).rstrip("\n") + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


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
    command = " ".join(["python scripts/compare_fusion.py", shlex.join(sys.argv[1:])]).rstrip()
    if args.cost:
        measure_costs(args, command)
    elif not args.report_only:
        study(args, command)
    write_report(args.runs, args.out, command)


if __name__ == "__main__":
    main()
