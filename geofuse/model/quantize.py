"""int8 post-training quantization of an OpenVINO network with NNCF.

The network's weights and the inputs of its convolutions are quantized to 8 bits; the value
range of each quantized activation comes from running the f32 network on calibration chips
(:mod:`geofuse.model.calibration`), so the same chips always give the same int8 network. The
operations NNCF leaves in f32 (the softmax, resizing) stay f32. The settings are in
:data:`QUANTIZATION` (part of each int8 cache key); the study in ``scripts/studies/int8``
measured what they cost against f32.

NNCF is imported here only, when a network is quantized; serving an int8 network from the
cache needs OpenVINO alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from typing import Any

import numpy as np

from geofuse.errors import ModelError, first_line
from geofuse.model.ovimport import import_quietly, package_version

QUANTIZATION: dict[str, Any] = {
    "preset": "performance",
    "fast_bias_correction": True,
    "f32_layers": "ends",
    "activation_ranges": "minmax",
}
"""The NNCF settings. ``performance`` quantizes weights and activations symmetrically; the fast
bias correction shifts each quantized layer's bias by its mean error on the calibration chips;
the first convolution (on the image) and the last (the class scores) stay f32; each activation's
range is its minimum and maximum over all chips. On images the default model trained on, these
kept 99.5 % of pixels in their f32 class; symmetric alone 99.1 %, asymmetric activations
(``mixed``) 96.9 % (the ``choose`` runs of ``scripts/studies/int8``). Keeping the two
convolutions in f32 cost no measurable speed."""


def nncf_version() -> str:
    """NNCF's installed version (from its metadata, no import), or ``none``."""
    return package_version("nncf") or "none"


def nncf_available() -> bool:
    """Whether NNCF can be imported (looked up, not imported)."""
    return importlib.util.find_spec("nncf") is not None


def import_nncf() -> Any:
    """Import NNCF without its usage telemetry and with its log and progress bars quiet.

    Raises:
        ModelError: When NNCF is not installed.

    """
    try:
        nncf = import_quietly("nncf")
    except ImportError as exc:
        raise ModelError(
            "Expected NNCF to quantize the network for precision 'int8' "
            f"(pip install nncf). Received: {first_line(exc)}"
        ) from exc
    nncf.set_log_level(logging.ERROR)
    return nncf


def quantize(ov_model: Any, inputs: list[np.ndarray]) -> Any:
    """Quantize an f32 ``ov.Model`` to int8 with NNCF, calibrated on ``inputs``.

    Args:
        ov_model: The f32 network (its input may be dynamic).
        inputs: Normalised float32 ``(1, rows, cols, bands)`` inputs, each used once.

    Returns:
        The int8 ``ov.Model``.

    Raises:
        ModelError: NNCF is missing, or cannot quantize the network.

    """
    nncf = import_nncf()
    root = logging.getLogger()
    level = root.level
    try:  # NNCF draws its progress bars on stdout: kept out of the user's output
        with contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize(
                ov_model, nncf.Dataset(inputs), subset_size=len(inputs), **_settings(nncf, ov_model)
            )
    except Exception as exc:  # noqa: BLE001 - NNCF raises many types
        raise ModelError(
            f"Expected a network NNCF can quantize. Received: {first_line(exc)}"
        ) from exc
    finally:
        root.setLevel(level)


def _settings(nncf: Any, ov_model: Any) -> dict[str, Any]:
    """:data:`QUANTIZATION` as arguments of ``nncf.quantize``."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    settings: dict[str, Any] = {
        "preset": {
            "mixed": nncf.QuantizationPreset.MIXED,
            "performance": nncf.QuantizationPreset.PERFORMANCE,
        }[QUANTIZATION["preset"]],
        "fast_bias_correction": QUANTIZATION["fast_bias_correction"],
    }
    if QUANTIZATION.get("f32_layers") == "ends":  # the first and the last convolution
        convolutions = [
            op.get_friendly_name()
            for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "Convolution"
        ]
        settings["ignored_scope"] = nncf.IgnoredScope(names=[convolutions[0], convolutions[-1]])
    if QUANTIZATION.get("activation_ranges") == "minmax":
        settings["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        )
    return settings
