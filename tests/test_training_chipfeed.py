"""The chip feed: batches cut by Python threads, in table order, handed to tf.data."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin


@pytest.fixture()
def loader(tmp_path: Path):  # noqa: ANN201 - a ChipLoader (TensorFlow-free import)
    from geofuse.model.spec import ClassInfo, Normalization
    from geofuse.training.chips import Augmentation, ChipLoader, Sampling
    from geofuse.training.datasets import LabelledRaster, band_scale, make_units, scan
    from geofuse.training.labels import LabelCoding

    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": 96, "height": 96, "crs": "EPSG:32633",
               "transform": from_origin(500000, 5200000, 0.5, 0.5)}
    with rasterio.open(tmp_path / "s.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(rng.integers(0, 255, (3, 96, 96), dtype=np.uint8))
    with rasterio.open(tmp_path / "l.tif", "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(rng.integers(0, 3, (1, 96, 96), dtype=np.uint8))
    classes = tuple(ClassInfo(i, f"c{i}") for i in range(3))
    raster = LabelledRaster(tmp_path / "s.tif", tmp_path / "l.tif", LabelCoding(classes=3),
                            classes)
    units = make_units([raster], ["scene"], 48)
    scan([raster], units, 3, band_scale("uint8"))
    norm = Normalization((127.0,) * 3, (64.0,) * 3, scale=1.0)
    yield ChipLoader([raster], units, 16, norm, Augmentation(augment=True), Sampling(seed=3))
    raster.close()


def _feed_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("geofuse-chips", "geofuse-feed"))]


def test_batches_come_in_table_order_whatever_the_threads(loader) -> None:  # noqa: ANN001
    from geofuse.training.chipfeed import ChipFeed

    tables = [loader.epoch_rows(0, 40), loader.epoch_rows(1, 24)]
    with ChipFeed(loader, tables, batch=8, workers=3) as feed:
        got = [(x.numpy(), y.numpy()) for x, y in feed.dataset()]
    want = [loader.load(rows[i:i + 8]) for rows in tables for i in range(0, len(rows), 8)]
    assert len(got) == len(want) == 8  # 5 + 3 batches, then the dataset ends
    for (x, y), (wx, wy) in zip(got, want, strict=True):
        assert x.shape == (8, 16, 16, 3) and y.shape == (8, 16, 16)
        np.testing.assert_array_equal(x, wx)
        np.testing.assert_array_equal(y, wy)
    assert not _feed_threads()


def test_an_endless_feed_stops_its_threads_when_left(loader) -> None:  # noqa: ANN001
    from geofuse.training.chipfeed import ChipFeed

    tables = (loader.epoch_rows(e, 16) for e in itertools.count())
    with ChipFeed(loader, tables, batch=8) as feed:
        batches = list(feed.dataset().take(5))
    assert len(batches) == 5
    assert not _feed_threads()


def test_an_error_reading_chips_is_raised_where_the_feed_is_left(loader) -> None:  # noqa: ANN001
    import tensorflow as tf

    from geofuse.training.chipfeed import ChipFeed

    bad = loader.epoch_rows(1, 8)
    bad[3, 0] = 7  # a unit that does not exist
    with pytest.raises(IndexError), ChipFeed(loader, [loader.epoch_rows(0, 8), bad], 8) as feed:
        seen = 0
        with pytest.raises(tf.errors.OpError):  # the data ends early for the training loop
            for _ in feed.dataset():
                seen += 1
        assert seen == 1
    assert not _feed_threads()


def test_the_feed_has_no_autotuning_thread(loader) -> None:  # noqa: ANN001
    # tf.data's autotuning thread polls at a period that doubles while the feed runs, and
    # deleting the spent iterator waited for it: 29 s between two networks after a
    # 2-minute run (the training study). The feed has nothing to tune.
    from geofuse.training.chipfeed import ChipFeed

    with ChipFeed(loader, [loader.epoch_rows(0, 16)], batch=8) as feed:
        dataset = feed.dataset()
        assert dataset.options().autotune.enabled is False
        assert len(list(dataset)) == 2
