"""How ``evaluate`` reads labels against a model's classes, and which classes they cover.

In this order: the labels' own classes file (``LabelOptions.classes_file``, or a tiles
folder's ``classes.json`` of as many classes as the model), or one-class masks with
``label_class`` (0/1 or 0/255: that class, and a class set of every other class, so the class is
scored against the rest), or class ids 0..N-1 (for a two-class model, 0/255 masks as
``train`` reads them). Masks of two values met by a model of more classes, without
``label_class``, get a one-line notice: they are most likely one-class masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from geofuse.errors import ConfigError, InputError
from geofuse.model.spec import ClassInfo
from geofuse.sources import Source
from geofuse.training.config import EvaluateConfig, LabelOptions, TilesSource
from geofuse.training.labels import LabelCoding, binary_coding, load_classes, mask_values

ONE_CLASS_VALUES = ({0, 1}, {0, 255})
"""The two values of one-class masks (the class 1 or 255, the rest 0)."""


def evaluation_coding(
    config: EvaluateConfig, classes: tuple[ClassInfo, ...], masks: Sequence[Source]
) -> tuple[LabelCoding, list[str]]:
    """How the masks encode the model's ``classes``, and notices about it.

    Args:
        config: The evaluation (its label options, ``label_class`` and source).
        classes: The model's classes.
        masks: The mask rasters (empty for vector labels).

    Raises:
        ConfigError: ``label_class`` that is not a class of the model, or with vector labels.
        InputError: A classes file of another number of classes; masks that ``label_class``
            cannot read, or two-value masks whose values are not class ids.
    """
    options = config.labels
    if config.label_class is not None:
        return one_class_coding(config.label_class, classes, masks, options), []
    notices: list[str] = []
    base = options.coding
    if options.classes_file is not None:
        file_classes, base = load_classes(options.classes_file)
        if len(file_classes) != len(classes):
            raise InputError(
                f"{options.classes_file}: expected {len(classes)} classes like the model. "
                f"Received: {len(file_classes)}"
            )
    elif base is None and isinstance(config.source, TilesSource):
        base, notice = _folder_coding(Path(config.source.root), classes)
        notices += [notice] if notice else []
    if base is None and options.mask_mode != "colors" and masks:
        seen = _values(masks, options.ignore_values)
        if seen is not None and len(classes) == 2:
            base = binary_coding(seen)
        elif seen is not None and any(seen <= v and len(seen) == 2 for v in ONE_CLASS_VALUES):
            notices.append(_one_class_notice(seen, classes, masks[0]))
    return options.merge(base, classes), notices


def one_class_coding(
    name: str, classes: tuple[ClassInfo, ...], masks: Sequence[Source], options: LabelOptions
) -> LabelCoding:
    """The coding of one-class masks of the model's class ``name`` (see the module docstring).

    The class is 1 (or 255, as the masks say), 0 the other classes: a class set, or with a
    two-class model the other class.
    """
    ids = {c.name: c.id for c in classes}
    if name not in ids:
        raise ConfigError(
            f"Expected `label_class` among the model's classes "
            f"({', '.join(ids)}). Received: {name!r}"
        )
    if not masks:
        raise ConfigError(
            "Expected mask rasters with `label_class`. Received: vector labels "
            "(their `class_field` names the classes)"
        )
    seen: set[int] = set()
    for mask in masks:
        values = mask_values(mask, options.ignore_values)
        if (
            values is None
            or not any(values <= v for v in ONE_CLASS_VALUES)
            or ({1, 255} <= seen | values)
        ):
            shown = (
                "several bands"
                if values is None
                else "values " + ", ".join(map(str, sorted(values)))
            )
            raise InputError(
                f"{mask}: expected a one-class mask of 0 and 1, or of 0 and 255 "
                f"like the others (`label_class` {name}). Received: {shown}"
            )
        seen |= values
    value = 255 if 255 in seen else 1
    target = ids[name]
    if len(classes) == 2:
        coding = LabelCoding(classes=2, values=tuple(value if i == target else 0 for i in range(2)))
    else:  # the other classes' values never occur (checked): distinct placeholders
        coding = LabelCoding(
            classes=len(classes),
            values=tuple(value if i == target else 256 + i for i in range(len(classes))),
            sets=(tuple(i for i in range(len(classes)) if i != target),),
            set_values=(0,),
            set_names=(f"not {name}",),
        )
    return options.merge(coding, classes)


def _folder_coding(
    root: Path, classes: tuple[ClassInfo, ...]
) -> tuple[LabelCoding | None, str | None]:
    """A tiles folder's ``classes.json`` coding when it has the model's number of classes.

    Returns:
        ``(coding, None)``, ``(None, None)`` without a file, or ``(None, notice)`` for a file
        of another number of classes (not used).
    """
    path = root / "classes.json"
    if not path.is_file():
        return None, None
    file_classes, coding = load_classes(path)
    if len(file_classes) != len(classes):
        return None, (
            f"{path}: not used: {len(file_classes)} classes, the model has "
            f"{len(classes)}; masks read as class ids"
        )
    return coding, None


def _values(masks: Sequence[Source], ignore: Sequence[int]) -> set[int] | None:
    """The values of every one-band mask (None when one is colour-coded)."""
    seen: set[int] = set()
    for mask in masks:
        values = mask_values(mask, ignore)
        if values is None:
            return None
        seen |= values
    return seen


def _one_class_notice(seen: set[int], classes: tuple[ClassInfo, ...], mask: Source) -> str:
    """The notice (or, for 0/255, the error) about two-value masks and a larger model."""
    names = ", ".join(c.name for c in classes)
    if 255 in seen:
        raise InputError(
            f"{mask}: expected class ids 0..{len(classes) - 1} ({names}). "
            "Received: values 0 and 255, a one-class mask: name its class "
            "(`label_class`)"
        )
    return (
        f"labels hold only the values 0 and 1 while the model has {len(classes)} classes "
        f"({names}): scored as {classes[0].name} and {classes[1].name}; for one-class "
        "masks name their class (`label_class`) to score it against the rest"
    )
