"""Answers that need no network come without TensorFlow: ``info`` and refusals of a scene.

Each command runs in a fresh interpreter that says at exit whether ``tensorflow`` was
imported (``sys.modules``: geofuse hides TensorFlow's import banner, and with it what
``-X importtime`` would print during that import).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from affine import Affine

from tests.helpers import ROOT, write_geotiff

PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules,"
    " file=sys.stderr))\n"
    "sys.argv = ['geofuse', *sys.argv[1:]]\n"
    "runpy.run_module('geofuse.cli', run_name='__main__')\n"
)
AT_04 = Affine(0.4, 0.0, 500_000.0, 0.0, -0.4, 5_000_000.0)


def geofuse(*args: object) -> tuple[int, str, bool]:
    """``(exit code, stderr without the probe's line, whether TensorFlow was imported)``."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = run.stderr.splitlines()
    probe = [line for line in lines if line.startswith("tensorflow imported:")]
    assert len(probe) == 1, run.stderr
    rest = "\n".join(line for line in lines if not line.startswith("tensorflow imported:"))
    return run.returncode, rest + run.stdout, probe[0].endswith("True")


def test_info_of_the_default_model_without_tensorflow() -> None:
    code, output, tensorflow = geofuse("info", "default")
    assert code == 0, output
    assert "classes: land, building, road, water, vegetation" in output
    assert not tensorflow


def test_refusals_without_tensorflow(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    int16 = write_geotiff(
        tmp_path / "landsat.tif",
        rng.integers(0, 3000, (3, 64, 64), dtype=np.int16),
        transform=AT_04,
    )
    rgb = write_geotiff(
        tmp_path / "rgb.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8), transform=AT_04
    )
    cases = [
        (
            ["segment", int16, tmp_path / "a.tif"],
            f"Expected uint8 input. Received: int16 in {int16}",
        ),
        (
            ["segment", tmp_path / "missing.tif", tmp_path / "b.tif"],
            f"{tmp_path / 'missing.tif'}: no such file",
        ),
        (
            ["segment", rgb, tmp_path / "c.tif", "--bands", "1,2,5"],
            f"Expected band numbers between 1 and 3. Received: 5 for {rgb}",
        ),
    ]
    for args, message in cases:
        code, output, tensorflow = geofuse(*args, "--quiet")
        assert code == 1, output
        assert f"Error: {message}" in output
        assert not tensorflow, args
        assert not (tmp_path / args[2].name).exists()


def test_the_probe_sees_tensorflow_when_a_scene_is_segmented(tmp_path: Path) -> None:
    rgb = write_geotiff(
        tmp_path / "rgb.tif",
        np.random.default_rng(1).integers(0, 255, (3, 64, 64), dtype=np.uint8),
        transform=AT_04,
    )
    code, output, tensorflow = geofuse(
        "segment", rgb, tmp_path / "mask.tif", "--quiet", "--runtime", "tensorflow"
    )
    assert code == 0, output
    assert tensorflow
