"""Training batches cut by Python threads and handed to tf.data through a TensorFlow queue.

:class:`ChipFeed` reads and augments batches of chips (:meth:`.ChipLoader.load`, NumPy and
GDAL) in ordinary Python threads, in table order, and enqueues them on a ``FIFOQueue``; its
tf.data pipeline only dequeues. The chips and their order are those of the tables, whatever
the number of threads.

Why not ``tf.numpy_function`` inside ``Dataset.map``: Python run in tf.data's own threads slowed
every training step of the same process by about half on a 2-core CPU, and the slowdown stayed after
the pipeline stopped (the training study, ``scripts/studies/training``: 470-650 ms a step against
230-260 with the same batches made by a Python thread).

TensorFlow is imported when an instance is made: import this module lazily or not, it is light.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from geofuse.training.chips import ChipLoader

DEPTH = 4
"""Batches waiting in the queue."""


class ChipFeed:
    """Batches of ``batch`` chips for each table of rows, made ahead by ``workers`` threads.

    Use as a context manager (or call :meth:`close`): leaving it stops the threads, and an
    error met while reading chips is raised there, in the caller's thread, in place of the
    error the training loop saw when its data ended.

    Args:
        loader: Reads and augments chips.
        tables: Tables of chip rows (:meth:`.ChipLoader.epoch_rows`), consumed lazily, so
            an endless iterator serves a timed run; each gives ``len(rows) // batch``
            batches (a remainder is dropped). A sequence of tables makes a dataset that ends
            after its last batch; an iterator, one without end.
        batch: Chips per batch.
        workers: Threads reading batches at the same time (GDAL releases the GIL).
    """

    def __init__(self, loader: ChipLoader, tables: Iterable[np.ndarray], batch: int,
                 workers: int = 2) -> None:
        import tensorflow as tf

        p, bands = loader.patch, loader.bands
        self._count = (sum(len(rows) // batch for rows in tables)
                       if isinstance(tables, Sequence) else None)
        self._queue = tf.queue.FIFOQueue(
            DEPTH, [tf.float32, tf.uint8], [(batch, p, p, bands), (batch, p, p)])
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="geofuse-chips")
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(
            target=self._produce, args=(loader, iter(tables), batch), name="geofuse-feed",
            daemon=True)
        self._thread.start()

    def _batches(self, loader: ChipLoader, tables: Iterator[np.ndarray],
                 batch: int) -> Iterator[Future]:
        """Futures of the batches, in order, at most ``workers + 1`` ahead of the queue."""
        pending: deque[Future] = deque()
        for rows in tables:
            for start in range(0, len(rows) - batch + 1, batch):
                pending.append(self._pool.submit(loader.load, rows[start:start + batch]))
                if len(pending) > self._workers:
                    yield pending.popleft()
        yield from pending

    def _produce(self, loader: ChipLoader, tables: Iterator[np.ndarray], batch: int) -> None:
        try:
            for future in self._batches(loader, tables, batch):
                self._queue.enqueue(future.result())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by close()
            if not self._closing:
                self._error = exc
                self._queue.close(cancel_pending_enqueues=True)

    def dataset(self) -> Any:
        """The tf.data pipeline of ``(chips, labels)`` batches; iterate it once.

        Chips are float32 ``(b, p, p, bands)``, labels uint8 ``(b, p, p)``. It ends after
        the last batch of a sequence of tables.
        """
        import tensorflow as tf

        queue = self._queue
        steps = (tf.data.Dataset.from_tensors(0).repeat() if self._count is None
                 else tf.data.Dataset.range(self._count))
        options = tf.data.Options()
        # Nothing here to tune (one map, a fixed prefetch), and the autotuning thread made
        # deleting a spent iterator wait up to its polling period: 30 s after a 2-minute run
        options.autotune.enabled = False
        return steps.map(
            lambda _: tuple(queue.dequeue())).prefetch(2).with_options(options)

    def close(self) -> None:
        """Stop the threads; raise the error the threads met, if any."""
        self._closing = True
        self._queue.close(cancel_pending_enqueues=True)
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> ChipFeed:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
