"""Serving: a precomputed folder over HTTP, the way the emitted nginx and Apache configs serve it.

``middleware`` is the WSGI middleware (``PrecomputedMiddleware``, ``make_app``), ``watch`` follows
datasets on disk for live reload, ``devserver`` is ``precomp-host serve``. Imports the core only.
"""
