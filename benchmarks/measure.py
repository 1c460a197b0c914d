"""Measuring one tool's run: :class:`Measurement` of wall time, peak memory and output size.

A run is one or more commands executed one after another (neuroglancer-scripts needs three).
Peak memory is taken two ways, because neither alone is right for multi-process tools:

- ``peak_tree_rss``: psutil polls the whole process tree and sums the resident set sizes, the
  figure that matters on a 2-core, shared machine with worker pools (igneous' pathos pool,
  precomp_host's workers). Summing RSS counts pages shared between processes once per process,
  so it is an upper bound; polling can miss a spike shorter than the interval.
- ``max_process_rss``: the largest ``VmHWM`` (the kernel's high-water mark of one process's
  resident set) seen among the tree's processes by the same poll.

Neither uses ``ru_maxrss``: Linux carries a process's peak across fork and exec (``exec_mmap``
folds the old address space's high-water mark into the signal struct), so a tool started by this
benchmark reported the benchmark's own peak (measured: a 13 MiB child of a parent that had held
800 MiB reported 814 MiB). ``VmHWM`` belongs to the address space, which exec replaces.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

#: Poll interval of the process-tree RSS sampler (seconds). One sample walks /proc (~5 ms), so
#: 10 Hz costs the measured tool ~5 % of one of its cores; the exact ``ru_maxrss`` covers
#: spikes of a single process shorter than that.
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Measurement:
    """What one run cost; ``returncode`` is the first non-zero exit code, else 0."""

    wall_s: float
    #: user + system CPU time of the command and the descendants it waited for; less
    #: sensitive than wall time to other load on a shared machine.
    cpu_s: float
    peak_tree_rss: int
    max_process_rss: int
    returncode: int


@dataclass(frozen=True)
class OutputSize:
    files: int
    bytes: int


def output_size(root: Path) -> OutputSize:
    """Number of files and their apparent size in bytes under ``root``."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return OutputSize(files, total)


def _high_water(pid: int) -> int:
    """``VmHWM`` of ``pid`` in bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(sum of the tree's resident sets, the largest high-water mark of one of its processes)."""
    total = largest = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        largest = max(largest, _high_water(p.pid))
    return total, largest


class _Sampler(threading.Thread):
    """Polls the RSS of a process tree until stopped; ``peak`` is the largest sum seen,
    ``largest`` the largest single-process high-water mark."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.largest = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            total, largest = _tree_rss(self.root)
            self.peak, self.largest = max(self.peak, total), max(self.largest, largest)
            self.stopped.wait(POLL_INTERVAL)


def _run_one(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
) -> tuple[int, float, int, int]:
    """Run ``argv``; return (exit code, CPU seconds, peak tree RSS, largest process VmHWM)."""
    with log.open("ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        # Own session: on an interrupt the whole tree (worker pools included) is killed.
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler = _Sampler(proc.pid)
        sampler.start()
        try:
            # wait4 rather than Popen.wait: it returns the child's own rusage (CPU time of
            # it and its waited-for descendants). It blocks, so the wall time ends when the
            # process does, not at the next poll.
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            sampler.stopped.set()
            sampler.join()
    cpu = usage.ru_utime + usage.ru_stime
    # The tree held at least its largest process's peak at that process's peak.
    return proc.returncode, cpu, max(sampler.peak, sampler.largest), sampler.largest


def measure(
    commands: Sequence[Sequence[str]], *, env: Mapping[str, str], cwd: Path, log: Path
) -> Measurement:
    """Run ``commands`` in sequence (stopping at the first failure), output appended to ``log``.

    :param commands: argv lists; their wall times add up, their peaks are maximised.
    :param env: the full environment of each command.
    :param cwd: working directory of each command.
    :param log: file receiving stdout and stderr of every command.
    """
    peak_tree = peak_proc = 0
    code = 0
    cpu_total = 0.0
    start = time.perf_counter()
    for argv in commands:
        code, cpu, tree, proc = _run_one(argv, env, cwd, log)
        cpu_total += cpu
        peak_tree, peak_proc = max(peak_tree, tree), max(peak_proc, proc)
        if code != 0:
            break
    wall = time.perf_counter() - start
    return Measurement(wall, cpu_total, peak_tree, peak_proc, code)
