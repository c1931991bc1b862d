"""The ``geofuse`` click group and what every command shares: error handling, defaults.

Any :class:`~geofuse.errors.GeofuseError` becomes a one-line message and exit code 1;
Ctrl-C, SIGTERM and SIGHUP unwind cleanly. Defaults shown by ``--help`` come from the
library's configuration dataclasses (:func:`default`), never from the command line.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import warnings
from collections.abc import Callable
from typing import Any

import click

from geofuse import __version__
from geofuse.errors import GeofuseError
from geofuse.interrupts import exit_code, interruption, signal_name, signals_interrupt


def default(cls: Any, name: str) -> Any:
    """The library's default of field ``name`` of the dataclass ``cls`` (shown by --help)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up banner hidden, unless --verbose."""
    from geofuse.model.tfimport import import_tensorflow

    logging.getLogger("absl").setLevel(logging.ERROR)
    import_tensorflow(quiet=not logging.getLogger().isEnabledFor(logging.INFO))


FLAG_NAMES = {"ignore_nodata": "--no-nodata", "classes_file": "--classes",
              "ignore_values": "--ignore-value", "masks": "--masks-dir",
              "images": "--images-dir", "sources": "--tiles or --scene with --labels",
              "source": "--tiles or --scene with --labels"}
"""Library parameters whose option is not ``--`` + the name with dashes."""

_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def as_flags(message: str) -> str:
    """A library message in command-line words: `input_range` -> --input-range.

    Library messages name parameters Keras-style in backticks; on the command line those are
    options. Names without an option of the running command lose only their backticks.
    """
    ctx = click.get_current_context(silent=True)
    options: dict[str, str] = {}
    for param in getattr(ctx and ctx.command, "params", ()):
        longs = [o for o in param.opts if o.startswith("--")]
        if longs:
            options[param.name or ""] = longs[0]
            options.update({o[2:].replace("-", "_"): o for o in longs})

    def flag(match: re.Match[str]) -> str:
        name = match.group(1)
        return options.get(name) or FLAG_NAMES.get(name) or name

    return _PARAMETER.sub(flag, message)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GeofuseError and MemoryError into one-line click errors; stop cleanly on signals.

    Ctrl-C, SIGTERM and SIGHUP unwind the run (temporary files are removed on the way out)
    and exit with 128 + the signal number: 130, 143, 129; also when code the signal arrived
    in wrapped the interruption in another error (:func:`~geofuse.interrupts.interruption`).
    """

    def interrupted(exc: KeyboardInterrupt) -> None:
        click.echo(f"\nInterrupted ({signal_name(exc)}): no partial outputs left", err=True)
        click.get_current_context().exit(exit_code(exc))

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_interrupt():
                return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            interrupted(exc)
        except GeofuseError as exc:
            raise click.ClickException(as_flags(str(exc))) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory: try a smaller --tile or --batch-size"
            ) from None
        except Exception as exc:
            cause = interruption(exc)
            if cause is None:
                raise
            interrupted(cause)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geofuse")
@click.option("--verbose", "-v", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """Segment satellite and aerial GeoTIFFs with a multi-level feature-fusion U-Net."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # rasterio's NotGeoreferencedWarning (with source lines): geofuse says it in one line
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    warnings.filterwarnings("ignore", message="The given matrix is equal to Affine.identity")
