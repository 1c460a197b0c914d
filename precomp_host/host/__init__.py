"""Serving: a precomputed folder over HTTP, the way the emitted nginx and Apache configs serve it.

A GET goes through ``middleware`` (``PrecomputedMiddleware``, ``make_app``: choose the variant,
conditionals, send), which asks ``resolve`` (``Resolver``, ``ResolutionCache``: URL -> stored
files) and sends ``bodies`` (slices, decoded siblings). ``watch`` follows datasets on disk for
live reload, ``devserver`` is ``precomp-host serve``. Imports the core only.
"""
