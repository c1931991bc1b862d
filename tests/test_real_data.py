"""The ``real`` fixture: skips with one line without the shared data, fails when CI requires it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_real_data_folder(real: Path) -> None:
    assert (real / "spacenet-solaris" / "sample_geotiff.tif").is_file()


def run_fixture_test(tmp_path: Path, require: str) -> subprocess.CompletedProcess[str]:
    """Run ``test_real_data_folder`` in a fresh pytest with the real data pointed away."""
    env = dict(os.environ, GEOFUSE_REAL_DATA=str(tmp_path / "absent"),
               GEOFUSE_REQUIRE_REAL_DATA=require)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"{Path(__file__).name}::test_real_data_folder"],
        cwd=ROOT / "tests", env=env, capture_output=True, text=True, timeout=300)


def test_missing_real_data_skips_with_one_line(tmp_path: Path) -> None:
    run = run_fixture_test(tmp_path, "")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    lines = [line for line in run.stdout.splitlines() if "real data not found" in line]
    assert len(lines) == 1 and str(tmp_path / "absent") in lines[0], run.stdout


def test_missing_real_data_fails_when_required(tmp_path: Path) -> None:
    run = run_fixture_test(tmp_path, "1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout and "real data not found" in run.stdout  # a fixture's failure
    assert "Traceback" not in run.stdout


@pytest.mark.parametrize("value", ["0", ""])
def test_require_flag_off_values(tmp_path: Path, value: str) -> None:
    assert run_fixture_test(tmp_path, value).returncode == 0
