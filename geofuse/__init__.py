"""geofuse: segment satellite and aerial GeoTIFFs with a multi-level feature-fusion U-Net.

The raster half (windows, tiling, stitching) works without TensorFlow; the model half imports
it lazily.
"""

from geofuse.config import SegmentConfig, TilingConfig
from geofuse.errors import GeofuseError, InputError, ModelError, OutputError
from geofuse.model.spec import ClassInfo, ModelInfo, ModelSpec, Normalization

__version__ = "0.1.0"

__all__ = [
    "ArrayPrediction",
    "ClassInfo",
    "GeofuseError",
    "InputError",
    "ModelError",
    "ModelInfo",
    "ModelSpec",
    "Normalization",
    "OutputError",
    "SegmentConfig",
    "TilingConfig",
    "__version__",
    "predict_array",
]

_LAZY = {"predict_array": "geofuse.arrays", "ArrayPrediction": "geofuse.arrays"}


def __getattr__(name: str) -> object:
    """Import the array API on first use, so ``import geofuse`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geofuse' has no attribute {name!r}")
