"""The tiling reader on real and generated GeoTIFFs: bands, dtypes, validity, padding."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofuse.errors import InputError
from geofuse.model.spec import Normalization
from geofuse.read.feed import PIPELINE_NICE, READ_AHEAD, batched, prefetch, read_ahead, stack_batch
from geofuse.read.grid import TileGrid
from geofuse.read.reader import SceneReader
from tests.helpers import write_geotiff


def assemble_valid(reader: SceneReader, tile: int, overlap: int) -> np.ndarray:
    """Validity of the whole scene rebuilt from the patches' core windows."""
    grid = TileGrid(reader.height, reader.width, tile, overlap)
    out = np.zeros((reader.height, reader.width), dtype=np.int8) - 1
    for patch in reader.patches(grid):
        c, r = patch.tile.core, patch.tile.read
        rows = slice(int(c.row_off - r.row_off), int(c.row_off - r.row_off + c.height))
        cols = slice(int(c.col_off - r.col_off), int(c.col_off - r.col_off + c.width))
        out[c.toslices()] = patch.valid[rows, cols]
        # invalid pixels of the scene (not the mirrored pad) reach the model as 0 (band means)
        inner = grid.clip(r)
        h, w = int(inner.height), int(inner.width)
        assert not patch.data[:h, :w][~patch.valid[:h, :w]].any()
        assert patch.data.shape == (tile, tile, len(reader.bands))
        assert patch.data.dtype == np.float32 and np.isfinite(patch.data).all()
        assert patch.transform == reader.dataset.window_transform(patch.tile.read)
    assert (out >= 0).all()
    return out.astype(bool)


def test_nodata_value_marks_invalid_pixels(real: Path) -> None:
    path = real / "landsat-rasterio/RGB.byte.tif"
    with rasterio.open(path) as ds:
        expected = np.all(ds.read() != ds.nodata, axis=0)
    with SceneReader(path) as reader:
        assert reader.bands == (1, 2, 3)
        valid = assemble_valid(reader, 128, 32)
    assert 0.1 < (~expected).mean() < 0.5
    np.testing.assert_array_equal(valid, expected)


@pytest.mark.parametrize(("dtype", "nodata"), [
    ("uint8", 0), ("uint16", 65535), ("int16", -9999), ("int32", -1),
    ("uint8", 7.5),
])
def test_nodata_validity_from_values_is_gdals_mask(tmp_path: Path, dtype: str,
                                                   nodata: float) -> None:
    # whole-number nodata values the band can hold are compared in numpy; others (a
    # fraction) stay with GDAL's mask: either way the validity is GDAL's
    rng = np.random.default_rng(5)
    data = rng.integers(1, 120, (2, 70, 90)).astype(dtype)
    if float(nodata).is_integer() and np.iinfo(dtype).min <= nodata <= np.iinfo(dtype).max:
        data[0, 10:30, 5:40] = nodata
        data[1, 25:50, 30:60] = nodata
    path = write_geotiff(tmp_path / "s.tif", data, nodata=nodata)
    with rasterio.open(path) as ds:
        expected = np.all(ds.read_masks() > 0, axis=0)
    with SceneReader(path) as reader:
        valid = assemble_valid(reader, 32, 8)
    np.testing.assert_array_equal(valid, expected)


def test_external_msk_file_marks_invalid_pixels(real: Path) -> None:
    path = real / "landsat-rasterio/RGB2.byte.tif"
    with rasterio.open(f"{path}.msk") as msk:
        expected = msk.read(1) > 0
    with SceneReader(path) as reader:
        valid = assemble_valid(reader, 128, 16)
    assert (~expected).sum() > 1000
    np.testing.assert_array_equal(valid, expected)


def test_alpha_band_is_validity_not_data(real: Path) -> None:
    path = real / "landsat-rasterio/RGBA.byte.tif"
    with rasterio.open(path) as ds:
        expected = ds.read(4) > 0
    with SceneReader(path, expected_bands=3) as reader:
        assert reader.bands == (1, 2, 3)
        valid = assemble_valid(reader, 256, 32)
    np.testing.assert_array_equal(valid, expected)


def test_nan_is_invalid_and_tiny_scene_is_padded(real: Path) -> None:
    path = real / "landsat-rasterio/float_nan.tif"
    with rasterio.open(path) as ds:
        expected = np.isfinite(ds.read(1))
    with SceneReader(path) as reader:
        grid = TileGrid(reader.height, reader.width, 16, 4)
        assert len(grid) == 1
        patch = next(reader.patches(grid))
    assert patch.data.shape == (16, 16, 1)
    # past the scene the patch mirrors it, back and forth (numpy's symmetric padding)
    np.testing.assert_array_equal(
        patch.data, np.pad(patch.data[:2, :3], ((0, 14), (0, 13), (0, 0)), mode="symmetric"))
    np.testing.assert_array_equal(patch.valid[:2, :3], expected)
    assert not patch.valid[2:].any() and not patch.valid[:, 3:].any()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_dtypes_are_normalised_with_the_model_statistics(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(1, 200, size=(2, 40, 50)).astype(dtype)
    path = write_geotiff(tmp_path / f"{dtype}.tif", data, nodata=7)
    data[:, 3, 4] = 7
    with rasterio.open(path, "r+") as ds:
        ds.write(data)
    norm = Normalization(mean=(10.0, 20.0), std=(2.0, 4.0), scale=0.5, offset=1.0)
    with SceneReader(path, normalization=norm) as reader:
        grid = TileGrid(40, 50, 64, 0)
        patch = next(reader.patches(grid))
    expected = (data.astype(np.float64) * 0.5 + 1.0 - np.array([10, 20])[:, None, None]) / np.array(
        [2, 4]
    )[:, None, None]
    got = np.moveaxis(patch.data[:40, :50], -1, 0)
    assert not patch.valid[3, 4]
    got_valid = patch.valid[:40, :50]
    np.testing.assert_allclose(got[:, got_valid], expected[:, got_valid], rtol=1e-5)
    assert (got[:, 3, 4] == 0).all()


def test_band_selection_and_count_errors(tmp_path: Path) -> None:
    data = np.arange(4 * 20 * 20, dtype=np.uint16).reshape(4, 20, 20)
    path = write_geotiff(tmp_path / "four.tif", data)
    with SceneReader(path, bands=(3, 1)) as reader:
        raw, _ = reader.read_window(rasterio.windows.Window(0, 0, 20, 20))
    np.testing.assert_array_equal(raw, data[[2, 0]])
    with pytest.raises(InputError, match=r"Expected 3 bands. Received: 4 bands in .*four.tif"):
        SceneReader(path, expected_bands=3)
    with pytest.raises(InputError, match="between 1 and 4. Received: 5"):
        SceneReader(path, bands=(1, 5))


def test_missing_directory_and_corrupt_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        SceneReader(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="is a directory"):
        SceneReader(tmp_path)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(InputError, match="junk.tif: not a readable raster"):
        SceneReader(junk)


def test_truncated_tiff_fails_on_read_with_the_file_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_geotiff(
        tmp_path / "cut.tif", rng.integers(0, 255, (3, 256, 256), dtype=np.uint8),
        tiled=True, blockxsize=64, blockysize=64, compress="deflate",
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.tif"):
        with SceneReader(path) as reader:
            list(reader.patches(TileGrid(256, 256, 64, 0)))


def test_prefetch_forwards_items_and_errors() -> None:
    assert list(prefetch(lambda: iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise InputError("boom.tif: broken")

    gen = prefetch(failing)
    assert next(gen) == 1
    with pytest.raises(InputError, match="boom.tif"):
        next(gen)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread niceness is Linux's")
def test_the_read_ahead_thread_runs_nicer_than_the_model() -> None:
    def niceness():
        yield os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert PIPELINE_NICE > 0
    assert list(prefetch(niceness, nice=PIPELINE_NICE)) == [min(19, mine + PIPELINE_NICE)]
    assert list(prefetch(niceness)) == [mine]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


@pytest.mark.parametrize("slotted", [True, False])
@pytest.mark.parametrize(("height", "width"), [(96, 160), (10, 250)])
def test_read_ahead_never_overwrites_the_batch_being_predicted(
        tmp_path: Path, height: int, width: int, slotted: bool) -> None:
    """The producer fills as far ahead as it may while the consumer holds one batch.

    The inputs equal patches read and stacked the plain way (padded past the edge when the
    scene is smaller than a tile, nodata zeroed), and each patch's data is its slot, whether
    the reader wrote it there (``slotted``) or the ring copied it in.
    """
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, height, width), np.uint8)
    path = write_geotiff(tmp_path / "s.tif", image, nodata=0)
    grid = TileGrid(height, width, 16, 4)
    with SceneReader(path) as reader:
        expected = [stack_batch(b, 3).copy() for b in batched(reader.patches(grid), 3)]
        seen = 0
        batches = read_ahead(lambda slot: reader.patches(grid, slot=slot if slotted else None),
                             3)
        for i, (batch, inputs) in enumerate(batches):
            assert len(batch) == min(3, len(grid) - 3 * i)
            time.sleep(0.05)  # "predicting": the reader runs READ_AHEAD + 1 batches ahead
            np.testing.assert_array_equal(inputs, expected[i])
            assert all(np.shares_memory(p.data, inputs) for p in batch)  # no second copy
            seen += 1
    assert seen == len(expected) > READ_AHEAD + 2  # the ring of buffers went round
    assert (image == 0).any()  # some nodata pixels were zeroed


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_batches_in_flight_keep_their_inputs_and_stitch_in_order(tmp_path: Path,
                                                                 in_flight: int) -> None:
    """Several batches predicted at once from several threads: no input array is refilled
    while a call still reads it, and the mask equals the one of one batch at a time."""
    from geofuse.pipeline import run_pipeline
    from geofuse.write.stitcher import Stitcher
    from tests.helpers import MemorySink

    rng = np.random.default_rng(3)
    image = rng.integers(1, 255, (3, 90, 170), np.uint8)
    path = write_geotiff(tmp_path / "s.tif", image, nodata=0)
    grid = TileGrid(90, 170, 32, 8)
    calls = {"now": 0, "most": 0}
    lock = threading.Lock()

    def predict(x: np.ndarray) -> np.ndarray:
        with lock:
            calls["now"] += 1
            calls["most"] = max(calls["most"], calls["now"])
        seen = x.copy()
        time.sleep(0.1)  # the reader runs ahead meanwhile (and other calls start)
        np.testing.assert_array_equal(x, seen)  # nobody wrote into this batch's array
        with lock:
            calls["now"] -= 1
        scores = np.exp(seen / 64.0)  # the brightest band's class
        return scores / scores.sum(axis=-1, keepdims=True)

    masks = []
    for flight in (1, in_flight):
        sink = MemorySink(1, 90, 170, "uint8")
        stitcher = Stitcher(grid, 3, "hann", sink)
        calls["most"] = 0
        with SceneReader(path) as reader:
            batches = read_ahead(lambda slot, r=reader: r.patches(grid, slot=slot), 2,
                                 in_flight=flight)
            run_pipeline(batches, predict, stitcher, len(grid), in_flight=flight)
        stitcher.finish()
        assert calls["most"] == flight
        masks.append(sink.array[0])
    assert len(grid) > 2 * (READ_AHEAD + 1 + in_flight)  # the ring went round
    np.testing.assert_array_equal(masks[1], masks[0])
    assert len(np.unique(masks[0])) == 3


def test_batches_have_a_fixed_shape(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "s.tif", np.ones((3, 40, 40), np.uint8))
    with SceneReader(path) as reader:
        grid = TileGrid(40, 40, 16, 4)
        batches = list(batched(reader.patches(grid), 4))
    assert [len(b) for b in batches] == [4, 4, 1]
    assert stack_batch(batches[-1], 4).shape == (4, 16, 16, 3)


@pytest.mark.parametrize(("width", "height"), [(3000, 1600), (300, 9000), (100, 50)])
def test_sample_spreads_over_the_whole_scene(tmp_path: Path, width: int, height: int) -> None:
    # a ramp across the scene with a nodata collar on the left: the sample sees both ends of the
    # ramp, never a nodata pixel, and about as many values as asked for
    ramp = np.linspace(1, 250, width).astype(np.uint8)
    data = np.broadcast_to(ramp, (2, height, width)).copy()
    data[:, :, : width // 10] = 0
    scene = write_geotiff(tmp_path / "s.tif", data, nodata=0)
    with SceneReader(scene) as reader:
        values = reader.sample(pixels=1 << 16)
    assert values.shape[0] == 2 and (values > 0).all()
    lowest, highest = ramp[width // 10], ramp[-1]
    assert values.min() <= lowest + 0.15 * 250 and values.max() >= highest - 0.15 * 250
    assert (1 << 16) // 4 <= values.shape[1] <= 4 * (1 << 16) or width * height < 1 << 16
