"""`geofuse evaluate` and the metrics behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.read.grid import TileGrid
from geofuse.training.metrics import confusion_matrix, set_false_positives, summarize
from tests.helpers import (
    CLASSES,
    make_scene,
    make_tiles,
    make_tiny_model,
    write_classes,
    write_geotiff,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (untrained, seeded) 3-class model: the scores are compared with the model's own
    segment outputs, so nothing here needs a trained one."""
    return make_tiny_model(tmp_path_factory.mktemp("model") / "m.keras", bands=3, classes=3,
                           class_names=tuple(c["name"] for c in CLASSES))


def evaluate(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["evaluate", *map(str, args), "--quiet"])


def segmented_tiles(tiles: Path, model: Path, folder: Path,  # noqa: ANN201 - a generator
                    *extra: str):
    """``(prediction, labels)`` of each tile: ``geofuse segment`` run by the CLI, read back."""
    for image in sorted((tiles / "images").iterdir()):
        out = folder / f"seg_{image.name}"
        seg = CliRunner().invoke(main, ["segment", str(image), str(out), "--model", str(model),
                                        "--tile", "64", "--quiet", "--overwrite", *extra])
        assert seg.exit_code == 0, seg.output
        with rasterio.open(out) as p, rasterio.open(tiles / "masks" / image.name) as m:
            yield p.read(1), m.read(1)


def test_metrics_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 255])
    preds = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    report = summarize(cm, ["a", "b", "c"])
    assert report["classes"]["a"]["iou"] == pytest.approx(1 / 3)
    assert report["classes"]["b"]["iou"] == pytest.approx(2 / 3)
    assert report["classes"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["classes"]["a"]["recall"] == pytest.approx(1 / 2)
    assert report["classes"]["c"]["f1"] == 0.0
    assert report["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert report["pixels"] == 5 and report["accuracy"] == pytest.approx(3 / 5)
    # a class absent everywhere is undefined and left out of the means
    cm4 = confusion_matrix(labels, preds, 4)
    assert summarize(cm4, list("abcd"))["classes"]["d"]["iou"] is None
    assert summarize(cm4, list("abcd"))["mean_iou"] == report["mean_iou"]


def test_evaluate_tiles_matches_segment_outputs(tmp_path: Path, trained: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=3, size=64, seed=40)
    report = tmp_path / "r.json"
    result = evaluate("--model", trained, "--tiles", tiles, "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    # independently: segment each tile with the CLI and count with numpy
    cm = np.zeros((3, 3), np.int64)
    for pred, lab in segmented_tiles(tiles, trained, tmp_path):
        cm += confusion_matrix(lab, pred, 3)
    assert data["confusion_matrix"] == cm.tolist()
    assert data["pixels"] == 3 * 64 * 64
    assert set(data["classes"]["building"]) == {"iou", "f1", "precision", "recall", "support"}
    assert "IoU" in result.output and "mean IoU" in result.output

    again = evaluate("--model", trained, "--tiles", tiles, "--report", report)
    assert again.exit_code == 1 and "r.json" in again.output


def test_evaluate_with_tta_scores_what_segment_tta_writes(tmp_path: Path, trained: Path) -> None:
    """``evaluate --tta flips`` scores the predictions ``segment --tta flips`` writes."""
    tiles = make_tiles(tmp_path / "tiles", count=2, size=64, seed=41)
    report = tmp_path / "r.json"
    result = evaluate("--model", trained, "--tiles", tiles, "--report", report, "--tta", "flips")
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["tta"] == "flips"
    cms = {}
    for mode in ("flips", "none"):
        cm = np.zeros((3, 3), np.int64)
        for pred, lab in segmented_tiles(tiles, trained, tmp_path, "--tta", mode):
            cm += confusion_matrix(lab, pred, 3)
        cms[mode] = cm.tolist()
    assert data["confusion_matrix"] == cms["flips"]
    assert cms["flips"] != cms["none"]  # the averaged flips predict other classes somewhere
    bad = evaluate("--model", trained, "--tiles", tiles, "--tta", "mirror")
    assert bad.exit_code == 2 and "--tta" in bad.output


def test_class_set_pixels_only_add_false_positives_of_excluded_classes() -> None:
    from geofuse.training.labels import SET_BASE

    labels = np.array([1, 1, 0, SET_BASE, SET_BASE, SET_BASE, 255])  # set 0: {0, 2}
    preds = np.array([1, 0, 0, 1, 2, 0, 1])
    cm = confusion_matrix(labels, preds, 3)
    set_fp, pixels = set_false_positives(labels, preds, [(0, 2)], 3)
    assert set_fp.tolist() == [0, 1, 0] and pixels == 3  # one "not building" called building
    report = summarize(cm, ["a", "b", "c"], set_fp)
    assert report["classes"]["b"]["iou"] == pytest.approx(1 / 3)  # tp 1, fn 1, fp 1 (set)
    assert report["classes"]["b"]["precision"] == pytest.approx(1 / 2)
    assert report["pixels"] == 3 and report["set_false_positives"] == [0, 1, 0]


def test_evaluate_with_a_class_set_matches_segment_outputs(tmp_path: Path, trained: Path) -> None:
    """Masks that only say building / not building (a class set) are scored one-vs-rest."""
    tiles = make_tiles(tmp_path / "tiles", count=2, size=64, seed=41)
    for mask in (tiles / "masks").iterdir():
        with rasterio.open(mask, "r+") as ds:
            a = ds.read(1)
            a[a != 1] = 9
            ds.write(a, 1)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": CLASSES, "sets": [
        {"name": "not building", "classes": ["background", "water"], "value": 9}]}))
    report = tmp_path / "r.json"
    result = evaluate("--model", trained, "--tiles", tiles, "--classes", classes,
                      "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    tp = fp = fn = 0
    for pred, lab in segmented_tiles(tiles, trained, tmp_path):
        tp += int(((lab == 1) & (pred == 1)).sum())
        fn += int(((lab == 1) & (pred != 1)).sum())
        fp += int(((lab == 9) & (pred == 1)).sum())
    assert fp > 0 and tp + fn > 0  # the untrained model calls some "not building" building
    assert data["classes"]["building"]["iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-6)
    assert data["pixels"] == tp + fn  # only exactly labelled pixels enter the matrix
    assert data["set_pixels"] == 2 * 64 * 64 - (tp + fn)


def test_a_source_s_own_class_sets_are_scored_one_vs_rest(tmp_path: Path, trained: Path) -> None:
    """Sets given by the source's own coding (not the run's classes file) count too."""
    from geofuse.training.config import EvaluateConfig, TilesSource
    from geofuse.training.evaluate import evaluate as evaluate_api
    from geofuse.training.labels import LabelCoding

    tiles = make_tiles(tmp_path / "tiles", count=2, size=64, seed=41)
    for mask in (tiles / "masks").iterdir():
        with rasterio.open(mask, "r+") as ds:
            a = ds.read(1)
            ds.write(np.where(a == 1, 255, 0).astype(np.uint8), 1)
    own = LabelCoding(classes=3, values=(200, 255, 201), sets=((0, 2),), set_values=(0,))
    report = evaluate_api(EvaluateConfig(source=TilesSource(tiles, coding=own),
                                         model=trained)).report
    assert report["set_pixels"] == 2 * 64 * 64 - report["pixels"] > 0
    assert len(report["set_false_positives"]) == 3


def test_evaluate_scene_with_seam_metric(tmp_path: Path, trained: Path) -> None:
    scene, labels = make_scene(tmp_path, size=(160, 200), collar=8)
    report = tmp_path / "scene.json"
    result = evaluate("--model", trained, "--scene", scene, "--labels", labels,
                      "--tile", "64", "--exact-tile", "--overlap", "16", "--seam-width", "4",
                      "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    with rasterio.open(labels) as ds:
        lab = ds.read(1)
    with rasterio.open(scene) as ds:
        valid = ds.read_masks(1) > 0
    scored = (lab < 3) & valid
    assert data["pixels"] == int(scored.sum())
    seams = data["seams"]
    assert seams["seam"]["pixels"] + seams["interior"]["pixels"] == data["pixels"]
    # the band: rows/cols within 4 px of interior core boundaries of the same tile grid
    grid = TileGrid(160, 200, 64, 16)
    row_b = sorted({int(t.core.row_off) for t in grid.tiles} - {0})
    col_b = sorted({int(t.core.col_off) for t in grid.tiles} - {0})
    band = np.zeros((160, 200), bool)
    for b in row_b:
        band[b - 4:b + 4, :] = True
    for b in col_b:
        band[:, b - 4:b + 4] = True
    assert seams["seam"]["pixels"] == int((band & scored).sum())
    assert "seam band" in result.output


def test_evaluate_scene_with_vector_labels(tmp_path: Path, trained: Path) -> None:
    from shapely.geometry import box, mapping

    scene, _ = make_scene(tmp_path, size=(64, 64))
    with rasterio.open(scene) as ds:
        west, _, _, north = ds.bounds
    geom = mapping(box(west + 4, north - 12, west + 12, north - 4))  # 8 x 8 m = 256 px
    labels = tmp_path / "l.geojson"
    labels.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": [{"type": "Feature", "properties": {"kind": "building"},
                      "geometry": geom}]}))
    result = evaluate("--model", trained, "--scene", scene, "--labels", labels,
                      "--class-field", "kind", "--tile", "64", "--report", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["classes"]["building"]["support"] == 256
    assert data["pixels"] == 64 * 64


def test_binary_masks_of_0_and_255_score_as_the_two_classes(tmp_path: Path) -> None:
    """A two-class model scored on 0/255 masks (as ``train`` reads them): 255 is class 1."""
    model = make_tiny_model(tmp_path / "b.keras", bands=3, classes=2,
                            class_names=("background", "building"))
    scene, labels = make_scene(tmp_path, size=(64, 96))
    with rasterio.open(labels) as ds:
        building = ds.read(1) == 1
    reports = {}
    for name, values in (("ids", building.astype(np.uint8)),
                         ("255", np.where(building, 255, 0).astype(np.uint8))):
        mask = write_geotiff(tmp_path / f"mask_{name}.tif", values)
        result = evaluate("--model", model, "--scene", scene, "--labels", mask, "--tile", "64",
                          "--report", tmp_path / f"{name}.json")
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["255"]["classes"]["building"]["support"] == int(building.sum()) > 0
    assert reports["255"]["classes"] == reports["ids"]["classes"]
    assert reports["255"]["confusion_matrix"] == reports["ids"]["confusion_matrix"]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    result = evaluate("--model", model, "--scene", scene, "--labels", broken, "--tile", "64",
                      "--report", tmp_path / "broken.json")
    assert result.exit_code != 0
    assert "broken.tif: not a readable raster" in result.output
    assert not (tmp_path / "broken.json").exists()


def test_evaluate_bad_inputs(tmp_path: Path, trained: Path) -> None:
    tiles = make_tiles(tmp_path / "t", count=2, size=32)
    write_classes(tiles / "classes.json")
    (tiles / "masks" / "t01.tif").unlink()
    result = evaluate("--model", trained, "--tiles", tiles, "--report", tmp_path / "r.json")
    assert result.exit_code == 1 and "t01.tif" in result.output
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.png").exists()
    usage = evaluate("--model", trained)
    assert usage.exit_code == 2


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_segment_and_evaluate_agree_on_a_256_px_chip(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    tiles = make_tiles(tmp_path / "chips", count=1, size=256, seed=3)
    image = next((tiles / "images").iterdir())
    report = tmp_path / "r.json"
    scored = cli("evaluate", "--model", model, "--tiles", tiles, "--report", report, "-q")
    assert scored.exit_code == 0, scored.output
    segmented = cli("segment", image, tmp_path / "m.tif", "--model", model, "-q")
    assert segmented.exit_code == 0, segmented.output
    with rasterio.open(tmp_path / "m.tif") as pred, rasterio.open(tiles / "masks" /
                                                                   image.name) as truth:
        assert pred.tags()["GEOFUSE_TILE"] == "256"  # not padded into the default 512
        cm = confusion_matrix(truth.read(1), pred.read(1), 3)
    assert json.loads(report.read_text())["confusion_matrix"] == cm.tolist()
