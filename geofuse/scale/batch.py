"""``segment_directory()``: segment every scene of a folder on a Dask cluster, resumably.

One task per scene runs :func:`geofuse.segment.segment_scene` (the code path of
``geofuse segment``, so outputs are pixel-identical) on a ``dask.distributed`` worker: a
``LocalCluster`` of single-threaded worker processes by default, or an existing scheduler. Each
worker process loads the model once and reuses it (see :mod:`geofuse.scale.worker`).

Scenes come from a folder or a list file (local paths and GDAL names such as URLs), and
outputs mirror the input folders: ``IN_DIR/a/b.tif`` becomes ``OUT_DIR/a/b.tif`` (the suffix
is always ``.tif``), probabilities ``OUT_DIR/a/b.probs.tif``, polygons ``OUT_DIR/a/b.gpkg``,
quick-looks ``OUT_DIR/a/b.png`` (see :mod:`geofuse.scale.plan`). ``segment_scene`` writes each
file under a dot-prefixed temporary name and renames it at the end, so a final name always holds
a complete file. Resuming skips a scene whose outputs open as rasters of the scene's size and
georeferencing, written by the same model with the same tiling (and whose polygons and
quick-look exist); everything else is redone, and temporary files left by a killed run are
deleted first. A failing scene (corrupt, unreadable,
incompatible, or one whose worker died) is recorded with its one-line reason while the others
finish. ``OUT_DIR/geofuse-report.json`` lists every scene, and is rewritten atomically as the
run progresses.

``distributed`` and TensorFlow are imported only when a batch runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geofuse
from geofuse.config import BatchConfig, SegmentConfig
from geofuse.errors import GeofuseError, OutputError, plural
from geofuse.model.modelfile import file_digest, read_info, resolve_model_path
from geofuse.progress import Progress, announce
from geofuse.scale.catalog import scene_stac, write_catalogue, write_model_item
from geofuse.scale.cluster import (  # noqa: F401  (available_cpus: re-exported)
    ClusterConfig,
    available_cpus,
    dask_client,
    lost_workers,
    scheduler_lost,
)
from geofuse.scale.plan import (  # noqa: F401  (re-exported: the batch API in one place)
    LOCK_NAME,
    SceneJob,
    check_scene,
    exclusive,
    find_scenes,
    outputs_complete,
    plan_jobs,
    read_scene_list,
    remove_job_temps,
)
from geofuse.scale.worker import SceneTask, describe_failure, run_scene
from geofuse.sources import absolute_source
from geofuse.write.outputs import write_json

log = logging.getLogger(__name__)

REPORT_NAME = "geofuse-report.json"


@dataclass
class SceneRecord:
    """One line of the report."""

    scene: str
    output: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    megapixels: float = 0.0
    error: str | None = None
    probabilities: str | None = None
    vector: str | None = None
    preview: str | None = None
    worker: str | None = None
    notices: list[str] = field(default_factory=list)  # the model's input contract's


@dataclass
class BatchReport:
    """Outcome of :func:`segment_directory`, as written to ``OUT_DIR/geofuse-report.json``."""

    path: Path
    in_dir: Path
    out_dir: Path
    model: Path
    digest: str
    cluster: str
    scenes: list[SceneRecord]
    seconds: float = 0.0
    complete: bool = False
    stale_removed: int = 0
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost_workers: dict[str, list[str]] = field(default_factory=dict)  # address: scenes redone
    catalogue: Path | None = None  # the STAC collection of the scenes done (config.stac)

    def count(self, status: str) -> int:
        """Return the number of scenes with ``status``."""
        return sum(r.status == status for r in self.scenes)

    @property
    def failed(self) -> list[SceneRecord]:
        """The failed scenes."""
        return [r for r in self.scenes if r.status == "failed"]

    def totals(self) -> dict[str, Any]:
        """Return counts, processed megapixels, wall time, throughput and model loads."""
        done = self.count("done")
        return {
            "scenes": len(self.scenes),
            "done": done,
            "skipped": self.count("skipped"),
            "failed": len(self.failed),
            "pending": self.count("pending"),
            "megapixels": round(sum(r.megapixels for r in self.scenes if r.status == "done"), 3),
            "seconds": round(self.seconds, 3),
            "scenes_per_minute": round(60 * done / self.seconds, 2) if self.seconds else 0.0,
            "model_loads": sum(w["model_loads"] for w in self.workers.values()),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "geofuse_version": geofuse.__version__,
            "complete": self.complete,
            "in_dir": str(self.in_dir),
            "out_dir": str(self.out_dir),
            "model": str(self.model),
            "model_sha256": self.digest,
            "cluster": self.cluster,
            "stale_temp_files_removed": self.stale_removed,
            "stac_collection": self.catalogue and str(self.catalogue),
            "totals": self.totals(),
            "workers": self.workers,
            "lost_workers": self.lost_workers,
            "scenes": [dataclasses.asdict(r) for r in self.scenes],
        }

    def write(self) -> None:
        """Write the report atomically (temporary file, then rename)."""
        write_json(self.path, self.to_dict())

    def summary(self) -> list[str]:
        """Return a few lines for the terminal: counts, throughput, failures, report path."""
        t = self.totals()
        lines = [
            f"{t['scenes']} scenes: {t['done']} done, {t['skipped']} skipped, {t['failed']} "
            f"failed in {self.seconds:.1f} s ({t['scenes_per_minute']:.1f} scenes/min); "
            f"report: {self.path}"
        ]
        if self.lost_workers:
            redone = {s for scenes in self.lost_workers.values() for s in scenes}
            lines.append(f"{plural(len(self.lost_workers), 'Dask worker')} lost mid-run and "
                         f"{plural(len(redone), 'scene')} run again: "
                         + ", ".join(sorted(redone)[:10]) + (" ..." if len(redone) > 10 else ""))
        if self.catalogue is not None:
            lines.append(f"STAC collection: {self.catalogue}")
        lines += [f"failed: {r.error}" for r in self.failed[:10]]
        if len(self.failed) > 10:
            lines.append(f"... and {len(self.failed) - 10} more failures (see the report)")
        return lines


# -- client side --------------------------------------------------------------------------------
def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _record_worker(report: BatchReport, outcome: dict[str, Any]) -> None:
    entry = report.workers.setdefault(
        outcome["worker"], {"pid": outcome["pid"], "scenes": 0, "model_loads": 0,
                            "model_load_seconds": 0.0, "tf_threads": outcome["tf_threads"]})
    entry["scenes"] += 1
    entry["model_loads"] += outcome["model_load_seconds"] > 0
    entry["model_load_seconds"] += outcome["model_load_seconds"]
    entry["tf_threads"] = entry["tf_threads"] or outcome["tf_threads"]
    if outcome.get("runtime"):
        entry["runtime"] = outcome["runtime"]


def segment_directory(
    in_dir: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    config: BatchConfig | None = None,
    progress: Progress | None = None,
) -> BatchReport:
    """Segment every scene of ``in_dir`` into ``out_dir`` on a Dask cluster.

    Args:
        in_dir: Folder of scenes (searched with ``config.pattern``), or a list file: one scene
            per line, a path (relative to the list's folder) or a GDAL name (URL, /vsi...).
        out_dir: Output folder (created); mirrors the input folders.
        model: Model file, or None (or ``"default"``) for the embedded default. With
            ``config.scheduler`` it must be readable by the workers under the same path (as
            must the scenes and outputs).
        config: Batch options; defaults to ``BatchConfig()``.
        progress: Optional ``progress(done_scenes, total_scenes)`` callback.

    Returns:
        The :class:`BatchReport` (also written to ``out_dir/geofuse-report.json``). Failed
        scenes are in it; they do not raise.

    Raises:
        GeofuseError: For problems of the whole batch: no scenes, a bad model or tiling, an
            unusable output folder, an unreachable scheduler.

    """
    start = time.perf_counter()
    config = config or BatchConfig()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    model_path = resolve_model_path(model)
    info = read_info(model_path)
    info.spec.arch.check_tile(config.segment.tiling.shape)
    digest = file_digest(model_path)
    jobs = plan_jobs(in_dir, out_dir, config)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from exc
    seg = dataclasses.replace(config.segment, overwrite=True, probabilities=None, vector=None,
                              preview=None)
    configs: dict[int, SegmentConfig] = {}  # per scene: the tiling segment_scene will use
    sizes: dict[int, float] = {}  # per scene: megapixels
    report = BatchReport(
        path=out_dir / REPORT_NAME, in_dir=in_dir, out_dir=out_dir, model=model_path.resolve(),
        digest=digest, cluster="none",
        scenes=[SceneRecord(j.name, _relative(j.mask, out_dir), "pending",
                            probabilities=j.probabilities and _relative(j.probabilities, out_dir),
                            vector=j.vector and _relative(j.vector, out_dir),
                            preview=j.preview and _relative(j.preview, out_dir))
                for j in jobs],
    )
    with exclusive(out_dir):
        report.stale_removed = sum(remove_job_temps(job) for job in jobs)
        pending: list[int] = []
        for i, job in enumerate(jobs):
            record, t0 = report.scenes[i], time.perf_counter()
            try:
                megapixels, tiling = check_scene(job, seg, info)
                sizes[i] = megapixels
            except Exception as exc:  # noqa: BLE001 - recorded; the other scenes go on
                record.status, record.error = "failed", describe_failure(job.scene, exc)
            else:
                configs[i] = dataclasses.replace(seg, tiling=tiling)
                complete = outputs_complete(job, configs[i], digest, info.spec.classes)
                if not (config.resume and complete):
                    pending.append(i)
                    continue
                record.status, record.megapixels = "skipped", megapixels
            record.seconds = time.perf_counter() - t0
            if progress is not None:
                announce(progress, f"{record.scene}: {record.status}")
                progress(i + 1 - len(pending), len(jobs))
        finished = len(jobs) - len(pending)
        if progress is not None:
            progress(finished, len(jobs))
        try:
            report.write()  # replaces any earlier run's report from the start
            if config.stac:  # before the scenes: their items link to it
                write_model_item(out_dir, model_path)
            if pending:
                finished = _run_pending(report, jobs, pending, config, configs, digest,
                                        progress, finished)
            if config.stac:
                report.catalogue = write_catalogue(out_dir, [
                    job for job, r in zip(jobs, report.scenes, strict=True)
                    if r.status in ("done", "skipped")], seg, model_path)
            report.complete = True
        finally:
            if not report.complete:  # interrupted: what finished is on disk, reported or not
                _count_finished(report, jobs, configs, sizes, digest, info.spec.classes)
            report.seconds = time.perf_counter() - start
            report.write()
    return report


def _count_finished(report: BatchReport, jobs: list[SceneJob], configs: dict[int, SegmentConfig],
                    sizes: dict[int, float], digest: str, classes: int) -> None:
    """Mark the scenes still pending whose outputs are complete on disk as done.

    A worker publishes a scene's outputs before the client hears of it; a run stopped in
    between has finished scenes the report would otherwise call pending (a rerun skips them).
    """
    for i, record in enumerate(report.scenes):
        if record.status == "pending" and i in configs and outputs_complete(
                jobs[i], configs[i], digest, classes):
            record.status, record.megapixels = "done", sizes[i]


def _run_pending(report: BatchReport, jobs: list[SceneJob], pending: list[int],
                 config: BatchConfig, configs: dict[int, SegmentConfig], digest: str,
                 progress: Progress | None, finished: int) -> int:
    from dask.distributed import as_completed

    with dask_client(config.cluster, len(pending)) as (client, description, threads):
        report.cluster = description
        futures = {}
        for i in pending:
            job, record = jobs[i], report.scenes[i]
            try:
                job.mask.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                record.status = "failed"
                record.error = f"{job.mask}: cannot create folder ({exc.strerror})"
                finished += 1
                continue
            # Absolute paths: workers may run in other folders (or on other machines).
            config_i = dataclasses.replace(
                configs[i], probabilities=job.probabilities and job.probabilities.absolute(),
                vector=job.vector and job.vector.absolute(),
                preview=job.preview and job.preview.absolute(),
                stac=scene_stac(job, report.out_dir) if config.stac else None)
            task = SceneTask(absolute_source(job.scene), str(job.mask.absolute()), config_i,
                             str(report.model), digest, threads)
            futures[client.submit(run_scene, task, pure=False, key=f"geofuse-{i}-"
                                  f"{os.urandom(4).hex()}")] = i
        last_write = time.monotonic()
        keys = {str(future.key): jobs[i].name for future, i in futures.items()}
        for future in as_completed(futures):
            i = futures.pop(future)
            record = report.scenes[i]
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection, ...
                if scheduler_lost(exc, client):
                    raise GeofuseError(
                        f"{config.cluster.scheduler or description}: lost the Dask scheduler "
                        f"mid-run; the finished scenes are kept (run the same command again "
                        f"to resume; see {report.path})") from exc
                outcome = {"status": "failed", "seconds": 0.0, "megapixels": 0.0,
                           "worker": None, "error": f"{jobs[i].scene}: the worker died or was "
                           f"lost while processing this scene ({type(exc).__name__})"}
            else:
                _record_worker(report, outcome)
            record.status, record.error = outcome["status"], outcome["error"]
            record.seconds, record.megapixels = outcome["seconds"], outcome["megapixels"]
            record.worker = outcome["worker"]
            record.notices = outcome.get("notices", [])
            finished += 1
            if progress is not None:
                announce(progress, f"{record.scene}: {record.status}")
                progress(finished, len(jobs))
            if time.monotonic() - last_write > 2.0:
                report.write()
                last_write = time.monotonic()
        report.lost_workers = {worker: [keys[k] for k in held] for worker, held in
                               lost_workers(client, set(keys)).items()}
    return finished
