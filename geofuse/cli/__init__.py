"""The ``geofuse`` command line: thin click commands over the library.

``app`` holds the group and the error handling, ``options`` the option groups that several
commands share, ``scenes``, ``suggest`` and ``training`` the commands. Each command parses
options, builds a config and calls one library function.
"""

from geofuse.cli import scenes, suggest, training  # noqa: F401  (registers the commands)
from geofuse.cli.app import main

__all__ = ["main"]
