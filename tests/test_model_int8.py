"""`--precision int8`: calibration chips in the model file, the int8 network, auto, export."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.model import ovimport, runtime
from geofuse.model.calibration import (
    AGREEMENT_MIN,
    IOU_CHANGE_MAX,
    Calibration,
    add_calibration,
    folder_calibration,
    int8_evidence,
    model_calibration,
    record_int8_check,
)
from geofuse.model.modelfile import (
    CALIBRATION_MEMBER,
    array_bytes,
    load_model,
    replace_members,
)
from geofuse.model.quantize import nncf_available
from tests.helpers import SAMPLES, make_tiles, write_geotiff

TINY_TRAIN = [
    "--depth",
    "2",
    "--filters",
    "4",
    "--patch",
    "32",
    "--batch-size",
    "8",
    "--epochs",
    "1",
    "--steps",
    "2",
    "--quiet",
]


def _chips(seed: int, count: int = 4, side: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8)


@pytest.fixture
def calibrated(tiny_models, tmp_path: Path) -> Path:
    """A copy of a tiny model file, carrying calibration chips."""
    path = tmp_path / "tiny.keras"
    path.write_bytes(tiny_models(bands=3, classes=3).read_bytes())
    return add_calibration(path, _chips(3))


def _segment(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["segment", *map(str, args)])


def _mask(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.tags()


# --------------------------------------------------------------------------- the chips


@pytest.mark.slow
def test_a_trained_model_carries_calibration_chips_from_its_training_tiles(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=6)
    out = tmp_path / "model.keras"
    result = CliRunner().invoke(
        main, ["train", "--tiles", str(tiles), "--out", str(out), *TINY_TRAIN]
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as archive:
        assert CALIBRATION_MEMBER in archive.namelist()
    chips = model_calibration(out).chips
    assert chips.dtype == np.uint8 and chips.shape[1:] == (64, 64, 3)  # whole 64² tiles
    held_out = {
        Path(p).name
        for p in json.loads((tmp_path / "model.train" / "metrics.json").read_text())["held_out"]
    }
    training = {}
    for tile in sorted((tiles / "images").iterdir()):
        with rasterio.open(tile) as ds:
            training[tile.name] = np.moveaxis(ds.read(), 0, -1)
    # every chip is a training tile's pixels, never the held-out tile's
    found = [
        next(name for name, image in training.items() if np.array_equal(chip, image))
        for chip in chips
    ]
    assert len(set(found)) == len(chips) == 5 and not set(found) & held_out
    # the same chips always: the same int8 network on every machine and run
    assert model_calibration(out).digest == Calibration.of(chips, "x").digest


def test_int8_without_calibration_chips_fails_in_one_line(tiny_models, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "s.tif", _chips(1, 1, 32)[0].transpose(2, 0, 1))
    model = tiny_models(bands=3, classes=3)
    result = _segment(
        scene, tmp_path / "m.tif", "--model", model, "--precision", "int8", "--tile", "32", "-q"
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {model}: expected calibration chips in the model file for precision 'int8' "
        "(models trained by geofuse carry them). Received: none; name a folder of "
        "calibration images"
    )
    assert not (tmp_path / "m.tif").exists()
    result = _segment(
        scene,
        tmp_path / "m.tif",
        "--model",
        model,
        "--precision",
        "int8",
        "--runtime",
        "tensorflow",
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: Expected precision 'f32' or 'auto' with runtime 'tensorflow'. Received: 'int8'"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _segment(
        scene,
        tmp_path / "m.tif",
        "--model",
        model,
        "--precision",
        "int8",
        "--calibration",
        empty,
        "-q",
    )
    assert result.exit_code == 1
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith(f"Error: {empty}: expected calibration images (.tif")
    )


# --------------------------------------------------------------------------- the network


def test_int8_is_cached_per_calibration_and_serves_any_tile_shape(
    calibrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOFUSE_CACHE_DIR", str(tmp_path / "cache"))
    loaded = load_model(calibrated)
    # inputs like the chips' (uint8 scaled by 1/255): the calibrated ranges hold
    x = np.random.default_rng(0).uniform(size=(2, 32, 48, 3)).astype(np.float32)
    int8 = runtime.choose_runtime("openvino", "int8")
    predict = runtime.make_predictor(loaded, 2, (32, 48), int8)
    assert predict.choice.label.endswith(" int8")
    probabilities = predict(x)
    assert probabilities.shape == (2, 32, 48, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3)
    f32 = runtime.make_predictor(loaded, 2, (32, 48), runtime.choose_runtime("openvino", "f32"))
    assert np.abs(f32(x) - probabilities).max() < 0.05  # an untrained network: close to 1/3
    runtime.make_predictor(loaded, 1, 64, int8)(x[:1, :32, :32].repeat(2, 1).repeat(2, 2))

    def entries() -> list[str]:
        return sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir())

    int8_entries = [
        e
        for e in entries()
        if json.loads((tmp_path / "cache" / "openvino" / e / "entry.json").read_text()).get(
            "precision"
        )
    ]
    assert len(int8_entries) == 1  # one int8 network for every tile shape
    # a calibration folder: its own entry, the same for the same images
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i in range(3):
        write_geotiff(folder / f"c{i}.tif", _chips(10 + i, 1, 40)[0].transpose(2, 0, 1))
    named = runtime.choose_runtime("openvino", "int8", calibration=folder)
    runtime.make_predictor(loaded, 2, (32, 48), named)
    runtime.make_predictor(loaded, 2, (32, 48), named)
    manifests = [
        json.loads((tmp_path / "cache" / "openvino" / e / "entry.json").read_text())
        for e in entries()
    ]
    sources = sorted(m["calibration"] for m in manifests if m.get("precision") == "int8")
    assert sources == sorted(["model file", str(folder)])
    assert {m["calibration_sha256"] for m in manifests if m.get("precision")} == {
        model_calibration(calibrated).digest,
        folder_calibration(folder, loaded.info).digest,
    }


def test_export_int8_writes_an_ir_openvino_reads(calibrated: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", str(calibrated), str(out), "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert f"{out}: openvino int8 export of tiny.keras" in result.output
    meta = json.loads((out / "geofuse.json").read_text())
    assert meta["precision"] == "int8" and meta["versions"]["nncf"]
    assert meta["calibration_sha256"] == model_calibration(calibrated).digest
    core = ovimport.import_openvino().Core()
    network = core.read_model(str(out / "model.xml"))
    types = {op.get_type_name() for op in network.get_ops()}
    assert "FakeQuantize" in types  # the quantized network, not the f32 one
    compiled = core.compile_model(network, "CPU")
    x = np.random.default_rng(1).uniform(size=(3, 40, 24, 3)).astype(np.float32)
    probabilities = compiled(x)[0]  # any batch and tile size
    assert probabilities.shape == (3, 40, 24, 3)
    served = runtime.make_predictor(
        load_model(calibrated), 3, (40, 24), runtime.choose_runtime("openvino", "int8")
    )(x)
    np.testing.assert_allclose(probabilities, served, atol=2e-3)
    refused = CliRunner().invoke(
        main,
        ["export", str(calibrated), str(tmp_path / "o"), "--format", "onnx", "--precision", "int8"],
    )
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1] == (
        "Error: Expected format 'openvino' for precision 'int8'. Received: 'onnx'"
    )


# --------------------------------------------------------------------------- auto


def _passing(agreement: float = 0.995, change: float = 0.004) -> dict:
    return {"set": {"agreement": agreement, "iou_change": {"a": change, "mean": -change}}}


def test_auto_picks_int8_only_where_the_model_records_a_negligible_cost(
    calibrated: Path, tmp_path: Path
) -> None:
    machine = ovimport.probe_openvino().int8 and nncf_available()
    assert int8_evidence(calibrated) == (False, "no int8 record in the model file")
    assert runtime.choose_runtime(model=calibrated).precision != "int8"
    record_int8_check(calibrated, _passing(), {"measured": "test"})
    assert int8_evidence(calibrated)[0]
    assert (runtime.choose_runtime(model=calibrated).precision == "int8") == machine
    assert runtime.choose_runtime("openvino", "f32", model=calibrated).precision == "f32"
    assert runtime.choose_runtime("tensorflow", model=calibrated).runtime == "tensorflow"
    scene = write_geotiff(tmp_path / "s.tif", _chips(2, 1, 48)[0].transpose(2, 0, 1))
    result = _segment(scene, tmp_path / "auto.tif", "--model", calibrated, "--tile", "32")
    assert result.exit_code == 0, result.output
    expected = "int8" if machine else runtime.choose_runtime().precision
    assert f"runtime: openvino {ovimport.probe_openvino().version} {expected}" in result.output
    assert _mask(tmp_path / "auto.tif")[1]["GEOFUSE_PRECISION"] == expected
    for sets, why in [
        (_passing(agreement=AGREEMENT_MIN - 0.001), "agrees with f32 on 98.4% of set"),
        (_passing(change=IOU_CHANGE_MAX + 0.001), "moves an IoU of set by 0.011"),
    ]:
        record_int8_check(calibrated, sets, {})
        assert int8_evidence(calibrated) == (False, f"int8 {why}")
        assert runtime.choose_runtime(model=calibrated).precision != "int8"
    record_int8_check(calibrated, _passing(), {})
    # other chips than those the record was measured with
    replace_members(calibrated, {CALIBRATION_MEMBER: array_bytes(_chips(4))})
    assert int8_evidence(calibrated) == (
        False,
        "the int8 record was measured with other calibration chips",
    )


# --------------------------------------------------------------------------- the default model


@pytest.mark.slow
def test_int8_agrees_with_f32_on_the_samples_within_the_bound(tmp_path: Path) -> None:
    """The embedded model on the held-out sample scene: class agreement and IoU change."""
    scene, labels = SAMPLES / "scene_b.tif", SAMPLES / "scene_b_labels.tif"
    masks = {}
    for precision in ("f32", "int8"):
        out = tmp_path / f"{precision}.tif"
        result = _segment(scene, out, "--precision", precision, "--runtime", "openvino", "-q")
        assert result.exit_code == 0, result.output
        masks[precision], tags = _mask(out)
        assert tags["GEOFUSE_PRECISION"] == precision
    with rasterio.open(labels) as ds:
        truth = ds.read(1)
    valid = masks["f32"] != 255
    assert (masks["int8"] != 255).sum() == valid.sum()
    agreement = (masks["int8"] == masks["f32"])[valid].mean()
    assert agreement >= AGREEMENT_MIN, agreement
    scored = valid & (truth < 5)
    changes = []
    for c in range(5):
        ious = []
        for precision in ("f32", "int8"):
            pred, true = masks[precision][scored] == c, truth[scored] == c
            ious.append((pred & true).sum() / max(1, (pred | true).sum()))
        changes.append(ious[1] - ious[0])
    assert max(abs(v) for v in changes) <= IOU_CHANGE_MAX, changes
    assert abs(np.mean(changes)) <= IOU_CHANGE_MAX
