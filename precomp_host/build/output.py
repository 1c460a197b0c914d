"""The output folder of a build, claimed, written and published safely: :class:`Output`.

* **One build per folder.** :meth:`Output.claim` takes an exclusive ``flock`` on
  ``.<name>.precomp-lock`` beside OUT (OUT itself may not exist yet, and is swapped whole). The
  file names the holder (pid, host, start time); a second build stops with that line. The
  kernel drops the lock when its process dies, so a killed build never leaves a stale lock.
* **Replace, never destroy-then-build.** ``--overwrite`` of a dataset writes the new one in
  ``.<name>.precomp-new`` beside OUT and swaps the two folders only when the new one is
  complete (``renameat2(RENAME_EXCHANGE)``: one atomic step, so every URL of OUT answers
  throughout, from the old tree and then the new one); the old tree is then deleted. A failed
  build deletes only its own folder, and the old dataset stays, byte for byte.
* **A failed fresh build leaves nothing**: a folder it created is removed again.

After a swap ``info`` is rewritten in place (same bytes, atomic rename): a watcher of OUT sees a
new ``info`` of a complete tree, the signal :mod:`precomp_host.host.watch` reloads viewers on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import errno
import fcntl
import logging
import os
import shutil
import socket
import sys
import uuid
from pathlib import Path

from ..core.layout import TMP_DIR

log = logging.getLogger(__name__)

#: The settings of a build in progress (``--resume`` compares them in full); removed once the
#: dataset is complete.
STATE_FILE = ".precomp-build.json"
_RENAME_EXCHANGE = 2  # linux/fs.h


class OutputError(Exception):
    """OUT cannot be used as asked; the message is one line."""


class Output:
    """Where a build writes: OUT itself, or a sibling swapped in at the end (``--overwrite``).

    :param out: the dataset folder the user named.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(os.path.abspath(out))
        self.lock_path = self.out.with_name(f".{self.out.name}.precomp-lock")
        self.staging = self.out.with_name(f".{self.out.name}.precomp-new")
        #: The folder the build writes into (set by :meth:`prepare`).
        self.root = self.out
        self._created = False
        self._ours = True  # whether a failure may delete what is in root
        self._lock_fd: int | None = None

    # -- the lock ----------------------------------------------------------------------------

    def claim(self) -> Output:
        """Take OUT for this build; :class:`OutputError` naming the holder if it is taken."""
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: output exists and is not a folder")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.out}: cannot create the folder ({e.strerror or e})") from None
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise OutputError(f"{self.lock_path}: cannot lock OUT ({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another build"
                os.close(fd)
                raise OutputError(
                    f"{self.out}: another build is writing here ({holder}; {self.lock_path})"
                ) from None
            # The holder before us may have unlinked the file after we opened it: then our
            # lock is on a dead inode, and another build may lock the new file. Retry.
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        self._lock_fd = fd
        return self

    def release(self) -> None:
        if self._lock_fd is None:
            return
        # Unlink while still holding the lock (see the inode check in claim).
        self.lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Output:
        return self.claim()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- where to write ----------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not self.out.exists() or not any(self.out.iterdir())

    def prepare(self, mode: str) -> Path:
        """Create the folder to write into and return it.

        :param mode: ``"replace"`` (a fresh sibling, swapped in by :meth:`publish`),
            ``"fresh"`` (OUT, absent or empty) or ``"resume"`` (OUT, whose content stays).
        """
        self._ours = mode != "resume"
        if mode == "replace":
            shutil.rmtree(self.staging, ignore_errors=True)  # a killed earlier overwrite's
            self.staging.mkdir()
            self.root = self.staging
        else:
            self._created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            self.root = self.out
        return self.root

    def discard(self) -> None:
        """After a failure: remove what this build made; OUT's earlier content stays."""
        if not self._ours:
            return
        if self.root == self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        elif self._created:
            shutil.rmtree(self.out, ignore_errors=True)
        elif self.out.is_dir():
            _empty_folder(self.out)

    def publish(self) -> None:
        """Swap a complete new dataset in for the old one (after ``info`` was written)."""
        if self.root != self.staging:
            return
        _exchange(self.staging, self.out)
        # The old dataset is now at the staging name: nobody is led to it any more.
        shutil.rmtree(self.staging, ignore_errors=True)
        _touch_info(self.out)
        self.root = self.out


def _empty_folder(out: Path) -> None:
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> None:
    """Swap folders ``a`` and ``b`` atomically; two renames where the system cannot."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name is not None:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is not None:
            at_fdcwd = -100
            result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
            if result == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise OSError(err, os.strerror(err), os.fspath(b))
    # No atomic exchange here (another OS, an old kernel, a filesystem without it): OUT is
    # missing between the two renames, for microseconds.
    log.debug("no atomic folder exchange; replacing %s with two renames", b)
    aside = b.with_name(f".{b.name}.precomp-old-{uuid.uuid4().hex}")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _touch_info(root: Path) -> None:
    """Rewrite ``info`` with its own bytes by atomic rename: a new ``info`` event for watchers."""
    info = root / "info"
    tmp = root / TMP_DIR
    tmp.mkdir(exist_ok=True)
    part = tmp / f"{uuid.uuid4().hex}.info"
    try:
        shutil.copyfile(info, part)
        os.replace(part, info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
