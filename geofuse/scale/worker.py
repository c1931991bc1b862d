"""Worker side of ``geofuse batch``: the per-scene task and the per-process model cache.

Each Dask worker process loads the model once (keyed by path and SHA-256) and builds one
prediction function per tiling, then reuses both for every scene it runs. TensorFlow's thread
pools are sized before TensorFlow runs anything in the process, so several workers on one
machine do not oversubscribe its cores. Every error of a scene becomes a ``failed`` outcome
with a one-line reason; nothing is raised to Dask except a dying worker.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geofuse.config import SegmentConfig
from geofuse.errors import GeofuseError, ModelError, first_line
from geofuse.model.modelfile import LoadedModel

if TYPE_CHECKING:
    from geofuse.model.runtime import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneTask:
    """What a worker needs to segment one scene (small and picklable)."""

    scene: str
    mask: str
    config: SegmentConfig
    model: str
    digest: str
    tf_threads: int | None


_cache_lock = threading.Lock()
_models: dict[tuple[str, str], LoadedModel] = {}
_predictors: dict[tuple[Any, ...], Predictor] = {}  # the most recent few (recent_predictor)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid-{os.getpid()}"


def _import_tensorflow() -> Any:
    """Import TensorFlow; its banner is hidden when TF_CPP_MIN_LOG_LEVEL >= 1."""
    from geofuse.model.tfimport import import_tensorflow

    return import_tensorflow(quiet=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0")


def _configure_tensorflow(threads: int | None) -> tuple[int, int]:
    """Set TensorFlow's thread pools (only possible before TF runs anything in the process).

    Before TensorFlow is imported they are set through its environment, so that a worker
    served from the OpenVINO cache never imports it.
    """
    if "tensorflow" not in sys.modules:
        if threads:
            os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = \
                str(threads)
        return (threads or 0, threads or 0)
    tf = _import_tensorflow()

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            log.warning("TensorFlow already running in worker %s; thread settings unchanged",
                        _worker_name())
    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())


def worker_model(task: SceneTask) -> tuple[LoadedModel, Callable[..., Any], float]:
    """Return this process's model and predictor for ``task``, loaded/built on first use.

    Returns:
        ``(model, predictor, seconds spent loading the model now)`` (0 when cached).

    """
    key = (task.model, task.digest)
    tiling = task.config.tiling
    with _cache_lock:
        seconds = 0.0
        if key not in _models:
            start = time.perf_counter()
            _configure_tensorflow(task.tf_threads)
            from geofuse.model.modelfile import load_model

            loaded = load_model(task.model)
            if loaded.digest != task.digest:
                raise ModelError(f"{task.model}: expected the model file the batch started "
                                 f"with. Received: a different file (sha256 "
                                 f"{loaded.digest[:12]}, not {task.digest[:12]})")
            _models.clear()  # keep one model per process
            _predictors.clear()
            _models[key] = loaded
            seconds = time.perf_counter() - start
        loaded = _models[key]
        pkey = (*key, tiling.batch_size, tiling.shape, tiling.runtime, tiling.precision)
        from geofuse.model.runtime import choose_runtime, make_predictor, recent_predictor

        predictor = recent_predictor(_predictors, pkey, lambda: make_predictor(
            loaded, tiling.batch_size, tiling.shape, choose_runtime(tiling),
            threads=task.tf_threads))
        return loaded, predictor, seconds


def describe_failure(scene: str | os.PathLike[str], exc: Exception) -> str:
    """Return a one-line reason naming the scene: GeofuseError messages as they are."""
    if isinstance(exc, GeofuseError):
        return first_line(exc)
    if isinstance(exc, MemoryError):
        return f"{scene}: out of memory (try a smaller `tile` or `batch_size`)"
    return f"{scene}: {type(exc).__name__}: {first_line(exc)}"


def run_scene(task: SceneTask) -> dict[str, Any]:
    """Segment one scene on a worker; every error becomes a ``failed`` outcome.

    Returns:
        ``status``, ``seconds``, ``megapixels``, ``error``, ``worker``, ``pid``,
        ``model_load_seconds``, ``tf_threads`` and (when done) ``runtime`` and ``notices``.

    """
    from geofuse.segment import segment_scene

    start = time.perf_counter()
    outcome: dict[str, Any] = {"status": "failed", "megapixels": 0.0, "error": None,
                               "worker": _worker_name(), "pid": os.getpid(),
                               "model_load_seconds": 0.0, "tf_threads": None}
    try:
        loaded, predictor, outcome["model_load_seconds"] = worker_model(task)
        outcome["tf_threads"] = _configure_tensorflow(None)
        result = segment_scene(task.scene, task.mask, loaded, task.config, predictor=predictor)
        outcome.update(status="done", megapixels=result.megapixels, runtime=result.runtime,
                       notices=list(result.notices))
    except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the batch
        outcome["error"] = describe_failure(task.scene, exc)
    outcome["seconds"] = time.perf_counter() - start
    return outcome
