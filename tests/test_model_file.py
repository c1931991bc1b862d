"""The fusion registry and build_unet: modes describe themselves, a new mode plugs in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import ops

from geofuse.cli import main
from geofuse.model.blocks import MultiLevelFusion
from geofuse.model.fusion import (
    FusionMode,
    FusionOption,
    fusion_mode,
    fusion_modes,
    register_fusion,
    unregister_fusion,
)
from geofuse.model.modelfile import load_model, save_model
from geofuse.model.network import build_unet, decoder_sources
from geofuse.model.spec import Architecture, ClassInfo, ModelInfo, ModelSpec, Normalization
from tests.helpers import make_tiles


@keras.saving.register_keras_serializable(package="geofuse_tests")
class SumFusion(MultiLevelFusion):
    """A trivial mode defined outside geofuse: the plain sum of the aligned maps, times scale."""

    def __init__(self, filters: int, width: int, scales: list[int], scale: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(filters, width, scales, **kwargs)
        self.scale = scale

    def fuse(self, aligned: list[Any], training: bool | None = None) -> Any:
        return ops.sum(ops.stack(aligned, axis=0), axis=0) * self.scale

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"scale": self.scale}


@pytest.fixture
def sum_mode():
    mode = register_fusion(FusionMode("sum", SumFusion, "sum of the aligned levels",
                                      options=(FusionOption("scale", 1.0, "sum: factor"),)))
    yield mode
    unregister_fusion("sum")


def test_every_builtin_mode_describes_itself() -> None:
    assert fusion_modes()[:5] == ("none", "concat", "weighted", "attention", "cross_attention")
    for name in fusion_modes():
        mode = fusion_mode(name)
        assert mode.doc and issubclass(mode.layer_class(), keras.layers.Layer)
    assert [o.name for o in fusion_mode("weighted").options] == ["gates"]
    assert [o.name for o in fusion_mode("cross_attention").options] == ["attention_size"]


def test_none_draws_on_its_own_level_only_and_the_others_on_all_or_adjacent() -> None:
    assert decoder_sources(Architecture(fusion="none", depth=4), 2) == [2]
    assert decoder_sources(Architecture(fusion="concat", depth=4), 2) == [0, 1, 2, 3]
    adjacent = Architecture(fusion="attention", depth=4, fusion_levels="adjacent")
    assert decoder_sources(adjacent, 0) == [0, 1]


def test_a_mode_registered_from_outside_builds_trains_saves_and_loads(
    sum_mode: FusionMode, tmp_path: Path
) -> None:
    arch = Architecture(depth=2, base_filters=4, fusion="sum", fusion_options={"scale": 0.5})
    spec = ModelSpec(bands=3, classes=2, arch=arch)
    model = build_unet(spec)
    assert isinstance(model.get_layer("fuse0"), SumFusion)
    assert model.get_layer("fuse1").scale == 0.5
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    y = (x[..., 0] > 0).astype("int32")
    losses = model.fit(x, y, epochs=3, batch_size=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    info = ModelInfo(spec=spec, band_names=("r", "g", "b"),
                     normalization=Normalization.identity(3),
                     classes=(ClassInfo(0, "bg"), ClassInfo(1, "fg")))
    path = save_model(model, info, tmp_path / "sum.keras")
    loaded = load_model(path)
    assert loaded.info.spec.arch.fusion_options == {"scale": 0.5}
    np.testing.assert_allclose(loaded.model.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("options", "shown"), [
    (["--fusion", "weighted", "--gates"], {"fusion": "weighted", "gates": True}),
    (["--fusion", "cross_attention", "--attention-size", "8"],
     {"fusion": "cross_attention", "attention_size": 8}),
])
def test_train_builds_every_mode_option_and_info_shows_it(
    tmp_path: Path, options: list[str], shown: dict
) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=4, size=32)
    out = tmp_path / "m.keras"
    result = CliRunner().invoke(main, [
        "train", "--tiles", str(tiles), "--out", str(out), *options, "--depth", "2",
        "--filters", "4", "--patch", "32", "--batch-size", "4", "--epochs", "1", "--steps", "1",
        "--quiet"])
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(main, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    architecture = json.loads(info.output)["architecture"]
    assert {k: architecture[k] for k in shown} == shown


def test_an_option_of_another_mode_is_a_usage_error(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2, size=32)
    result = CliRunner().invoke(main, ["train", "--tiles", str(tiles), "--out",
                                       str(tmp_path / "m.keras"), "--attention-size", "8"])
    assert result.exit_code == 1
    assert (f"Expected options of fusion '{Architecture().fusion}' among none. Received: "
            "['attention_size']") in result.output
    assert not (tmp_path / "m.keras").exists()
