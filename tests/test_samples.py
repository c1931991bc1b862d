"""Tests for the deterministic synthetic sample generator (scripts/make_samples.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_samples.py"
COMMITTED = REPO / "data_samples"
SCENES = ("scene_a", "scene_b")
FILES = ("classes.json",) + tuple(f"{s}{suffix}.tif" for s in SCENES for suffix in ("", "_labels"))


def _generate(out: Path) -> Path:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("samples")
    return _generate(base / "run1"), _generate(base / "run2")


@pytest.mark.slow
def test_runs_are_byte_identical(runs: tuple[Path, Path]) -> None:
    first, second = runs
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_committed_samples_match_generator(runs: tuple[Path, Path]) -> None:
    """data_samples/ must stay in sync with the script.

    Pixels and georeferencing are compared rather than raw bytes, so that a different
    GDAL/zlib build (which may compress differently) does not cause false failures.
    """
    fresh = runs[0]
    assert (COMMITTED / "classes.json").read_bytes() == (fresh / "classes.json").read_bytes()
    for name in FILES[1:]:
        with rasterio.open(COMMITTED / name) as old, rasterio.open(fresh / name) as new:
            assert old.profile == new.profile, name
            assert old.colorinterp == new.colorinterp, name
            assert old.tags() == new.tags(), name
            np.testing.assert_array_equal(old.read(), new.read(), err_msg=name)


def test_classes_json_contract() -> None:
    classes = json.loads((COMMITTED / "classes.json").read_text())["classes"]
    assert [(c["id"], c["name"]) for c in classes] == [
        (0, "land"),
        (1, "building"),
        (2, "road"),
        (3, "water"),
        (4, "vegetation"),
    ]


@pytest.mark.parametrize("scene", SCENES)
def test_scene_contents(scene: str) -> None:
    with rasterio.open(COMMITTED / f"{scene}.tif") as img_ds:
        assert img_ds.crs.to_epsg() == 32633
        assert img_ds.count == 3 and img_ds.dtypes == ("uint8",) * 3
        assert img_ds.nodata == 0
        assert img_ds.res == (0.5, 0.5)
        assert img_ds.block_shapes[0] == (256, 256)
        img = img_ds.read()
        transform, shape = img_ds.transform, img_ds.shape
    with rasterio.open(COMMITTED / f"{scene}_labels.tif") as lbl_ds:
        assert lbl_ds.crs.to_epsg() == 32633
        assert lbl_ds.transform == transform and lbl_ds.shape == shape
        assert lbl_ds.nodata == 255
        labels = lbl_ds.read(1)

    nodata = (img == 0).all(axis=0)
    assert not ((img == 0) & ~nodata).any(), "valid pixels must have no zero band"
    np.testing.assert_array_equal(labels == 255, nodata)
    assert set(np.unique(labels[~nodata]).tolist()) == {0, 1, 2, 3, 4}
    assert 0.03 <= nodata.mean() <= 0.08
