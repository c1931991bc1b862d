"""Fixtures shared by the tests (helpers the tests import live in :mod:`tests.helpers`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import REAL, REQUIRE_REAL, ROOT, make_tiny_model


@pytest.fixture(scope="session", autouse=True)
def _conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """OpenVINO conversions made by the suite go to a temporary cache, never the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GEOFUSE_CACHE_DIR", str(tmp_path_factory.mktemp("geofuse_cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def real() -> Path:
    """The shared real-data folder (../shared/data/real beside the checkout).

    Without it the test skips with one line; with ``GEOFUSE_REQUIRE_REAL_DATA=1`` (CI sets
    it) it fails instead, so CI never skips silently.
    """
    if not REAL.is_dir():
        message = (f"real data not found at {REAL} (set GEOFUSE_REAL_DATA to its folder; "
                   "GEOFUSE_REQUIRE_REAL_DATA=1 makes this a failure)")
        if REQUIRE_REAL:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return REAL


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory of cached tiny model files: ``tiny_models(bands=3, classes=3, fusion=...)``."""
    cache: dict[tuple, Path] = {}
    folder = tmp_path_factory.mktemp("models")

    def get(**kwargs: object) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            name = "_".join(f"{k}{v}" for k, v in key) or "default"
            path = folder / f"tiny_{name}.keras"
            cache[key] = make_tiny_model(path, **kwargs)  # type: ignore[arg-type]
        return cache[key]

    return get


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """``(base URL, served folder, request log)`` of a Range-capable server (own process)."""
    folder, log = tmp_path / "www", tmp_path / "requests.log"
    folder.mkdir()
    log.touch()
    server = subprocess.Popen([sys.executable, "-m", "tests.rangeserver", str(folder), str(log)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}", folder, log
    finally:
        server.terminate()
        server.wait(timeout=10)
