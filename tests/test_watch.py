"""Tests of :mod:`precomp_host.host.watch`: synthetic watchdog events (no sleeping), then one real
observer of each kind (slow)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import TYPE_CHECKING

import pytest
from watchdog.events import (
    DirCreatedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from precomp_host.core.layout import PARTIAL_SUFFIX
from precomp_host.host.watch import DataWatcher, Epoch

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for ds in ("a", "b", "group/c"):
        (tmp_path / ds / "1_1_1").mkdir(parents=True)
        (tmp_path / ds / "info").write_text("{}")
    (tmp_path / "a" / "mesh").mkdir()
    (tmp_path / "a" / "mesh" / "info").write_text("{}")
    (tmp_path / "not-a-dataset").mkdir()
    return tmp_path


def watcher(root: Path) -> DataWatcher:
    return DataWatcher(root, lambda changed: None)


def test_info_rewrite_reports_its_dataset(root: Path) -> None:
    w = watcher(root)
    w.dispatch(FileModifiedEvent(str(root / "a" / "info")))
    assert w.take_ready() == {"a"}
    assert w.take_ready() == set()


def test_hand_edited_chunk_reports_without_info(root: Path) -> None:
    w = watcher(root)
    w.dispatch(FileModifiedEvent(str(root / "group" / "c" / "1_1_1" / "0-1_0-1_0-1.gz")))
    assert w.take_ready() == {"group/c"}


def test_build_in_progress_waits_for_info(root: Path) -> None:
    """The generator writes X.partial then renames; nothing is ready until info is rewritten."""
    w = watcher(root)
    chunk = root / "b" / "1_1_1" / "0-1_0-1_0-1.gz"
    w.dispatch(FileCreatedEvent(f"{chunk}.partial"))
    w.dispatch(FileMovedEvent(f"{chunk}.partial", str(chunk)))
    w.dispatch(FileModifiedEvent(str(root / "a" / "1_1_1" / "x")))  # another dataset: ready
    assert w.take_ready() == {"a"}
    w.dispatch(FileModifiedEvent(str(chunk)))
    assert w.take_ready() == set()
    w.dispatch(FileCreatedEvent(str(root / "b" / "info.partial")))
    w.dispatch(FileMovedEvent(str(root / "b" / "info.partial"), str(root / "b" / "info")))
    assert w.take_ready() == {"b"}
    # After the build, a hand edit reports again.
    w.dispatch(FileModifiedEvent(str(chunk)))
    assert w.take_ready() == {"b"}


def test_sub_infos_belong_to_their_dataset(root: Path) -> None:
    w = watcher(root)
    w.dispatch(FileModifiedEvent(str(root / "a" / "mesh" / "info")))
    assert w.take_ready() == {"a"}
    assert "a/mesh" not in w.datasets


def test_new_dataset_is_learned_from_its_info(root: Path) -> None:
    w = watcher(root)
    (root / "new").mkdir()
    w.dispatch(DirCreatedEvent(str(root / "new")))
    w.dispatch(FileCreatedEvent(str(root / "new" / "info")))
    assert w.take_ready() == {"new"}
    assert "new" in w.datasets


def test_ignores_reads_and_outside_paths(root: Path) -> None:
    w = watcher(root)
    w.dispatch(FileOpenedEvent(str(root / "a" / "info")))
    w.dispatch(FileClosedNoWriteEvent(str(root / "a" / "info")))
    w.dispatch(FileModifiedEvent(str(root.parent / "elsewhere")))
    w.dispatch(FileModifiedEvent(os.fsencode(root / "a" / "info")))  # bytes paths too
    assert w.take_ready() == {"a"}


def test_epoch_wait() -> None:
    epoch = Epoch()
    assert epoch.wait(0, timeout=0) == 0
    threading.Timer(0.01, epoch.bump).start()
    assert epoch.wait(0, timeout=10) == 1


def test_debounce_thread_reports_one_batch(root: Path) -> None:
    """Events dispatched by hand to a started watcher's thread: one callback for a burst."""
    calls: list[set[str]] = []
    done = threading.Event()

    def on_change(changed: set[str]) -> None:
        calls.append(changed)
        done.set()

    w = DataWatcher(root, on_change, delay=0.05)
    w._thread = threading.Thread(target=w._run, daemon=True)  # the thread, without an observer
    w._thread.start()
    try:
        for ds in ("a", "b", "a"):
            w.dispatch(FileModifiedEvent(str(root / ds / "info")))
        assert done.wait(timeout=10)
    finally:
        w.stop()
    assert calls == [{"a", "b"}]


@pytest.mark.slow
@pytest.mark.parametrize("poll", [False, True], ids=["native", "polling"])
def test_real_observer(root: Path, poll: bool) -> None:
    changed: list[set[str]] = []
    seen = threading.Event()

    def on_change(datasets: set[str]) -> None:
        changed.append(datasets)
        seen.set()

    with DataWatcher(root, on_change, poll=poll, poll_interval=0.1):
        (root / "b" / "info.partial").write_text('{"new": 1}')
        os.replace(root / "b" / "info.partial", root / "b" / "info")
        assert seen.wait(timeout=10)
    assert {"b"} in changed


def test_hidden_folders_and_files_are_not_datasets(root: Path) -> None:
    """``--overwrite`` stages in ``.<name>.precomp-new`` and locks ``.<name>.precomp-lock``."""
    w = watcher(root)
    staging = root / ".b.precomp-new"
    w.dispatch(DirCreatedEvent(str(staging)))
    w.dispatch(FileCreatedEvent(str(staging / "1_1_1" / "0-1_0-1_0-1.gz")))
    w.dispatch(FileCreatedEvent(str(staging / "info")))
    w.dispatch(FileModifiedEvent(str(root / ".b.precomp-lock")))
    assert w.take_ready() == set()
    assert w.datasets == {"a", "b", "group/c"}


def _wait_for(changed: list[set[str]], name: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name in c for c in changed):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("poll", [False, True], ids=["native", "polling"])
def test_a_build_start_is_not_announced_its_info_is(root: Path, poll: bool) -> None:
    changed: list[set[str]] = []
    with DataWatcher(root, changed.append, poll=poll, poll_interval=0.1, delay=0.05):
        time.sleep(0.3)
        # What a fresh build does before its info: lock, folders, partial files, chunks.
        (root / ".new.precomp-lock").write_text("pid 1\n")
        (root / "new" / ".precomp-tmp").mkdir(parents=True)
        (root / "new" / "8_8_8").mkdir()
        part = root / "new" / ".precomp-tmp" / f"x{PARTIAL_SUFFIX}"
        part.write_bytes(b"chunk")
        os.replace(part, root / "new" / "8_8_8" / "0-8_0-8_0-8")
        time.sleep(0.6)
        assert changed == [], "a build's start was announced"
        (root / "new" / "info.tmp").write_text("{}")
        os.replace(root / "new" / "info.tmp", root / "new" / "info")
        assert _wait_for(changed, "new"), changed
    assert all(c <= {"new"} for c in changed), changed


@pytest.mark.slow
def test_polling_follows_a_rebuilt_dataset_with_bounded_threads(root: Path) -> None:
    changed: list[set[str]] = []
    with DataWatcher(root, changed.append, poll=True, poll_interval=0.1, delay=0.05):
        time.sleep(0.3)
        threads = threading.active_count()
        for round_ in range(3):
            shutil.rmtree(root / "b")
            time.sleep(0.3)
            for i in range(10):  # scale and chunk folders: never watched one by one
                (root / "b" / "1_1_1" / str(i)).mkdir(parents=True)
            time.sleep(0.3)
            changed.clear()
            (root / "b" / "info").write_text(f'{{"round": {round_}}}')
            assert _wait_for(changed, "b"), f"round {round_}: the rebuilt b was not followed"
        assert threading.active_count() <= threads, "a thread per folder ever seen"


@pytest.mark.slow
def test_a_new_nested_dataset_is_watched_whole(root: Path) -> None:
    """A folder that becomes a dataset (its info appears) is then watched recursively."""
    changed: list[set[str]] = []
    with DataWatcher(root, changed.append, poll_interval=0.1, delay=0.05):
        time.sleep(0.3)
        (root / "group" / "new" / "1_1_1").mkdir(parents=True)
        time.sleep(0.3)
        (root / "group" / "new" / "info").write_text("{}")
        assert _wait_for(changed, "group/new"), changed
        time.sleep(0.3)
        changed.clear()
        (root / "group" / "new" / "1_1_1" / "0-1_0-1_0-1").write_bytes(b"by hand")
        assert _wait_for(changed, "group/new"), "a chunk copied by hand was not seen"
