"""Configuration: validation, defaults defined once (library = shell), model-file round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geofuse.cli import main
from geofuse.config import SegmentConfig, TilingConfig
from geofuse.errors import ConfigError
from geofuse.model.modelfile import read_info
from geofuse.model.spec import Architecture, ClassInfo, ModelInfo, ModelSpec, Normalization
from geofuse.training.config import EvaluateConfig, LabelOptions, TilesSource, TrainConfig
from tests.helpers import make_tiny_model, write_geotiff


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelSpec(bands=0, classes=2), "Expected bands to be a positive integer"),
        (lambda: ModelSpec(bands=3, classes=1), "Expected 2 to 254 classes"),
        (lambda: Architecture(depth=7), "Expected depth <= 6"),
        (lambda: Architecture(fusion="mean"), "Expected fusion to be one of none, concat"),
        (lambda: Architecture(fusion="concat", fusion_options={"gates": True}),
         "Expected options of fusion 'concat' among none"),
        (lambda: Architecture(fusion="weighted", fusion_options={"gates": "yes"}),
         "Expected weighted option gates to be a bool"),
        (lambda: Architecture(fusion="cross_attention", fusion_options={"attention_size": 0}),
         "Expected cross_attention option attention_size >= 1"),
        (lambda: Architecture(fusion_levels="some"), "Expected fusion_levels to be one of"),
        (lambda: TilingConfig(tile=64, overlap=64), "Expected 0 <= overlap < tile"),
        (lambda: TilingConfig(bands=(1, 0)), "Expected band index"),
        (lambda: SegmentConfig(tta="twice"), "Expected tta to be one of"),
        (lambda: TrainConfig(sources=(TilesSource("x"),), out=Path("m.keras"), patch=36),
         "Expected a tile size that is a multiple of 8"),
        (lambda: TrainConfig(sources=(), out=Path("m.keras")), "Received: no training data"),
        (lambda: LabelOptions(mask_mode="rgb"), "Expected mask mode to be one of"),
        (lambda: EvaluateConfig(source=TilesSource("x"), seam_width=-1), "Expected seam width"),
    ],
)
def test_bad_values_are_refused_keras_style(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "Received:" in str(info.value)


def test_fusion_options_take_their_defaults_and_are_stored() -> None:
    assert Architecture(fusion="weighted").fusion_options == {"gates": False}
    assert Architecture(fusion="cross_attention").fusion_options == {"attention_size": 16}
    arch = Architecture(fusion="cross_attention", fusion_options={"attention_size": 8})
    spec = ModelSpec(bands=3, classes=2, arch=arch)
    again = ModelSpec.from_dict(dataclasses.asdict(spec))
    assert again == spec and again.arch.fusion_options == {"attention_size": 8}


def test_model_files_of_the_flat_layout_still_load() -> None:
    old = {"bands": 3, "classes": 2, "depth": 2, "base_filters": 4, "fusion": "weighted",
           "fusion_width": None, "fusion_levels": "all", "gates": True, "attention_size": 16}
    spec = ModelSpec.from_dict(old)
    assert spec.arch == Architecture(depth=2, base_filters=4, fusion="weighted",
                                     fusion_options={"gates": True})
    info = ModelInfo(spec=spec, band_names=("r", "g", "b"),
                     normalization=Normalization.identity(3),
                     classes=(ClassInfo(0, "a"), ClassInfo(1, "b")))
    assert ModelInfo.from_json(info.to_json()) == info


def test_overlap_default_is_one_sixteenth_of_the_tile_in_library_and_shell(tmp_path: Path) -> None:
    assert TilingConfig().overlap == 32
    assert TilingConfig(tile=256).overlap == 16
    assert TilingConfig(tile=256, overlap=0).overlap == 0
    model = make_tiny_model(tmp_path / "m.keras")
    scene = write_geotiff(tmp_path / "s.tif",
                          np.random.default_rng(0).integers(0, 255, (3, 70, 90), dtype=np.uint8))
    result = CliRunner().invoke(main, ["segment", str(scene), str(tmp_path / "o.tif"), "--model",
                                       str(model), "--tile", "64", "-q"])
    assert result.exit_code == 0, result.output
    multiple = read_info(model).spec.arch.multiple
    used = TilingConfig(tile=64).for_scene(70, 90, multiple)  # fitted, on the lattice
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.tags()["GEOFUSE_OVERLAP"] == str(used.overlap)
        assert ds.tags()["GEOFUSE_TILE"] == used.label
    assert used.overlap == max(4, -(-4 // multiple) * multiple)  # 64 / 16, rounded up


@pytest.mark.parametrize(("command", "configs"), [
    ("train", (TrainConfig, Architecture, LabelOptions, TilesSource)),
    ("segment", (TilingConfig, SegmentConfig)),
    ("evaluate", (EvaluateConfig, TilingConfig, LabelOptions, TilesSource)),
])
def test_the_shell_shows_the_library_defaults(command: str, configs: tuple) -> None:
    """Every option named like a config field defaults to that field's library default."""
    defaults = {}
    for cls in reversed(configs):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
    # option destinations that differ from the field name
    aliases = {"filters": "base_filters", "images_dir": "images", "masks_dir": "masks"}
    checked = 0
    for param in main.commands[command].params:
        name = aliases.get(param.name, param.name)
        plain_flag = getattr(param, "is_flag", False) and not param.secondary_opts
        if defaults.get(name) not in (None, ()) and not param.multiple and not plain_flag:
            assert param.default == defaults[name], (command, param.name)
            checked += 1
    assert checked >= {"train": 15, "segment": 5, "evaluate": 5}[command]


def test_tile_for_a_scene() -> None:
    default = TilingConfig(overlap=64)
    # one tile: one per model call (a batch of 4 would compute three padded tiles for nothing)
    assert default.for_scene(256, 256, 8) == TilingConfig(tile=256, overlap=64, fit=False,
                                                          align=8, batch_size=1)
    assert default.for_scene(250, 100, 8).tile == 256
    assert default.for_scene(512, 512, 8) == dataclasses.replace(default, fit=False, align=8,
                                                                 batch_size=1)
    # a big scene: bigger tiles, fewer per call (4 x 512² px, +10 %, at most), fewer pixels
    # computed in the overlaps: 64 tiles of 1056 px, 1.06 patch pixels per scene pixel at 8192²
    # (196 tiles of 616 px, three per call, 1.11 before)
    big = TilingConfig().for_scene(8192, 8192, 8)
    assert (big.tile, big.batch_size, big.overlap) == (1056, 1, 32)
    assert big.grid(8192, 8192).patch_pixels / 8192**2 < 1.065
    assert TilingConfig(batch_size=1).for_scene(8192, 8192, 8).tile <= 640
    # a 5000 x 100 strip: 11 tiles of 512² px (the last pushed back over its neighbour), each
    # mostly padding across the strip, computed 5.8 patch pixels per scene pixel; 16 square
    # tiles of 384 px, 4.7; one tile as narrow as the strip (5000 x 104 px, within one call's
    # pixels) computes 1.04, with no seam at all
    fitted = default.for_scene(5000, 100, 8)
    assert (fitted.shape, fitted.batch_size, fitted.fit) == ((5000, 104), 1, False)
    assert fitted.grid(5000, 100).patch_pixels == 5000 * 104
    assert fitted.for_scene(5000, 100, 8) == fitted
    assert TilingConfig(overlap=64, fit=False).for_scene(5000, 100, 8).shape == (512, 512)
    # a longer strip: tiles as narrow as it, fitted along it
    strip = default.for_scene(20000, 100, 8)
    assert strip.tile_width == 104 and len(strip.grid(20000, 100).col_starts) == 1
    assert strip.grid(20000, 100).patch_pixels / (20000 * 100) < 1.15
    # a 768 x 1024 scene: one 768 x 1024 tile (one 1024² tile before: 1.33 patch pixels per
    # scene pixel); test-time rotations turn tiles, so they keep the square one
    assert default.for_scene(768, 1024, 8).shape == (768, 1024)
    assert default.for_scene(768, 1024, 8, square=True).shape == (1024, 1024)
    assert TilingConfig(tile=1024).for_scene(768, 1024, 8).label == "768x1024"
    # the overlap becomes a whole number of the model's lattice steps
    assert TilingConfig(overlap=50).for_scene(5000, 5000, 8).overlap == 56
    small = TilingConfig(tile=64, overlap=40).for_scene(30, 30, 4)
    assert small == TilingConfig(tile=32, overlap=16, fit=False, align=4, batch_size=1)
    assert small.for_scene(30, 30, 4) == small
