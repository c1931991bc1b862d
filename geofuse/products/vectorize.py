"""Class mask -> polygons, block by block, merging polygons that cross block edges.

The mask is read in full-width bands of rows (``block_pixels`` pixels each), so memory stays
bounded whatever the mask's height. Each band is polygonised in *pixel coordinates* with
``rasterio.features.shapes`` (GDAL's polygonizer, 4-connectivity). A polygon that touches
neither the top nor the bottom edge of its band is final and is written at once. The others are
joined across seams: the pixels just above and just below a seam are labelled with the polygon
that owns them (a one-row rasterisation), same-class neighbours are grouped (union-find), and a
group is unioned and written as soon as none of its pieces reaches the current band's bottom
edge. Pixel coordinates are exact integers, so the union is exact: one building crossing a
block edge stays one polygon.

Written polygons are simplified in pixel units (Douglas-Peucker, topology-preserving, each
polygon on its own), mapped to the mask's CRS by its geotransform, measured on the ellipsoid
(area in m² in a Lambert azimuthal equal-area projection centred on the mask, which is correct
for geographic and projected CRSs alike), filtered by area and written with pyogrio (GDAL/OGR)
into a temporary file beside the destination that is renamed into place at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.features import rasterize, shapes
from rasterio.transform import from_gcps
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window
from shapely.geometry import shape

from geofuse.colours import class_colour, hex_rgb
from geofuse.config import VectorizeConfig
from geofuse.errors import InputError, OutputError, plural
from geofuse.products.vector_io import FeatureWriter, output_format
from geofuse.progress import Progress
from geofuse.read.rasterfile import open_raster
from geofuse.sources import as_source
from geofuse.write.outputs import TAGS, check_destination

log = logging.getLogger(__name__)

MASK_DTYPES = ("uint8", "uint16", "int16", "int32")
FLUSH_EVERY = 20_000  # polygons per write to the output


@dataclass(frozen=True)
class VectorizeResult:
    """What one ``vectorize_mask`` run wrote."""

    path: Path
    polygons: int
    class_counts: dict[str, int]
    dropped: int
    crs: str | None
    seconds: float


@dataclass
class _Group:
    """Pieces of one polygon that may continue below the current band."""

    class_id: int
    pieces: list[Any]
    prob_sum: float
    bottom: bool


def mask_classes(ds: rasterio.io.DatasetReader) -> dict[int, str]:
    """Class names by id, from the ``GEOFUSE_CLASSES`` tag that ``segment`` writes."""
    tag = ds.tags().get(TAGS.CLASSES, "")
    return {i: name for i, name in enumerate(tag.split(","))} if tag else {}


def resolve_classes(
    requested: tuple[str, ...] | None, names: dict[int, str], mask: Path
) -> set[int] | None:
    """Class ids to vectorize; None means every value but nodata.

    By default every class except one named ``background``; ``("all",)`` means every class.

    Raises:
        InputError: A name that the mask does not define, or an id out of range.

    """
    if requested is None:
        if not names:
            return None
        return {i for i, name in names.items() if name.lower() != "background"}
    if tuple(r.lower() for r in requested) == ("all",):
        return set(names) if names else None
    by_name = {name.lower(): i for i, name in names.items()}
    ids: set[int] = set()
    for token in requested:
        if token.isdigit() and (not names or int(token) in names):
            ids.add(int(token))
        elif token.lower() in by_name:
            ids.add(by_name[token.lower()])
        else:
            known = ", ".join(f"{i}={n}" for i, n in names.items()) or "numeric ids"
            raise InputError(f"Expected classes among {known}. Received: {token!r} for {mask}")
    return ids


def mask_georeferencing(ds: rasterio.io.DatasetReader) -> tuple[Affine, CRS | None]:
    """Geotransform and CRS of a mask; GCP-only masks get an affine fit of their GCPs."""
    points, gcp_crs = ds.gcps
    if ds.crs is None and points:
        log.warning("%s is georeferenced by GCPs; polygons use an affine fit", ds.name)
        return from_gcps(points), gcp_crs
    return ds.transform, ds.crs


class AreaMeter:
    """Ellipsoidal areas in m² through a Lambert azimuthal equal-area projection.

    The projection is centred on the mask, and being equal-area it gives true areas whatever
    the source CRS (degrees, metres, feet, Web Mercator). Without a CRS, areas are planar, in
    squared coordinate units.
    """

    def __init__(self, crs: CRS | None, centre: tuple[float, float]) -> None:
        self.crs = crs
        self.target: CRS | None = None
        if crs is not None:
            (lon,), (lat,) = warp_transform(crs, "EPSG:4326", [centre[0]], [centre[1]])
            self.target = CRS.from_proj4(
                f"+proj=laea +lat_0={lat:.8f} +lon_0={lon:.8f} +datum=WGS84 +units=m +no_defs"
            )

    def _project(self, xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return xy
        xs, ys = warp_transform(self.crs, self.target, xy[:, 0], xy[:, 1])
        return np.column_stack([xs, ys])

    def __call__(self, geoms: np.ndarray) -> np.ndarray:
        """Areas of an array of geometries in the source CRS."""
        if self.target is None:
            return shapely.area(geoms)
        return shapely.area(shapely.transform(geoms, self._project))


def _affine_fn(t: Affine) -> Callable[[np.ndarray], np.ndarray]:
    m = np.array([[t.a, t.d], [t.b, t.e]])
    offset = np.array([t.c, t.f])
    return lambda xy: xy @ m + offset


class BandPolygonizer:
    """Polygonises full-width row bands in order and merges pieces across the seams.

    Args:
        width: Mask columns.
        height: Mask rows.
        emit: Called as ``emit(class_id, pixel_polygon, probability_sum)`` for each polygon.

    """

    def __init__(self, width: int, height: int, emit: Callable[[int, Any, float], None]) -> None:
        self.width = width
        self.height = height
        self.emit = emit
        self.pending: dict[int, _Group] = {}
        self.prev_ids = np.zeros(width, dtype=np.int64)
        self.prev_classes = np.zeros(width, dtype=np.int64)
        self.next_id = 1
        self._parent: dict[int, int] = {}

    def _find(self, a: int) -> int:
        root = a
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while a != root:
            self._parent[a], a = root, self._parent.get(a, a)
        return root

    def _row_labels(self, geoms: list[Any], ids: list[int], row: int) -> np.ndarray:
        if not geoms:
            return np.zeros(self.width, dtype=np.int64)
        return rasterize(
            zip(geoms, ids, strict=True), out_shape=(1, self.width),
            transform=Affine.translation(0, row), fill=0, dtype="int32",
        )[0].astype(np.int64)

    def add_band(self, row0: int, data: np.ndarray, select: np.ndarray,
                 pclass: np.ndarray | None = None) -> None:
        """Polygonise rows ``row0 .. row0 + len(data)`` (bands must arrive top to bottom).

        Args:
            row0: First row of the band.
            data: ``(rows, width)`` class ids.
            select: ``(rows, width)`` bool: pixels to turn into polygons.
            pclass: Optional ``(rows, width)`` probability of each pixel's class.

        """
        row1 = row0 + data.shape[0]
        transform = Affine.translation(0, row0)
        feats = list(shapes(data, mask=select, connectivity=4, transform=transform))
        geoms = [shape(g) for g, _ in feats]
        values = [int(v) for _, v in feats]
        del feats
        sums = np.zeros(len(geoms))
        if pclass is not None and geoms:
            labels = rasterize(
                zip(geoms, range(1, len(geoms) + 1), strict=True), out_shape=data.shape,
                transform=transform, fill=0, dtype="int32",
            )
            sums = np.bincount(labels.ravel(), weights=pclass.ravel(), minlength=len(geoms) + 1)
            sums = sums[1:]
        bounds = shapely.bounds(np.array(geoms, dtype=object)) if geoms else np.zeros((0, 4))
        top = (bounds[:, 1] == row0) & (row0 > 0)
        bottom = (bounds[:, 3] == row1) & (row1 < self.height)

        for i in np.flatnonzero(~top & ~bottom):
            self.emit(values[i], geoms[i], float(sums[i]))

        for group in self.pending.values():
            group.bottom = False  # the seam above is resolved now
        nodes: dict[int, _Group] = dict(self.pending)
        top_geoms, top_ids, bottom_pieces = [], [], []
        for i in np.flatnonzero(top | bottom):
            gid = self.next_id
            self.next_id += 1
            nodes[gid] = _Group(values[i], [geoms[i]], float(sums[i]), bool(bottom[i]))
            if top[i]:
                top_geoms.append(geoms[i])
                top_ids.append(gid)
            if bottom[i]:
                bottom_pieces.append((geoms[i], gid))

        self._parent = {}
        if top_ids and self.pending:
            cur = self._row_labels(top_geoms, top_ids, row0)
            link = (cur > 0) & (self.prev_ids > 0) & (data[0] == self.prev_classes)
            for a, b in np.unique(np.stack([self.prev_ids[link], cur[link]], axis=1), axis=0):
                ra, rb = self._find(int(a)), self._find(int(b))
                if ra != rb:
                    self._parent[rb] = ra

        merged: dict[int, _Group] = {}
        for gid, group in nodes.items():
            root = self._find(gid)
            if root not in merged:
                merged[root] = group
            else:
                target = merged[root]
                target.pieces.extend(group.pieces)
                target.prob_sum += group.prob_sum
                target.bottom |= group.bottom
        self.pending = {}
        for root, group in merged.items():
            if group.bottom:
                self.pending[root] = group
            else:
                self._emit_group(group)
        self.prev_ids = self._row_labels(
            [g for g, _ in bottom_pieces], [self._find(gid) for _, gid in bottom_pieces], row1 - 1
        )
        self.prev_classes = data[-1].astype(np.int64)

    def _emit_group(self, group: _Group) -> None:
        pieces = group.pieces
        geom = pieces[0]
        if len(pieces) > 1:  # union, then drop the collinear vertices the seams leave behind
            geom = shapely.simplify(shapely.union_all(shapely.make_valid(pieces)), 0)
        self.emit(group.class_id, geom, group.prob_sum)

    def finish(self) -> None:
        """Emit whatever is still pending (nothing, after the last band)."""
        for group in self.pending.values():
            self._emit_group(group)
        self.pending = {}


@dataclass
class _Collector:
    """Buffers emitted polygons, then simplifies, georeferences, measures and writes them."""

    writer: FeatureWriter
    to_crs: Callable[[np.ndarray], np.ndarray]
    meter: AreaMeter
    names: dict[int, str]
    config: VectorizeConfig
    with_prob: bool
    geoms: list[Any] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    prob_sums: list[float] = field(default_factory=list)
    written: int = 0
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, class_id: int, geom: Any, prob_sum: float) -> None:
        self.geoms.append(geom)
        self.classes.append(class_id)
        self.prob_sums.append(prob_sum)
        if len(self.geoms) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.geoms:
            return
        px = np.array(self.geoms, dtype=object)
        invalid = ~shapely.is_valid(px)
        if invalid.any():
            px[invalid] = shapely.make_valid(px[invalid])
        pixels = shapely.area(px)
        mean_prob = np.asarray(self.prob_sums) / np.maximum(pixels, 1)
        classes = np.asarray(self.classes, dtype=np.int32)
        self.geoms, self.classes, self.prob_sums = [], [], []
        if self.config.simplify > 0:
            px = shapely.simplify(px, self.config.simplify, preserve_topology=True)
        # simplification or repair may leave multi-part or mixed geometries: keep polygon parts
        parts, index = shapely.get_parts(px, return_index=True)
        keep = shapely.get_type_id(parts) == 3
        parts, index = parts[keep], index[keep]
        world = shapely.transform(parts, self.to_crs)
        area = self.meter(world)
        big = area >= self.config.min_area
        self.dropped += int((~big).sum())
        world, index, area = world[big], index[big], area[big]
        class_ids = classes[index]
        class_names = np.array([self.names.get(int(c), str(c)) for c in class_ids], dtype=object)
        columns: dict[str, np.ndarray] = {
            "class_id": class_ids,
            "class_name": class_names,
            "pixels": np.rint(pixels[index]).astype(np.int64),
            "area_m2": area.astype(np.float64),
        }
        if self.with_prob:
            columns["mean_prob"] = mean_prob[index].astype(np.float64)
        self.writer.write(shapely.to_wkb(world), columns)
        self.written += len(world)
        for name in class_names:
            self.counts[name] = self.counts.get(name, 0) + 1


def _open_probabilities(path: Path, mask: rasterio.io.DatasetReader) -> Any:
    prob = open_raster(path)
    if (prob.width, prob.height) != (mask.width, mask.height):
        prob.close()
        raise InputError(
            f"Expected probabilities of the mask's size {mask.width}x{mask.height}. "
            f"Received: {prob.width}x{prob.height} in {path}"
        )
    return prob


def class_style(ds: rasterio.io.DatasetReader, names: dict[int, str],
                selected: set[int] | None) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """The polygons' classes with their colours (the mask's colour table), for their style."""
    try:
        table = ds.colormap(1)
    except ValueError:  # no colour table: the default colours of the names
        table = {}
    ids = sorted(selected if selected is not None else names)
    return {i: (names[i], tuple(table[i][:3]) if i in table else hex_rgb(class_colour(names[i], i)))
            for i in ids if i in names}


def _check_mask(ds: rasterio.io.DatasetReader, path: Path) -> None:
    if ds.count != 1:
        raise InputError(
            f"Expected a class mask with 1 band. Received: {plural(ds.count, 'band')} in {path}"
        )
    if ds.dtypes[0] not in MASK_DTYPES:
        raise InputError(
            f"Expected an integer class mask ({', '.join(MASK_DTYPES)}). "
            f"Received: {ds.dtypes[0]} in {path}"
        )


def vectorize_mask(
    mask: str | Path,
    out: str | Path,
    config: VectorizeConfig | None = None,
    probabilities: str | Path | None = None,
    progress: Progress | None = None,
) -> VectorizeResult:
    """Turn a class mask into polygons (GeoPackage or GeoJSON, in the mask's CRS).

    Args:
        mask: Single-band integer class mask (e.g. from ``segment``); its nodata never becomes
            polygons.
        out: Output ``.gpkg`` or ``.geojson`` (or as ``config.format`` says).
        config: Simplification, minimum area, classes, format.
        probabilities: Optional per-class probability raster of the same size (band ``c + 1``
            holds class ``c``); adds a ``mean_prob`` attribute.
        progress: Optional ``progress(rows_done, rows_total)`` callback.

    Returns:
        A :class:`VectorizeResult`.

    Raises:
        GeofuseError: InputError for a bad mask or probabilities, OutputError for an unwritable
            or existing output. Nothing is left under ``out`` on failure.

    """
    start = time.perf_counter()
    config = config or VectorizeConfig()
    mask, out = as_source(mask), Path(out)  # the mask may be any name GDAL opens
    fmt = output_format(out, config.format)
    check_destination(out, config.overwrite)
    if isinstance(mask, Path) and out.resolve() == mask.resolve():
        raise OutputError(f"{out}: the polygons would overwrite the mask")
    with rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024), open_raster(mask) as src:
        _check_mask(src, mask)
        names = mask_classes(src)
        selected = resolve_classes(config.classes, names, mask)
        transform, crs = mask_georeferencing(src)
        if crs is None:
            log.warning("%s has no CRS: area_m2 is in squared pixel/coordinate units", mask)
        cx, cy = transform * (src.width / 2, src.height / 2)
        prob = _open_probabilities(Path(probabilities), src) if probabilities else None
        writer = FeatureWriter(out, fmt, crs, with_prob=prob is not None,
                               style=class_style(src, names, selected))
        try:
            collect = _Collector(writer, _affine_fn(transform), AreaMeter(crs, (cx, cy)), names,
                                 config, with_prob=prob is not None)
            polygonizer = BandPolygonizer(src.width, src.height, collect)
            rows = max(1, min(src.height, config.block_pixels // src.width))
            masked = src.mask_flag_enums[0] != [MaskFlags.all_valid]
            lut = None
            if selected is not None and src.dtypes[0] in ("uint8", "uint16"):
                lut = np.zeros(256 if src.dtypes[0] == "uint8" else 65536, dtype=bool)
                lut[[c for c in selected if 0 <= c < len(lut)]] = True
            for row0 in range(0, src.height, rows):
                window = Window(0, row0, src.width, min(rows, src.height - row0))
                data = src.read(1, window=window)
                select = src.read_masks(1, window=window) > 0 if masked else None
                if selected is not None:
                    chosen = lut[data] if lut is not None else np.isin(data, list(selected))
                    select = chosen if select is None else select & chosen
                if select is None:
                    select = np.ones(data.shape, dtype=bool)
                pclass = _class_probability(prob, window, data, select) if prob else None
                polygonizer.add_band(row0, data, select, pclass)
                if progress is not None:
                    progress(row0 + data.shape[0], src.height)
            polygonizer.finish()
            collect.flush()
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            if prob is not None:
                prob.close()
    seconds = time.perf_counter() - start
    log.info("%s: %d polygons in %.1f s", out.name, collect.written, seconds)
    return VectorizeResult(
        path=out, polygons=collect.written, class_counts=dict(sorted(collect.counts.items())),
        dropped=collect.dropped, crs=crs.to_string() if crs else None, seconds=seconds,
    )


def _class_probability(
    prob: Any, window: Window, data: np.ndarray, select: np.ndarray
) -> np.ndarray:
    """Probability of each selected pixel's own class (0 elsewhere), read band by band."""
    out = np.zeros(data.shape, dtype=np.float32)
    present = np.flatnonzero(np.bincount(data[select].ravel().astype(np.int64)))
    for c in present:
        if c >= prob.count:
            raise InputError(
                f"Expected a probability band for class {c}. "
                f"Received: {plural(prob.count, 'band')} in {prob.name}"
            )
        band = prob.read(int(c) + 1, window=window).astype(np.float32)
        band = band * np.float32(prob.scales[c]) + np.float32(prob.offsets[c])
        where = select & (data == c)
        out[where] = band[where]
    return out
