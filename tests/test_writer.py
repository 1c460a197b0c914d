"""Tests for :mod:`precomp_host.build.writer`: which variants a file gets, and atomic placement."""

from __future__ import annotations

import errno
import random
from typing import TYPE_CHECKING

import pytest

from precomp_host.build.writer import DatasetWriter, DiskFullError
from precomp_host.core.encodings import BROTLI, GZIP
from precomp_host.core.layout import NESTED, TMP_DIR

if TYPE_CHECKING:
    from pathlib import Path

SMOOTH = bytes(i // 64 % 256 for i in range(65536))  # long runs: brotli beats gzip
# Uniform over 16 values: both compress to ~half, gzip 6 smaller than brotli 5 (33 vs 35 KB).
_rng = random.Random(1)
NOISY = bytes(_rng.randrange(16) for _ in range(65536))
RANDOM = random.Random(2).randbytes(65536)  # incompressible


def stored(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def writer(tmp_path: Path) -> DatasetWriter:
    w = DatasetWriter(tmp_path, NESTED)
    w.begin()
    return w


def test_smooth_data_gets_both_siblings_and_no_plain_file(writer: DatasetWriter) -> None:
    assert len(BROTLI.compress(SMOOTH)) < len(GZIP.compress(SMOOTH))
    writer.put("s/c", SMOOTH)
    assert stored(writer.root) - {TMP_DIR} == {"s/c.gz", "s/c.br"}
    assert GZIP.decompress((writer.root / "s/c.gz").read_bytes()) == SMOOTH
    assert BROTLI.decompress((writer.root / "s/c.br").read_bytes()) == SMOOTH


def test_brotli_not_smaller_than_gzip_is_not_stored(writer: DatasetWriter) -> None:
    assert len(BROTLI.compress(NOISY)) >= len(GZIP.compress(NOISY))
    writer.put("s/c", NOISY)
    assert {f for f in stored(writer.root) if f.startswith("s/")} == {"s/c.gz"}


def test_incompressible_data_is_stored_plain_only(writer: DatasetWriter) -> None:
    writer.put("s/c", RANDOM)
    assert {f for f in stored(writer.root) if f.startswith("s/")} == {"s/c"}
    assert (writer.root / "s/c").read_bytes() == RANDOM


def test_keep_identity_adds_the_plain_file(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path, NESTED, keep_identity=True)
    w.begin()
    w.put("s/c", SMOOTH)
    assert {f for f in stored(tmp_path) if f.startswith("s/")} == {"s/c", "s/c.gz", "s/c.br"}


def test_brotli_only_request_keeps_a_plain_file(tmp_path: Path) -> None:
    # No .gz: the plain file stays, so servers that cannot decode brotli can answer anyone.
    w = DatasetWriter(tmp_path, NESTED, compress=("br",))
    w.begin()
    w.put("s/c", SMOOTH)
    assert {f for f in stored(tmp_path) if f.startswith("s/")} == {"s/c", "s/c.br"}


def test_unknown_encoding_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="zstd"):
        DatasetWriter(tmp_path, NESTED, compress=("gzip", "zstd"))


def test_open_atomic_streams_a_plain_file_into_place(writer: DatasetWriter) -> None:
    with writer.open_atomic("s/0.shard") as f:
        f.write(SMOOTH)
        f.write(SMOOTH)
        assert not (writer.root / "s/0.shard").exists()  # only at the end of the block
    assert stored(writer.root) == {"s/0.shard"}  # no siblings, temporary file gone
    assert (writer.root / "s/0.shard").read_bytes() == SMOOTH * 2


@pytest.mark.parametrize(
    ("error", "raised"),
    [(OSError(errno.ENOSPC, "no space"), DiskFullError), (RuntimeError("boom"), RuntimeError)],
)
def test_open_atomic_leaves_nothing_on_error(
    writer: DatasetWriter, error: Exception, raised: type[Exception]
) -> None:
    def write_then_fail() -> None:
        with writer.open_atomic("s/0.shard") as f:
            f.write(SMOOTH)
            raise error

    with pytest.raises(raised):
        write_then_fail()
    assert stored(writer.root) == set()
