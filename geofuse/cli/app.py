"""The ``geofuse`` click group and what every command shares: error handling, defaults.

Any :class:`~geofuse.errors.GeofuseError` becomes a one-line message and exit code 1;
Ctrl-C, SIGTERM and SIGHUP unwind cleanly. Defaults shown by ``--help`` come from the
library's configuration dataclasses (:func:`default`), never from the command line.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
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
    """Hide TensorFlow's start-up banner, unless --verbose, for when it is imported.

    TensorFlow is imported only where a command needs it (converting a model, the TensorFlow
    runtime, training): serving from the OpenVINO cache never imports it.
    """
    from geofuse.model.tfimport import set_quiet

    logging.getLogger("absl").setLevel(logging.ERROR)
    set_quiet(not logging.getLogger().isEnabledFor(logging.INFO))


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
            raise click.ClickException(str(exc)) from None
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
