"""The class table of a training run: given, read from a classes file, or inferred from labels.

In this order: the classes given (``LabelOptions.classes``), a classes file
(``LabelOptions.classes_file``), a tiles folder's ``classes.json``; else the labels say:
vector class names, or the ids seen in id-coded masks. Binary labels (masks of 0 and 1, or 0
and 255; a vector without a class field) give ``background`` and one class named after the
labels (:func:`foreground_name`). ``LabelOptions.class_names`` renames the classes found.
"""

from __future__ import annotations

import re
from pathlib import Path

from geofuse.errors import ConfigError, InputError
from geofuse.model.spec import ClassInfo
from geofuse.sources import Source, as_source, source_name
from geofuse.training.config import SceneSource, TilesSource, TrainConfig
from geofuse.training.datasets import VECTOR_EXTS, find_pairs
from geofuse.training.labels import (
    LabelCoding,
    binary_coding,
    default_colour,
    load_classes,
    mask_values,
)

GENERIC_NAMES = frozenset(
    {
        "masks",
        "mask",
        "labels",
        "label",
        "gt",
        "groundtruth",
        "annotations",
        "annotation",
        "y",
        "targets",
        "target",
        "images",
        "scene",
        "scenes",
        "image",
        "tiles",
        "chips",
        "data",
        "dataset",
        "train",
        "training",
        "val",
        "valid",
        "validation",
        "test",
        "testing",
    }
)
"""Folder and file names that say nothing of what binary labels label."""
FOREGROUND = "foreground"
"""The name of the labelled class of binary labels when no file or folder names it."""
_LABEL_WORDS = re.compile(r"[ _.-]*(masks?|labels?|gt|annotations?)$", re.IGNORECASE)


def class_table(config: TrainConfig) -> tuple[tuple[ClassInfo, ...], LabelCoding]:
    """The run's classes (renamed as asked) and how its masks encode them.

    Raises:
        InputError: Colour-coded masks without a classes file, negative mask values.
        ConfigError: Class names or a coding that do not fit the classes.
    """
    classes, coding = _given_classes(config)
    if not classes:
        classes, coding = _infer_classes(config)
    classes = _rename(classes, config.labels.class_names)
    return classes, config.labels.merge(coding, classes)


def class_sets(config: TrainConfig, coding: LabelCoding) -> tuple[tuple[int, ...], ...]:
    """The class sets of the run: those of every coding that gives any (they must agree).

    A source with partial labels (its own coding, with sets) may train beside fully labelled
    ones (no sets).

    Raises:
        ConfigError: When two codings give different class sets.
    """
    codings = [coding, *(getattr(s, "coding", None) for s in config.sources)]
    given = [c.sets for c in codings if c is not None and c.sets]
    for sets in given[1:]:
        if sets != given[0]:
            raise ConfigError(
                f"Expected the same class sets in every labels coding. "
                f"Received: {list(given[0])} and {list(sets)}"
            )
    return given[0] if given else ()


def foreground_name(source: TilesSource | SceneSource) -> str:
    """The name of the one labelled class of binary labels.

    The first name that says something among: the label file's (a scene's labels) or the
    masks folder's, then the tiles folder's, each without a trailing ``_mask(s)``,
    ``_label(s)``, ``_gt`` or ``_annotation(s)``; names in :data:`GENERIC_NAMES` say nothing.
    Without one: :data:`FOREGROUND`.
    """
    if isinstance(source, SceneSource):
        candidates = [Path(source_name(source.labels)).stem]
    else:
        root = Path(source.root)
        folder = root.parent if root.is_file() else root
        candidates = [source.masks, folder.resolve().name]
    for candidate in candidates:
        name = _LABEL_WORDS.sub("", candidate).strip(" _.-") or candidate
        if name and name.lower() not in GENERIC_NAMES:
            return name
    return FOREGROUND


def mask_paths(source: TilesSource | SceneSource) -> list[Source]:
    """The mask files of a source (a scene's labels, even a vector file)."""
    if isinstance(source, TilesSource):
        return [m for _, m in find_pairs(source)]
    return [as_source(source.labels)]


def _given_classes(config: TrainConfig) -> tuple[tuple[ClassInfo, ...], LabelCoding | None]:
    """The class table given: explicit, from a classes file, from a tiles folder's classes.json.

    Empty when none is given.
    """
    labels = config.labels
    if labels.classes is not None:
        return tuple(labels.classes), labels.coding
    if labels.classes_file is not None:
        return load_classes(labels.classes_file)
    for source in config.sources:
        if isinstance(source, TilesSource) and (Path(source.root) / "classes.json").is_file():
            return load_classes(Path(source.root) / "classes.json")
    return (), None


def _rename(classes: tuple[ClassInfo, ...], names: tuple[str, ...]) -> tuple[ClassInfo, ...]:
    """The classes under the user's names (``class_names``), if any."""
    if not names:
        return classes
    if len(names) != len(classes):
        raise ConfigError(
            f"Expected {len(classes)} class names "
            f"({', '.join(c.name for c in classes)}). Received: {len(names)}"
        )
    return tuple(ClassInfo(c.id, n, c.color) for c, n in zip(classes, names, strict=True))


def _binary(name: str) -> tuple[ClassInfo, ...]:
    """``background`` and the class ``name``."""
    return (
        ClassInfo(0, "background", default_colour(0, "background")),
        ClassInfo(1, name, default_colour(1, name)),
    )


def _infer_classes(config: TrainConfig) -> tuple[tuple[ClassInfo, ...], LabelCoding | None]:
    """Class table when none is given: vector class names, or ids seen in id-coded masks."""
    from geofuse.training.vector_labels import vector_class_names

    for source in config.sources:
        if isinstance(source, SceneSource) and Path(source.labels).suffix.lower() in VECTOR_EXTS:
            if source.class_field is None:
                return _binary(foreground_name(source)), None
            found = vector_class_names(source.labels, source.class_field)
            if all(n.lstrip("-").isdigit() for n in found):
                top = max(1, max(int(n) for n in found))
                names = [f"class{i}" for i in range(top + 1)]
            else:
                names = ["background", *found]
            return tuple(ClassInfo(i, n, default_colour(i, n)) for i, n in enumerate(names)), None
    top = 1
    seen: set[int] = set()
    ignore = set(config.labels.ignore_values)
    for path in (m for s in config.sources for m in mask_paths(s)):
        values = mask_values(path, ignore)
        if values is None:
            raise InputError(
                f"{path}: expected a classes file (`classes_file`) with colours for "
                "colour-coded masks. Received: none"
            )
        if values and min(values) < 0:
            raise InputError(
                f"{path}: expected class ids >= 0. Received: {min(values)} "
                "(ignore it with `ignore_values`)"
            )
        top = max([top, *values])
        seen.update(values)
    if coding := binary_coding(seen):
        return _binary(foreground_name(config.sources[0])), coding
    if top == 1:
        return _binary(foreground_name(config.sources[0])), None
    return tuple(ClassInfo(i, f"class{i}", default_colour(i)) for i in range(top + 1)), None
