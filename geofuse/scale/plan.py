"""Planning a batch: which scenes, which outputs, what is already done, and the folder lock.

Scenes come from a folder (``IN_DIR``, matched with a pattern, optionally recursive), from a
list file: one scene per line, a local path (relative to the list's folder) or any name GDAL
opens (``https://...``, ``/vsizip/...``, ``s3://...``), kept exactly as written; blank lines
and lines starting with ``#`` are skipped; or from a STAC file (``.json``: an ItemCollection,
item, catalogue or collection), one asset of each item (:mod:`geofuse.read.stac`), the
outputs named by the item ids.

Outputs mirror the input folders: ``IN_DIR/a/b.tif`` becomes ``OUT_DIR/a/b.tif`` (the suffix
is always ``.tif``), probabilities ``OUT_DIR/a/b.probs.tif``, polygons ``OUT_DIR/a/b.gpkg``
(or ``.geojson``), quick-looks ``OUT_DIR/a/b.png``. Scenes of a list go straight into
``OUT_DIR`` under their file names. A scene is skipped on resume when all its outputs are
complete (:func:`outputs_complete`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geofuse.config import BatchConfig, SegmentConfig, StacConfig, TilingConfig
from geofuse.errors import InputError, OutputError
from geofuse.model.spec import ModelInfo
from geofuse.read.reader import SceneReader
from geofuse.read.stac import is_stac_file, output_name, read_stac_scenes
from geofuse.sources import Source, as_source, source_name
from geofuse.write.outputs import TAGS, hold_lock, remove_stale_temps

LOCK_NAME = ".geofuse-batch.lock"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SceneJob:
    """One scene and the outputs it maps to.

    Attributes:
        scene: The scene: a local path or a GDAL name.
        name: How the report names it: the path relative to the input folder (POSIX style), or
            the line of the list file.
        mask: The class mask.
        probabilities: The probabilities, when asked for.
        vector: The polygons, when asked for.
        preview: The quick-look PNG, when asked for.
        stac: How its STAC item is made: its id, and the scene's STAC item when it came
            from one (:class:`~geofuse.config.StacConfig`).

    """

    scene: Source
    name: str
    mask: Path
    probabilities: Path | None
    vector: Path | None = None
    preview: Path | None = None
    stac: StacConfig | None = None

    @property
    def outputs(self) -> list[Path]:
        """Every file this scene produces."""
        return [p for p in (self.mask, self.probabilities, self.vector, self.preview) if p]


def find_scenes(in_dir: Path, pattern: str, recursive: bool,
                exclude: Path | None = None) -> list[Path]:
    """Scene files under ``in_dir`` matching ``pattern``, sorted.

    Hidden files and folders (dot-prefixed, e.g. temporary outputs) and anything under
    ``exclude`` (an output folder inside the input folder) are left out.
    """
    if not in_dir.is_dir():
        raise InputError(f"{in_dir}: no such folder")
    found = in_dir.rglob(pattern) if recursive else in_dir.glob(pattern)
    excluded = exclude.resolve() if exclude is not None else None
    scenes = []
    for path in found:
        rel = path.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if excluded is not None and path.resolve().is_relative_to(excluded):
            continue
        scenes.append(path)
    return sorted(scenes)


def read_scene_list(path: Path) -> list[tuple[str, Source]]:
    """The scenes of a list file: ``(line as written, scene)`` for each scene line.

    Raises:
        InputError: When the file cannot be read or lists no scene.

    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable list of scenes ({exc})") from exc
    scenes: list[tuple[str, Source]] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        source = as_source(entry)
        if isinstance(source, Path) and not source.is_absolute():
            source = path.parent / source
        scenes.append((entry, source))
    if not scenes:
        raise InputError(f"{path}: expected one scene per line. Received: none")
    return scenes


def plan_jobs(in_dir: Path, out_dir: Path, config: BatchConfig) -> list[SceneJob]:
    """Map each scene (of a folder or a list file) to its outputs.

    Raises:
        InputError: No such folder, or no scene matches.
        OutputError: ``OUT_DIR`` is ``IN_DIR``, or two scenes would write the same output.

    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    stac: dict[str, StacConfig] = {}  # by entry: the item ids and source items of STAC input
    if in_dir.is_file() and is_stac_file(in_dir):
        entries = []
        for found in read_stac_scenes(in_dir, config.asset):
            stac[found.item_id] = StacConfig(found.item_id, source_item=found.item_href,
                                             source_time=found.time)
            entries.append((found.item_id, found.scene,
                            Path(output_name(found.item_id) + ".tif")))
    elif config.asset is not None:
        kind = "list of scenes" if in_dir.is_file() else "folder"
        raise InputError(f"{in_dir}: expected a STAC file (.json) to take asset "
                         f"{config.asset!r} from. Received: a {kind}")
    elif in_dir.is_file():
        entries = [(entry, source, Path(source_name(source)))
                   for entry, source in read_scene_list(in_dir)]
    else:
        if out_dir.resolve() == in_dir.resolve():
            raise OutputError(f"{out_dir}: expected an output folder different from the input "
                              "folder")
        scenes = find_scenes(in_dir, config.pattern, config.recursive, exclude=out_dir)
        if not scenes:
            where = "under" if config.recursive else "in"
            raise InputError(f"{in_dir}: expected scenes matching {config.pattern!r} {where} "
                             "this folder. Received: none")
        entries = [(s.relative_to(in_dir).as_posix(), s, s.relative_to(in_dir)) for s in scenes]
    vector_suffix = ".geojson" if config.segment.vectorize.format == "geojson" else ".gpkg"
    jobs, owner = [], {}
    for name, scene, rel in entries:
        if not rel.name:
            raise InputError(f"{scene}: expected a scene file name at the end")
        job = SceneJob(
            scene, name, out_dir / rel.with_suffix(".tif"),
            out_dir / rel.with_name(rel.stem + ".probs.tif") if config.probabilities else None,
            out_dir / rel.with_suffix(vector_suffix) if config.vector else None,
            out_dir / rel.with_suffix(".png") if config.preview else None,
            stac.get(name) or StacConfig(rel.with_suffix("").as_posix().replace("/", "-")),
        )
        for out in job.outputs + ([f"STAC item {job.stac.item_id}"] if config.stac else []):
            if out in owner:
                raise OutputError(f"{out}: expected one scene per output. Received: "
                                  f"{owner[out]} and {name} (rename one)")
            owner[out] = name
        jobs.append(job)
    return jobs


def remove_job_temps(job: SceneJob) -> int:
    """Delete every temporary file a killed run left beside this job's outputs; return how many.

    The caller holds the output folder's lock (:func:`exclusive`), so no live batch owns them.
    """
    from geofuse.segment import scratch_probabilities

    outputs = job.outputs + ([scratch_probabilities(job.vector)] if job.vector else [])
    return sum(remove_stale_temps(out, any_owner=True) for out in outputs)


def _output_matches(path: Path, src: Any, config: SegmentConfig, digest: str,
                    count: int | None) -> bool:
    with rasterio.open(path) as dst:
        if (dst.width, dst.height) != (src.width, src.height) or dst.crs != src.crs:
            return False
        if not dst.transform.almost_equals(src.transform) or (count and dst.count != count):
            return False
        tags, tiling = dst.tags(), config.tiling
        expected = {TAGS.MODEL_SHA256: digest, TAGS.TILE: tiling.label,
                    TAGS.OVERLAP: str(tiling.overlap), TAGS.BLEND: tiling.blend,
                    TAGS.TTA: config.tta}
        if any(tags.get(k) != v for k, v in expected.items()):
            return False
        dst.read(window=Window(dst.width - 1, dst.height - 1, 1, 1))  # the last block decodes
    return True


def check_scene(job: SceneJob, config: SegmentConfig,
                info: ModelInfo) -> tuple[float, TilingConfig]:
    """Open a scene the way ``segment_scene`` will: its megapixels and the tiling it gets.

    Catches unreadable files, wrong band counts and unsupported data types before any worker
    starts, with the same messages. Raises InputError.
    """
    with SceneReader(job.scene, bands=config.tiling.bands, model=info,
                     adapt=config.input) as reader:  # the model's input contract too
        tiling = config.tiling_for(reader.height, reader.width, info.spec.arch.multiple)
        return reader.dataset.width * reader.dataset.height / 1e6, tiling


def _product_complete(path: Path, mask_mtime: float) -> bool:
    """A polygon file or quick-look made with (after) the current mask, and readable."""
    try:
        if path.stat().st_mtime < mask_mtime:
            return False
        if path.suffix == ".png":
            with open(path, "rb") as f:
                return f.read(8) == PNG_SIGNATURE
        from pyogrio import read_info

        read_info(path, layer=0)  # the polygons (a GeoPackage also holds their style)
    except Exception:  # noqa: BLE001 - missing, truncated, unreadable: redo it
        return False
    return True


def outputs_complete(job: SceneJob, config: SegmentConfig, digest: str, classes: int) -> bool:
    """Tell whether all of a scene's outputs are finished and match it.

    Finished means: rasters with the scene's size, CRS and transform, tagged with this model's
    digest and this tile/overlap/blend/TTA, whose last pixel decodes; polygons and quick-looks
    that open and are no older than the mask.
    """
    rasters = [(job.mask, 1)] + ([(job.probabilities, classes)] if job.probabilities else [])
    if not all(path.is_file() for path in job.outputs):
        return False
    try:
        with rasterio.open(job.scene) as src:
            if not all(_output_matches(p, src, config, digest, n) for p, n in rasters):
                return False
    except (RasterioError, OSError):
        return False
    mtime = job.mask.stat().st_mtime
    return all(_product_complete(p, mtime) for p in (job.vector, job.preview) if p)


@contextlib.contextmanager
def exclusive(out_dir: Path, what: str = "geofuse batch") -> Iterator[None]:
    """Hold a lock on ``out_dir`` so two batches never write (and clean) the same folder.

    The lock file (``OUT_DIR/.geofuse-batch.lock``, :func:`~geofuse.write.outputs.hold_lock`)
    is removed when the batch ends. ``what`` names the other run in the error
    (``segment --workers`` locks its parts folder too).
    """
    with hold_lock(out_dir / LOCK_NAME, f"{out_dir}: another {what} is writing here"):
        yield
