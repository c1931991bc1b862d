"""Default display colours of classes, by name (masks' colour tables, quick-looks)."""

from __future__ import annotations

import re

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
READABLE_COLOURS = (  # (word starts in a class name, display colour), first match wins
    (("background", "unlabel", "nodata", "no data", "other"), "#d9d9d9"),  # light grey
    (("water", "river", "lake", "sea", "ocean", "flood", "wet"), "#1f78b4"),  # blue
    (("vegetation", "forest", "tree", "grass", "crop", "farm", "field", "park", "shrub",
      "green", "agri"), "#33a02c"),  # green
    (("building", "roof", "house", "built"), "#e31a1c"),  # red
    (("road", "street", "highway", "paved", "parking", "rail"), "#808080"),  # grey
    (("land", "bare", "soil", "sand", "desert", "ground", "barren", "rock"), "#d2b48c"),  # tan
    (("cloud", "snow", "ice"), "#f0f0f0"),
    (("shadow",), "#404040"),
)
"""Display colours of common classes by name, what outputs and previews use by default."""
OTHER_COLOURS = ("#6a3d9a", "#ff7f00", "#a6cee3", "#b15928", "#fb9a99", "#cab2d6", "#fdbf6f",
                 "#1b9e77", "#b2df8a", "#e7298a")
"""Distinct colours for classes whose names say nothing (``class3``), by class id."""


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#1f78b4"`` -> ``(31, 120, 180)``."""
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def class_colour(name: str, index: int) -> str:
    """The default display colour of class ``index`` called ``name``.

    Water is blue, vegetation green, buildings red, roads grey, bare land tan (see
    :data:`READABLE_COLOURS`); other names get a distinct colour by index. A ``classes.json``
    that gives colours overrides these.
    """
    lowered = name.lower()
    for words, colour in READABLE_COLOURS:
        if any(re.search(rf"\b{word}", lowered) for word in words):  # words, or their starts
            return colour
    return OTHER_COLOURS[index % len(OTHER_COLOURS)]
