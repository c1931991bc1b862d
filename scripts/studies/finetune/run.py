"""Fine-tuning from the embedded model against training from scratch, on few labelled chips.

Usage::

    python scripts/studies/finetune/run.py choose   # settings (dubai, forest)
    python scripts/studies/finetune/run.py curves   # learning curves (the reporting sets)
    python scripts/studies/finetune/run.py zero     # the embedded model as it is, where it applies
    python scripts/studies/finetune/run.py loop     # labelling loop: suggest against random windows
    python scripts/studies/finetune/run.py all      # zero, then curves and loop seed by seed
    python scripts/studies/finetune/run.py report   # tables for REPORT.md

Every run is one subprocess (``one``) that trains with the library defaults (what
``geofuse train --tiles LIST --time-limit ... --val-fraction 0 [--init default]`` does),
scores the model on the set's test area and writes ``runs/<name>.json``. A queue skips the runs
whose file exists, so it can be stopped and started again; ``--sets``, ``--seeds``, ``--counts``
and ``--budgets`` cut it down. The data is cut by :mod:`sets` into ``--work`` (not in git).

All labelled chips train (``--val-fraction 0``): with one or two chips, holding one out for
validation would halve the labels. Chips are drawn from the set's pool by a seeded
permutation (seed ``1000 + seed``), the first ``k``: the same chips for both arms of a pair,
nested over ``k``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from _common import git_commit, write_json_atomic  # noqa: E402
from sets import IGNORE, Manifest, prepare  # noqa: E402

RUNS = HERE / "runs"
WORK = HERE / "work"
CHOOSE_SETS = ("dubai", "forest")  # and dubai-building, for the new class's row only
REPORT_SETS = ("inria", "massachusetts", "spacenet")
LOOP_SETS = ("inria", "massachusetts")
COUNTS = (1, 2, 4, 8)
SEEDS = (0, 1, 2)
BUDGET = 120.0
VARIANTS = {  # the settings compared on the choosing sets, with two chips, one at a time
    "scratch": {},
    "init": {"init": "default", "lr": 1e-3, "keep_norm": True, "rest_row": False},
    "init-lr3e-4": {"init": "default", "lr": 3e-4, "keep_norm": True, "rest_row": False},
    "init-lr3e-3": {"init": "default", "lr": 3e-3, "keep_norm": True, "rest_row": False},
    "init-ownnorm": {"init": "default", "lr": 1e-3, "keep_norm": False, "rest_row": False},
    "init-freeze": {
        "init": "default",
        "lr": 1e-3,
        "keep_norm": True,
        "rest_row": False,
        "freeze": "encoder",
    },
    "init-ownnorm-restrow": {"init": "default", "lr": 1e-3, "keep_norm": False, "rest_row": True},
}
ARMS = {"scratch": {}, "init": {"init": "default"}}  # the curves: the library's defaults


# -- one run (in its own process) --------------------------------------------------------------


def code_commit() -> str:
    """The commit of the geofuse code the run used: ``GEOFUSE_STUDY_CODE`` when the queue runs a
    snapshot of the package (``git archive``), else the repository's."""
    return os.environ.get("GEOFUSE_STUDY_CODE") or git_commit()


def chips_for(manifest: Manifest, k: int, seed: int) -> list[str]:
    """The first ``k`` chips of the pool in the order of seed ``1000 + seed``."""
    order = np.random.default_rng(1000 + seed).permutation(len(manifest.chips))
    return [manifest.chips[i] for i in order[:k]]


def classes_of(manifest: Manifest) -> tuple:
    from geofuse.model.spec import ClassInfo
    from geofuse.training.labels import default_colour

    return tuple(ClassInfo(i, n, default_colour(i, n)) for i, n in enumerate(manifest.classes))


def train_model(
    spec: dict[str, Any], folder: Path, manifest: Manifest, out: Path, images: list[Path]
) -> dict[str, Any]:
    """Train on ``images`` (tiles with ``masks/`` beside ``images/``) as ``spec`` says."""
    import geofuse.training.init as init
    from geofuse.training.config import LabelOptions, TilesSource, TrainConfig
    from geofuse.training.train import train

    if "keep_norm" in spec:  # the choosing runs pin these; otherwise the library's defaults
        init.KEEP_NORMALIZATION = spec["keep_norm"]
    if "rest_row" in spec:
        init.REST_ROW = spec["rest_row"]
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"{Path(p).resolve()}\n" for p in images))
    config = TrainConfig(
        sources=(TilesSource(listing),),
        out=out,
        seed=spec["seed"],
        labels=LabelOptions(classes=classes_of(manifest), ignore_values=(IGNORE,)),
        time_limit=spec["budget"],
        val_fraction=0.0,
        init=spec.get("init"),
        learning_rate=spec.get("lr"),
        freeze=spec.get("freeze", "none"),
        overwrite=True,
    )
    said: list[str] = []
    result = train(config, notify=said.append)
    metrics = result.metrics
    return {
        "seconds": round(result.seconds, 1),
        "epochs": result.epochs,
        "members": metrics["members"],
        "patch": metrics["patch"],
        "batch_size": metrics["batch_size"],
        "budget_steps": metrics["budget_steps"],
        "learning_rate": config.learning_rate,
        "said": said,
    }


def score(model: str | Path, folder: Path, manifest: Manifest, scratch: Path) -> dict[str, Any]:
    """IoU of each set class on the test scenes (the target's, or the mean over classes)."""
    import rasterio

    from geofuse.config import InputConfig, SegmentConfig
    from geofuse.model.modelfile import load_model
    from geofuse.segment import segment_scene

    loaded = load_model(model)
    names = [c.name for c in loaded.info.classes]
    wanted = [names.index(n) if n in names else -1 for n in manifest.classes]
    inter = np.zeros(len(wanted))
    union = np.zeros(len(wanted))
    config = SegmentConfig(overwrite=True, input=InputConfig(resample="off"))
    for image, labels in manifest.tests:
        pred_path = scratch / "pred.tif"
        segment_scene(folder / image, pred_path, loaded, config, notify=lambda _: None)
        with rasterio.open(pred_path) as p, rasterio.open(folder / labels) as g:
            pred, truth = p.read(1), g.read(1)
        valid = (truth != IGNORE) & (pred != 255)
        for i, k in enumerate(wanted):
            a, b = (pred == k) & valid, (truth == i) & valid
            inter[i] += np.sum(a & b)
            union[i] += np.sum(a | b)
    iou = {
        n: (float(x / u) if u else None)
        for n, x, u in zip(manifest.classes, inter, union, strict=True)
    }
    present = [v for v in iou.values() if v is not None]
    value = iou[manifest.target] if manifest.target else float(np.mean(present))
    return {"iou": value, "classes": iou}


def one(spec: dict[str, Any], work: Path) -> None:
    """Train (unless ``arm`` is ``zero``) and score one run; write its result file."""
    folder, manifest = prepare(spec["set"], work)
    scratch = work / "scratch" / spec["name"]
    scratch.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    started = time.time()
    record: dict[str, Any] = dict(spec)
    if spec["arm"] == "zero":
        record |= score("default", folder, manifest, scratch)
    else:
        chips = spec.get("chips") or chips_for(manifest, spec["k"], spec["seed"])
        record["chips"] = chips
        model = scratch / "model.keras"
        record["train"] = train_model(spec, folder, manifest, model, [folder / c for c in chips])
        record |= score(model, folder, manifest, scratch)
    record |= {
        "commit": code_commit(),
        "load_before": [round(v, 2) for v in load],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(RUNS / f"{spec['name']}.json", record)


# -- queues --------------------------------------------------------------------------------------


def run_queue(specs: list[dict[str, Any]], work: Path, jobs: int = 1) -> None:
    """Run every spec whose result file is missing, ``jobs`` subprocesses at a time.

    With ``jobs`` 2 the two arms of a pair (adjacent in every queue) run side by side, so both
    see the same load; the next pair starts when both have finished.
    """
    todo = [spec for spec in specs if not (RUNS / f"{spec['name']}.json").exists()]
    for first in range(0, len(todo), jobs):
        group = todo[first : first + jobs]
        procs = []
        for spec in group:
            print(f"{time.strftime('%H:%M:%S')} {spec['name']}", flush=True)
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "one", json.dumps(spec), "--work", str(work)]
                )
            )
        for spec, proc in zip(group, procs, strict=True):
            if proc.wait():
                print(f"  {spec['name']} failed with exit code {proc.returncode}", flush=True)


def choose_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs = []
    for seed in args.seeds:
        for name in args.sets or CHOOSE_SETS:
            for variant, options in VARIANTS.items():
                if args.variants and variant not in args.variants:
                    continue
                specs.append(
                    {
                        "name": f"choose-{name}-{variant}-k2-b{args.budget:g}-s{seed}",
                        "set": name,
                        "arm": variant,
                        "k": 2,
                        "seed": seed,
                        "budget": args.budget,
                        **options,
                    }
                )
    return specs


def curve_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs = []
    for budget in args.budgets:
        for seed in args.seeds:
            for name in args.sets or REPORT_SETS:
                for k in args.counts:
                    for arm in ("init", "scratch"):
                        specs.append(
                            {
                                "name": f"curves-{name}-{arm}-k{k}-b{budget:g}-s{seed}",
                                "set": name,
                                "arm": arm,
                                "k": k,
                                "seed": seed,
                                "budget": budget,
                                **ARMS[arm],
                            }
                        )
    return specs


def zero_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        {"name": f"zero-{name}", "set": name, "arm": "zero", "seed": 0}
        for name in args.sets or (*REPORT_SETS, *CHOOSE_SETS)
        if name != "spacenet"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "queue",
        choices=("choose", "curves", "zero", "loop", "all", "report", "one", "round", "prepare"),
    )
    parser.add_argument("spec", nargs="?", help="one, round: the run's spec (JSON)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--sets", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--counts", nargs="*", type=int, default=list(COUNTS))
    parser.add_argument("--budget", type=float, default=BUDGET)
    parser.add_argument("--variants", nargs="*", default=None, help="choose: only these")
    parser.add_argument("--budgets", nargs="*", type=float, default=[BUDGET])
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (2: the arms of a pair side by side)"
    )
    args = parser.parse_args()
    if args.queue == "one":
        one(json.loads(args.spec), args.work)
    elif args.queue == "prepare":
        for name in args.sets or (*REPORT_SETS, *CHOOSE_SETS):
            folder, manifest = prepare(name, args.work)
            print(f"{name}: {len(manifest.chips)} chips, {len(manifest.tests)} test scenes")
    elif args.queue == "report":
        from report import report

        report(RUNS, HERE / "REPORT.md")
    elif args.queue == "round":
        from loop import loop_round

        loop_round(json.loads(args.spec), args.work, RUNS)
    elif args.queue == "all":  # zero-shot, then per seed the curves and the loop
        from loop import loop_queue

        run_queue(zero_specs(args), args.work, args.jobs)
        for seed in args.seeds:
            one_seed = argparse.Namespace(**{**vars(args), "seeds": [seed]})
            run_queue(curve_specs(one_seed), args.work, args.jobs)
            loop_queue(one_seed, RUNS, args.work)
    elif args.queue == "loop":
        from loop import loop_queue

        loop_queue(args, RUNS, args.work)
    else:
        specs = {"choose": choose_specs, "curves": curve_specs, "zero": zero_specs}[args.queue]
        run_queue(specs(args), args.work, args.jobs)


if __name__ == "__main__":
    main()
