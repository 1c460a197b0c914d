"""Who may write annotations: :class:`WritePolicy`.

Read-only by default. A bearer token (``--write-token-file`` or ``$PRECOMP_HOST_WRITE_TOKEN``)
is compared in constant time; ``--allow-writes-from ORIGIN`` lets the NeuroTrALE viewer, which
sends no credentials, write from the pages it names, and :meth:`WritePolicy.describe` says at
start why that is weaker than a token.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import WSGIEnvironment

#: The environment variable a write token may be given in (else ``--write-token-file``).
TOKEN_ENV = "PRECOMP_HOST_WRITE_TOKEN"


# -- who may write -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WritePolicy:
    """Who may write: holders of ``token``, and browsers on ``origins`` (no credentials).

    The default, no token and no origin, is read-only.
    """

    token: str | None = None
    origins: frozenset[str] = frozenset()

    @classmethod
    def from_options(
        cls, token_file: str | os.PathLike[str] | None, origins: Iterable[str] = ()
    ) -> WritePolicy:
        """The policy from ``--write-token-file`` (else ``$PRECOMP_HOST_WRITE_TOKEN``) and
        ``--allow-writes-from`` values."""
        token = os.environ.get(TOKEN_ENV) or None
        if token_file is not None:
            token = Path(token_file).read_text().strip()
            if not token:
                raise ValueError(f"{token_file}: the token file is empty")
        return cls(token, frozenset(o.rstrip("/") for o in origins))

    @property
    def read_only(self) -> bool:
        return self.token is None and not self.origins

    def describe(self) -> str:
        """What this policy allows, and why origins are weaker than a token (said at start)."""
        if self.read_only:
            return "annotations are read-only (no --write-token-file, no --allow-writes-from)"
        parts = []
        if self.token is not None:
            parts.append("writes with 'Authorization: Bearer <token>'")
        if self.origins:
            parts.append(
                "writes without credentials from pages on "
                + ", ".join(sorted(self.origins))
                + " (weaker than a token: a browser cannot fake its Origin, but any other "
                "client on the network can send one, so anyone who can reach this port can "
                "write)"
            )
        return "annotations: " + "; ".join(parts)

    def allows(self, environ: WSGIEnvironment) -> tuple[int, str]:
        """(0, how) when the request may write, else (status, reason)."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if self.token is not None and auth[:7].lower() == "bearer ":
            # compare_digest: the time taken does not tell how much of the token was right.
            if hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
                return 0, "token"
            return 401, "wrong token"
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin in self.origins:
            return 0, f"origin {origin}"
        if self.read_only:
            return 403, "this server is read-only"
        return 401, "a write needs 'Authorization: Bearer <token>' or an allowed origin"
