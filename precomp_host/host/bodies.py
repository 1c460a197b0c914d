"""Response bodies the middleware cannot hand to ``wsgi.file_wrapper`` whole: :class:`FileSlice`
(bytes ``[start, stop)`` of an open file) and :class:`Decoded` (a sibling decoded block by
block, for a client that accepts none of the stored codings).

Both are WSGI iterables that own their file and close it in ``close()``, as PEP 3333 requires
of the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from ..core.encodings import stream_decoder

if TYPE_CHECKING:
    from collections.abc import Iterator

BLOCK = 64 * 1024


class FileSlice:
    """Bytes ``[start, stop)`` of ``file``, which this object closes."""

    def __init__(self, file: BinaryIO, start: int, stop: int) -> None:
        self.file = file
        self.file.seek(start)
        self.left = stop - start

    def __iter__(self) -> Iterator[bytes]:
        while self.left > 0:
            block = self.file.read(min(BLOCK, self.left))
            if not block:
                break
            self.left -= len(block)
            yield block

    def close(self) -> None:
        self.file.close()


class Decoded:
    """``file`` (coded with ``encoding``) decoded block by block; closes the file."""

    def __init__(self, file: BinaryIO, encoding: str) -> None:
        self.file = file
        self.feed = stream_decoder(encoding)

    def __iter__(self) -> Iterator[bytes]:
        while block := self.file.read(BLOCK):
            out = self.feed(block)
            if out:
                yield out

    def close(self) -> None:
        self.file.close()
