"""The chip side chosen from the size of the rarest class's objects: ``--patch auto``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.training.chipsize import area_weighted_side
from tests.helpers import write_geotiff

TINY = ["--depth", "2", "--filters", "4", "--epochs", "1", "--steps", "2", "--members", "1"]


def test_area_weighted_side_weighs_each_object_by_its_area() -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[2:12, 2:12] = 1  # 100 px
    labels[30:50, 30:50] = 1  # 400 px
    labels[20, 5:25] = 2  # another class, touching nothing of class 1
    weighted, total = area_weighted_side(labels, 1)
    assert total == 500
    assert weighted / total == pytest.approx((100**1.5 + 400**1.5) / 500)  # 18, not the mean 15
    labels[12, 2:12] = 1  # grows the first object to 110 px (4-connected)
    labels[13, 13] = 1  # a pixel touching it diagonally only: an object of its own
    weighted, total = area_weighted_side(labels, 1)
    assert total == 511
    assert weighted == pytest.approx(110**1.5 + 400**1.5 + 1)
    assert area_weighted_side(labels, 3) == (0.0, 0.0)


def building_scene(folder: Path, side: int, count: int = 6) -> tuple[Path, Path]:
    """A 256-px scene with ``count`` square buildings of ``side`` px on a grid."""
    rng = np.random.default_rng(0)
    labels = np.zeros((256, 256), np.uint8)
    step = 256 // 3
    for k in range(count):
        r, c = (k // 3) * step + 4, (k % 3) * step + 4
        labels[r:r + side, c:c + side] = 1
    image = (rng.normal(60, 8, (3, 256, 256)) + labels * 120).clip(1, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    return (write_geotiff(folder / "scene.tif", image),
            write_geotiff(folder / "scene_labels.tif", labels))


@pytest.mark.parametrize(("side", "count", "patch", "batch"),
                         [(32, 6, 48, 28), (44, 6, 64, 16), (70, 3, 64, 16)])
def test_the_chip_side_follows_the_size_of_the_buildings_by_default(
        tmp_path: Path, side: int, count: int, patch: int, batch: int) -> None:
    scene, labels = building_scene(tmp_path / "data", side, count)
    out = tmp_path / "m.keras"
    result = CliRunner().invoke(main, ["train", "--scene", str(scene), "--labels", str(labels),
                                       "--out", str(out), *TINY])  # no --patch: auto
    assert result.exit_code == 0, result.output
    # 1.5 times the side, in multiples of 16, 48 to 64; as many pixels as 16 x 64^2
    assert (f"training on chips of {patch} px, batches of {batch} (--patch auto: "
            f"foreground, the rarest class, in objects of {side} px a side") in result.output
    from geofuse.model.modelfile import read_info

    info = read_info(out)
    recorded = info.provenance["training_config"]
    assert (info.patch_size, recorded["patch"], recorded["batch_size"]) == (patch, patch, batch)


def test_patch_auto_keeps_a_batch_size_given_and_refuses_other_words(tmp_path: Path) -> None:
    scene, labels = building_scene(tmp_path / "data", 32)
    out = tmp_path / "m.keras"
    args = ["train", "--scene", str(scene), "--labels", str(labels), "--out", str(out), *TINY]
    result = CliRunner().invoke(main, [*args, "--patch", "auto", "--batch-size", "6"])
    assert result.exit_code == 0, result.output
    from geofuse.model.modelfile import read_info

    recorded = read_info(out).provenance["training_config"]
    assert (recorded["patch"], recorded["batch_size"]) == (48, 6)
    out.unlink()
    for bad in ("big", "0"):
        refused = CliRunner().invoke(main, [*args, "--patch", bad])
        assert refused.exit_code == 2 and "--patch" in refused.output, refused.output
        assert not out.exists()
    plain = CliRunner().invoke(main, [*args, "--patch", "32"])  # a number, as before
    assert plain.exit_code == 0, plain.output
    recorded = read_info(out).provenance["training_config"]
    assert (recorded["patch"], recorded["batch_size"]) == (32, 16)
