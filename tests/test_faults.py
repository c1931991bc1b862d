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
from tests.helpers import write_geotiff

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
        [sys.executable, "-m", "geofuse.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        preexec_fn=set_limit,
        start_new_session=True,
        **kwargs,
    )


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


def errors(stderr: str) -> list[str]:
    """The ``Error:`` lines (GDAL's warnings about a cut file come before them as warnings)."""
    return [line for line in error_lines(stderr) if line.startswith("Error")]


def hidden(folder: Path) -> list[str]:
    """Dot-prefixed files and folders anywhere under ``folder``: temporaries, parts, locks."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(), {
            "crs": ds.crs,
            "transform": ds.transform,
            "shape": ds.shape,
            "tags": ds.tags(),
            "overviews": ds.overviews(1),
        }


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


def kill_a_busy_worker(
    proc: subprocess.Popen, folder: Path, ready: Callable[[], bool] = lambda: True
) -> int:
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
    proc = cli(
        "segment",
        args[0],
        str(out / "m.tif"),
        *args[1:],
        str(out / "p.tif"),
        "--workers",
        "2",
        "-q",
    )
    parts = out / ".m.tif.parts"
    killed = kill_a_busy_worker(proc, parts, lambda: any(parts.glob("*.done.json")))
    code, stderr = finish(proc)
    assert code == 0, stderr
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == "zombie"
    (line,) = error_lines(stderr)
    assert re.fullmatch(
        rf"Warning: 1 Dask worker lost mid-run and [12] bands? run again, so "
        rf"{re.escape(str(out / 'm.tif'))} is whole",
        line,
    ), line
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
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "env": env,
        "start_new_session": True,
    }
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(file),
        ],
        **quiet,
    )
    deadline = time.monotonic() + 120
    while not file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(file.read_text())["address"]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            address,
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--no-dashboard",
            "--local-directory",
            str(folder / "dw"),
        ],
        **quiet,
    )
    return scheduler, worker, address


@pytest.mark.slow
def test_a_lost_scheduler_is_one_line_and_a_rerun_resumes(tmp_path: Path, tiny_models) -> None:
    """Then a rerun under a file-size limit fails to write the probabilities' COG (EFBIG), and
    a last one resumes from the finished bands without any cluster."""
    scene = write_geotiff(tmp_path / "s.tif", scene_image(1024, 256))
    model = str(tiny_models())
    out = tmp_path / "run"
    options = [
        "--model",
        model,
        *TILING,
        "--probability-dtype",
        "float32",
        "--probabilities",
        str(out / "p.tif"),
        "-q",
    ]
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
    (line,) = errors(stderr)
    finished = re.fullmatch(
        rf"Error: {address}: lost the Dask scheduler mid-run; (\d) of 2 bands "
        rf"of {re.escape(str(scene))} are finished and kept \(run the same "
        r"command again to resume\)",
        line,
    )
    assert finished and int(finished[1]) >= 1, line
    assert not (out / "m.tif").exists() and not (out / "p.tif").exists()
    kept = sorted(p.name for p in parts.glob("*.done.json"))

    # The rerun finishes the missing bands, then cannot write the float32 probabilities' COG
    # (larger than any part) under a 2 MB limit: the finished parts stay for the next rerun.
    limited = cli(
        "segment", str(scene), str(out / "m.tif"), *options, "--workers", "1", limit=2_000_000
    )
    code, stderr = finish(limited)
    assert code == 1, stderr
    assert errors(stderr) == [
        f"Error: {out / 'p.tif'}: cannot write (file too large: the file-size limit (ulimit -f) "
        "is 2000000 bytes)"
    ]
    # (the worker left without a scheduler may have finished the other band before it was
    # killed: then nothing was missing)
    assert set(kept) <= {p.name for p in parts.glob("*.done.json")}
    assert not (out / "p.tif").exists()
    assert [p for p in hidden(out) if not p.startswith(".m.tif.parts")] == []

    last = cli("segment", str(scene), str(out / "m.tif"), *options, "--workers", "1", "--overwrite")
    code, stderr = finish(last)
    assert code == 0 and error_lines(stderr) == [], stderr
    ref = tmp_path / "ref"
    reference([str(scene), *options[:-2], str(ref / "p.tif")], ref / "m.tif")
    assert_same(out / "m.tif", ref / "m.tif")
    assert_same(out / "p.tif", ref / "p.tif")
    assert hidden(out) == []


@pytest.mark.slow
def test_a_batch_that_loses_its_scheduler_stops_in_one_line_and_resumes(
    tmp_path: Path, tiny_models
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = [f"s{i}.tif" for i in range(6)]
    for i, name in enumerate(names):
        write_geotiff(src / name, scene_image(256, 256, seed=20 + i))
    options = ["--model", str(tiny_models()), *TILING]
    scheduler, worker, address = start_scheduler(tmp_path)
    try:
        proc = cli("batch", str(src), str(out), *options, "--scheduler", address, "-q")
        deadline = time.monotonic() + 300
        while not any((out / n).exists() for n in names) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        scheduler.kill()
        code, stderr = finish(proc)
    finally:
        for server in (worker, scheduler):
            with_group(server, signal.SIGKILL)
            server.wait(timeout=60)
    assert code == 1, stderr
    (line,) = errors(stderr)
    report = json.loads((out / "geofuse-report.json").read_text())
    reported = [r["scene"] for r in report["scenes"] if r["status"] == "done"]
    assert not report["complete"]
    assert line == (
        f"Error: {address}: lost the Dask scheduler mid-run; the finished scenes are kept (run "
        f"the same command again to resume; see {out / 'geofuse-report.json'})"
    )
    # The worker, left without its scheduler, may finish one more scene before it is killed.
    finished = {n: (out / n).stat().st_mtime_ns for n in names if (out / n).exists()}
    assert 1 <= len(reported) and set(reported) <= set(finished) and len(finished) < len(names)

    rerun = cli("batch", str(src), str(out), *options, "--workers", "1", "-q")
    code, stderr = finish(rerun)
    assert code == 0, stderr
    report = json.loads((out / "geofuse-report.json").read_text())
    assert report["complete"] and {
        r["scene"] for r in report["scenes"] if r["status"] == "skipped"
    } == set(finished)
    assert all((out / n).stat().st_mtime_ns == t for n, t in finished.items())
    for name in names:
        reference([str(src / name), *options], tmp_path / "ref" / name)
        assert_same(out / name, tmp_path / "ref" / name)
    assert hidden(out) == []


# -- full disks and file-size limits ---------------------------------------------------------
# The model's file is unpacked on load (its weights, 190 kB), so limits stay above 200 kB; the
# uncompressed temporary of a 768 px mask is 590 kB, of its 3-class probabilities 1.8 MB, its
# quick-look 1536 px a side 865 kB; the polygons of the tiny model's noisy 160 px mask take
# over 300 kB, its probabilities 197 kB.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("output", "side", "extra", "limit", "kept", "reason"),
    [
        (
            "m.tif",
            768,
            [],
            400_000,
            [],
            "cannot write (file too large: the file-size limit (ulimit -f) is 400000 bytes)",
        ),
        (
            "p.tif",
            768,
            ["--probabilities", "p.tif"],
            1_000_000,
            ["m.tif"],
            "cannot write (file too large: the file-size limit (ulimit -f) is 1000000 bytes)",
        ),
        (
            "v.gpkg",
            160,
            ["--vector", "v.gpkg"],
            220_000,
            ["m.tif"],
            "cannot write polygons "
            "(Failed to commit transaction; files over 220000 bytes are refused here (ulimit -f))",
        ),
        (
            "q.png",
            768,
            ["--preview", "q.png", "--preview-size", "1536"],
            700_000,
            ["m.tif"],
            "cannot write the preview "
            "(file too large: the file-size limit (ulimit -f) is 700000 bytes)",
        ),
    ],
    ids=["mask", "probabilities", "polygons", "quick-look"],
)
def test_a_file_size_limit_fails_one_output_in_one_line(
    tmp_path: Path,
    tiny_models,
    output: str,
    side: int,
    extra: list[str],
    limit: int,
    kept: list[str],
    reason: str,
) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_image(side, side))
    out = tmp_path / "out"
    out.mkdir()
    options = ["--model", str(tiny_models()), "--tile", "64", "--runtime", "tensorflow"]
    proc = cli("segment", str(scene), "m.tif", *options, *extra, "-q", limit=limit, cwd=out)
    code, stderr = finish(proc)
    assert code == 1, stderr
    (line,) = errors(stderr)
    assert line.startswith(f"Error: {output}: {reason}") and f"{limit} bytes" in line, line
    assert sorted(p.name for p in out.iterdir()) == kept  # whole outputs made before it only
    ref = tmp_path / "ref"
    for name in kept:
        reference([str(scene), *options], ref / name)
        assert_same(out / name, ref / name)


def in_tiny_filesystem(size: str, folder: Path, *command: str) -> subprocess.CompletedProcess:
    """Run ``command`` in ``folder`` on a fresh tmpfs of ``size`` (a user + mount namespace).

    The filesystem vanishes with the namespace, so the folder's listing is printed to standard
    output after the command, and the command's exit code is returned.
    """
    folder.mkdir()
    namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
    try:
        probe = subprocess.run(
            [*namespace, 'mount -t tmpfs -o size=64k tmpfs "$0"', str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("this system lets no user mount a tmpfs (user namespaces are off)")
    script = (
        'mount -t tmpfs -o size="$0" tmpfs "$1" && cd "$1" && shift && "$@"; code=$?; '
        "ls -A; exit $code"
    )
    return subprocess.run(
        [*namespace, script, size, str(folder), *command],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


@pytest.mark.slow
def test_a_full_disk_fails_the_cog_in_one_line(tmp_path: Path, tiny_models) -> None:
    """The uncompressed temporary mask fits the disk (GDAL checks its space before creating
    it); the compressed COG written beside it does not (ENOSPC), and nothing is left."""
    scene = write_geotiff(tmp_path / "s.tif", scene_image(768, 768))
    run = in_tiny_filesystem(
        "700k",
        tmp_path / "disk",
        sys.executable,
        "-m",
        "geofuse.cli",
        "segment",
        str(scene),
        "m.tif",
        "--model",
        str(tiny_models()),
        "--tile",
        "64",
        "--runtime",
        "tensorflow",
        "-q",
    )
    assert run.returncode == 1, run.stderr
    (line,) = errors(run.stderr)
    assert line.startswith("Error: m.tif: cannot write (no space left on device: "), line
    assert run.stdout == ""  # nothing under any name, no temporary left


@pytest.mark.slow
def test_a_batch_survives_a_killed_worker_and_a_scene_too_large(
    tmp_path: Path, tiny_models
) -> None:
    """Under a 400 kB file-size limit one scene's mask cannot be written: it fails in the report
    while the others finish, and a worker killed mid-scene costs only a rerun of its scenes."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = [f"s{i}.tif" for i in range(4)]
    for i, name in enumerate(names):
        write_geotiff(src / name, scene_image(256, 256, seed=10 + i))
    write_geotiff(src / "big.tif", scene_image(768, 768))  # its mask's temporary: 590 kB
    model = str(tiny_models())
    proc = cli(
        "batch", str(src), str(out), "--model", model, *TILING, "--workers", "2", limit=400_000
    )
    killed = kill_a_busy_worker(proc, out, lambda: any((out / n).exists() for n in names))
    code, stderr = finish(proc)
    assert code == 1, stderr
    report = json.loads((out / "geofuse-report.json").read_text())
    scenes = {r["scene"]: r for r in report["scenes"]}
    assert report["complete"] and report["totals"]["done"] == 4
    assert scenes["big.tif"]["status"] == "failed"
    assert scenes["big.tif"]["error"] == (
        f"{out / 'big.tif'}: cannot write (file too large: the "
        "file-size limit (ulimit -f) is 400000 bytes)"
    )
    ((worker, redone),) = report["lost_workers"].items()
    assert report["workers"].get(worker, {"pid": killed})["pid"] == killed  # that process
    assert redone and set(redone) <= {*names, "big.tif"}
    lines = stderr.strip().splitlines()
    assert lines[-3].startswith("5 scenes: 4 done, 0 skipped, 1 failed"), stderr
    assert lines[-2].startswith("1 Dask worker lost mid-run and ") and "run again: " in lines[-2]
    assert lines[-1] == f"failed: {scenes['big.tif']['error']}"
    assert "Traceback" not in stderr
    for name in names:
        reference([str(src / name), "--model", model, *TILING], tmp_path / "ref" / name)
        assert_same(out / name, tmp_path / "ref" / name)
    assert hidden(out) == []


# -- two runs, one output --------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path, tiny_models) -> None:
    """While a first ``segment`` writes (held still with SIGSTOP, so the second surely starts
    during it), runs that share any output with it are refused in one line; it then finishes
    with its whole result, and no lock or temporary is left."""
    scene = write_geotiff(tmp_path / "s.tif", scene_image(256, 256))
    out = tmp_path / "out"
    options = ["--model", str(tiny_models()), *TILING, "-q"]
    first = cli(
        "segment", str(scene), str(out / "m.tif"), *options, "--probabilities", str(out / "p.tif")
    )
    deadline = time.monotonic() + 300
    while not any(OWNER.search(p.name) for p in out.glob(".p.tif.*")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    with_group(first, signal.SIGSTOP)
    try:
        seconds = [
            cli("segment", str(scene), str(out / "m.tif"), *options, "--overwrite"),
            cli(
                "segment",
                str(scene),
                str(out / "other.tif"),
                *options,
                "--probabilities",
                str(out / "p.tif"),
            ),
        ]
        results = [finish(proc) for proc in seconds]
    finally:
        with_group(first, signal.SIGCONT)
    for (code, stderr), name in zip(results, ("m.tif", "p.tif"), strict=True):
        assert code == 1, stderr
        assert errors(stderr) == [
            f"Error: {out / name}: another geofuse run is writing this output (wait for it to "
            "end, or write elsewhere)"
        ]
    code, stderr = finish(first)
    assert code == 0, stderr
    ref = tmp_path / "ref"
    reference([str(scene), *options[:-1], "--probabilities", str(ref / "p.tif")], ref / "m.tif")
    assert_same(out / "m.tif", ref / "m.tif")
    assert_same(out / "p.tif", ref / "p.tif")
    assert hidden(out) == [] and sorted(p.name for p in out.iterdir()) == ["m.tif", "p.tif"]


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path: Path, tiny_models) -> None:
    """A killed run leaves its lock file, but not its lock (the kernel drops it)."""
    scene = write_geotiff(tmp_path / "s.tif", scene_image(64, 64))
    (tmp_path / ".m.tif.lock").write_text("")
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(scene),
            str(tmp_path / "m.tif"),
            "--model",
            str(tiny_models()),
            "--tile",
            "64",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "s.tif"]
