"""Output names and destinations: refused before any work when they would mislead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from geofuse.cli import main
from tests.helpers import write_geotiff


def rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_output_name_rules(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    scene = write_geotiff(tmp_path / "s.tif", rgb(0, 32, 32))
    png = cli("segment", scene, tmp_path / "out.png", "--model", model, "-q")
    assert png.exit_code == 1
    assert png.output.strip() == (
        f"Error: Expected a GeoTIFF name ending in .tif or .tiff. Received: {tmp_path}/out.png "
        "(masks are GeoTIFFs; for a picture use --preview out.png)")
    dash = cli("segment", scene, "-", "--model", model, "-q")
    assert dash.exit_code == 1 and dash.output.strip() == (
        "Error: Expected an output file name. Received: '-' (geofuse writes files, not "
        "standard output)")
    probs = cli("segment", scene, tmp_path / "m.tif", "--probabilities", tmp_path / "p.jpg",
                "--model", model, "-q")
    assert probs.exit_code == 1 and "Received: " in probs.output and "p.jpg" in probs.output
    assert not (tmp_path / "-").exists() and not (tmp_path / "m.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
    upper = cli("segment", scene, tmp_path / "new" / "M.TIFF", "--model", model, "-q")
    assert upper.exit_code == 0, upper.output
    assert (tmp_path / "new" / "M.TIFF").is_file()
