"""Fusion layers and the fusion U-Net in every mode: shapes, save/load, weights, gradients,
one training step and segmentation through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio
import tensorflow as tf
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.errors import ConfigError
from geofuse.model.fusion import fusion_mode
from geofuse.model.fusion_layers import AttentionFusion, CrossAttentionFusion, WeightedFusion
from geofuse.model.modelfile import load_model, save_model
from geofuse.model.network import build_unet
from tests.helpers import UTM_TRANSFORM, make_tiny_model, tiny_spec, write_geotiff


def make_fusion(mode: str, filters: int, width: int, scales: list[int], name: str,
                **options: object) -> keras.layers.Layer:
    """The registered layer of ``mode``, as build_unet makes it."""
    return fusion_mode(mode).layer_class()(filters=filters, width=width, scales=scales,
                                           name=name, **options)

# (fusion mode, extra ModelSpec / layer options): every mode, weighted with and without gates.
MODES = [
    ("none", {}),
    ("concat", {}),
    ("weighted", {}),
    ("weighted", {"gates": True}),
    ("attention", {}),
    ("cross_attention", {}),
]
# Layer-level options that ModelSpec does not expose: the "sum" merge of the attention modes.
LAYER_MODES = [(m, o) for m, o in MODES if m != "none"] + [
    ("attention", {"merge": "sum"}),
    ("cross_attention", {"merge": "sum"}),
]


def ids(modes: list[tuple[str, dict]]) -> list[str]:
    return [m + "".join(f"-{k}={v}" for k, v in o.items()) for m, o in modes]


MODE_IDS = ids(MODES)
LAYER_IDS = ids(LAYER_MODES)
# Decoder map one level coarser, then a finer, a same-level and a coarser encoder map.
SCALES = [1, -1, 0, 1]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Same initial weights on every run (a tiny layer can start with a dead ReLU unit)."""
    keras.utils.set_random_seed(0)


def layer_options(mode: str, options: dict) -> dict:
    """Layer options for a 16x16 target: small attention grid so that pooling happens."""
    return options | ({"attention_size": 4} if mode == "cross_attention" else {})


def fusion_inputs(scales: list[int], batch: int = 2, side: int = 16, channels: int = 6,
                  seed: int = 0) -> list[tf.Tensor]:
    """Random maps, each at the resolution its scale says, for a ``side`` x ``side`` target."""
    rng = np.random.default_rng(seed)
    maps = []
    for i, s in enumerate(scales):
        n = side // 2**s if s >= 0 else side * 2 ** (-s)
        maps.append(tf.constant(rng.normal(size=(batch, n, n, channels + i)), tf.float32))
    return maps


def perturb_weights(model: keras.Model, seed: int = 0) -> None:
    """Move every weight away from its initial value (keeping BN variances positive)."""
    rng = np.random.default_rng(seed)
    model.set_weights([
        w * rng.uniform(0.5, 1.5, w.shape) + rng.uniform(0.0, 0.1, w.shape)
        for w in model.get_weights()
    ])


@pytest.mark.parametrize(("mode", "options"), LAYER_MODES, ids=LAYER_IDS)
@pytest.mark.parametrize("scales", [[1, 0], SCALES, [1, -2, -1, 0, 1, 2]])
def test_layer_shapes_and_config_round_trip(mode: str, options: dict, scales: list[int]) -> None:
    layer = make_fusion(mode, 8, 4, scales, name="fuse", **layer_options(mode, options))
    inputs = fusion_inputs(scales)
    out = layer(inputs)
    assert tuple(out.shape) == (2, 16, 16, 8)
    assert layer.compute_output_shape([tuple(x.shape) for x in inputs]) == (2, 16, 16, 8)
    assert layer.compute_output_shape([(None, None, None, x.shape[-1]) for x in inputs]) == (
        None, None, None, 8)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert type(layer) is fusion_mode(mode).layer_class()


@pytest.mark.parametrize(("mode", "options"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("depth", "bands", "classes"), [(2, 1, 2), (3, 4, 5)])
def test_model_output_shapes_on_any_tile_size(
    mode: str, options: dict, depth: int, bands: int, classes: int
) -> None:
    spec = tiny_spec(bands, classes, depth, 4, mode, **options)
    model = build_unet(spec, patch=64)
    assert model.output_shape == (None, None, None, classes)
    # Unknown spatial size inside the graph, as when a model meets several tile sizes.
    predict = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, None, None, bands), tf.float32)],
    )
    rng = np.random.default_rng(1)
    for shape in [(2, 32, 32), (1, 64, 32)]:
        probs = predict(rng.normal(size=(*shape, bands)).astype("float32")).numpy()
        assert probs.shape == (*shape, classes)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


def test_cross_attention_sees_the_same_window_on_any_tile_size() -> None:
    # Same-level inputs: alignment and merge are per pixel, so a window's pixels depend on that
    # window alone, but for the layer's closing 3x3 conv at the window's edge.
    scales = [0, 0, 0]
    maps = fusion_inputs(scales, batch=1, side=16)
    inner = np.ones((16, 16), bool)
    inner[7:9, :] = inner[:, 7:9] = False  # the 3x3 conv's reach across the window seams

    def quadrants_apart(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
        whole = layer(maps).numpy()[0]
        parts = np.zeros_like(whole)
        for r in (0, 8):
            for c in (0, 8):
                parts[r:r + 8, c:c + 8] = layer([x[:, r:r + 8, c:c + 8] for x in maps])[0]
        return whole[inner], parts[inner]

    windowed = CrossAttentionFusion(8, 4, scales, attention_size=4, window=8)
    whole, parts = quadrants_apart(windowed)
    np.testing.assert_allclose(whole, parts, rtol=1e-4, atol=1e-5)
    # a tile of 12 px (not a multiple of the window) gets padded windows, the same shape back
    assert tuple(windowed([x[:, :12, :12] for x in maps]).shape) == (1, 12, 12, 8)
    # the whole-map grid of older models pools a 16-px tile into coarser tokens
    whole, parts = quadrants_apart(CrossAttentionFusion(8, 4, scales, attention_size=4))
    assert np.abs(whole - parts).max() > 1e-2


def test_attention_is_its_global_form_on_a_training_chip_and_local_on_a_larger_tile() -> None:
    scales = [0, 1]

    def pair(window: int) -> tuple[keras.layers.Layer, keras.layers.Layer]:
        local = AttentionFusion(8, 4, scales, window=window)
        whole = AttentionFusion(8, 4, scales)
        side = 2 * window
        maps = fusion_inputs(scales, batch=1, side=side)
        local(maps), whole(maps)
        whole.set_weights(local.get_weights())
        return local, whole

    for window in (16, 12, 6):  # blocks of 4, 3 and 1 px
        local, whole = pair(window)
        chip = fusion_inputs(scales, batch=2, side=window)
        np.testing.assert_allclose(local(chip).numpy(), whole(chip).numpy(), rtol=1e-4,
                                   atol=1e-5)
    # On a 64-px map, a 40-px crop (at a block boundary) gives the same pixels away from its
    # edges: a pixel's factors come from the blocks within a window of it (8 px), plus the
    # interpolation between block centres (2), the spatial conv (3) and the closing conv (1).
    local, whole = pair(8)
    maps = fusion_inputs(scales, batch=1, side=64)
    crop = [maps[0][:, 12:52, 12:52], maps[1][:, 6:26, 6:26]]
    for layer, same in ((local, True), (whole, False)):
        full = layer(maps).numpy()[0, 12 + 14:52 - 14, 12 + 14:52 - 14]
        part = layer(crop).numpy()[0, 14:-14, 14:-14]
        assert np.allclose(full, part, rtol=1e-4, atol=1e-5) == same


def test_build_unet_gives_the_windowed_modes_the_training_chip_as_their_window() -> None:
    spec = tiny_spec(3, 2, 3, 4, "cross_attention", attention_size=4)
    model = build_unet(spec, patch=64)
    assert [model.get_layer(f"fuse{level}").window for level in range(3)] == [64, 32, 16]
    with pytest.raises(ConfigError, match="Expected the training patch side \\(a multiple of 8\\) "
                                          "to build fusion 'cross_attention'. Received: patch="):
        build_unet(spec, patch=60)
    with pytest.raises(ConfigError, match="Received: patch=None"):
        build_unet(spec)
    assert build_unet(tiny_spec(3, 2, 3, 4, "concat")).count_params() > 0  # needs no patch
    for mode in ("attention", "weighted"):
        model = build_unet(tiny_spec(3, 2, 3, 4, mode), patch=64)
        assert [model.get_layer(f"fuse{level}").window for level in range(3)] == [64, 32, 16]


def test_weighted_static_weights_are_non_negative_and_sum_to_one() -> None:
    layer = WeightedFusion(8, 4, SCALES)
    inputs = fusion_inputs(SCALES)
    layer(inputs)
    np.testing.assert_allclose(layer.normalized_weights(), 0.25, atol=1e-4)  # start equal
    raw = np.array([-1.0, 0.5, 2.0, 0.1], np.float32)
    layer.level_weights.assign(raw)
    expected = np.maximum(raw, 0) / (np.maximum(raw, 0).sum() + 1e-4)
    np.testing.assert_allclose(layer.normalized_weights(), expected, rtol=1e-6)
    assert layer.normalized_weights()[0] == 0.0
    assert abs(layer.normalized_weights().sum() - 1) < 1e-4
    # The fused map is that weighted sum of the aligned maps.
    aligned = [a(x) for a, x in zip(layer.aligners, inputs, strict=True)]
    mixed = sum(w * a.numpy() for w, a in zip(expected, aligned, strict=True))
    np.testing.assert_allclose(layer.fuse(aligned).numpy(), mixed, rtol=1e-5, atol=1e-6)


def test_weighted_gates_depend_on_the_input_and_still_sum_to_one() -> None:
    layer = WeightedFusion(8, 4, SCALES, gates=True)
    inputs = fusion_inputs(SCALES, batch=3)
    layer(inputs)
    layer.level_weights.assign(np.array([1.0, -0.5, 2.0, 0.5], np.float32))
    rng = np.random.default_rng(3)
    for gate in layer.gate_layers:
        gate.kernel.assign(rng.normal(size=gate.kernel.shape).astype("float32"))
    weights = layer.input_weights(inputs).numpy()
    assert weights.shape == (3, 4)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(weights[:, 1], 0.0)  # relu(-0.5) = 0, whatever the gate
    assert np.ptp(weights, axis=0).max() > 1e-3  # different images, different weights


def test_weighted_gates_pool_over_the_training_chip_around_each_pixel() -> None:
    scales = [0, 1]
    local = WeightedFusion(8, 4, scales, gates=True, window=8)
    whole = WeightedFusion(8, 4, scales, gates=True)
    big = fusion_inputs(scales, batch=1, side=64)
    local(big), whole(big)
    rng = np.random.default_rng(5)
    for gate in local.gate_layers:
        gate.kernel.assign(rng.normal(size=gate.kernel.shape).astype("float32"))
    whole.set_weights(local.get_weights())
    chip = fusion_inputs(scales, batch=2, side=8)  # a training chip: the whole-map form
    np.testing.assert_allclose(local(chip).numpy(), whole(chip).numpy(), rtol=1e-4, atol=1e-5)
    weights = local.input_weights(big).numpy()
    assert weights.shape == (1, 64, 64, 2)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-3)  # up to epsilon
    assert np.ptp(weights[0, ..., 0]) > 1e-3  # the weights vary across the tile
    # a crop at a block boundary gives the same pixels away from its edges; not the old form
    crop = [big[0][:, 12:52, 12:52], big[1][:, 6:26, 6:26]]
    for layer, same in ((local, True), (whole, False)):
        full = layer(big).numpy()[0, 12 + 12:52 - 12, 12 + 12:52 - 12]
        part = layer(crop).numpy()[0, 12:-12, 12:-12]
        assert np.allclose(full, part, rtol=1e-4, atol=1e-5) == same


@pytest.mark.parametrize(("mode", "options"), LAYER_MODES, ids=LAYER_IDS)
def test_gradients_reach_every_input_level_and_weight(mode: str, options: dict) -> None:
    layer = make_fusion(mode, 8, 4, SCALES, name="fuse", **layer_options(mode, options))
    inputs = fusion_inputs(SCALES)
    target = tf.constant(np.random.default_rng(4).normal(size=(2, 16, 16, 8)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_sum(layer(inputs, training=True) * target)
    grads = tape.gradient(loss, [*inputs, *layer.trainable_weights])
    for i, grad in enumerate(grads[: len(inputs)]):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, f"input {i}"
    for weight, grad in zip(layer.trainable_weights, grads[len(inputs):], strict=True):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WeightedFusion(8, 4, SCALES, gates="yes"), "Expected gates to be True or False"),
        (lambda: WeightedFusion(8, 4, SCALES, epsilon=0), "Expected epsilon"),
        (lambda: AttentionFusion(8, 4, SCALES, merge="mean"), "Expected merge to be 'sum' or"),
        (lambda: AttentionFusion(8, 4, SCALES, reduction=0), "Expected reduction to be an"),
        (lambda: AttentionFusion(8, 4, SCALES, spatial_kernel=4), "Expected an odd spatial"),
        (lambda: CrossAttentionFusion(8, 6, SCALES, heads=4), "Expected heads to divide width"),
        (lambda: CrossAttentionFusion(8, 4, [1]), "Expected at least 2 inputs"),
        (lambda: CrossAttentionFusion(8, 4, SCALES, attention_size=0), "Expected attention_size"),
        (lambda: make_fusion("concat", 0, 4, SCALES, name="f"), "Expected filters"),
        (lambda: make_fusion("weighted", 8, 4, SCALES, name="f")(fusion_inputs(SCALES)[:2]),
         "Expected 4 input maps"),
    ],
)
def test_bad_arguments_are_refused_in_keras_style(make, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "Received:" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "options"), MODES, ids=MODE_IDS)
def test_each_mode_trains_a_step_saves_loads_and_segments_through_the_cli(
    mode: str, options: dict, tmp_path: Path
) -> None:
    path = make_tiny_model(tmp_path / "untrained.keras", bands=3, classes=3, fusion=mode,
                           depth=2, filters=4, **options)
    loaded = load_model(path)
    model = loaded.model
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, size=(4, 32, 32))
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [w.path for b, w in zip(before, model.trainable_weights, strict=True)
                 if np.array_equal(b, w.numpy())]
    assert not unchanged

    # Saved and loaded, the network predicts identically (weights moved off their init values).
    perturb_weights(model)
    trained = save_model(model, loaded.info, tmp_path / "trained.keras")
    reloaded = load_model(trained).model
    probe = rng.normal(size=(2, 64, 48, 3)).astype("float32")
    np.testing.assert_allclose(reloaded(probe, training=False).numpy(),
                               model(probe, training=False).numpy(), rtol=0, atol=1e-6)
    for a, b in zip(model.weights, reloaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # One 64x64 tile (twice the training patch side): the mask is the model's argmax.
    pixels = np.stack([
        np.add.outer(np.arange(64) * 3, np.arange(64) * 2) % 256,
        np.add.outer(np.arange(64) * 5, np.arange(64)) % 256,
        rng.integers(0, 256, (64, 64)),
    ]).astype("uint8")
    scene = write_geotiff(tmp_path / "scene.tif", pixels)
    out = tmp_path / "mask.tif"
    result = CliRunner().invoke(main, ["segment", str(scene), str(out), "--model", str(trained),
                                       "--tile", "64", "--overlap", "0", "--quiet",
                                       "--precision", "f32"])  # auto is bf16 on BF16 CPUs
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32633
        assert dst.transform == UTM_TRANSFORM
        assert dst.shape == (64, 64)
        mask = dst.read(1)
    image = (pixels.transpose(1, 2, 0)[None] / 255.0).astype("float32")
    expected = reloaded(image, training=False).numpy()[0].argmax(-1)
    assert (mask == expected).mean() > 0.999


def test_info_shows_the_learned_weight_of_each_level(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "w.keras", fusion="weighted", depth=2, filters=4)
    loaded = load_model(path)
    raw = {1: [3.0, 1.0, -2.0], 0: [0.5, 1.5, 2.0]}  # level 1: decoder2, enc0, enc1
    for level, values in raw.items():
        loaded.model.get_layer(f"fuse{level}").level_weights.assign(np.array(values, "float32"))
    path = save_model(loaded.model, loaded.info, tmp_path / "set.keras")
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "fusion: weighted" in result.output
    for level, values in raw.items():
        w = np.maximum(values, 0) / (np.maximum(values, 0).sum() + 1e-4)
        line = f"level {level}: decoder{level + 1} {w[0]:.3f}, enc0 {w[1]:.3f}, enc1 {w[2]:.3f}"
        assert line in result.output


@pytest.mark.parametrize("mode", ["concat", "cross_attention"])
def test_info_of_other_modes_does_not_import_tensorflow(tiny_models, mode: str) -> None:
    path = tiny_models(fusion=mode)
    code = (
        "import sys; from pathlib import Path; from geofuse.products.info import describe; "
        f"facts = describe(Path({str(path)!r})); "
        "assert 'fusion_weights' not in facts; print(facts['architecture']['fusion']); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [mode, "False"]
