"""The ``geofuse`` click group and what every command shares: errors, warnings, defaults.

Any :class:`~geofuse.errors.GeofuseError` becomes a one-line message and exit code 1;
Ctrl-C, SIGTERM and SIGHUP unwind cleanly. Everything else the user is told goes through
``logging`` and one handler (:class:`WarningLines`): a warning from geofuse (loggers
``geofuse.*``), from a library it uses, or a Python warning (``warnings.warn``, captured) is
one ``Warning: ...`` line on stderr, never a source line, with the library's parameter names
turned into options (:func:`as_flags`). Defaults shown by ``--help`` come from the library's
configuration dataclasses (:func:`default`), never from the command line.
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

log = logging.getLogger("geofuse.cli")


def default(cls: Any, name: str) -> Any:
    """The library's default of field ``name`` of the dataclass ``cls`` (shown by --help)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


class WarningLines(logging.Handler):
    """Writes log records to stderr (click's, so tests capture it) as one line each.

    Warnings read ``Warning: text``, errors ``Error: text``; with ``--verbose`` the details
    read ``logger: text``. Parameters named in backticks become options (:func:`as_flags`).
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's line."""
        try:
            click.echo(warning_line(record), err=True)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def warning_line(record: logging.LogRecord) -> str:
    """The one line a log record becomes (see :class:`WarningLines`)."""
    text = as_flags(record.getMessage().strip())
    if record.levelno >= logging.ERROR:
        return f"Error: {text}"
    if record.levelno >= logging.WARNING:
        return f"Warning: {text}"
    return f"{record.name}: {text}"


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` of the command line: the warning's text, logged, no source."""
    logging.getLogger("py.warnings").warning("%s", message)


def show_warnings(verbose: bool) -> None:
    """Route every warning and log record of the run to :class:`WarningLines`."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, WarningLines)]:
        root.removeHandler(handler)  # an earlier invocation in the same process
    root.addHandler(WarningLines())
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for developer in ("absl", "tensorflow"):  # tracing advice and the like: with -v only
        logging.getLogger(developer).setLevel(logging.INFO if verbose else logging.ERROR)
    warnings.showwarning = _log_warning
    # rasterio's NotGeoreferencedWarning: geofuse says it in its own words
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    warnings.filterwarnings("ignore", message="The given matrix is equal to Affine.identity")


def warn(text: str) -> None:
    """Show one ``Warning: ...`` line, in command-line words."""
    log.warning(text)


def quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up banner, unless --verbose, for when it is imported.

    TensorFlow is imported only where a command needs it (converting a model, the TensorFlow
    runtime, training): serving from the OpenVINO cache never imports it.
    """
    from geofuse.model.tfimport import set_quiet

    logging.getLogger("absl").setLevel(logging.ERROR)
    set_quiet(not logging.getLogger().isEnabledFor(logging.INFO))


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
    show_warnings(verbose)
