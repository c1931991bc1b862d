"""Labels: class tables and mask decoding (ids, RGB colours, palettes).

Every label source ends up as a ``uint8`` array of class ids on the image grid, where
``IGNORE`` (255, the class-mask nodata) marks pixels that count neither in the loss nor in
the metrics, and ``UNKNOWN`` (254) marks mask values that no class claims (an error when a
data set is checked, ignored afterwards). A label may also say "one of these classes" (a class
*set*: a building-only data set's "not building" is land, road, water or vegetation, without
saying which): set ``k`` is coded ``SET_BASE`` + ``k``. The loss only asks the model to
put such a pixel in one of the set's classes; the metrics leave it out.

* Class tables come from a ``classes.json``: ``{"classes": [{"id", "name", "color", "value"},
  ...], "ignore": [...], "sets": [{"name", "classes", "value", "color"}, ...]}``; ``value`` is
  the pixel value of the class (or set) in id-coded masks (a class's default: its id) and
  ``color`` identifies it in colour-coded masks; a set's ``classes`` are class names or ids.
* Masks are id-coded (one band of class values), RGB colour-coded (three bands) or palette
  images (one band read through its colour map); ``mode="auto"`` decides per file.
* Vector labels are rasterised onto the same class ids by :mod:`.vector_labels`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geofuse.colours import class_colour
from geofuse.config import CLASS_NODATA
from geofuse.errors import ConfigError, InputError
from geofuse.model.spec import ClassInfo

IGNORE = CLASS_NODATA
UNKNOWN = CLASS_NODATA - 1
SET_BASE = 128  # label of class set k: SET_BASE + k (so at most SET_BASE classes with sets)
MAX_SETS = UNKNOWN - SET_BASE
MASK_MODES = ("auto", "ids", "colors")


def _hex(colour: str) -> int:
    text = colour.strip().lstrip("#")
    if len(text) != 6:
        raise ConfigError(f"Expected a colour like '#1a2b3c'. Received: {colour!r}")
    try:
        return int(text, 16)
    except ValueError as exc:
        raise ConfigError(f"Expected a colour like '#1a2b3c'. Received: {colour!r}") from exc


def default_colour(index: int, name: str = "") -> str:
    """The display colour of class ``index`` named ``name`` when none is given (never black).

    Readable by name (water blue, vegetation green, building red, ...): see
    :func:`geofuse.colours.class_colour`.
    """
    return class_colour(name, index)


@dataclass(frozen=True)
class LabelCoding:
    """How mask pixels become class ids.

    Attributes:
        classes: Number of classes.
        values: Pixel value of each class in id-coded masks (index = class id); None = the id.
        colors: Colour (``#rrggbb``) of each class in colour-coded masks; None = no colours.
        ignore_values: Id-mask values to ignore (e.g. -1, 0 or 255).
        ignore_colors: Mask colours to ignore (e.g. an "unlabeled" colour).
        mode: ``auto`` (RGB masks by colour; palette masks by colour when their palette holds
            at least two class colours; otherwise ids), ``ids`` or ``colors``.
        sets: Class sets ("one of these classes"): class ids of each, at least two and not
            every class.
        set_values: Id-mask value of each set (empty: the sets only come from colours).
        set_colors: Colour of each set in colour-coded masks (empty: only from values).
        set_names: Name of each set, for reports (empty: ``set 1``, ``set 2``, ...).

    """

    classes: int
    values: tuple[int, ...] | None = None
    colors: tuple[str, ...] | None = None
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[str, ...] = ()
    mode: str = "auto"
    sets: tuple[tuple[int, ...], ...] = ()
    set_values: tuple[int, ...] = ()
    set_colors: tuple[str, ...] = ()
    set_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise ConfigError(
                f"Expected mask mode one of {', '.join(MASK_MODES)}. Received: {self.mode!r}"
            )
        for name in ("values", "colors"):
            seq = getattr(self, name)
            if seq is not None:
                object.__setattr__(self, name, tuple(seq))
                if len(seq) != self.classes:
                    raise ConfigError(
                        f"Expected {self.classes} class {name}. Received: {len(seq)}"
                    )
        object.__setattr__(self, "ignore_values", tuple(int(v) for v in self.ignore_values))
        object.__setattr__(self, "ignore_colors", tuple(self.ignore_colors))
        for colour in (self.colors or ()) + self.ignore_colors:
            _hex(colour)
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ConfigError(f"Expected distinct class values. Received: {self.values}")
        self._check_sets()

    def _check_sets(self) -> None:
        sets = tuple(tuple(sorted({int(c) for c in s})) for s in self.sets)
        object.__setattr__(self, "sets", sets)
        object.__setattr__(self, "set_values", tuple(int(v) for v in self.set_values))
        object.__setattr__(self, "set_colors", tuple(self.set_colors))
        object.__setattr__(self, "set_names", tuple(str(n) for n in self.set_names))
        if not sets:
            return
        if self.classes > SET_BASE or len(sets) > MAX_SETS:
            raise ConfigError(f"Expected at most {SET_BASE} classes and {MAX_SETS} class sets. "
                              f"Received: {self.classes} classes, {len(sets)} sets")
        for members in sets:
            if not all(0 <= c < self.classes for c in members) or not \
                    2 <= len(members) < self.classes:
                raise ConfigError(f"Expected a class set of 2 to {self.classes - 1} of the class "
                                  f"ids 0..{self.classes - 1}. Received: {list(members)}")
        for name in ("set_values", "set_colors", "set_names"):
            seq = getattr(self, name)
            if seq and len(seq) != len(sets):
                raise ConfigError(f"Expected {len(sets)} {name.replace('_', ' ')}. "
                                  f"Received: {len(seq)}")
        if not self.set_values and not self.set_colors:
            raise ConfigError("Expected a mask value or colour for each class set. Received: "
                              "neither")
        for colour in self.set_colors:
            _hex(colour)
        taken = set(self.values or range(self.classes)) & set(self.set_values)
        if taken:
            raise ConfigError(f"Expected set values apart from class values. Received: "
                              f"{sorted(taken)} for both")

    def set_name(self, k: int) -> str:
        """The name of set ``k``."""
        return self.set_names[k] if k < len(self.set_names) else f"set {k + 1}"

    def value_table(self) -> dict[int, int]:
        """Mask value -> class id (or IGNORE) for id-coded masks."""
        table = {int(v): i for i, v in enumerate(self.values or range(self.classes))}
        table.update({v: SET_BASE + k for k, v in enumerate(self.set_values)})
        table.update({v: IGNORE for v in self.ignore_values})
        return table

    def colour_table(self) -> dict[int, int]:
        """Packed ``0xRRGGBB`` colour -> class id (or IGNORE) for colour-coded masks."""
        table = {_hex(c): i for i, c in enumerate(self.colors or ())}
        table.update({_hex(c): SET_BASE + k for k, c in enumerate(self.set_colors)})
        table.update({_hex(c): IGNORE for c in self.ignore_colors})
        return table

    def accepted(self) -> str:
        """The accepted mask values, for error messages."""
        values = list(self.values or range(self.classes))
        text = f"{values[0]}..{values[-1]}" if values == list(range(values[0], values[-1] + 1)) \
            else ",".join(map(str, values))
        return text


def parse_ignore(items: Sequence[str | int]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Split ``--ignore-value`` items into integer values and ``#rrggbb`` colours."""
    values: list[int] = []
    colours: list[str] = []
    for item in items:
        text = str(item).strip()
        if text.startswith("#"):
            _hex(text)
            colours.append(text)
            continue
        try:
            values.append(int(text))
        except ValueError as exc:
            raise ConfigError(
                f"Expected an integer mask value or a colour like '#9b9b9b'. Received: {text!r}"
            ) from exc
    return tuple(values), tuple(colours)


def mask_values(path: str | Path, ignore: Sequence[int] = ()) -> set[int] | None:
    """The values of a one-band mask raster, without ``ignore`` and its nodata value.

    Returns:
        The set of values, or None for a mask of several bands (colour-coded).

    Raises:
        InputError: The file is missing or not a readable raster (one line naming it).
    """
    from geofuse.read.rasterfile import open_raster

    with open_raster(path) as ds:
        if ds.count != 1:
            return None
        data = ds.read(1)
        if data.dtype == np.uint8:  # a histogram: far faster than sorting every pixel
            values = np.flatnonzero(np.bincount(data.ravel(), minlength=256))
        else:
            values = np.unique(data)
        return {int(v) for v in values if int(v) not in ignore and v != ds.nodata}


def binary_coding(seen: set[int]) -> LabelCoding | None:
    """The coding of binary masks of 0 and 255 (background, the one class), else None."""
    if seen <= {0, 255} and 255 in seen:
        return LabelCoding(classes=2, values=(0, 255))
    return None


def load_classes(path: str | Path) -> tuple[tuple[ClassInfo, ...], LabelCoding]:
    """Read a ``classes.json``: class names/colours, mask values and ignored values.

    Accepts ``{"classes": [...], "ignore": [...]}`` or a bare list. Each class may give ``id``
    (default: its position), ``name`` (or ``title``), ``color`` and ``value``.

    Raises:
        InputError: When the file is missing or malformed.

    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such classes file") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON classes file ({exc})") from exc
    items = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        raise InputError(f"{path}: expected a list of classes under 'classes'")
    try:
        entries = sorted(
            ((int(c.get("id", i)), c) for i, c in enumerate(items)), key=lambda e: e[0]
        )
        if [e[0] for e in entries] != list(range(len(entries))):
            raise InputError(
                f"{path}: expected class ids 0..{len(entries) - 1}. "
                f"Received: {[e[0] for e in entries]}"
            )
        classes = tuple(
            ClassInfo(i, str(c.get("name", c.get("title", f"class{i}"))),
                      str(c.get("color", default_colour(
                          i, str(c.get("name", c.get("title", "")))))))
            for i, c in entries
        )
        has_values = any("value" in c for _, c in entries)
        values = tuple(int(c.get("value", i)) for i, c in entries) if has_values else None
        has_colours = all("color" in c for _, c in entries)
        ignore = data.get("ignore", []) if isinstance(data, dict) else []
        ignore_list = ignore if isinstance(ignore, list) else [ignore]
        ignore_values, ignore_colours = parse_ignore(ignore_list)
        sets = data.get("sets", []) if isinstance(data, dict) else []
        if not isinstance(sets, list) or not all(isinstance(e, dict) for e in sets):
            raise InputError(f"{path}: expected a list of class sets under 'sets'")
        members = tuple(tuple(_class_id(classes, m, e.get("name", ""))
                              for m in e.get("classes", [])) for e in sets)
        coding = LabelCoding(
            classes=len(classes), values=values,
            colors=tuple(c.color for c in classes) if has_colours else None,
            ignore_values=ignore_values, ignore_colors=ignore_colours, sets=members,
            set_values=tuple(int(e["value"]) for e in sets if "value" in e),
            set_colors=tuple(str(e["color"]) for e in sets if "color" in e),
            set_names=tuple(str(e.get("name", f"set {k + 1}")) for k, e in enumerate(sets)),
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    return classes, coding


def _class_id(classes: Sequence[ClassInfo], member: object, set_name: str) -> int:
    """A class set's member (a class name or id) as a class id."""
    for c in classes:
        if member == c.name or member == c.id:
            return c.id
    raise ConfigError(f"Expected class names or ids in the class set {set_name!r} "
                      f"({', '.join(c.name for c in classes)}). Received: {member!r}")


def _map_values(data: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Map integer pixels through ``table``; values not in it become UNKNOWN."""
    if data.dtype == np.uint8:
        lut = np.full(256, UNKNOWN, dtype=np.uint8)
        for value, code in table.items():
            if 0 <= value < 256:
                lut[value] = code
        return lut[data]
    uniques, inverse = np.unique(data, return_inverse=True)
    codes = np.array([table.get(int(v), UNKNOWN) for v in uniques], dtype=np.uint8)
    return codes[inverse].reshape(data.shape)


@dataclass(frozen=True)
class MaskDecoder:
    """Decodes the pixels of one mask file into class ids (IGNORE/UNKNOWN as documented).

    Build it with :meth:`for_dataset`, which chooses ids, RGB colours or palette colours.
    """

    kind: str  # "ids", "rgb" or "palette"
    table: dict[int, int]
    bands: tuple[int, ...]
    nodata: float | None

    @classmethod
    def for_dataset(cls, ds: Any, coding: LabelCoding, name: str) -> MaskDecoder:
        """Choose how to decode the mask dataset ``ds`` (an open rasterio dataset)."""
        from rasterio.enums import ColorInterp

        palette = ds.count == 1 and ds.colorinterp[0] == ColorInterp.palette
        colour_table = coding.colour_table() if coding.colors else {}
        if ds.count >= 3 and coding.mode != "ids":
            if not coding.colors:
                raise InputError(
                    f"Expected class colours (classes.json) for the colour-coded mask {name}. "
                    "Received: no colours"
                )
            bands = (1, 2, 3, 4) if ds.count >= 4 and \
                ds.colorinterp[3] == ColorInterp.alpha else (1, 2, 3)
            return cls("rgb", colour_table, bands, None)
        if ds.count != 1 and coding.mode != "colors":
            raise InputError(
                f"Expected a 1-band mask of class ids or a 3-band colour mask. "
                f"Received: {ds.count} bands in {name}"
            )
        if palette and coding.colors and coding.mode != "ids":
            cmap = ds.colormap(1)
            packed = {v: (r << 16) | (g << 8) | b for v, (r, g, b, *_) in cmap.items()}
            class_colours = {_hex(c) for c in coding.colors}
            matches = len(class_colours & set(packed.values()))
            if coding.mode == "colors" or matches >= min(2, len(class_colours), len(packed)):
                table = {v: colour_table.get(p, UNKNOWN) for v, p in packed.items()}
                table.update({v: IGNORE for v in coding.ignore_values})
                return cls("palette", table, (1,), ds.nodata)
        if coding.mode == "colors":
            raise InputError(
                f"Expected a colour-coded mask (RGB or palette). Received: 1 band of ids in {name}"
            )
        return cls("ids", coding.value_table(), (1,), ds.nodata)

    def decode(self, data: np.ndarray) -> np.ndarray:
        """``(bands, h, w)`` raw mask pixels -> ``(h, w)`` uint8 class ids."""
        if self.kind == "rgb":
            rgb = data[:3].astype(np.int64)
            packed = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
            out = _map_values(packed, self.table)
            if data.shape[0] >= 4:
                out[data[3] == 0] = IGNORE
            return out
        band = data[0]
        invalid = None
        if band.dtype.kind == "f":
            invalid = ~np.isfinite(band)
            band = np.where(invalid, 0, band)
            if np.any(band != np.round(band)):
                return np.full(band.shape, UNKNOWN, np.uint8)
            band = band.astype(np.int64)
        out = _map_values(band, self.table)
        if self.nodata is not None and np.isfinite(self.nodata):
            out[data[0] == self.nodata] = IGNORE
        if invalid is not None:
            out[invalid] = IGNORE
        return out

    def unknown_values(self, data: np.ndarray, decoded: np.ndarray) -> list[str]:
        """The raw values (or colours) that decoded to UNKNOWN, for error messages."""
        where = decoded == UNKNOWN
        if self.kind == "rgb":
            rgb = data[:3, where].astype(np.int64).T
            return sorted({f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb[:5000]})[:5]
        if self.kind == "palette":
            return sorted({str(v) for v in np.unique(data[0][where])})[:5]
        return [str(v) for v in np.unique(data[0][where])[:5]]
