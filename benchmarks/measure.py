"""Measuring one tool's run: :class:`Measurement` of wall time, peak memory and output size.

A run is one or more commands executed one after another (neuroglancer-scripts needs three).
Peak memory is taken two ways, because neither alone is right for multi-process tools:

- ``peak_tree_rss``: psutil polls the whole process tree and sums the resident set sizes, the
  figure that matters on a 2-core, shared machine with worker pools (igneous' pathos pool,
  precomp_host's workers). Summing RSS counts pages shared between processes once per process,
  so it is an upper bound; polling can miss a spike shorter than the interval.
- ``max_process_rss``: ``ru_maxrss`` from ``wait4`` for the command, the kernel's exact peak of
  the largest single process among it and the descendants it waited for.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

#: Poll interval of the process-tree RSS sampler (seconds).
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class Measurement:
    """What one run cost; ``returncode`` is the first non-zero exit code, else 0."""

    wall_s: float
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


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _run_one(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
) -> tuple[int, int, int]:
    """Run ``argv``; return (exit code, peak tree RSS, ru_maxrss) in bytes."""
    with log.open("ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            ps = psutil.Process(proc.pid)
            peak = 0
            while True:
                # wait4 rather than Popen.wait: it returns the child's own rusage, so each run's
                # ru_maxrss is its own and not the running maximum over all children so far.
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                peak = max(peak, _tree_rss(ps))
                time.sleep(POLL_INTERVAL)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    # Linux reports ru_maxrss in KiB.
    return proc.returncode, max(peak, usage.ru_maxrss * 1024), usage.ru_maxrss * 1024


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
    start = time.perf_counter()
    for argv in commands:
        code, tree, proc = _run_one(argv, env, cwd, log)
        peak_tree, peak_proc = max(peak_tree, tree), max(peak_proc, proc)
        if code != 0:
            break
    wall = time.perf_counter() - start
    return Measurement(wall, peak_tree, peak_proc, code)
