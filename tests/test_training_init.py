"""`geofuse train --init`: fine-tuning from a model file (same classes, new classes, bands)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geofuse.cli import main
from tests.helpers import CLASSES, make_tiles, make_tiny_model, synth, write_geotiff

QUICK = ["--patch", "64", "--batch-size", "4", "--epochs", "1", "--steps", "2", "--quiet"]
STILL = [*QUICK, "--lr", "1e-9"]  # an optimiser step this small leaves the weights as they were


def run(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def weights(path: Path) -> dict[str, list[np.ndarray]]:
    from geofuse.model.modelfile import load_model

    model = load_model(path).model
    return {layer.name: layer.get_weights() for layer in model.layers if layer.get_weights()}


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-band model of the test classes (background, building, water), not trained."""
    folder = tmp_path_factory.mktemp("start")
    return make_tiny_model(
        folder / "start.keras",
        bands=3,
        classes=3,
        fusion="concat",
        class_names=tuple(c["name"] for c in CLASSES),
    )


def test_same_classes_continue_from_every_weight(tmp_path: Path, start: Path) -> None:
    """The first evaluation, before any step, is the starting model's own score (with the
    run's normalisation statistics: the data's own)."""
    from geofuse.model.modelfile import file_digest, read_info, replace_info

    tiles = make_tiles(tmp_path / "tiles", count=3, size=64)
    out = tmp_path / "m.keras"
    result = run(
        "train", "--tiles", tiles, "--out", out, "--init", start, "--val-tiles", "t00", *QUICK
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.train" / "metrics.json").read_text())
    info = read_info(out)
    assert info.normalization != read_info(start).normalization
    restated = shutil.copy(start, tmp_path / "restated.keras")
    replace_info(restated, dataclasses.replace(read_info(start), normalization=info.normalization))
    held = tmp_path / "held"
    for part in ("images", "masks"):
        (held / part).mkdir(parents=True)
        shutil.copy(tiles / part / "t00.tif", held / part / "t00.tif")
    shutil.copy(tiles / "classes.json", held / "classes.json")
    report = tmp_path / "start.json"
    scored = run(
        "evaluate",
        "--model",
        restated,
        "--tiles",
        held,
        "--tile",
        "64",
        "--exact-tile",
        "--report",
        report,
    )
    assert scored.exit_code == 0, scored.output
    own = json.loads(report.read_text())
    before = metrics["start_validation"]
    assert before["mean_iou"] == pytest.approx(own["mean_iou"], abs=1e-6)
    assert np.array_equal(before["confusion_matrix"], own["confusion_matrix"])

    init = info.provenance["init"]
    assert init["model"] == "start.keras" and init["sha256"] == file_digest(start)
    assert init["classes_carried"] == ["background", "building", "water"]
    assert (init["bands"], init["normalization"]) == ("same", "recomputed")
    assert info.spec.arch == read_info(start).spec.arch  # the start's architecture wins
    card = run("info", out)
    assert f"started_from: start.keras (sha256 {file_digest(start)})" in card.output


def test_new_classes_get_a_new_head_with_the_rows_of_the_same_names(
    tmp_path: Path, start: Path
) -> None:
    folder = tmp_path / "roofs"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(2):
        image, labels = synth(i, 64, 64)
        write_geotiff(folder / "images" / f"r{i}.tif", image)
        write_geotiff(
            folder / "masks" / f"r{i}.tif", np.where(labels == 1, 255, 0).astype(np.uint8)
        )
    out = tmp_path / "roofs.keras"
    result = run(
        "train",
        "--tiles",
        folder,
        "--out",
        out,
        "--init",
        start,
        "--class-names",
        "ground,Building",
        "--val-fraction",
        "0",
        *STILL,
    )
    assert result.exit_code == 0, result.output
    old, new = weights(start), weights(out)
    assert np.allclose(new["logits"][0][..., 1], old["logits"][0][..., 1], atol=1e-6)
    assert new["logits"][1][1] == pytest.approx(old["logits"][1][1], abs=1e-6)
    assert not any(
        np.allclose(new["logits"][0][..., 0], old["logits"][0][..., k], atol=1e-3) for k in range(3)
    )  # ground: no class of that name, fresh weights
    assert np.allclose(new["dec0"][0], old["dec0"][0], atol=1e-6)  # the rest carried over

    from geofuse.model.modelfile import read_info

    init = read_info(out).provenance["init"]
    assert init["classes_carried"] == ["Building"]


@pytest.mark.parametrize(("bands", "expected"), [(1, "sum"), (4, "mean")])
def test_another_band_count_adapts_the_first_convolution(
    tmp_path: Path, start: Path, bands: int, expected: str
) -> None:
    """One band takes the sum of the three filters; a fourth band takes their mean."""
    tiles = make_tiles(tmp_path / "tiles", count=2, size=64)
    for image in (tiles / "images").iterdir():
        rgb = synth(int(image.stem[1:]), 64, 64)[0]
        data = rgb[:1] if bands == 1 else np.concatenate([rgb, rgb[:1]])
        write_geotiff(image, data)
    out = tmp_path / "m.keras"
    result = run(
        "train",
        "--tiles",
        tiles,
        "--out",
        out,
        "--init",
        start,
        "--val-fraction",
        "0",
        "--bands",
        ",".join(str(b + 1) for b in range(bands)),
        *STILL,
    )
    assert result.exit_code == 0, result.output
    old, new = weights(start)["enc0_a"][0], weights(out)["enc0_a"][0]
    assert new.shape == (*old.shape[:2], bands, old.shape[3])
    if expected == "sum":
        assert np.allclose(new[:, :, 0], old.sum(axis=2), atol=1e-6)
    else:
        assert np.allclose(new[:, :, :3], old, atol=1e-6)
        assert np.allclose(new[:, :, 3], old.mean(axis=2), atol=1e-6)

    from geofuse.model.modelfile import read_info

    info = read_info(out)
    assert info.provenance["init"]["bands"] == f"first convolution adapted from 3 to {bands} bands"
    assert info.provenance["init"]["normalization"] == "recomputed"


def test_a_start_that_cannot_be_used_is_refused_in_one_line(tmp_path: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2, size=64)
    plain = tmp_path / "plain.keras"
    plain.write_bytes(b"not a model")
    for init, words in (
        (tmp_path / "missing.keras", "no such model file"),
        (plain, "not a .keras model file"),
    ):
        result = run(
            "train", "--tiles", tiles, "--out", tmp_path / "m.keras", "--init", init, *QUICK
        )
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and str(init.name) in lines[0]
        assert not (tmp_path / "m.keras").exists()
    alone = run(
        "train", "--tiles", tiles, "--out", tmp_path / "m.keras", "--freeze", "encoder", *QUICK
    )
    assert alone.exit_code == 1
    assert "Expected a model to start from with freeze='encoder'" in alone.output


def test_freeze_encoder_trains_the_decoder_only(tmp_path: Path, start: Path) -> None:
    tiles = make_tiles(tmp_path / "tiles", count=2, size=64)
    out = tmp_path / "m.keras"
    result = run(
        "train",
        "--tiles",
        tiles,
        "--out",
        out,
        "--init",
        start,
        "--freeze",
        "encoder",
        "--val-fraction",
        "0",
        "--lr",
        "0.01",
        *QUICK[:-1],
    )
    assert result.exit_code == 0, result.output
    assert "encoder frozen" in result.output
    old, new = weights(start), weights(out)
    for name in old:
        same = all(np.array_equal(a, b) for a, b in zip(old[name], new[name], strict=True))
        assert same == name.startswith(("enc", "bottleneck")), name


def test_a_fine_tuning_run_resumes(tmp_path: Path, start: Path) -> None:
    from geofuse.model.spec import Architecture
    from geofuse.training.train import TilesSource, TrainConfig, train

    tiles = make_tiles(tmp_path / "tiles", count=3, size=64)
    common = dict(
        sources=(TilesSource(tiles),),
        arch=Architecture(),
        patch=64,
        batch_size=4,
        epochs=3,
        steps_per_epoch=2,
        init=start,
        seed=3,
    )
    first = train(TrainConfig(out=tmp_path / "a.keras", **common))

    class Killed(KeyboardInterrupt):
        pass

    def kill(done: int, total: int) -> None:
        if done == 2:
            raise Killed

    with pytest.raises(Killed):
        train(TrainConfig(out=tmp_path / "b.keras", **common), progress=kill)
    resumed = train(TrainConfig(out=tmp_path / "b.keras", resume=True, **common))
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in first.history], rel=1e-4
    )
    other = shutil.copy(start, tmp_path / "other.keras")
    changed = TrainConfig(out=tmp_path / "b.keras", resume=True, **{**common, "init": other})
    from geofuse.errors import ConfigError

    with pytest.raises(ConfigError, match="other.keras"):  # another start: not the same run
        train(changed)
