"""Each word has one home: the light name tuples the CLI offers match the registries they
name, and the wings use the core's words (mesh ``@type``, the ``.gz`` suffix nginx needs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from precomp_host.build import names
from precomp_host.build.chunk_codecs import CODECS
from precomp_host.build.meshes import MESH_INFO, PRESETS
from precomp_host.build.pyramid import DOWNSAMPLERS
from precomp_host.cli.commands import make_parser
from precomp_host.core.encodings import GZIP
from precomp_host.core.layout import LAYOUTS
from precomp_host.core.model import LEGACY_MESH_TYPE, VOLUME_TYPES
from precomp_host.deploy import site
from precomp_host.deploy.targets import TARGETS


@pytest.mark.parametrize(
    ("offered", "registry"),
    [
        (names.CODEC_NAMES, CODECS),
        (names.PRESET_NAMES, PRESETS),
    ],
    ids=["codecs", "presets"],
)
def test_names_match_their_registry(offered: tuple[str, ...], registry: dict[str, object]) -> None:
    assert offered == tuple(registry)


def test_mesh_formats_are_the_options_type() -> None:
    from typing import get_args

    from precomp_host.build.segmentation import MeshFormat

    assert get_args(MeshFormat) == names.MESH_FORMAT_NAMES


def test_label_downsamplers_are_downsamplers() -> None:
    assert set(names.LABEL_DOWNSAMPLER_NAMES) | {"mean", "mode_sparse"} == set(DOWNSAMPLERS)


def _choices(*argv: str) -> dict[str, tuple[str, ...]]:
    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    command = sub.choices[argv[0]]  # type: ignore[index]
    return {a.dest: tuple(a.choices) for a in command._actions if a.choices}


def test_cli_offers_the_registries() -> None:
    build = _choices("build")
    assert build["encoding"] == tuple(CODECS)
    assert build["layout"] == tuple(LAYOUTS)
    assert build["volume_type"] == VOLUME_TYPES
    assert build["mesh_simplification"] == tuple(PRESETS)
    assert build["downsample"] == names.LABEL_DOWNSAMPLER_NAMES
    assert _choices("deploy")["target"] == TARGETS


def test_every_target_renders() -> None:
    s = site.Site(Path("/srv/precomputed"))
    for target in TARGETS:
        assert site.render(target, s)


def test_mesh_info_type_is_the_core_one() -> None:
    assert MESH_INFO["@type"] == LEGACY_MESH_TYPE


def test_gzip_sibling_suffix_is_the_one_nginx_looks_for() -> None:
    # gzip_static and gunzip look for "<file>.gz" (nginx ngx_http_gzip_static_module docs); the
    # nginx template cannot follow another suffix.
    assert GZIP.suffix == ".gz"
