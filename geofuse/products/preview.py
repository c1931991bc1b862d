"""Quick-look pictures: the scene with its class mask overlaid and a legend, as a PNG.

The scene and the mask are read at the preview's reduced resolution (``read(out_shape=...)``),
so GDAL serves big scenes from their overviews instead of decoding every pixel. By default
the picture is at most ``PREVIEW_SIZE`` pixels on its longest side and never bigger than the
scene; an explicit ``size`` also enlarges small scenes (by a whole factor, each pixel a crisp
square), so a 64 px chip can be looked at.

The scene is read as RGB (its first three bands, or the bands asked for) or grey (one band),
each band stretched between its 2nd and 98th percentiles. Two styles (``PREVIEW_STYLES``):

- ``outline`` (the default): the scene in grey, each class tinted in its colour and outlined in
  it at full strength. A class colour then always stands out against the picture, also where
  the scene has that colour itself (red building colour over red roofs).
- ``fill``: the scene in colour with the class colours blended over it.

Colours come from the mask's colour table; classes missing from it get the readable default
colours (:func:`geofuse.colours.class_colour`). A legend panel on the right names each class
and its share of the mask; it grows to fit long names (up to ``LEGEND_MAX_WIDTH``) and wraps
what is longer still. Drawn with Pillow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import ColorInterp, Resampling

from geofuse.colours import class_colour, hex_rgb
from geofuse.config import PREVIEW_SIZE, PREVIEW_STYLES
from geofuse.errors import ConfigError, InputError, OutputError, plural
from geofuse.products.vectorize import mask_classes
from geofuse.read.rasterfile import open_raster
from geofuse.sources import as_source, source_name
from geofuse.write.failures import write_failure
from geofuse.write.outputs import atomic_path, check_destination

LEGEND_WIDTH = 200
"""Least width in pixels of the legend panel to the right of the picture."""
LEGEND_MAX_WIDTH = 420
"""The legend grows to fit its longest line up to this width, and wraps beyond it."""
OUTLINE_EVERY = 400
"""Outlines are one pixel wide, one more per this many pixels of the picture's longest side."""
ROW = 22
SWATCH = 22  # the colour square and its gap before the text
PAD = 10
FONT_SIZE = 14
BACKGROUND = (255, 255, 255)
NO_DATA = (40, 40, 40)


@dataclass(frozen=True)
class PreviewResult:
    """The written picture and its size in pixels."""

    path: Path
    width: int
    height: int


def preview_shape(width: int, height: int, size: int | None = None) -> tuple[int, int]:
    """``(columns, rows)`` of the picture.

    With ``size`` None: the scene shrunk to fit ``PREVIEW_SIZE``, never enlarged. With a
    ``size``: big scenes shrink to fit it and small ones grow by the largest whole factor
    that fits (a 64 px chip becomes 1024 px for ``size`` 1024), each pixel a sharp square.
    """
    longest = max(width, height)
    if size is None:
        factor = min(1.0, PREVIEW_SIZE / longest)
    else:
        factor = size / longest if longest >= size else float(size // longest)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _scene_bands(ds: rasterio.io.DatasetReader, bands: Sequence[int] | None) -> list[int]:
    if bands:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(
                f"Expected band numbers between 1 and {ds.count}. "
                f"Received: {','.join(map(str, bad))} for {ds.name}"
            )
        chosen = list(bands)
    else:
        chosen = [i for i, ci in enumerate(ds.colorinterp, 1) if ci != ColorInterp.alpha]
    return chosen[:3] if len(chosen) >= 3 else chosen[:1]


def _stretch(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(bands, h, w)`` -> ``(h, w, 3)`` uint8, 2-98 % percentile stretch per band."""
    out = np.zeros((*data.shape[1:], len(data)), dtype=np.float64)
    for i, band in enumerate(data.astype(np.float64)):
        values = band[valid & np.isfinite(band)]
        lo, hi = np.percentile(values, (2, 98)) if values.size else (0.0, 1.0)
        out[..., i] = (band - lo) / (hi - lo) if hi > lo else 0.5
    out = np.clip(np.nan_to_num(out), 0, 1) * 255
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out.astype(np.uint8)


def _class_colours(ds: rasterio.io.DatasetReader) -> dict[int, tuple[int, int, int]]:
    try:
        table = ds.colormap(1)
    except ValueError:
        return {}
    return {int(k): tuple(int(c) for c in v[:3]) for k, v in table.items()}


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _wrap(text: str, width: int, measure: Callable[[str], float]) -> list[str]:
    """``text`` in lines of at most ``width`` pixels: at spaces, else inside a long word."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if measure(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1 and measure(word) > width:  # a word longer than a line
            cut = 1
            while cut < len(word) and measure(word[:cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return lines + ([line] if line else [])


def legend_layout(texts: Sequence[str]) -> tuple[int, list[list[str]]]:
    """Width of the legend panel and the lines of each entry.

    The panel is ``LEGEND_WIDTH`` wide, wider when a line needs it (up to
    ``LEGEND_MAX_WIDTH``); entries longer than that wrap. (The title, the scene's name, is
    shortened with an ellipsis instead.)
    """
    font = _font()

    def measure(text: str) -> float:
        return font.getlength(text)

    needed = max([measure(t) + 3 * PAD + SWATCH for t in texts], default=0.0)
    width = int(min(LEGEND_MAX_WIDTH, max(LEGEND_WIDTH, np.ceil(needed))))
    room = width - 3 * PAD - SWATCH
    return width, [_wrap(t, room, measure) or [""] for t in texts]


def legend_height(entries: int, lines: int | None = None) -> int:
    """Pixels the legend needs for a title and ``entries`` classes over ``lines`` text lines."""
    return 2 * PAD + ROW + 4 + (entries if lines is None else lines) * ROW


def _legend(draw: ImageDraw.ImageDraw, x0: int, width: int, title: str,
            entries: list[tuple[tuple[int, int, int], list[str]]]) -> None:
    font = _font()
    text = title
    while text and draw.textlength(text, font=font) > width - 2 * PAD:
        text = "…" + text[2:]  # the end of a path or URL says most
    y = PAD
    draw.text((x0 + PAD, y), text, fill=(0, 0, 0), font=font)
    y += ROW + 4
    for colour, lines in entries:
        draw.rectangle([x0 + PAD, y + 2, x0 + PAD + 14, y + 16], fill=colour, outline=(0, 0, 0))
        for line in lines:
            draw.text((x0 + PAD + SWATCH, y), line, fill=(0, 0, 0), font=font)
            y += ROW


def _edges(classes: np.ndarray, labelled: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of the border of their class region (inside it)."""
    key = np.where(labelled, classes.astype(np.int32), -1)
    edge = np.zeros(key.shape, dtype=bool)
    edge[1:] |= key[1:] != key[:-1]
    edge[:-1] |= key[:-1] != key[1:]
    edge[:, 1:] |= key[:, 1:] != key[:, :-1]
    edge[:, :-1] |= key[:, :-1] != key[:, 1:]
    for _ in range(width - 1):  # thicken inwards, within the same class
        grown = edge.copy()
        grown[1:] |= edge[:-1] & (key[1:] == key[:-1])
        grown[:-1] |= edge[1:] & (key[:-1] == key[1:])
        grown[:, 1:] |= edge[:, :-1] & (key[:, 1:] == key[:, :-1])
        grown[:, :-1] |= edge[:, 1:] & (key[:, :-1] == key[:, 1:])
        edge = grown
    return edge & labelled


def _outline(classes: np.ndarray, labelled: np.ndarray, factor: int) -> np.ndarray:
    """The outline pixels of the picture's classes.

    On a picture enlarged by a whole ``factor`` the outline is one scene pixel wide (each
    scene pixel stays a sharp square); otherwise one pixel wide, plus one per
    ``OUTLINE_EVERY`` pixels of the picture's longest side.
    """
    if factor > 1:
        small = _edges(classes[::factor, ::factor], labelled[::factor, ::factor], 1)
        return small.repeat(factor, axis=0).repeat(factor, axis=1)
    return _edges(classes, labelled, 1 + max(classes.shape) // OUTLINE_EVERY)


def _grey(picture: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` float RGB as grey RGB (luma, BT.601)."""
    luma = picture @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return np.repeat(luma[..., None], 3, axis=-1)


def render_preview(
    scene: str | Path,
    mask: str | Path,
    out: str | Path,
    size: int | None = None,
    bands: Sequence[int] | None = None,
    alpha: float = 0.5,
    overwrite: bool = False,
    style: str = PREVIEW_STYLES[0],
) -> PreviewResult:
    """Write a PNG of ``scene`` with ``mask`` overlaid in class colours, plus a legend.

    Args:
        scene: The imagery.
        mask: A class mask of the same size (e.g. from ``segment``).
        out: The PNG to write (atomically).
        size: Longest side of the picture part in pixels; big scenes are read from overviews,
            small ones enlarged by a whole factor. None: at most ``PREVIEW_SIZE``, never
            enlarged.
        bands: 1-based bands shown as RGB (three) or grey (one); default: the first three
            non-alpha bands, or the first band.
        alpha: Opacity of the class colours (0..1); of the tint inside the outlines in the
            ``outline`` style.
        overwrite: Replace an existing PNG.
        style: ``outline`` (grey scene, classes tinted and outlined) or ``fill`` (colour
            scene, classes blended over it); see the module's description.

    Returns:
        A :class:`PreviewResult`; the PNG is ``(columns + legend width) x max(rows, legend)``.

    Raises:
        GeofuseError: InputError for unreadable or mismatched inputs, OutputError for the PNG,
            ConfigError for bad options.

    """
    scene, mask, out = as_source(scene), as_source(mask), Path(out)
    if size is not None and (not isinstance(size, int) or size < 16):
        raise ConfigError(f"Expected a preview size of at least 16 pixels. Received: {size!r}")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"Expected an overlay alpha between 0 and 1. Received: {alpha!r}")
    if style not in PREVIEW_STYLES:
        raise ConfigError(f"Expected a preview style among {', '.join(PREVIEW_STYLES)}. "
                          f"Received: {style!r}")
    if out.suffix.lower() != ".png":
        raise OutputError(f"Expected a preview file ending in .png. Received: {out}")
    check_destination(out, overwrite)
    with rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024), open_raster(scene) as src, \
            open_raster(mask) as msk:
        if (msk.width, msk.height) != (src.width, src.height):
            raise InputError(
                f"Expected a mask of the scene's size {src.width}x{src.height}. "
                f"Received: {msk.width}x{msk.height} in {mask}"
            )
        if msk.count != 1:
            raise InputError(
                f"Expected a class mask with 1 band. Received: {plural(msk.count, 'band')} "
                f"in {mask}"
            )
        w, h = preview_shape(src.width, src.height, size)
        chosen = _scene_bands(src, bands)
        shape = (len(chosen), h, w)
        enlarge = w > src.width
        data = src.read(chosen, out_shape=shape,
                        resampling=Resampling.nearest if enlarge else Resampling.average)
        valid = np.all(src.read_masks(chosen, out_shape=shape) > 0, axis=0)
        classes = msk.read(1, out_shape=(h, w), resampling=Resampling.nearest)
        labelled = msk.read_masks(1, out_shape=(h, w)) > 0
        names = mask_classes(msk)
        colours = _class_colours(msk)

    picture = _stretch(data, valid).astype(np.float32)
    if style == "outline":
        picture = _grey(picture)
        edges = _outline(classes, labelled, w // src.width if enlarge else 1)
    picture[~valid] = NO_DATA
    ids = sorted(set(names) | set(np.unique(classes[labelled]).tolist()))
    swatches, texts = [], []
    total = max(int(labelled.sum()), 1)
    for cid in ids:
        colour = colours.get(cid) or hex_rgb(class_colour(names.get(cid, ""), cid))
        where = labelled & (classes == cid)
        picture[where] = (1 - alpha) * picture[where] + alpha * np.asarray(colour, np.float32)
        if style == "outline":
            picture[where & edges] = colour
        swatches.append(colour)
        texts.append(f"{names.get(cid, f'class {cid}')}  {100.0 * where.sum() / total:.1f} %")

    title = source_name(scene)
    width, lines = legend_layout(texts)
    height = max(h, legend_height(len(texts), sum(map(len, lines))))
    canvas = Image.new("RGB", (w + width, height), BACKGROUND)
    canvas.paste(Image.fromarray(np.rint(picture).astype(np.uint8), "RGB"), (0, 0))
    _legend(ImageDraw.Draw(canvas), w, width, title, list(zip(swatches, lines, strict=True)))
    with atomic_path(out, ".part.png") as tmp:
        try:
            canvas.save(tmp, format="PNG", optimize=True)
        except OSError as exc:
            raise write_failure(out, exc, tmp, "cannot write the preview") from exc
    return PreviewResult(path=out, width=canvas.width, height=canvas.height)
