"""Importing OpenVINO and NNCF without their usage telemetry, and probing OpenVINO's CPU device.

OpenVINO's model converter and NNCF send usage events over the network (and keep a client id in
``~/intel``) unless the ``openvino_telemetry`` package is missing, in which case they use their
own no-op stubs: :func:`import_quietly` imports them with that package hidden.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from geofuse.errors import first_line


@dataclass(frozen=True)
class OpenVinoProbe:
    """Whether OpenVINO can run here.

    Attributes:
        version: The OpenVINO version, or None when it cannot be used.
        bf16: The CPU has native BF16 support.
        reason: Why OpenVINO cannot be used (None when it can).
        int8: The CPU plugin runs int8 networks (``OPTIMIZATION_CAPABILITIES``).

    """

    version: str | None
    bf16: bool = False
    reason: str | None = None
    int8: bool = False


def import_quietly(name: str) -> Any:
    """Import and return the module ``name`` with OpenVINO's usage telemetry left out.

    OpenVINO's model converter and NNCF send usage events unless the ``openvino_telemetry``
    package is missing, in which case they use their own no-op stubs. The first import is
    therefore made with that package hidden; afterwards it is importable again for anyone
    else. When something imported the module earlier, its choice stands.
    """
    if name in sys.modules:
        return sys.modules[name]
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        module = __import__(name)
    finally:
        if hide:
            del sys.modules["openvino_telemetry"]
    return module


def import_openvino() -> Any:
    """Import and return the ``openvino`` module, without its usage telemetry."""
    return import_quietly("openvino")


def package_version(name: str) -> str | None:
    """An installed package's version from its metadata (no import), or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def probe_openvino() -> OpenVinoProbe:
    """Import OpenVINO and look at its CPU device, once per process."""
    try:
        ov = import_openvino()
        core = ov_core()
        if "CPU" not in core.available_devices:
            return OpenVinoProbe(None, reason="OpenVINO has no CPU device here")
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # noqa: BLE001 - ImportError, missing libraries, plugin errors
        return OpenVinoProbe(None, reason=f"OpenVINO unavailable: {first_line(exc)}")
    return OpenVinoProbe(ov.get_version().split("-")[0], bf16="BF16" in caps, int8="INT8" in caps)


@functools.lru_cache(maxsize=1)
def openvino_emulates_bf16() -> bool:
    """Whether OpenVINO emulates bf16 on this CPU without BF16, rather than compiling f32.

    The CPU plugin's precision hint is read back from a one-operation model (about 0.1 s),
    once per process, and only when bf16 is requested on such a CPU.
    """
    import numpy as np

    try:
        ov, core = import_openvino(), ov_core()
        try:
            from openvino import opset8 as ops
        except ImportError:  # OpenVINO before 2024.x kept the opsets under runtime
            from openvino.runtime import opset8 as ops
        x = ops.parameter([1, 4], np.float32)
        compiled = core.compile_model(
            ov.Model([ops.relu(x)], [x]), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}
        )
        return bool(compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16)
    except Exception:  # noqa: BLE001 - any failure: assume the f32 fallback
        return False


@functools.lru_cache(maxsize=1)
def ov_core() -> Any:
    """The process's one ``openvino.Core``."""
    return import_openvino().Core()
