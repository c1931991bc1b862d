"""``suggest``: the windows of some scenes that labelling should help a model most.

Each scene is segmented exactly as ``segment`` does it (:func:`geofuse.segment.segment_scene`,
same tiling, runtime, input adaptation and nodata), its class probabilities going to a
temporary GeoTIFF that is then read back one row of windows at a time, so a scene of any size
takes the memory of one such row. Every square window of ``size`` pixels on the scene's own grid
(rows and columns ``0, size, 2 * size, ...`` from its origin) gets a score: the model's
uncertainty averaged over its valid pixels, either

- ``margin``: one minus the gap between the two most probable classes (1: a tie, 0: certain),
- ``entropy``: the entropy of the class probabilities over its largest value, ``log(classes)``.

Windows with less than ``min_valid`` of their pixels valid (nodata, outside the scene or the
area the model saw) are no candidates. The ``count`` best are chosen greedily, each at least
``spacing`` window sides (centre to centre) from those chosen before in the same scene, so they
are not all the same place; when too few keep their distance, the next best fill the count
(the caller is told). Windows that overlap an ``exclude`` area (what is labelled already) are
no candidates.

The windows are written as one polygon layer (GeoPackage or GeoJSON) in the first scene's CRS,
best first, with fields ``rank`` (1 = best), ``score``, ``scene`` (the path as given; a URL's
file name), ``valid`` (share of valid pixels), ``row``, ``col`` (the window's pixel offsets in
its scene), ``width`` and ``height`` (pixels; smaller at a scene's last row or column, where
the polygon is cut at the scene's edge). A scene in another CRS has its windows reprojected
(their corners, so they stay quadrilaterals: exact on its grid in its own CRS, and
``row``/``col`` still locate them); scenes without georeferencing give pixel coordinates, and
cannot be mixed with georeferenced ones.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from geofuse.checks import choice, positive_int, require
from geofuse.config import SegmentConfig
from geofuse.errors import InputError, OutputError, first_line
from geofuse.progress import Progress
from geofuse.sources import Source, as_source, source_name
from geofuse.write.outputs import atomic_path, check_destination

MEASURES = ("margin", "entropy")
FIELDS = ("rank", "score", "scene", "valid", "row", "col", "width", "height")
LAYER = "windows"
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
READ_COLUMNS = 16
"""Windows read at a time along a row of windows (bounds the memory on very wide scenes)."""


@dataclass(frozen=True)
class SuggestConfig:
    """One ``suggest`` run.

    Attributes:
        count: How many windows to suggest.
        size: Window side in pixels (on each scene's own grid).
        measure: ``margin`` or ``entropy`` (module docstring).
        spacing: Least distance between the centres of two chosen windows of a scene, in
            window sides (1.5: no two chosen windows touch, not even at a corner; 0: none).
        min_valid: Least share of a window's pixels that must be valid for it to be a
            candidate.
        exclude: Optional vector file (any OGR format and CRS) of areas already labelled:
            windows that overlap them are no candidates.
        segment: How each scene is segmented (tiling, runtime, input adaptation, TTA); its
            output paths are not used.
        overwrite: Replace an existing output.
    """

    count: int = 10
    size: int = 256
    measure: str = "margin"
    spacing: float = 2.0
    min_valid: float = 0.5
    exclude: Path | None = None
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    overwrite: bool = False

    def __post_init__(self) -> None:
        positive_int("count", self.count)
        positive_int("size", self.size)
        choice("measure", self.measure, MEASURES)
        require(
            isinstance(self.spacing, int | float) and self.spacing >= 0,
            f"Expected a spacing >= 0 window sides. Received: {self.spacing!r}",
        )
        require(
            isinstance(self.min_valid, int | float) and 0 < self.min_valid <= 1,
            f"Expected 0 < min_valid <= 1. Received: {self.min_valid!r}",
        )
        if self.exclude is not None:
            object.__setattr__(self, "exclude", Path(self.exclude))


@dataclass(frozen=True)
class Candidate:
    """A window of scene ``scene`` (its index): pixel offsets, score and valid share."""

    scene: int
    row: int
    col: int
    score: float
    valid: float


@dataclass(frozen=True)
class SuggestResult:
    """What :func:`suggest` wrote: the layer, its windows (best first) and the candidates."""

    out: Path
    windows: tuple[dict[str, Any], ...]
    candidates: int
    crs: CRS | None
    notices: tuple[str, ...] = ()


def uncertainty(probabilities: np.ndarray, measure: str) -> np.ndarray:
    """Per-pixel uncertainty, 0 (certain) to 1, of ``(classes, h, w)`` probabilities."""
    p = probabilities.astype(np.float32)
    if measure == "margin":
        top = np.sort(p, axis=0)[-2:]
        return 1.0 - (top[1] - top[0])
    logs = np.log(np.clip(p, 1e-12, 1.0))
    return -(p * logs).sum(axis=0) / math.log(p.shape[0])


def window_scores(
    probabilities: Path, size: int, measure: str, index: int, scale: float
) -> list[Candidate]:
    """The score and valid share of every window of a probability GeoTIFF.

    ``scale`` turns stored values into probabilities; pixels holding the file's nodata in
    the first band are not valid.
    """
    found = []
    with rasterio.open(probabilities) as ds:
        nodata = ds.nodata
        for row in range(0, ds.height, size):
            rows = min(size, ds.height - row)
            for col0 in range(0, ds.width, size * READ_COLUMNS):
                cols = min(size * READ_COLUMNS, ds.width - col0)
                data = ds.read(window=Window(col0, row, cols, rows))
                valid = data[0] != nodata if nodata is not None else np.isfinite(data[0])
                u = np.where(valid, uncertainty(np.nan_to_num(data) * scale, measure), 0.0)
                for col in range(0, cols, size):
                    part = np.s_[:, col : col + size]
                    n = int(valid[part].sum())
                    if n:
                        score = float(u[part].sum() / n)
                        found.append(Candidate(index, row, col0 + col, score, n / size**2))
    return found


def choose(candidates: Sequence[Candidate], count: int, spacing: float, size: int) -> list[int]:
    """Indices of the chosen candidates, best first (greedy, keeping ``spacing`` sides apart).

    When fewer than ``count`` keep their distance, the best of the rest fill the count.
    """
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    least = (spacing * size) ** 2
    chosen: list[int] = []
    for i in order:
        w = candidates[i]
        if all(
            c.scene != w.scene or (c.row - w.row) ** 2 + (c.col - w.col) ** 2 >= least
            for c in (candidates[j] for j in chosen)
        ):
            chosen.append(i)
            if len(chosen) == count:
                return chosen
    rest = [i for i in order if i not in set(chosen)]
    return sorted(chosen + rest[: count - len(chosen)], key=lambda i: -candidates[i].score)


@dataclass(frozen=True)
class _Scene:
    """What the polygons need from a scene: its name, grid and georeferencing."""

    name: str
    width: int
    height: int
    transform: Any
    crs: CRS | None


def _polygon(scene: _Scene, w: Candidate, size: int, crs: CRS | None) -> Any:
    """The window as a polygon (cut at the scene's edge) in ``crs``."""
    from shapely.geometry import Polygon, mapping, shape

    rows = min(size, scene.height - w.row)
    cols = min(size, scene.width - w.col)
    corners = [
        (w.col, w.row),
        (w.col + cols, w.row),
        (w.col + cols, w.row + rows),
        (w.col, w.row + rows),
    ]
    polygon = Polygon([scene.transform * c for c in corners])
    if crs is None or scene.crs is None or scene.crs == crs:
        return polygon
    from rasterio.warp import transform_geom

    return shape(transform_geom(scene.crs, crs, mapping(polygon)))


def _excluded(path: Path, scene: _Scene) -> Any:
    """The union of the areas of ``path`` in the scene's CRS (None: nothing to exclude)."""
    from pyogrio.raw import read
    from shapely import from_wkb, union_all
    from shapely.geometry import mapping, shape

    try:
        meta, _, geometries, _ = read(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types for bad files
        raise InputError(f"{path}: cannot read the areas to exclude ({first_line(exc)})") from exc
    shapes = [g for g in from_wkb(geometries) if g is not None]
    if not shapes:
        return None
    area = union_all(shapes)
    source = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    if source is not None and scene.crs is not None and source != scene.crs:
        from rasterio.warp import transform_geom

        area = shape(transform_geom(source, scene.crs, mapping(area)))
    return area


def _scene_facts(scene: Source) -> _Scene:
    with rasterio.open(scene) as ds:
        name = str(scene) if isinstance(scene, Path) else source_name(scene)  # no URL secrets
        return _Scene(name, ds.width, ds.height, ds.transform, ds.crs)


def _common_crs(scenes: Sequence[_Scene], notices: list[str]) -> CRS | None:
    """The output CRS: the first scene's (a notice when others differ).

    Raises:
        InputError: When georeferenced scenes are mixed with scenes without a CRS.
    """
    crs = scenes[0].crs
    missing = [s.name for s in scenes if s.crs is None]
    if missing and len(missing) < len(scenes):
        raise InputError(
            f"{missing[0]}: expected a CRS like the other scenes (windows of one layer "
            "share a CRS). Received: a scene without one"
        )
    others = sorted({s.name for s in scenes if s.crs is not None and s.crs != crs})
    if others:
        notices.append(
            f"windows of {', '.join(others)} are reprojected to the CRS of {scenes[0].name} "
            f"({crs.to_string()})"
        )
    return crs


def _write(out: Path, polygons: list[Any], rows: list[dict[str, Any]], crs: CRS | None) -> None:
    """The layer, atomically."""
    from pyogrio.raw import write
    from shapely import to_wkb

    driver = DRIVERS[out.suffix.lower()]
    columns = [
        np.array([r[f] for r in rows], dtype=object if f == "scene" else None) for f in FIELDS
    ]
    if not rows:
        columns = [np.array([], dtype=object if f == "scene" else np.float64) for f in FIELDS]
    crs_text = None if crs is None else (f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_wkt())
    with atomic_path(out, ".part" + out.suffix) as tmp:
        tmp.unlink()  # GDAL creates the file itself
        try:
            write(
                tmp,
                np.array(to_wkb(polygons), dtype=object),
                columns,
                list(FIELDS),
                crs=crs_text,
                driver=driver,
                geometry_type="Polygon",
                layer=LAYER,
            )
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
            raise OutputError(f"{out}: cannot write the windows ({first_line(exc)})") from exc


def suggest(
    scenes: Sequence[str | Path],
    out: str | Path,
    model: Any = None,
    config: SuggestConfig | None = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> SuggestResult:
    """Rank windows of ``scenes`` by the model's uncertainty and write the best as polygons.

    Args:
        scenes: Input rasters (files or GDAL names).
        out: The polygon layer to write (``.gpkg`` or ``.geojson``).
        model: A loaded model, a model file, or None for the embedded default.
        config: Window side, count, measure, spacing and how scenes are segmented.
        progress: ``progress(done_tiles, total_tiles)`` of each scene's segmentation.
        notify: Receives one-line notices (reprojected windows, windows too close, the
            input contract's); default: ignored.

    Returns:
        A :class:`SuggestResult`.

    Raises:
        GeofuseError: InputError for a bad scene, OutputError for an existing or unwritable
            output, ModelError for a bad model. Nothing is written under ``out`` on failure.
    """
    from geofuse.model.modelfile import LoadedModel, load_model
    from geofuse.segment import segment_scene

    config = config or SuggestConfig()
    out = Path(out)
    if out.suffix.lower() not in DRIVERS:
        raise OutputError(f"Expected an output ending in .gpkg or .geojson. Received: {out}")
    check_destination(out, config.overwrite)
    require(len(scenes) > 0, "Expected at least one scene. Received: none")
    sources = [as_source(s) for s in scenes]
    facts = [_scene_facts(s) for s in sources]
    notices: list[str] = []
    crs = _common_crs(facts, notices)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    segment = dataclasses.replace(
        config.segment,
        probabilities=None,
        vector=None,
        preview=None,
        overwrite=True,
        probability_dtype="uint8",
    )
    candidates: list[Candidate] = []
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as scratch:
        probs = Path(scratch) / "probabilities.tif"
        for index, source in enumerate(sources):
            run = dataclasses.replace(segment, probabilities=probs)
            segment_scene(
                source, Path(scratch) / "mask.tif", loaded, run, progress, notify=notices.append
            )
            with rasterio.open(probs) as ds:
                scale = ds.scales[0]
            candidates += window_scores(probs, config.size, config.measure, index, scale)
    candidates = [c for c in candidates if c.valid >= config.min_valid]
    if config.exclude is not None:
        candidates = _outside(candidates, config.exclude, facts, config.size)
    picked = choose(candidates, config.count, config.spacing, config.size)
    if len(picked) < config.count:
        notices.append(
            f"{len(picked)} windows of {config.size} px are candidates, fewer than "
            f"the {config.count} asked for"
        )
    elif config.spacing and _crowded(candidates, picked, config.spacing, config.size):
        notices.append(
            f"fewer than {config.count} windows keep `spacing` {config.spacing:g} window "
            "sides apart: the next most uncertain fill the count"
        )
    rows, polygons = [], []
    for rank, i in enumerate(picked, start=1):
        w, scene = candidates[i], facts[candidates[i].scene]
        polygons.append(_polygon(scene, w, config.size, crs))
        rows.append(
            {
                "rank": rank,
                "score": round(w.score, 6),
                "scene": scene.name,
                "valid": round(w.valid, 4),
                "row": w.row,
                "col": w.col,
                "width": min(config.size, scene.width - w.col),
                "height": min(config.size, scene.height - w.row),
            }
        )
    _write(out, polygons, rows, crs)
    for notice in notices:
        if notify is not None:
            notify(notice)
    return SuggestResult(
        out=out, windows=tuple(rows), candidates=len(candidates), crs=crs, notices=tuple(notices)
    )


def _outside(
    candidates: list[Candidate],
    exclude: Path,
    scenes: Sequence[_Scene],
    size: int,
) -> list[Candidate]:
    """The candidates whose windows do not overlap the areas of ``exclude``."""
    areas = {i: _excluded(exclude, s) for i, s in enumerate(scenes)}
    return [
        w
        for w in candidates
        if areas[w.scene] is None
        or _polygon(scenes[w.scene], w, size, None).intersection(areas[w.scene]).area == 0
    ]


def _crowded(candidates: Sequence[Candidate], picked: list[int], spacing: float, size: int) -> bool:
    """Whether some chosen windows are closer than ``spacing`` sides (the count was filled)."""
    least = (spacing * size) ** 2
    chosen = [candidates[i] for i in picked]
    return any(
        a.scene == b.scene and (a.row - b.row) ** 2 + (a.col - b.col) ** 2 < least
        for k, a in enumerate(chosen)
        for b in chosen[k + 1 :]
    )
