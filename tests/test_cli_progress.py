"""Progress on the command line: phases named, no bare words outside a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.cli.progress import ProgressBar
from geofuse.config import SegmentConfig, TilingConfig, VectorizeConfig
from tests.helpers import write_geotiff

BARE_WORDS = {"tiles", "rows", "images", "scenes", "epochs"}


def rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_progress_outside_a_terminal_prints_no_bare_words(tmp_path: Path, tiny_models) -> None:
    scene = write_geotiff(tmp_path / "s.tif", rgb(1, 96, 96))
    result = subprocess.run(
        [sys.executable, "-m", "geofuse.cli", "segment", str(scene), str(tmp_path / "m.tif"),
         "--model", str(tiny_models()), "--tile", "32", "--exact-tile",
         "--vector", str(tmp_path / "v.gpkg"),
         "--preview", str(tmp_path / "q.png")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ,
                                                               TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert not BARE_WORDS & {line.strip() for line in lines}, lines
    assert not any("%" in line or "█" in line or "#" in line for line in lines), lines
    assert any(line.startswith(f"{tmp_path / 'm.tif'}: 96x96 px, 16 tiles") for line in lines)


def test_progress_in_a_terminal_names_the_phase() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar("tiles", quiet=False, stream=screen)
    bar(2, 4)
    bar(4, 4)
    bar.phase("mask: overviews and COG")
    bar.close()
    shown = screen.getvalue()
    assert "tiles" in shown and "100%" in shown
    assert "100%  mask: overviews and COG" in shown


def test_segment_announces_every_phase_after_the_tiles(tmp_path: Path, tiny_models) -> None:
    from geofuse.segment import segment_scene

    class Recorder:
        def __init__(self) -> None:
            self.events: list = []

        def __call__(self, done: int, total: int) -> None:
            self.events.append((done, total))

        def phase(self, text: str) -> None:
            self.events.append(text)

    scene = write_geotiff(tmp_path / "s.tif", rgb(2, 64, 64))
    recorder = Recorder()
    config = SegmentConfig(tiling=TilingConfig(tile=32, fit=False),
                           probabilities=tmp_path / "p.tif",
                           vector=tmp_path / "v.gpkg", preview=tmp_path / "q.png",
                           vectorize=VectorizeConfig(classes=("all",)))
    segment_scene(scene, tmp_path / "m.tif", tiny_models(), config, progress=recorder)
    phases = [e for e in recorder.events if isinstance(e, str)]
    assert phases == ["mask: overviews and COG", "probabilities: overviews and COG",
                      "polygons", "quick-look"]
    assert recorder.events.index(phases[0]) > recorder.events.index((9, 9))
