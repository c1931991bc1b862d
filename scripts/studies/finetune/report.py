"""Tables of the fine-tuning study from ``runs/*.json`` (Markdown, for REPORT.md).

Paired differences (fine-tuned minus from scratch, the same chips and seed; suggest minus
random, the same set, seed and round) are summarised by their mean and a 95 % Student-t
interval over the pairs; with three seeds the intervals are wide, and pairs of one seed at
several chip counts share chips (nested draws), so they are not independent.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    14: 2.145,
    17: 2.110,
    20: 2.086,
    23: 2.069,
}


def interval(values: list[float]) -> str:
    """``mean [low, high]`` (95 % t interval; one value: the value alone)."""
    n = len(values)
    if not n:
        return "-"
    mean = sum(values) / n
    if n == 1:
        return f"{mean:+.3f} (n=1)"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T95.get(n - 1) or T95[max(k for k in T95 if k <= n - 1)]
    half = t * sd / math.sqrt(n)
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] (n={n})"


def load(runs: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]


def choose_table(records: list[dict[str, Any]]) -> list[str]:
    rows = defaultdict(dict)
    for r in records:
        if r["name"].startswith("choose-"):
            rows[(r["set"], r["arm"])][r["seed"]] = r["iou"]
    lines = [
        "| set | setting | IoU by seed | mean | minus `init` (`restrow`: `init-ownnorm`), paired |",
        "|---|---|---|---|---|",
    ]
    for (name, arm), seeds in sorted(rows.items()):
        base = rows.get((name, "init-ownnorm" if arm.endswith("restrow") else "init"), {})
        diffs = [seeds[s] - base[s] for s in seeds if s in base]
        shown = ", ".join(f"{seeds[s]:.3f}" for s in sorted(seeds))
        lines.append(
            f"| {name} | {arm} | {shown} | {sum(seeds.values()) / len(seeds):.3f} | "
            f"{interval(diffs) if arm != 'init' else ''} |"
        )
    return lines


def curve_tables(records: list[dict[str, Any]]) -> list[str]:
    runs = {
        (r["set"], r["arm"], r["k"], r["budget"], r["seed"]): r["iou"]
        for r in records
        if r["name"].startswith("curves-")
    }
    pairs: dict[tuple, list[float]] = defaultdict(list)
    by_unit: dict[tuple, dict[int, float]] = defaultdict(dict)
    lines = [
        "| set | budget s | chips | fine-tuned | from scratch | difference [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(s, k, b) for s, _, k, b, _ in runs})
    for name, k, budget in keys:
        init = {
            seed: v
            for (s, a, kk, b, seed), v in runs.items()
            if (s, a, kk, b) == (name, "init", k, budget)
        }
        scratch = {
            seed: v
            for (s, a, kk, b, seed), v in runs.items()
            if (s, a, kk, b) == (name, "scratch", k, budget)
        }
        diffs = [init[s] - scratch[s] for s in init if s in scratch]
        pairs[(k, budget)] += diffs
        for seed in init:
            if seed in scratch:
                by_unit[(budget, name, seed)][k] = init[seed] - scratch[seed]

        def mean(d: dict) -> str:
            return f"{sum(d.values()) / len(d):.3f} ({len(d)})" if d else "-"

        lines.append(
            f"| {name} | {budget:g} | {k} | {mean(init)} | {mean(scratch)} | {interval(diffs)} |"
        )
    lines += [
        "",
        "| chips | budget s | fine-tuned minus scratch, all sets and seeds (pairs) |",
        "|---|---|---|",
    ]
    for (k, budget), diffs in sorted(pairs.items()):
        lines.append(f"| {k} | {budget:g} | {interval(diffs)} |")
    lines += [
        "",
        "| chips | budget s | fine-tuned minus scratch: per set and seed, the mean over these "
        "counts; then the mean over sets and seeds |",
        "|---|---|---|",
    ]
    for most, counts in ((2, (1, 2)), (5, (1, 2, 4))):
        for budget in sorted({b for _, b in pairs}):
            units = [
                sum(d[k] for k in counts) / len(counts)
                for (b, _, _), d in sorted(by_unit.items())
                if b == budget and all(k in d for k in counts)
            ]
            lines.append(
                f"| <= {most} ({', '.join(map(str, counts))}) | {budget:g} | {interval(units)} |"
            )
    return lines


def conditions(records: list[dict[str, Any]]) -> list[str]:
    """Per seed of the curves: the machine's load and the epochs (of 50 steps) each arm ran."""
    rows: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["name"].startswith("curves-"):
            rows[r["seed"]]["load"].append(r["load_before"][0])
            rows[r["seed"]][r["arm"]].append(r["train"]["epochs"])
            rows[r["seed"]]["commit"].append(r["commit"])
    lines = [
        "| seed | runs | 1-min load before a run | epochs, fine-tuned | epochs, scratch | code |",
        "|---|---|---|---|---|---|",
    ]
    for seed, row in sorted(rows.items()):
        lines.append(
            f"| {seed} | {len(row['load'])} | {min(row['load']):.1f}-{max(row['load']):.1f} | "
            f"{span(row['init'])} | {span(row['scratch'])} | "
            f"{', '.join(sorted(set(map(str, row['commit']))))} |"
        )
    return lines


def span(values: list[float]) -> str:
    """``low-high (mean)`` of a list, or ``-``."""
    if not values:
        return "-"
    return f"{min(values):g}-{max(values):g} (mean {sum(values) / len(values):.1f})"


def loop_table(records: list[dict[str, Any]]) -> list[str]:
    runs = {
        (r["set"], r["arm"], r["seed"], r["round"]): r["iou"]
        for r in records
        if r["name"].startswith("loop-")
    }
    lines = [
        "| set | round | windows | suggest | random | suggest minus random [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    pooled: dict[int, list[float]] = defaultdict(list)
    for name in sorted({s for s, *_ in runs}):
        for round_ in sorted({r for *_, r in runs}):
            got = {
                arm: {
                    seed: v
                    for (s, a, seed, r), v in runs.items()
                    if (s, a, r) == (name, arm, round_)
                }
                for arm in ("suggest", "random")
            }
            diffs = [
                got["suggest"][s] - got["random"][s] for s in got["suggest"] if s in got["random"]
            ]
            pooled[round_] += diffs

            def mean(d: dict) -> str:
                return f"{sum(d.values()) / len(d):.3f} ({len(d)})" if d else "-"

            lines.append(
                f"| {name} | {round_} | {4 * round_} | {mean(got['suggest'])} | "
                f"{mean(got['random'])} | {interval(diffs)} |"
            )
    for round_, diffs in sorted(pooled.items()):
        lines.append(f"| all | {round_} | {4 * round_} | | | {interval(diffs)} |")
    return lines


def zero_table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| set | embedded model as it is |", "|---|---|"]
    for r in records:
        if r["name"].startswith("zero-"):
            lines.append(f"| {r['set']} | {r['iou']:.3f} |")
    return lines


def coverage(records: list[dict[str, Any]]) -> list[str]:
    """Which runs of the full grid have a result file, per queue and budget."""
    names = {r["name"] for r in records}
    lines = ["| queue | grid | done | missing |", "|---|---|---|---|"]
    for budget in (60, 120, 180):
        grid = [
            f"curves-{s}-{a}-k{k}-b{budget}-s{seed}"
            for seed in (0, 1, 2)
            for s in ("inria", "massachusetts", "spacenet")
            for k in (1, 2, 4, 8)
            for a in ("init", "scratch")
        ]
        done = [n for n in grid if n in names]
        lines.append(
            f"| curves, {budget} s | 3 sets x 4 counts x 2 arms x 3 seeds | "
            f"{len(done)} of {len(grid)} | {len(grid) - len(done)} |"
        )
    grid = [
        f"loop-{s}-{a}-s{seed}-r{r}"
        for seed in (0, 1, 2)
        for s in ("inria", "massachusetts")
        for a in ("suggest", "random")
        for r in (1, 2, 3)
    ]
    done = [n for n in grid if n in names]
    lines.append(
        f"| loop, 120 s | 2 sets x 2 arms x 3 seeds x 3 rounds | {len(done)} of {len(grid)} | "
        f"{len(grid) - len(done)} |"
    )
    return lines


TABLES = {
    "RESULTS_CHOOSE": choose_table,
    "RESULTS_CONDITIONS": conditions,
    "RESULTS_CURVES": curve_tables,
    "RESULTS_LOOP": loop_table,
    "RESULTS_ZERO": zero_table,
    "RESULTS_COVERAGE": coverage,
}


def report(runs: Path, into: Path | None = None) -> None:
    """Print the tables; with ``into``, also write them into that report between its markers.

    A marker is a line ``<!-- RESULTS_X -->`` (the table follows, up to ``<!-- /RESULTS_X -->``)
    or, the first time, a line ``RESULTS_X`` alone.
    """
    records = load(runs)
    text = into.read_text() if into else ""
    for marker, table in TABLES.items():
        body = "\n".join(table(records))
        print(f"\n{marker}\n\n{body}")
        block = f"<!-- {marker} -->\n{body}\n<!-- /{marker} -->"
        start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
        if start in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        else:
            text = text.replace(f"\n{marker}\n", f"\n{block}\n")
    if into:
        into.write_text(text)
