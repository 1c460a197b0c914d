"""Writing a dataset straight into an object store: :class:`ObjectStoreWriter`.

A dataset headed for S3 or GCS is not written to a local disk first and uploaded again (twice
the I/O, and a full local copy). OUT is then ``s3://bucket/prefix`` or ``gs://bucket/prefix``,
reached through boto3 for S3 (:class:`BotoS3`, the ``s3`` extra, the client ``deploy s3`` uses)
and fsspec's ``gcsfs`` for GCS (the ``gcs`` extra). The writer has the
interface the build uses of :class:`~precomp_host.build.writer.DatasetWriter` (``put``,
``put_json``, ``open_atomic``, ``is_complete``, ``begin``, ``abort``, ``commit``), and stores
each file as ONE object named and described by :mod:`precomp_host.core.objects`, the rule
``deploy s3`` follows too: the bucket ends up as ``deploy s3`` of the same build would leave it.

* **Atomic by nature.** A PUT creates the object whole or not at all ("Amazon S3 never adds
  partial objects", S3 user guide, consistency model; GCS likewise), so there is no temporary
  name: an object at its final name is complete, which is what ``--resume`` checks.
* **info last.** :meth:`commit` writes ``info`` after every other object: a reader, or a
  deploy, never sees a dataset announced before its chunks are there.
* **Picklable.** The writer carries its URL and store options only; each process (a Dask
  worker) opens its own client on first use.

The endpoint of an S3-compatible store (MinIO, Ceph, moto) is ``endpoint_url`` (the CLI's
``--endpoint-url``); without it botocore's own ``AWS_ENDPOINT_URL(_S3)`` variables apply.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import objects
from ..core.encodings import ENCODINGS
from .writer import _format_json

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import BinaryIO

    from ..core.layout import Layout
    from ..core.model import Dataset

#: fsspec protocol of each URL scheme we write, and the extra that installs it.
SCHEMES = {"s3": ("s3", "s3"), "gs": ("gcs", "gcs")}
#: Files larger than this are spooled to a local temporary file by :meth:`open_atomic`.
_SPOOL_BYTES = 64 << 20


class StoreError(Exception):
    """The object store cannot be used as asked; the message is one line."""


def is_store_url(text: str) -> bool:
    """Whether OUT names an object store (``s3://`` or ``gs://``) rather than a folder."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme in SCHEMES


@dataclass(frozen=True)
class StoreUrl:
    """``scheme://bucket/prefix``, checked."""

    scheme: str
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    @classmethod
    def parse(cls, text: str) -> StoreUrl:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in SCHEMES:
            known = ", ".join(f"{s}://" for s in SCHEMES)
            raise StoreError(f"{text}: not an object store URL (use {known}BUCKET/PREFIX)")
        bucket, _, prefix = rest.partition("/")
        if not bucket or any(c in bucket for c in " ?#*"):
            raise StoreError(f"{text}: no bucket name (use {scheme}://BUCKET/PREFIX)")
        return cls(scheme, bucket, prefix.strip("/"))

    def path(self, rel: str = "") -> str:
        """The store path (``bucket/prefix/rel``) of the object ``rel``."""
        parts = [self.bucket, self.prefix, rel.strip("/")]
        return "/".join(p for p in parts if p)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path()}"


def storage_options(scheme: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """Options of the store behind ``scheme``: for S3, its endpoint (None: AWS, or botocore's
    ``AWS_ENDPOINT_URL``); gcsfs takes its settings from the environment."""
    if scheme == "s3" and endpoint_url:
        return {"endpoint_url": endpoint_url}
    return {}


class BotoS3:
    """The few filesystem calls the writer makes, on the boto3 client of ``deploy s3``
    (:func:`precomp_host.core.objects.s3_client`: never ``aws-chunked``).

    Not s3fs: s3fs pins botocore through aiobotocore to a narrow range that boto3's own pin
    rarely meets, and pip backtracked for over 8 minutes on a fresh ``.[test]`` install here
    (measured) before we dropped it; boto3 is the ``s3`` extra already.
    """

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.client = objects.s3_client(endpoint_url)

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key

    def _errors(self, e: Exception, path: str) -> Exception:
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            return FileNotFoundError(path)
        if code in ("403", "AccessDenied"):
            return PermissionError(f"{path}: access denied")
        return e

    def ls(self, bucket: str) -> None:
        try:
            self.client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except Exception as e:  # botocore's ClientError and friends
            raise self._errors(e, bucket) from None

    def find(self, path: str, detail: bool = True) -> dict[str, dict[str, int]]:
        del detail
        bucket, prefix = self._split(path)
        found: dict[str, dict[str, int]] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/" if prefix else ""
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    found[f"{bucket}/{item['Key']}"] = {"size": int(item["Size"])}
        except Exception as e:
            raise self._errors(e, path) from None
        return found

    def cat_file(self, path: str) -> bytes:
        bucket, key = self._split(path)
        try:
            body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:
            raise self._errors(e, path) from None
        return body

    def pipe_file(self, path: str, data: bytes, **args: Any) -> None:
        bucket, key = self._split(path)
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **args)

    def upload_fileobj(self, path: str, fileobj: BinaryIO, args: Mapping[str, Any]) -> None:
        # boto3's transfer manager: one PUT, or a multipart upload for large files; the object
        # appears whole when it completes.
        bucket, key = self._split(path)
        self.client.upload_fileobj(fileobj, bucket, key, ExtraArgs=dict(args))

    def rm_file(self, path: str) -> None:
        bucket, key = self._split(path)
        self.client.delete_object(Bucket=bucket, Key=key)

    def rm(self, path: str, recursive: bool = True) -> None:
        del recursive
        bucket, _ = self._split(path)
        keys = [p.partition("/")[2] for p in self.find(path)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


class ObjectStoreWriter:
    """Writes the files of one dataset as objects under ``url``.

    :param url: ``s3://bucket/prefix`` or ``gs://bucket/prefix``.
    :param layout: the layout chunk paths are given in (objects always get flat names).
    :param compress: the content encodings a disk build would store; only whether gzip is
        among them matters here (:func:`precomp_host.core.objects.encode_object`).
    :param options: the store's options (:func:`storage_options`).
    :param cache_control: Cache-Control of every object (default: the deploy one).
    """

    def __init__(
        self,
        url: str,
        layout: Layout,
        *,
        compress: Sequence[str] = ("gzip", "br"),
        options: Mapping[str, Any] | None = None,
        cache_control: str | None = None,
    ) -> None:
        unknown = [c for c in compress if c not in ENCODINGS]
        if unknown:
            raise ValueError(f"unknown content encoding {unknown[0]!r} (use gzip, br)")
        self.url = StoreUrl.parse(url)
        self.layout = layout
        self.compress = tuple(compress)
        self.options = dict(options or {})
        self.cache_control = cache_control
        self._fs: Any = None
        self._listing: dict[str, int] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A client holds connections (gcsfs an event loop too): each process opens its own.
        state = dict(self.__dict__)
        state.update(_fs=None, _listing=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = open_filesystem(self.url.scheme, self.options)
        return self._fs

    # -- reading what is there -------------------------------------------------------------

    def listing(self) -> dict[str, int]:
        """Key (relative to the prefix) -> size of every object under the prefix, listed once:
        one LIST per 1,000 objects rather than one HEAD per chunk on ``--resume``."""
        with self._lock:
            if self._listing is None:
                base = self.url.path()
                try:
                    found = self.fs.find(base, detail=True)
                except FileNotFoundError:
                    found = {}
                self._listing = {
                    path[len(base) + 1 :]: int(info.get("size") or 0)
                    for path, info in found.items()
                    if path.startswith(base + "/")
                }
            return self._listing

    def is_complete(self, rel_path: str) -> bool:
        """Whether the object for ``rel_path`` is there: a PUT is all or nothing, so an object
        at its name is complete (an empty one is not a chunk: written again)."""
        return self.listing().get(self._key(rel_path), 0) > 0

    def get_bytes(self, rel_path: str) -> bytes | None:
        """The stored bytes of ``rel_path`` (as stored: gzip-encoded if so), or None."""
        try:
            data: bytes = self.fs.cat_file(self.url.path(self._key(rel_path)))
        except FileNotFoundError:
            return None
        return data

    def get_json(self, rel_path: str) -> Any:
        """The JSON object ``rel_path`` (build state, a resume journal record), or None."""
        data = self.get_bytes(rel_path)
        return None if data is None else json.loads(data)

    # -- writing ---------------------------------------------------------------------------

    def _key(self, rel_path: str) -> str:
        return objects.object_key(rel_path)

    def _pipe(self, key: str, body: bytes, content_encoding: str | None) -> None:
        meta = objects.object_metadata(key, content_encoding, self.cache_control)
        self.fs.pipe_file(self.url.path(key), body, **self._args(meta))

    def _args(self, meta: objects.ObjectMetadata) -> dict[str, Any]:
        return meta.gcs_args() if self.url.scheme == "gs" else dict(meta.s3_args())

    def put(self, rel_path: str, data: bytes, *, precompress: bool = True) -> int:
        """Store ``data`` as the object for ``rel_path``; returns bytes stored.

        ``precompress=False``: a file read with Range, stored plain (sharded.md).
        """
        key = self._key(rel_path)
        body, choice = objects.encode_object(data, self.compress, ranged=not precompress)
        self._pipe(key, body, choice.content_encoding)
        return len(body)

    def put_json(self, rel_path: str, obj: Any) -> int:
        """Metadata JSON, plain, byte for byte what the disk writer writes."""
        data = (_format_json(obj) + "\n").encode()
        self._pipe(self._key(rel_path), data, None)
        return len(data)

    @contextlib.contextmanager
    def _open_atomic(self, rel_path: str) -> Iterator[BinaryIO]:
        key = self._key(rel_path)
        # Shards can be gigabytes: spooled to a local file past _SPOOL_BYTES, then one upload
        # (a multipart upload for large files; the object appears whole when it completes).
        with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as spool:
            yield spool  # type: ignore[misc]
            spool.seek(0)
            meta = objects.object_metadata(key, None, self.cache_control)
            if isinstance(self.fs, BotoS3):
                self.fs.upload_fileobj(self.url.path(key), spool, self._args(meta))  # type: ignore[arg-type]
                return
            with self.fs.open(self.url.path(key), "wb", **self._args(meta)) as f:
                while block := spool.read(8 << 20):
                    f.write(block)

    def open_atomic(self, rel_path: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A file to stream ``rel_path`` into, stored plain as one object when the block ends
        without an error (nothing is stored otherwise): for files read with Range (shards)."""
        return self._open_atomic(rel_path)

    def delete(self, rel_path: str) -> None:
        """Remove the object for ``rel_path`` if it is there (the build's own state object)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.url.path(self._key(rel_path)))

    def delete_prefix(self, rel_folder: str) -> None:
        """Remove every object under ``rel_folder`` (the mesh journal, once the build is done)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.url.path(rel_folder), recursive=True)

    def delete_all(self) -> None:
        """Remove every object under the prefix (a failed fresh build leaves nothing)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.url.path(), recursive=True)

    # -- lifecycle -------------------------------------------------------------------------

    def begin(self) -> None:
        """Nothing to prepare: a store has no temporary names (see the module docstring)."""

    def abort(self) -> None:
        """Nothing to drop: an object that was not stored whole is not there."""

    def commit(self, dataset: Dataset) -> None:
        """Write ``info``: the last object of a build."""
        self.put_json("info", dataset.to_json())


def open_filesystem(scheme: str, options: Mapping[str, Any]) -> Any:
    """The filesystem for ``scheme`` (:class:`BotoS3`, else fsspec's); :class:`StoreError`
    naming the extra if it is not installed."""
    protocol, extra = SCHEMES[scheme]
    try:
        if protocol == "s3":
            return BotoS3(**options)
        import fsspec

        return fsspec.filesystem(protocol, **options)
    except ImportError:
        raise StoreError(
            f"{scheme}:// output needs its client: pip install 'precomp-host[{extra}]'"
        ) from None


def check_store(writer: ObjectStoreWriter) -> None:
    """Fail with :class:`StoreError` unless the bucket can be listed with these credentials.

    Run before anything is written, so that a bad URL, no credentials, an endpoint that does
    not answer and a missing bucket each cost one line and no half-written dataset.
    """
    where = str(writer.url)
    try:
        writer.fs.ls(writer.url.bucket)  # one LIST: the bucket, the endpoint, the credentials
        writer.listing()
    except FileNotFoundError:
        raise StoreError(f"{where}: no such bucket") from None
    except StoreError:
        raise
    except PermissionError as e:
        raise StoreError(f"{where}: access denied ({_first_line(e)})") from None
    except Exception as e:  # botocore/aiohttp/google-auth errors: no common base to catch
        raise StoreError(f"{where}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    name = type(e).__name__
    if name == "NoCredentialsError":
        return (
            "no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
            "~/.aws/credentials)"
        )
    if "Connect" in name or "Endpoint" in name:
        return f"cannot reach the endpoint ({_first_line(e)})"
    return f"{name}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
