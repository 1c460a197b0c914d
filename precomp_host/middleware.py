"""The middleware's documented import path: ``from precomp_host.middleware import make_app``.

The code lives in :mod:`precomp_host.host.middleware`; this name stays for users and for WSGI
servers started with ``precomp_host.middleware:make_app``.
"""

from __future__ import annotations

from .host.middleware import PrecomputedMiddleware, make_app

__all__ = ["PrecomputedMiddleware", "make_app"]
