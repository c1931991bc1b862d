"""An interrupted batch's report counts the scenes finished on disk, heard of or not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from geofuse.config import BatchConfig, SegmentConfig, TilingConfig
from geofuse.scale.batch import REPORT_NAME, segment_directory
from tests.helpers import write_geotiff

SCENES = 4


def test_scenes_finished_before_the_interruption_are_done_in_the_report(
    tmp_path: Path, tiny_models
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(SCENES):
        write_geotiff(src / f"s{k}.tif", rng.integers(0, 255, (3, 40, 48), dtype=np.uint8))
    masks = [out / f"s{k}.tif" for k in range(SCENES)]

    def interrupt(done: int, total: int) -> None:
        """Stop the run when the client has heard of one scene and all are on disk."""
        if done < 1:
            return
        deadline = time.monotonic() + 120
        while not all(m.exists() for m in masks) and time.monotonic() < deadline:
            time.sleep(0.2)
        raise KeyboardInterrupt

    config = BatchConfig(
        segment=SegmentConfig(tiling=TilingConfig(tile=32, overlap=8, batch_size=2)), workers=1
    )
    with pytest.raises(KeyboardInterrupt):
        segment_directory(src, out, tiny_models(), config, progress=interrupt)
    assert all(m.exists() for m in masks)
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["complete"] is False
    assert report["totals"]["done"] == SCENES and report["totals"]["pending"] == 0
    assert all(r["status"] == "done" and r["megapixels"] > 0 for r in report["scenes"])
    # a rerun trusts them: nothing is redone
    again = segment_directory(src, out, tiny_models(), config)
    assert again.count("skipped") == SCENES
