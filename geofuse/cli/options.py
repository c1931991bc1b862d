"""Option groups shared by several commands, and the configs built from their values."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geofuse.cli.app import as_flags, default
from geofuse.config import (
    BLEND_MODES,
    CALL_SLACK,
    FIT_RANGE,
    OVERLAP_DIVISOR,
    PRECISIONS,
    PREVIEW_SIZE,
    PROBABILITY_DTYPES,
    RESAMPLE_MODES,
    RUNTIMES,
    STRETCH_MODES,
    TTA_MODES,
    InputConfig,
    SegmentConfig,
    StacConfig,
    TilingConfig,
    VectorizeConfig,
    parse_bands,
)
from geofuse.errors import GeofuseError


def grid_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Tile grid options shared by ``segment``, ``batch`` and ``evaluate``."""
    options = [
        click.option("--tile", default=default(TilingConfig, "tile"), show_default=True,
                     help="Nominal tile side in pixels (a multiple of 2**depth of the model); "
                          f"each scene gets the side within {FIT_RANGE:.0%} of it whose grid "
                          "computes the fewest pixels, or a bigger one with fewer tiles per "
                          f"call (a call holds at most {CALL_SLACK:.0%} more pixels than "
                          "batch size x tile²)."),
        click.option("--exact-tile", is_flag=True,
                     help="Use --tile as given on every scene (smaller scenes still get one "
                          "smaller tile)."),
        click.option("--overlap", type=int, default=None,
                     help=f"Pixels shared by neighbouring tiles. Default: tile / "
                          f"{OVERLAP_DIVISOR}."),
        click.option("--blend", type=click.Choice(BLEND_MODES),
                     default=default(TilingConfig, "blend"), show_default=True,
                     help="Weighted blending or keep tile cores."),
        click.option("--batch-size", default=default(TilingConfig, "batch_size"),
                     show_default=True, help="Tiles per model call."),
        click.option("--bands", default=None,
                     help="1-based bands to use, e.g. 4,3,2. Default: all but alpha."),
        click.option("--runtime", type=click.Choice(RUNTIMES),
                     default=default(TilingConfig, "runtime"), show_default=True,
                     help="Inference runtime: auto is OpenVINO where installed, else "
                          "TensorFlow."),
        click.option("--precision", type=click.Choice(PRECISIONS),
                     default=default(TilingConfig, "precision"), show_default=True,
                     help="auto is int8 on OpenVINO for a model whose file shows int8 costs "
                          "it nothing worth noting (the embedded model's does), else bf16 "
                          "where the CPU has BF16, else f32. int8: the network quantized with "
                          "the calibration chips the model file carries (docs/precision.md)."),
        click.option("--calibration", type=click.Path(file_okay=False), default=None,
                     help="With --precision int8: calibrate on the images in this folder "
                          "(the model's bands and data type) instead of the model's chips."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_tiling(tile: int, overlap: int | None, blend: str, batch_size: int,
                 bands: str | None, runtime: str = "auto",
                 precision: str = "auto", exact_tile: bool = False,
                 calibration: str | None = None) -> TilingConfig:
    """TilingConfig from the :func:`grid_options` values."""
    return TilingConfig(tile=tile, overlap=overlap, blend=blend, batch_size=batch_size,
                        bands=parse_bands(bands), runtime=runtime, precision=precision,
                        fit=not exact_tile, calibration=calibration)


def _input_range(ctx: click.Context, param: click.Parameter,
                 value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH like 0,3060, got {value!r}") from None
    return low, high


INPUT_ARGS = ("input_range", "stretch", "resample", "nodata", "ignore_nodata")


def input_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How a scene is fitted to the model (``segment``, ``batch``, ``evaluate``).

    The values reach the command as one ``adapt`` argument, an :class:`~geofuse.config.InputConfig`.
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in INPUT_ARGS}
        try:
            kwargs["adapt"] = InputConfig(**values)
        except GeofuseError as exc:
            raise click.UsageError(as_flags(str(exc))) from None
        return func(*args, **kwargs)

    options = [
        click.option("--input-range", callback=_input_range, metavar="LOW,HIGH",
                     help="Map scene values LOW..HIGH linearly onto the model's input range "
                          "(0..255 for an 8-bit model), e.g. 0,3060 for Sentinel-2 "
                          "reflectance. Needed when the scene's data type is not the model's."),
        click.option("--stretch", type=click.Choice(STRETCH_MODES), default=None,
                     help="Map each band's 0.5-99.5 percentiles onto the model's training "
                          "range (instead of --input-range)."),
        click.option("--resample", type=click.Choice(RESAMPLE_MODES),
                     default=default(InputConfig, "resample"), show_default=True,
                     help="auto: read a scene whose pixel size differs from the model's by "
                          "more than 1.5x at the model's pixel size (the output stays on the "
                          "scene's grid); off: never."),
        click.option("--nodata", type=float, default=None,
                     help="Nodata value of the scene, replacing its own (every band)."),
        click.option("--no-nodata", "ignore_nodata", is_flag=True,
                     help="Ignore the scene's nodata value (alpha, masks and NaN still count)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def announce_runtime(tiling: TilingConfig, quiet: bool, model: str | Path | None = None) -> None:
    """Resolve --runtime/--precision now (refusing impossible ones) and print the choice.

    ``model`` (a file, 'default' or None: the embedded model) decides an automatic int8.
    """
    from geofuse.model.modelfile import resolve_model_path
    from geofuse.model.runtime import choose_runtime

    path = resolve_model_path(model)
    choice = choose_runtime(tiling, model=path if path.is_file() else None)
    if not quiet:
        click.echo(choice.describe(), err=True)


tta_option = click.option(
    "--tta", type=click.Choice(TTA_MODES), default=default(SegmentConfig, "tta"),
    is_flag=False, flag_value="all", show_default=True,
    help="Test-time augmentation: average the predictions of the 8 flips/rotations (--tta or "
         "--tta all) or of 4 (flips, rotations). Costs that many model passes per tile.")


def tiling_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``segment`` and ``batch``."""
    options = [
        click.option("--model", "model_path", type=click.Path(dir_okay=False),
                     help="Model file (.keras), or 'default': the embedded model (the default)."),
        grid_options,
        click.option("--probability-dtype", type=click.Choice(PROBABILITY_DTYPES),
                     default=default(SegmentConfig, "probability_dtype"), show_default=True,
                     help="uint8 stores p*254 (nodata 255); float32 stores p (nodata NaN)."),
        tta_option,
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_segment_config(
    tile: int, overlap: int | None, blend: str, batch_size: int, bands: str | None,
    probabilities: str | None, probability_dtype: str, overwrite: bool, *,
    tta: str = "none", aoi: str | None = None, vector: str | None = None,
    vectorize: VectorizeConfig | None = None, preview: str | None = None,
    runtime: str = "auto", precision: str = "auto", adapt: InputConfig | None = None,
    exact_tile: bool = False, stac: bool = False, preview_size: int | None = None,
    calibration: str | None = None,
) -> SegmentConfig:
    """SegmentConfig from command-line values."""
    return SegmentConfig(
        tiling=build_tiling(tile, overlap, blend, batch_size, bands, runtime, precision,
                            exact_tile, calibration),
        probabilities=Path(probabilities) if probabilities else None,
        probability_dtype=probability_dtype,
        overwrite=overwrite,
        tta=tta,
        aoi=Path(aoi) if aoi else None,
        vector=Path(vector) if vector else None,
        vectorize=vectorize or VectorizeConfig(),
        preview=Path(preview) if preview else None,
        preview_size=preview_size,
        input=adapt or InputConfig(),
        stac=StacConfig() if stac else None,
    )


preview_size_option = click.option(
    "--preview-size", type=click.IntRange(min=16), default=None,
    help="Longest side of the quick-look's picture in pixels (big scenes shrink, small ones "
         f"grow). Default: the scene's size, at most {PREVIEW_SIZE}.")


def vector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Polygon options shared by ``vectorize`` and ``segment --vector``."""
    options = [
        click.option("--simplify", type=click.FloatRange(min=0),
                     default=default(VectorizeConfig, "simplify"), show_default=True,
                     help="Simplification tolerance in pixels (1.5 = 1.5 x the pixel size); "
                          "0 keeps the exact pixel outlines."),
        click.option("--min-area", type=click.FloatRange(min=0),
                     default=default(VectorizeConfig, "min_area"), show_default=True,
                     help="Drop polygons smaller than this many square metres."),
        click.option("--classes", default=None,
                     help="Classes to vectorize, by name or id, e.g. building,2, or 'all'. "
                          "Default: every class except one named 'background'."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_vectorize_config(simplify: float, min_area: float, classes: str | None,
                           fmt: str | None = None, overwrite: bool = False) -> VectorizeConfig:
    """VectorizeConfig from command-line values."""
    chosen = tuple(c for c in classes.split(",") if c.strip()) if classes else None
    return VectorizeConfig(simplify=simplify, min_area=min_area, classes=chosen or None,
                           format=fmt, overwrite=overwrite)
