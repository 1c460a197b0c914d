"""A build's tasks on a Dask cluster: :class:`DaskExecutor` (``--cluster``).

A task is a picklable callable without arguments that writes its own files and returns the
bytes it stored. The executor runs an iterable of tasks with a bounded number in flight (the
iterable is consumed lazily, so a plan of millions of tasks is never held at once), calls
``done(nbytes)`` in the calling thread as each one finishes, and returns only once every task
succeeded; the caller's final step (``info``) comes after that, never after a failure. Without
``--cluster`` the build's own thread pool runs the same tasks in process.

* :class:`DaskExecutor`: ``tcp://host:8786`` (a running scheduler: ``dask-jobqueue`` on Slurm,
  ``dask-kubernetes``, ``dask scheduler`` by hand) or ``local:N`` (a ``LocalCluster`` of ``N``
  worker processes). Failed tasks are retried by the scheduler (``retries=``); a task whose
  worker died is rescheduled elsewhere (``distributed.scheduler.allowed-failures``). Dask
  is the optional extra ``cluster``; nothing here imports it until a cluster is asked for.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    Task = Callable[[], int]

log = logging.getLogger(__name__)

#: Retries of a failed task on a cluster before the build fails (a worker that died does not
#: count: the scheduler reschedules its tasks by itself).
RETRIES = 2
_LOCAL = re.compile(r"local:(\d+)")


class ExecutorError(Exception):
    """The cluster cannot be used as asked; the message is one line."""


class Executor(Protocol):
    #: Threads (or worker threads) that run tasks: how many run at once.
    workers: int

    def run(self, tasks: Iterable[Task], done: Callable[[int], None]) -> None:
        """Run every task; ``done(nbytes)`` per finished task; raise the first failure."""

    def close(self) -> None:
        """Release threads, the client and a cluster this executor started."""


def _call(task: Task) -> int:
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

    def run(self, tasks: Iterable[Task], done: Callable[[int], None]) -> None:
        it = iter(tasks)
        submit = self.client.submit

        def send(task: Task) -> Any:
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


class Feed:
    """Tasks handed over one at a time (a streaming build discovers them as it reads) to an
    executor's :meth:`Executor.run`, which runs on a thread of its own.

    :meth:`submit` blocks while ``capacity`` tasks wait (bounded memory: a task may carry its
    data) and raises the executor's failure as soon as there is one; :meth:`finish` returns once
    every task succeeded.
    """

    _END: Any = object()

    def __init__(self, executor: Executor, done: Callable[[int], None], capacity: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(max(1, capacity))
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(executor, done), name="precomp-feed", daemon=True
        )
        self._thread.start()

    def _tasks(self) -> Iterator[Task]:
        while not self._stopped.is_set():
            try:
                task = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if task is self._END:
                return
            yield task

    def _run(self, executor: Executor, done: Callable[[int], None]) -> None:
        try:
            executor.run(self._tasks(), done)
        except BaseException as e:  # handed to the building thread by _check
            self._error = e
        finally:
            self._stopped.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _put(self, item: Any) -> None:
        while True:
            self._check()
            if self._stopped.is_set():
                return
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def submit(self, task: Task) -> None:
        self._put(task)

    def finish(self) -> None:
        """Wait for every task; raise the first failure."""
        self._put(self._END)
        self._thread.join()
        self._check()

    def close(self) -> None:
        """Stop taking tasks (after a failure elsewhere); what is queued is dropped."""
        self._stopped.set()
        self._thread.join()
