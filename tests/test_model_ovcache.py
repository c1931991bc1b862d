"""The OpenVINO cache as a user meets it: `geofuse segment` in a fresh process, f32 and int8.

A cold cache converts once (TensorFlow imported), a warm one serves without TensorFlow or NNCF,
and a truncated or corrupted entry is noticed, rebuilt, and gives the same pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofuse.model.calibration import add_calibration
from tests.helpers import ROOT, write_geotiff

HEAVY = ("tensorflow", "keras", "nncf")
RUN = f"""
import atexit, json, sys
record, sys.argv = sys.argv[1], ["geofuse", *sys.argv[2:]]
atexit.register(lambda: open(record, "w").write(
    json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules))))
from geofuse.cli import main
main()
"""


def _scene(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_geotiff(path, rng.integers(0, 256, (3, 48, 40), dtype=np.uint8))


def _segment(
    scene: Path,
    out: Path,
    model: Path,
    cache: Path,
    *options: str,
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``geofuse segment`` in a fresh interpreter; returns the run and the heavy modules it
    imported."""
    record = out.with_suffix(".modules.json")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN,
            str(record),
            "segment",
            str(scene),
            str(out),
            "--model",
            str(model),
            "--runtime",
            "openvino",
            "--tile",
            "32",
            "--batch-size",
            "2",
            "--overwrite",
            "-q",
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"GEOFUSE_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr
    return done, json.loads(record.read_text())


def _pixels(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.tags()


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "openvino").iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def calibrated(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model file that carries calibration chips."""
    path = tmp_path_factory.mktemp("calibrated") / "tiny.keras"
    path.write_bytes(tiny_models(bands=3, classes=3).read_bytes())
    chips = np.random.default_rng(7).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    return add_calibration(path, chips)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["f32", "int8"])
def test_a_cold_cache_converts_once_then_serves_without_tensorflow(
    calibrated: Path, tmp_path: Path, precision: str
) -> None:
    scene, cache = _scene(tmp_path / "scene.tif"), tmp_path / "cache"
    _, cold = _segment(scene, tmp_path / "cold.tif", calibrated, cache, "--precision", precision)
    assert "tensorflow" in cold  # the first use converts the network
    assert ("nncf" in cold) == (precision == "int8")
    entries = _entries(cache)
    assert len(entries) == 1
    manifest = json.loads((entries[0] / "entry.json").read_text())
    assert manifest.get("precision", "f32") == precision
    done, warm = _segment(scene, tmp_path / "warm.tif", calibrated, cache, "--precision", precision)
    assert warm == []  # neither TensorFlow, Keras nor NNCF
    assert _entries(cache) == entries and "rebuilding" not in done.stderr
    first, tags = _pixels(tmp_path / "cold.tif")
    second, warm_tags = _pixels(tmp_path / "warm.tif")
    np.testing.assert_array_equal(second, first)
    assert tags["GEOFUSE_PRECISION"] == warm_tags["GEOFUSE_PRECISION"] == precision


@pytest.fixture(scope="module")
def warmed(calibrated: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Per precision: a scene, a cache holding its one entry, and the mask it gave."""
    runs = {}
    for precision in ("f32", "int8"):
        folder = tmp_path_factory.mktemp(f"warmed_{precision}")
        scene = _scene(folder / "scene.tif", seed=1)
        _segment(
            scene, folder / "first.tif", calibrated, folder / "cache", "--precision", precision
        )
        runs[precision] = (scene, folder / "cache", _pixels(folder / "first.tif")[0])
    return runs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "damage"),
    [
        ("f32", "truncated weights"),
        ("int8", "truncated weights"),
        ("int8", "zeroed weight bytes"),
        ("f32", "truncated network xml"),
    ],
)
def test_a_damaged_cache_entry_is_rebuilt_and_gives_the_same_pixels(
    calibrated: Path, warmed: dict, tmp_path: Path, precision: str, damage: str
) -> None:
    scene, pristine, first = warmed[precision]
    cache = tmp_path / "cache"
    shutil.copytree(pristine, cache)
    (entry,) = _entries(cache)
    if damage == "truncated weights":  # a copy or a write cut short
        weights = entry / "model.bin"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "zeroed weight bytes":  # same size: only the digest tells
        data = bytearray((entry / "model.bin").read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        (entry / "model.bin").write_bytes(bytes(data))
    else:
        xml = entry / "model.xml"
        xml.write_bytes(xml.read_bytes()[:100])
    done, modules = _segment(
        scene, tmp_path / "second.tif", calibrated, cache, "--precision", precision
    )
    assert "unusable" in done.stderr and "rebuilding it" in done.stderr
    assert "tensorflow" in modules  # rebuilt from the model file
    np.testing.assert_array_equal(_pixels(tmp_path / "second.tif")[0], first)
    (rebuilt,) = _entries(cache)
    assert rebuilt.name == entry.name
    done, modules = _segment(
        scene, tmp_path / "third.tif", calibrated, cache, "--precision", precision
    )
    assert modules == [] and "unusable" not in done.stderr  # the rebuilt entry is trusted
    np.testing.assert_array_equal(_pixels(tmp_path / "third.tif")[0], first)


PREDICT = f"""
import json, sys
import numpy as np
from geofuse import predict_array
from geofuse.config import TilingConfig
image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
result = predict_array(sys.argv[1], image, tiling=TilingConfig(
    tile=32, batch_size=2, runtime="openvino", precision=sys.argv[2]))
np.save(sys.argv[3], result.classes)
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


@pytest.mark.slow
def test_predict_array_from_a_warm_cache_imports_no_tensorflow(
    calibrated: Path, tmp_path: Path
) -> None:
    env = os.environ | {"GEOFUSE_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = []
    for n, precision in enumerate(("f32", "f32", "int8", "int8")):  # cold, then warm
        done = subprocess.run(
            [sys.executable, "-c", PREDICT, str(calibrated), precision, str(tmp_path / f"{n}.npy")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "tensorflow" in runs[0] and "nncf" in runs[2]
    assert runs[1] == runs[3] == []
    for cold, warm in ((0, 1), (2, 3)):
        np.testing.assert_array_equal(
            np.load(tmp_path / f"{warm}.npy"), np.load(tmp_path / f"{cold}.npy")
        )
