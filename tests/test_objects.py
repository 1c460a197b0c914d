"""The object-store rule (core/objects.py): names, the stored variant chosen, metadata."""

from __future__ import annotations

import gzip

import pytest

from precomp_host.core import headers, objects
from precomp_host.core.objects import Choice


def test_object_key_is_the_flat_chunk_name_neuroglancer_requests() -> None:
    assert objects.object_key("8_8_8/0-64/64-128/0-32") == "8_8_8/0-64_64-128_0-32"
    assert objects.object_key("8_8_8/0-64_64-128_0-32") == "8_8_8/0-64_64-128_0-32"
    assert objects.object_key("info") == "info"


def test_legacy_manifest_gets_its_url_unless_the_real_one_is_there() -> None:
    assert objects.object_key("mesh/12", legacy_mesh=True) == "mesh/12:0"
    assert objects.object_key("mesh/12", legacy_mesh=True, taken={"12", "12:0"}) == "mesh/12"
    assert objects.object_key("mesh/12") == "mesh/12"  # not in a legacy mesh folder


@pytest.mark.parametrize(
    ("stored", "ranged", "choice"),
    [
        pytest.param({"gzip", "br"}, False, Choice("gzip", "gzip"), id="gz-sibling"),
        pytest.param({None, "br"}, False, Choice(None, None), id="plain-when-no-gz"),
        pytest.param({"br"}, False, Choice("br", "gzip"), id="br-only-regzipped"),
        pytest.param({None, "gzip"}, True, Choice(None, None), id="ranged-plain"),
        pytest.param({"gzip"}, True, Choice("gzip", None), id="ranged-decoded"),
    ],
)
def test_choose_stored(stored: set[str | None], ranged: bool, choice: Choice) -> None:
    assert objects.choose_stored(stored, ranged=ranged) == choice


def test_encode_object_is_what_deploy_would_upload_of_the_disk_build() -> None:
    text = b"0123456789" * 1000
    body, choice = objects.encode_object(text, ("gzip", "br"), ranged=False)
    assert choice.content_encoding == "gzip"
    assert gzip.decompress(body) == text
    # Incompressible: the disk writer keeps the plain file only, and so does the store.
    noise = bytes(range(256)) * 4
    noise = gzip.compress(noise)  # gzip of gzip does not save 5 %
    assert objects.encode_object(noise, ("gzip",), ranged=False) == (noise, Choice(None, None))
    # Read with Range, or no gzip asked: plain.
    assert objects.encode_object(text, ("gzip",), ranged=True)[0] == text
    assert objects.encode_object(text, ("br",), ranged=False)[0] == text


def test_metadata_as_s3_and_gcs_arguments() -> None:
    meta = objects.object_metadata("img/8_8_8/0-64_0-64_0-64", "gzip")
    assert meta.s3_args() == {
        "ContentType": "application/octet-stream",
        "CacheControl": headers.DEPLOY_CACHE_CONTROL,
        "ContentEncoding": "gzip",
    }
    info = objects.object_metadata("img/info", None, headers.REVALIDATE)
    assert info.s3_args() == {"ContentType": "application/json", "CacheControl": "no-cache"}
    assert info.gcs_args() == {
        "content_type": "application/json",
        "fixed_key_metadata": {"cache_control": "no-cache"},
    }
    assert objects.is_info("img/mesh/info")
    assert not objects.is_info("img/information")
