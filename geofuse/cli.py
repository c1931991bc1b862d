"""The ``geofuse`` command line: thin click commands over the library.

Each command parses options, builds a config and calls one library function. TensorFlow is
imported only inside the commands that need it, so ``geofuse --help`` is instant. Any
:class:`~geofuse.errors.GeofuseError` becomes a one-line message and exit code 1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geofuse import __version__
from geofuse.config import SegmentConfig, TilingConfig, parse_bands
from geofuse.errors import GeofuseError


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN, CPU features) silenced.

    The banner is written straight to file descriptor 2 before any Python logging exists, so
    stderr is pointed at /dev/null for the import only. Python exceptions still propagate.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules or logging.getLogger().isEnabledFor(logging.INFO):
        return
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (e.g. captured by a test runner)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GeofuseError (and MemoryError/KeyboardInterrupt) into one-line click errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeofuseError as exc:
            raise click.ClickException(str(exc)) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory: try a smaller --tile or --batch-size"
            ) from None

    return wrapper


class ProgressBar:
    """A click progress bar fed by the library's ``progress(done, total)`` callback."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        """Advance the bar to ``done`` of ``total``."""
        if self.quiet:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        """Finish the bar line."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def tiling_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``segment`` and ``batch``."""
    options = [
        click.option("--model", "model_path", type=click.Path(dir_okay=False),
                     help="Model file (.keras). Default: the embedded model."),
        click.option("--tile", default=512, show_default=True,
                     help="Tile side in pixels (a multiple of 2**depth of the model)."),
        click.option("--overlap", type=int, default=None,
                     help="Pixels shared by neighbouring tiles. Default: tile / 8."),
        click.option("--blend", type=click.Choice(["hann", "center"]), default="hann",
                     show_default=True, help="Weighted blending or keep tile cores."),
        click.option("--batch-size", default=4, show_default=True, help="Tiles per model call."),
        click.option("--bands", default=None,
                     help="1-based bands to use, e.g. 4,3,2. Default: all but alpha."),
        click.option("--probability-dtype", type=click.Choice(["uint8", "float32"]),
                     default="uint8", show_default=True,
                     help="uint8 stores p*254 (nodata 255); float32 stores p (nodata NaN)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_segment_config(
    tile: int, overlap: int | None, blend: str, batch_size: int, bands: str | None,
    probabilities: str | None, probability_dtype: str, overwrite: bool,
) -> SegmentConfig:
    """SegmentConfig from command-line values."""
    tiling = TilingConfig(
        tile=tile,
        overlap=tile // 8 if overlap is None else overlap,
        blend=blend,
        batch_size=batch_size,
        bands=parse_bands(bands),
    )
    return SegmentConfig(
        tiling=tiling,
        probabilities=Path(probabilities) if probabilities else None,
        probability_dtype=probability_dtype,
        overwrite=overwrite,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geofuse")
@click.option("--verbose", "-v", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """Segment satellite and aerial GeoTIFFs with a multi-level feature-fusion U-Net."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("scene", type=click.Path())
@click.argument("out", type=click.Path())
@tiling_options
@click.option("--probabilities", type=click.Path(dir_okay=False),
              help="Also write per-class probabilities to this GeoTIFF.")
@handle_errors
def segment(scene: str, out: str, model_path: str | None, tile: int, overlap: int | None,
            blend: str,
            batch_size: int, bands: str | None, probability_dtype: str, overwrite: bool,
            quiet: bool, probabilities: str | None) -> None:
    """Segment SCENE into a class mask OUT (same CRS, transform and size; nodata 255)."""
    config = build_segment_config(tile, overlap, blend, batch_size, bands, probabilities,
                                  probability_dtype, overwrite)
    _quiet_tensorflow()
    from geofuse.segment import segment_scene

    bar = ProgressBar("tiles", quiet)
    try:
        result = segment_scene(scene, out, model_path, config, progress=bar)
    finally:
        bar.close()
    if not quiet:
        click.echo(
            f"{result.mask}: {result.width}x{result.height} px, {result.tiles} tiles, "
            f"{result.seconds:.1f} s ({result.megapixels / result.seconds:.2f} Mpx/s)",
            err=True,
        )


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def info(path: str, as_json: bool) -> None:
    """Describe a model file (.keras) or a raster scene."""
    from geofuse.inspect import describe

    facts = describe(Path(path))
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            click.echo(f"{key}: {value}")


if __name__ == "__main__":  # pragma: no cover
    main()
