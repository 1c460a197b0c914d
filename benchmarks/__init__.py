"""Benchmarks of precomp_host against its peers, run on demand (never by pytest).

The entry point is ``benchmarks/build.py``; see :mod:`benchmarks.build`.
"""
