"""`geofuse suggest`: windows ranked by a model's uncertainty, written as polygons on the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from pyogrio.raw import read
from shapely import from_wkb

from geofuse.cli import main
from tests.helpers import make_scene, synth, write_geotiff

GRID = ["--tile", "64", "--runtime", "tensorflow", "--quiet"]


def run(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def windows(path: Path) -> tuple[dict, list, dict[str, np.ndarray]]:
    """The layer's metadata, polygons and fields."""
    meta, _, geometries, values = read(path)
    return meta, list(from_wkb(geometries)), dict(zip(meta["fields"], values, strict=True))


@pytest.fixture(scope="module")
def model(tiny_models) -> Path:  # noqa: ANN001 - the conftest factory
    return tiny_models(bands=3, classes=3)


def test_windows_lie_on_the_grid_in_the_crs_best_first_and_skip_nodata(
    tmp_path: Path, model: Path
) -> None:
    scene, _ = make_scene(tmp_path, size=(160, 192), collar=64)  # rows 0-63 are nodata
    out = tmp_path / "next.gpkg"
    result = run(
        "suggest",
        scene,
        out,
        "--model",
        model,
        "--count",
        "4",
        "--size",
        "32",
        "--spacing",
        "0",
        *GRID,
    )
    assert result.exit_code == 0, result.output
    meta, polygons, fields = windows(out)
    with rasterio.open(scene) as ds:
        crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == crs
    assert list(fields["rank"]) == [1, 2, 3, 4]
    assert np.all(np.diff(fields["score"]) <= 0)  # sorted by score, best first
    assert set(fields["scene"]) == {str(scene)}
    assert min(fields["row"]) >= 64  # the nodata rows are no candidates
    for polygon, row, col in zip(polygons, fields["row"], fields["col"], strict=True):
        minx, miny, maxx, maxy = polygon.bounds
        steps = np.array(
            [
                (minx - transform.c) / transform.a,
                (maxy - transform.f) / transform.e,
                (maxx - transform.c) / transform.a,
                (miny - transform.f) / transform.e,
            ]
        )
        assert np.allclose(steps, np.round(steps), atol=1e-6)  # whole pixels from the origin
        assert np.allclose(steps, [col, row, min(col + 32, width), min(row + 32, height)])
        assert row % 32 == 0 and col % 32 == 0


def test_the_score_is_the_mean_margin_of_the_window(tmp_path: Path, model: Path) -> None:
    """The score equals 1 - (p1 - p2) averaged over the window, from `segment`'s probabilities."""
    scene, _ = make_scene(tmp_path, size=(96, 128))
    out = tmp_path / "next.geojson"
    result = run("suggest", scene, out, "--model", model, "--count", "3", "--size", "32", *GRID)
    assert result.exit_code == 0, result.output
    probs = tmp_path / "p.tif"
    seg = run(
        "segment", scene, tmp_path / "m.tif", "--model", model, "--probabilities", probs, *GRID
    )
    assert seg.exit_code == 0, seg.output
    with rasterio.open(probs) as ds:
        p = ds.read().astype(np.float64) * ds.scales[0]
    top = np.sort(p, axis=0)
    margin = 1 - (top[-1] - top[-2])
    _, _, fields = windows(out)
    for row, col, score in zip(fields["row"], fields["col"], fields["score"], strict=True):
        assert score == pytest.approx(margin[row : row + 32, col : col + 32].mean(), abs=1e-5)
    every = [
        margin[r : r + 32, c : c + 32].mean() for r in range(0, 96, 32) for c in range(0, 128, 32)
    ]
    assert fields["score"][0] == pytest.approx(max(every), abs=1e-5)


def test_count_spacing_and_exclusion_are_respected(tmp_path: Path, model: Path) -> None:
    scene, _ = make_scene(tmp_path, size=(128, 128))
    out = tmp_path / "a.gpkg"
    result = run(
        "suggest",
        scene,
        out,
        "--model",
        model,
        "--count",
        "3",
        "--size",
        "32",
        "--spacing",
        "1.5",
        *GRID,
    )
    assert result.exit_code == 0, result.output
    _, polygons, fields = windows(out)
    assert len(polygons) == 3
    spots = np.column_stack([fields["row"], fields["col"]])
    gaps = [np.hypot(*(a - b)) for i, a in enumerate(spots) for b in spots[i + 1 :]]
    assert min(gaps) >= 1.5 * 32  # no two chosen windows touch

    # what is labelled already is left out
    again = run(
        "suggest",
        scene,
        tmp_path / "b.gpkg",
        "--model",
        model,
        "--count",
        "3",
        "--size",
        "32",
        "--exclude",
        out,
        *GRID,
    )
    assert again.exit_code == 0, again.output
    _, _, second = windows(tmp_path / "b.gpkg")
    assert not {tuple(s) for s in spots} & set(zip(second["row"], second["col"], strict=True))

    # more windows than the scene holds: all of them, and a warning
    many = run(
        "suggest",
        scene,
        tmp_path / "c.gpkg",
        "--model",
        model,
        "--count",
        "50",
        "--size",
        "32",
        "--spacing",
        "0",
        "--tile",
        "64",
        "--runtime",
        "tensorflow",
    )
    assert many.exit_code == 0, many.output
    assert len(windows(tmp_path / "c.gpkg")[1]) == 16
    assert "16 windows of 32 px are candidates, fewer than the 50 asked for" in many.output


def test_scenes_in_two_crss_and_a_scene_without_one(tmp_path: Path, model: Path) -> None:
    first, _ = make_scene(tmp_path / "a", size=(64, 64))
    image = synth(3, 64, 64)[0]
    second = write_geotiff(
        tmp_path / "b.tif",
        image,
        crs="EPSG:32634",
        transform=Affine(0.5, 0, 166000.0, 0, -0.5, 5123456.0),
    )
    out = tmp_path / "both.gpkg"
    result = run(
        "suggest",
        first,
        second,
        out,
        "--model",
        model,
        "--count",
        "4",
        "--size",
        "32",
        "--spacing",
        "0",
        "--tile",
        "64",
        "--runtime",
        "tensorflow",
    )
    assert result.exit_code == 0, result.output
    assert "reprojected to the CRS of" in result.output
    meta, polygons, fields = windows(out)
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == rasterio.crs.CRS.from_epsg(32633)
    assert set(fields["scene"]) == {str(first), str(second)}

    bare = write_geotiff(tmp_path / "bare.tif", image, crs=None, transform=Affine.identity())
    mixed = run("suggest", first, bare, tmp_path / "mixed.gpkg", "--model", model, *GRID)
    assert mixed.exit_code == 1
    lines = mixed.output.strip().splitlines()
    assert len(lines) == 1 and "bare.tif: expected a CRS like the other scenes" in lines[0]
    assert not (tmp_path / "mixed.gpkg").exists()
