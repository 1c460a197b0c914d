"""The deployment targets by name, :data:`TARGETS`: standard library only, so that the
command's ``--help`` can offer them without importing the renderers."""

from __future__ import annotations

from typing import Literal, get_args

Target = Literal["nginx", "apache", "s3", "gcs"]
TARGETS: tuple[Target, ...] = get_args(Target)
