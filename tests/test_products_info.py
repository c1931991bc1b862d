"""``geofuse info``: facts about models and scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from geofuse.cli import main


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [*map(str, args)])


def test_info_default_reads_cleanly() -> None:
    result = cli("info", "default")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "{'" not in text and "['" not in text  # no Python reprs
    provenance = text[text.index("provenance:"):]
    assert "/tmp/" not in provenance and "/home/" not in provenance
    assert "out: default.keras" in provenance
    assert "name=water, color=#1f78b4" in text


def test_info_says_what_int8_would_run_on_and_whether_auto_picks_it(tiny_models, tmp_path):
    from geofuse.model.calibration import add_calibration, record_int8_check

    model = tmp_path / "m.keras"
    model.write_bytes(tiny_models(bands=3, classes=3).read_bytes())
    bare = cli("info", model)
    assert bare.exit_code == 0, bare.output
    assert "calibration_chips: none (precision int8 needs a folder of calibration images)" in (
        bare.output
    )
    assert "auto: not int8 (no int8 record in the model file)" in bare.output
    chips = np.random.default_rng(0).integers(0, 256, (5, 24, 40, 3), dtype=np.uint8)
    add_calibration(model, chips)
    record_int8_check(
        model, {"tile": {"agreement": 0.9975, "iou_change": {"a": -0.0031, "mean": 0.001}}}, {}
    )
    text = cli("info", model).output
    assert "calibration_chips: 5 of 24x40 px, sha256 " in text
    assert "auto: int8 (int8 agrees with f32 on 1 held-out set)" in text
    assert "tile: agreement 99.75%, largest IoU change 0.0031" in text
    assert "auto: int8 (" in cli("info", "default").output  # the embedded model's record
