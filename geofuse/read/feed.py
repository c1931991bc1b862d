"""Feeding patches to the model: a read-ahead thread and fixed-size batches.

:func:`prefetch` runs any iterator in a background thread so reads overlap the model (GDAL
releases the GIL while it decodes); :class:`BatchRing` turns the patch stream into the fixed
batch shape a compiled predictor takes, each patch normalised straight into its slot of the
batch (:func:`batched` and :func:`stack_batch` do the same with a copy), and :func:`read_ahead`
does all of it in the background: the model's input is ready when the model is.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import rasterio

from geofuse.read.reader import Patch, Slot

T = TypeVar("T")

_DONE = object()

PIPELINE_NICE = 10
"""Niceness added to the threads that read and stitch around the model (Linux only; 0 for none).

The model's threads use every core; a pipeline thread that preempts one of them stalls the
other at its next barrier. Lowered, the pipeline runs in the gaps (``docs/performance.md``,
``scripts/bench/bench.py``)."""


def lower_priority(nice: int | None = None) -> None:
    """Make the calling thread ``nice`` (None: :data:`PIPELINE_NICE`) steps nicer.

    Linux schedules threads apart. Raising one's niceness needs no privilege; where it is not
    supported this does nothing.
    """
    nice = PIPELINE_NICE if nice is None else nice
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:  # not permitted here: run at the usual priority
        pass


def prefetch(
    make_iter: Callable[[], Iterator[T]], depth: int = 2, env: dict[str, Any] | None = None,
    nice: int = 0,
) -> Iterator[T]:
    """Run ``make_iter()`` in a background thread, ``depth`` items ahead of the consumer.

    Exceptions raised in the thread are re-raised in the consumer. Stopping early (``close()``
    or garbage collection of the generator) stops the thread.

    Args:
        make_iter: Builds the iterator inside the worker thread.
        depth: Queue size (items read ahead).
        env: GDAL options for a ``rasterio.Env`` around the worker (GDAL config is per thread).
        nice: Niceness added to the worker thread (:func:`lower_priority`).

    """
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        lower_priority(nice)
        try:
            with rasterio.Env(**(env or {})):
                for item in make_iter():
                    if not put(item):
                        return
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
            put(exc)
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="geofuse-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def batched(patches: Iterator[Patch], size: int) -> Iterator[list[Patch]]:
    """Group patches into lists of at most ``size``."""
    batch: list[Patch] = []
    for patch in patches:
        batch.append(patch)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stack_batch(batch: Sequence[Patch], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Stack patches into a ``(size, rows, cols, bands)`` array, zero-padding a short batch.

    A fixed batch shape keeps the compiled model from retracing on the last batch. Passing the
    previous result as ``out`` reuses its memory (no fresh page faults for every batch).
    """
    shape = (size, *batch[0].data.shape)
    if out is None or out.shape != shape:
        out = np.empty(shape, dtype=np.float32)
    for i, patch in enumerate(batch):
        out[i] = patch.data
    out[len(batch) :] = 0.0
    return out


READ_AHEAD = 2  # batches read, normalised and stacked ahead of the model


class BatchRing:
    """Fixed-size batches in a ring of reused buffers, filled one patch slot at a time.

    A reader writes each patch straight into :meth:`slot` (no second copy to stack it);
    :meth:`take` counts the patch in (copying its data into the slot when it was written
    elsewhere) and returns ``(patches, inputs)`` once ``size`` patches are in. The ``ring``
    buffers are reused in turn: no fresh memory per batch.
    """

    def __init__(self, size: int, ring: int) -> None:
        self.size = size
        self._buffers: list[np.ndarray | None] = [None] * ring
        self._count = 0  # batches handed out
        self._batch: list[Patch] = []

    def slot(self, shape: tuple[int, ...]) -> np.ndarray:
        """The ``shape`` array (a view of the current buffer) for the next patch."""
        k = self._count % len(self._buffers)
        buffer = self._buffers[k]
        if buffer is None or buffer.shape[1:] != tuple(shape):
            if self._batch:
                raise ValueError(f"Expected patches of shape {buffer.shape[1:]} in one batch. "
                                 f"Received: {tuple(shape)}")
            self._buffers[k] = buffer = np.empty((self.size, *shape), dtype=np.float32)
        return buffer[len(self._batch)]

    def take(self, patch: Patch) -> tuple[list[Patch], np.ndarray] | None:
        """Count ``patch`` in; the full batch and its inputs once it holds ``size`` patches."""
        slot = self.slot(patch.data.shape)
        if not np.shares_memory(patch.data, slot):
            slot[...] = patch.data
        # the patch's data is its slot of the input: its own array (if any) is freed
        self._batch.append(replace(patch, data=slot))
        return self.rest() if len(self._batch) == self.size else None

    def rest(self) -> tuple[list[Patch], np.ndarray] | None:
        """The batch so far, zero-padded to ``size`` (None when it is empty)."""
        if not self._batch:
            return None
        inputs = self._buffers[self._count % len(self._buffers)]
        inputs[len(self._batch):] = 0.0
        batch, self._batch = self._batch, []
        self._count += 1
        return batch, inputs


def stacked(make_patches: Callable[[Slot], Iterator[Patch]], size: int,
            ring: int = READ_AHEAD + 2) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """Batches of ``size`` patches with their model input, written where the patches are read.

    ``make_patches(slot)`` yields patches, ideally normalised into ``slot(shape)`` (see
    :meth:`SceneReader.patches <geofuse.read.reader.SceneReader.patches>`). The input arrays come
    from a :class:`BatchRing` of ``ring`` buffers. Run through :func:`prefetch` with ``depth``
    batches ahead and ``n`` batches in flight, at most ``depth + 1 + n`` arrays are in use at
    once (queued, being filled, being predicted): ``ring`` must be at least that.
    """
    batches = BatchRing(size, ring)
    for patch in make_patches(batches.slot):
        full = batches.take(patch)
        if full is not None:
            yield full
    last = batches.rest()
    if last is not None:
        yield last


def read_ahead(make_patches: Callable[[Slot], Iterator[Patch]], size: int,
               env: dict[str, Any] | None = None,
               in_flight: int = 1) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """:func:`stacked` batches of ``make_patches(slot)``, made ahead in a background thread.

    ``READ_AHEAD`` batches are read, normalised and stacked while the model runs on up
    to ``in_flight`` batches it was handed (their arrays are not reused until then).
    """
    ring = READ_AHEAD + 1 + in_flight
    return prefetch(lambda: stacked(make_patches, size, ring), depth=READ_AHEAD, env=env,
                    nice=PIPELINE_NICE)
