"""Inference runtimes: TensorFlow, or OpenVINO in f32, bf16 or int8; choosing one, predicting.

The ``.keras`` file stays the one source of truth. OpenVINO runs its IR from the cache
(:mod:`geofuse.model.ovcache`): the f32 network traced for the batch shape (compiled for the CPU
with an inference-precision hint: one entry serves f32 and bf16), or the int8 network quantized
with the model's calibration chips (:mod:`geofuse.model.calibration`), reshaped to the batch
shape. With a warm cache neither TensorFlow nor NNCF is imported: the model file's metadata is
read from its zip, and the network is loaded only to convert.

``auto`` picks OpenVINO when it is installed and has a CPU device. Its precision is int8 for a
model whose file records a negligible int8 cost on held-out data
(:func:`~geofuse.model.calibration.int8_evidence`, where NNCF is installed and the CPU runs
int8), else bf16 where the CPU has native BF16 (``OPTIMIZATION_CAPABILITIES``), else f32. An
explicit ``bf16`` on a CPU without BF16 gets a notice: OpenVINO's CPU plugin emulates it where
it can (AVX-512: slower than f32) and otherwise (AVX2 only) compiles the model in f32, which is
then reported as the f32 it is. Where OpenVINO is missing, or cannot convert a model, ``auto``
falls back to TensorFlow with one notice; an automatic int8 that cannot be built falls back to
f32 the same way.

TensorFlow, OpenVINO and NNCF are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geofuse.checks import choice as check_value
from geofuse.config import PRECISIONS, RUNTIMES, TilingConfig
from geofuse.errors import ConfigError, ModelError, first_line
from geofuse.model.calibration import calibration_for, int8_evidence
from geofuse.model.modelfile import LoadedModel
from geofuse.model.ovcache import NetworkLoadError, int8_model, openvino_model, ov_reason
from geofuse.model.ovimport import (
    OpenVinoProbe,
    openvino_emulates_bf16,
    ov_core,
    probe_openvino,
)
from geofuse.model.quantize import nncf_available
from geofuse.read.grid import tile_shape

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "RUNTIMES", "Predictor", "RuntimeChoice", "choose_runtime",
           "make_predictor", "pipelined", "resolve_precision"]


# --------------------------------------------------------------------------- choosing a runtime


@functools.lru_cache(maxsize=1)
def tensorflow_version() -> str:
    """TensorFlow's version, from the installed package's metadata (no TensorFlow import)."""
    from importlib import metadata

    for name in ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from geofuse.model.tfimport import import_tensorflow

    return str(import_tensorflow().__version__)


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime and precision a run uses.

    Attributes:
        runtime: ``tensorflow`` or ``openvino``.
        precision: ``f32``, ``bf16`` or ``int8``.
        version: The runtime's version.
        auto: The runtime was picked automatically (so it may fall back to TensorFlow).
        notice: Why the choice differs from what was asked or what is best (one line), or None.
        auto_precision: The precision was picked automatically: int8 for a model whose file
            shows it costs nothing worth noting (:func:`resolve_precision`), and an int8 that
            cannot be built falls back to f32.
        calibration: A folder of calibration images for int8 (None: the model file's chips).

    """

    runtime: str
    precision: str
    version: str
    auto: bool = False
    notice: str | None = None
    auto_precision: bool = False
    calibration: str | None = None

    @property
    def label(self) -> str:
        """``openvino 2026.4.1 bf16``: the value of the output tag."""
        return f"{self.runtime} {self.version} {self.precision}"

    def describe(self) -> str:
        """One line for the user: the label, and the notice if there is one."""
        return f"runtime: {self.label}" + (f" ({self.notice})" if self.notice else "")


def check_choice(runtime: str, precision: str) -> None:
    """Refuse unknown runtime or precision names.

    Raises:
        ConfigError: Naming the allowed values.

    """
    check_value("runtime", runtime, RUNTIMES)
    check_value("precision", precision, PRECISIONS)


def choose_runtime(runtime: str | TilingConfig = "auto", precision: str = "auto",
                   model: LoadedModel | str | Path | None = None,
                   calibration: str | Path | None = None) -> RuntimeChoice:
    """Resolve ``auto`` settings against what this machine (and the model) offers.

    Args:
        runtime: ``auto``, ``tensorflow`` or ``openvino``; or a
            :class:`~geofuse.config.TilingConfig`, whose ``runtime``, ``precision`` and
            ``calibration`` are used.
        precision: ``auto``, ``f32``, ``bf16`` or ``int8`` (bf16 and int8 need OpenVINO).
        model: The model (or its file) ``auto`` may pick int8 for (:func:`resolve_precision`);
            None: decided when the predictor is made.
        calibration: A folder of calibration images for int8 (None: the model file's chips).

    Returns:
        The concrete :class:`RuntimeChoice`.

    Raises:
        ConfigError: Unknown names, ``openvino`` asked for where it cannot run, or ``bf16`` or
            ``int8`` with TensorFlow.

    """
    if isinstance(runtime, TilingConfig):
        runtime, precision, calibration = runtime.runtime, runtime.precision, runtime.calibration
    check_choice(runtime, precision)
    folder = None if calibration is None else str(calibration)
    probe = probe_openvino() if runtime != "tensorflow" else OpenVinoProbe(None)
    if runtime == "openvino" and probe.version is None:
        raise ConfigError(f"Expected OpenVINO for runtime 'openvino'. Received: {probe.reason}")
    if runtime == "auto" and probe.version is None:
        notice = f"{probe.reason}; using TensorFlow"
        if precision in ("bf16", "int8"):
            raise ConfigError(f"Expected OpenVINO for precision '{precision}'. "
                              f"Received: {probe.reason}")
        return RuntimeChoice("tensorflow", "f32", tensorflow_version(), auto=True, notice=notice)
    if runtime == "tensorflow":
        if precision in ("bf16", "int8"):
            raise ConfigError("Expected precision 'f32' or 'auto' with runtime 'tensorflow'. "
                              f"Received: '{precision}'")
        return RuntimeChoice("tensorflow", "f32", tensorflow_version())
    notice = None
    asked = precision
    if precision == "auto":
        precision = "bf16" if probe.bf16 else "f32"
    elif precision == "bf16" and not probe.bf16:
        if openvino_emulates_bf16():
            notice = "this CPU has no BF16 instructions: bf16 is emulated and slower than f32"
        else:  # OpenVINO compiles it in f32 here: say so, and report what runs
            notice = "this CPU has no BF16 instructions: OpenVINO runs the model in f32"
            precision = "f32"
    elif precision == "int8" and not probe.int8:
        notice = "OpenVINO does not list int8 among this CPU's capabilities"
    assert probe.version is not None
    choice = RuntimeChoice("openvino", precision, probe.version, auto=runtime == "auto",
                           notice=notice, auto_precision=asked == "auto", calibration=folder)
    return choice if model is None else resolve_precision(choice, model)


def resolve_precision(choice: RuntimeChoice, model: LoadedModel | str | Path) -> RuntimeChoice:
    """``choice`` with an automatic precision made int8 where the evidence allows, for ``model``.

    The rule: OpenVINO runs int8 on this CPU, NNCF is installed (to quantize on first use), no
    calibration folder is named, and the model file carries calibration chips with a record of
    what int8 costs on its held-out data that passes
    :func:`~geofuse.model.calibration.int8_evidence` (class agreement with f32 of at least
    98.5 % of valid pixels on every set, no IoU moving by more than 0.01). Reads only the
    model file's zip members: no TensorFlow.
    """
    if not choice.auto_precision or choice.runtime != "openvino" or choice.precision == "int8" \
            or choice.calibration is not None:
        return choice
    if not probe_openvino().int8 or not nncf_available():
        return choice
    path = model.path if isinstance(model, LoadedModel) else model
    try:
        passed, _ = int8_evidence(path)
    except ModelError:  # an unreadable model: its own load reports it
        return choice
    return replace(choice, precision="int8", notice=None) if passed else choice


# --------------------------------------------------------------------------- predictors


STREAMS = 2
"""Batches a long run keeps in flight on OpenVINO (:meth:`Predictor.concurrent`), each on its own
stream with its share of the cores. One stream on every core stalls both cores whenever a pipeline
thread (reading, stitching) takes one of them, at the stream's next barrier; two streams lose only
the preempted one's time. On an 8192² scene on an idle 2-core AMD EPYC that made segmenting 4 %
(f32) and 5 % (bf16) faster end to end, although the model alone is 0-5 % slower on two streams (the
performance guide, ``docs/performance.md``); each stream holds its own activations (about 500 MB
more with 1056² tiles, f32)."""


class Predictor:
    """A batch prediction function that knows which runtime it runs on.

    Called with a float32 ``(batch, rows, cols, bands)`` array, returns the float32
    ``(batch, rows, cols, classes)`` probabilities as a new array (never a view of a buffer the
    next call overwrites, so the stitcher may hold it while the next batch runs). A call uses
    every core; :meth:`concurrent` gives the function a long run calls from several threads.

    Args:
        build: ``build(n)``: the prediction function for ``n`` streams (1: a call uses every
            core), built on first use: OpenVINO compiles the model for each, and each holds
            its own buffers, so a run compiles only the one it uses.
        choice: The runtime.
        shape: The batch shape it takes.
        streams: The streams of :meth:`concurrent` (1: none).

    """

    def __init__(self, build: Callable[[int], Callable[[np.ndarray], np.ndarray]],
                 choice: RuntimeChoice, shape: tuple[int, int, int, int],
                 streams: int = 1) -> None:
        self._build = build
        self.choice = choice
        self.shape = shape
        self._streams = streams
        self._built: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
        self._lock = threading.Lock()

    def _fn(self, streams: int) -> Callable[[np.ndarray], np.ndarray]:
        with self._lock:
            if streams not in self._built:
                self._built[streams] = self._build(streams)
            return self._built[streams]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Predict one batch."""
        return self._fn(1)(x)

    def concurrent(self) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
        """``(predict, n)``: a function to call from ``n`` threads at once, one batch each.

        Keeping ``n`` batches in flight keeps the cores busy while other threads of the
        pipeline run (``STREAMS``); a single call of it is slower than one of the
        predictor itself. ``(self, 1)`` where the runtime has no such mode.
        """
        if self._streams < 2:
            return self, 1
        return self._fn(self._streams), self._streams


def pipelined(predictor: Callable[[np.ndarray], Any], tiles: int,
              batch_size: int) -> tuple[Callable[[np.ndarray], Any], int]:
    """The function, and the batches to keep in flight, to predict ``tiles`` tiles with.

    :meth:`Predictor.concurrent` when the tiles make at least as many batches of
    ``batch_size`` as its streams; the predictor itself, one batch at a time, for a single
    batch or any other function.
    """
    batches = -(-tiles // batch_size)
    if isinstance(predictor, Predictor) and batches > 1:
        fn, streams = predictor.concurrent()
        if batches >= streams:
            return fn, streams
    return predictor, 1


PREDICTORS_KEPT = 4
"""Predictors a long-lived cache keeps (:func:`recent_predictor`): each scene's fitted tile has
its own, and a traced or compiled predictor holds its runtime's buffers."""


def recent_predictor(cache: dict[Any, Predictor], key: Any,
                     build: Callable[[], Predictor]) -> Predictor:
    """The predictor for ``key`` from ``cache``, built by ``build`` when missing.

    The cache keeps only the :data:`PREDICTORS_KEPT` most recently used, so scenes of many
    shapes (``batch``, ``evaluate`` on chips of many sizes) keep memory bounded.
    """
    if key in cache:
        cache[key] = cache.pop(key)  # now the most recently used
        return cache[key]
    while len(cache) >= PREDICTORS_KEPT:
        del cache[next(iter(cache))]
    cache[key] = build()
    return cache[key]


def tensorflow_function(model: Any, batch: int, tile: int | tuple[int, int],
                        bands: int) -> Callable[[np.ndarray], np.ndarray]:
    """A ``tf.function`` with a fixed input signature, so it is traced exactly once."""
    from geofuse.model.tfimport import import_tensorflow

    tf = import_tensorflow()

    @tf.function(
        input_signature=[tf.TensorSpec((batch, *tile_shape(tile), bands), tf.float32)],
        reduce_retracing=True,
    )
    def predict(x: Any) -> Any:
        return model(x, training=False)

    return lambda x: predict(tf.constant(x)).numpy()


def make_predictor(
    loaded: LoadedModel,
    batch: int,
    tile: int | tuple[int, int],
    choice: RuntimeChoice | None = None,
    threads: int | None = None,
) -> Predictor:
    """Build the predictor for ``loaded`` on the chosen runtime.

    Args:
        loaded: The model.
        batch: Batch size (fixed: the last batch of a scene is padded).
        tile: Tile side in pixels, or its ``(rows, cols)``.
        choice: From :func:`choose_runtime`; default ``choose_runtime()``.
        threads: OpenVINO inference threads (None: all cores). TensorFlow's thread pools are
            process-wide and set by the caller before TensorFlow starts.

    Returns:
        A :class:`Predictor`; its ``choice`` is the runtime actually used (an automatic
        precision is resolved for this model, :func:`resolve_precision`; an automatic int8
        that cannot be built falls back to f32, and an automatic OpenVINO choice to
        TensorFlow for a model OpenVINO cannot convert, each with a notice).

    Raises:
        ModelError: The network cannot be loaded; or OpenVINO (int8) was asked for explicitly
            and cannot convert (quantize) the model, or, on the first call, compile it.
        InputError: A bad calibration folder.

    """
    choice = resolve_precision(choice or choose_runtime(), loaded)
    shape = (batch, *tile_shape(tile), loaded.info.spec.bands)
    if choice.runtime == "openvino" and choice.precision == "int8":
        try:
            ov_model = reshaped(int8_model(loaded, calibration_for(
                loaded.path, loaded.info, choice.calibration)), shape)
        except NetworkLoadError:
            raise
        except ModelError as exc:
            if not choice.auto_precision:
                raise
            notice = f"int8 unavailable for {loaded.path.name} ({first_line(exc)}); using f32"
            log.warning(notice)
            choice = replace(choice, precision="f32", notice=notice)
        else:
            return _openvino_predictor(loaded, ov_model, choice, shape, threads)
    if choice.runtime == "openvino":
        try:
            ov_model = openvino_model(loaded, shape)  # converted now: a failure shows here
            return _openvino_predictor(loaded, ov_model, choice, shape, threads)
        except NetworkLoadError:
            raise
        except ModelError as exc:
            if not choice.auto:
                raise
            notice = f"OpenVINO cannot run {loaded.path.name} ({first_line(exc)}); using TensorFlow"
            log.warning(notice)
            choice = RuntimeChoice("tensorflow", "f32", tensorflow_version(), True, notice)
    fn = tensorflow_function(loaded.model, batch, tile, shape[3])
    return Predictor(lambda streams: fn, choice, shape)


def _openvino_predictor(loaded: LoadedModel, ov_model: Any, choice: RuntimeChoice,
                        shape: tuple[int, int, int, int], threads: int | None) -> Predictor:
    return Predictor(
        lambda streams: openvino_function(loaded, ov_model, choice.precision, threads, streams),
        choice, shape, min(STREAMS, threads or os.cpu_count() or 1))


def reshaped(ov_model: Any, shape: tuple[int, ...]) -> Any:
    """A copy of ``ov_model`` (any input size) with the fixed input ``shape``.

    Raises:
        ModelError: When the network cannot take that shape.

    """
    model = ov_model.clone()
    try:
        model.reshape(list(shape))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for everything
        raise ModelError(f"Expected a network that takes {shape}. Received: "
                         f"{first_line(exc)}") from exc
    return model


def openvino_function(loaded: LoadedModel, ov_model: Any, precision: str,
                      threads: int | None = None,
                      streams: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """Compile ``ov_model`` (the IR of ``loaded`` from :func:`openvino_model`) as a function.

    Each call takes an infer request no other call is using (made when none is free, kept
    for the next calls), so one predictor serves several threads at once (Dask workers with
    more than one thread, batches in flight) and threads that come and go reuse the requests
    and their buffers. One stream (the latency hint) gives a call every core; ``streams``
    above 1 (the throughput hint) splits the cores between that many calls running at once
    (``STREAMS``).

    Raises:
        ModelError: When the model cannot be compiled.

    """
    # No pinning of threads to cores: batch workers are several processes on the same cores
    # (each would pin to the first ones), and on a shared machine pinning measured ~7 % slower.
    # int8: the quantized operations run in int8, the rest (softmax, resizing) in f32
    hint = "f32" if precision == "int8" else precision
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint,
                              "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if streams > 1:
        config |= {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = ov_core().compile_model(ov_model, "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for everything
        raise ModelError(f"{loaded.path}: OpenVINO cannot compile the model "
                         f"({ov_reason(exc)})") from exc
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()  # infer requests no call is using

    def predict(x: np.ndarray) -> np.ndarray:
        try:
            request = idle.get_nowait()
        except queue.Empty:  # one more call at once than ever before: a request of its own
            request = compiled.create_infer_request()
        try:
            return request.infer(x, share_inputs=True, share_outputs=False)[0]
        finally:
            idle.put(request)

    return predict
