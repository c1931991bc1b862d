"""The report of the fusion study: ``REPORT.md`` from the result files alone.

``compare_fusion.py`` trains and measures; this module names the study's variants of the
fusion registry, computes the statistics (mean and spread over seeds, differences from ``none``
paired by seed with a t-based interval) and writes the document with its conclusion.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import ROOT, SPACENET_SPLIT

SETS = ("spacenet", "dubai")
TOLERANCE = 0.10  # a mode further than this from none's parameter count gets a matched variant
# two-sided 95 % quantiles of Student's t by degrees of freedom (no scipy here)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
# recipe fields that follow from the data set, not from the library's defaults
DATA_KEYS = ("val_block",)


# -- the study's variants ----------------------------------------------------------------------


def variant_specs() -> list[tuple[str, str, tuple[tuple[str, Any], ...]]]:
    """``(name, mode, options)``: every registered mode, plus one per boolean option set on."""
    from geofuse.model.fusion import fusion_mode, fusion_modes

    specs: list[tuple[str, str, tuple[tuple[str, Any], ...]]] = []
    for mode in fusion_modes():
        specs.append((mode, mode, ()))
        for option in fusion_mode(mode).options:
            if isinstance(option.default, bool) and not option.default:
                specs.append((f"{mode}-{option.name}", mode, ((option.name, True),)))
    return specs


@functools.cache
def base_names() -> list[str]:
    """Names of :func:`variant_specs`, in order."""
    return [name for name, _, _ in variant_specs()]


def mode_order(name: str) -> tuple[int, int, str]:
    """Sort key: registry order, each matched variant right after its mode."""
    names = base_names()
    base = name.removesuffix("-matched")
    return (names.index(base) if base in names else len(names), name != base, name)


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
    from geofuse.model.fusion import fusion_mode, fusion_modes

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
        "**Modes** (from the fusion registry, `geofuse.model.fusion`):", "",
    ]
    for mode in fusion_modes():
        entry = fusion_mode(mode)
        lines.append(f"- `{mode}`: {entry.doc}.")
        for option in entry.options:
            if isinstance(option.default, bool) and not option.default:
                lines.append(f"- `{mode}-{option.name}`: `{mode}` with `{option.name}` on "
                             f"({option.help}).")
    lines.append("")
    recipes = {json.dumps({k: v for k, v in (r.get("recipe") or {}).items()
                           if k not in DATA_KEYS}, sort_keys=True) for r in results}
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
        if all(p[0] < 0 for v in decided.values() for p in v.values()):
            text += (" Every mode's mean paired difference from `none` is negative on both "
                     f"sets; the smallest loss is `{top}`'s ({describe(top)}).")
        else:
            text += (f" The largest mean paired difference is `{top}`'s ({describe(top)}), "
                     "within the noise of the seeds on at least one set.")
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


def portable(command: str) -> str:
    """A recorded command without its machine's folders (``--work``, ``--runs``, ``--out``)."""
    words = shlex.split(command)
    kept = [w for i, w in enumerate(words)
            if w not in ("--work", "--runs", "--out")
            and (i == 0 or words[i - 1] not in ("--work", "--runs", "--out"))]
    old, new = "scripts/compare_fusion.py", "scripts/studies/fusion/compare_fusion.py"  # moved
    return shlex.join(kept).replace(old, new)


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
        f"`compare_fusion.py` (do not edit by hand) from the result files in `{rel}/` "
        "alone; command that wrote this document (from the repository root):",
        "",
        f"    {command}",
        "",
        "**Which data chose, which data scored.** SpaceNet buildings: trained on the western "
        f"{SPACENET_SPLIT} columns of the scene, scored on the eastern rest; Dubai land cover: "
        "trained on seven tile folders, scored on the held-out one (`Tile 8`). The verdict "
        "below chose the training default (`--fusion none`) on these same held-out parts: "
        "they served both, and no part that chose nothing was scored. The training study "
        "(`scripts/studies/training`) scores the defaults, `none` included, on a part that "
        "chose nothing (Dubai `Tile 7`).",
        "",
        "**Caveat.** Every run here was made before `cross_attention` attended in "
        "windows of the training chip's size: its pooled grid spread over the whole tile, so "
        "on the 512-px tiles of the held-out scoring one token covered 8 times the pixels it "
        "covered in training, and its figures understate the mode (a three-network SpaceNet "
        "model of that kind scored building IoU 0.000 on 512-px tiles, 0.389 on 64-px ones; "
        "the training study, `scripts/studies/training`). `attention`'s channel attention and "
        "the gates of `weighted` pooled over the whole tile too (both fixed since; for "
        "`attention` 0.307 against 0.367). The other modes' figures do not depend on the "
        "tile.",
        "",
    ]
    trained_by = sorted({portable(r["command"]) for r in results if r.get("command")}
                        | {portable(c["command"]) for c in costs.values() if c.get("command")})
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
