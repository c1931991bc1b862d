"""Feeding patches to the model: a read-ahead thread and fixed-size batches.

:func:`prefetch` runs any iterator in a background thread so reads overlap the model (GDAL
releases the GIL while it decodes); :func:`batched` and :func:`stack_batch` turn the patch
stream into the fixed batch shape a compiled predictor takes, and :func:`read_ahead` does all
of it in the background: the model's input is ready when the model is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import rasterio

from geofuse.tiling import Patch

T = TypeVar("T")

_DONE = object()


def prefetch(
    make_iter: Callable[[], Iterator[T]], depth: int = 2, env: dict[str, Any] | None = None
) -> Iterator[T]:
    """Run ``make_iter()`` in a background thread, ``depth`` items ahead of the consumer.

    Exceptions raised in the thread are re-raised in the consumer. Stopping early (``close()``
    or garbage collection of the generator) stops the thread.

    Args:
        make_iter: Builds the iterator inside the worker thread.
        depth: Queue size (items read ahead).
        env: GDAL options for a ``rasterio.Env`` around the worker (GDAL config is per thread).

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
    """Stack patches into a ``(size, tile, tile, bands)`` array, zero-padding a short batch.

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


def stacked(patches: Iterator[Patch], size: int,
            ring: int = READ_AHEAD + 2) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """Batches of ``size`` patches with their model input, stacked where the patches are read.

    The input arrays come from a ring of ``ring`` buffers reused in turn (no fresh memory per
    batch). Run through :func:`prefetch` with ``depth`` batches ahead, at most ``depth + 2``
    arrays are in use at once (queued, being filled, being predicted): ``ring`` must be at least
    that.
    """
    buffers: list[np.ndarray | None] = [None] * ring
    for i, batch in enumerate(batched(patches, size)):
        buffers[i % ring] = out = stack_batch(batch, size, out=buffers[i % ring])
        # each patch's data becomes its slot of the input: the patch's own array is freed
        yield [replace(p, data=out[j]) for j, p in enumerate(batch)], out


def read_ahead(make_patches: Callable[[], Iterator[Patch]], size: int,
               env: dict[str, Any] | None = None) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """:func:`stacked` batches of ``make_patches()``, made ahead in a background thread.

    :data:`READ_AHEAD` batches are read, normalised and stacked while the model runs.
    """
    return prefetch(lambda: stacked(make_patches(), size), depth=READ_AHEAD, env=env)
