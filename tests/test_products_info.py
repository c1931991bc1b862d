"""``geofuse info``: facts about models and scenes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from geofuse.cli import main


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_info_default_reads_cleanly() -> None:
    result = cli("info", "default")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "{'" not in text and "['" not in text  # no Python reprs
    provenance = text[text.index("provenance:"):]
    assert "/tmp/" not in provenance and "/home/" not in provenance
    assert "out: default.keras" in provenance
    assert "name=water, color=#1f78b4" in text
