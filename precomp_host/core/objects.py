"""Objects in an object store (S3, GCS): the one rule for their names and HTTP metadata.

An object store cannot negotiate or rewrite: each URL Neuroglancer asks for must be one object,
under the name it asks for, stored as bytes every browser can take, with the metadata the store
answers with. Two writers follow this rule: ``deploy s3`` uploading a built folder
(:mod:`precomp_host.deploy.objectstores`) and a build writing straight into a bucket
(:mod:`precomp_host.build.objectwriter`). Each asks here:

* :func:`object_key`: the flat chunk name (:data:`~precomp_host.core.layout.FLAT`, what the
  client requests), ``<id>:0`` for a colon-free legacy mesh manifest;
* :func:`choose_stored`: which stored variant becomes the object and with which
  ``Content-Encoding``: gzip whenever a gzip variant is worth storing (every browser accepts it;
  br is not universal and a store cannot choose), never a coding on a file read with ``Range``
  (shards, multi-resolution mesh data: sharded.md, "sharded data must be served without any
  Content-Encoding"); never ``aws-chunked``, which is a transfer detail the store must not keep;
* :func:`object_metadata`: Content-Type (:mod:`~precomp_host.core.media_types`), the
  Content-Encoding above, Cache-Control (:data:`~precomp_host.core.headers.DEPLOY_CACHE_CONTROL`
  unless told otherwise);
* :func:`is_info`: ``info`` objects announce a complete dataset, so they are stored last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import headers, layout, media_types
from .encodings import GZIP, worth_storing
from .model import INFO_NAME

if TYPE_CHECKING:
    from collections.abc import Collection, Container


def object_key(rel: str, *, legacy_mesh: bool = False, taken: Container[str] = ()) -> str:
    """The object key (relative to the dataset's prefix) for the file at POSIX path ``rel``.

    :param legacy_mesh: ``rel`` lies in a legacy mesh folder, where a colon-free manifest
        (``<id>`` or ``<id>.json``) is stored as ``<id>:0``: a store cannot fall back at request
        time as our servers do (:func:`~precomp_host.core.layout.mesh_manifest_url`).
    :param taken: names already in that folder; a real ``<id>:0`` there keeps its own name.
    """
    key = layout.NESTED.key_for(rel)
    if key is not None:
        return layout.FLAT.path_for(key)
    url = layout.mesh_manifest_url(rel) if legacy_mesh else None
    if url is not None and url.rpartition("/")[2] not in taken:
        return url
    return rel


@dataclass(frozen=True)
class Choice:
    """Which stored variant an object is made from, and the object's ``Content-Encoding``."""

    source: str | None  # the coding of the stored variant to read (None: the plain file)
    content_encoding: str | None  # "gzip" or None

    @property
    def recode(self) -> bool:
        """Whether the source's coding must be undone first (and gzip applied if asked)."""
        return self.source is not None and self.source != self.content_encoding


def choose_stored(stored: Collection[str | None], *, ranged: bool) -> Choice:
    """The object for a file stored as the variants ``stored`` (None: plain, else a coding).

    :param ranged: the file is read with Range (shards, multi-resolution mesh data): the object
        is the plain bytes, decoded from a sibling when no plain file was kept.
    """
    codings = sorted(c for c in stored if c is not None)
    if ranged:
        if None in stored:
            return Choice(None, None)
        return Choice(GZIP.name if GZIP.name in codings else codings[0], None)
    if GZIP.name in codings:
        return Choice(GZIP.name, GZIP.name)
    if None in stored:
        return Choice(None, None)
    return Choice(codings[0], GZIP.name)  # br only: re-encoded as gzip


def encode_object(data: bytes, compress: Collection[str], *, ranged: bool) -> tuple[bytes, Choice]:
    """The body and choice for ``data`` written straight to a store by a build that would store
    the variants ``compress`` on disk: the object a ``deploy s3`` of that folder would upload.

    Only gzip matters: :func:`choose_stored` never picks br when a gzip variant exists, and the
    disk writer keeps the plain file whenever gzip is not worth storing.
    """
    if ranged or GZIP.name not in compress:
        return data, choose_stored({None}, ranged=ranged)
    packed = GZIP.compress(data)
    kept = worth_storing(len(data), {GZIP.name: len(packed)})
    choice = choose_stored(kept or {None}, ranged=False)
    return (packed if choice.content_encoding else data), choice


@dataclass(frozen=True)
class ObjectMetadata:
    """The HTTP metadata an object is stored with (the store answers every GET with it)."""

    content_type: str
    content_encoding: str | None
    cache_control: str

    def s3_args(self) -> dict[str, str]:
        """As ``PutObject`` parameters (boto3's ``put_object``)."""
        args = {"ContentType": self.content_type, "CacheControl": self.cache_control}
        if self.content_encoding is not None:
            args["ContentEncoding"] = self.content_encoding
        return args

    def gcs_args(self) -> dict[str, object]:
        """As gcsfs ``pipe_file`` arguments (the JSON API's object resource fields)."""
        fixed = {"cache_control": self.cache_control}
        if self.content_encoding is not None:
            fixed["content_encoding"] = self.content_encoding
        return {"content_type": self.content_type, "fixed_key_metadata": fixed}


def object_metadata(
    key: str, content_encoding: str | None, cache_control: str | None = None
) -> ObjectMetadata:
    """Metadata of the object ``key`` whose bytes carry ``content_encoding``."""
    return ObjectMetadata(
        media_types.media_type_for(key),
        content_encoding,
        cache_control or headers.DEPLOY_CACHE_CONTROL,
    )


def is_info(key: str) -> bool:
    """An ``info`` object: it announces a complete dataset (or mesh or property set), so it is
    stored after everything else."""
    return key.rpartition("/")[2] == INFO_NAME


def s3_client(endpoint_url: str | None = None, **kwargs: Any) -> Any:
    """A boto3 S3 client (the ``s3`` extra) that never sends ``aws-chunked`` bodies.

    botocore >= 1.36 adds CRC checksums to every upload by default ("when_supported"), and for
    streamed bodies that means ``Content-Encoding: aws-chunked``, which some S3-compatible
    stores keep next to ``gzip``; checksums only when the operation requires them avoids it.
    Both ``deploy s3`` and a build into ``s3://`` send through it.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config, **kwargs)
