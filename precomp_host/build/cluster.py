"""A build's tasks on a Dask cluster: :class:`DaskExecutor` (``--cluster``).

A task is a picklable callable without arguments that writes its own files and returns what
the caller counts (a region task: its bytes stored and its chunks). The executor runs an
iterable of tasks with a bounded number in flight (the iterable is consumed lazily, so a plan
of millions of tasks is never held at once), calls ``done(result)`` in the calling thread as
each one finishes, and returns only once every task succeeded; the caller's final step
(``info``) comes after that, never after a failure. Without ``--cluster`` the build's own
thread pool (build/executor.py) runs the same tasks in process.

* :class:`DaskExecutor`: ``tcp://host:8786`` (a running scheduler: ``dask-jobqueue`` on Slurm,
  ``dask-kubernetes``, ``dask scheduler`` by hand) or ``local:N`` (a ``LocalCluster`` of ``N``
  worker processes). Failed tasks are retried by the scheduler (``retries=``); a task whose
  worker died is rescheduled elsewhere (``distributed.scheduler.allowed-failures``). Dask
  is the optional extra ``cluster``; nothing here imports it until a cluster is asked for.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Retries of a failed task on a cluster before the build fails (a worker that died does not
#: count: the scheduler reschedules its tasks by itself).
RETRIES = 2
_LOCAL = re.compile(r"local:(\d+)")


class ExecutorError(Exception):
    """The cluster cannot be used as asked; the message is one line."""


def _call(task: Callable[[], T]) -> T:
    return task()


class DaskExecutor:
    """Tasks on a Dask cluster: ``tcp://host:port`` or ``local:N`` (N worker processes).

    :param in_flight: tasks submitted and not yet finished, at most (default: four per
        worker thread and at least 16: every worker has its next tasks queued behind the
        scheduler's round trip, and memory stays bounded).
    :param retries: re-runs of a task that raised, before the build fails.
    """

    def __init__(
        self, address: str, *, in_flight: int | None = None, retries: int = RETRIES
    ) -> None:
        dd = _distributed()
        self.address, self.retries = address, retries
        self._cluster: Any = None
        m = _LOCAL.fullmatch(address)
        try:
            if m is not None:
                n = int(m.group(1))
                if n < 1:
                    raise ExecutorError(f"--cluster {address}: needs at least one worker")
                # One thread per process: the codecs hold the GIL for parts of each chunk, and
                # processes are what a real cluster's workers are.
                # The dashboard (when bokeh is there) on a free port: 8787 may be another's.
                self._cluster = dd.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
                self.client = dd.Client(self._cluster)
            elif "://" in address:
                self.client = dd.Client(address, timeout="10s")
            else:
                raise ExecutorError(
                    f"--cluster {address}: use a scheduler address (tcp://host:8786) or local:N"
                )
        except ExecutorError:
            self.close()
            raise
        except (OSError, TimeoutError, ValueError) as e:
            self.close()
            raise ExecutorError(f"--cluster {address}: cannot reach the scheduler ({e})") from None
        self.workers = max(1, sum(self.client.nthreads().values()))
        # Enough in flight to hide the scheduler round trip (measured here: 15-20 ms per task
        # under load), few enough that the tasks waiting on workers stay small in memory.
        self.in_flight = in_flight or max(16, 4 * self.workers)
        log.info("cluster %s: %d worker threads, dashboard %s", address, self.workers,
                 self.client.dashboard_link)  # fmt: skip

    def run(
        self,
        tasks: Iterable[Callable[[], T]],
        done: Callable[[T], None],
        *,
        shared: Sequence[object] = (),
    ) -> None:
        """Run every task; ``done(result)`` here per finished task; raise the first failure
        (after its retries) once the tasks in flight are cancelled.

        :param shared: objects the tasks (``functools.partial``) take as arguments, sent to
            every worker once rather than with each task: a build's settings hold its source
            volume, which may be an array in memory (Dask warns from 10 MiB per task).
        """
        it = iter(tasks)
        submit = self.client.submit
        handles = {id(obj): self.client.scatter(obj, broadcast=True, hash=False) for obj in shared}

        def send(task: Callable[[], T]) -> Any:
            if handles and isinstance(task, functools.partial):
                # Dask passes a future given as an argument as its value, on the worker.
                args = [handles.get(id(a), a) for a in task.args]
                return submit(task.func, *args, **task.keywords, pure=False, retries=self.retries)
            return submit(_call, task, pure=False, retries=self.retries)

        pending = _distributed().as_completed(
            [send(t) for t in itertools.islice(it, self.in_flight)]
        )
        try:
            for fut in pending:
                done(fut.result())  # raises the task's error once its retries are spent
                fut.release()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(send(nxt))
        except BaseException:
            self.client.cancel(list(pending.futures))
            raise

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _distributed() -> Any:
    """The ``distributed`` module (untyped here: its API is called with plain values)."""
    try:
        import distributed
    except ImportError:
        raise ExecutorError("--cluster needs Dask: pip install 'precomp-host[cluster]'") from None
    return distributed
