"""Inject every fault of docs/reliability.md once, and fuzz ``segment``; keep the results.

Runs ``tests/test_faults.py`` and ``tests/test_fuzz.py`` (slow ones included) with a JUnit
report in ``runs/tests-<time>.xml``, then ``scripts/fuzz_segment.py`` with ``--examples`` new
cases into ``runs/fuzz-<examples>-seed<seed>.json`` (``--examples 0``: none). REPORT.md counts
them.

    python scripts/studies/faults/run.py --examples 300 --seed 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    runs = HERE / "runs"
    runs.mkdir(exist_ok=True)
    codes = []
    if not args.skip_tests:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        codes.append(
            subprocess.call(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-rA",
                    "tests/test_faults.py",
                    "tests/test_fuzz.py",
                    f"--junitxml={runs / f'tests-{stamp}.xml'}",
                ],
                cwd=ROOT,
            )
        )
    if args.examples == 0:  # the tests only
        return max(codes, default=0)
    codes.append(
        subprocess.call(
            [
                sys.executable,
                "scripts/fuzz_segment.py",
                "--examples",
                str(args.examples),
                "--seed",
                str(args.seed),
                "--json",
                str(runs / f"fuzz-{args.examples}-seed{args.seed}.json"),
            ],
            cwd=ROOT,
        )
    )
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
