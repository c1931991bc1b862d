"""Calibration chips: the real inputs that fix the value ranges of a model's int8 network.

An int8 network (:mod:`geofuse.model.quantize`) is calibrated on chips of real imagery. A model
file carries its own (the ``calibration.npy`` member: raw values in the model's input data type):
``geofuse train`` writes chips of its training images (:func:`training_chips`); a user may name
a folder of images instead (:func:`folder_calibration`). Chips are picked deterministically, so
a model and its chips always give the same int8 network, in every process and every Dask band,
and the chips' SHA-256 keys the int8 cache entry.

A model file may also carry ``int8.json``: the measured cost of its int8 network against f32 on
labelled held-out data (:func:`record_int8_check`). ``precision auto`` picks int8 only for a
model whose record shows a negligible cost (:func:`int8_evidence`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from geofuse.errors import InputError, ModelError, first_line, plural
from geofuse.model.modelfile import (
    CALIBRATION_MEMBER,
    INT8_CHECK_MEMBER,
    array_bytes,
    read_member,
    replace_members,
    resolve_model_path,
)
from geofuse.model.spec import ModelInfo

CHIPS = 24
"""Calibration chips picked (24 x 128² RGB uint8 make 1.2 MB in the model file, before deflate)."""
SIDE = 128
"""Side of a calibration chip in pixels (smaller where no image is this big)."""
MIN_VALID = 0.99
"""Share of valid pixels a chip needs (nodata would calibrate the ranges on zeros)."""
AGREEMENT_MIN = 0.985
"""``auto`` picks int8 only where int8 and f32 give the same class on at least this share of
the valid pixels of every held-out set of the model's record..."""
IOU_CHANGE_MAX = 0.01
"""...and no class's IoU, nor the mean, moves by more than this."""
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt")

Read = Callable[[Window], tuple[np.ndarray, np.ndarray]]
"""Reads a window, giving raw ``(bands, rows, cols)`` values and ``(rows, cols)`` validity."""


@dataclass(frozen=True)
class Calibration:
    """The chips an int8 network is calibrated on.

    Attributes:
        chips: Raw ``(n, rows, cols, bands)`` values in the model's input data type.
        source: Where they come from: ``model file`` or a folder.
        digest: SHA-256 of the chips (as a ``.npy`` file): part of the int8 cache key.

    """

    chips: np.ndarray
    source: str
    digest: str

    @classmethod
    def of(cls, chips: np.ndarray, source: str) -> Calibration:
        """The calibration of ``chips``, with their digest."""
        return cls(chips, source, hashlib.sha256(array_bytes(chips)).hexdigest())

    def inputs(self, info: ModelInfo) -> list[np.ndarray]:
        """The chips normalised as the scene reader normalises patches.

        Returns:
            One float32 ``(1, rows, cols, bands)`` array per chip.

        """
        norm = info.normalization
        inv_std = 1.0 / np.asarray(norm.std, np.float32)
        gain = (np.float32(norm.scale) * inv_std).astype(np.float32)
        shift = np.float32(norm.offset) - np.asarray(norm.mean, np.float32)
        offset = (shift * inv_std).astype(np.float32)
        return [(np.multiply(chip, gain, dtype=np.float32) + offset)[None] for chip in self.chips]


def pick_chips(
    areas: Sequence[tuple[Read, Window]], multiple: int = 1, side: int = SIDE, count: int = CHIPS
) -> np.ndarray | None:
    """Pick ``count`` chips of ``side`` pixels from ``areas``, spread over them, deterministically.

    Every area is cut into the chips that fit it whole; the chips taken are evenly spaced over
    that list (in the order of ``areas``), a chip with too few valid pixels (:data:`MIN_VALID`)
    giving way to the next one. Where no area holds a chip of ``side``, the side is the largest
    multiple of ``multiple`` that fits the largest area.

    Returns:
        ``(n, side, side, bands)`` raw values, or None when no chip fits.

    """
    fits = [min(int(w.height), int(w.width)) for _, w in areas]
    if not fits:
        return None
    side = min(side, max(fits)) // multiple * multiple
    if side < 1:
        return None
    candidates = [
        (read, Window(c, r, side, side))
        for read, w in areas
        for r in range(int(w.row_off), int(w.row_off + w.height) - side + 1, side)
        for c in range(int(w.col_off), int(w.col_off + w.width) - side + 1, side)
    ]
    if not candidates:
        return None
    spread = np.unique(np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round())
    order = [int(i) for i in spread] + [i for i in range(len(candidates)) if i not in spread]
    chips = []
    for index in order:
        read, window = candidates[index]
        data, valid = read(window)
        if valid.mean() >= MIN_VALID:
            chips.append(np.moveaxis(data, 0, -1))
            if len(chips) == count:
                break
    return np.stack(chips) if chips else None


def training_chips(
    rasters: Sequence[Any], units: Sequence[Any], multiple: int = 1
) -> np.ndarray | None:
    """Calibration chips from the training (not validation) parts of ``geofuse train``'s data.

    Args:
        rasters: The labelled rasters (``read(window)`` gives raw data, validity, labels).
        units: Their tiles or blocks (``raster``, ``window``, ``validation``).
        multiple: The network's side multiple (``2**depth``).

    """
    areas = [(_reader(rasters[u.raster]), u.window) for u in units if not u.validation]
    return pick_chips(areas, multiple)


def _reader(raster: Any) -> Read:
    return lambda window: raster.read(window)[:2]


def folder_calibration(folder: str | Path, info: ModelInfo) -> Calibration:
    """Calibration chips from the images in ``folder`` (sorted by name), for the model ``info``.

    The images must be like the model's training images: its band count (alpha left out) and
    input data type; their values are normalised as the model's.

    Raises:
        InputError: No such folder, no image in it, or images of another data type or band
            count than the model's.

    """
    from geofuse.read.reader import SceneReader

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"{folder}: expected a folder of calibration images. Received: "
            + ("a file" if folder.exists() else "no such folder")
        )
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(
            f"{folder}: expected calibration images ({', '.join(IMAGE_SUFFIXES)}). Received: none"
        )
    areas: list[tuple[Read, Window]] = []
    for image in images:  # each opened to check it; the few chips picked are read later
        with SceneReader(image, expected_bands=info.spec.bands) as reader:
            dtype = reader.dataset.dtypes[reader.bands[0] - 1]
            if dtype != info.input_dtype:
                raise InputError(
                    f"{image}: expected a calibration image of the model's "
                    f"data type {info.input_dtype}. Received: {dtype}"
                )
            areas.append((_image_reader(image, info), Window(0, 0, reader.width, reader.height)))
    chips = pick_chips(areas, info.spec.arch.multiple)
    if chips is None:
        raise InputError(f"{folder}: expected calibration images with valid pixels. Received: none")
    return Calibration.of(chips, str(folder))


def _image_reader(image: Path, info: ModelInfo) -> Read:
    from geofuse.read.reader import SceneReader

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        with SceneReader(image, expected_bands=info.spec.bands) as reader:
            return reader.read_window(window)

    return read


def model_calibration(path: str | Path) -> Calibration | None:
    """The calibration chips a model file carries, or None.

    Raises:
        ModelError: When the member is not a valid array.

    """
    data = read_member(path, CALIBRATION_MEMBER)
    if data is None:
        return None
    try:
        chips = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelError(
            f"{resolve_model_path(path)}: invalid {CALIBRATION_MEMBER} ({first_line(exc)})"
        ) from exc
    if chips.ndim != 4 or not len(chips):
        raise ModelError(
            f"{resolve_model_path(path)}: expected (chips, rows, cols, bands) in "
            f"{CALIBRATION_MEMBER}. Received: shape {chips.shape}"
        )
    return Calibration(chips, "model file", hashlib.sha256(data).hexdigest())


def calibration_for(
    path: str | Path, info: ModelInfo, folder: str | Path | None = None
) -> Calibration:
    """The calibration of a model's int8 network: from ``folder`` if named, else the model's.

    Raises:
        ModelError: No folder named and the model file carries no chips.
        InputError: A bad folder (:func:`folder_calibration`).

    """
    if folder is not None:
        return folder_calibration(folder, info)
    calibration = model_calibration(path)
    if calibration is None:
        raise ModelError(
            f"{resolve_model_path(path)}: expected calibration chips in the model "
            "file for precision 'int8' (models trained by geofuse carry them). "
            "Received: none; name a folder of calibration images"
        )
    if calibration.chips.shape[-1] != info.spec.bands:
        raise ModelError(
            f"{resolve_model_path(path)}: expected calibration chips of "
            f"{info.spec.bands} bands. Received: {calibration.chips.shape[-1]}"
        )
    return calibration


def add_calibration(path: str | Path, chips: np.ndarray | None) -> Path:
    """Write ``chips`` into a model file as its calibration chips (None: remove them).

    The int8 record, which was measured with the old chips, is removed too.
    """
    return replace_members(
        path,
        {
            CALIBRATION_MEMBER: None if chips is None else array_bytes(chips),
            INT8_CHECK_MEMBER: None,
        },
    )


# --------------------------------------------------------------------------- the evidence


def record_int8_check(
    path: str | Path, sets: dict[str, dict[str, Any]], facts: dict[str, Any]
) -> Path:
    """Record in a model file what its int8 network costs against f32, per held-out set.

    Args:
        path: The model file (it must carry calibration chips: the record names them).
        sets: Per labelled set, ``agreement`` (share of valid pixels of the same class) and
            ``iou_change`` (per class and ``mean``: int8 IoU minus f32 IoU).
        facts: How it was measured (versions, data, where the study lives).

    Raises:
        ModelError: The file carries no calibration chips.

    """
    calibration = model_calibration(path)
    if calibration is None:
        raise ModelError(f"{path}: expected calibration chips before an int8 record")
    record = {"calibration_sha256": calibration.digest, "sets": sets, **facts}
    return replace_members(path, {INT8_CHECK_MEMBER: json.dumps(record, indent=2) + "\n"})


def int8_check(path: str | Path) -> dict[str, Any] | None:
    """A model file's int8 record (:func:`record_int8_check`), or None."""
    data = read_member(path, INT8_CHECK_MEMBER)
    try:
        return None if data is None else json.loads(data)
    except json.JSONDecodeError:
        return None


def int8_evidence(path: str | Path) -> tuple[bool, str]:
    """Whether a model's record shows int8 costs it nothing worth noting, and why (one line).

    The rule: the model carries calibration chips and a record measured with those chips, in
    which every held-out set has a class agreement of at least :data:`AGREEMENT_MIN` and no
    IoU (per class and mean) moving by more than :data:`IOU_CHANGE_MAX`.
    """
    record = int8_check(path)
    calibration = model_calibration(path)
    if record is None or calibration is None or not record.get("sets"):
        return False, "no int8 record in the model file"
    if record.get("calibration_sha256") != calibration.digest:
        return False, "the int8 record was measured with other calibration chips"
    for name, scores in record["sets"].items():
        agreement = float(scores.get("agreement", 0.0))
        if agreement < AGREEMENT_MIN:
            return False, f"int8 agrees with f32 on {agreement:.1%} of {name}"
        worst = largest_iou_change(scores)
        if worst > IOU_CHANGE_MAX:
            return False, f"int8 moves an IoU of {name} by {worst:.3f}"
    return True, f"int8 agrees with f32 on {plural(len(record['sets']), 'held-out set')}"


def largest_iou_change(scores: dict[str, Any]) -> float:
    """The largest IoU move (per class or mean, either sign) of one set of an int8 record."""
    return max((abs(float(v)) for v in scores.get("iou_change", {}).values()), default=0.0)
