"""Generated GeoTIFF layouts through ``geofuse segment``: an exact output or one line, always.

A few cases here, the same ones every run (derandomised); ``scripts/fuzz_segment.py
--examples N`` draws as many new ones as wanted. The layouts and the property are in
``tests/fuzzkit.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzzkit import Layout, check_run, layouts


@pytest.fixture(scope="module")
def models(tiny_models) -> dict[int, Path]:
    return {1: tiny_models(bands=1), 3: tiny_models()}


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(layout=layouts())
def test_any_layout_segments_exactly_or_fails_in_one_line(
    layout: Layout, models: dict[int, Path]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_run(layout, Path(folder), models)
