"""Signals and stale temporaries.

SIGTERM and SIGHUP clean up as Ctrl-C does (exit 128 + signal); after a SIGKILL, the next run
for the same outputs removes the temporaries the dead process left, never those of a live one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofuse.write.outputs import remove_stale_temps, reserve_temp
from tests.helpers import write_geotiff


def big_scene(folder: Path) -> Path:
    data = np.random.default_rng(0).integers(1, 255, (3, 1536, 1536), dtype=np.uint8)
    return write_geotiff(folder / "big.tif", data, tiled=True, blockxsize=256, blockysize=256)


def start(scene: Path, folder: Path, model: Path) -> subprocess.Popen:
    """A slow ``segment`` (thousands of 32 px tiles, one per model call) in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "geofuse.cli", "segment", str(scene), str(folder / "m.tif"),
         "--probabilities", str(folder / "p.tif"), "--model", str(model), "--tile", "32",
         "--overlap", "8", "--batch-size", "1", "--runtime", "tensorflow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        preexec_fn=default_sigint,
    )


def default_sigint() -> None:
    """Give the child Ctrl-C's default disposition, whatever this process inherited.

    A job a non-interactive shell starts in the background (``nohup bash .ci/run &``) inherits
    SIGINT *ignored*, and Python then keeps ignoring it, as a background job should: the run
    would finish with exit 0 and the SIGINT case fail for a reason outside geofuse.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def wait_until_writing(proc: subprocess.Popen, folder: Path) -> None:
    """Wait until both outputs have temporary files (the run is predicting tiles)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        names = temporaries(folder)
        if any(n.startswith(".m.tif.") for n in names) and any(n.startswith(".p.tif.")
                                                               for n in names):
            time.sleep(0.5)
            assert proc.poll() is None, "the run ended before the signal: make it longer"
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail("no temporary files appeared")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_leave_only_the_input(tmp_path: Path, tiny_models, signum: int) -> None:
    scene = big_scene(tmp_path)
    proc = start(scene, tmp_path, tiny_models())
    try:
        wait_until_writing(proc, tmp_path)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert f"Interrupted ({name})" in stderr and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


@pytest.mark.slow
def test_after_sigkill_the_next_run_removes_dead_temporaries(tmp_path: Path, tiny_models):
    scene = big_scene(tmp_path)
    model = tiny_models()
    proc = start(scene, tmp_path, model)
    try:
        wait_until_writing(proc, tmp_path)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    dead = temporaries(tmp_path)
    assert dead and proc.returncode == -signal.SIGKILL
    live = reserve_temp(tmp_path / "m.tif", ".part.tif")  # held by this (live) process

    rerun = start(scene, tmp_path, model)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert temporaries(tmp_path) == [live.name]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "big.tif", "m.tif", "p.tif"]
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.shape == (1536, 1536) and ds.read(1, window=((1530, 1536), (0, 6))).max() < 255
    live.unlink()


def test_remove_stale_temps_keeps_live_and_foreign_files(tmp_path: Path) -> None:
    dest = tmp_path / "m.tif"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(ended.stdout)
    ours = reserve_temp(dest, ".part.tif")
    host = ours.name.split(".")[3].split("-")[1]
    dead = tmp_path / f".m.tif.{dead_pid}-{host}.abcd1234.part.tif"
    sidecar = tmp_path / f".m.tif.{dead_pid}-{host}.abcd1234.part.tif.aux.xml"
    elsewhere = tmp_path / f".m.tif.{dead_pid}-000000.abcd1234.part.tif"  # another machine
    legacy = tmp_path / ".m.tif.x1y2z3.part.tif"  # older geofuse: no owner in the name
    unrelated = tmp_path / ".m.tif.notes"
    other_output = tmp_path / f".n.tif.{dead_pid}-{host}.abcd1234.part.tif"
    longer_name = tmp_path / f".m.tif.probs.tif.{dead_pid}-{host}.abcd1234.part.tif"  # not m.tif
    for path in (dead, sidecar, elsewhere, legacy, unrelated, other_output, longer_name):
        path.write_bytes(b"x")
    assert remove_stale_temps(dest) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (ours, elsewhere, unrelated, other_output, longer_name))
    assert remove_stale_temps(dest, any_owner=True) == 2  # ours and the other machine's


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_an_interruption_wrapped_by_a_c_extension_still_exits_as_the_signal(signum: int) -> None:
    """A handler raising inside C code that calls back into Python (TensorFlow converting a
    numpy array) comes out as that code's own error, caused by the interruption."""
    import click
    from click.testing import CliRunner

    from geofuse.cli.app import handle_errors
    from geofuse.interrupts import Terminated

    def interrupt() -> None:
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    @click.command()
    @click.option("--other", is_flag=True)
    @handle_errors
    def run(other: bool) -> None:
        if other:
            raise RuntimeError("a real bug")
        try:
            try:
                interrupt()
            except BaseException as exc:
                raise TypeError("Expected `context` argument in EagerTensor") from exc
        except TypeError as exc:
            raise SystemError("__array__ returned a result with an exception set") from exc

    result = CliRunner().invoke(run, [])
    assert result.exit_code == 128 + signum, result.output
    assert f"Interrupted ({signal.Signals(signum).name})" in result.output
    bug = CliRunner().invoke(run, ["--other"])
    assert bug.exit_code == 1 and isinstance(bug.exception, RuntimeError)
