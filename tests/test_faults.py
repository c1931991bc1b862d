"""Faults injected into real runs: dying Dask workers and schedulers, full disks, two runs.

Each fault is made to happen, not simulated: a worker process of the local cluster is killed
with SIGKILL in the middle of a band or scene, an external ``dask scheduler`` is killed, the
file-size limit (``ulimit -f``) or a tiny filesystem makes a write fail with EFBIG or ENOSPC,
and a second ``segment`` starts on the output of a first. Every run goes through the CLI in
its own process; the tests check exit codes, the one-line messages, that the outputs equal a
single-process run's to the pixel, and that no temporary file is left.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from tests.conftest import write_geotiff

TILING = ["--tile", "32", "--overlap", "8", "--batch-size", "1", "--runtime", "tensorflow"]
OWNER = re.compile(r"\.(\d+)-[0-9a-f]{6}\.[a-z0-9_]{8}\.")  # temporaries: .NAME.<pid>-<host>.


def scene_image(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Smooth-ish random RGB, so the tiny model's classes vary over the scene."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 255, (3, height // 8 + 1, width // 8 + 1))
    image = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
    return (image + rng.integers(0, 40, image.shape)).clip(1, 255).astype(np.uint8)


def cli(*args: str, limit: int | None = None, **kwargs) -> subprocess.Popen:
    """``geofuse ARGS`` in its own process (and session), optionally under ``ulimit -f``."""

    def set_limit() -> None:
        if limit is not None:  # Python ignores SIGXFSZ: an oversized write fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(
        [sys.executable, "-m", "geofuse.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        preexec_fn=set_limit, start_new_session=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """Wait for ``proc``; its exit code and standard error (its whole group killed after)."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        with_group(proc, signal.SIGKILL)
    return proc.returncode, stderr


def with_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def error_lines(stderr: str) -> list[str]:
    """The lines geofuse wrote (GDAL's libtiff may add its own, e.g. '_tiffWriteProc: ...')."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith(("Error", "Warning"))]


def hidden(folder: Path) -> list[str]:
    """Dot-prefixed files and folders anywhere under ``folder``: temporaries, parts, locks."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(), {"crs": ds.crs, "transform": ds.transform, "shape": ds.shape,
                           "tags": ds.tags(), "overviews": ds.overviews(1)}


def assert_same(path: Path, reference: Path) -> None:
    data, facts = read(path)
    expected, expected_facts = read(reference)
    np.testing.assert_array_equal(data, expected)
    assert facts == expected_facts


def reference(args: list[str], out: Path) -> None:
    """The single-process run (in this process: it is the yardstick, not the fault)."""
    result = CliRunner().invoke(main, ["segment", *args[:1], str(out), *args[1:], "-q"])
    assert result.exit_code == 0, result.output


# -- worker death ----------------------------------------------------------------------------
def worker_processes(proc: subprocess.Popen) -> dict[int, psutil.Process]:
    """The worker processes of the local Dask cluster a CLI run started (spawned children)."""
    workers = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers[child.pid] = child
        except psutil.Error:
            continue
    return workers


def kill_a_busy_worker(proc: subprocess.Popen, folder: Path,
                       ready: Callable[[], bool] = lambda: True) -> int:
    """SIGKILL the worker that is writing a temporary file in ``folder``, once ``ready()``.

    The temporary files name their process, so the worker killed is one in the middle of a
    band (or scene): its work is lost and must be redone.
    """
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()}"
        if ready() and folder.is_dir():
            workers = worker_processes(proc)
            for path in folder.glob(".*"):
                owner = OWNER.search(path.name)
                if owner and int(owner[1]) in workers:
                    workers[int(owner[1])].kill()
                    return int(owner[1])
        time.sleep(0.02)
    pytest.fail("no worker was seen writing")


@pytest.mark.slow
def test_segment_survives_a_worker_killed_mid_band(tmp_path: Path, tiny_models) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_image(512, 256))
    model = str(tiny_models())
    args = [str(scene), "--model", model, *TILING, "--probabilities"]
    out = tmp_path / "run"
    proc = cli("segment", args[0], str(out / "m.tif"), *args[1:], str(out / "p.tif"),
               "--workers", "2", "-q")
    parts = out / ".m.tif.parts"
    killed = kill_a_busy_worker(proc, parts, lambda: any(parts.glob("*.done.json")))
    code, stderr = finish(proc)
    assert code == 0, stderr
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == "zombie"
    (line,) = error_lines(stderr)
    assert re.fullmatch(rf"Warning: 1 Dask worker lost mid-run and [12] bands? run again, so "
                        rf"{re.escape(str(out / 'm.tif'))} is whole", line), line
    ref = tmp_path / "ref"
    reference([*args, str(ref / "p.tif")], ref / "m.tif")
    assert_same(out / "m.tif", ref / "m.tif")
    assert_same(out / "p.tif", ref / "p.tif")
    assert hidden(out) == [] and sorted(p.name for p in out.iterdir()) == ["m.tif", "p.tif"]


# -- scheduler death -------------------------------------------------------------------------
def start_scheduler(folder: Path) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    """A ``dask scheduler`` and a ``dask worker`` on loopback: (scheduler, worker, address)."""
    file = folder / "scheduler.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env,
             "start_new_session": True}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(file)], **quiet)
    deadline = time.monotonic() + 120
    while not file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(file.read_text())["address"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
         "--nworkers", "1", "--no-dashboard", "--local-directory", str(folder / "dw")],
        **quiet)
    return scheduler, worker, address


@pytest.mark.slow
def test_a_lost_scheduler_is_one_line_and_a_rerun_resumes(tmp_path: Path, tiny_models) -> None:
    """Then a rerun under a file-size limit fails to write the probabilities' COG (EFBIG), and
    a last one resumes from the finished bands without any cluster."""
    scene = write_geotiff(tmp_path / "s.tif", scene_image(1024, 256))
    model = str(tiny_models())
    out = tmp_path / "run"
    options = ["--model", model, *TILING, "--probability-dtype", "float32", "--probabilities",
               str(out / "p.tif"), "-q"]
    parts = out / ".m.tif.parts"
    scheduler, worker, address = start_scheduler(tmp_path)
    try:
        proc = cli("segment", str(scene), str(out / "m.tif"), *options, "--scheduler", address)
        deadline = time.monotonic() + 300
        while not any(parts.glob("*.done.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        scheduler.kill()
        code, stderr = finish(proc)
    finally:
        for server in (worker, scheduler):
            with_group(server, signal.SIGKILL)
            server.wait(timeout=60)
    assert code == 1, stderr
    (line,) = error_lines(stderr)
    finished = re.fullmatch(rf"Error: {address}: lost the Dask scheduler mid-run; (\d) of 2 bands "
                            rf"of {re.escape(str(scene))} are finished and kept \(run the same "
                            r"command again to resume\)", line)
    assert finished and int(finished[1]) >= 1, line
    assert not (out / "m.tif").exists() and not (out / "p.tif").exists()
    kept = sorted(p.name for p in parts.glob("*.done.json"))

    # The rerun finishes the missing bands, then cannot write the float32 probabilities' COG
    # (larger than any part) under a 2 MB limit: the finished parts stay for the next rerun.
    limited = cli("segment", str(scene), str(out / "m.tif"), *options, "--workers", "1",
                  limit=2_000_000)
    code, stderr = finish(limited)
    assert code == 1, stderr
    assert error_lines(stderr) == [
        f"Error: {out / 'p.tif'}: cannot write (file too large: the file-size limit (ulimit -f) "
        "is 2000000 bytes)"]
    assert set(kept) < {p.name for p in parts.glob("*.done.json")}
    assert not (out / "p.tif").exists()
    assert [p for p in hidden(out) if not p.startswith(".m.tif.parts")] == []

    last = cli("segment", str(scene), str(out / "m.tif"), *options, "--workers", "1",
               "--overwrite")
    code, stderr = finish(last)
    assert code == 0 and error_lines(stderr) == [], stderr
    ref = tmp_path / "ref"
    reference([str(scene), *options[:-2], str(ref / "p.tif")], ref / "m.tif")
    assert_same(out / "m.tif", ref / "m.tif")
    assert_same(out / "p.tif", ref / "p.tif")
    assert hidden(out) == []
