"""What geofuse tells the user besides errors: one style of warning, one unit for lengths.

Every warning reaches the terminal as one ``Warning: ...`` line, whether geofuse logged it,
a library logged it, or a library raised a Python warning; lengths are printed in metres by
one rule; bands fed to a model of named bands without names of their own get a notice.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import geofuse.products.info
from geofuse.cli import main
from geofuse.units import metres
from tests.helpers import ROOT, make_tiny_model, write_geotiff

RGB = ("red", "green", "blue")
DRONE = Affine(0.0775, 0.0, 500_000.0, 0.0, -0.0775, 5_000_000.0)  # the Zanzibar drone's pixel


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model of named bands, trained at 0.4 m."""
    return make_tiny_model(
        tmp_path_factory.mktemp("m") / "rgb.keras",
        contract={"band_names": RGB, "color_interp": RGB, "pixel_size": 0.4},
    )


def image(seed: int = 0, side: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, side, side), dtype=np.uint8)


def segment(*args: object) -> object:
    return CliRunner().invoke(
        main, ["segment", *map(str, args), "--tile", "64", "--runtime", "tensorflow", "--quiet"]
    )


def test_a_run_with_three_kinds_of_warning_prints_one_style(tmp_path: Path) -> None:
    """No CRS: geofuse's own warnings, and the polygon writer's Python warning, all alike."""
    scene = tmp_path / "plain.tif"
    with rasterio.open(
        scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8"
    ) as ds:
        ds.write(image())
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "geofuse.cli",
            "segment",
            str(scene),
            str(tmp_path / "m.tif"),
            "--vector",
            str(tmp_path / "m.gpkg"),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert (
        f"Warning: {tmp_path / 'm.tif'} has no CRS: area_m2 is in squared pixel/coordinate units"
        in lines
    )
    assert any("is not georeferenced" in line for line in lines)
    assert lines and all(line.startswith("Warning: ") for line in lines), run.stderr
    assert "UserWarning" not in run.stderr and "WARNING" not in run.stderr


def test_a_python_warning_becomes_one_line_without_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = write_geotiff(tmp_path / "s.tif", image())
    describe = geofuse.products.info.describe_scene

    def noisy(path: object) -> dict:
        warnings.warn("a library has something to say", UserWarning, stacklevel=1)
        return describe(path)

    monkeypatch.setattr(geofuse.products.info, "describe_scene", noisy)
    result = CliRunner().invoke(main, ["info", str(scene)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "Warning: a library has something to say\n"


def test_lengths_read_in_metres_everywhere(tmp_path: Path, rgb_model: Path) -> None:
    assert [metres(v) for v in (0.4, 0.0775, 0.1, 0.0999, 1.5, 300.038, 12345)] == [
        "0.4 m", "0.0775 m", "0.1 m", "0.0999 m", "1.5 m", "300 m", "12345 m",
    ]  # fmt: skip
    data = image(side=130)
    scene = write_geotiff(tmp_path / "drone.tif", data, transform=DRONE, photometric="RGB")
    facts = CliRunner().invoke(main, ["info", str(scene)])
    assert "ground_pixel_size: 0.0775 m" in facts.output
    result = segment(scene, tmp_path / "out.tif", "--model", rgb_model)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"Warning: {scene}: pixel size 0.0775 m, the model's 0.4 m; reading it at 0.4 m "
        "(--resample off to keep its own)"
    ]
    for unit in (" cm", " km", " mm"):
        assert unit not in result.stderr + facts.output


def test_bands_without_colour_names_used_as_rgb_get_a_notice(
    tmp_path: Path, rgb_model: Path
) -> None:
    plain = write_geotiff(
        tmp_path / "plain.tif",
        image(),
        transform=DRONE * Affine.scale(5.16),
        photometric="MINISBLACK",
    )
    with rasterio.open(plain) as ds:
        assert [c.name for c in ds.colorinterp] == ["gray", "undefined", "undefined"]
    result = segment(plain, tmp_path / "a.tif", "--model", rgb_model)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"Warning: {plain}: bands 1,2,3 carry no colour or band names (gray, undefined, "
        "undefined); they are read in this order as the model's red, green, blue (choose "
        "others with --bands)"
    ]
    tagged = write_geotiff(
        tmp_path / "tagged.tif", image(), transform=DRONE * Affine.scale(5.16), photometric="RGB"
    )
    for args in ([tagged, tmp_path / "b.tif"], [plain, tmp_path / "c.tif", "--bands", "1,2,3"]):
        quiet = segment(*args, "--model", rgb_model)
        assert quiet.exit_code == 0, quiet.output
        assert quiet.stderr == ""


def test_library_notices_name_parameters_not_options(tmp_path: Path, rgb_model: Path) -> None:
    from geofuse.model.modelfile import read_info
    from geofuse.read.reader import SceneReader

    plain = write_geotiff(tmp_path / "plain.tif", image(), photometric="MINISBLACK")
    with SceneReader(plain, model=read_info(rgb_model)) as reader:
        (notice,) = [n for n in reader.notices if "carry no colour" in n]
    assert notice.endswith("(choose others with `bands`)") and "--" not in notice
