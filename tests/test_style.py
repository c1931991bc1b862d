"""Style: ``ruff check`` on everything, ``ruff format --check`` on the files kept in its format.

The package predates ``ruff format``: formatting all of it would rewrite about 10,000 lines
without changing a behaviour, so only the files listed here are held to it (new files join the
list); every file is held to ``ruff check`` (configured in pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATTED = (
    "docs/conf.py",
    "geofuse/cli/suggest.py",
    "geofuse/errors.py",
    "geofuse/model/tfimport.py",
    "geofuse/model/tta.py",
    "geofuse/read/pixels.py",
    "geofuse/products/suggest.py",
    "geofuse/progress.py",
    "geofuse/read/rasterfile.py",
    "geofuse/sources.py",
    "geofuse/training/classtable.py",
    "geofuse/training/coverage.py",
    "geofuse/training/init.py",
    "geofuse/training/schedule.py",
    "geofuse/training/state.py",
    "geofuse/write/classids.py",
    "geofuse/write/failures.py",
    "scripts/fuzz_segment.py",
    "scripts/readme_commands.py",
    "scripts/studies/faults/run.py",
    "scripts/studies/finetune/loop.py",
    "scripts/studies/finetune/report.py",
    "scripts/studies/finetune/run.py",
    "scripts/studies/finetune/sets.py",
    "scripts/synth_noise.py",
    "scripts/synth_scene.py",
    "tests/fuzzkit.py",
    "tests/test_faults.py",
    "tests/test_fuzz.py",
    "tests/test_products_suggest.py",
    "tests/test_samples.py",
    "tests/test_style.py",
    "tests/test_training_evaluate_labels.py",
    "tests/test_training_init.py",
    "tests/test_training_train_summary.py",
)


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check() -> None:
    run = ruff("check", "--no-cache", "geofuse", "tests", "scripts", "docs")
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_format() -> None:
    run = ruff("format", "--check", "--no-cache", *FORMATTED)
    assert run.returncode == 0, run.stdout + run.stderr
