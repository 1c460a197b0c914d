"""Hypothesis profiles: ``ci`` is reproducible (zarr's conftest), ``dev`` explores.

Chosen by ``HYPOTHESIS_PROFILE``; without it, ``ci`` when ``CI`` is set, else ``dev``.
Fixtures live in the test modules (or their own helper files), not here.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev")
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
