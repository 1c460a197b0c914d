"""The shared vocabulary of the format, of HTTP and of the viewer: every wing reads it from here.

``model`` (the ``info`` file, scales, chunk names), ``layout`` (flat and nested chunk paths),
``encodings`` (HTTP content codings and their sibling files), ``media_types``, ``headers`` (CORS
and cache policies), ``progress`` and ``templates`` (the jinja2 environment). Stdlib-only apart
from the codecs and jinja2; never imports another wing.
"""
