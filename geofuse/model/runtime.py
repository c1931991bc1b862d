"""Inference runtimes: TensorFlow or OpenVINO, f32 or bf16, and the cache of converted models.

The ``.keras`` file stays the one source of truth. For OpenVINO the network is traced once with
the fixed batch shape (``tf.function`` -> ``openvino.convert_model``), saved as OpenVINO IR in the
user cache folder and compiled for the CPU with an inference-precision hint. A cache entry is keyed
by the model file's SHA-256, the input shape, the OpenVINO version and the entry layout; it is
written under a temporary name and renamed into place, and carries the SHA-256 of its files, so a
corrupt or half-copied entry is rebuilt, never trusted. The IR itself is always f32: precision is
a compile-time setting (one entry serves f32 and bf16).

``auto`` picks OpenVINO when it is installed and has a CPU device, and bf16 where the CPU has
native BF16 (``OPTIMIZATION_CAPABILITIES``). An explicit ``bf16`` on a CPU without BF16 gets a
notice: OpenVINO's CPU plugin emulates it where it can (AVX-512: slower than f32) and otherwise
(AVX2 only) compiles the model in f32, which is then reported as the f32 it is. Where OpenVINO
is missing, or cannot convert a model, ``auto`` falls back to TensorFlow with one notice.

TensorFlow and OpenVINO are imported lazily, inside the functions that need them. OpenVINO is
imported without its usage telemetry (which would otherwise report every import and conversion
over the network and keep a client id in ``~/intel``): see ``import_openvino()``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import geofuse
from geofuse.checks import choice as check_value
from geofuse.config import PRECISIONS, RUNTIMES, TilingConfig
from geofuse.errors import ConfigError, ModelError, first_line
from geofuse.model.modelfile import LoadedModel, file_digest
from geofuse.read.grid import tile_shape

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "RUNTIMES", "Predictor", "RuntimeChoice", "choose_runtime",
           "make_predictor", "pipelined"]
CACHE_ENV = "GEOFUSE_CACHE_DIR"
"""Environment variable naming the cache folder (default: ``$XDG_CACHE_HOME/geofuse``)."""
CACHE_LAYOUT = 1
"""Version of the cache entry layout; part of every key."""
CACHE_ENTRIES = 64
"""Conversions kept (one per model and tile shape; 3.5 MB each for the default model); the
least recently used go first."""
_ENTRY = "entry.json"
_IR_FILES = ("model.xml", "model.bin")
_unconvertible: dict[str, ModelError] = {}
"""Conversion failures of this process by cache key, so a failing model is tried once."""


# --------------------------------------------------------------------------- choosing a runtime


@dataclass(frozen=True)
class OpenVinoProbe:
    """Whether OpenVINO can run here.

    Attributes:
        version: The OpenVINO version, or None when it cannot be used.
        bf16: The CPU has native BF16 support.
        reason: Why OpenVINO cannot be used (None when it can).

    """

    version: str | None
    bf16: bool = False
    reason: str | None = None


def import_openvino() -> Any:
    """Import and return the ``openvino`` module, with its usage telemetry left out.

    OpenVINO's model converter sends usage events (from ``import openvino`` on) unless the
    ``openvino_telemetry`` package is missing, in which case it uses its own no-op stub. The
    first import is therefore made with that package hidden; afterwards it is importable again
    for anyone else. When something imported OpenVINO earlier, its choice stands.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if hide:
            del sys.modules["openvino_telemetry"]
    return openvino


@functools.lru_cache(maxsize=1)
def probe_openvino() -> OpenVinoProbe:
    """Import OpenVINO and look at its CPU device, once per process."""
    try:
        ov = import_openvino()
        core = _core()
        if "CPU" not in core.available_devices:
            return OpenVinoProbe(None, reason="OpenVINO has no CPU device here")
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # noqa: BLE001 - ImportError, missing libraries, plugin errors
        return OpenVinoProbe(None, reason=f"OpenVINO unavailable: {first_line(exc)}")
    return OpenVinoProbe(ov.get_version().split("-")[0], bf16="BF16" in caps)


@functools.lru_cache(maxsize=1)
def openvino_emulates_bf16() -> bool:
    """Whether OpenVINO emulates bf16 on this CPU without BF16, rather than compiling f32.

    The CPU plugin's precision hint is read back from a one-operation model (about 0.1 s),
    once per process, and only when bf16 is requested on such a CPU.
    """
    import numpy as np

    try:
        ov, core = import_openvino(), _core()
        try:
            from openvino import opset8 as ops
        except ImportError:  # OpenVINO before 2024.x kept the opsets under runtime
            from openvino.runtime import opset8 as ops
        x = ops.parameter([1, 4], np.float32)
        compiled = core.compile_model(ov.Model([ops.relu(x)], [x]), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "bf16"})
        return bool(compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16)
    except Exception:  # noqa: BLE001 - any failure: assume the f32 fallback
        return False


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return import_openvino().Core()


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
        precision: ``f32`` or ``bf16``.
        version: The runtime's version.
        auto: The runtime was picked automatically (so it may fall back to TensorFlow).
        notice: Why the choice differs from what was asked or what is best (one line), or None.

    """

    runtime: str
    precision: str
    version: str
    auto: bool = False
    notice: str | None = None

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


def choose_runtime(runtime: str | TilingConfig = "auto", precision: str = "auto") -> RuntimeChoice:
    """Resolve ``auto`` settings against what this machine offers.

    Args:
        runtime: ``auto``, ``tensorflow`` or ``openvino``; or a
            :class:`~geofuse.config.TilingConfig`, whose ``runtime`` and ``precision`` are used.
        precision: ``auto``, ``f32`` or ``bf16`` (bf16 needs OpenVINO).

    Returns:
        The concrete :class:`RuntimeChoice`.

    Raises:
        ConfigError: Unknown names, ``openvino`` asked for where it cannot run, or ``bf16``
            with TensorFlow.

    """
    if isinstance(runtime, TilingConfig):
        runtime, precision = runtime.runtime, runtime.precision
    check_choice(runtime, precision)
    probe = probe_openvino() if runtime != "tensorflow" else OpenVinoProbe(None)
    if runtime == "openvino" and probe.version is None:
        raise ConfigError(f"Expected OpenVINO for runtime 'openvino'. Received: {probe.reason}")
    if runtime == "auto" and probe.version is None:
        notice = f"{probe.reason}; using TensorFlow"
        if precision == "bf16":
            raise ConfigError(f"Expected OpenVINO for precision 'bf16'. Received: {probe.reason}")
        return RuntimeChoice("tensorflow", "f32", tensorflow_version(), auto=True, notice=notice)
    if runtime == "tensorflow":
        if precision == "bf16":
            raise ConfigError(
                "Expected precision 'f32' or 'auto' with runtime 'tensorflow'. Received: 'bf16'"
            )
        return RuntimeChoice("tensorflow", "f32", tensorflow_version())
    notice = None
    if precision == "auto":
        precision = "bf16" if probe.bf16 else "f32"
    elif precision == "bf16" and not probe.bf16:
        if openvino_emulates_bf16():
            notice = "this CPU has no BF16 instructions: bf16 is emulated and slower than f32"
        else:  # OpenVINO compiles it in f32 here: say so, and report what runs
            notice = "this CPU has no BF16 instructions: OpenVINO runs the model in f32"
            precision = "f32"
    assert probe.version is not None
    return RuntimeChoice("openvino", precision, probe.version, auto=runtime == "auto",
                         notice=notice)


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
        OpenVINO choice falls back to TensorFlow, with a notice, for a model OpenVINO cannot
        convert).

    Raises:
        ModelError: OpenVINO was asked for explicitly and cannot convert the model (or, on
            the first call, compile it).

    """
    choice = choice or choose_runtime()
    shape = (batch, *tile_shape(tile), loaded.info.spec.bands)
    if choice.runtime == "openvino":
        try:
            ov_model = openvino_model(loaded, shape)  # converted now: a failure shows here
            return Predictor(
                lambda streams: openvino_function(loaded, ov_model, choice.precision, threads,
                                                  streams),
                choice, shape, min(STREAMS, threads or os.cpu_count() or 1))
        except ModelError as exc:
            if not choice.auto:
                raise
            notice = f"OpenVINO cannot run {loaded.path.name} ({first_line(exc)}); using TensorFlow"
            log.warning(notice)
            choice = RuntimeChoice("tensorflow", "f32", tensorflow_version(), True, notice)
    fn = tensorflow_function(loaded.model, batch, tile, shape[3])
    return Predictor(lambda streams: fn, choice, shape)


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
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision,
                              "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if streams > 1:
        config |= {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = _core().compile_model(ov_model, "CPU", config)
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


# --------------------------------------------------------------------------- conversion cache


def cache_dir() -> Path:
    """The geofuse cache folder: ``$GEOFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/geofuse``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geofuse"


def cache_key(digest: str, shape: tuple[int, ...], ov_version: str) -> str:
    """Key of a cache entry: model digest, input shape, OpenVINO version, layout version."""
    text = json.dumps([CACHE_LAYOUT, digest, list(shape), ov_version])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def ov_reason(exc: BaseException) -> str:
    """The informative line of a converter's error (OpenVINO's first line is a source file)."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip(" -")]
    for needle in ("No conversion rule", "not supported", "Unsupported"):
        for line in lines:
            if needle in line:
                return line
    return lines[-1] if lines else type(exc).__name__


def convert_to_openvino(model: Any, shape: tuple[int | None, ...]) -> Any:
    """Trace a Keras model for ``shape`` (None = dynamic) and convert it to an ``ov.Model``.

    Raises:
        ModelError: With the operations OpenVINO cannot convert.

    """
    from geofuse.model.tfimport import import_tensorflow

    ov = import_openvino()
    tf = import_tensorflow()
    function = tf.function(lambda x: model(x, training=False))
    root = logging.getLogger()
    level = root.level
    try:
        concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="image"))
        ov_model = ov.convert_model(concrete)
    except Exception as exc:  # noqa: BLE001 - conversion failures come as many types
        raise ModelError(f"Expected a network OpenVINO can convert. "
                         f"Received: {ov_reason(exc)}") from exc
    finally:  # a failed conversion leaves the root logger at ERROR: our warnings went unseen
        root.setLevel(level)
    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


def _read_entry(entry: Path, digest: str, shape: tuple[int, ...], version: str) -> Any:
    """Read a cache entry, checking its manifest and file digests; raise ValueError if bad."""
    manifest = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
    expected = {"layout": CACHE_LAYOUT, "model_sha256": digest, "shape": list(shape),
                "openvino": version}
    if any(manifest.get(k) != v for k, v in expected.items()):
        raise ValueError("its manifest is for another model, shape or OpenVINO version")
    for name in _IR_FILES:
        if file_digest(entry / name) != manifest["files"][name]:
            raise ValueError(f"{name} does not match its recorded SHA-256")
    return _core().read_model(str(entry / "model.xml"))


def prune_cache(root: Path) -> None:
    """Discard the least recently used entries beyond ``CACHE_ENTRIES``.

    There is one entry per model and tile shape: scenes of many shapes would otherwise fill
    the disk. Entries are marked as used when read (their folder's modification time).
    """

    def used(entry: Path) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:
            return 0.0

    try:
        entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return
    for entry in sorted(entries, key=used)[: max(0, len(entries) - CACHE_ENTRIES)]:
        discard_folder(entry)


def discard_folder(entry: Path) -> None:
    """Move a folder out of the way (atomic for readers), then delete it."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def openvino_model(loaded: LoadedModel, shape: tuple[int, int, int, int]) -> Any:
    """The ``ov.Model`` of ``loaded`` for a fixed input ``shape``, from the cache when possible.

    A missing, corrupt or mismatched entry is (re)built: converted into a temporary folder
    beside it, then renamed into place. When the cache folder cannot be written the model is
    converted in memory (with a warning) and nothing is cached.

    Raises:
        ModelError: When OpenVINO cannot convert the network.

    """
    version = probe_openvino().version or "none"
    root = cache_dir() / "openvino"
    entry = root / cache_key(loaded.digest, shape, version)
    if entry.is_dir():
        try:
            ov_model = _read_entry(entry, loaded.digest, shape, version)
            with contextlib.suppress(OSError):  # used now: the last to be pruned
                os.utime(entry)
            return ov_model
        except Exception as exc:  # noqa: BLE001 - anything wrong with an entry means rebuild
            log.warning("OpenVINO cache entry %s is unusable (%s); rebuilding it",
                        entry, first_line(exc))
            discard_folder(entry)
    if entry.name in _unconvertible:
        raise _unconvertible[entry.name]
    start = time.perf_counter()
    try:
        ov_model = convert_to_openvino(loaded.model, shape)
    except ModelError as exc:
        _unconvertible[entry.name] = exc
        raise
    seconds = time.perf_counter() - start
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    except OSError as exc:
        log.warning("cannot write the OpenVINO cache in %s (%s); converting in memory",
                    root, exc.strerror or exc)
        return ov_model
    try:
        _write_entry(tmp, ov_model, loaded, shape, version, seconds)
        os.rename(tmp, entry)
    except OSError:  # another process published the same entry first, or a full disk
        shutil.rmtree(tmp, ignore_errors=True)
    prune_cache(root)
    log.info("converted %s to OpenVINO for %s in %.1f s", loaded.path.name, shape, seconds)
    return ov_model


def _write_entry(tmp: Path, ov_model: Any, loaded: LoadedModel, shape: tuple[int, ...],
                 version: str, seconds: float) -> None:
    import_openvino().save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
    manifest = {
        "layout": CACHE_LAYOUT, "model_sha256": loaded.digest, "shape": list(shape),
        "openvino": version, "model": loaded.path.name, "geofuse": geofuse.__version__,
        "convert_seconds": round(seconds, 3),
        "files": {name: file_digest(tmp / name) for name in _IR_FILES},
    }
    (tmp / _ENTRY).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o755)
