"""geofuse: segment satellite and aerial GeoTIFFs with a multi-level feature-fusion U-Net.

The raster half (windows, tiling, stitching) works without TensorFlow; the model half imports
it lazily.
"""

from geofuse.config import (
    ClassInfo,
    ModelInfo,
    ModelSpec,
    Normalization,
    SegmentConfig,
    TilingConfig,
)
from geofuse.errors import GeofuseError, InputError, ModelError, OutputError

__version__ = "0.1.0"

__all__ = [
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
]
