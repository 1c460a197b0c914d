"""Notice when datasets under a folder change, and tell the pages: :class:`DataWatcher`.

A watchdog observer (``PollingObserver`` with ``poll=True``, for network mounts and Docker,
mkdocs #2477) feeds file events to :meth:`DataWatcher.dispatch`. Bursts are debounced (mkdocs'
``build_delay``), then the datasets that changed are reported and the :class:`Epoch` is bumped;
the dev server's pages wait on it over an event stream and reload the viewer.

A build in progress must not cause a reload of half-written data. The generator writes every
file as ``.precomp-tmp/<uuid>.partial`` inside the dataset and renames it into place, and writes
``info`` last; so a dataset in which a ``.partial`` file appeared is *building*, and only its
``info`` being rewritten makes it ready. Which folders are datasets is
:func:`~precomp_host.core.datasets.find_datasets`' rule, the one every index uses.
Changes made without ``.partial`` files (a chunk copied by hand) are reported after the debounce.

Which folders are watched is recomputed (:meth:`DataWatcher.resync`) whenever a folder outside
the datasets changes: the root and the folders between it and the datasets non-recursively, each
dataset on its own (recursively with inotify; non-recursively when polling, since polling a
million chunk files is too slow, and ``info`` is the signal). A watch is keyed by its folder's
inode, so a dataset deleted and rebuilt, or swapped in by ``--overwrite``'s
``renameat2(RENAME_EXCHANGE)``, is watched anew and the stale watch dropped: the watcher keeps one
watch per live folder, never one per sub-folder ever seen. Keeping the datasets in separate inotify
watches is also what keeps watchdog alive through the exchange: its recursive watch of a folder
holding both swapped names mixes up their paths and dies with a ``KeyError`` (watchdog 7.1).
Hidden folders (``.<name>.precomp-new`` staging, ``.precomp-tmp``) are never datasets, as in
:func:`~precomp_host.core.datasets.find_datasets`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)

from ..core.datasets import find_datasets, walk_folders
from ..core.layout import PARTIAL_SUFFIX
from ..core.model import INFO_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger(__name__)

#: Events that mean content changed; opened/closed-without-write/attrib do not.
_CHANGE_EVENTS = frozenset(
    {
        EVENT_TYPE_CREATED,
        EVENT_TYPE_MODIFIED,
        EVENT_TYPE_MOVED,
        EVENT_TYPE_DELETED,
        EVENT_TYPE_CLOSED,
    }
)


class Epoch:
    """A counter that pages wait on: bumped once per batch of changes (mkdocs' ``_epoch``)."""

    def __init__(self) -> None:
        self.value = 0
        self._cond = threading.Condition()

    def bump(self) -> int:
        with self._cond:
            self.value += 1
            self._cond.notify_all()
            return self.value

    def wait(self, since: int, timeout: float) -> int:
        """The epoch once it is past ``since``, or the current one after ``timeout`` s."""
        with self._cond:
            self._cond.wait_for(lambda: self.value > since, timeout=timeout)
            return self.value


class _Handler(FileSystemEventHandler):
    """Events of one watched folder, dropped once that folder is no longer the one at its path."""

    def __init__(self, watcher: DataWatcher, key: _WatchKey) -> None:
        self.watcher = watcher
        self.key = key

    def on_any_event(self, event: FileSystemEvent) -> None:
        if self.key in self.watcher._watches:
            self.watcher.dispatch(event)


#: (folder, st_dev, st_ino, recursive): a rebuilt folder, or a folder that became a dataset,
#: gets a new key and so a new watch.
_WatchKey = tuple[str, int, int, bool]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _info_identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(os.path.join(path, INFO_NAME))
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


class DataWatcher:
    """Watch ``root`` and call ``on_change(datasets)`` once per settled batch of changes.

    ::

        epoch = Epoch()
        with DataWatcher(root, lambda changed: epoch.bump()):
            serve_forever()

    :param root: the folder of datasets.
    :param on_change: called from the watcher's thread with the relative paths of the datasets
        that changed (``""`` for the root itself).
    :param poll: use watchdog's ``PollingObserver`` on the dataset folders only.
    :param delay: seconds without events before a batch is reported.
    :param poll_interval: seconds between two polls.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        on_change: Callable[[set[str]], None],
        *,
        poll: bool = False,
        delay: float = 0.1,
        poll_interval: float = 0.5,
    ) -> None:
        self.root = os.path.realpath(root)
        self.on_change = on_change
        self.poll = poll
        self.delay = delay
        self.poll_interval = poll_interval
        self.datasets: set[str] = set(find_datasets(self.root))
        self._building: set[str] = set()
        self._info_changed: set[str] = set()
        self._data_changed: set[str] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self._watches: dict[_WatchKey, ObservedWatch] = {}
        self._infos = {d: _info_identity(os.path.join(self.root, d)) for d in self.datasets}
        self._resync_wanted = False

    # -- events ----------------------------------------------------------------------------

    def dataset_of(self, rel: str) -> str:
        """The known dataset holding ``rel`` (longest prefix), else its top-level folder."""
        parts = rel.split("/")
        for i in range(len(parts) - 1, -1, -1):
            prefix = "/".join(parts[:i])
            if prefix in self.datasets:
                return prefix
        return parts[0] if len(parts) > 1 else ""

    def dispatch(self, event: FileSystemEvent) -> None:
        """Take one watchdog event (the observer's thread, or a test, calls this)."""
        if event.event_type not in _CHANGE_EVENTS:
            return
        for raw in (event.src_path, event.dest_path):
            path = os.fsdecode(raw)
            if not path:
                continue
            rel = os.path.relpath(path, self.root).replace(os.sep, "/")
            if rel == "." or rel.startswith("../"):
                continue
            if event.is_directory:
                if event.event_type != EVENT_TYPE_MODIFIED and not self._in_dataset(rel):
                    # A folder came, went or was swapped outside the datasets: the set of
                    # datasets, and so of watches, may have changed.
                    with self._cond:
                        self._resync_wanted = True
                        self._cond.notify_all()
                continue
            self._record(rel)

    def _in_dataset(self, rel: str) -> bool:
        return any(rel.startswith(d + "/") for d in self.datasets if d) or "" in self.datasets

    def _record(self, rel: str) -> None:
        folder, _, name = rel.rpartition("/")
        with self._cond:
            dataset = self.dataset_of(rel)
            # A staging folder (.<name>.precomp-new), a lock file: never a dataset of its own.
            if _hidden(dataset) or (not folder and name.startswith(".")):
                return
            if name == INFO_NAME and folder not in self.datasets and self._is_dataset_info(rel):
                self.datasets.add(folder)
                self._resync_wanted = True
                dataset = folder
            if name == INFO_NAME and folder == dataset:
                self._info_changed.add(dataset)
            elif name.endswith(PARTIAL_SUFFIX):
                self._building.add(dataset)
            else:
                self._data_changed.add(dataset)
            self._cond.notify_all()

    def _is_dataset_info(self, rel: str) -> bool:
        # mesh/info and segment_properties/info are infos too, but of a dataset's parts.
        parent = rel.rpartition("/")[0]
        return not any(parent == d or parent.startswith(d + "/") for d in self.datasets if d)

    def take_ready(self) -> set[str]:
        """The datasets to report now, forgetting them (building ones wait for their info)."""
        with self._cond:
            ready = set(self._info_changed)
            ready |= self._data_changed - self._building
            self._building -= self._info_changed
            self._info_changed.clear()
            self._data_changed &= self._building
            return ready

    def _has_pending(self) -> bool:
        return bool(
            self._resync_wanted or self._info_changed or (self._data_changed - self._building)
        )

    # -- threads ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._has_pending())
                if self._stopped:
                    return
                # Debounce: wait until no event came for `delay` seconds.
                while self._cond.wait(timeout=self.delay) and not self._stopped:
                    pass
                resync, self._resync_wanted = self._resync_wanted, False
            if resync:
                self.resync()
            ready = self.take_ready()
            if ready:
                log.info("datasets changed: %s", ", ".join(sorted(ready)) or "(root)")
                try:
                    self.on_change(ready)
                except Exception:  # the watcher must outlive a failing callback
                    log.exception("on_change failed")

    def resync(self) -> None:
        """Watch exactly the live folders: new datasets and groups added, replaced ones anew.

        A dataset whose ``info`` is not the one seen before (swapped in, rebuilt while its old
        watch was going stale) is reported as changed: its new ``info`` is the signal.
        """
        wanted: set[_WatchKey] = set()
        infos: dict[str, tuple[int, int, int, int] | None] = {}
        for rel, is_dataset in walk_folders(self.root):
            path = os.path.join(self.root, rel) if rel else self.root
            ident = _identity(path)
            if ident is None:
                continue
            wanted.add((path, *ident, is_dataset and not self.poll))
            if is_dataset:
                infos[rel] = _info_identity(path)
        with self._cond:
            for rel, info in infos.items():
                if info is not None and self._infos.get(rel) != info:
                    self._info_changed.add(rel)
            self.datasets = set(infos)
            self._infos = infos
            stale = [self._watches.pop(key) for key in self._watches.keys() - wanted]
            new = wanted - self._watches.keys()
            self._cond.notify_all()
        # The observer's calls outside our lock: unschedule stops an emitter thread, which may be
        # waiting for that lock in dispatch() (a deadlock seen as serve() ignoring SIGINT).
        if self._observer is None:
            return
        for watch in stale:
            self._observer.unschedule(watch)
        for key in new:
            try:
                watch = self._observer.schedule(_Handler(self, key), key[0], recursive=key[3])
            except OSError:  # gone again since the walk: the next event resyncs
                continue
            with self._cond:
                self._watches[key] = watch

    def start(self) -> DataWatcher:
        if self.poll:
            from watchdog.observers.polling import PollingObserver

            self._observer = PollingObserver(timeout=self.poll_interval)
        else:
            from watchdog.observers import Observer

            self._observer = Observer()
        self.resync()
        with self._cond:
            self._info_changed.clear()  # what exists at start is not news
        self._observer.start()
        self._thread = threading.Thread(target=self._run, name="DataWatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> DataWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
