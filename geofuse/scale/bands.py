"""``segment_scattered()``: one large scene across a Dask cluster, in bands of tile rows.

The scene's tile grid (the very :class:`~geofuse.read.grid.TileGrid` of a single-process run) is
cut into bands of whole tile rows, one Dask task each. A task runs
:func:`geofuse.segment.segment_scene` restricted to its band (``grid_rows``): it predicts every
tile that reaches the band, so each pixel is blended from the same tiles in the same order as
in one process. It writes the band's rows (mask, and probabilities when asked for or needed by
polygons) as tiled GeoTIFFs into the hidden folder ``.OUT.parts/`` beside OUT, each renamed
into place when complete, then marks the band done with a JSON file (written atomically) that
records the run's key: scene, model SHA-256, grid and every option that changes pixels.

The client joins the parts through a VRT (the first part's metadata, stretched to the scene)
into COGs by :func:`geofuse.write.stitcher.write_cog`, as single-process outputs are made, under a
temporary name renamed at the end; polygons and the quick-look are made from the joined mask.
On success the parts folder is removed. A rerun reuses every part marked with the same key and
splits only the missing tile rows into new bands (any split gives the same pixels, so the
number of workers may change); parts of other settings are deleted. Tile rows that reach
across a band boundary are predicted by both bands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import rasterio
import rasterio.shutil
from rasterio.errors import RasterioError

import geofuse
from geofuse.config import ClusterConfig, SegmentConfig
from geofuse.errors import ConfigError, GeofuseError, OutputError
from geofuse.model.modelfile import file_digest, read_info, resolve_model_path
from geofuse.model.tta import passes
from geofuse.products.stac import describe_outputs
from geofuse.progress import Progress, announce
from geofuse.read.aoi import AreaOfInterest
from geofuse.read.grid import TileGrid
from geofuse.read.rasterfile import is_georeferenced
from geofuse.read.reader import SceneReader
from geofuse.scale.cluster import dask_client, lost_workers, scheduler_lost, worker_slots
from geofuse.scale.plan import exclusive
from geofuse.scale.worker import SceneTask, describe_failure, worker_model
from geofuse.segment import SegmentResult, check_outputs, make_products, run_outputs
from geofuse.sources import Source, absolute_source, as_source
from geofuse.write.failures import check_geotiff_complete, write_failure
from geofuse.write.outputs import atomic_path, locked_outputs, write_json
from geofuse.write.stitcher import write_cog

BANDS_PER_WORKER = 2  # every worker busy; each band boundary costs 2 tile rows predicted twice
MARKER_SUFFIX = ".done.json"

log = logging.getLogger(__name__)


def parts_folder(out: str | Path) -> Path:
    """The hidden folder of a distributed run's parts: ``.OUT.parts`` beside OUT."""
    out = Path(out)
    return out.with_name(f".{out.name}.parts")


def band_name(band: tuple[int, int]) -> str:
    """File name stem of the part of grid rows ``band`` (``rows-00004-00008``)."""
    return f"rows-{band[0]:05d}-{band[1]:05d}"


def plan_bands(rows: int, done: list[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """Split the grid rows that no finished band covers into about ``count`` bands.

    Args:
        rows: Grid rows of the scene.
        done: ``(first, stop)`` grid rows of the finished bands (not overlapping).
        count: Bands wanted for the whole of the missing rows.

    Returns:
        ``(first, stop)`` of the new bands: whole tile rows, at least one each, in order.

    """
    gaps, at = [], 0
    for first, stop in sorted(done):
        if first > at:
            gaps.append((at, first))
        at = max(at, stop)
    if at < rows:
        gaps.append((at, rows))
    missing = sum(stop - first for first, stop in gaps)
    bands: list[tuple[int, int]] = []
    for first, stop in gaps:  # each gap gets its share of the bands, a tile row at least
        pieces = min(stop - first, max(1, round(count * (stop - first) / missing)))
        edges = [first + (stop - first) * i // pieces for i in range(pieces + 1)]
        bands += zip(edges, edges[1:], strict=False)
    return bands


@dataclass(frozen=True)
class BandTask:
    """What a worker needs to make one band (small and picklable).

    Paths are absolute; ``band`` is ``(first, stop)`` grid rows; ``config`` has the scene's
    tiling and the band's probabilities path; ``key`` goes into the marker.

    """

    scene: str
    folder: str
    band: tuple[int, int]
    config: SegmentConfig
    model: str
    digest: str
    tf_threads: int | None
    key: dict[str, Any]


def run_band(task: BandTask) -> dict[str, Any]:
    """Make one band's parts on a worker and mark it done; errors become ``{"error": line}``.

    Returns:
        The marker: ``key``, ``band``, part file names, ``tiles``, ``empty_tiles``,
        ``class_counts``, ``nodata_pixels``, ``runtime``, ``seconds``.

    """
    from geofuse.segment import segment_scene

    start = time.perf_counter()
    folder, name = Path(task.folder), band_name(task.band)
    try:
        loaded, predictor, _ = worker_model(SceneTask(
            task.scene, str(folder / f"{name}.tif"), task.config, task.model, task.digest,
            task.tf_threads))
        result = segment_scene(task.scene, folder / f"{name}.tif", loaded, task.config,
                               predictor=predictor, grid_rows=task.band)
        marker = {
            "key": task.key, "band": list(task.band), "mask": f"{name}.tif",
            "probabilities": f"{name}.probs.tif" if task.config.probabilities else None,
            "tiles": result.tiles, "empty_tiles": result.empty_tiles,
            "class_counts": list(result.class_counts.values()),
            "nodata_pixels": result.nodata_pixels, "runtime": result.runtime,
            "seconds": round(time.perf_counter() - start, 3),
        }
        write_json(folder / f"{name}{MARKER_SUFFIX}", marker)
    except Exception as exc:  # noqa: BLE001 - reported by the client, naming the band
        return {"error": describe_failure(task.scene, exc)}
    return marker


@dataclass(frozen=True)
class ScatterResult(SegmentResult):
    """A :class:`~geofuse.segment.SegmentResult` of a distributed run, plus its bands.

    ``tiles`` counts model inputs over all bands computed now (tile rows next to a band
    boundary twice); ``bands`` is every band of the output, ``reused`` those a previous run
    finished. ``lost_workers`` died (or left) while holding bands of this run; ``redone``
    bands were run again because of them.
    """

    bands: int = 0
    reused: int = 0
    cluster: str = ""
    lost_workers: int = 0
    redone: int = 0


def run_key(scene: Source, digest: str, config: SegmentConfig, grid: TileGrid,
            probabilities: str | None) -> dict[str, Any]:
    """What a finished part must have been made with to be reused (JSON values).

    ``probabilities``: the data type of the parts' probabilities, None without them.
    """
    key: dict[str, Any] = {
        "geofuse": geofuse.__version__, "scene": absolute_source(scene), "model_sha256": digest,
        "grid": [grid.height, grid.width, *grid.shape, grid.overlap],
        "tiling": dataclasses.asdict(config.tiling), "tta": config.tta,
        "input": dataclasses.asdict(config.input), "aoi": config.aoi and str(config.aoi),
        "probabilities": probabilities,
    }
    for name, path in (("scene", as_source(scene)), ("aoi", config.aoi)):
        if isinstance(path, Path) and path.exists():  # a changed file makes new parts
            stat = path.stat()
            key[f"{name}_file"] = [stat.st_size, stat.st_mtime_ns]
    return json.loads(json.dumps(key, default=str))


def finished_bands(folder: Path, key: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """The markers of ``folder`` made with ``key``, not overlapping; delete everything else.

    The caller holds the folder's lock, so no live run of this output owns any file there.
    """
    markers = []
    for path in folder.glob(f"*{MARKER_SUFFIX}"):
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
            first, stop = marker["band"]
            files = [marker["mask"]] + ([marker["probabilities"]] if marker["probabilities"]
                                        else [])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (marker["key"] == key and 0 <= first < stop <= rows
                and path.name == band_name((first, stop)) + MARKER_SUFFIX
                and all((folder / f).is_file() for f in files)):
            markers.append((first, -stop, marker, [path.name, *files]))
    kept, keep, at = [], set(), 0
    for first, _, marker, names in sorted(markers, key=lambda m: m[:2]):
        if first >= at:
            kept.append(marker)
            keep.update(names)
            at = marker["band"][1]
    for path in folder.iterdir():
        if path.name not in keep and not path.name.startswith(".geofuse-"):
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return kept


def join_parts(folder: Path, markers: list[dict[str, Any]], kind: str, grid: TileGrid,
               dest: Path | None, overview_resampling: str) -> Path:
    """Join the parts of ``kind`` (``mask`` or ``probabilities``) into one raster.

    A VRT over the parts is written into ``folder`` (the first part's metadata, stretched to
    the scene); with ``dest`` it is converted into that COG, written under a temporary name
    and renamed into place. Returns ``dest``, or the VRT when ``dest`` is None.

    Raises:
        OutputError: When GDAL cannot read the parts or write ``dest``.

    """
    vrt = folder / f"{kind}.vrt"
    try:
        rasterio.shutil.copy(folder / markers[0][kind], vrt, driver="VRT")
        tree = ElementTree.parse(vrt)
        root = tree.getroot()
        root.set("rasterYSize", str(grid.height))
        for band in root.iter("VRTRasterBand"):
            for old in band.findall("SimpleSource"):
                band.remove(old)
            for marker in markers:
                y0, y1 = grid.band_rows(*marker["band"])
                source = ElementTree.SubElement(band, "SimpleSource")
                ElementTree.SubElement(source, "SourceFilename",
                                       relativeToVRT="1").text = marker[kind]
                ElementTree.SubElement(source, "SourceBand").text = band.get("band")
                size = {"xSize": str(grid.width), "ySize": str(y1 - y0)}
                ElementTree.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
                ElementTree.SubElement(source, "DstRect", xOff="0", yOff=str(y0), **size)
        tree.write(vrt, encoding="unicode")
        if dest is None:
            return vrt
        with atomic_path(dest, ".cog.tif") as tmp:
            write_cog(vrt, tmp, overview_resampling)
            check_geotiff_complete(tmp, dest)  # a full disk never leaves a cut COG
    except (RasterioError, OSError, ElementTree.ParseError) as exc:
        raise write_failure(dest or vrt, exc, None,
                            f"cannot join the parts in {folder}") from exc
    return dest


def _check_scene(scene: Source, info: Any, config: SegmentConfig,
                 notify: Callable[[str], None] | None) -> tuple[SegmentConfig, TileGrid, bool,
                                                                   list[str]]:
    """Open the scene as every task will (same errors, before any task); return its grid."""
    with SceneReader(scene, bands=config.tiling.bands, model=info, adapt=config.input) as reader:
        for notice in reader.notices:
            (notify or log.warning)(notice)
        if reader.resampled:
            raise ConfigError(f"{scene}: expected a scene on the model's pixel size for "
                              "`workers`/`scheduler`. Received: one to be resampled; run it "
                              "without them, or with `resample` off")
        tiling = config.tiling_for(reader.height, reader.width, info.spec.arch.multiple)
        if config.aoi is not None:  # an area missing the scene fails here, not in a task
            AreaOfInterest.load(config.aoi, scene, reader.crs, reader.transform, reader.width,
                                reader.height)
        grid = tiling.grid(reader.height, reader.width)
        return (dataclasses.replace(config, tiling=tiling), grid,
                is_georeferenced(reader.dataset), list(reader.notices))


def segment_scattered(
    scene: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    config: SegmentConfig | None = None,
    cluster: ClusterConfig | None = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> ScatterResult:
    """Segment one scene on a Dask cluster, band by band, into the outputs of ``segment_scene``.

    The outputs are those of :func:`geofuse.segment.segment_scene` to the pixel (mask,
    probabilities, polygons, quick-look; same georeferencing, tags, colours and overviews).
    A scene the model would read resampled is refused. Interrupted runs resume (see the module).

    Args:
        scene: Input raster; with ``cluster.scheduler`` readable by every worker under this
            name (as must be the model, the area of interest and OUT's folder).
        out: Output class mask; its parts go to ``.OUT.parts/`` beside it.
        model: Model file, or None (or ``"default"``) for the embedded default.
        config: As for ``segment_scene``.
        cluster: Local workers or an existing scheduler; default one local worker.
        progress: Optional ``progress(done_bands, total_bands)`` callback.
        notify: Receives the input contract's one-line notices (default: logged as warnings).

    Returns:
        A :class:`ScatterResult`.

    Raises:
        GeofuseError: As ``segment_scene`` for bad input, model, settings or outputs (before
            any task is sent); an unreachable scheduler; a failed band (one line naming the
            scene and the band). OUT is never left partial; finished parts stay for a rerun.

    """
    start = time.perf_counter()
    config, cluster = config or SegmentConfig(), cluster or ClusterConfig()
    scene, out = as_source(scene), Path(out)
    prob_path = check_outputs(out, config)
    model_path = resolve_model_path(model).absolute()
    info = read_info(model_path)
    info.spec.arch.check_tile(config.tiling.shape)
    digest = file_digest(model_path)
    config, grid, georeferenced, notices = _check_scene(scene, info, config, notify)
    rows = len(grid.row_starts)
    need_probs = prob_path is not None or config.vector is not None  # polygons: mean_prob
    band_config = dataclasses.replace(
        config, overwrite=True, probabilities=None, vector=None, preview=None, stac=None,
        probability_dtype=config.probability_dtype if prob_path is not None else "uint8",
        aoi=config.aoi and Path(config.aoi).absolute())
    key = run_key(scene, digest, band_config, grid,
                  band_config.probability_dtype if need_probs else None)
    with _claim_parts(out, config) as folder:
        markers = finished_bands(folder, key, rows)
        computed: list[dict[str, Any]] = []
        lost: dict[str, list[str]] = {}
        reused, description = len(markers), "none: every band was finished"
        if plan_bands(rows, [tuple(m["band"]) for m in markers], 1):
            with dask_client(cluster, rows) as (client, description, threads):
                bands = plan_bands(rows, [tuple(m["band"]) for m in markers],
                                   BANDS_PER_WORKER * worker_slots(client))
                tasks = [BandTask(
                    absolute_source(scene), str(folder.absolute()), band,
                    dataclasses.replace(band_config, probabilities=(
                        folder.absolute() / f"{band_name(band)}.probs.tif"
                        if need_probs else None)),
                    str(model_path), digest, threads, key) for band in bands]
                computed, lost = _run_bands(client, tasks, scene, grid, reused, progress,
                                            cluster.scheduler or description)
        markers = sorted(markers + computed, key=lambda m: m["band"])
        announce(progress, "mask: overviews and COG")
        join_parts(folder, markers, "mask", grid, out, "nearest")
        probs_file = None
        if need_probs:
            if prob_path is not None:
                announce(progress, "probabilities: overviews and COG")
            probs_file = join_parts(folder, markers, "probabilities", grid, prob_path,
                                    "average")
        polygons = make_products(config, scene, out, probs_file, progress)
        item = describe_outputs(config, scene, out, model_path)
        shutil.rmtree(folder)
    tiles = sum(m["tiles"] for m in computed)
    counts = [sum(m["class_counts"][i] for m in markers) for i in range(len(info.classes))]
    return ScatterResult(
        scene=scene, mask=out, probabilities=prob_path, width=grid.width, height=grid.height,
        tiles=tiles, patch_pixels=tiles * math.prod(grid.shape),
        seconds=time.perf_counter() - start,
        class_counts={c.name: n for c, n in zip(info.classes, counts, strict=True)},
        nodata_pixels=sum(m["nodata_pixels"] for m in markers), grid_tiles=len(grid),
        empty_tiles=sum(m["empty_tiles"] for m in markers), tta_passes=passes(config.tta),
        vector=config.vector and Path(config.vector), polygons=polygons,
        preview=config.preview and Path(config.preview), runtime=markers[-1]["runtime"],
        notices=tuple(notices), georeferenced=georeferenced, bands=len(markers),
        reused=reused, cluster=description, item=item, lost_workers=len(lost),
        redone=len({k for keys in lost.values() for k in keys}),
    )


@contextlib.contextmanager
def _claim_parts(out: Path, config: SegmentConfig) -> Iterator[Path]:
    """Lock the run's outputs and OUT's parts folder; yield the folder (removed if empty).

    The outputs' locks come first, so a second run on the same output is refused before it
    touches the parts folder of the first.
    """
    with locked_outputs(run_outputs(out, config)):
        folder = parts_folder(out)
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{out}: cannot create {folder} ({exc.strerror})") from exc
        try:
            with exclusive(folder, "geofuse segment of this output"):
                yield folder
        finally:
            with contextlib.suppress(OSError):
                folder.rmdir()  # a run that made no part leaves nothing behind


def _run_bands(client: Any, tasks: list[BandTask], scene: Source, grid: TileGrid, done: int,
               progress: Progress | None, cluster: str,
               ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Run the band tasks; the first failure cancels the rest.

    A band whose worker dies is run again by the scheduler (on another worker, or the one
    restarted); each result is released once read, so a later death never redoes a band.

    Returns:
        The markers, and the lost workers with the keys of the bands they held
        (:func:`~geofuse.scale.cluster.lost_workers`).

    """
    from dask.distributed import as_completed

    total = done + len(tasks)
    futures = {client.submit(run_band, task, pure=False,
                             key=f"geofuse-band-{band_name(task.band)}-{os.urandom(4).hex()}"):
               task for task in tasks}
    keys = {str(future.key) for future in futures}
    markers = []
    if progress is not None:
        progress(done, total)
    try:
        for future in as_completed(futures):
            task = futures.pop(future)
            y0, y1 = grid.band_rows(*task.band)
            where = (f"band {tasks.index(task) + 1} of {len(tasks)} (tile rows "
                     f"{task.band[0]}-{task.band[1] - 1}, scene rows {y0}-{y1 - 1})")
            try:
                marker = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection, ...
                if scheduler_lost(exc, client):  # the bands marked done on disk are kept
                    kept = len(list(Path(task.folder).glob(f"*{MARKER_SUFFIX}")))
                    raise GeofuseError(
                        f"{cluster}: lost the Dask scheduler mid-run; {kept} of {total} bands "
                        f"of {scene} are finished and kept (run the same command again to "
                        "resume)") from exc
                raise GeofuseError(f"{scene}: the worker died or was lost while processing "
                                   f"{where} ({type(exc).__name__})") from exc
            future.release()
            if marker.get("error"):
                raise GeofuseError(f"{marker['error']} ({where})")
            markers.append(marker)
            if progress is not None:
                progress(done + len(markers), total)
        lost = lost_workers(client, keys)
    finally:
        client.cancel(list(futures))
    return markers, lost
