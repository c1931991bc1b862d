"""Fuzz ``geofuse segment`` with generated GeoTIFF layouts: as many cases as asked.

The layouts and the property (an exact output or exit 1 with one line; never a traceback or
a partial output) are those of ``tests/test_fuzz.py`` (``tests/fuzzkit.py``), which runs 25
fixed cases; this draws new ones each run (or the same ones again with ``--seed``) and stops
at the first case that breaks the property, printing it (``--shrink``: a smallest one).

    python scripts/fuzz_segment.py --examples 500 --json runs/fuzz-500.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="cases to run")
    parser.add_argument("--seed", type=int, default=None, help="draw the same cases again")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="shrink a breaking case to a smallest one (can take many minutes)",
    )
    args = parser.parse_args()

    import logging

    from hypothesis import HealthCheck, Phase, given, seed, settings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing: one model, many runs

    from tests.fuzzkit import Layout, check_run, layouts
    from tests.helpers import make_tiny_model

    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as models_dir:
        models = {b: make_tiny_model(Path(models_dir) / f"tiny{b}.keras", bands=b) for b in (1, 3)}

        phases = [p for p in Phase if args.shrink or p is not Phase.shrink]

        @settings(
            max_examples=args.examples,
            deadline=None,
            database=None,
            phases=phases,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @given(layout=layouts())
        def run(layout: Layout) -> None:
            with tempfile.TemporaryDirectory() as folder:
                outcome = check_run(layout, Path(folder), models)
            outcomes["segmented" if outcome == "segmented" else "refused in one line"] += 1
            kinds[_kind(outcome, folder)] += 1

        if args.seed is not None:
            run = seed(args.seed)(run)
        broken = None
        try:
            run()
        except AssertionError as exc:  # the shrunk case that breaks the property
            broken = str(exc)
    summary = {
        "examples_asked": args.examples,
        "seed": args.seed,
        "cases_run": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "refusals": dict(kinds.most_common()),
        "broken": broken,
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 1 if broken else 0


def _kind(outcome: str, folder: str) -> str:
    """An error line without its file names and numbers: the kind of refusal."""
    if outcome == "segmented":
        return "segmented"
    words = outcome.replace(folder, "").split()
    return " ".join("N" if w.strip("(),.:;").replace(".", "").isdigit() else w for w in words[:12])


if __name__ == "__main__":
    sys.exit(main())
