"""Print one of the two set-up commands at the top of README.md (``main`` or ``test``).

The README opens with a fenced block holding exactly two commands: the first installs geofuse
and segments the bundled sample scene, the second installs the test extras and runs the tests.
CI runs the second one through this script, so the README can never drift from what CI does.
"""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def setup_commands(text: str) -> list[str]:
    """The command lines of the first fenced code block."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return [line.strip() for line in lines[start + 1 : end] if line.strip()]


def main() -> None:
    commands = setup_commands(README.read_text())
    if len(commands) != 2:
        sys.exit(f"Expected 2 set-up commands at the top of {README}. Received: {len(commands)}")
    which = sys.argv[1] if len(sys.argv) > 1 else "test"
    print(commands[0] if which == "main" else commands[1])


if __name__ == "__main__":
    main()
