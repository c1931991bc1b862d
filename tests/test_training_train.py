"""`geofuse train` and `geofuse.training.train.train()` on generated tiles and scenes."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from geofuse.cli import main
from geofuse.errors import InputError
from geofuse.model.spec import Architecture
from tests.helpers import CLASSES, make_scene, make_tiles, synth, write_classes, write_geotiff

TINY = ["--depth", "2", "--filters", "4", "--patch", "32", "--batch-size", "8",
        "--epochs", "2", "--steps", "3", "--quiet"]


def run_train(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["train", *map(str, args)])


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_on_tiles_writes_model_history_curves_and_metrics(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=6)
    out = tmp_path / "model.keras"
    result = run_train("--tiles", tiles, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "model.train"
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "mean_iou", "val_loss", "val_mean_iou", "val_iou_building"} <= set(rows[0])
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["units"] == {"train": 5, "validation": 1}  # whole tiles held out
    assert set(metrics["validation"]["classes"]) == {"background", "building", "water"}
    # every labelled pixel of the training tiles is counted once
    assert sum(metrics["class_pixels_train"].values()) == 5 * 64 * 64

    from geofuse.model.modelfile import load_model

    loaded = load_model(out)
    info = loaded.info
    assert [c.name for c in info.classes] == ["background", "building", "water"]
    assert info.classes[1].color == "#d23c32"
    assert info.normalization.scale == pytest.approx(1 / 255)
    # stats are those of the 5 training tiles (the held-out tile is not used)
    held_out = {Path(p).name for p in metrics["held_out"]}
    assert len(held_out) == 1
    pixels = []
    for tile in sorted((tiles / "images").iterdir()):
        if tile.name not in held_out:
            with rasterio.open(tile) as ds:
                pixels.append(ds.read().reshape(3, -1) / 255.0)
    pixels = np.concatenate(pixels, axis=1)
    assert np.allclose(info.normalization.mean, pixels.mean(axis=1), atol=1e-6)
    assert np.allclose(info.normalization.std, pixels.std(axis=1), atol=1e-6)
    prov = info.provenance
    assert prov["fusion"] == Architecture().fusion  # the library default travels with the model
    assert prov["classes"] == ["background", "building", "water"]
    assert len(prov["data_digest"]) == 64
    assert prov["training_config"]["patch"] == 32
    assert prov["metrics"]["mean_iou"] == metrics["validation"]["mean_iou"]

    # the model segments a GeoTIFF through `geofuse segment`
    scene, _ = make_scene(tmp_path / "s")
    seg = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "m.tif"),
                                    "--model", str(out), "--tile", "64", "--quiet"])
    assert seg.exit_code == 0, seg.output
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(scene) as s:
        assert (m.crs, m.transform, m.shape) == (s.crs, s.transform, s.shape)
        assert set(np.unique(m.read(1))) <= {0, 1, 2}


@pytest.mark.slow
def test_jpeg_png_tiles_colour_masks_custom_folders_and_spaces(tmp_path: Path) -> None:
    root = tmp_path / "my data"
    ignore = (155, 155, 155)
    counts = np.zeros(3, np.int64)
    for t, palette in (("Tile 1", False), ("Tile 2", True)):
        (root / t / "imgs").mkdir(parents=True)
        (root / t / "labels").mkdir(parents=True)
        for i in range(3):
            image, labels = synth(10 * i + len(t) + palette, 48, 48)
            labels[:4, :4] = 9  # "unlabeled" colour
            counts += np.bincount(labels[labels < 3].ravel(), minlength=3)
            Image.fromarray(np.moveaxis(image, 0, -1)).save(root / t / "imgs" / f"p {i}.jpg")
            lut = np.zeros((256, 3), np.uint8)
            for c in CLASSES:
                lut[c["id"]] = [int(c["color"][k:k + 2], 16) for k in (1, 3, 5)]
            lut[9] = ignore
            if palette:
                img = Image.fromarray(labels, mode="P")
                img.putpalette(lut.ravel().tolist())
            else:
                img = Image.fromarray(lut[labels])
            img.save(root / t / "labels" / f"p {i}.png")
    classes = write_classes(tmp_path / "classes.json")
    out = tmp_path / "out dir" / "m.keras"
    result = run_train("--tiles", root, "--images-dir", "imgs", "--masks-dir", "labels",
                       "--image-ext", ".jpg", "--mask-ext", "png", "--classes", classes,
                       "--ignore-value", "#9b9b9b", "--val-fraction", "0", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out dir" / "m.train" / "metrics.json").read_text())
    # colours decoded to the right classes; the ignored colour counts nowhere
    assert list(metrics["class_pixels_train"].values()) == counts.tolist()
    assert metrics["monitor"] == "mean_iou" and metrics["validation"] == {}

    # without --ignore-value the unlabeled colour is a value outside the classes
    bad = run_train("--tiles", root, "--images-dir", "imgs", "--masks-dir", "labels",
                    "--classes", classes, "--out", tmp_path / "bad.keras", *TINY)
    assert bad.exit_code == 1
    assert "#9b9b9b" in bad.output and "p 0.png" in bad.output
    assert not (tmp_path / "bad.keras").exists() and not (tmp_path / "bad.train").exists()


@pytest.mark.slow
def test_scene_with_label_raster_holds_out_blocks_and_ignores_invalid(tmp_path: Path) -> None:
    from geofuse.training.config import LabelOptions
    from geofuse.training.train import SceneSource, TrainConfig, train

    scene, labels = make_scene(tmp_path, size=(128, 192), collar=16)
    with rasterio.open(labels) as ds:
        lab = ds.read(1)
    # a pixel invalid in the image but labelled must not count either
    with rasterio.open(scene, "r+") as ds:
        data = ds.read()
        data[:, 100, 100] = 0
        ds.write(data)
    config = TrainConfig(
        sources=(SceneSource(scene, labels),), out=tmp_path / "m.keras",
        labels=LabelOptions(classes_file=write_classes(tmp_path / "c.json")),
        arch=Architecture(depth=2, base_filters=4), patch=32,
        batch_size=8, epochs=1, steps_per_epoch=2, val_block=64, val_fraction=0.34,
    )
    result = train(config)
    units = result.metrics["units"]
    assert units == {"train": 4, "validation": 2}  # 2 x 3 blocks of 64 px
    expected = int((lab < 3).sum()) - int(lab[100, 100] < 3)
    counted = sum(result.metrics["class_pixels_train"].values())
    counted += result.metrics["validation"]["pixels"]
    assert counted == expected


@pytest.mark.slow
def test_same_seed_same_metrics_and_resume_after_interrupt(tmp_path: Path) -> None:
    from geofuse.training.train import TilesSource, TrainConfig, train

    tiles = make_tiles(tmp_path / "tiles", count=5, size=48)
    common = dict(sources=(TilesSource(tiles),), arch=Architecture(depth=2, base_filters=4),
                  patch=32,
                  batch_size=8, epochs=3, steps_per_epoch=3, seed=7)
    first = train(TrainConfig(out=tmp_path / "a.keras", **common))
    second = train(TrainConfig(out=tmp_path / "b.keras", **common))
    a, b = first.metrics["validation"], second.metrics["validation"]
    assert a["mean_iou"] == pytest.approx(b["mean_iou"], abs=1e-6)
    assert np.allclose(a["confusion_matrix"], b["confusion_matrix"], atol=2)
    assert [h["loss"] for h in first.history] == pytest.approx(
        [h["loss"] for h in second.history], rel=1e-5)

    class Killed(KeyboardInterrupt):
        pass

    def kill_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Killed

    config = TrainConfig(out=tmp_path / "c.keras", **common)
    with pytest.raises(Killed):
        train(config, progress=kill_after_two)
    assert not (tmp_path / "c.keras").exists()
    assert len(history(tmp_path / "c.train")) == 2
    resumed = train(TrainConfig(out=tmp_path / "c.keras", resume=True, **common))
    assert [int(r["epoch"]) for r in history(tmp_path / "c.train")] == [0, 1, 2]
    assert resumed.metrics["validation"]["mean_iou"] == pytest.approx(a["mean_iou"], abs=1e-4)
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in first.history], rel=1e-4)


def test_an_ensemble_resumes_in_its_second_network(tmp_path: Path) -> None:
    """Killed while the second network trains, --resume keeps the finished first one and
    continues the second from its checkpoint: the same model as an uninterrupted run."""
    from geofuse.training.train import TilesSource, TrainConfig, train

    tiles = make_tiles(tmp_path / "tiles", count=5, size=48)
    common = dict(sources=(TilesSource(tiles),), arch=Architecture(depth=2, base_filters=4),
                  patch=32, batch_size=8, epochs=3, steps_per_epoch=3, seed=7, members=2)
    whole = train(TrainConfig(out=tmp_path / "a.keras", **common))
    assert whole.metrics["members"] == 2 and whole.epochs == 6

    class Killed(KeyboardInterrupt):
        pass

    calls = []

    def kill_in_the_second(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 5:  # three epochs of the first network, two of the second
            raise Killed

    with pytest.raises(Killed):
        train(TrainConfig(out=tmp_path / "c.keras", **common), progress=kill_in_the_second)
    assert not (tmp_path / "c.keras").exists()
    assert len(history(tmp_path / "c.train" / "member1")) == 2
    calls.clear()
    resumed = train(TrainConfig(out=tmp_path / "c.keras", resume=True, **common),
                    progress=lambda done, total: calls.append(done))
    assert calls == [3]  # only the second network's last epoch ran again
    assert len(history(tmp_path / "c.train")) == 3
    assert resumed.metrics["validation"]["mean_iou"] == pytest.approx(
        whole.metrics["validation"]["mean_iou"], abs=1e-4)


@pytest.mark.slow
def test_ignore_value_in_id_masks(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "t", count=3, size=48, classes=False)
    for mask in (tiles / "masks").iterdir():
        with rasterio.open(mask, "r+") as ds:
            a = ds.read(1)
            a[:8] = 9
            ds.write(a, 1)
    classes = write_classes(tmp_path / "classes.json")
    bad = run_train("--tiles", tiles, "--classes", classes, "--out", tmp_path / "x.keras", *TINY)
    assert bad.exit_code == 1 and "Received: 9" in bad.output
    ok = run_train("--tiles", tiles, "--classes", classes, "--ignore-value", "9",
                   "--out", tmp_path / "m.keras", *TINY)
    assert ok.exit_code == 0, ok.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    seen = sum(metrics["class_pixels_train"].values()) + metrics["validation"]["pixels"]
    assert seen == 3 * 40 * 48


def bad_case(tmp_path: Path, case: str) -> tuple[list[str], str]:
    tiles = make_tiles(tmp_path / "t", count=3, size=48)
    if case == "image without mask":
        (tiles / "masks" / "t01.tif").unlink()
        return ["--tiles", str(tiles)], "t01.tif"
    if case == "mask of another size":
        write_geotiff(tiles / "masks" / "t02.tif", np.zeros((40, 48), np.uint8))
        return ["--tiles", str(tiles)], "t02.tif"
    if case == "mask values outside the classes":
        write_geotiff(tiles / "masks" / "t00.tif", np.full((48, 48), 7, np.uint8))
        return ["--tiles", str(tiles)], "t00.tif"
    if case == "empty tiles folder":
        (tmp_path / "empty" / "images").mkdir(parents=True)
        (tmp_path / "empty" / "masks").mkdir(parents=True)
        return ["--tiles", str(tmp_path / "empty")], "empty"
    scene, labels = make_scene(tmp_path / "s", size=(64, 64))
    if case == "labels that miss the scene":
        far = {"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [
                [[2.0, 48.0], [2.001, 48.0], [2.001, 48.001], [2.0, 48.0]]]}}]}
        path = tmp_path / "far.geojson"
        path.write_text(json.dumps(far))
        return ["--scene", str(scene), "--labels", str(path)], "far.geojson"
    assert case == "scene with fewer bands than asked"
    return ["--scene", str(scene), "--labels", str(labels), "--bands", "1,2,3,4"], "scene.tif"


@pytest.mark.parametrize("case", [
    "image without mask", "mask of another size", "mask values outside the classes",
    "empty tiles folder", "labels that miss the scene", "scene with fewer bands than asked",
])
def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path: Path, case: str) -> None:
    args, name = bad_case(tmp_path, case)
    out = tmp_path / "out" / "m.keras"
    result = run_train(*args, "--out", out, *TINY)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and name in lines[0], lines
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "out" / "m.train").exists()


@pytest.mark.slow
def test_vector_labels_reprojected_buffered_and_rasterised(tmp_path: Path) -> None:
    from rasterio.warp import transform_geom
    from shapely.geometry import LineString, box, mapping

    from geofuse.training.config import TrainConfig  # noqa: F401  (import check)
    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import LabelCoding

    scene, _ = make_scene(tmp_path, size=(96, 96))
    with rasterio.open(scene) as ds:
        west, south, east, north = ds.bounds
    square = box(west + 8, north - 18, west + 18, north - 8)  # 10 x 10 m -> 400 px
    line = LineString([(west + 4, south + 10), (west + 34, south + 10)])  # 30 m x 2 m
    outside = box(east + 100, north + 100, east + 110, north + 110)
    features = []
    for geom, kind in ((square, "building"), (line, "water"), (outside, "building")):
        lonlat = transform_geom("EPSG:32633", "EPSG:4326", mapping(geom))
        features.append({"type": "Feature", "properties": {"kind": kind}, "geometry": lonlat})
    labels = tmp_path / "labels.geojson"
    labels.write_text(json.dumps({"type": "FeatureCollection", "features": features}))

    from geofuse.model.spec import ClassInfo

    classes = tuple(ClassInfo(**c) for c in CLASSES)
    raster = LabelledRaster(scene, labels, LabelCoding(classes=3), classes,
                            class_field="kind", line_width=2.0)
    _, _, ids = raster.read(rasterio.windows.Window(0, 0, 96, 96))
    assert abs(int((ids == 1).sum()) - 400) <= 24
    assert abs(int((ids == 2).sum()) - (30 * 2 + np.pi) / 0.25) <= 30
    rows, cols = np.nonzero(ids == 1)
    assert (rows.min(), cols.min()) == (16, 16)  # 8 m from the top-left corner

    classes_json = write_classes(tmp_path / "classes.json")
    result = run_train("--scene", scene, "--labels", labels, "--class-field", "kind",
                       "--line-width", "2", "--classes", classes_json, "--val-block", "32",
                       "--out", tmp_path / "m.keras", *TINY)
    assert result.exit_code == 0, result.output
    no_width = run_train("--scene", scene, "--labels", labels, "--class-field", "kind",
                         "--classes", classes_json, "--out", tmp_path / "n.keras", *TINY)
    assert no_width.exit_code == 1 and "--line-width" in no_width.output


def test_augmentation_keeps_image_and_labels_aligned(tmp_path: Path) -> None:
    from geofuse.model.spec import Normalization
    from geofuse.training.chips import ChipLoader

    loader = ChipLoader.__new__(ChipLoader)
    loader.jitter, loader.bands, loader.shadow = 0.2, 1, 0.0
    x = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    y = (np.arange(64) % 251).astype(np.uint8).reshape(8, 8)
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    seen = set()
    for k in range(8):
        xa, ya = loader.augment_chip(x, y, valid, k, seed=k)
        # labels encode the original pixel index; the image went through the same transform
        # then an affine jitter, so a linear fit of image on labels is exact
        v = ya != 0
        fit = np.polyfit(ya[v].astype(float), xa[v, 0], 1)
        assert np.allclose(np.polyval(fit, ya[v]), xa[v, 0], atol=1e-3)
        assert xa[ya == 0, 0] == 0  # invalid input stays 0 after jitter
        seen.add(ya.tobytes())
    assert len(seen) == 8
    assert Normalization  # imported for type context


def test_loss_and_metric_ignore_pixels() -> None:
    import tensorflow as tf

    from geofuse.training.losses import ConfusionMetrics, SegmentationLoss
    from geofuse.training.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (2, 8, 8)).astype(np.uint8)
    p = rng.dirichlet(np.ones(3), (2, 8, 8)).astype(np.float32)
    y_ignored = y.copy()
    y_ignored[:, :4] = 255
    for mode in ("ce+dice", "focal+dice", "ce", "ce+lovasz", "lovasz"):
        loss = SegmentationLoss(3, mode, [1.0, 2.0, 0.5])
        base = float(loss(y_ignored, p))
        p2 = p.copy()
        p2[:, :4] = rng.dirichlet(np.ones(3), (2, 4, 8))  # change predictions where ignored
        assert float(loss(y_ignored, p2)) == pytest.approx(base, rel=1e-6)
        assert float(loss(y, p)) != pytest.approx(base, rel=1e-3)
    metric = ConfusionMetrics(["a", "b", "c"])
    metric.update_state(tf.constant(y_ignored), tf.constant(p))
    cm = confusion_matrix(y_ignored, p.argmax(-1), 3)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    result = metric.result()
    assert float(result["mean_iou"]) == pytest.approx(iou.mean(), rel=1e-5)
    assert float(result["iou_b"]) == pytest.approx(iou[1], rel=1e-5)


def test_lovasz_of_hard_predictions_is_one_minus_the_iou_of_the_classes_present() -> None:
    from geofuse.training.losses import SegmentationLoss
    from geofuse.training.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (2, 16, 16)).astype(np.uint8)  # class 2 never labelled
    pred = np.where(rng.random(y.shape) < 0.3, rng.integers(0, 3, y.shape), y)
    y[0, :3] = 255  # ignored
    p = np.eye(3, dtype=np.float32)[pred]
    cm = confusion_matrix(y, pred, 3, y < 3)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    expected = 1.0 - iou[:2].mean()  # classes 0 and 1 are present in the labels
    assert float(SegmentationLoss(3, "lovasz")(y, p)) == pytest.approx(expected, abs=1e-4)
    # soft predictions closer to the truth score lower
    soft = 0.5 * p + 0.5 * np.eye(3, dtype=np.float32)[np.minimum(y, 2)]
    assert float(SegmentationLoss(3, "lovasz")(y, soft)) < expected - 0.05


def test_bad_inputs_in_library_name_the_file(tmp_path: Path) -> None:
    from geofuse.training.config import TilesSource
    from geofuse.training.datasets import find_pairs

    tiles = make_tiles(tmp_path / "t", count=2, size=32)
    (tiles / "masks" / "t00.tif").unlink()
    with pytest.raises(InputError, match="t00.tif: no mask"):
        find_pairs(TilesSource(tiles))

    from affine import Affine

    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import LabelCoding

    scene, labels = make_scene(tmp_path / "s", size=(32, 32))
    shifted = write_geotiff(tmp_path / "shifted.tif", np.zeros((32, 32), np.uint8),
                            transform=Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0))
    with pytest.raises(InputError, match="shifted.tif: expected a mask on the grid"):
        LabelledRaster(scene, shifted, LabelCoding(classes=3), ())
    assert LabelledRaster(scene, labels, LabelCoding(classes=3), ()).height == 32


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    script = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from click.testing import CliRunner
        from geofuse.cli import main
        r = CliRunner().invoke(main, ["train", "--tiles", {str(tiles)!r}, "--out",
            {str(tmp_path / "m.keras")!r}, "--strategy", "mirrored", "--depth", "2",
            "--filters", "4", "--patch", "32", "--batch-size", "8", "--epochs", "1",
            "--steps", "2", "--quiet"])
        print("EXIT", r.exit_code, r.output)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert "EXIT 0" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    from geofuse.model.modelfile import load_model

    assert load_model(tmp_path / "m.keras").info.spec.classes == 3


def test_real_dubai_colour_masks_decode_to_the_provenance_classes(real: Path) -> None:
    from geofuse.model.spec import ClassInfo
    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import IGNORE, LabelCoding

    # colours measured in the masks (PROVENANCE.md), in our class order
    table = {"land": "#8429F6", "building": "#3C1098", "road": "#6EC1E4",
             "water": "#E2A929", "vegetation": "#FEDD3A"}
    classes = tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(table.items()))
    coding = LabelCoding(classes=5, colors=tuple(table.values()),
                         ignore_colors=("#9B9B9B", "#000000"))
    for name in ("Tile 1/masks/image_part_001.png", "Tile 2/masks/image_part_002.png"):
        mask = real / "dubai-aerial-hitl" / name
        image = mask.parent.parent / "images" / mask.with_suffix(".jpg").name
        raster = LabelledRaster(image, mask, coding, classes)
        _, _, ids = raster.read(rasterio.windows.Window(0, 0, raster.width, raster.height))
        with rasterio.open(mask) as ds:
            if ds.count == 1:  # palette PNG
                cmap = ds.colormap(1)
                rgb = np.array([cmap.get(v, (0, 0, 0))[:3] for v in range(256)])[ds.read(1)]
            else:
                rgb = np.moveaxis(ds.read([1, 2, 3]), 0, -1)
        packed = (rgb[..., 0].astype(int) << 16) | (rgb[..., 1].astype(int) << 8) | rgb[..., 2]
        for i, colour in enumerate(table.values()):
            assert int((ids == i).sum()) == int((packed == int(colour[1:], 16)).sum())
        assert int((ids == IGNORE).sum()) == int(np.isin(packed, [0x9B9B9B, 0]).sum())


@pytest.mark.slow
def test_real_sentinel2_layout_trains_and_evaluates(tmp_path: Path, real: Path) -> None:
    src = real / "sentinel2-forest-hu"
    data = tmp_path / "s2 chips"
    for split, names in (("train", range(100, 108)), ("test", range(0, 3))):
        for kind, ext in (("images", ".jpg"), ("labels", ".png")):
            folder = data / f"{split}_{kind}"
            folder.mkdir(parents=True)
            for n in names:
                for suffix in (ext, ext + ".aux.xml"):
                    (folder / f"cnn_{n}{suffix}").symlink_to(src / f"{split}_{kind}" /
                                                             f"cnn_{n}{suffix}")
    classes = tmp_path / "forest.json"
    classes.write_text(json.dumps({"classes": [{"name": "background", "value": 2},
                                               {"name": "forest", "value": 1}],
                                   "ignore": [0]}))
    layout = ["--image-ext", ".jpg", "--mask-ext", ".png", "--classes", str(classes)]
    result = run_train("--tiles", data, "--images-dir", "train_images", "--masks-dir",
                       "train_labels", *layout, "--out", tmp_path / "f.keras", *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "f.train" / "metrics.json").read_text())
    values = np.concatenate([np.asarray(Image.open(p)).ravel()
                             for p in sorted((data / "train_labels").glob("*.png"))])
    counted = sum(metrics["class_pixels_train"].values()) + metrics["validation"]["pixels"]
    assert counted == int(np.isin(values, [1, 2]).sum())
    report = tmp_path / "r.json"
    ev = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "f.keras"), "--tiles",
                                   str(data), "--images-dir", "test_images", "--masks-dir",
                                   "test_labels", *layout, "--report", str(report), "--quiet"])
    assert ev.exit_code == 0, ev.output
    test_values = np.concatenate([np.asarray(Image.open(p)).ravel()
                                  for p in sorted((data / "test_labels").glob("*.png"))])
    rep = json.loads(report.read_text())
    assert rep["classes"]["forest"]["support"] == int((test_values == 1).sum())
    assert rep["classes"]["background"]["support"] == int((test_values == 2).sum())


def test_time_limit_lays_the_schedule_over_the_budget(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--time-limit", "8s", "--depth", "2",
                       "--filters", "4", "--patch", "32", "--batch-size", "4", "--steps", "5",
                       "--val-tiles", "t01")
    assert result.exit_code == 0, result.output
    assert "training for 0:08" in result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    budget = metrics["budget_seconds"]  # what was left of the 8 s after the data checks
    assert 0 < budget <= 8
    # epochs report time and steps, not counts (of the time the data checks left; on a loaded
    # machine the first step's tracing alone may spend it, ending the epoch after one step)
    assert re.search(rf"epoch 1 \(\d+/{budget:.0f} s, step [1-5]/\d+\)", result.output)
    elapsed = [float(r["elapsed"]) for r in history(tmp_path / "m.train")]
    assert elapsed[-1] >= budget  # ran its whole budget...
    assert len(elapsed) == 1 or elapsed[-2] < budget  # ...and stopped in the epoch it ran out
    assert [Path(p).stem for p in metrics["held_out"]] == ["t01"]
    assert any("validation is one tile" in w for w in metrics["warnings"])
    assert "Warning: validation is one tile" in result.output
    rates = [float(r["learning_rate"]) for r in history(tmp_path / "m.train")]
    # annealed: the last step began late in the cosine (the rate is set as each step begins,
    # so on a loaded machine a slow last step started a little before the end)
    assert rates and rates[-1] <= 0.5 * 3e-3


def test_default_budget_grows_with_the_data_and_durations_parse() -> None:
    from geofuse.errors import ConfigError
    from geofuse.training.config import DEFAULT_STEPS, default_steps, parse_duration

    assert [parse_duration(t) for t in ("90s", "10m", "1h", "1h30m", "45")] == \
        [90, 600, 3600, 5400, 45]
    with pytest.raises(ConfigError, match="Expected a duration like 90s"):
        parse_duration("soon")
    low, _, high = DEFAULT_STEPS
    assert default_steps(0, 50) == -(-low // 50) * 50 and default_steps(10**9, 50) == high
    assert default_steps(100_000, 50) < default_steps(1_000_000, 50) < high
    assert default_steps(0, 7) % 7 == 0  # whole epochs
    assert default_steps(10**9, 50, maximum=False) > high  # a time limit's bound: large data
    assert default_steps(100_000, 50, maximum=False) == default_steps(100_000, 50)


def test_default_budget_counts_steps_not_seconds(tmp_path: Path, monkeypatch) -> None:
    """Without --time-limit or --epochs the run lasts a number of steps from the data, laid
    under its schedule, and reports its pace and the time left."""
    import geofuse.training.config as train_config

    monkeypatch.setattr(train_config, "DEFAULT_STEPS", (12, 0, 12))
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--depth", "2", "--filters", "4",
                       "--patch", "32", "--batch-size", "4", "--steps", "5",
                       "--val-tiles", "t01")
    assert result.exit_code == 0, result.output
    assert "training for 15 steps (the default for" in result.output  # 12, whole epochs
    assert "epoch 1 (step 5/15, about 0:" in result.output
    assert "epoch 3 (step 15/15, about 0:00 left)" in result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    assert metrics["budget_steps"] == 15 and metrics["budget_seconds"] is None
    assert metrics["epochs_run"] == 3
    rates = [float(r["learning_rate"]) for r in history(tmp_path / "m.train")]
    assert len(rates) == 3 and rates[-1] <= 0.2 * 3e-3  # annealed at the last step


def test_a_time_limit_stops_at_the_default_steps_and_trains_more_networks(
        tmp_path: Path, monkeypatch) -> None:
    """More time than the data needs: the run ends, annealed, at the data's default steps, and
    the time left trains further networks (other seeds, up to AUTO_MEMBERS) that the model
    file averages."""
    import keras

    import geofuse.training.config as train_config
    from geofuse.model.modelfile import load_model

    monkeypatch.setattr(train_config, "DEFAULT_STEPS", (12, 0, 12))
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--time-limit", "10m",
                       "--depth", "2", "--filters", "4", "--patch", "32", "--batch-size", "4",
                       "--steps", "5", "--val-tiles", "t01")
    assert result.exit_code == 0, result.output
    assert "training for 10:00 or 15 steps, whichever comes first" in result.output
    assert "epoch 3 (" in result.output and ", step 15/15)" in result.output
    assert train_config.AUTO_MEMBERS == 3
    assert "training network 2 in the" in result.output and "average with it " in result.output
    assert "training network 3 in the" in result.output and "with them " in result.output
    assert "network 2, epoch 3 (" in result.output and "network 3, epoch 3 (" in result.output
    assert "the average of 3 networks (9 epochs in all)" in result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    assert metrics["budget_steps"] == 15 and metrics["epochs_run"] == 9
    assert metrics["members"] == 3 and len(metrics["member_validation"]) == 3
    assert metrics["validation"]["pixels"] == metrics["member_validation"][0]["pixels"] > 0
    for run in (tmp_path / "m.train", *(tmp_path / "m.train" / f"member{k}" for k in (1, 2))):
        rows = history(run)
        assert len(rows) == 3  # each network: the data's 15 steps
        assert float(rows[-1]["elapsed"]) < 300  # stopped long before its time was up
        assert float(rows[-1]["learning_rate"]) <= 0.2 * 3e-3  # annealed at the last step
    loaded = load_model(out)
    assert loaded.info.spec.members == 3 and loaded.info.provenance["members"] == 3
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    first, second, third = (np.asarray(loaded.model.get_layer(f"member{k}")(x))
                            for k in range(3))
    assert not np.allclose(first, second, atol=1e-3)  # other seeds, other networks
    assert not np.allclose(second, third, atol=1e-3)
    np.testing.assert_allclose(np.asarray(loaded.model(x)), (first + second + third) / 3,
                               atol=1e-6)
    assert isinstance(loaded.model.get_layer("member2"), keras.Model)


def test_members_one_keeps_a_single_network_and_an_ensemble_segments(
        tmp_path: Path, monkeypatch) -> None:
    """--members 1 trains one network in the same spare time; --members 2 without a time
    limit trains both for the default steps, and the ensemble segments a GeoTIFF with either
    runtime to the same classes."""
    import geofuse.training.config as train_config

    monkeypatch.setattr(train_config, "DEFAULT_STEPS", (12, 0, 12))
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    tiny = ["--depth", "2", "--filters", "4", "--patch", "32", "--batch-size", "4", "--steps",
            "5", "--val-tiles", "t01"]
    one = run_train("--tiles", tiles, "--out", tmp_path / "one.keras", "--time-limit", "10m",
                    "--members", "1", *tiny)
    assert one.exit_code == 0, one.output
    assert "training network 2" not in one.output and "weights of epoch 3 of 3" in one.output
    assert not (tmp_path / "one.train" / "member1").exists()
    two = run_train("--tiles", tiles, "--out", tmp_path / "two.keras", "--members", "2", *tiny)
    assert two.exit_code == 0, two.output
    assert "the average of 2 networks (6 epochs in all)" in two.output
    assert len(history(tmp_path / "two.train" / "member1")) == 3
    info = CliRunner().invoke(main, ["info", str(tmp_path / "two.keras")])
    assert info.exit_code == 0 and "2 networks of this architecture" in info.output
    scene = sorted((tiles / "images").glob("*.tif"))[0]
    masks = {}
    for runtime in ("tensorflow", "openvino"):
        mask = tmp_path / f"{runtime}.tif"
        seg = CliRunner().invoke(main, ["segment", str(scene), str(mask), "--model",
                                        str(tmp_path / "two.keras"), "--runtime", runtime,
                                        "--quiet"])
        assert seg.exit_code == 0, seg.output
        with rasterio.open(mask) as ds, rasterio.open(scene) as src:
            assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
            masks[runtime] = ds.read(1)
    assert np.mean(masks["tensorflow"] == masks["openvino"]) > 0.99
    bad = run_train("--tiles", tiles, "--out", tmp_path / "bad.keras", "--members", "2",
                    "--strategy", "multi-worker", *tiny)
    assert bad.exit_code != 0 and "Expected one network with the multi-worker" in bad.output


def test_a_budget_in_seconds_and_steps_follows_the_nearer_limit() -> None:
    from geofuse.errors import ConfigError
    from geofuse.training.fit import Budget

    # undecided, then on course for its steps: the schedule follows the steps alone, so the
    # clock (the machine, its load) does not change the run
    budget = Budget(3e-3, 0.05, seconds=100.0, steps=500)
    assert budget.fraction(2, elapsed=30.0) == pytest.approx(0.004)
    budget.observe(1, 5.0)  # the first step traces the model
    budget.observe(21, 7.0)  # 0.1 s a step: 500 steps by about 62 s
    assert budget.led_by == "steps"
    assert budget.fraction(100, elapsed=60.0) == pytest.approx(0.2)
    assert not budget.done(100, elapsed=60.0) and budget.done(500, elapsed=60.0)
    assert budget.done(400, elapsed=100.0)  # the time is a hard limit all the same
    budget.observe(300, 95.0)  # between epochs: no new projection
    assert budget.led_by == "steps"
    budget.observe(300, 95.0, epoch_end=True)  # slowed down: the time will end the run
    assert budget.led_by == "time"
    assert budget.fraction(300, elapsed=95.0) == pytest.approx(0.95)
    slow = Budget(3e-3, 0.05, seconds=100.0, steps=500)
    slow.observe(1, 5.0)
    slow.observe(21, 15.0)  # a busy start: 0.5 s a step
    assert slow.led_by == "time" and slow.fraction(21, elapsed=15.0) == pytest.approx(0.15)
    slow.observe(150, 27.9, epoch_end=True)  # 0.1 s a step since: back on course
    assert slow.led_by == "steps" and slow.fraction(150, elapsed=27.9) == pytest.approx(0.3)

    # the time comes first from the start: the further of the two, as before
    timed = Budget(3e-3, 0.05, seconds=100.0, steps=1000, spent=30.0)
    timed.observe(1, 35.0)
    timed.observe(21, 37.0)  # 0.1 s a step: 1,000 steps would take about 150 s
    assert timed.led_by == "time"
    assert timed.fraction(2, elapsed=40.0) == pytest.approx(0.40)
    assert timed.fraction(800, elapsed=40.0) == pytest.approx(0.80)
    assert timed.fraction(1000) == 1.0 and timed.done(1000)
    with pytest.raises(ConfigError, match="Received: neither"):
        Budget(3e-3, 0.05)


def test_unknown_validation_tile_is_named(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=3, size=32)
    result = run_train("--tiles", tiles, "--out", tmp_path / "m.keras", "--val-tiles", "nope",
                       *TINY)
    assert result.exit_code == 1
    assert "Received: nope, which match none" in result.output
    assert not (tmp_path / "m.keras").exists()


def write_binary_pair(folder: Path, name: str, seed: int, mask_name: str) -> None:
    image, labels = synth(seed, 40, 40)
    write_geotiff(folder / f"{name}.tif", image)
    Image.fromarray(np.where(labels == 1, 255, 0).astype(np.uint8)).save(folder / mask_name)


@pytest.mark.slow
def test_masks_beside_images_lists_exclusions_and_binary_class_names(tmp_path: Path) -> None:
    folder = tmp_path / "roofs"
    folder.mkdir()
    for i, name in enumerate(["a", "b", "c", "skip"]):
        write_binary_pair(folder, name, i, f"{name}_mask.png")
    out = tmp_path / "m.keras"
    result = run_train("--tiles", folder, "--out", out, "--exclude", "skip.tif", *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    assert sum(metrics["units"].values()) == 3  # skip.tif left out; masks never taken as images
    from geofuse.model.modelfile import read_info

    classes = read_info(out).classes
    # 0/255 masks: binary, the class named after the tiles folder (no masks folder names it)
    assert [c.name for c in classes] == ["background", "roofs"]
    assert all(c.color not in ("#000000", "#ffffff") for c in classes)
    assert metrics["class_pixels_train"]["roofs"] > 0

    listing = tmp_path / "list.txt"
    listing.write_text("# two of them\nroofs/a.tif\nroofs/b.tif\n")
    named = run_train("--tiles", listing, "--out", tmp_path / "n.keras", "--mask-suffix",
                      "_mask", "--class-names", "ground,roof", "--val-fraction", "0", *TINY)
    assert named.exit_code == 0, named.output
    assert [c.name for c in read_info(tmp_path / "n.keras").classes] == ["ground", "roof"]
    m2 = json.loads((tmp_path / "n.train" / "metrics.json").read_text())
    assert m2["units"] == {"train": 2, "validation": 0}


def test_a_missing_mask_names_where_it_was_looked_for(tmp_path: Path) -> None:
    folder = tmp_path / "roofs"
    folder.mkdir()
    write_binary_pair(folder, "a", 0, "a_mask.png")
    write_geotiff(folder / "lonely.tif", synth(1, 40, 40)[0])
    result = run_train("--tiles", folder, "--out", tmp_path / "m.keras", *TINY)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "lonely.tif: no mask found (looked for" in line and "lonely_mask.*" in line


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_training_two_processes_one_model_from_the_chief(tmp_path: Path) -> None:
    """Two worker processes on 127.0.0.1 (TF_CONFIG): one run, one model, written by the chief."""
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    cluster = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "geofuse.cli", "train", "--tiles", str(tiles), "--out",
             str(tmp_path / "m.keras"), "--strategy", "multi-worker", "--epochs", "3",
             "--depth", "2", "--filters", "4", "--patch", "32", "--batch-size", "8",
             "--steps", "4"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=tmp_path))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "the chief writes" in outputs[1]
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    with open(tmp_path / "m.train" / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 3
    losses = [float(h["loss"]) for h in history]
    assert losses[-1] < losses[0]  # it learns
    epochs = [line for line in outputs[1].splitlines() if line.startswith("epoch ")]
    assert len(epochs) == len(history)  # the worker ran the chief's epochs, no more, no less
    from geofuse.model.modelfile import load_model

    assert load_model(tmp_path / "m.keras").info.spec.classes == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "m.train", "tiles"]


def test_rasters_read_in_worker_threads_never_see_an_earlier_raster(tmp_path: Path) -> None:
    """Read handles belong to their raster: a new raster never reads a freed one's file.

    tf.data keeps its reader threads between runs, so a second ``train`` in one process reads
    in threads where the first one's rasters were opened (a handle table keyed by ``id()``
    handed a recycled id the previous file).
    """
    from concurrent.futures import ThreadPoolExecutor

    from rasterio.windows import Window

    from geofuse.model.spec import ClassInfo
    from geofuse.training.datasets import LabelledRaster
    from geofuse.training.labels import LabelCoding

    tiles = make_tiles(tmp_path / "tiles", count=2, size=40)
    classes = [ClassInfo(i, n) for i, n in enumerate(("background", "building", "water"))]
    coding = LabelCoding(classes=3)
    expected = [synth(i, 40, 40) for i in range(2)]
    with ThreadPoolExecutor(1) as pool:  # one long-lived reader thread, as tf.data's
        for n in range(12):
            k = n % 2
            raster = LabelledRaster(tiles / "images" / f"t{k:02d}.tif",
                                    tiles / "masks" / f"t{k:02d}.tif", coding, classes)
            data, _, labels = pool.submit(raster.read, Window(0, 0, 40, 40)).result()
            np.testing.assert_array_equal(data, expected[k][0])
            np.testing.assert_array_equal(labels, expected[k][1])
            del raster


def test_balanced_sampling_centres_chips_on_a_rare_class(tmp_path: Path) -> None:
    """``--sampling balanced``: a class of 0.1 % of the pixels is in far more chips."""
    from rasterio.windows import Window

    from geofuse.model.spec import ClassInfo, Normalization
    from geofuse.training.chips import ChipLoader, Sampling
    from geofuse.training.datasets import LabelledRaster, make_units, scan
    from geofuse.training.labels import LabelCoding

    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (3, 320, 320), dtype=np.uint8)
    labels = np.zeros((320, 320), np.uint8)
    labels[200:210, 40:50] = 1  # 100 of 102,400 pixels
    write_geotiff(tmp_path / "s.tif", image)
    write_geotiff(tmp_path / "s_labels.tif", labels)
    classes = [ClassInfo(0, "background"), ClassInfo(1, "building")]
    raster = LabelledRaster(tmp_path / "s.tif", tmp_path / "s_labels.tif",
                            LabelCoding(classes=2), classes)
    units = make_units([raster], ["scene"], 160)
    scan([raster], units, 2, 1 / 255)
    norm = Normalization(mean=(0.5,) * 3, std=(0.2,) * 3, scale=1 / 255)
    shares = {}
    for sampling in ("random", "balanced"):
        loader = ChipLoader([raster], units, 32, norm, sampling=Sampling(sampling))
        rows = loader.epoch_rows(0, 400)
        hits = 0
        for unit, row, col, _, _ in rows.tolist():
            win = units[unit].window  # every chip lies inside its unit
            assert win.row_off <= row <= win.row_off + win.height - 32
            assert win.col_off <= col <= win.col_off + win.width - 32
            hits += bool((raster.read(Window(col, row, 32, 32))[2] == 1).any())
        shares[sampling] = hits / len(rows)
    assert shares["random"] < 0.05
    assert shares["balanced"] > 0.2  # about half the chips are centred, half of those on it
    assert np.array_equal(ChipLoader([raster], units, 32, norm, sampling=Sampling("balanced"))
                          .epoch_rows(4, 50), loader.epoch_rows(4, 50))  # seeded: resumable


def test_a_timed_multi_worker_run_follows_the_share_all_workers_agree_on() -> None:
    """Each worker's clock differs; the learning rate and the end follow the agreed share."""
    from geofuse.training.fit import Budget

    budget = Budget(3e-3, 0.05, seconds=100.0, spent=30.0)  # this worker: 30 % spent
    assert budget.fraction(0) == pytest.approx(0.30, abs=0.01)
    budget.agree = lambda share: (share + 1.0) / 2  # the other worker says 100 %
    assert budget.fraction(0) == pytest.approx(0.65, abs=0.01)
    budget.agree = lambda share: 1.0
    assert budget.fraction(0) == 1.0  # all stop at the same step
    steps = Budget(3e-3, 0.05, steps=10)
    steps.agree = lambda share: 1.0  # step budgets are the same everywhere: never asked
    assert steps.fraction(5) == 0.5


def test_best_weights_and_early_stopping_act_only_in_the_second_half(tmp_path: Path) -> None:
    """A lucky early epoch never wins the pick; --patience counts from the middle of the run."""
    import keras

    from geofuse.training.fit import Budget, RunState
    from geofuse.training.state import Selection

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    state = RunState(tmp_path, Selection("val_mean_iou", patience=2, min_fraction=0.5),
                     Budget(3e-3, 0.05, steps=10), epochs=10)
    state.set_model(model)
    scores = [0.9, 0.5, 0.5, 0.6, 0.7, 0.6, 0.5, 0.8, 0.8, 0.8]  # one step per epoch
    stopped = None
    for epoch, score in enumerate(scores):
        model.optimizer.iterations.assign(epoch + 1)
        state.on_epoch_end(epoch, {"val_mean_iou": score})
        if model.stop_training:
            stopped = epoch + 1
            break
    assert state.best_epoch == 5  # 0.7 in the second half, not the 0.9 of epoch 1
    assert stopped == 7  # two epochs without improvement after it
    assert (tmp_path / "best.npz").exists() and (tmp_path / "last.npz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("ema", ["0", "0.99"])
def test_ema_writes_the_averaged_weights(tmp_path: Path, ema: str) -> None:
    """--ema: the model file gets the moving average, the checkpoint keeps the raw weights."""
    from geofuse.model.modelfile import load_model
    from geofuse.training.fit import _unpack

    tiles = make_tiles(tmp_path / "tiles", count=4)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--ema", ema, *TINY)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "m.train" / "checkpoints" / "last.npz") as data:
        raw = _unpack(data, "w")
    model = load_model(out).model
    trainable = {id(v) for v in model.trainable_weights}
    written = [(id(v) in trainable, np.asarray(v)) for v in model.weights]
    assert len(written) == len(raw)
    moved = [not np.allclose(w, r) for (t, w), r in zip(written, raw, strict=True) if t]
    fixed = [np.array_equal(w, r) for (t, w), r in zip(written, raw, strict=True) if not t]
    assert all(fixed)  # normalisation statistics are not averaged
    if ema == "0":
        assert not any(moved)
    else:  # 6 steps averaged with momentum 0.99: still close to the initial weights
        assert sum(moved) >= 0.9 * len(moved)


@pytest.mark.parametrize(("change", "named"), [(["--ema", "0.9"], "ema 0.0 (received 0.9)"),
                                               (["--filters", "6"], "architecture")])
def test_resume_with_other_settings_says_so(tmp_path: Path, change: list[str],
                                            named: str) -> None:
    """--resume with another network or optimizer: one clear error, the model file untouched."""
    tiles = make_tiles(tmp_path / "tiles", count=4)
    out = tmp_path / "m.keras"
    assert run_train("--tiles", tiles, "--out", out, *TINY).exit_code == 0
    before = out.read_bytes()
    result = run_train("--tiles", tiles, "--out", out, *TINY, "--resume", *change)
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert "last.npz" in message and named in message, message
    assert "Traceback" not in result.output
    assert out.read_bytes() == before


def test_class_sets_in_the_loss() -> None:
    """Exact labels give CE + Dice as written out here; a set pixel only asks for its set."""
    from geofuse.training.labels import SET_BASE
    from geofuse.training.losses import SegmentationLoss

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, (2, 6, 6)).astype(np.uint8)
    y[0, 0] = 255
    p = rng.dirichlet(np.ones(3), (2, 6, 6)).astype(np.float32)
    w = np.array([1.0, 2.0, 0.5], np.float32)
    valid = y < 3
    onehot = np.eye(3, dtype=np.float32)[np.where(valid, y, 0)] * valid[..., None]
    ce = -(np.log(np.clip((p * onehot).sum(-1), 1e-7, 1)) * w[np.where(valid, y, 0)] * valid)
    ce = ce.sum() / (w[np.where(valid, y, 0)] * valid).sum()
    inter = (p * onehot).sum((0, 1, 2))
    denom = (p * valid[..., None]).sum((0, 1, 2)) + onehot.sum((0, 1, 2))
    dice = 1 - ((2 * inter + 1) / (denom + 1)).mean()
    loss = SegmentationLoss(3, "ce+dice", list(w), class_sets=[(0, 2)])
    assert float(loss(y, p)) == pytest.approx(ce + dice, rel=1e-5)

    sets = np.full((2, 6, 6), SET_BASE, np.uint8)  # every pixel: "class 0 or class 2"
    q = p.copy()
    q[..., 0], q[..., 2] = p[..., 2], p[..., 0]  # the same set mass, shared otherwise
    assert float(loss(sets, q)) == pytest.approx(float(loss(sets, p)), rel=1e-6)
    worse = p.copy()
    worse[..., 1] += 0.5  # mass on the class the set excludes
    worse /= worse.sum(-1, keepdims=True)
    assert float(loss(sets, worse)) > float(loss(sets, p)) + 0.1
    plain = SegmentationLoss(3, "ce+dice", list(w))  # without the set: those pixels ignored
    assert float(plain(sets, worse)) == pytest.approx(float(plain(sets, p)), abs=1e-6)
    restored = SegmentationLoss.from_config(loss.get_config())
    assert float(restored(sets, worse)) == pytest.approx(float(loss(sets, worse)), rel=1e-6)


def test_a_building_only_set_trains_with_a_class_set(tmp_path: Path) -> None:
    """Half the masks only say building / not building: "not building" is a class set."""
    tiles = make_tiles(tmp_path / "t", count=4, size=48)
    exact = 0
    for i, mask in enumerate(sorted((tiles / "masks").iterdir())):
        with rasterio.open(mask, "r+") as ds:
            a = ds.read(1)
            if i % 2:
                a[a != 1] = 9  # background or water, not said which
                ds.write(a, 1)
            exact += int((a < 3).sum())
    sets = {"sets": [{"name": "not building", "classes": ["background", "water"], "value": 9}]}
    classes = write_classes(tmp_path / "classes.json", sets)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--classes", classes, "--val-fraction", "0",
                       "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    assert sum(metrics["class_pixels_train"].values()) == exact  # set pixels: not a class
    assert out.exists()

    bad = write_classes(tmp_path / "bad.json",
                        {"sets": [{"name": "x", "classes": ["background", "sea"], "value": 9}]})
    failed = run_train("--tiles", tiles, "--classes", bad, "--out", tmp_path / "n.keras", *TINY)
    assert failed.exit_code == 1 and not (tmp_path / "n.keras").exists()
    line = failed.output.strip().splitlines()[-1]
    assert "bad.json" in line and "'sea'" in line and "class set" in line


def test_partial_labels_train_beside_full_ones_with_their_own_coding(tmp_path: Path) -> None:
    """A building-only folder (its own coding, with a set) trains beside a fully labelled one."""
    from geofuse.errors import ConfigError
    from geofuse.training.config import LabelOptions
    from geofuse.training.labels import LabelCoding, load_classes
    from geofuse.training.train import TilesSource, TrainConfig, train

    full = make_tiles(tmp_path / "full", count=3, size=48)
    partial = make_tiles(tmp_path / "partial", count=3, size=48, seed=7)
    for mask in (partial / "masks").iterdir():
        with rasterio.open(mask, "r+") as ds:
            a = ds.read(1)
            ds.write(np.where(a == 1, 255, 0).astype(np.uint8), 1)  # 255 building, 0 not
    classes, _ = load_classes(write_classes(tmp_path / "classes.json"))
    own = LabelCoding(classes=3, values=(200, 255, 201), sets=((0, 2),), set_values=(0,))
    common = dict(labels=LabelOptions(classes=classes), arch=Architecture(depth=2, base_filters=4),
                  patch=32, batch_size=8, epochs=2, steps_per_epoch=3, val_fraction=0.0)
    result = train(TrainConfig(
        sources=(TilesSource(full), TilesSource(partial, coding=own)),
        out=tmp_path / "m.keras", **common))
    buildings = 0
    for mask in (partial / "masks").iterdir():
        with rasterio.open(mask) as ds:
            buildings += int((ds.read(1) == 255).sum())
    exact = 3 * 48 * 48 + buildings  # every pixel of the full folder, buildings of the other
    assert sum(result.metrics["class_pixels_train"].values()) == exact
    other = LabelCoding(classes=3, values=(200, 255, 201), sets=((0, 1),), set_values=(0,))
    with pytest.raises(ConfigError, match="same class sets"):
        train(TrainConfig(sources=(TilesSource(partial, coding=own),
                                   TilesSource(full, coding=other)),
                          out=tmp_path / "n.keras", **common))


@pytest.mark.parametrize(("choice", "power"), [("auto", 0.5), ("inverse", 1.0), ("none", 0.0)])
def test_class_weightings_follow_the_class_frequencies(tmp_path: Path, choice: str,
                                                       power: float) -> None:
    """--class-weights auto/inverse/none: freq ** -power, mean 1, capped at 10 (metrics.json)."""
    tiles = make_tiles(tmp_path / "tiles", count=4)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--class-weights", choice, *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    counts = np.array(list(metrics["class_pixels_train"].values()), np.float64)
    assert (counts > 0).sum() >= 2
    present = counts > 0
    expected = np.ones_like(counts)
    w = (counts[present] / counts[present].sum()) ** -power
    expected[present] = np.minimum(w / w.mean(), 10.0)
    np.testing.assert_allclose(metrics["class_weights"], expected, atol=1e-4)
    if power:  # the tiles' classes are unbalanced: the weightings differ from each other
        assert np.ptp(metrics["class_weights"]) > 0.2 * power


def test_unknown_class_weighting_is_a_one_line_error(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2)
    result = run_train("--tiles", tiles, "--out", tmp_path / "m.keras", "--class-weights",
                       "inverted", *TINY)
    assert result.exit_code == 2
    assert "expected auto, inverse, none or numbers, got 'inverted'" in result.output
    assert not (tmp_path / "m.keras").exists()


def building_scene(tmp_path: Path, image: np.ndarray, labels: np.ndarray) -> tuple:
    """A labelled raster of background and building (nodata 0) and its one scanned unit."""
    from geofuse.model.spec import ClassInfo
    from geofuse.training.datasets import LabelledRaster, make_units, scan
    from geofuse.training.labels import LabelCoding

    write_geotiff(tmp_path / "s.tif", image, nodata=0)
    write_geotiff(tmp_path / "s_labels.tif", labels)
    raster = LabelledRaster(tmp_path / "s.tif", tmp_path / "s_labels.tif",
                            LabelCoding(classes=2), [ClassInfo(0, "background"),
                                                     ClassInfo(1, "building")])
    units = make_units([raster], ["scene"], labels.shape[0])
    scan([raster], units, 2, 1 / 255)
    return raster, units


def test_zoom_resamples_image_labels_and_validity_together(tmp_path: Path) -> None:
    """``zoom``: chips cover windows of other sizes, resampled to the patch, still aligned."""
    from geofuse.model.spec import Normalization
    from geofuse.training.chips import Augmentation, ChipLoader, sample_chip

    ramp = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, 8, 1), np.float32)
    same = sample_chip(ramp, np.zeros((8, 8), np.uint8), np.ones((8, 8), bool), 8)
    assert np.array_equal(same[0], ramp)  # same size: unchanged
    half = sample_chip(ramp, np.zeros((8, 8), np.uint8), np.ones((8, 8), bool), 4)[0]
    np.testing.assert_allclose(half[:, 0, 0], [0.5, 2.5, 4.5, 6.5])  # pixel centres aligned

    labels = np.zeros((128, 128), np.uint8)
    labels[48:80, 48:80] = 1  # a 32-px building in the middle
    image = np.where(labels == 1, 200, 20).astype(np.uint8)[None]
    image[0, 0, :] = 0  # nodata row at the top
    raster, units = building_scene(tmp_path, image, labels)
    norm = Normalization(mean=(0.0,), std=(1.0,), scale=1 / 255)
    areas = set()
    for zoom in (0.0, 0.5):
        loader = ChipLoader([raster], units, 48, norm, Augmentation(zoom=zoom, jitter=0.0))
        rows = np.array([[0, 40, 40, 0, seed] for seed in range(12)], np.int64)
        xs, ys = loader.load(rows)
        assert xs.shape == (12, 48, 48, 1) and ys.shape == (12, 48, 48)
        bright = xs[..., 0] > (20 + 200) / 2 / 255
        assert ((ys == 1) == bright).mean() > 0.97  # labels follow the resampled image
        counts = (ys == 1).sum(axis=(1, 2))
        if zoom:
            assert counts.max() / counts.min() > 1.4  # the building's size changes with zoom
        else:
            assert len(set(counts.tolist())) == 1
            areas.add(int(counts[0]))
    assert areas == {32 * 32}
    # zoomed-out chips at the top are moved onto the nodata row, which stays 0 (invalid)
    loader = ChipLoader([raster], units, 48, norm, Augmentation(zoom=1.0, jitter=0.0))
    xs, _ = loader.load(np.array([[0, 0, 40, 0, seed] for seed in range(12)], np.int64))
    top = xs[:, 0, :, 0]
    nodata = (top == 0).all(axis=1)
    assert 0 < nodata.sum() < 12
    assert (top[~nodata] > 0).all()


def test_zoom_option_trains_and_is_recorded(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--zoom", "0.25", *TINY)
    assert result.exit_code == 0, result.output
    from geofuse.model.modelfile import load_model

    assert load_model(out).info.provenance["training_config"]["zoom"] == 0.25
    bad = run_train("--tiles", tiles, "--out", tmp_path / "n.keras", "--zoom", "2", *TINY)
    assert bad.exit_code == 2 and "--zoom" in bad.output
    assert not (tmp_path / "n.keras").exists()


def test_rotate_turns_image_labels_and_validity_together(tmp_path: Path) -> None:
    """``rotate``: chips turned by any angle; labels follow the image; outside corners invalid."""
    from geofuse.model.spec import Normalization
    from geofuse.training.chips import Augmentation, ChipLoader, sample_chip
    from geofuse.training.labels import IGNORE

    x = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    lab, ok = (x[..., 0] % 3).astype(np.uint8), np.ones((8, 8), bool)
    turned = sample_chip(x, lab, ok, 8, 1.0, np.pi / 2)
    assert np.allclose(turned[0], np.rot90(x, -1), atol=1e-4)  # a quarter turn is exact
    assert np.array_equal(turned[1], np.rot90(lab, -1)) and turned[2].all()
    crop = sample_chip(x, lab, ok, 4, 1.0, 0.0)
    assert np.allclose(crop[0], x[2:6, 2:6])  # no turn: the centre
    corner = sample_chip(x, lab, ok, 8, 1.0, np.pi / 4)  # 45 degrees on a chip as large
    assert not corner[2][0, 0] and corner[1][0, 0] == IGNORE and corner[0][0, 0, 0] == 0
    assert corner[2][4, 4]

    labels = np.zeros((160, 160), np.uint8)
    labels[64:96, 64:96] = 1  # a 32-px building in the middle
    image = np.where(labels == 1, 200, 20).astype(np.uint8)[None]
    raster, units = building_scene(tmp_path, image, labels)
    norm = Normalization(mean=(0.0,), std=(1.0,), scale=1 / 255)
    loader = ChipLoader([raster], units, 48, norm, Augmentation(rotate=45.0, jitter=0.0))
    xs, ys = loader.load(np.array([[0, 56, 56, 0, seed] for seed in range(16)], np.int64))
    bright = xs[..., 0] > (20 + 200) / 2 / 255
    assert ((ys == 1) == bright).mean() > 0.97  # labels follow the turned image
    counts = (ys == 1).sum(axis=(1, 2))
    assert np.all(np.abs(counts / (32 * 32) - 1) < 0.1)  # a turn keeps the building's area
    boxes = []
    for y in ys:
        r, c = np.nonzero(y == 1)
        boxes.append((np.ptp(r) + 1) * (np.ptp(c) + 1) / len(r))
    assert max(boxes) > 1.5 and min(boxes) < 1.2  # some turned far, some hardly
    assert (ys != IGNORE).all()  # the window read around each chip covers its corners


def test_shadow_darkens_a_soft_ellipse_of_some_chips_and_leaves_labels(tmp_path: Path) -> None:
    from geofuse.model.spec import Normalization
    from geofuse.training.chips import Augmentation, ChipLoader

    labels = np.zeros((96, 96), np.uint8)
    labels[32:64, 32:64] = 1
    image = np.full((2, 96, 96), 200, np.uint8)
    image[:, 0, :] = 0  # nodata row
    raster, units = building_scene(tmp_path, image, labels)
    norm = Normalization(mean=(0.5, 0.25), std=(0.2, 0.1), scale=1 / 255)
    rows = np.array([[0, 0, 16, 0, seed] for seed in range(40)], np.int64)
    plain, labels_plain = ChipLoader([raster], units, 64, norm,
                                     Augmentation(jitter=0.0)).load(rows)
    xs, ys = ChipLoader([raster], units, 64, norm,
                        Augmentation(jitter=0.0, shadow=0.5)).load(rows)
    assert np.array_equal(ys, labels_plain)  # labels unchanged
    raw = xs * np.array(norm.std, np.float32) + np.array(norm.mean, np.float32)  # w = x*std+mean
    gain = raw / (200 / 255)
    valid = plain[..., 0] != 0
    np.testing.assert_allclose(gain[..., 0][valid], gain[..., 1][valid], atol=1e-4)  # all bands
    assert (xs[~valid] == 0).all()  # the nodata row stays neutral
    gain = np.where(valid, gain[..., 0], 1.0)
    darkest = gain.min(axis=(1, 2))
    shaded = darkest < 0.999
    assert 10 < shaded.sum() < 30  # about half of the chips
    assert np.all((darkest[shaded] > 0.3 - 1e-4) & (darkest[shaded] < 0.7 + 1e-4))
    share = (gain[shaded] < 0.999).mean(axis=(1, 2))
    assert share.min() > 0.01 and share.max() < 0.9  # part of a chip, not all of it
    soft = (gain[shaded] > darkest[shaded, None, None] + 1e-3) & (gain[shaded] < 0.999)
    assert soft.any(axis=(1, 2)).all()  # a soft edge


def test_rotate_shadow_and_cutmix_options_train_and_are_recorded(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2)
    out = tmp_path / "m.keras"
    result = run_train("--tiles", tiles, "--out", out, "--rotate", "30", "--shadow", "0.5",
                       "--cutmix", "0.5", *TINY)
    assert result.exit_code == 0, result.output
    from geofuse.model.modelfile import load_model

    recorded = load_model(out).info.provenance["training_config"]
    assert (recorded["rotate"], recorded["shadow"], recorded["cutmix"]) == (30.0, 0.5, 0.5)
    for option, value in (("--rotate", "60"), ("--shadow", "1.5"), ("--cutmix", "2")):
        bad = run_train("--tiles", tiles, "--out", tmp_path / "n.keras", option, value, *TINY)
        assert bad.exit_code == 2 and option in bad.output
        assert not (tmp_path / "n.keras").exists()


@pytest.mark.slow
def test_a_generous_time_limit_gives_the_same_model_for_a_seed(tmp_path: Path) -> None:
    # Two processes, one seed, a time limit far beyond the data's steps: the schedule follows
    # the steps, so the clock (tracing, load) does not change the weights. Before, the first
    # steps' learning rate followed the clock (tracing took a tenth of the 30 s) and the
    # two models differed.
    tiles = make_tiles(tmp_path / "tiles", count=4, size=48)
    models = []
    for k in range(2):
        out = tmp_path / f"m{k}.keras"
        proc = subprocess.run(
            [sys.executable, "-m", "geofuse.cli", "train", "--tiles", str(tiles), "--out",
             str(out), "--time-limit", "30s", "--seed", "3", "--members", "1",
             "--depth", "2", "--filters", "4", "--patch", "32", "--batch-size", "8",
             "--epochs", "4", "--steps", "10"],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        assert "step 40/40" in proc.stdout + proc.stderr
        models.append(out)
    from geofuse.model.modelfile import load_model

    first, second = (load_model(m).model.get_weights() for m in models)
    assert len(first) == len(second) > 10
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_deep_supervision_adds_full_resolution_heads_weighed_in_the_loss() -> None:
    import tensorflow as tf

    from geofuse.model.network import build_unet, deeply_supervised, supervision_weights
    from geofuse.model.spec import Architecture, ModelSpec
    from geofuse.training.losses import ConfusionMetrics, SegmentationLoss

    spec = ModelSpec(bands=2, classes=3, arch=Architecture(depth=3, base_filters=4))
    network = build_unet(spec, patch=32)
    assert deeply_supervised(network, spec, 0.0) is network  # off: the network itself
    model = deeply_supervised(network, spec, 0.5)
    assert supervision_weights(3, 0.5) == [1.0, 0.5, 0.25]
    assert model.get_layer("dec1") is network.get_layer("dec1")  # shared, not copied
    x = np.random.default_rng(0).random((2, 32, 32, 2), np.float32)
    out = np.asarray(model(x))
    assert out.shape == (2, 32, 32, 9)  # the network's classes, then a head per level 1, 2
    np.testing.assert_allclose(out[..., :3], np.asarray(network(x)), atol=1e-6)
    np.testing.assert_allclose(out.reshape(2, 32, 32, 3, 3).sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(out[..., 3:6], out[..., 6:])  # each level its own head

    y = np.random.default_rng(1).integers(0, 3, (2, 32, 32)).astype(np.uint8)
    one = SegmentationLoss(3)
    parts = [float(one(y, out[..., 3 * k:3 * k + 3])) for k in range(3)]
    joined = float(SegmentationLoss(3, heads=[1.0, 0.5, 0.25])(y, out))
    assert joined == pytest.approx((parts[0] + 0.5 * parts[1] + 0.25 * parts[2]) / 1.75,
                                   rel=1e-5)
    metric, plain = ConfusionMetrics(["a", "b", "c"]), ConfusionMetrics(["a", "b", "c"])
    metric.update_state(tf.constant(y), tf.constant(out))  # scores the network's output only
    plain.update_state(tf.constant(y), tf.constant(out[..., :3]))
    assert float(metric.result()["mean_iou"]) == float(plain.result()["mean_iou"])
    with pytest.raises(ValueError, match="head weights"):
        SegmentationLoss(3, heads=[])


def test_deep_supervision_trains_and_writes_the_network_alone(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2)
    from geofuse.model.modelfile import load_model

    weights = {}
    for name, extra in (("plain", ()), ("deep", ("--deep-supervision", "0.5"))):
        out = tmp_path / f"{name}.keras"
        result = run_train("--tiles", tiles, "--out", out, "--seed", "1", *extra, *TINY)
        assert result.exit_code == 0, result.output
        loaded = load_model(out)
        assert not [layer.name for layer in loaded.model.layers if "aux" in layer.name]
        assert loaded.model.output_shape[-1] == loaded.info.spec.classes
        weights[name] = loaded.model.get_weights()
    recorded = load_model(tmp_path / "deep.keras").info.provenance["training_config"]
    assert recorded["deep_supervision"] == 0.5
    assert [w.shape for w in weights["plain"]] == [w.shape for w in weights["deep"]]
    # the heads' losses reached the decoder: same seed and data, other weights
    assert not all(np.array_equal(a, b)
                   for a, b in zip(weights["plain"], weights["deep"], strict=True))
    bad = run_train("--tiles", tiles, "--out", tmp_path / "n.keras", "--deep-supervision", "1",
                    *TINY)
    assert bad.exit_code == 2 and "--deep-supervision" in bad.output
    assert not (tmp_path / "n.keras").exists()


def test_cutmix_pastes_a_rectangle_of_another_chip_with_its_labels() -> None:
    from geofuse.training.chips import ChipLoader

    loader = ChipLoader.__new__(ChipLoader)
    loader.patch, loader.cutmix = 32, 1.0
    n = 6
    xs = np.repeat(np.arange(n, dtype=np.float32), 32 * 32).reshape(n, 32, 32, 1)
    ys = np.repeat(np.arange(n, dtype=np.uint8) + 10, 32 * 32).reshape(n, 32, 32)
    seeds = np.arange(100, 100 + n)
    mixed_x, mixed_y = xs.copy(), ys.copy()
    loader.mix(mixed_x, mixed_y, seeds)
    for i in range(n):
        pasted = mixed_x[i, ..., 0] != i
        rows, cols = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
        box = np.zeros_like(pasted)
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        assert np.array_equal(pasted, box)  # one rectangle
        assert 0.25 * 1024 * 0.6 <= pasted.sum() <= 0.5 * 1024 * 1.4
        assert min(len(rows), len(cols)) >= 8
        source = np.unique(mixed_x[i, ..., 0][pasted])
        assert len(source) == 1 and source[0] != i  # from one other chip, as it was
        assert np.array_equal(mixed_y[i] - 10, mixed_x[i, ..., 0].astype(np.uint8))
    again_x, again_y = xs.copy(), ys.copy()
    loader.mix(again_x, again_y, seeds)  # the chips' seeds decide: the same mix
    assert np.array_equal(again_x, mixed_x) and np.array_equal(again_y, mixed_y)
    loader.cutmix = 0.0
    untouched = xs.copy()
    loader.mix(untouched, ys.copy(), seeds)
    assert np.array_equal(untouched, xs)
