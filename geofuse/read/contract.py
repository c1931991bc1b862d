"""The model's input contract, checked against a scene (and adapted) before any work.

A model file records what it was trained on (:class:`~geofuse.model.spec.ModelInfo`): band
names and colour interpretation, input data type and the value range seen in training, pixel
size. Here each is compared with the scene:

- **Bands**: where the scene names its bands (colour interpretation or band descriptions: red,
  green, blue, nir, ...) and the model's bands are named, bands are matched by name; an explicit
  ``--bands`` that contradicts the names gets a notice. Unnamed bands keep the positional rule.
- **Data type and range**: a scene of another data type is refused unless
  :class:`~geofuse.config.InputConfig` says how to map its values (``input_range`` or
  ``stretch``); a scene of the right type whose values lie far outside the training range gets
  a notice.
- **Pixel size**: a scene whose pixels differ from the model's by more than
  :data:`RESAMPLE_BEYOND` gets a notice and, with ``resample="auto"``, is read at the model's
  pixel size (see :class:`~geofuse.read.reader.SceneReader`).

Notices are one line each, naming the scene; the caller shows them (``segment``: stderr,
``batch``: the report). No TensorFlow here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geofuse.config import InputConfig
from geofuse.errors import InputError, plural
from geofuse.model.spec import ModelInfo
from geofuse.units import metres

RESAMPLE_BEYOND = 1.5
"""Pixel sizes further apart than this factor get a notice (and are resampled with ``auto``)."""
RESAMPLE_LIMIT = 8.0
"""Pixel sizes further apart than this are not resampled (too costly, and meaningless)."""
OUTSIDE_SHARE = 0.25
"""Share of a band's values outside the training range that gets a notice."""
PERCENTILES = (0.5, 99.5)
"""The percentiles that stand for a band's value range (training and ``--stretch``)."""

_ALIASES = {
    "red": "red", "green": "green", "blue": "blue",
    "nir": "nir", "nearinfrared": "nir", "rededge": "rededge", "swir": "swir",
    "swir1": "swir1", "swir2": "swir2", "coastal": "coastal", "coastalaerosol": "coastal",
    "pan": "pan", "panchromatic": "pan",
}


def band_key(name: str | None) -> str | None:
    """The spectral name of a band (``red``, ``nir``, ...) from its description or colour.

    None for names that say nothing (``gray``, ``undefined``, ``B4``).
    """
    if not name:
        return None
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def scene_band_keys(ds: Any) -> list[str | None]:
    """The spectral name of every band of a dataset: its description, else its colour."""
    return [band_key(desc) or band_key(ci.name)
            for desc, ci in zip(ds.descriptions, ds.colorinterp, strict=True)]


def model_band_keys(info: ModelInfo) -> list[str | None]:
    """The spectral name of every model band: its name, else its recorded colour."""
    colours = info.color_interp or (None,) * info.spec.bands
    return [band_key(n) or band_key(c) for n, c in zip(info.band_names, colours, strict=True)]


SUPPORTED_DTYPES = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"
)
"""Band data types the reader reads (and :func:`geofuse.arrays.predict_array` accepts)."""


def scene_bands(ds: Any, bands: Sequence[int] | None, expected_bands: int | None,
                model: ModelInfo | None, name: str) -> tuple[tuple[int, ...], set[str], list[str]]:
    """The bands of scene ``ds`` that feed the model, their data types, and notices.

    Every band but an alpha band by default; with a model, bands are matched by name where
    both sides name them (:func:`choose_bands`).

    Raises:
        InputError: A band number outside the scene, another band count than
            ``expected_bands``, or a data type outside :data:`SUPPORTED_DTYPES`.
    """
    alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
    default = [i for i in range(1, ds.count + 1) if i not in alpha]
    notices: list[str] = []
    if model is not None:
        bands, notices = choose_bands(ds, model, bands, default, name)
    chosen = tuple(default if bands is None else bands)
    bad = [b for b in chosen if not 1 <= b <= ds.count]
    if bad:
        raise InputError(
            f"Expected band numbers between 1 and {ds.count}. "
            f"Received: {','.join(map(str, bad))} for {name}"
        )
    if expected_bands is not None and len(chosen) != expected_bands:
        raise InputError(
            f"Expected {plural(expected_bands, 'band')}. "
            f"Received: {plural(len(chosen), 'band')} in {name}"
            + (" (choose bands with `bands`)" if len(chosen) > expected_bands else "")
        )
    dtypes = {ds.dtypes[b - 1] for b in chosen}
    unsupported = sorted(dtypes - set(SUPPORTED_DTYPES))
    if unsupported:
        raise InputError(
            f"Expected band data types among {', '.join(SUPPORTED_DTYPES)}. "
            f"Received: {', '.join(unsupported)} in {name}"
        )
    return chosen, dtypes, notices


def choose_bands(ds: Any, info: ModelInfo, bands: Sequence[int] | None, default: Sequence[int],
                 name: str) -> tuple[tuple[int, ...] | None, list[str]]:
    """Bands to feed the model, matched by name where both sides name them.

    Args:
        ds: The open scene.
        info: The model.
        bands: Bands the user chose (1-based), or None.
        default: The positional default (every non-alpha band).
        name: The scene, for notices.

    Returns:
        ``(bands, notices)``: the chosen bands (None: keep the positional default) and notices.

    """
    model = model_band_keys(info)
    if None in model or len(set(model)) != len(model):
        return (tuple(bands) if bands else None), []
    scene = scene_band_keys(ds)
    if bands:
        named = [scene[b - 1] if 1 <= b <= len(scene) else None for b in bands]
        if len(named) == len(model) and any(s is not None and s != m
                                            for s, m in zip(named, model, strict=True)):
            return tuple(bands), [
                f"{name}: `bands` {','.join(map(str, bands))} feeds bands named "
                f"{', '.join(s or '?' for s in named)} into the model's "
                f"{', '.join(model)} (check `bands`)"]
        return tuple(bands), []
    where: dict[str, list[int]] = {}
    for index, key in enumerate(scene, start=1):
        if key is not None:
            where.setdefault(key, []).append(index)
    if not all(len(where.get(key, ())) == 1 for key in model):
        return None, [notice for notice in [_unnamed(ds, default, model, name)] if notice]
    chosen = tuple(where[key][0] for key in model)
    if chosen == tuple(default):
        return chosen, []
    return chosen, [f"{name}: bands {','.join(map(str, chosen))} matched to the model's "
                    f"{', '.join(model)} by their names"]


def _unnamed(ds: Any, default: Sequence[int], model: list[str | None],
             name: str) -> str | None:
    """A notice when the bands taken in order for a model of named bands carry no names."""
    if len(default) != len(model) or any(band_key(ds.descriptions[b - 1]) or
                                         band_key(ds.colorinterp[b - 1].name) for b in default):
        return None
    colours = ", ".join(ds.colorinterp[b - 1].name for b in default)
    return (f"{name}: bands {','.join(map(str, default))} carry no colour or band names "
            f"({colours}); they are read in this order as the model's "
            f"{', '.join(map(str, model))} (choose others with `bands`)")


def check_dtype(dtype: str, info: ModelInfo, adapt: InputConfig, name: str) -> None:
    """Refuse a scene whose data type is not the model's, unless its values are mapped.

    Floating-point types count as one type (float32 and float64 hold the same values).

    Raises:
        InputError: ``Expected uint8 input. Received: int16 in s2.tif; ...``.

    """
    if adapt.adapts_values or dtype == info.input_dtype:
        return
    if np.dtype(dtype).kind == "f" and np.dtype(info.input_dtype).kind == "f":
        return
    raise InputError(f"Expected {info.input_dtype} input. Received: {dtype} in {name}; give "
                     "`input_range` LOW,HIGH or `stretch` percentile")


def model_range(info: ModelInfo) -> tuple[float, float]:
    """The range scene values are mapped onto.

    The whole range of an 8-bit model's type, else the training range recorded in the model,
    else the type's range (0..1 for floats).
    """
    dtype = np.dtype(info.input_dtype)
    if dtype.kind in "ui" and (dtype.itemsize == 1 or info.value_range is None):
        limits = np.iinfo(dtype)
        return float(limits.min), float(limits.max)
    if info.value_range is not None:
        return (min(lo for lo, _ in info.value_range), max(hi for _, hi in info.value_range))
    return 0.0, 1.0


@dataclass(frozen=True)
class ValueMap:
    """``model value = clip(raw * gain + bias, low, high)`` per band."""

    gain: tuple[float, ...]
    bias: tuple[float, ...]
    clip: tuple[float, float] | None
    text: str


def value_map(info: ModelInfo, adapt: InputConfig, samples: np.ndarray | None) -> ValueMap | None:
    """How scene values become model values (None: unchanged).

    Args:
        info: The model.
        adapt: The user's choice: ``input_range`` or ``stretch``.
        samples: ``(bands, n)`` valid scene values (needed for ``stretch``).

    """
    if not adapt.adapts_values:
        return None
    bands = info.spec.bands
    dtype = np.dtype(info.input_dtype)
    clip = model_range(info) if dtype.kind in "ui" else None
    if adapt.input_range is not None:
        low, high = adapt.input_range
        target = model_range(info)
        sources = [(low, high)] * bands
        targets = [target] * bands
        text = f"values {low:g}..{high:g} -> {target[0]:g}..{target[1]:g}"
    else:
        targets = list(info.value_range or [model_range(info)] * bands)
        sources = []
        for values in samples if samples is not None else [np.zeros(0)] * bands:
            lo, hi = (np.percentile(values, PERCENTILES) if values.size else (0.0, 1.0))
            sources.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
        text = "stretch " + ", ".join(f"{s[0]:g}..{s[1]:g} -> {t[0]:g}..{t[1]:g}"
                                      for s, t in zip(sources, targets, strict=True))
    gain = tuple((t[1] - t[0]) / (s[1] - s[0]) for s, t in zip(sources, targets, strict=True))
    bias = tuple(t[0] - s[0] * g for s, t, g in zip(sources, targets, gain, strict=True))
    return ValueMap(gain, bias, clip, text)


def range_notice(info: ModelInfo, samples: np.ndarray, name: str) -> str | None:
    """A notice when a band's values lie mostly outside the model's training range."""
    if info.value_range is None or samples.shape[1] == 0:
        return None
    worst = None
    for band, (values, (lo, hi)) in enumerate(zip(samples, info.value_range, strict=True)):
        share = float(np.mean((values < lo) | (values > hi)))
        if share > OUTSIDE_SHARE and (worst is None or share > worst[0]):
            worst = (share, band, lo, hi, np.percentile(values, PERCENTILES))
    if worst is None:
        return None
    share, band, lo, hi, (slo, shi) = worst
    return (f"{name}: {share:.0%} of the values of input band {band + 1} "
            f"({info.band_names[band]}: {slo:g}..{shi:g}) lie outside the model's training "
            f"range {lo:g}..{hi:g}; the mask may be wrong (`input_range` or `stretch` "
            "percentile map them)")


def pixel_size_m(crs: CRS | None, transform: Affine, width: int, height: int) -> float | None:
    """The ground size of the scene's central pixel in metres (geometric mean of its sides).

    Measured on the WGS84 ellipsoid, so geographic CRSs (degrees, converted at the scene's
    latitude), projected ones and Web Mercator alike give metres. None without a CRS or a
    geotransform.
    """
    if crs is None or transform.is_identity:
        return None
    from pyproj import Geod
    from rasterio.warp import transform as reproject_points

    col, row = width / 2, height / 2
    points = [transform * (col, row), transform * (col + 1, row), transform * (col, row + 1)]
    try:
        lons, lats = reproject_points(crs, "EPSG:4326", [p[0] for p in points],
                                      [p[1] for p in points])
    except Exception:  # noqa: BLE001 - an exotic CRS PROJ cannot take: size unknown
        return None
    geod = Geod(ellps="WGS84")
    _, _, across = geod.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, down = geod.inv(lons[0], lats[0], lons[2], lats[2])
    size = math.sqrt(abs(across * down))
    return size if math.isfinite(size) and size > 0 else None


def resample_factor(scene_size: float | None, info: ModelInfo, adapt: InputConfig,
                    name: str) -> tuple[float, list[str]]:
    """Scene pixels per model pixel along each axis to read at (1: as it is), and notices."""
    if scene_size is None or info.pixel_size is None:
        return 1.0, []
    ratio = scene_size / info.pixel_size
    apart = max(ratio, 1 / ratio)
    if apart <= RESAMPLE_BEYOND:
        return 1.0, []
    sizes = f"pixel size {metres(scene_size)}, the model's {metres(info.pixel_size)}"
    if adapt.resample == "off":
        return 1.0, [f"{name}: {sizes}; segmenting at the scene's own pixel size "
                     "(`resample` off)"]
    if apart > RESAMPLE_LIMIT:
        return 1.0, [f"{name}: {sizes}: more than {RESAMPLE_LIMIT:g}x apart, too far to "
                     "resample; segmenting at the scene's own pixel size, the mask may be wrong"]
    return ratio, [f"{name}: {sizes}; reading it at {metres(info.pixel_size)} "
                   "(`resample` off to keep its own)"]


@dataclass
class InputPlan:
    """What the contract decided for one scene.

    Attributes:
        bands: The bands fed to the model (None: the positional default).
        values: How values are mapped (None: unchanged).
        factor: Model-grid pixels per scene pixel along each axis (1: no resampling).
        notices: One-line notices for the user.

    """

    bands: tuple[int, ...] | None = None
    values: ValueMap | None = None
    factor: float = 1.0
    notices: list[str] = field(default_factory=list)

    def describe(self, bands: Sequence[int], adapt: InputConfig) -> str:
        """A short description for the outputs' tags."""
        parts = [f"bands {','.join(map(str, bands))}"]
        if self.values is not None:
            parts.append(self.values.text)
        if self.factor != 1.0:
            parts.append(f"resampled x{self.factor:.4g}")
        if adapt.nodata is not None:
            parts.append(f"nodata {adapt.nodata:g}")
        if adapt.ignore_nodata:
            parts.append("scene nodata ignored")
        return "; ".join(parts)
