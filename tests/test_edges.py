"""The edges a GDAL-tool user meets: output names, progress outside a terminal, one
tile choice for segment and evaluate, batch products, and the small things around them."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from geofuse.cli import main
from geofuse.cli.progress import ProgressBar
from geofuse.colours import class_colour, hex_rgb
from geofuse.config import SegmentConfig, TilingConfig, VectorizeConfig
from geofuse.model.modelfile import read_info, resolve_model_path
from geofuse.training.metrics import confusion_matrix
from tests.conftest import ROOT, write_geotiff
from tests.trainkit import make_tiles

BARE_WORDS = {"tiles", "rows", "images", "scenes", "epochs"}


def rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


# -- 3. names that lie --------------------------------------------------------------------------
def test_output_name_rules(tmp_path: Path, tiny_models) -> None:
    model = tiny_models()
    scene = write_geotiff(tmp_path / "s.tif", rgb(0, 32, 32))
    png = cli("segment", scene, tmp_path / "out.png", "--model", model, "-q")
    assert png.exit_code == 1
    assert png.output.strip() == (
        f"Error: Expected a GeoTIFF name ending in .tif or .tiff. Received: {tmp_path}/out.png "
        "(masks are GeoTIFFs; for a picture use --preview out.png)")
    dash = cli("segment", scene, "-", "--model", model, "-q")
    assert dash.exit_code == 1 and dash.output.strip() == (
        "Error: Expected an output file name. Received: '-' (geofuse writes files, not "
        "standard output)")
    probs = cli("segment", scene, tmp_path / "m.tif", "--probabilities", tmp_path / "p.jpg",
                "--model", model, "-q")
    assert probs.exit_code == 1 and "Received: " in probs.output and "p.jpg" in probs.output
    assert not (tmp_path / "-").exists() and not (tmp_path / "m.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
    upper = cli("segment", scene, tmp_path / "new" / "M.TIFF", "--model", model, "-q")
    assert upper.exit_code == 0, upper.output
    assert (tmp_path / "new" / "M.TIFF").is_file()


# -- 4. progress ----------------------------------------------------------------------------------
def test_progress_outside_a_terminal_prints_no_bare_words(tmp_path: Path, tiny_models) -> None:
    scene = write_geotiff(tmp_path / "s.tif", rgb(1, 96, 96))
    result = subprocess.run(
        [sys.executable, "-m", "geofuse.cli", "segment", str(scene), str(tmp_path / "m.tif"),
         "--model", str(tiny_models()), "--tile", "32", "--exact-tile",
         "--vector", str(tmp_path / "v.gpkg"),
         "--preview", str(tmp_path / "q.png")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ,
                                                               TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert not BARE_WORDS & {line.strip() for line in lines}, lines
    assert not any("%" in line or "█" in line or "#" in line for line in lines), lines
    assert any(line.startswith(f"{tmp_path / 'm.tif'}: 96x96 px, 16 tiles") for line in lines)


def test_progress_in_a_terminal_names_the_phase() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar("tiles", quiet=False, stream=screen)
    bar(2, 4)
    bar(4, 4)
    bar.phase("mask: overviews and COG")
    bar.close()
    shown = screen.getvalue()
    assert "tiles" in shown and "100%" in shown
    assert "100%  mask: overviews and COG" in shown


def test_segment_announces_every_phase_after_the_tiles(tmp_path: Path, tiny_models) -> None:
    from geofuse.segment import segment_scene

    class Recorder:
        def __init__(self) -> None:
            self.events: list = []

        def __call__(self, done: int, total: int) -> None:
            self.events.append((done, total))

        def phase(self, text: str) -> None:
            self.events.append(text)

    scene = write_geotiff(tmp_path / "s.tif", rgb(2, 64, 64))
    recorder = Recorder()
    config = SegmentConfig(tiling=TilingConfig(tile=32, fit=False),
                           probabilities=tmp_path / "p.tif",
                           vector=tmp_path / "v.gpkg", preview=tmp_path / "q.png",
                           vectorize=VectorizeConfig(classes=("all",)))
    segment_scene(scene, tmp_path / "m.tif", tiny_models(), config, progress=recorder)
    phases = [e for e in recorder.events if isinstance(e, str)]
    assert phases == ["mask: overviews and COG", "probabilities: overviews and COG",
                      "polygons", "quick-look"]
    assert recorder.events.index(phases[0]) > recorder.events.index((9, 9))


# -- 5. one tile choice ---------------------------------------------------------------------------
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


# -- 6. batch products, report and lock --------------------------------------------------------
@pytest.mark.slow
def test_batch_list_of_urls_with_vector_and_preview(tmp_path: Path, served, tiny_models):
    base, folder, _ = served
    model = tiny_models()
    write_geotiff(folder / "remote.tif", rgb(3, 48, 64))
    (tmp_path / "local").mkdir()
    write_geotiff(tmp_path / "local" / "near.tif", rgb(4, 40, 40))
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# two scenes\n{base}/remote.tif\n\nlocal/near.tif\n")
    out = tmp_path / "out"
    args = ["batch", listing, out, "--model", model, "--tile", "32", "--vector", "--preview",
            "--classes", "all", "--workers", "1"]

    first = cli(*args)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert not BARE_WORDS & {line.strip() for line in lines}, lines
    assert f"[1/2] {base}/remote.tif: done" in lines or "[1/2] local/near.tif: done" in lines
    assert "1 worker x" in json.loads((out / "geofuse-report.json").read_text())["cluster"]
    for name in ("remote", "near"):
        for suffix in (".tif", ".gpkg", ".png"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
    report_path = out / "geofuse-report.json"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(report_path.stat().st_mode) == 0o666 & ~umask
    assert not (out / ".geofuse-batch.lock").exists()
    scenes = {s["scene"]: s for s in json.loads(report_path.read_text())["scenes"]}
    assert scenes[f"{base}/remote.tif"]["vector"] == "remote.gpkg"
    assert scenes["local/near.tif"]["preview"] == "near.png"
    with rasterio.open(out / "remote.tif") as ds:
        assert ds.shape == (48, 64) and ds.tags()["GEOFUSE_SOURCE"] == "remote.tif"

    (out / "near.gpkg").unlink()
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "2 scenes: 1 done, 1 skipped, 0 failed" in again.output
    scenes = {s["scene"]: s for s in json.loads(report_path.read_text())["scenes"]}
    assert scenes["local/near.tif"]["status"] == "done"
    assert scenes[f"{base}/remote.tif"]["status"] == "skipped"
    assert (out / "near.gpkg").is_file() and not (out / ".geofuse-batch.lock").exists()


# -- 7. small things ------------------------------------------------------------------------------
def test_info_default_reads_cleanly() -> None:
    result = cli("info", "default")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "{'" not in text and "['" not in text  # no Python reprs
    provenance = text[text.index("provenance:"):]
    assert "/tmp/" not in provenance and "/home/" not in provenance
    assert "out: default.keras" in provenance
    assert "name=water, color=#1f78b4" in text


def test_readable_palette_and_default_model(tmp_path: Path) -> None:
    expected = {"water": "#1f78b4", "vegetation": "#33a02c", "building": "#e31a1c",
                "road": "#808080", "land": "#d2b48c"}
    assert {c.name: c.color for c in read_info("default").classes} == expected
    assert resolve_model_path("default") == resolve_model_path(None)
    assert class_colour("Forest", 7) == "#33a02c" and class_colour("class3", 3) != "#000000"
    scene = write_geotiff(tmp_path / "s.tif", rgb(5, 24, 40))
    result = cli("segment", scene, tmp_path / "m.tif", "--model", "default")
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'm.tif'}: 40x24 px, 1 tile," in result.output
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.tags()["GEOFUSE_MODEL"] == "default.keras"
        assert ds.tags()["GEOFUSE_TILE"] == "24x40"  # one tile of the scene's shape
        assert ds.colormap(1)[3][:3] == hex_rgb(expected["water"])


def test_preview_size_enlarges_small_scenes(tmp_path: Path, tiny_models) -> None:
    scene = write_geotiff(tmp_path / "s.tif", rgb(6, 30, 40))
    assert cli("segment", scene, tmp_path / "m.tif", "--model", tiny_models(), "-q").exit_code == 0
    assert cli("preview", scene, tmp_path / "m.tif", tmp_path / "a.png").exit_code == 0
    assert Image.open(tmp_path / "a.png").size[0] == 40 + 200  # default: the scene's size
    big = cli("preview", scene, tmp_path / "m.tif", tmp_path / "b.png", "--size", "400")
    assert big.exit_code == 0, big.output
    picture = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"))
    assert picture.shape[:2] == (300, 400 + 200)
    block = picture[10:20, 30:40]  # one scene pixel: a 10 x 10 square of one colour
    assert (block == block[0, 0]).all()


def test_png_input_warns_in_one_clean_line(tmp_path: Path, tiny_models) -> None:
    Image.fromarray(np.moveaxis(rgb(7, 32, 32), 0, -1)).save(tmp_path / "x.png")
    result = subprocess.run(
        [sys.executable, "-m", "geofuse.cli", "segment", str(tmp_path / "x.png"),
         str(tmp_path / "m.tif"), "--model", str(tiny_models()), "-q"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Warning: {tmp_path / 'x.png'} is not georeferenced (no CRS, geotransform or GCPs), "
        f"so neither is {tmp_path / 'm.tif'}"]
