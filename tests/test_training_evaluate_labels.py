"""`geofuse evaluate` on labels that cover some of the model's classes: one-class masks with
--label-class, class sets in a tiles folder's classes.json, the notice about two-value masks,
and "-" for every class without labelled pixels."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from tests.helpers import CLASSES, make_tiny_model, synth, write_geotiff

FIVE = ("land", "building", "road", "water", "vegetation")


@pytest.fixture(scope="module")
def five_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained 5-class model (seeded): its predictions are compared with its own
    ``segment`` outputs, so it needs no training."""
    return make_tiny_model(
        tmp_path_factory.mktemp("model") / "five.keras",
        bands=3,
        classes=5,
        class_names=FIVE,
        seed=3,
    )  # seed 3: predicts buildings, not only


def building_tiles(root: Path, foreground: int = 1, count: int = 3) -> Path:
    """Tiles with one-class building masks: ``foreground`` on buildings, 0 elsewhere."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        image, labels = synth(60 + i, 64, 64)
        write_geotiff(root / "images" / f"t{i}.tif", image)
        write_geotiff(
            root / "masks" / f"t{i}.tif", np.where(labels == 1, foreground, 0).astype(np.uint8)
        )
    return root


def evaluate(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["evaluate", *map(str, args), "--quiet"])


def predictions(tiles: Path, model: Path, folder: Path) -> Iterator[tuple[np.ndarray, ...]]:
    """``(prediction, mask)`` of each tile: ``geofuse segment`` run by the CLI, read back."""
    for image in sorted((tiles / "images").iterdir()):
        out = folder / f"seg_{image.name}"
        seg = CliRunner().invoke(
            main,
            [
                "segment",
                str(image),
                str(out),
                "--model",
                str(model),
                "--tile",
                "64",
                "--quiet",
                "--overwrite",
            ],
        )
        assert seg.exit_code == 0, seg.output
        with rasterio.open(out) as p, rasterio.open(tiles / "masks" / image.name) as m:
            yield p.read(1), m.read(1)


def building_iou(tiles: Path, model: Path, folder: Path) -> tuple[float, int, int, int]:
    """Building IoU counted with numpy: ``(iou, tp, fp, fn)``; 0 in a mask is "not building"."""
    tp = fp = fn = 0
    building = FIVE.index("building")
    for pred, mask in predictions(tiles, model, folder):
        tp += int(((mask > 0) & (pred == building)).sum())
        fn += int(((mask > 0) & (pred != building)).sum())
        fp += int(((mask == 0) & (pred == building)).sum())
    return tp / (tp + fp + fn), tp, fp, fn


@pytest.mark.parametrize("foreground", [1, 255])
def test_label_class_scores_one_class_masks_as_that_class_against_the_rest(
    tmp_path: Path, five_classes: Path, foreground: int
) -> None:
    tiles = building_tiles(tmp_path / "tiles", foreground)
    report = tmp_path / "r.json"
    result = evaluate(
        "--model", five_classes, "--tiles", tiles, "--label-class", "building", "--report", report
    )
    assert result.exit_code == 0, result.output
    iou, tp, fp, fn = building_iou(tiles, five_classes, tmp_path)
    assert tp > 0 and fp > 0 and fn > 0  # the untrained model: some of each
    data = json.loads(report.read_text())
    assert data["classes"]["building"]["iou"] == pytest.approx(iou, abs=1e-6)
    assert data["mean_iou"] == pytest.approx(iou, abs=1e-6)  # the one labelled class
    assert data["labelled_classes"] == ["building"]
    assert data["class_sets"][0]["false_positives"]["building"] == fp
    assert data["accuracy"] is None  # of one class it would be building's recall
    for name in ("land", "road", "water", "vegetation"):
        assert all(data["classes"][name][k] is None for k in ("iou", "f1", "precision", "recall"))
    lines = result.output.splitlines()
    assert lines[0] == "labels cover: building; not building: any of land, road, water, vegetation"
    land = next(line for line in lines if line.startswith("land "))
    assert land.split()[1:5] == ["-", "-", "-", "-"]
    assert f"mean IoU {iou:.4f} over building" in result.output
    assert "accuracy" not in result.output
    assert f"false positives): building {fp}" in result.output
    # per image: each tile's building IoU, in the report and printed
    assert [Path(i["image"]).name for i in data["items"]] == ["t0.tif", "t1.tif", "t2.tif"]
    assert all(set(i["iou"]) == set(FIVE) for i in data["items"])
    assert all(f"  t{i}.tif: building " in result.output for i in range(3))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_two_value_masks_and_a_larger_model_get_a_notice(
    tmp_path: Path, five_classes: Path
) -> None:
    tiles = building_tiles(tmp_path / "tiles", 1, count=1)
    result = evaluate("--model", five_classes, "--tiles", tiles)
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if line.startswith("Warning: ")]
    assert len(notices) == 1, result.output
    assert "labels hold only the values 0 and 1 while the model has 5 classes" in notices[0]
    assert "--label-class" in notices[0] and "`" not in notices[0]

    sharp = building_tiles(tmp_path / "sharp", 255, count=1)
    refused = evaluate("--model", five_classes, "--tiles", sharp)
    assert refused.exit_code == 1
    assert "values 0 and 255, a one-class mask: name its class (--label-class)" in refused.output

    unknown = evaluate("--model", five_classes, "--tiles", tiles, "--label-class", "roof")
    assert unknown.exit_code == 1
    assert (
        "Expected --label-class among the model's classes (land, building, road, water, "
        "vegetation). Received: 'roof'"
    ) in unknown.output


def test_a_class_set_in_the_tiles_folder_s_classes_json_is_scored_one_vs_rest(
    tmp_path: Path,
) -> None:
    """The folder's own classes.json (as ``train`` reads it) says 9 is "not building"."""
    model = make_tiny_model(
        tmp_path / "m.keras", bands=3, classes=3, class_names=tuple(c["name"] for c in CLASSES)
    )
    tiles = building_tiles(tmp_path / "tiles", 1, count=2)
    for mask in (tiles / "masks").iterdir():
        with rasterio.open(mask, "r+") as ds:
            ds.write(np.where(ds.read(1) == 1, 1, 9).astype(np.uint8), 1)
    (tiles / "classes.json").write_text(
        json.dumps(
            {
                "classes": CLASSES,
                "sets": [{"name": "not building", "classes": ["background", "water"], "value": 9}],
            }
        )
    )
    report = tmp_path / "r.json"
    result = evaluate("--model", model, "--tiles", tiles, "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    tp = fp = fn = 0
    for pred, mask in predictions(tiles, model, tmp_path):
        tp += int(((mask == 1) & (pred == 1)).sum())
        fn += int(((mask == 1) & (pred != 1)).sum())
        fp += int(((mask == 9) & (pred == 1)).sum())
    assert fp > 0 and tp + fn > 0
    assert data["classes"]["building"]["iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-6)
    assert data["labelled_classes"] == ["building"]
    assert data["class_sets"][0]["name"] == "not building"
    assert data["class_sets"][0]["false_positives"] == {"building": fp}
    assert "not building: any of background, water" in result.output.splitlines()[0]


def test_a_folder_classes_json_of_other_classes_is_not_used_and_says_so(
    tmp_path: Path, five_classes: Path
) -> None:
    tiles = building_tiles(tmp_path / "tiles", 1, count=1)
    (tiles / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    result = evaluate("--model", five_classes, "--tiles", tiles, "--label-class", "building")
    assert result.exit_code == 0, result.output  # label_class decides: the file is not read
    plain = evaluate("--model", five_classes, "--tiles", tiles)
    assert plain.exit_code == 0, plain.output
    assert "classes.json: not used: 3 classes, the model has 5" in plain.output
