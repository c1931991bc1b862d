"""Training recipes on small real data: which defaults give a converged model in a time budget.

Each run trains one recipe (a set of TrainConfig overrides) on one data set with one seed for a
fixed time budget, scores it on data it never saw, and writes one result file,
``runs/<set>-<recipe>-<budget>-seed<k>.json`` in this folder. Finished runs are skipped, so the
script can be stopped and restarted (``--report-only`` rebuilds the tables of this study's
``REPORT.md`` from the result files alone).

Sets (held-out protocol fixed before any run):

- ``spacenet``: train on the western 600 columns of the SpaceNet scene (0.5 m panchromatic,
  vector building labels), score building IoU on the eastern 300 (``scripts/_common.py``).
- ``dubai-<tile>``: train on every Dubai land-cover tile folder but ``<tile>``, score mean IoU
  over the five classes on the held-out tile (e.g. ``dubai-Tile 3``).
- ``forest``: Sentinel-2 forest chips, train on train_images, score forest IoU on test_images.
- ``inria``, ``inria-half`` (the crop at half resolution), ``roads``: as
  :func:`_common.held_out_protocol` describes them.

    nice python scripts/studies/training/train_recipes.py --sets spacenet \\
        --recipes default,plain --seeds 0 1 2
    python scripts/studies/training/train_recipes.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # scripts/, for _common

from _common import REAL, git_commit, held_out_protocol  # noqa: E402

from geofuse.model.fusion import fusion_modes  # noqa: E402  (the registry alone: no TensorFlow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNS = HERE / "runs"
REPORT = HERE / "REPORT.md"
FOREST = REAL / "sentinel2-forest-hu"
FOREST_CLASSES = {"classes": [{"id": 0, "name": "background", "color": "#e6e6b4", "value": 2},
                              {"id": 1, "name": "forest", "color": "#1b7837", "value": 1}],
                  "ignore": [0]}

# name -> (TrainConfig overrides, Architecture overrides, what it tests)
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "default": ({}, {}, "the library defaults as they are"),
    "random": ({"sampling": "random"}, {},
               "the defaults with chips at random positions only (the default before "
               "balanced sampling)"),
    "patience5": ({"patience": 5}, {},
                  "the defaults with early stopping after 5 epochs without improvement (the "
                  "default before “Last weights”)"),
    "plain": ({"batch_size": 32, "patience": 5},
              {"depth": 2, "base_filters": 8, "fusion": "none"},
              "the 60-line baseline's shape: plain U-Net 8-16-32, batch 32 (with the early "
              "stopping that was the default when it ran)"),
    "small-concat": ({"batch_size": 32}, {"depth": 2, "base_filters": 8},
                     "the baseline's size with concat fusion"),
    "d3f8-concat": ({"batch_size": 32}, {"depth": 3, "base_filters": 8},
                    "depth 3, 8 filters, concat, batch 32"),
    "d3f8-b16": ({"batch_size": 16}, {"depth": 3, "base_filters": 8},
                 "depth 3, 8 filters, concat, batch 16"),
    "small-weighted": ({"batch_size": 32}, {"depth": 2, "base_filters": 8, "fusion": "weighted"},
                       "the baseline's size with weighted fusion"),
    "d3f8-plain": ({"batch_size": 32}, {"depth": 3, "base_filters": 8, "fusion": "none"},
                   "plain U-Net, depth 3, 8 filters, batch 32"),
    "plain-b16": ({"batch_size": 16}, {"depth": 2, "base_filters": 8, "fusion": "none"},
                  "plain U-Net 8-16-32, batch 16"),
    "plain-p0": ({"batch_size": 32, "patience": 0},
                 {"depth": 2, "base_filters": 8, "fusion": "none"},
                 "plain, no early stopping: the run always ends with its annealed schedule"),
    "default-p0": ({"patience": 0}, {},
                   "the defaults without early stopping (the budget sets the length)"),
    "balanced": ({"sampling": "balanced"}, {},
                 "the defaults with half of the chips centred on a pixel of a class drawn "
                 "uniformly"),
    "balanced-noweights": ({"sampling": "balanced", "class_weights": "none"}, {},
                           "balanced sampling instead of class weights"),
    "noweights": ({"class_weights": "none"}, {}, "defaults without class weights"),
    "noweights-p0": ({"class_weights": "none", "patience": 0}, {},
                     "defaults without class weights or early stopping"),
    "lr1e-3": ({"learning_rate": 1e-3}, {}, "defaults with a lower peak learning rate"),
    "wd05": ({"weight_decay": 0.05}, {}, "defaults with decoupled weight decay 0.05"),
    "wd2": ({"weight_decay": 0.2}, {}, "defaults with decoupled weight decay 0.2"),
    "jitter04": ({"jitter": 0.4}, {}, "defaults with twice the brightness/contrast jitter"),
    "val01": ({"val_fraction": 0.1}, {}, "defaults validating on 10 % of the blocks, not 20 %"),
    "val0": ({"val_fraction": 0.0}, {}, "defaults training on every block (no validation)"),
    "patch128": ({"patch": 128, "batch_size": 8}, {}, "defaults on 128-px chips, batch 8"),
    "none": ({"val_fraction": 0.1}, {"fusion": "none"},
             "the defaults of “`none` re-measured”: no fusion (plain U-Net skips), validation on "
             "10 %"),
    "ema998": ({"val_fraction": 0.1, "ema": 0.998}, {"fusion": "none"},
               "`none` writing a moving average of the weights (momentum 0.998, about the "
               "last 500 steps)"),
    "patch128-none": ({"val_fraction": 0.1, "patch": 128, "batch_size": 8}, {"fusion": "none"},
                      "`none` on 128-px chips, batch 8 (twice the pixels per step, four times "
                      "the context per chip)"),
    "focal-none": ({"val_fraction": 0.1, "loss": "focal+dice"}, {"fusion": "none"},
                   "`none` with focal loss (gamma 2) instead of cross-entropy, plus Dice"),
    "inverse-none": ({"val_fraction": 0.1, "class_weights": "inverse"}, {"fusion": "none"},
                     "`none` weighting classes by inverse frequency instead of its square root"),
    "inverse-ema": ({"val_fraction": 0.1, "class_weights": "inverse", "ema": 0.998},
                    {"fusion": "none"},
                    "`inverse-none` writing a moving average of the weights (momentum 0.998)"),
    "zoom-none": ({"val_fraction": 0.1, "zoom": 0.25}, {"fusion": "none"},
                  "`none` with random zoom: chips cover 0.8 to 1.25 times the patch side"),
    "lovasz-none": ({"val_fraction": 0.1, "loss": "ce+lovasz"}, {"fusion": "none"},
                    "`none` with cross-entropy + Lovász-softmax instead of cross-entropy + Dice"),
    "feed": ({}, {}, "the library defaults with the chip feed of “Chip pipeline” (chips cut by "
                     "Python "
             "threads, not in tf.data): the same recipe at about twice the steps per minute"),
    "capped": ({"members": 1}, {}, "the library defaults of “Step bound”: a time limit also "
               "ends at the steps the data should get, if that comes first (600 + 1,300 per "
               "labelled Mpx; without a time limit the default, at most 4,600); one network"),
    "uncapped": ({"epochs": 1_000_000, "members": 1}, {}, "`capped` with an upper bound of "
                 "epochs no run reaches, so a time limit is spent whole, as before “Step bound”"),
    "ensemble": ({}, {}, "the library defaults of “Two networks”: `capped`, and when the first "
                 "network stops at its steps with the time for another left, a second one "
                 "(seed + 1, same split) in the time left; the model file averages the two "
                 "(the runs on record had it at 0.8 of that time, MEMBER_TIME_SHARE then)"),
    "stepled": ({"members": 1}, {}, "`capped` with the “One seed, one schedule” entry's schedule: "
                                    "when a time limit "
                "leaves room for the data's steps, the learning rate follows the steps alone "
                "(not the clock), so a seed gives one model; one network"),
    "members2-18": ({"members": 2}, {}, "`members2` with the “One seed, one schedule” entry's "
                                        "training loop: the clock "
                    "counts each network's set-up, the first one's tail is kept back from the "
                    "second's share, no tf.data autotuning stall between them"),
    "members2-ema": ({"members": 2, "ema": 0.998}, {}, "`members2-18` with each network "
                     "written as a moving average of its weights (`--ema 0.998`, about its "
                     "last 500 steps)"),
    "defaults-19": ({}, {}, "the library defaults of “Averaged weights of two networks”, no "
                            "option: a time limit that "
                    "leaves the first network's time over trains a second one; held-out "
                    "scenes tiled as “Averaged weights of two networks” tiles them (a scene that "
                    "fits one model call "
                    "is one tile of its own shape)"),
    "defaults-20": ({}, {}, "the library defaults at the “Second network cut short” entry's first "
                            "commit, no option: a "
                    "second network when the time left is at least 0.75 of what the first "
                    "took (1.0 before and after these runs), its schedule ending at its steps "
                    "or the clock"),
    "inverse-20": ({"class_weights": "inverse", "members": 1}, {}, "one network of the "
                   "library defaults of “Second network cut short” with inverse-frequency class "
                   "weights "
                   "(`--class-weights inverse`) instead of their square root"),
    "depth4-20": ({"members": 1}, {"depth": 4}, "one network of the library defaults of "
                  "“Second network cut short” with four downsampling steps instead of three (twice "
                  "the "
                  "receptive field; 64-px chips reach a 4 x 4 bottleneck)"),
    "wide24-21": ({"members": 1}, {"base_filters": 24}, "one network of the library "
                  "defaults of “A third network” with 24 filters at full resolution instead of 16 "
                  "(2.25 times the compute per step: the time a 10-minute run leaves over)"),
    "defaults-21": ({}, {}, "the library defaults of “A third network”, no option, on an idle "
                    "machine (nothing else running)"),
    "three-21": ({}, {}, "the library defaults with no option after “A third network” set "
                 "AUTO_MEMBERS to 3 (up to three networks where the time is left), idle"),
    "members3": ({"members": 3}, {}, "the library defaults with three networks (seeds k to "
                 "k + 2, the same split), each trained for the data's default steps, averaged: "
                 "what `--time-limit 10m` gives where three fit (the “A third network” entry's "
                 "AUTO_MEMBERS)"),
    "members4": ({"members": 4}, {}, "the library defaults with four networks (seeds k to "
                 "k + 3, the same split), each trained for the data's default steps, averaged; "
                 "scored also as the average of its first 1, 2 and 3 (`score_ensemble.py "
                 "--prefixes`)"),
    "batch20-3": ({"members": 3, "batch_size": 20}, {}, "three networks of the data's steps "
                  "(as `members4`'s first three) on batches of 20 chips instead of 16 (1.25 "
                  "times the compute: the time a 10-minute run of three leaves over here)"),
    "patch96-3": ({"members": 3, "patch": 96, "batch_size": 8}, {}, "three networks of the "
                  "data's steps (as `members4`'s first three) on 96-px chips, batch 8 (2.25 "
                  "times the area of a chip, 1.1 times the pixels of a step: more context)"),
    "long3": ({"members": 3, "epochs": 32}, {}, "three networks (as `members4`'s first "
              "three) of 1,600 steps each instead of the data's 1,200-1,250: members of an "
              "average may overfit more (the average takes out variance); about the 600 s of a "
              "10-minute run here"),
    "patch48-3": ({"members": 3, "patch": 48, "batch_size": 28}, {}, "three networks of the "
                  "data's steps (as `members4`'s first three) on 48-px chips, batch 28 (the "
                  "pixels of a step as 64-px chips of 16; `patch96-3` lost: the other way)"),
    "patch32-3": ({"members": 3, "patch": 32, "batch_size": 64}, {}, "three networks of the "
                  "data's steps (as `members4`'s first three) on 32-px chips, batch 64 (the "
                  "pixels of a step as 64-px chips of 16)"),
    "steps3000": ({"members": 1, "epochs": 60}, {}, "one network of the library defaults "
                  "for 3,000 steps (a fixed length, so that machines and loads compare)"),
    "steps3000-p48": ({"members": 1, "epochs": 60, "patch": 48, "batch_size": 28}, {},
                      "`steps3000` on 48-px chips, batch 28 (as `patch48-3`)"),
    "steps3000-p80": ({"members": 1, "epochs": 60, "patch": 80, "batch_size": 10}, {},
                      "`steps3000` on 80-px chips, batch 10 (about the pixels of a step of "
                      "64-px chips of 16)"),
    "steps3000-p128": ({"members": 1, "epochs": 60, "patch": 128, "batch_size": 4}, {},
                       "`steps3000` on 128-px chips, batch 4 (the pixels of a step of 64-px "
                       "chips of 16)"),
    "one-p64": ({"members": 1}, {}, "one network of the library defaults (64-px chips, "
                "batch 16) for the data's steps"),
    "one-p48": ({"members": 1, "patch": 48, "batch_size": 28}, {}, "`one-p64` on 48-px "
                "chips, batch 28 (as `patch48-3`)"),
    "one-p80": ({"members": 1, "patch": 80, "batch_size": 10}, {}, "`one-p64` on 80-px "
                "chips, batch 10 (about the pixels of a step of 64-px chips of 16)"),
    "members3-p80": ({"members": 3, "patch": 80, "batch_size": 10}, {},
                     "`members3` (three networks of the data's steps) on 80-px chips of 10, "
                     "what `--patch auto` picks on Inria"),
    "auto-26": ({"patch": "auto"}, {}, "the library defaults with `--patch auto`: the chip side "
                "from the labels (1.5 x the rarest class's area-weighted object side, 48-80 "
                "px: the bounds when these runs were made), batches keeping 16 x 64^2 px per "
                "step"),
    "defaults-26": ({}, {}, "the library defaults of “Chip side from the labels” with no option: "
                            "the chip "
                    "side from the labels (`--patch auto`, 48 or 64 px), up to three networks "
                    "in a time limit; on an idle machine"),
    "members3-auto": ({"members": 3, "patch": "auto"}, {}, "`members3` (the defaults of a "
                      "10-minute run, three networks of the data's steps) with `--patch auto`"),
    "one-p128": ({"members": 1, "patch": 128, "batch_size": 4}, {}, "`one-p64` on 128-px "
                 "chips, batch 4 (the pixels of a step of 64-px chips of 16)"),
    "members2": ({"members": 2}, {}, "the library defaults with two networks (seeds k and "
                 "k + 1, the same split), each trained for the data's default steps, averaged"),
    **{f"capped-{mode}": ({"members": 1}, {"fusion": mode},
                          f"`capped` (the defaults of “Step bound”) with fusion `{mode}` "
                          "(width 16) in place of the plain U-Net skips")
       for mode in fusion_modes() if mode != "none"},
    **{f"members3-{mode}": ({"members": 3}, {"fusion": mode},
                            f"`members3` (three networks of the data's steps, the “A third "
                            f"network” "
                            f"defaults) with fusion `{mode}` in place of the plain U-Net skips")
       for mode in fusion_modes() if mode != "none"},
    "windowed-23": ({"members": 3}, {"fusion": "cross_attention"}, "`members3-cross_attention` "
                    "after “Fusion with three networks” made the mode attend in windows of the "
                    "training chip's "
                    "size (before, its pooled grid spread over the whole tile)"),
    "rotate45-24": ({"members": 3, "rotate": 45.0}, {}, "`members3` (the defaults of a "
                    "10-minute run) with chips turned by a random angle (`--rotate 45`)"),
    "local-attention-24": ({"members": 3}, {"fusion": "attention"}, "`members3-attention` "
                           "after “Rotation and shadows” made its channel attention pool over the "
                           "training chip's size around each pixel, not the whole tile"),
    "shadow05-24": ({"members": 3, "shadow": 0.5}, {}, "`members3` (the defaults of a "
                    "10-minute run) with a random soft shadow cast on half of the chips "
                    "(`--shadow 0.5`)"),
    "gates-25": ({"members": 3}, {"fusion": "weighted", "fusion_options": {"gates": True}},
                 "`members3-weighted` with input-dependent gates pooled over the training "
                 "chip's size around each pixel (`--fusion weighted --gates`, after the “Rotation "
                 "and shadows” entry's "
                 "fix)"),
    "deepsup05-25": ({"members": 3, "deep_supervision": 0.5}, {},
                     "`members3` (the defaults of a 10-minute run) with nnU-Net's deep "
                     "supervision (`--deep-supervision 0.5`: decoder levels 1 and 2 trained "
                     "through their own outputs too, weights 0.5 and 0.25)"),
    "cutmix05-25": ({"members": 3, "cutmix": 0.5}, {},
                    "`members3` (the defaults of a 10-minute run) with CutMix on half of the "
                    "chips (`--cutmix 0.5`)"),
    "plainloop": ({"class_weights": "none", "sampling": "random", "jitter": 0.0}, {},
                  "the defaults fed as the baseline feeds its network: no class weights, chips "
                  "drawn uniformly, no brightness/contrast jitter"),
    "small-none": ({"val_fraction": 0.1, "batch_size": 32},
                   {"depth": 2, "base_filters": 8, "fusion": "none"},
                   "the 60-line baseline's network (plain U-Net 8-16-32) and batch 32, with "
                   "today's training loop (`none` otherwise)"),
}


# runs made before keep="last" became the default, labelled in the table by how they picked
PICKS = {"any": " (any-epoch pick)", "second half": " (second-half pick)",
         "best": " (keep best)"}


def run_once(dataset: str, recipe: str, seed: int, budget: float | None,
             work: Path) -> dict[str, Any]:
    """Train ``recipe`` on ``dataset`` for ``budget`` seconds (None: the default number of
    steps) and score the held-out part."""
    from geofuse.model.spec import Architecture
    from geofuse.training.config import EvaluateConfig, LabelOptions, TilesSource
    from geofuse.training.evaluate import evaluate
    from geofuse.training.train import TrainConfig, train

    overrides, arch, _ = RECIPES[recipe]
    code = git_commit()  # the code this run imports (HEAD may move while it trains)
    run = work / f"{dataset}-{recipe}-{seed}"
    extra: dict[str, Any] = {}
    if dataset == "forest":
        classes = work / "forest-classes.json"
        classes.write_text(json.dumps(FOREST_CLASSES))
        sources: tuple = (TilesSource(FOREST, "train_images", "train_labels", ".jpg", ".png"),)
        labels = LabelOptions(classes_file=classes)
        held_out = EvaluateConfig(
            source=TilesSource(FOREST, "test_images", "test_labels", ".jpg", ".png"),
            model=run / "m.keras", labels=LabelOptions(classes_file=classes))
        score_class: str | None = "forest"
    else:  # spacenet, dubai-<tile>: the protocol the fusion comparison shares
        protocol = held_out_protocol(dataset, work, run / "m.keras")
        sources, labels = protocol.sources, protocol.labels
        extra |= protocol.train_options
        held_out, score_class = protocol.evaluation, protocol.score_class
    config = TrainConfig(sources=sources, out=run / "m.keras", run_dir=run / "train",
                         labels=labels, arch=Architecture(**arch), time_limit=budget,
                         seed=seed, overwrite=True, **(extra | overrides))
    result = train(config)
    report = evaluate(held_out).report
    return {
        "set": dataset, "recipe": recipe, "seed": seed, "budget_seconds": budget,
        "budget_steps": result.metrics.get("budget_steps"),
        "recipe_overrides": overrides, "architecture": arch,
        "train_seconds": round(result.seconds, 1), "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "kept_epoch": result.kept_epoch,
        "steps": result.epochs * config.steps_per_epoch,  # every network's, added up
        "members": result.metrics.get("members", 1),
        "patch": result.metrics.get("patch"), "batch_size": result.metrics.get("batch_size"),
        "validation_mean_iou": (result.metrics.get("validation") or {}).get("mean_iou"),
        "held_out_mean_iou": report["mean_iou"],
        "held_out_score": report["classes"][score_class]["iou"] if score_class
        else report["mean_iou"],
        "score_name": f"{score_class} IoU" if score_class else "mean IoU",
        "classes": {k: {m: v[m] for m in ("iou", "f1", "precision", "recall")}
                    for k, v in report["classes"].items()},
        "warnings": result.metrics.get("warnings", []),
        "keep": config.keep,  # the weights in the model file: last, or best (second half)
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "geofuse_commit": code,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def report() -> str:
    """The results table (markdown) from the run files."""
    rows: dict[tuple[str, str, float], list[dict[str, Any]]] = {}  # budget -1: default steps
    for path in sorted(RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        recipe = r["recipe"] + PICKS.get(r.get("keep") or r.get("selection"), "")
        budget = r["budget_seconds"] if r["budget_seconds"] is not None else -1.0
        rows.setdefault((r["set"], recipe, budget), []).append(r)
    lines = ["| set | recipe | budget | seeds | held-out score (each seed) | mean | spread |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (dataset, recipe, budget), runs in sorted(rows.items()):
        scores = [r["held_out_score"] for r in sorted(runs, key=lambda r: r["seed"])]
        valid = [s for s in scores if s is not None]
        mean = sum(valid) / len(valid) if valid else None
        spread = max(valid) - min(valid) if len(valid) > 1 else 0.0
        shown = ", ".join("-" if s is None else f"{s:.3f}" for s in scores)
        length = f"{budget / 60:g} min"
        if budget < 0:
            steps = [r.get("budget_steps") or r["steps"] for r in runs]
            low, high = min(steps), max(steps)
            length = f"default ({low:,}{f'–{high:,}' if high > low else ''} steps)"
        lines.append(f"| {dataset} | {recipe} | {length} | {len(runs)} | "
                     f"{runs[0]['score_name']}: {shown} | "
                     f"{'-' if mean is None else f'{mean:.3f}'} | {spread:.3f} |")
    return "\n".join(lines)


# The reporting part: a set that chose no default (REPORT.md, "Which data chose"), the runs
# of the current defaults on it, and the runs whose scores chose those defaults.
REPORTING = ("dubai-Tile 7", "default", 600.0)
CHOSE = (("spacenet", "defaults-26", 600.0), ("dubai-Tile 2", "auto-26", 900.0),
         ("dubai-Tile 3", "auto-26", 900.0), ("dubai-Tile 8", "auto-26", 900.0))
REPORTING_COMMAND = ("python scripts/studies/training/train_recipes.py "
                     "--sets 'dubai-Tile 7' --recipes default --seeds 0 1 2 --budget 10m")


def _runs(dataset: str, recipe: str, budget: float) -> list[dict[str, Any]]:
    """The result files of one set, recipe and time budget, by seed."""
    found = [json.loads(p.read_text()) for p in RUNS.glob("*.json")]
    return sorted((r for r in found if (r["set"], r["recipe"], r["budget_seconds"])
                   == (dataset, recipe, budget)), key=lambda r: r["seed"])


def held_out_report() -> str:
    """The current defaults on the reporting part, beside the numbers that chose them."""
    runs = _runs(*REPORTING)
    classes = list(runs[0]["classes"]) if runs else []
    lines = [f"`geofuse train --time-limit {REPORTING[2] / 60:g}m` with no other option, trained "
             "on Dubai Tiles 1-6 and 8, scored on Tile 7 (mean IoU over the five classes; "
             f"`{REPORTING_COMMAND}`):", "",
             "| seed | steps | networks | chip | train s | load average at the end | "
             + " | ".join(classes) + " | **mean IoU** |",
             "| --- " * (6 + len(classes)) + "| --- |"]
    for r in runs:
        ious = " | ".join(f"{r['classes'][c]['iou']:.3f}" for c in classes)
        lines.append(f"| {r['seed']} | {r['steps']:,} | {r['members']} | {r['patch']} px of "
                     f"{r['batch_size']} | {r['train_seconds']:.0f} | "
                     f"{', '.join(f'{v:g}' for v in r['load_average_at_end'])} | {ious} | "
                     f"**{r['held_out_score']:.3f}** |")
    if runs:
        scores = [r["held_out_score"] for r in runs]
        lines += ["", f"Mean over {len(runs)} seed{'s' if len(runs) > 1 else ''}: "
                  f"**{sum(scores) / len(scores):.3f}** (spread {max(scores) - min(scores):.3f}; "
                  f"code {', '.join(sorted({r['geofuse_commit'] for r in runs}))}, finished "
                  f"{runs[-1]['finished'][:10]})."]
    lines += ["", "The numbers that chose the defaults (scored on the parts that chose them):", "",
              "| set | recipe | budget | steps | seeds | score (each seed) | mean |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for dataset, recipe, budget in CHOSE:
        chose = _runs(dataset, recipe, budget)
        scores = [r["held_out_score"] for r in chose]
        steps = sorted({r["steps"] for r in chose})
        if scores:
            lines.append(f"| {dataset} | {recipe} | {budget / 60:g} min | "
                         f"{', '.join(f'{s:,}' for s in steps)} | {len(scores)} | "
                         f"{chose[0]['score_name']}: {', '.join(f'{s:.3f}' for s in scores)} | "
                         f"{sum(scores) / len(scores):.3f} |")
    return "\n".join(lines)


def _fill(text: str, marker: str, body: str) -> str:
    """``text`` with ``body`` between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    start, end = f"<!-- {marker} -->\n", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        return text
    head, rest = text.split(start, 1)
    return head + start + body + "\n" + end + rest.split(end, 1)[1]


def write_report() -> None:
    """Print the tables and put them between the markers of the study's REPORT.md."""
    table, held_out = report(), held_out_report()
    print(held_out, table, sep="\n\n")
    text = _fill(_fill(REPORT.read_text(), "held-out", held_out), "results", table)
    tmp = REPORT.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, REPORT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="spacenet", help="Comma-separated sets.")
    parser.add_argument("--recipes", default="default", help="Comma-separated recipes: "
                        + ", ".join(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", default="5m", help="Training time per run (90s, 5m, ...), "
                        "or 'default': no time limit, the default number of steps.")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder.")
    args = parser.parse_args()
    if args.report_only:
        write_report()
        return
    from geofuse.training.config import parse_duration

    budget = None if args.budget == "default" else parse_duration(args.budget)
    length = "default" if budget is None else f"{budget:g}s"
    RUNS.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="geofuse-recipes-"))
    work.mkdir(parents=True, exist_ok=True)
    for dataset in args.sets.split(","):
        for recipe in args.recipes.split(","):
            for seed in args.seeds:
                out = RUNS / f"{dataset}-{recipe}-{length}-seed{seed}.json".replace(" ", "_")
                if out.exists():
                    print(f"skip {out.name}")
                    continue
                result = run_once(dataset, recipe, seed, budget, work)
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(result, indent=2) + "\n")
                os.replace(tmp, out)
                print(f"{out.name}: {result['score_name']} {result['held_out_score']}", flush=True)
    write_report()


if __name__ == "__main__":
    main()
