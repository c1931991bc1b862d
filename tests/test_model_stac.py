"""A model as a STAC Item of the Machine Learning Model extension: `info --stac`, `export`.

Validated offline against the schemas pystac ships (see :func:`tests.helpers.stac_validate`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.model.modelfile import read_info
from tests.helpers import ROOT, smooth_rgb, stac_extension, stac_validate, write_geotiff

CLASSES = ("background", "building", "water")


@pytest.fixture(scope="module")
def model(tiny_models) -> Path:
    return tiny_models(class_names=CLASSES)


def classes_of(model: Path) -> list[tuple[int, str, str]]:
    return [(c.id, c.name, c.color.lstrip("#").upper()) for c in read_info(model).classes]


def test_info_stac_prints_the_model_mlm_item_without_tensorflow(model: Path) -> None:
    code = (
        "import sys, json; from click.testing import CliRunner; from geofuse.cli import main;"
        f"r = CliRunner().invoke(main, ['info', {str(model)!r}, '--stac']);"
        "print(json.dumps({'code': r.exit_code, 'out': r.output,"
        " 'tf': 'tensorflow' in sys.modules or 'keras' in sys.modules}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["code"] == 0 and answer["tf"] is False
    data = json.loads(answer["out"])
    assert stac_validate(data) == ([stac_extension("mlm", data), stac_extension("file", data)], [])

    info = read_info(model)
    props = data["properties"]
    for field in (
        "mlm:name",
        "mlm:architecture",
        "mlm:tasks",
        "mlm:input",
        "mlm:output",
        "mlm:framework",
        "mlm:accelerator",
        "mlm:total_parameters",
    ):
        assert field in props, field
    assert props["mlm:tasks"] == ["semantic-segmentation"]
    assert props["mlm:framework"] == "Keras"
    (inp,) = props["mlm:input"]
    assert inp["bands"] == list(info.band_names)
    assert inp["input"] == {
        "shape": [-1, -1, -1, info.spec.bands],
        "dim_order": ["batch", "height", "width", "channel"],
        "data_type": "float32",
    }
    # the value scaling is the model's normalisation, on raw values
    raw = np.array([0.0, 17.0, 255.0])
    norm = info.normalization
    for b, scaling in enumerate(inp["value_scaling"]):
        assert scaling["type"] == "z-score"
        expected = (raw * norm.scale + norm.offset - norm.mean[b]) / norm.std[b]
        assert np.allclose((raw - scaling["mean"]) / scaling["stddev"], expected)
    (out,) = props["mlm:output"]
    assert out["result"]["shape"] == [-1, -1, -1, info.spec.classes]
    assert [
        (c["value"], c["name"], c["color_hint"]) for c in out["classification:classes"]
    ] == classes_of(model)
    asset = data["assets"]["model"]
    assert "mlm:model" in asset["roles"] and asset["mlm:artifact_type"]
    assert Path(asset["href"]) == model.absolute()
    import keras  # the parameter count read from the weights matches Keras' own

    assert (
        props["mlm:total_parameters"]
        == keras.saving.load_model(model, compile=False).count_params()
    )


def test_info_stac_refuses_a_scene(tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "scene.tif", smooth_rgb(1, 16, 16))
    result = CliRunner().invoke(main, ["info", str(scene), "--stac"])
    assert result.exit_code == 1
    assert f"{scene}: not a .keras model file" in result.output


def test_export_writes_an_mlm_item_of_its_files(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "served"
    result = CliRunner().invoke(main, ["export", str(model), str(out), "--format", "openvino"])
    assert result.exit_code == 0, result.output
    item = pystac.Item.from_file(str(out / "stac-item.json"))
    assert item.assets["model"].href == "./model.xml"
    assert Path(item.assets["model"].get_absolute_href()) == out / "model.xml"
    assert item.assets["model"].extra_fields["mlm:artifact_type"] == "openvino.save_model"
    assert Path(item.assets["weights"].get_absolute_href()).is_file()
    assert item.properties["mlm:framework"] == "OpenVINO"
    exported = json.loads((out / "geofuse.json").read_text())
    assert item.properties["mlm:framework_version"] == exported["versions"]["openvino"]
    data = item.to_dict(include_self_link=False)
    assert stac_validate(data)[1] == []
