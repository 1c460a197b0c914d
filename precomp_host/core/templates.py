"""Where the jinja2 templates are, installed or not: :func:`environment`.

The templates live in the top-level ``templates/`` folder of the repository; the wheel ships them
as the data package ``precomp_host.templates`` (pyproject maps one to the other), and an editable
install maps it too. A source checkout without any install has only the folder, so both are
tried. One function for the dev server's pages and the deployment configs alike.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jinja2

#: Template names ending like this are HTML and get autoescaping; configs never do.
HTML_EXTENSIONS = ("html", "html.j2", "htm", "xml")


def templates_dir() -> Path:
    """The folder holding the ``*.j2`` templates."""
    spec = importlib.util.find_spec("precomp_host.templates")
    # The spec's folder, without importing the package: its __init__.py only exists so that
    # setuptools ships templates/ as precomp_host.templates, and an editable install maps the
    # name to the repository's folder the same way.
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "templates"


def environment() -> jinja2.Environment:
    """A jinja2 environment over :func:`templates_dir`.

    Undefined variables raise (a config with a silently empty value is worse than an error),
    trailing newlines are kept, and only HTML templates are autoescaped.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(HTML_EXTENSIONS, default_for_string=False),
    )
