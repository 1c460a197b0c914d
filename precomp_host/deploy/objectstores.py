"""Object stores (S3, GCS) for a folder of datasets: one :class:`StoreObject` per URL.

An object store cannot negotiate or rewrite: each URL Neuroglancer asks for must be one object.
:func:`plan_objects` decides them from the tree without reading data, by the rule of
:mod:`~precomp_host.core.objects` (flat names, the ``.gz`` sibling with ``Content-Encoding:
gzip`` when there is one, files read with ``Range`` plain), which a build writing straight into
a bucket follows too. :func:`upload_s3` sends them with boto3
(optional extra ``s3``), skipping objects already there with the same size and MD5 ETag, so an
interrupted upload resumes; :func:`write_gcs_staging` lays them out for ``gcloud storage cp``.
The bucket settings (CORS rules, public-read policy) are rendered here too, from
:mod:`~precomp_host.core.headers`, and :func:`check_s3_bucket` reaches the bucket before a deploy
writes anything. (Just over 400 lines: plan, check, upload and settings all speak of the same
:class:`StoreObject` and bucket; apart, each would import the others.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import headers, layout, media_types, objects
from ..core.encodings import BY_SUFFIX, ENCODINGS, GZIP
from ..core.model import INFO_NAME, LEGACY_MESH_TYPE, MULTILOD_MESH_TYPE
from ..core.objects import s3_client as s3_client  # re-exported: deploy s3's client
from ..core.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)


_SUFFIX_OF = {e.name: suffix for suffix, e in BY_SUFFIX.items()}


@dataclass(frozen=True)
class StoreObject:
    """One object to store: its key, the file it comes from and its HTTP metadata."""

    key: str  # relative to the bucket prefix, POSIX: the URL path Neuroglancer requests
    path: Path  # the file whose bytes are stored (after ``recode``)
    content_type: str
    content_encoding: str | None  # "gzip" or None
    recode: str | None = None  # the coding of ``path`` to undo first (br-only, ranged gz)

    @property
    def is_info(self) -> bool:
        return objects.is_info(self.key)

    def body(self) -> bytes:
        data = self.path.read_bytes()
        if self.recode is None:
            return data
        data = ENCODINGS[self.recode].decompress(data)
        return GZIP.compress(data) if self.content_encoding == GZIP.name else data


def _mesh_type(folder: Path) -> str | None:
    """The ``@type`` of ``folder/info`` when it is a mesh (or any) info, else None."""
    try:
        doc = json.loads((folder / INFO_NAME).read_text())
    except (OSError, ValueError):
        return None
    kind = doc.get("@type") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) else None


def _choose(plain: Path, key: str, stored: set[str | None], mesh_type: str | None) -> StoreObject:
    """The object for the file ``plain`` stored as ``stored`` (core.objects' rule)."""
    # Read with Range (spec: sharded.md, meshes.md): shards, and the fragment data of a
    # multi-resolution mesh (the colon-free, dot-free files beside its .index manifests).
    ranged = key.endswith(".shard") or (mesh_type == MULTILOD_MESH_TYPE and "." not in plain.name)
    choice = objects.choose_stored(stored, ranged=ranged)
    path = plain
    if choice.source is not None:
        path = plain.with_name(plain.name + _SUFFIX_OF[choice.source])
    recode = choice.source if choice.recode else None
    return StoreObject(key, path, media_types.media_type_for(key), choice.content_encoding, recode)


def plan_objects(root: str | Path) -> Iterator[StoreObject]:
    """Every object for ``root``; ``info`` files last (they announce a complete dataset)."""
    root = Path(root)
    infos: list[StoreObject] = []
    for folder, dirs, files in os.walk(root):
        # Hidden folders are the build's own (in-progress files, its resume journal).
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        mesh_type = _mesh_type(here)
        names = set(files)
        bases: dict[str, set[str | None]] = {}
        for name in sorted(files):
            if name.startswith(".") or name.endswith(layout.PARTIAL_SUFFIX):
                continue
            if (here / name).is_symlink():
                # It could point anywhere; the servers refuse them too (nginx
                # disable_symlinks, the Apache rules).
                log.warning("not uploading symlink %s", here / name)
                continue
            stem, suffix = os.path.splitext(name)
            coding = BY_SUFFIX.get(suffix)
            if coding is None:
                bases.setdefault(name, set()).add(None)
            else:
                bases.setdefault(stem, set()).add(coding.name)
        for base, stored in sorted(bases.items()):
            rel = (here / base).relative_to(root).as_posix()
            key = objects.object_key(rel, legacy_mesh=mesh_type == LEGACY_MESH_TYPE, taken=names)
            obj = _choose(here / base, key, stored, mesh_type)
            if obj.is_info:
                infos.append(obj)
            else:
                yield obj
    yield from infos


@dataclass
class UploadReport:
    uploaded: int = 0
    skipped: int = 0
    bytes_sent: int = 0


class StoreError(Exception):
    """The object store cannot be used as asked; the message is one line."""


def check_s3_bucket(client: Any, bucket: str) -> None:
    """Fail with :class:`StoreError` unless ``bucket`` is reachable with ``client``.

    Run before anything is written or sent, so that no credentials, an endpoint that does not
    answer and a missing bucket each cost the user one line and no half-done deploy.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = f"s3://{bucket}"
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise StoreError(
            f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or ~/.aws/credentials)"
        ) from None
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        reason = {
            "404": "no such bucket",
            "NoSuchBucket": "no such bucket",
            "403": "access denied (check the credentials and the bucket's policy)",
        }.get(code, f"refused ({code or e})")
        raise StoreError(f"{where}: {reason}") from None
    except BotoCoreError as e:  # endpoint unreachable, bad parameters, ...
        raise StoreError(f"{where}: {e}") from None


def _existing(client: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            found[item["Key"]] = (item["Size"], item["ETag"].strip('"'))
    return found


@dataclass(frozen=True)
class _S3Put:
    """Uploads one object; returns its size, or -1 when it is there already."""

    client: Any
    bucket: str
    base: str
    cache_control: str
    existing: dict[str, tuple[int, str]]
    site_index: Path

    def __call__(self, obj: StoreObject) -> int:
        data = obj.body()
        key = self.base + obj.key
        # A single-part upload's ETag is the MD5 of the bytes (S3 API reference, "ETag").
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if self.existing.get(key) == (len(data), digest):
            return -1
        control = headers.REVALIDATE if obj.path == self.site_index else self.cache_control
        extra = objects.object_metadata(obj.key, obj.content_encoding, control).s3_args()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        return len(data)


def _put_all(
    objects: Iterable[StoreObject],
    put: Callable[[StoreObject], int],
    workers: int,
    finished: Callable[[int], None],
) -> None:
    """``put`` every object on ``workers`` threads, ``info`` files only once every object
    before them is up (plan_objects yields them last: they announce a complete dataset)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="precomp-upload") as pool:
        # A bounded window of objects in flight: each holds its file's bytes while it runs.
        window: set[Future[int]] = set()
        for obj in objects:
            if obj.is_info:
                for fut in as_completed(window):
                    finished(fut.result())
                window.clear()
                finished(put(obj))
                continue
            if len(window) >= 4 * workers:
                done, window = wait(window, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(fut.result())
            window.add(pool.submit(put, obj))
        for fut in as_completed(window):
            finished(fut.result())


def upload_s3(
    root: str | Path,
    bucket: str,
    prefix: str = "",
    *,
    client: Any = None,
    cache_control: str | None = None,
    set_cors: bool = True,
    public_policy: bool = False,
    workers: int = 8,
    progress: Callable[[Progress], None] | None = None,
) -> UploadReport:
    """Upload ``root`` under ``s3://bucket/prefix/``; resumable (same size and MD5: skipped).

    Also sets the bucket CORS rules (:func:`cors_rule`) unless told not to,
    and with ``public_policy`` the public-read bucket policy. Objects go up on ``workers``
    threads (a boto3 client is thread-safe, and each request mostly waits on the network);
    ``info`` files only after every other object, since they announce a complete dataset.
    ``progress`` is called from this thread with a :class:`Progress` as objects finish.
    """
    client = client if client is not None else s3_client()
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    if set_cors:
        client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [cors_rule()]})
    if public_policy:
        client.put_bucket_policy(Bucket=bucket, Policy=render_s3_policy(bucket, prefix))
    put = _S3Put(
        client,
        bucket,
        base,
        cache_control or headers.DEPLOY_CACHE_CONTROL,
        existing=_existing(client, bucket, base),
        site_index=Path(root) / "index.html",
    )
    # A first walk only counts, for the progress total: a million-file dataset is then never a
    # million objects in memory, and walking twice is nothing next to uploading.
    total = sum(1 for _ in plan_objects(root))
    report = UploadReport()
    start = time.monotonic()

    def finished(sent: int) -> None:
        if sent < 0:
            report.skipped += 1
        else:
            report.uploaded += 1
            report.bytes_sent += sent
        if progress is not None:
            done = report.uploaded + report.skipped
            progress(Progress(done, total, report.bytes_sent, time.monotonic() - start))

    _put_all(plan_objects(root), put, max(1, workers), finished)
    log.info("s3://%s/%s: %d uploaded, %d already there", bucket, base, report.uploaded,
             report.skipped)  # fmt: skip
    return report


def render_s3_cors() -> str:
    """The bucket CORS configuration (``aws s3api put-bucket-cors --cors-configuration``)."""
    return json.dumps({"CORSRules": [cors_rule()]}, indent=2) + "\n"


def cors_rule() -> dict[str, Any]:
    """One S3 CORS rule granting what :mod:`~precomp_host.core.headers` grants everywhere."""
    return {
        "AllowedOrigins": [headers.cors_headers()["Access-Control-Allow-Origin"]],
        "AllowedMethods": [m for m in headers.ALLOW_METHODS if m != "OPTIONS"],
        "AllowedHeaders": list(headers.ALLOW_HEADERS),
        "ExposeHeaders": list(headers.EXPOSE_HEADERS),
        "MaxAgeSeconds": headers.PREFLIGHT_MAX_AGE,
    }


def render_s3_policy(bucket: str, prefix: str = "") -> str:
    """A bucket policy that makes the objects under ``prefix`` publicly readable."""
    resource = f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}*"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicReadPrecomputed",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": resource,
            }
        ],
    }
    return json.dumps(policy, indent=2) + "\n"


def render_gcs_cors() -> str:
    """The bucket CORS configuration for ``gcloud storage buckets update --cors-file``."""
    rule = cors_rule()
    gcs = {
        "origin": rule["AllowedOrigins"],
        "method": rule["AllowedMethods"],
        "responseHeader": sorted({*rule["AllowedHeaders"], *rule["ExposeHeaders"]}),
        "maxAgeSeconds": rule["MaxAgeSeconds"],
    }
    return json.dumps([gcs], indent=2) + "\n"


def write_gcs_staging(
    root: Path, url_prefix: str, cache_control: str, out: Path, bucket: str, *, public: bool = False
) -> list[Path]:
    """A staging tree of links named as the objects, one folder per metadata set, and the
    ``gcloud storage`` commands that upload each folder with its metadata (and with ``public``,
    the one that makes the bucket readable by everyone: never without being asked).

    Files are hard links (symlinks across filesystems): nothing is copied.
    """
    stage = out / "gcs-stage"
    groups: dict[tuple[str, str | None], Path] = {}
    for obj in plan_objects(root):
        meta = (obj.content_type, obj.content_encoding)
        folder = groups.setdefault(meta, stage / f"group{len(groups)}")
        target = folder / obj.key
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        if obj.recode is not None:
            target.write_bytes(obj.body())
            continue
        try:
            os.link(obj.path, target)
        except OSError:
            target.symlink_to(obj.path)
    dest = f"gs://{bucket}{url_prefix}/"
    lines = [
        "#!/bin/sh",
        "# Generated by `precomp-host deploy gcs`: upload with the metadata each URL needs.",
        "set -eu",
        'cd "$(dirname "$0")"',
        f"gcloud storage buckets update gs://{bucket} --cors-file=cors.json",
    ]
    for (media, coding), folder in groups.items():
        flags = [f"--content-type={media}", f"--cache-control={cache_control}"]
        if coding is not None:
            flags.append(f"--content-encoding={coding}")
        lines.append(
            f"(cd {shlex.quote(str(folder.relative_to(out)))} && gcloud storage cp --recursive "
            f". {shlex.quote(dest)} {' '.join(shlex.quote(f) for f in flags)})"
        )
    if public:
        lines.append(
            f"gcloud storage buckets add-iam-policy-binding gs://{bucket} "
            "--member=allUsers --role=roles/storage.objectViewer"
        )
    script = out / "gcloud-upload.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return [script, stage]
