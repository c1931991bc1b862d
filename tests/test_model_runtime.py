"""Inference runtimes: choosing TensorFlow/OpenVINO and f32/bf16, the conversion cache, export."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofuse.errors import ConfigError, ModelError, OutputError
from geofuse.model import ovcache, ovimport, runtime
from geofuse.model.export import export_model
from geofuse.model.runtime import OpenVinoProbe
from tests.helpers import write_geotiff


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conversion cache shared by this module's tests (conversions take about 1.5 s)."""
    return tmp_path_factory.mktemp("geofuse_cache")


@pytest.fixture(autouse=True)
def _use_shared_cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ovcache.CACHE_ENV, str(shared_cache))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty conversion cache of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(ovcache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Record every OpenVINO conversion (the expensive step the cache saves)."""
    calls: list[tuple] = []
    convert = ovcache.convert_to_openvino

    def counting(model: object, shape: tuple) -> object:
        calls.append(shape)
        return convert(model, shape)

    monkeypatch.setattr(ovcache, "convert_to_openvino", counting)
    return calls


def _fake_openvino(monkeypatch: pytest.MonkeyPatch, probe: OpenVinoProbe) -> None:
    monkeypatch.setattr(runtime, "probe_openvino", lambda: probe)


def _batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


# --------------------------------------------------------------------------- choosing


def test_auto_picks_openvino_and_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_openvino(monkeypatch, OpenVinoProbe("2026.4.1", bf16=True))
    choice = runtime.choose_runtime()
    assert (choice.runtime, choice.precision, choice.auto) == ("openvino", "bf16", True)
    assert choice.describe() == "runtime: openvino 2026.4.1 bf16"
    assert runtime.choose_runtime("openvino", "f32").label == "openvino 2026.4.1 f32"

    _fake_openvino(monkeypatch, OpenVinoProbe("2026.4.1", bf16=False))
    monkeypatch.setattr(runtime, "openvino_emulates_bf16", lambda: False)
    assert runtime.choose_runtime().precision == "f32"
    asked = runtime.choose_runtime("openvino", "bf16")  # AVX2 only: OpenVINO compiles f32
    assert asked.precision == "f32" and "runs the model in f32" in (asked.notice or "")
    assert asked.describe().endswith("f32 (this CPU has no BF16 instructions: OpenVINO runs "
                                     "the model in f32)")
    monkeypatch.setattr(runtime, "openvino_emulates_bf16", lambda: True)
    emulated = runtime.choose_runtime("openvino", "bf16")  # AVX-512 without BF16
    assert emulated.precision == "bf16" and "emulated and slower" in (emulated.notice or "")


def test_auto_falls_back_to_tensorflow_with_one_notice_without_openvino(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_openvino(monkeypatch, OpenVinoProbe(None, reason="OpenVINO unavailable: No module"))
    choice = runtime.choose_runtime()
    assert (choice.runtime, choice.precision) == ("tensorflow", "f32")
    assert choice.describe().startswith("runtime: tensorflow 2.")
    assert choice.describe().endswith("(OpenVINO unavailable: No module; using TensorFlow)")
    with pytest.raises(ConfigError, match=r"^Expected OpenVINO for runtime 'openvino'\. "
                                          r"Received: OpenVINO unavailable"):
        runtime.choose_runtime("openvino")
    with pytest.raises(ConfigError, match="Expected OpenVINO for precision 'bf16'"):
        runtime.choose_runtime("auto", "bf16")


@pytest.mark.parametrize(("runtime_name", "precision", "message"), [
    ("onnxruntime", "auto", "Expected runtime to be one of auto, tensorflow, openvino. "
                            "Received: 'onnxruntime'"),
    ("auto", "fp16", "Expected precision to be one of auto, f32, bf16, int8. "
                      "Received: 'fp16'"),
    ("tensorflow", "bf16", "Expected precision 'f32' or 'auto' with runtime 'tensorflow'. "
                           "Received: 'bf16'"),
])
def test_bad_choices_are_refused_in_one_line(runtime_name: str, precision: str,
                                             message: str) -> None:
    with pytest.raises(ConfigError) as info:
        runtime.choose_runtime(runtime_name, precision)
    assert str(info.value) == message


def test_openvino_is_imported_without_its_usage_telemetry(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from geofuse.model import runtime\n"
        "assert runtime.probe_openvino().version\n"
        "import openvino.tools.ovc.convert_impl as c\n"
        "assert c.tm.__name__.endswith('telemetry_stub'), c.tm\n"
        "import openvino_telemetry\n"  # importable again for anyone else
    )
    env = os.environ | {"HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "intel").exists()  # no client id written


# --------------------------------------------------------------------------- predictors


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_predicts_what_tensorflow_predicts(tiny_models, precision: str) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    tf_pred = runtime.make_predictor(loaded, 2, 32, runtime.choose_runtime("tensorflow"))
    ov_pred = runtime.make_predictor(loaded, 2, 32, runtime.choose_runtime("openvino", precision))
    probe = runtime.probe_openvino()  # bf16 where the CPU has it or OpenVINO emulates it
    kept = probe.bf16 or precision == "f32" or runtime.openvino_emulates_bf16()
    assert ov_pred.choice.runtime == "openvino"
    assert ov_pred.choice.precision == (precision if kept else "f32")
    x = _batch((2, 32, 32, 3))
    expected, got = tf_pred(x), ov_pred(x)
    assert got.shape == expected.shape == (2, 32, 32, 3) and got.dtype == np.float32
    if ov_pred.choice.precision == "f32":
        np.testing.assert_allclose(got, expected, atol=1e-4)
    else:  # 8 significant bits: close on average, the same class almost everywhere
        assert np.abs(got - expected).mean() < 0.01
        assert (got.argmax(-1) != expected.argmax(-1)).mean() < 0.02
    again = ov_pred(_batch((2, 32, 32, 3), seed=1))
    assert not np.shares_memory(got, again)  # each call returns a new array


def test_one_openvino_predictor_serves_several_threads(tiny_models) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    predict = runtime.make_predictor(loaded, 2, 32, runtime.choose_runtime("openvino", "f32"))
    inputs = [_batch((2, 32, 32, 3), seed=s) for s in range(4)]
    expected = [predict(x) for x in inputs]
    start = threading.Barrier(3)

    def work(i: int) -> list[np.ndarray]:
        start.wait()  # all three call the one predictor at once
        return [predict(inputs[(i + k) % 4]) for k in range(4)]

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(work, i) for i in range(3)]
        results = [f.result(timeout=120) for f in futures]  # a thread's error fails the test
    assert len(results) == 3
    for i, outs in enumerate(results):
        assert len(outs) == 4
        for k, out in enumerate(outs):
            np.testing.assert_array_equal(out, expected[(i + k) % 4])


def test_a_long_run_keeps_two_openvino_batches_in_flight(tiny_models) -> None:
    """Many batches: a function of two streams, called from two threads, predicting what one
    call of the predictor does; a single batch or another runtime: the predictor itself."""
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    predict = runtime.make_predictor(loaded, 2, 32, runtime.choose_runtime("openvino", "f32"),
                                     threads=2)
    assert runtime.pipelined(predict, 2, 2) == (predict, 1)  # one batch of two tiles
    fn, flight = runtime.pipelined(predict, 3, 2)  # two batches
    assert flight == runtime.STREAMS == 2 and fn is not predict
    assert runtime.pipelined(predict, 14, 2)[0] is fn  # compiled once
    inputs = [_batch((2, 32, 32, 3), seed=s) for s in range(6)]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(fn, inputs))
    for x, out in zip(inputs, got, strict=True):
        np.testing.assert_allclose(out, predict(x), atol=1e-5)
    one_thread = runtime.make_predictor(loaded, 2, 32,
                                        runtime.choose_runtime("openvino", "f32"), threads=1)
    assert runtime.pipelined(one_thread, 20, 2) == (one_thread, 1)
    tf_pred = runtime.make_predictor(loaded, 2, 32, runtime.choose_runtime("tensorflow"))
    assert runtime.pipelined(tf_pred, 20, 2) == (tf_pred, 1)
    plain = lambda x: x  # noqa: E731 - any callable: one batch at a time
    assert runtime.pipelined(plain, 20, 2) == (plain, 1)


def test_a_failed_conversion_leaves_the_logging_level_as_it_was(tiny_models) -> None:
    # OpenVINO's failed conversion set the root logger to ERROR, so the CLI never showed the
    # warning that an automatic choice fell back to TensorFlow
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3, fusion="cross_attention"))
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.WARNING)
    try:
        with pytest.raises(ModelError, match="Expected a network OpenVINO can convert"):
            ovcache.convert_to_openvino(loaded.model, (1, 32, 32, 3))
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)


def test_a_model_openvino_cannot_convert_falls_back_only_when_automatic(
    tiny_models, caplog: pytest.LogCaptureFixture
) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3, fusion="cross_attention"))
    with pytest.raises(ModelError, match="Expected a network OpenVINO can convert. Received: "):
        runtime.make_predictor(loaded, 1, 32, runtime.choose_runtime("openvino", "f32"))
    with caplog.at_level(logging.WARNING, logger="geofuse.model.runtime"):
        predict = runtime.make_predictor(loaded, 1, 32, runtime.choose_runtime("auto", "f32"))
    assert predict.choice.runtime == "tensorflow"
    assert "using TensorFlow" in (predict.choice.notice or "")
    assert len([r for r in caplog.records if "using TensorFlow" in r.getMessage()]) == 1
    assert predict(_batch((1, 32, 32, 3))).shape == (1, 32, 32, 3)


# --------------------------------------------------------------------------- cache


def test_conversion_is_cached_by_model_and_shape(tiny_models, cache: Path,
                                                 conversions: list) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    choice = runtime.choose_runtime("openvino", "f32")
    first = runtime.make_predictor(loaded, 2, 32, choice)
    second = runtime.make_predictor(loaded, 2, 32, runtime.choose_runtime("openvino", "bf16"))
    assert conversions == [(2, 32, 32, 3)]  # one IR serves both precisions
    runtime.make_predictor(loaded, 1, 64, choice)
    assert conversions == [(2, 32, 32, 3), (1, 64, 64, 3)]
    entries = sorted(p for p in (cache / "openvino").iterdir())
    assert len(entries) == 2 and not [p for p in entries if p.name.startswith(".")]
    manifest = json.loads((entries[0] / "entry.json").read_text())
    assert manifest["model_sha256"] == loaded.digest
    assert manifest["openvino"] == runtime.probe_openvino().version
    x = _batch((2, 32, 32, 3))
    assert np.abs(first(x) - second(x)).mean() < 0.01


def test_the_cache_keeps_the_most_recently_used_conversions(
        tiny_models, cache: Path, conversions: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tile shape has its conversion; scenes of many shapes must not fill the disk."""
    from geofuse.model.modelfile import load_model

    monkeypatch.setattr(ovcache, "CACHE_ENTRIES", 2)
    loaded = load_model(tiny_models(bands=3, classes=3))
    choice = runtime.choose_runtime("openvino", "f32")
    version = runtime.probe_openvino().version

    def entries() -> set[str]:
        return {p.name for p in (cache / "openvino").iterdir()}

    runtime.make_predictor(loaded, 1, (16, 32), choice)
    runtime.make_predictor(loaded, 1, (32, 16), choice)
    first = ovcache.cache_key(loaded.digest, (1, 16, 32, 3), version)
    second = ovcache.cache_key(loaded.digest, (1, 32, 16, 3), version)
    assert entries() == {first, second}
    os.utime(cache / "openvino" / first, (1, 1))  # long unused, then used again:
    runtime.make_predictor(loaded, 1, (16, 32), choice)  # read from the cache, marked as used
    assert len(conversions) == 2
    runtime.make_predictor(loaded, 1, (32, 32), choice)  # a third shape: the least recent goes
    assert entries() == {first, ovcache.cache_key(loaded.digest, (1, 32, 32, 3), version)}
    predict = runtime.make_predictor(loaded, 1, (32, 16), choice)  # converted again
    assert len(conversions) == 4 and len(entries()) == 2
    assert predict(_batch((1, 32, 16, 3))).shape == (1, 32, 16, 3)


@pytest.mark.parametrize("damage", ["truncated weights", "garbage xml with matching digests",
                                    "no manifest", "manifest of another shape"])
def test_a_corrupted_cache_entry_is_rebuilt_not_trusted(
    tiny_models, shared_cache: Path, cache: Path, conversions: list, damage: str,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    choice = runtime.choose_runtime("openvino", "f32")
    x = _batch((2, 32, 32, 3))
    monkeypatch.setenv(ovcache.CACHE_ENV, str(shared_cache))  # a good entry, shared
    expected = runtime.make_predictor(loaded, 2, 32, choice)(x)
    monkeypatch.setenv(ovcache.CACHE_ENV, str(cache))
    key = ovcache.cache_key(loaded.digest, (2, 32, 32, 3), runtime.probe_openvino().version)
    entry = cache / "openvino" / key
    shutil.copytree(shared_cache / "openvino" / key, entry)
    conversions.clear()
    manifest = json.loads((entry / "entry.json").read_text())
    if damage == "truncated weights":
        weights = entry / "model.bin"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage xml with matching digests":
        (entry / "model.xml").write_text("<net>")
        manifest["files"]["model.xml"] = hashlib.sha256(b"<net>").hexdigest()
        manifest["sizes"]["model.xml"] = len(b"<net>")
        (entry / "entry.json").write_text(json.dumps(manifest))
    elif damage == "no manifest":
        (entry / "entry.json").unlink()
    else:
        (entry / "entry.json").write_text(json.dumps(manifest | {"shape": [1, 32, 32, 3]}))
    with caplog.at_level(logging.WARNING, logger="geofuse.model.runtime"):
        got = runtime.make_predictor(loaded, 2, 32, choice)(x)
    assert len(conversions) == 1
    assert any("unusable" in r.getMessage() and "rebuilding" in r.getMessage()
               for r in caplog.records)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    runtime.make_predictor(loaded, 2, 32, choice)  # the rebuilt entry is trusted again
    assert len(conversions) == 1
    assert [p.name for p in (cache / "openvino").iterdir()] == [entry.name]


def test_an_unwritable_cache_converts_in_memory(tiny_models, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from geofuse.model.modelfile import load_model

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv(ovcache.CACHE_ENV, str(blocker / "cache"))
    loaded = load_model(tiny_models(bands=3, classes=3))
    predict = runtime.make_predictor(loaded, 1, 32, runtime.choose_runtime("openvino", "f32"))
    assert predict(_batch((1, 32, 32, 3))).shape == (1, 32, 32, 3)


def test_cache_folder_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv(ovcache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ovcache.cache_dir() == tmp_path / "xdg" / "geofuse"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ovcache.cache_dir() == Path.home() / ".cache" / "geofuse"


# --------------------------------------------------------------------------- export


def test_export_openvino_runs_any_tile_size_and_carries_the_metadata(
    tiny_models, tmp_path: Path
) -> None:
    from geofuse.model.modelfile import load_model

    ov = ovimport.import_openvino()

    loaded = load_model(tiny_models(bands=4, classes=3))
    out = export_model(loaded, tmp_path / "served", "openvino")
    assert sorted(p.name for p in out.iterdir()) == ["geofuse.json", "model.bin", "model.xml",
                                                     "stac-item.json"]
    meta = json.loads((out / "geofuse.json").read_text())
    assert meta["source_model_sha256"] == loaded.digest
    assert meta["input"]["bands"] == ["b1", "b2", "b3", "b4"]
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["side_multiple"] == 4
    assert [c["name"] for c in meta["model"]["classes"]] == ["class0", "class1", "class2"]
    assert "normalization" in meta["model"]
    x = _batch((3, 24, 40, 4))
    compiled = ov.Core().compile_model(str(out / "model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(x)[0], loaded.model(x).numpy(), atol=1e-4)

    with pytest.raises(OutputError, match="already exists"):
        export_model(loaded, out, "openvino")
    export_model(loaded, out, "saved_model", overwrite=True)
    assert (out / "saved_model.pb").is_file() and not (out / "model.xml").exists()
    assert json.loads((out / "geofuse.json").read_text())["format"] == "saved_model"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_saved_model_serves_the_same_probabilities(tiny_models, tmp_path: Path) -> None:
    import tensorflow as tf

    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    out = export_model(loaded, tmp_path / "sm", "saved_model")
    served = tf.saved_model.load(str(out))
    x = _batch((2, 32, 32, 3))
    np.testing.assert_allclose(served.serve(x).numpy(), loaded.model(x).numpy(), atol=1e-5)


def test_export_onnx_or_a_clear_error_without_the_converter(tiny_models, tmp_path: Path) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3))
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'geofuse\[onnx\]'"):
            export_model(loaded, tmp_path / "onnx", "onnx")
        assert not (tmp_path / "onnx").exists()
        return
    ov = ovimport.import_openvino()
    out = export_model(loaded, tmp_path / "onnx", "onnx")
    x = _batch((1, 32, 32, 3))
    compiled = ov.Core().compile_model(str(out / "model.onnx"), "CPU")
    np.testing.assert_allclose(compiled(x)[0], loaded.model(x).numpy(), atol=1e-4)


def test_export_refuses_unknown_formats_and_unconvertible_models(tiny_models,
                                                                 tmp_path: Path) -> None:
    from geofuse.model.modelfile import load_model

    loaded = load_model(tiny_models(bands=3, classes=3, fusion="cross_attention"))
    with pytest.raises(ConfigError, match="Expected format one of openvino, onnx, saved_model"):
        export_model(loaded, tmp_path / "x", "tflite")
    with pytest.raises(ModelError, match="OpenVINO can convert"):
        export_model(loaded, tmp_path / "x", "openvino")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- command line

RUNTIMES = ["tensorflow", "openvino"]
CASES = {
    # name: (bands, rows, cols, extra options)
    "smaller than a tile": (3, 40, 50, ["--probability-dtype", "float32"]),
    "13 bands": (13, 96, 130, []),
    "tta": (3, 70, 90, ["--tta", "flips", "--probability-dtype", "float32"]),
}
_outputs: dict[tuple[str, str], dict] = {}


def _scene(folder: Path, bands: int, rows: int, cols: int) -> Path:
    image = np.random.default_rng(bands).integers(1, 256, (bands, rows, cols), dtype=np.uint8)
    image[:, :5, :7] = 0  # nodata corner
    return write_geotiff(folder / f"scene_{bands}_{rows}x{cols}.tif", image, nodata=0)


def _segment_cli(case: str, runtime_name: str, folder: Path, tiny_models) -> dict:
    """Run ``geofuse segment`` for a case on a runtime (memoised) and read its outputs."""
    from click.testing import CliRunner

    from geofuse.cli import main

    if (case, runtime_name) in _outputs:
        return _outputs[case, runtime_name]
    bands, rows, cols, extra = CASES[case]
    scene = _scene(folder, bands, rows, cols)
    out, probs = folder / f"{runtime_name}.tif", folder / f"{runtime_name}_p.tif"
    result = CliRunner().invoke(main, [
        "segment", str(scene), str(out), "--model", str(tiny_models(bands=bands, classes=3)),
        "--tile", "64", "--batch-size", "2", "--probabilities", str(probs),
        "--runtime", runtime_name, "--precision", "f32", *extra,
    ])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as m, rasterio.open(probs) as p:
        _outputs[case, runtime_name] = {"mask": m.read(1), "probs": p.read(), "tags": m.tags(),
                                        "prob_tags": p.tags(), "output": result.output}
    return _outputs[case, runtime_name]


@pytest.mark.parametrize("runtime_name", RUNTIMES)
@pytest.mark.parametrize("case", list(CASES))
def test_segment_cli_on_each_runtime(tiny_models, tmp_path: Path, case: str,
                                     runtime_name: str) -> None:
    got = _segment_cli(case, runtime_name, tmp_path, tiny_models)
    bands, rows, cols, _ = CASES[case]
    version = (runtime.probe_openvino().version if runtime_name == "openvino"
               else runtime.tensorflow_version())
    assert f"runtime: {runtime_name} {version} f32\n" in got["output"]
    assert got["output"].count("runtime:") == 1
    for tags in (got["tags"], got["prob_tags"]):
        assert tags["GEOFUSE_RUNTIME"] == f"{runtime_name} {version}"
        assert tags["GEOFUSE_PRECISION"] == "f32"
    assert got["mask"].shape == (rows, cols) and got["probs"].shape == (3, rows, cols)
    assert (got["mask"][:5, :7] == 255).all() and (got["mask"][5:] != 255).all()
    if runtime_name != "tensorflow":  # the same pixels as TensorFlow
        ref = _segment_cli(case, "tensorflow", tmp_path, tiny_models)
        assert (got["mask"] != ref["mask"]).mean() < 0.005
        close = np.isclose(got["probs"], ref["probs"], atol=2e-4 if got["probs"].dtype.kind
                           == "f" else 1.01, equal_nan=True)
        assert close.all()


def test_segment_cli_quiet_hides_the_runtime_line_and_bad_choices_are_one_line(
    tiny_models, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from geofuse.cli import main

    scene = _scene(tmp_path, 3, 40, 50)
    model = str(tiny_models(bands=3, classes=3))
    result = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "q.tif"),
                                       "--model", model, "--tile", "64", "--quiet"])
    assert result.exit_code == 0 and result.output == ""
    with rasterio.open(tmp_path / "q.tif") as ds:
        assert ds.tags()["GEOFUSE_RUNTIME"].startswith("openvino ")  # auto, OpenVINO installed
    bad = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "b.tif"), "--model",
                                    model, "--runtime", "tensorflow", "--precision", "bf16"])
    assert bad.exit_code == 1 and not (tmp_path / "b.tif").exists()
    assert bad.output == ("Error: Expected precision 'f32' or 'auto' with runtime "
                          "'tensorflow'. Received: 'bf16'\n")


def test_segment_cli_falls_back_to_tensorflow_with_one_notice(
    tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from geofuse.cli import main

    _fake_openvino(monkeypatch, OpenVinoProbe(None, reason="OpenVINO unavailable: no wheel"))
    scene = _scene(tmp_path, 3, 40, 50)
    model = str(tiny_models(bands=3, classes=3))
    result = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "m.tif"),
                                       "--model", model, "--tile", "64"])
    assert result.exit_code == 0, result.output
    assert result.output.count("OpenVINO unavailable") == 1
    assert "(OpenVINO unavailable: no wheel; using TensorFlow)" in result.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.tags()["GEOFUSE_RUNTIME"].startswith("tensorflow ")
    explicit = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "o.tif"),
                                         "--model", model, "--runtime", "openvino"])
    assert explicit.exit_code == 1
    assert explicit.output == ("Error: Expected OpenVINO for runtime 'openvino'. Received: "
                               "OpenVINO unavailable: no wheel\n")


@pytest.mark.parametrize("runtime_name", RUNTIMES)
def test_evaluate_cli_on_each_runtime(tmp_path: Path, runtime_name: str) -> None:
    from click.testing import CliRunner

    from geofuse.cli import main
    from tests.helpers import CLASSES, make_tiles, make_tiny_model

    model = make_tiny_model(tmp_path / "m.keras", bands=3, classes=3,
                            class_names=tuple(c["name"] for c in CLASSES))
    tiles = make_tiles(tmp_path / "tiles", count=2, size=64, seed=3)
    reports = {}
    for name in {runtime_name, "tensorflow"}:
        report = tmp_path / f"{name}.json"
        result = CliRunner().invoke(main, ["evaluate", "--model", str(model), "--tiles",
                                           str(tiles), "--report", str(report),
                                           "--runtime", name, "--precision", "f32"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"runtime: {name} ")
        reports[name] = json.loads(report.read_text())
        assert reports[name]["runtime"].startswith(f"{name} ")
    cm = np.array(reports[runtime_name]["confusion_matrix"])
    ref = np.array(reports["tensorflow"]["confusion_matrix"])
    assert np.abs(cm - ref).sum() <= 0.002 * ref.sum()


@pytest.mark.parametrize("runtime_name", RUNTIMES)
def test_batch_worker_uses_the_chosen_runtime(tiny_models, tmp_path: Path,
                                              runtime_name: str) -> None:
    from geofuse.config import SegmentConfig, TilingConfig
    from geofuse.model.modelfile import file_digest
    from geofuse.scale.worker import SceneTask, run_scene

    model = tiny_models(bands=3, classes=3)
    config = SegmentConfig(tiling=TilingConfig(tile=64, batch_size=2, runtime=runtime_name,
                                               precision="f32"))
    scene = _scene(tmp_path, 3, 70, 90)
    task = SceneTask(str(scene), str(tmp_path / "mask.tif"), config, str(model),
                     file_digest(model), 1)
    outcome = run_scene(task)
    assert outcome["status"] == "done", outcome["error"]
    assert outcome["runtime"].startswith(f"{runtime_name} ") and outcome["runtime"].endswith(
        " f32")
    with rasterio.open(tmp_path / "mask.tif") as ds:
        assert ds.tags()["GEOFUSE_RUNTIME"].startswith(runtime_name)


def test_export_cli_writes_the_folder_and_refuses_to_overwrite(tiny_models,
                                                               tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geofuse.cli import main

    model = str(tiny_models(bands=3, classes=3))
    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", model, str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}: openvino export of {Path(model).name}\n"
    assert (out / "model.xml").is_file() and (out / "geofuse.json").is_file()
    again = CliRunner().invoke(main, ["export", model, str(out), "--format", "saved_model"])
    assert again.exit_code == 1 and "already exists (use --overwrite" in again.output
    bad = CliRunner().invoke(main, ["export", model, str(out), "--format", "tflite"])
    assert bad.exit_code == 2


def test_recent_predictor_keeps_the_most_recently_used() -> None:
    """A predictor cache is bounded: a hit is reused and made recent, the least recent goes."""
    from geofuse.model.runtime import PREDICTORS_KEPT, recent_predictor

    cache: dict = {}
    built: list[int] = []

    def get(key: int) -> object:
        return recent_predictor(cache, key, lambda: built.append(key) or object())

    first = get(0)
    for key in range(1, PREDICTORS_KEPT):
        get(key)
    assert get(0) is first and built == list(range(PREDICTORS_KEPT))  # a hit builds nothing
    get(PREDICTORS_KEPT)  # one too many: key 1 (the least recent) is let go, not key 0
    assert len(cache) == PREDICTORS_KEPT and 1 not in cache and get(0) is first
    get(1)
    assert built[-1] == 1 and len(cache) == PREDICTORS_KEPT
