"""Runner scripts for the peer tools, executed by the peers' own venv (never imported here).

Each script is the minimal code a user of that tool writes to turn a TIFF stack into a
precomputed dataset, following the tool's documentation; ``benchmarks/build.py`` times it.
"""
