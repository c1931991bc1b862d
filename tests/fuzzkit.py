"""Generated GeoTIFF layouts for fuzzing ``geofuse segment``, and the property every run keeps.

A :class:`Layout` is drawn by :func:`layouts` (hypothesis): size (tiny, strips, odd), band
count, data type, nodata, masks (internal mask, alpha band, all nodata), georeferencing (none,
north-up, rotated, sheared, south-up, ground control points), storage (strips, tiles,
compression, interleaving) and damage (cut short, or bytes overwritten). :func:`check_run`
runs ``segment`` on it through the CLI and checks the property: never a traceback, never a
partial output; either an output with exactly the input's georeferencing, or exit code 1
with one ``Error:`` line and nothing written. Used by ``tests/test_fuzz.py`` (few cases) and
``scripts/fuzz_segment.py`` (as many as asked).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from click.testing import CliRunner
from hypothesis import strategies as st
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp

DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64", "complex64")
SIDES = (1, 2, 3, 7, 16, 31, 33, 63, 64, 65, 100, 130)
GEOREFERENCING = ("none", "north-up", "rotated", "sheared", "south-up", "gcps", "degrees")
DAMAGE = ("none", "none", "none", "cut", "overwrite")


@dataclass(frozen=True)
class Layout:
    """One generated GeoTIFF: how it is laid out, and how it is damaged."""

    height: int
    width: int
    bands: int
    dtype: str
    nodata: str  # none | zero | max | nan | negative
    mask: str  # none | internal | alpha | all-nodata | half-nodata
    georeferencing: str
    tiled: int  # 0: strips, else the block side
    compress: str
    interleave: str
    damage: str  # none | cut | overwrite
    damage_at: float  # where, as a fraction of the file
    seed: int
    model_bands: int  # 1 or 3: the tiny model the scene goes to
    options: tuple[str, ...] = ()  # of segment: --bands, --input-range, --stretch, --nodata

    def describe(self) -> str:
        """One line for reports."""
        return (
            f"{self.height}x{self.width}x{self.bands} {self.dtype} nodata={self.nodata} "
            f"mask={self.mask} georef={self.georeferencing} tiled={self.tiled} "
            f"{self.compress} {self.interleave} damage={self.damage}@{self.damage_at:.2f} "
            f"model={self.model_bands}b {' '.join(self.options)}"
        )


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    """A hypothesis strategy of :class:`Layout`."""
    dtype = draw(st.sampled_from(DTYPES))
    floating = dtype.startswith(("float", "complex"))
    nodata_kinds = (
        ["none", "zero", "max"]
        + (["nan"] if floating else [])
        + (["negative"] if not dtype.startswith("uint") else [])
    )
    model_bands = draw(st.sampled_from((1, 3)))
    bands = draw(st.sampled_from((model_bands, model_bands)) | st.integers(1, 5))
    options: list[str] = []  # mostly what a user would give to get such a scene through
    if bands > model_bands and draw(st.booleans()):
        chosen = draw(st.permutations(range(1, bands + 1)))[:model_bands]
        options += ["--bands", ",".join(map(str, chosen))]
    if dtype != "uint8":
        options += draw(
            st.sampled_from(
                (
                    [],
                    ["--input-range", "0,255"],
                    ["--input-range", "-50,250"],
                    ["--stretch", "percentile"],
                )
            )
        )
    options += draw(st.sampled_from(([], [], ["--nodata", "0"], ["--no-nodata"])))
    return Layout(
        height=draw(st.sampled_from(SIDES) | st.integers(1, 150)),
        width=draw(st.sampled_from(SIDES) | st.integers(1, 150)),
        bands=bands,
        dtype=dtype,
        nodata=draw(st.sampled_from(nodata_kinds)),
        mask=draw(
            st.sampled_from(("none", "none", "internal", "alpha", "all-nodata", "half-nodata"))
        ),
        georeferencing=draw(st.sampled_from(GEOREFERENCING)),
        tiled=draw(st.sampled_from((0, 0, 16, 32, 64))),
        compress=draw(st.sampled_from(("none", "deflate", "lzw", "packbits"))),
        interleave=draw(st.sampled_from(("pixel", "band"))),
        damage=draw(st.sampled_from(DAMAGE)),
        damage_at=draw(st.floats(0.0, 0.999)),
        seed=draw(st.integers(0, 2**16)),
        model_bands=model_bands,
        options=tuple(options),
    )


def _values(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    shape = (layout.bands, layout.height, layout.width)
    dtype = np.dtype(layout.dtype)
    if dtype.kind in "fc":
        data = rng.normal(100, 60, shape).astype(dtype)
        if data.size > 4:  # a few infinities and NaNs among the values
            data.flat[rng.integers(0, data.size, 2)] = np.inf
            data.flat[rng.integers(0, data.size, 2)] = np.nan
        return data
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)


def _nodata(layout: Layout) -> float | None:
    dtype = np.dtype(layout.dtype)
    if layout.nodata == "none":
        return None
    if layout.nodata == "zero":
        return 0
    if layout.nodata == "nan":
        return math.nan
    if layout.nodata == "negative":
        return -9999 if dtype.kind in "fc" or np.iinfo(dtype).min <= -9999 else -1
    return (
        float(np.finfo(dtype).max)
        if dtype.kind == "f"
        else (None if dtype.kind == "c" else int(np.iinfo(dtype).max))
    )


def _georeferencing(layout: Layout) -> dict[str, Any]:
    kind = layout.georeferencing
    north_up = Affine(0.5, 0, 500000, 0, -0.5, 5100000)
    if kind == "none":
        return {}
    if kind == "north-up":
        return {"crs": "EPSG:32633", "transform": north_up}
    if kind == "rotated":
        return {"crs": "EPSG:32633", "transform": north_up * Affine.rotation(30)}
    if kind == "sheared":
        return {"crs": "EPSG:32633", "transform": north_up * Affine.shear(10, 5)}
    if kind == "south-up":
        return {"crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, 0.5, 5100000)}
    if kind == "degrees":
        return {"crs": "EPSG:4326", "transform": Affine(1e-5, 0, 13.4, 0, -1e-5, 52.5)}
    h, w = layout.height, layout.width
    gcps = [
        GroundControlPoint(row=r, col=c, x=500000 + c * 0.5, y=5100000 - r * 0.5)
        for r, c in ((0, 0), (0, w), (h, 0), (h, w))
    ]
    return {"gcps": (gcps, "EPSG:32633")}


def write_layout(layout: Layout, path: Path) -> Path:
    """Write the GeoTIFF ``layout`` describes to ``path`` (then damage it, if it says so)."""
    rng = np.random.default_rng(layout.seed)
    data = _values(layout, rng)
    nodata = _nodata(layout)
    alpha = layout.mask == "alpha"
    count = layout.bands + alpha
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": layout.width,
        "height": layout.height,
        "count": count,
        "dtype": layout.dtype,
        "interleave": layout.interleave,
    }
    if layout.compress != "none":
        profile["compress"] = layout.compress
    if layout.tiled:
        profile.update(tiled=True, blockxsize=layout.tiled, blockysize=layout.tiled)
    if nodata is not None and not alpha:
        profile["nodata"] = nodata
        if layout.mask in ("all-nodata", "half-nodata"):
            rows = layout.height if layout.mask == "all-nodata" else max(1, layout.height // 2)
            data[:, :rows] = nodata
    georef = _georeferencing(layout)
    gcps = georef.pop("gcps", None)
    profile.update(georef)
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, indexes=list(range(1, layout.bands + 1)))
            if gcps is not None:
                dst.gcps = gcps
            if alpha:
                valid = np.full((layout.height, layout.width), 255, dtype=np.uint8)
                valid[: layout.height // 2] = 0
                dst.write(valid.astype(layout.dtype), count)
                dst.colorinterp = [ColorInterp.gray] * layout.bands + [ColorInterp.alpha]
            elif layout.mask == "internal":
                valid = np.full((layout.height, layout.width), 255, dtype=np.uint8)
                valid[:, : layout.width // 2] = 0
                dst.write_mask(valid)
    _damage(layout, path, rng)
    return path


def _damage(layout: Layout, path: Path, rng: np.random.Generator) -> None:
    size = path.stat().st_size
    at = int(layout.damage_at * size)
    if layout.damage == "cut":
        with open(path, "r+b") as f:
            f.truncate(at)
    elif layout.damage == "overwrite":
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(rng.integers(0, 256, min(64, size - at), dtype=np.uint8).tobytes())


def georeferencing(path: Path) -> dict[str, Any]:
    """What GDAL reads of a raster's place on Earth: shape, CRS, transform, GCPs."""
    with warnings.catch_warnings(), rasterio.open(path) as ds:
        warnings.simplefilter("ignore")
        gcps, gcp_crs = ds.gcps
        return {
            "shape": ds.shape,
            "crs": ds.crs,
            "transform": ds.transform,
            "gcps": [(p.row, p.col, p.x, p.y) for p in gcps],
            "gcp_crs": gcp_crs,
        }


def check_run(layout: Layout, folder: Path, models: dict[int, Path]) -> str:
    """Segment ``layout`` written in ``folder`` through the CLI; assert the property.

    Returns:
        ``"segmented"``, or the error line of a refused scene (for counting the kinds).

    """
    scene = write_layout(layout, folder / "scene.tif")
    out = folder / "out" / "m.tif"
    result = CliRunner().invoke(
        __import__("geofuse.cli", fromlist=["main"]).main,
        [
            "segment",
            str(scene),
            str(out),
            "--model",
            str(models[layout.model_bands]),
            "--tile",
            "64",
            "--batch-size",
            "4",
            "--runtime",
            "tensorflow",
            *layout.options,
            "-q",
        ],
    )
    where = f"{layout.describe()}: exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit | None), (where, result.exc_info)
    assert "Traceback" not in result.output, where
    lines = result.output.strip().splitlines()
    leftovers = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else []
    if result.exit_code == 0:
        assert leftovers == ["m.tif"], (where, leftovers)
        assert all(line.startswith("Warning: ") for line in lines), where
        expected, written = georeferencing(scene), georeferencing(out)
        assert written == expected, (where, expected, written)
        return "segmented"
    assert result.exit_code == 1, where
    assert leftovers == [], (where, leftovers)
    errors = [line for line in lines if not line.startswith("Warning: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: "), where
    return errors[0]
