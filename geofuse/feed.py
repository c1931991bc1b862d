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


def stacked(make_patches: Callable[[Callable[[], np.ndarray]], Iterator[Patch]], size: int,
            shape: tuple[int, int, int],
            ring: int = READ_AHEAD + 2) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """Batches of ``size`` patches with their model input, filled where the patches are read.

    ``make_patches(into)`` yields the patches; each one it reads should be normalised straight
    into ``into()``, a ``shape`` slot of the batch's input (see
    :meth:`~geofuse.tiling.SceneReader.patches`); a patch that was not is copied in. The input
    arrays come from a ring of ``ring`` buffers reused in turn (no fresh memory per batch).
    Run through :func:`prefetch` with ``depth`` batches ahead, at most ``depth + 2`` arrays are
    in use at once (queued, being filled, being predicted): ``ring`` must be at least that.
    """
    buffers: list[np.ndarray | None] = [None] * ring
    count, batch = 0, []

    def current() -> np.ndarray:
        buffer = buffers[count % ring]
        if buffer is None:
            buffer = buffers[count % ring] = np.empty((size, *shape), dtype=np.float32)
        return buffer

    def into() -> np.ndarray:
        return current()[len(batch)]

    for patch in make_patches(into):
        out = current()
        if patch.data.base is not out:  # not read into its slot: copy it there
            out[len(batch)] = patch.data
            patch = replace(patch, data=out[len(batch)])
        batch.append(patch)
        if len(batch) == size:
            yield batch, out
            count, batch = count + 1, []
    if batch:
        out = current()
        out[len(batch):] = 0.0
        yield batch, out


def read_ahead(make_patches: Callable[[Callable[[], np.ndarray]], Iterator[Patch]], size: int,
               shape: tuple[int, int, int],
               env: dict[str, Any] | None = None) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """:func:`stacked` batches of ``make_patches(into)``, made ahead in a background thread.

    :data:`READ_AHEAD` batches are read and normalised into the model's input while the model
    runs.
    """
    return prefetch(lambda: stacked(make_patches, size, shape), depth=READ_AHEAD, env=env)
