"""``geofuse batch``: real Dask processes, real GeoTIFFs, the CLI as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.config import BatchConfig, SegmentConfig, TilingConfig
from geofuse.errors import InputError, OutputError
from geofuse.scale.batch import (
    LOCK_NAME,
    REPORT_NAME,
    available_cpus,
    exclusive,
    outputs_complete,
    plan_jobs,
)
from tests.helpers import write_geotiff

TILING = ["--tile", "32", "--overlap", "8", "--batch-size", "2"]
GEO_4326 = Affine(0.0001, 0.0, 13.4, 0.0, -0.0001, 52.5)


def rgb(seed: int, height: int, width: int, dtype: str = "uint8") -> np.ndarray:
    """A smooth-ish random 3-band image, so the tiny model's classes vary over the scene."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (3, height // 8 + 1, width // 8 + 1))
    image = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
    return (image + rng.integers(0, 40, image.shape)).clip(0, 255).astype(dtype)


def corrupt_block(path: Path) -> None:
    """Overwrite the compressed bytes of one block: the header opens, pixels don't decode."""
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {"crs": src.crs, "transform": src.transform, "shape": src.shape}


def georef(path: Path) -> dict:
    return read(path)[1]


def load_report(out_dir: Path) -> dict:
    return json.loads((out_dir / REPORT_NAME).read_text())


def by_scene(report: dict) -> dict[str, dict]:
    return {r["scene"]: r for r in report["scenes"]}


def temp_files(folder: Path) -> list[Path]:
    suffixes = (".part.tif", ".cog.tif", ".part.tif.aux.xml", ".cog.tif.aux.xml")
    return [p for p in folder.rglob(".*") if p.name.endswith(suffixes)]


# -- planning and resume checks (no cluster) -----------------------------------------------------
def test_plan_mirrors_folders_and_skips_hidden_and_output_folder(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    (src / ".cache").mkdir()
    for rel in ["x.tif", "a/y.tif", "a/b/z.tif", ".hidden.tif", ".cache/w.tif", "a/notes.txt"]:
        (src / rel).write_bytes(b"")
    out = src / "results"  # inside the input folder: never scanned
    (out / "a").mkdir(parents=True)
    (out / "a" / "y.tif").write_bytes(b"")

    jobs = plan_jobs(src, out, BatchConfig(recursive=True, probabilities=True))
    assert [j.name for j in jobs] == ["a/b/z.tif", "a/y.tif", "x.tif"]
    assert jobs[0].mask == out / "a" / "b" / "z.tif"
    assert jobs[0].probabilities == out / "a" / "b" / "z.probs.tif"
    flat = plan_jobs(src, out, BatchConfig())
    assert [j.name for j in flat] == ["x.tif"] and flat[0].probabilities is None


def test_plan_refuses_clashes_same_folder_and_empty(tmp_path: Path) -> None:
    (tmp_path / "s.tif").write_bytes(b"")
    (tmp_path / "s.tiff").write_bytes(b"")
    with pytest.raises(OutputError, match=r"expected one scene per output.*s\.tif and s\.tiff"):
        plan_jobs(tmp_path, tmp_path / "out", BatchConfig(pattern="*.tif*"))
    with pytest.raises(OutputError, match="different from the input folder"):
        plan_jobs(tmp_path, tmp_path / ".", BatchConfig())
    with pytest.raises(InputError, match=r"expected scenes matching '\*\.jp2'"):
        plan_jobs(tmp_path, tmp_path / "out", BatchConfig(pattern="*.jp2"))
    with pytest.raises(InputError, match="no such folder"):
        plan_jobs(tmp_path / "missing", tmp_path / "out", BatchConfig())


def test_resume_never_trusts_a_partial_or_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_geotiff(tmp_path / "in" / "s.tif", rgb(0, 40, 40))
    job = plan_jobs(tmp_path / "in", tmp_path / "out", BatchConfig())[0]
    seg = SegmentConfig(tiling=TilingConfig(tile=32, overlap=8))
    job.mask.parent.mkdir()
    assert not outputs_complete(job, seg, "abc", 3)  # missing
    job.mask.write_bytes(b"II*\x00" + b"\x00" * 100)  # truncated TIFF under the final name
    assert not outputs_complete(job, seg, "abc", 3)
    tags = {"GEOFUSE_MODEL_SHA256": "abc", "GEOFUSE_TILE": "32", "GEOFUSE_OVERLAP": "8",
            "GEOFUSE_BLEND": "hann", "GEOFUSE_TTA": "none"}
    write_geotiff(job.mask, np.zeros((1, 40, 40), np.uint8))  # right size, no geofuse tags
    assert not outputs_complete(job, seg, "abc", 3)
    with rasterio.open(job.mask, "r+") as dst:
        dst.update_tags(**tags)
    assert outputs_complete(job, seg, "abc", 3)
    assert not outputs_complete(job, seg, "other-model", 3)
    assert not outputs_complete(job, replace(seg, tta="flips"), "abc", 3)
    write_geotiff(job.mask, np.zeros((1, 40, 32), np.uint8))  # wrong size
    with rasterio.open(job.mask, "r+") as dst:
        dst.update_tags(**tags)
    assert not outputs_complete(job, seg, "abc", 3)


def test_a_worker_keeps_few_predictors_for_scenes_of_many_shapes(tmp_path: Path,
                                                                  tiny_models) -> None:
    """Each scene's fitted tile has its predictor; a worker keeps the most recent few."""
    from geofuse.model.modelfile import file_digest
    from geofuse.model.runtime import PREDICTORS_KEPT
    from geofuse.scale import worker as batch_worker

    model = tiny_models()
    shapes = [(16, 24), (16, 32), (24, 16), (32, 32), (40, 16), (16, 48)]
    predictors = []
    for rows, cols in shapes:
        tiling = TilingConfig(tile=rows, tile_width=cols, overlap=8, fit=False,
                              runtime="tensorflow", batch_size=1)
        task = batch_worker.SceneTask("s.tif", "m.tif", SegmentConfig(tiling=tiling), str(model),
                                      file_digest(model), None)
        _, predictor, _ = batch_worker.worker_model(task)
        predictors.append((task, predictor))
        assert len(batch_worker._predictors) <= PREDICTORS_KEPT
    x = np.zeros((1, 16, 48, 3), np.float32)
    assert predictors[-1][1](x).shape[:3] == (1, 16, 48)  # built for its own shape
    task, predictor = predictors[-2]  # recent: reused
    assert batch_worker.worker_model(task)[1] is predictor
    task, predictor = predictors[0]  # the oldest was let go, and is built again
    assert batch_worker.worker_model(task)[1] is not predictor
    assert len(batch_worker._predictors) == PREDICTORS_KEPT


def test_one_batch_per_output_folder(tmp_path: Path) -> None:
    with exclusive(tmp_path):
        with pytest.raises(OutputError, match="another geofuse batch is writing here"):
            with exclusive(tmp_path):
                pass
    with exclusive(tmp_path):  # released again
        assert (tmp_path / LOCK_NAME).exists()


def test_cli_usage_errors(tmp_path: Path, tiny_models) -> None:
    runner = CliRunner()
    both = runner.invoke(main, ["batch", str(tmp_path), str(tmp_path / "o"), "--workers", "2",
                                "--scheduler", "tcp://127.0.0.1:1"])
    assert both.exit_code == 2 and "not both" in both.output
    empty = runner.invoke(main, ["batch", str(tmp_path), str(tmp_path / "o"),
                                 "--model", str(tiny_models())])
    assert empty.exit_code == 1
    assert f"Error: {tmp_path}: expected scenes matching '*.tif' in this folder" in empty.output
    write_geotiff(tmp_path / "s.tif", rgb(0, 40, 40))
    bad_tile = runner.invoke(main, ["batch", str(tmp_path), str(tmp_path / "o"), "--model",
                                    str(tiny_models()), "--tile", "30"])
    assert bad_tile.exit_code == 1 and "multiple of 4" in bad_tile.output
    assert not (tmp_path / "o").exists()


# -- real clusters --------------------------------------------------------------------------------
@pytest.mark.slow
def test_batch_matches_segment_and_isolates_bad_scenes(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub" / "deeper").mkdir(parents=True)
    good = {
        "a.tif": write_geotiff(src / "a.tif", rgb(1, 64, 80)),
        "b.tif": write_geotiff(src / "b.tif", rgb(2, 32, 32), crs="EPSG:4326",
                               transform=GEO_4326),
        "sub/deeper/d.tif": write_geotiff(src / "sub" / "deeper" / "d.tif",
                                          rgb(4, 40, 72, "uint16")),
    }
    c = rgb(3, 96, 48)
    c[:, :20, :30] = 0  # nodata corner
    good["sub/c.tif"] = write_geotiff(src / "sub" / "c.tif", c, nodata=0)
    write_geotiff(src / "broken.tif", rgb(5, 64, 64), tiled=True, blockxsize=32, blockysize=32,
                  compress="deflate")
    corrupt_block(src / "broken.tif")
    (src / "garbage.tif").write_bytes(b"II*\x00" + os.urandom(2000))
    write_geotiff(src / "sub" / "gray.tif", rgb(6, 48, 48)[:1])
    write_geotiff(src / ".hidden.tif", rgb(7, 32, 32))

    runner = CliRunner()
    # d.tif is uint16, the model uint8: the scenes' values are mapped (the same for all here)
    contract = ["--input-range", "0,255"]
    result = runner.invoke(main, ["batch", str(src), str(out), "--model", str(model), *TILING,
                                  "--recursive", "--probabilities", "--workers", "2", *contract])
    assert result.exit_code == 1, result.output
    assert "7 scenes: 4 done, 0 skipped, 3 failed" in result.output

    report = load_report(out)
    scenes = by_scene(report)
    assert sorted(scenes) == sorted([*good, "broken.tif", "garbage.tif", "sub/gray.tif"])
    assert report["complete"] is True
    assert report["totals"] | {"seconds": 0, "scenes_per_minute": 0, "model_loads": 0} == {
        "scenes": 7, "done": 4, "skipped": 0, "failed": 3, "pending": 0, "seconds": 0,
        "megapixels": round((64 * 80 + 32 * 32 + 96 * 48 + 40 * 72) / 1e6, 3),
        "scenes_per_minute": 0, "model_loads": 0}
    assert "Expected 3 bands. Received: 1 band in" in scenes["sub/gray.tif"]["error"]
    assert "not a readable raster" in scenes["garbage.tif"]["error"]
    assert "cannot read pixels" in scenes["broken.tif"]["error"]
    for name in ("sub/gray.tif", "garbage.tif", "broken.tif"):
        assert scenes[name]["status"] == "failed"
        assert str(src / name) in scenes[name]["error"]
        assert "\n" not in scenes[name]["error"]
        assert f"failed: {scenes[name]['error']}" in result.output
        assert not (out / scenes[name]["output"]).exists()
    assert not (out / "broken.probs.tif").exists() and not temp_files(out)
    # Each worker process loaded the model once, with its share of the cores for TensorFlow.
    workers = report["workers"]
    assert 1 <= len(workers) <= 2
    assert sum(w["scenes"] for w in workers.values()) == 5  # the 4 good + broken (pixel error)
    threads = max(1, available_cpus() // 2)
    for w in workers.values():
        assert w["model_loads"] == 1 and w["tf_threads"] == [threads, threads]

    for name, scene in good.items():
        record = scenes[name]
        assert record["status"] == "done" and record["error"] is None
        assert record["output"] == name and record["probabilities"] == name[:-4] + ".probs.tif"
        ref, ref_probs = tmp_path / "ref.tif", tmp_path / "ref.probs.tif"
        single = runner.invoke(main, ["segment", str(scene), str(ref), "--model", str(model),
                                      *TILING, "--probabilities", str(ref_probs),
                                      "--overwrite", "-q", *contract])
        assert single.exit_code == 0, single.output
        mask, geo = read(out / name)
        expected, expected_geo = read(ref)
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(read(out / record["probabilities"])[0], read(ref_probs)[0])
        assert geo == expected_geo == georef(scene)
        assert len(np.unique(mask)) > 1
    assert (read(out / "sub" / "c.tif")[0][0, :20, :30] == 255).all()  # input nodata kept


def _start_batch(src: Path, out: Path, model: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "geofuse.cli", "batch", str(src), str(out), "--model", str(model),
         "--tile", "32", "--overlap", "16", "--batch-size", "1", "--workers", "1", "-q"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


@pytest.mark.slow
def test_kill_minus_9_then_resume_redoes_only_unfinished(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = [f"s{i}.tif" for i in range(8)]
    for i, name in enumerate(names):
        write_geotiff(src / name, rgb(10 + i, 160, 160))

    proc = _start_batch(src, out, model)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            finished = [n for n in names if (out / n).exists()]
            if finished:
                break
            time.sleep(0.02)
        # SIGKILL the whole process group: the CLI, the nanny and the worker process.
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    before = {n: (out / n).stat().st_mtime_ns for n in names if (out / n).exists()}
    assert 1 <= len(before) < len(names), f"the kill should land mid-run: {sorted(before)}"
    missing = [n for n in names if n not in before]
    # A file that is not a finished output under a final name (e.g. an interrupted copy) and
    # a temporary file of a killed run: neither may be trusted.
    (out / missing[0]).write_bytes(b"II*\x00" + b"\x00" * 500)
    (out / f".{missing[-1]}.x1y2z3.part.tif").write_bytes(b"partial")
    stale = temp_files(out)

    rerun = subprocess.run(
        [sys.executable, "-m", "geofuse.cli", "batch", str(src), str(out), "--model", str(model),
         "--tile", "32", "--overlap", "16", "--batch-size", "1", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"8 scenes: {len(missing)} done, {len(before)} skipped, 0 failed" in rerun.stderr
    report = load_report(out)
    scenes = by_scene(report)
    assert report["stale_temp_files_removed"] == len(stale) >= 1
    assert not temp_files(out)
    for name in names:
        expected_status = "skipped" if name in before else "done"
        assert scenes[name]["status"] == expected_status
        if name in before:
            assert (out / name).stat().st_mtime_ns == before[name]
        with rasterio.open(out / name) as dst:
            mask = dst.read(1)
            assert dst.shape == (160, 160) and dst.transform == georef(src / name)["transform"]
        assert mask.max() < 3
    # Spot-check content: the redone garbage file and one skipped scene equal `geofuse segment`.
    for name in (missing[0], next(iter(before))):
        ref = tmp_path / f"ref-{name}"
        single = CliRunner().invoke(main, ["segment", str(src / name), str(ref), "--model",
                                           str(model), "--tile", "32", "--overlap", "16",
                                           "--batch-size", "1", "-q"])
        assert single.exit_code == 0, single.output
        np.testing.assert_array_equal(read(out / name)[0], read(ref)[0])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@contextlib.contextmanager
def dask_cluster(folder: Path, worker_args: tuple[str, ...] = (),
                 scheduler_env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """Start ``dask scheduler`` and ``dask worker`` processes on loopback; stop them after.

    Yields:
        ``(scheduler address, worker address)``.
    """
    from dask.distributed import Client

    scheduler_file = folder / "scheduler.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env | (scheduler_env or {})))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard", "--local-directory", str(folder / "dw"),
             *worker_args],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            worker = next(iter(client.scheduler_info()["workers"]))
        yield address, worker
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.mark.slow
def test_existing_scheduler_and_worker_processes(tmp_path: Path, tiny_models,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_models()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    scenes = {f"t{i}.tif": write_geotiff(src / f"t{i}.tif", rgb(20 + i, 48, 64)) for i in range(3)}
    with dask_cluster(tmp_path) as (address, worker):
        monkeypatch.chdir(tmp_path)  # relative paths here; the worker runs elsewhere
        args = ["batch", "in", "out", "--model", str(model), *TILING, "--scheduler", address]
        runner = CliRunner()
        first = runner.invoke(main, args)
        assert first.exit_code == 0, first.output
        report = load_report(out)
        assert report["cluster"] == f"scheduler {address}"
        assert {r["status"] for r in report["scenes"]} == {"done"}
        assert {r["worker"] for r in report["scenes"]} == {worker}
        assert report["workers"][worker]["model_loads"] == 1
        for name, scene in scenes.items():
            ref = tmp_path / f"ref-{name}"
            single = runner.invoke(main, ["segment", str(scene), str(ref), "--model", str(model),
                                          *TILING, "-q"])
            assert single.exit_code == 0, single.output
            np.testing.assert_array_equal(read(out / name)[0], read(ref)[0])
            assert georef(out / name) == georef(scene)
        mtimes = {n: (out / n).stat().st_mtime_ns for n in scenes}

        again = runner.invoke(main, args)
        assert again.exit_code == 0, again.output
        assert {r["status"] for r in load_report(out)["scenes"]} == {"skipped"}
        assert mtimes == {n: (out / n).stat().st_mtime_ns for n in scenes}

        redo = runner.invoke(main, [*args, "--no-resume"])
        assert redo.exit_code == 0, redo.output
        report = load_report(out)
        assert {r["status"] for r in report["scenes"]} == {"done"}
        assert all((out / n).stat().st_mtime_ns > mtimes[n] for n in scenes)
        # The long-lived worker kept the model from the first batch.
        assert report["workers"][worker]["model_loads"] == 0

        # Outputs made with other settings are not "finished": resume redoes them.
        tta = runner.invoke(main, [*args, "--tta", "flips"])
        assert tta.exit_code == 0, tta.output
        assert {r["status"] for r in load_report(out)["scenes"]} == {"done"}
        single = runner.invoke(main, ["segment", "in/t0.tif", "ref-tta.tif", "--model",
                                      str(model), *TILING, "--tta", "flips", "-q"])
        assert single.exit_code == 0, single.output
        np.testing.assert_array_equal(read(out / "t0.tif")[0], read(tmp_path / "ref-tta.tif")[0])


DIE_ON_EVERY_SCENE = """
import os
import signal

from distributed import WorkerPlugin


class DieOnScene(WorkerPlugin):
    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("geofuse-"):
            os.kill(os.getpid(), signal.SIGKILL)


async def dask_setup(worker):
    await worker.plugin_add(DieOnScene(), name="die-on-scene")
"""


@pytest.mark.slow
def test_a_dying_worker_fails_its_scenes_not_the_batch(tmp_path: Path, tiny_models) -> None:
    # The worker process kills itself (SIGKILL) as it starts any scene; the nanny restarts it,
    # and the scheduler, allowed no failures, gives the scene up as KilledWorker.
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        write_geotiff(src / f"k{i}.tif", rgb(30 + i, 40, 40))
    preload = tmp_path / "die_on_scene.py"
    preload.write_text(DIE_ON_EVERY_SCENE)
    with dask_cluster(tmp_path, ("--preload", str(preload)),
                      {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}) as (address, _):
        result = CliRunner().invoke(main, ["batch", str(src), str(out), "--model",
                                           str(tiny_models()), *TILING, "--scheduler", address])
    assert result.exit_code == 1, result.output
    report = load_report(out)
    assert report["complete"] and report["totals"]["failed"] == 2
    for record in report["scenes"]:
        assert record["status"] == "failed"
        assert record["error"] == (f"{src / record['scene']}: the worker died or was lost "
                                   "while processing this scene (KilledWorker)")
        assert f"failed: {record['error']}" in result.output
    assert not list(out.glob("*.tif")) and not temp_files(out)


BARE_WORDS = {"tiles", "rows", "images", "scenes", "epochs"}


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.mark.slow
def test_batch_list_of_urls_with_vector_and_preview(tmp_path: Path, served, tiny_models):
    base, folder, _ = served
    model = tiny_models()
    write_geotiff(folder / "remote.tif", rgb(3, 48, 64))
    (tmp_path / "local").mkdir()
    write_geotiff(tmp_path / "local" / "near.tif", rgb(4, 40, 40))
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# two scenes\n{base}/remote.tif\n\nlocal/near.tif\n")
    out = tmp_path / "out"
    args = ["batch", listing, out, "--model", model, "--tile", "32", "--vector", "--preview",
            "--classes", "all", "--workers", "1"]

    first = cli(*args)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert not BARE_WORDS & {line.strip() for line in lines}, lines
    assert f"[1/2] {base}/remote.tif: done" in lines or "[1/2] local/near.tif: done" in lines
    assert "1 worker x" in json.loads((out / "geofuse-report.json").read_text())["cluster"]
    for name in ("remote", "near"):
        for suffix in (".tif", ".gpkg", ".png"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
    report_path = out / "geofuse-report.json"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(report_path.stat().st_mode) == 0o666 & ~umask
    assert not (out / ".geofuse-batch.lock").exists()
    scenes = {s["scene"]: s for s in json.loads(report_path.read_text())["scenes"]}
    assert scenes[f"{base}/remote.tif"]["vector"] == "remote.gpkg"
    assert scenes["local/near.tif"]["preview"] == "near.png"
    with rasterio.open(out / "remote.tif") as ds:
        assert ds.shape == (48, 64) and ds.tags()["GEOFUSE_SOURCE"] == "remote.tif"

    (out / "near.gpkg").unlink()
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "2 scenes: 1 done, 1 skipped, 0 failed" in again.output
    scenes = {s["scene"]: s for s in json.loads(report_path.read_text())["scenes"]}
    assert scenes["local/near.tif"]["status"] == "done"
    assert scenes[f"{base}/remote.tif"]["status"] == "skipped"
    assert (out / "near.gpkg").is_file() and not (out / ".geofuse-batch.lock").exists()
