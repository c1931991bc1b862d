"""What `geofuse train` says about its run: the final line (also with --quiet), the scores the
labels support, the default steps whatever the labels' coding, and the names of binary
classes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from geofuse.cli import main
from tests.helpers import CLASSES, synth, write_geotiff

TINY = ["--depth", "2", "--filters", "4", "--patch", "32", "--batch-size", "8"]


def run_train(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["train", *map(str, args)])


def building_only(root: Path, coding: str, count: int = 4, size: int = 48) -> Path:
    """Tiles whose masks say building or not: ``255`` (0/255) or ``set`` (1 building, 9 "not
    building", a class set of background and water in classes.json)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        image, labels = synth(70 + i, size, size)
        image[:, 4:12, 4:12] = np.array([210, 60, 50], np.uint8)[:, None, None]
        labels[4:12, 4:12] = 1  # a building in every tile: each tile is labelled either way
        building = labels == 1
        mask = np.where(building, 255, 0) if coding == "255" else np.where(building, 1, 9)
        write_geotiff(root / "images" / f"t{i}.tif", image)
        write_geotiff(root / "masks" / f"t{i}.tif", mask.astype(np.uint8))
    if coding == "set":
        (root / "classes.json").write_text(
            json.dumps(
                {
                    "classes": CLASSES,
                    "sets": [
                        {"name": "not building", "classes": ["background", "water"], "value": 9}
                    ],
                }
            )
        )
    return root


def test_quiet_still_prints_the_final_line_with_the_labelled_classes_scores(tmp_path: Path) -> None:
    tiles = building_only(tmp_path / "tiles", "set")
    out = tmp_path / "m.keras"
    result = run_train(
        "--tiles",
        tiles,
        "--out",
        out,
        "--val-fraction",
        "0.5",
        "--epochs",
        "2",
        "--steps",
        "3",
        "--quiet",
        *TINY,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    validation = metrics["validation"]
    # the validation labels hold buildings and "not building" only: building alone is scored
    assert validation["labelled_classes"] == ["building"]
    building = validation["classes"]["building"]["iou"]
    assert validation["mean_iou"] == building
    assert validation["classes"]["background"]["iou"] is None
    assert "set_false_positives" in validation
    lines = [
        line for line in result.output.strip().splitlines() if not line.startswith("Warning: ")
    ]  # warnings stay too
    assert len(lines) == 1, result.output  # --quiet: no epoch lines, the final one stays
    assert lines[0].startswith(
        f"{out}: weights of epoch 2 of 2 (last), validation IoU building {building:.4f}, "
    )
    assert "mean" not in lines[0]


def test_default_steps_follow_the_labelled_pixels_whatever_their_coding(tmp_path: Path) -> None:
    """The same building-only labels, as 0/255 masks or as building + a "not building" set:
    every pixel is labelled either way, so the default steps are the same."""
    said = {}
    for coding in ("255", "set"):
        tiles = building_only(tmp_path / coding, coding)
        result = run_train(
            "--tiles",
            tiles,
            "--out",
            tmp_path / f"{coding}.keras",
            "--time-limit",
            "2s",
            "--members",
            "1",
            *TINY,
        )
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / f"{coding}.train" / "metrics.json").read_text())
        said[coding] = (
            re.search(
                r"training for 0:02 or ([\d,]+) steps, whichever comes first "
                r"\(the most for ([\d.]+) Mpx",
                result.output,
            ).groups(),
            metrics["budget_steps"],
            metrics["labelled_pixels_train"],
        )
    assert said["set"] == said["255"]
    train_pixels = said["set"][2]
    assert train_pixels % (48 * 48) == 0 and train_pixels >= 2 * 48 * 48  # whole tiles


def test_binary_masks_name_their_class_after_the_labels(tmp_path: Path) -> None:
    """0/255 masks beside the images of a folder `roofs/`: the class is `roofs`."""
    folder = tmp_path / "roofs"
    folder.mkdir()
    for i, name in enumerate("abc"):
        image, labels = synth(i, 40, 40)
        write_geotiff(folder / f"{name}.tif", image)
        Image.fromarray(np.where(labels == 1, 255, 0).astype(np.uint8)).save(
            folder / f"{name}_mask.png"
        )
    out = tmp_path / "m.keras"
    result = run_train(
        "--tiles", folder, "--out", out, "--epochs", "1", "--steps", "2", "--quiet", *TINY
    )
    assert result.exit_code == 0, result.output
    from geofuse.model.modelfile import read_info

    assert [c.name for c in read_info(out).classes] == ["background", "roofs"]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({"scene": "buildings.tif"}, "buildings"),
        ({"scene": "footprint_mask.tif"}, "footprint"),
        ({"scene": "scene_labels.tif"}, "foreground"),
        ({"tiles": "area1", "masks": "roof_masks"}, "roof"),
        ({"tiles": "area1", "masks": "masks"}, "area1"),
        ({"tiles": "train", "masks": "labels"}, "foreground"),
    ],
)
def test_the_binary_class_name_rule(tmp_path: Path, layout: dict[str, str], expected: str) -> None:
    from geofuse.training.classtable import foreground_name
    from geofuse.training.config import SceneSource, TilesSource

    if "scene" in layout:
        source = SceneSource(tmp_path / "s.tif", tmp_path / layout["scene"])
    else:
        source = TilesSource(tmp_path / layout["tiles"], masks=layout["masks"])
    assert foreground_name(source) == expected
