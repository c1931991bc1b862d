"""Shared fixtures: real data location, GeoTIFF writer, tiny model files."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geofuse.model.spec import Architecture, ClassInfo, ModelInfo, ModelSpec, Normalization

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
# the shared real data beside the checkout; GEOFUSE_REAL_DATA points elsewhere
REAL = Path(os.environ.get("GEOFUSE_REAL_DATA") or ROOT.parent / "shared" / "data" / "real")
# set (CI does): a missing real-data folder fails the tests that need it instead of skipping them
REQUIRE_REAL = os.environ.get("GEOFUSE_REQUIRE_REAL_DATA", "") not in ("", "0")
SAMPLES = ROOT / "data_samples"
UTM_TRANSFORM = Affine(0.5, 0.0, 500123.5, 0.0, -0.5, 5123456.0)


def write_geotiff(
    path: Path,
    data: np.ndarray,
    crs: str | None = "EPSG:32633",
    transform: Affine = UTM_TRANSFORM,
    **profile: object,
) -> Path:
    """Write a ``(bands, h, w)`` array as a GeoTIFF with a real CRS and transform."""
    if data.ndim == 2:
        data = data[None]
    kwargs: dict = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
    return path


def tiny_spec(bands: int, classes: int, depth: int = 2, filters: int = 4,
              fusion: str = "concat", **options: object) -> ModelSpec:
    """A ModelSpec; ``options`` are Architecture fields or options of the fusion mode."""
    fields = {f.name for f in dataclasses.fields(Architecture)}
    arch = {k: v for k, v in options.items() if k in fields}
    mode_options = {k: v for k, v in options.items() if k not in fields}
    return ModelSpec(bands=bands, classes=classes, arch=Architecture(
        depth=depth, base_filters=filters, fusion=fusion, fusion_options=mode_options, **arch))


def make_tiny_model(
    path: Path,
    bands: int = 3,
    classes: int = 3,
    fusion: str = "concat",
    depth: int = 2,
    filters: int = 4,
    scale: float = 1 / 255,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
    input_dtype: str = "uint8",
    contract: dict | None = None,
    **spec_options: object,
) -> Path:
    """Build, save and return a tiny untrained fusion U-Net model file.

    ``contract`` sets more :class:`ModelInfo` fields (``band_names``, ``pixel_size``,
    ``value_range``, ...). ``spec_options`` go to :func:`tiny_spec` (e.g. ``gates=True``).
    """
    import keras

    from geofuse.model.modelfile import save_model
    from geofuse.model.network import build_unet

    keras.utils.set_random_seed(seed)
    spec = tiny_spec(bands, classes, depth, filters, fusion, **spec_options)
    info = ModelInfo(
        spec=spec,
        band_names=tuple(f"b{i + 1}" for i in range(bands)),
        normalization=Normalization.identity(bands, scale=scale),
        classes=tuple(ClassInfo(i, class_names[i] if class_names else f"class{i}",
                                f"#{40 * i % 256:02x}5a{(200 - 40 * i) % 256:02x}")
                      for i in range(classes)),
        patch_size=64,
        input_dtype=input_dtype,
    )
    info = dataclasses.replace(info, **(contract or {}))
    return save_model(build_unet(spec, patch=info.patch_size), info, path)


@pytest.fixture(scope="session", autouse=True)
def _conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """OpenVINO conversions made by the suite go to a temporary cache, never the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GEOFUSE_CACHE_DIR", str(tmp_path_factory.mktemp("geofuse_cache")))
    yield
    patch.undo()


def real_data() -> Path:
    """The shared real-data folder, or skip (fail with GEOFUSE_REQUIRE_REAL_DATA=1) without it."""
    if not REAL.is_dir():
        message = (f"real data not found at {REAL} (set GEOFUSE_REAL_DATA to its folder; "
                   "GEOFUSE_REQUIRE_REAL_DATA=1 makes this a failure)")
        if REQUIRE_REAL:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return REAL


@pytest.fixture(scope="session")
def real() -> Path:
    """The shared real-data folder (../shared/data/real beside the checkout)."""
    return real_data()


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
