"""The peers' private virtual environment: :class:`PeersEnv`, created on first use.

neuroglancer-scripts, cloud-volume and igneous pin their own numpy and pull in cloud SDKs; they
must never become dependencies of precomp_host, so they live in ``benchmarks/.venv-peers``
(gitignored), built with ``python -m venv`` and pip from ``peers-requirements.txt``. A stamp of
the requirements' hash makes a changed pin reinstall.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REQUIREMENTS = Path(__file__).with_name("peers-requirements.txt")
DEFAULT_DIR = Path(__file__).with_name(".venv-peers")


@dataclass(frozen=True)
class PeersEnv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def script(self, name: str) -> Path:
        """A console script installed in the venv (e.g. ``compute-scales``)."""
        return self.root / "bin" / name

    def ensure(self) -> PeersEnv:
        """Create the venv and install the pinned peers unless already done; return self."""
        stamp = self.root / ".requirements-sha256"
        digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
        if self.python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
            return self
        if not self.python.exists():
            log.info("creating %s", self.root)
            subprocess.run([sys.executable, "-m", "venv", str(self.root)], check=True)
        log.info("installing peers from %s (a few minutes, once)", REQUIREMENTS.name)
        pip = [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(digest + "\n")
        return self
