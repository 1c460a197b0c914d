"""The jinja2 :class:`~jinja2.Environment` over the top-level ``templates/`` folder.

Installed, ``templates/`` is the data package ``precomp_host.templates`` (pyproject maps it);
from a source checkout or an editable install it is the folder beside the package. One
environment for every caller (deployment files, the dev server's pages): ``StrictUndefined`` so
a missing variable fails loudly instead of rendering an empty directive into a server config.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import jinja2

_SOURCE_DIR = Path(__file__).resolve().parent.parent / "templates"


def templates_dir() -> Path:
    """Where the ``*.j2`` files are: the installed data package, else the source folder."""
    try:
        installed = resources.files("precomp_host.templates")
    except ModuleNotFoundError:
        return _SOURCE_DIR
    path = Path(str(installed))
    return path if path.is_dir() else _SOURCE_DIR


@functools.cache
def environment() -> jinja2.Environment:
    """The shared environment; templates are configs, not HTML, so autoescape is off."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
