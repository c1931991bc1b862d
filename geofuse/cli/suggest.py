"""``suggest``: the windows of some scenes worth labelling next, as polygons."""

from __future__ import annotations

from pathlib import Path

import click

from geofuse.cli.app import default, handle_errors, main, quiet_tensorflow, warn
from geofuse.cli.options import (
    announce_runtime,
    build_segment_config,
    grid_options,
    input_options,
    tta_option,
)
from geofuse.cli.progress import ProgressBar
from geofuse.config import InputConfig
from geofuse.products.suggest import MEASURES, SuggestConfig


def _default(name: str) -> object:
    return default(SuggestConfig, name)


@main.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False),
    help="Model file (.keras), or 'default': the embedded model (the default).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=_default("count"),
    show_default=True,
    help="Windows to suggest.",
)
@click.option(
    "--size",
    type=click.IntRange(min=1),
    default=_default("size"),
    show_default=True,
    help="Window side in pixels, on each scene's own grid.",
)
@click.option(
    "--measure",
    type=click.Choice(MEASURES),
    default=_default("measure"),
    show_default=True,
    help="Uncertainty averaged over a window's valid pixels: margin (1 - the gap "
    "between the two likeliest classes) or entropy (over log classes).",
)
@click.option(
    "--spacing",
    type=click.FloatRange(min=0.0),
    default=_default("spacing"),
    show_default=True,
    help="Least distance between chosen windows of a scene, centre to centre, in "
    "window sides (0: none).",
)
@click.option(
    "--min-valid",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=_default("min_valid"),
    show_default=True,
    help="Least share of valid (not nodata) pixels of a candidate window.",
)
@click.option(
    "--exclude",
    type=click.Path(dir_okay=False),
    default=None,
    help="Vector file of areas labelled already: windows overlapping them are left out.",
)
@grid_options
@tta_option
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or table.")
@input_options
@handle_errors
def suggest(
    scenes: tuple[str, ...],
    out: str,
    model_path: str | None,
    count: int,
    size: int,
    measure: str,
    spacing: float,
    min_valid: float,
    exclude: str | None,
    tile: int,
    exact_tile: bool,
    overlap: int | None,
    blend: str,
    batch_size: int,
    bands: str | None,
    runtime: str,
    precision: str,
    calibration: str | None,
    tta: str,
    overwrite: bool,
    quiet: bool,
    adapt: InputConfig,
) -> None:
    """Suggest the windows of SCENES worth labelling next; write them to OUT (.gpkg/.geojson).

    Each scene is segmented as `segment` does it; every square window of --size px on its
    grid is scored by the model's uncertainty, and the --count best, kept --spacing apart,
    are written best first with fields rank, score, scene, valid, row, col, width, height,
    in the first scene's CRS.
    """
    config = SuggestConfig(
        count=count,
        size=size,
        measure=measure,
        spacing=spacing,
        min_valid=min_valid,
        exclude=Path(exclude) if exclude else None,
        overwrite=overwrite,
        segment=build_segment_config(
            tile,
            overlap,
            blend,
            batch_size,
            bands,
            None,
            "uint8",
            overwrite,
            tta=tta,
            runtime=runtime,
            precision=precision,
            adapt=adapt,
            exact_tile=exact_tile,
            calibration=calibration,
        ),
    )
    quiet_tensorflow()
    announce_runtime(config.segment.tiling, quiet)
    from geofuse.products.suggest import suggest as run_suggest

    bar = ProgressBar("tiles", quiet)
    try:
        result = run_suggest(scenes, out, model_path, config, progress=bar, notify=warn)
    finally:
        bar.close()
    if quiet:
        return
    click.echo(f"{'rank':>4}  {'score':>6}  {'row':>6}  {'col':>6}  scene", err=True)
    for w in result.windows:
        click.echo(
            f"{w['rank']:>4}  {w['score']:>6.3f}  {w['row']:>6}  {w['col']:>6}  {w['scene']}",
            err=True,
        )
    click.echo(
        f"{result.out}: {len(result.windows)} windows of {size} px, the best of "
        f"{result.candidates} candidates",
        err=True,
    )
