"""Response bodies over an open file descriptor: :class:`RawFile` (a whole file, for
``wsgi.file_wrapper``), :class:`FileSlice` (bytes ``[start, stop)``) and :class:`Decoded`
(identity bytes decoded from a ``.gz``/``.br`` sibling for a client that accepts neither),
plus :func:`decoded_length`.

Each owns its descriptor and closes it in ``close()``, as PEP 3333 requires of the server
for an iterable it is given; the middleware opens and ``fstat``s that descriptor before it
sends a header, so the bytes are those the headers describe. Decoding keeps memory bounded
whatever the compression ratio (:func:`~precomp_host.core.encodings.iter_decoded` yields
pieces of about a block at most), and a slice of decoded bytes decodes only up to its end.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import TYPE_CHECKING

from ..core.encodings import iter_decoded

if TYPE_CHECKING:
    from collections.abc import Iterator

BLOCK = 64 * 1024


class RawFile:
    """An open descriptor as the file object ``wsgi.file_wrapper`` takes (``fileno`` for
    gunicorn's sendfile, ``read``, ``seek``/``tell`` for waitress, ``close``): ``open(fd)``
    would build a FileIO and ``fstat`` the descriptor again, about a microsecond a request
    that ``benchmarks/serve_inprocess.py`` sees."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:  # noqa: V105 - gunicorn's sendfile calls it
        return self.fd

    def read(self, size: int = -1) -> bytes:
        if size >= 0:
            return os.read(self.fd, size)
        return b"".join(iter(functools.partial(os.read, self.fd, BLOCK), b""))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:  # noqa: V105 - waitress calls it, with seek
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileSlice:
    """Bytes ``[start, stop)`` of the file open as ``fd``, which this object closes."""

    def __init__(self, fd: int, start: int, stop: int) -> None:
        self.fd = fd
        self.pos, self.stop = start, stop

    def __iter__(self) -> Iterator[bytes]:
        while self.pos < self.stop:
            block = os.pread(self.fd, min(BLOCK, self.stop - self.pos), self.pos)
            if not block:
                break
            self.pos += len(block)
            yield block

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Decoded:
    """Identity bytes ``[start, stop)`` (``stop`` None: to the end) of the file open as ``fd``,
    coded with ``encoding``, decoded block by block; closes ``fd``."""

    def __init__(self, fd: int, encoding: str, start: int = 0, stop: int | None = None) -> None:
        self.fd = fd
        self.start, self.stop = start, stop
        self._blocks = iter_decoded(functools.partial(os.read, fd), encoding, BLOCK)
        self._held: list[bytes] = []

    def read_ahead(self, limit: int) -> bytes | None:
        """All the bytes when they come to at most ``limit``, else None, with what was decoded
        so far held for iteration: a small body gets a Content-Length, a large one is
        streamed, and memory stays near ``limit`` either way. (``fd`` stays open.)"""
        held = 0
        for piece in self._blocks:
            self._held.append(piece)
            held += len(piece)
            if held > limit:
                return None
        return b"".join(self._held)

    def __iter__(self) -> Iterator[bytes]:
        pos = 0
        for piece in itertools.chain(self._held, self._blocks):
            end = pos + len(piece)
            if end > self.start:
                yield piece[
                    max(0, self.start - pos) : None if self.stop is None else self.stop - pos
                ]
            pos = end
            if self.stop is not None and pos >= self.stop:
                return  # decode no further than the slice needs

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def decoded_length(fd: int, encoding: str, limit: int) -> int | None:
    """How many identity bytes the file open as ``fd`` decodes to (decoded and dropped block
    by block), or None past ``limit``; ``fd`` is left at the file's start."""
    length = 0
    for piece in iter_decoded(functools.partial(os.read, fd), encoding, BLOCK):
        length += len(piece)
        if length > limit:
            break
    os.lseek(fd, 0, os.SEEK_SET)
    return length if length <= limit else None
