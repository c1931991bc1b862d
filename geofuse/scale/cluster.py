"""The Dask cluster of ``batch`` and ``segment --workers/--scheduler``: one place makes it.

A local cluster (:class:`distributed.LocalCluster`) of single-threaded worker processes, each
allowed ``max(1, cpus // workers)`` TensorFlow threads so that the workers share the cores
instead of fighting over them; or an existing scheduler (``dask scheduler`` + ``dask worker``).
``distributed`` is imported only when a client is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Iterator
from typing import Any

from geofuse.config import ClusterConfig
from geofuse.errors import ConfigError, first_line, plural


def available_cpus() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def dask_client(config: ClusterConfig, tasks: int) -> Iterator[tuple[Any, str, int | None]]:
    """Yield a client on the configured cluster: ``(client, description, TF threads)``.

    The local cluster has ``min(workers, tasks)`` single-threaded worker processes, each
    allowed ``max(1, cpus // workers)`` TensorFlow threads (None on an existing cluster: its
    workers' environment decides). A worker that dies on a task gets one retry elsewhere.

    Raises:
        ConfigError: The scheduler cannot be reached.

    """
    import dask
    from dask.distributed import Client, LocalCluster

    if config.scheduler is not None:
        try:
            client = Client(config.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"Expected a reachable Dask scheduler. Received: "
                              f"{config.scheduler} ({first_line(exc)})") from exc
        with client:
            yield client, f"scheduler {config.scheduler}", None
        return
    workers = max(1, min(config.workers, tasks))
    threads = max(1, available_cpus() // workers)
    env = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    # No dashboard; the scheduler's plain HTTP server on a free port (its default, 8787, may
    # be another cluster's, and taking another port is announced in a three-line warning).
    no_dashboard = {"dashboard": False, "dashboard_address": ":0"}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        scheduler_kwargs=no_dashboard, silence_logs=logging.ERROR, env=env,
    ) as cluster, Client(cluster) as client:
        yield client, (f"local, {plural(workers, 'worker')} x "
                       f"{plural(threads, 'TensorFlow thread')}"), threads


def lost_workers(client: Any, keys: Collection[str]) -> dict[str, list[str]]:
    """Workers that left the cluster unexpectedly (killed, out of memory, node gone).

    Read from the scheduler's event log: each unexpected ``remove-worker`` lists the tasks
    the worker was running and the finished results it held, which the scheduler then runs
    again elsewhere (up to ``distributed.scheduler.allowed-failures`` times per task).

    Args:
        client: A connected client.
        keys: The task keys of this run (other clients' tasks are left out).

    Returns:
        ``{worker address: [keys of this run it was running or holding]}``, for the workers
        that held any.

    """
    lost: dict[str, list[str]] = {}
    for _, event in client.get_events("all"):
        if not isinstance(event, dict) or event.get("action") != "remove-worker" \
                or event.get("expected"):
            continue
        held = {*event.get("processing-tasks", ()), *event.get("lost-computed-tasks", ())}
        mine = sorted(str(k) for k in held if str(k) in keys)
        if mine:
            lost.setdefault(str(event.get("worker")), []).extend(mine)
    return lost


def scheduler_lost(exc: BaseException, client: Any) -> bool:
    """Whether the error of a task's result says the client lost its scheduler.

    geofuse's tasks return their errors instead of raising them, and a dead worker comes back
    as ``KilledWorker``; so a connection error (``CommClosedError`` is an ``OSError``), a
    future cancelled because the connection was lost, or a client no longer running means
    the scheduler went away (or the network to it).
    """
    reason = getattr(exc, "reason", None)
    return isinstance(exc, OSError) or reason == "scheduler-connection-lost" \
        or client.status in ("connecting", "closing", "closed")


def worker_slots(client: Any) -> int:
    """Tasks the cluster runs at once: the sum of its workers' threads (at least 1)."""
    return max(1, sum(client.nthreads().values()))
