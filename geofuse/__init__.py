"""geofuse: segment satellite and aerial GeoTIFFs with a multi-level feature-fusion U-Net.

The public API, importable from the package itself::

    from geofuse import SegmentConfig, TilingConfig, segment_scene

    result = segment_scene("scene.tif", "mask.tif", "default",
                           SegmentConfig(tiling=TilingConfig(tile=512)))

Names are imported on first use, so ``import geofuse`` (and the configurations, which are
plain values) never imports TensorFlow, OpenVINO or rasterio's heavier parts.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    # segment a scene, an array, a folder
    "segment_scene": "geofuse.segment",
    "SegmentResult": "geofuse.segment",
    "predict_array": "geofuse.arrays",
    "ArrayPrediction": "geofuse.arrays",
    "segment_directory": "geofuse.scale.batch",
    "segment_scattered": "geofuse.scale.bands",
    # configuration (plain frozen dataclasses)
    "SegmentConfig": "geofuse.config",
    "TilingConfig": "geofuse.config",
    "InputConfig": "geofuse.config",
    "VectorizeConfig": "geofuse.config",
    "BatchConfig": "geofuse.config",
    "ClusterConfig": "geofuse.config",
    # models
    "load_model": "geofuse.model.modelfile",
    "read_info": "geofuse.model.modelfile",
    "LoadedModel": "geofuse.model.modelfile",
    "ModelSpec": "geofuse.model.spec",
    "ModelInfo": "geofuse.model.spec",
    "ClassInfo": "geofuse.model.spec",
    "Normalization": "geofuse.model.spec",
    # products
    "vectorize_mask": "geofuse.products.vectorize",
    "render_preview": "geofuse.products.preview",
    "suggest": "geofuse.products.suggest",
    "SuggestConfig": "geofuse.products.suggest",
    "SuggestResult": "geofuse.products.suggest",
    # training and evaluation
    "train": "geofuse.training.train",
    "TrainConfig": "geofuse.training.config",
    "TrainResult": "geofuse.training.train",
    "TilesSource": "geofuse.training.config",
    "SceneSource": "geofuse.training.config",
    "evaluate": "geofuse.training.evaluate",
    "EvaluateConfig": "geofuse.training.config",
    # errors
    "GeofuseError": "geofuse.errors",
    "ConfigError": "geofuse.errors",
    "InputError": "geofuse.errors",
    "ModelError": "geofuse.errors",
    "OutputError": "geofuse.errors",
}

__all__ = ["__version__", *_LAZY]

def __getattr__(name: str) -> Any:
    """Import a public name on first use, so ``import geofuse`` stays light."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geofuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
