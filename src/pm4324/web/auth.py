"""Who may write over HTTP: bearer tokens mapped to roles.

Roles are those of the security item: ``read``, ``relays`` (relay switching and alarm
acknowledgement), ``settings`` and ``energy_reset``. Reading needs no credential on the
default loopback binding; every write needs a token carrying its role. Tokens are kept only
as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

ROLES = ("read", "relays", "settings", "energy_reset")


class CredentialsError(ValueError):
    """A token file that cannot be used; the message names the file and line."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Credentials:
    def __init__(self, tokens: Mapping[str, Iterable[str]] | None = None):
        self._entries = [(_digest(t), frozenset(roles)) for t, roles in (tokens or {}).items()]

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        """One token per line: ``ROLE[,ROLE...] TOKEN``; ``#`` starts a comment."""
        tokens: dict[str, list[str]] = {}
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialsError(f"{path}: cannot be read: {exc.strerror}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            roles, _, token = line.partition(" ")
            token, wanted = token.strip(), roles.split(",")
            unknown = [r for r in wanted if r not in ROLES]
            if not token or unknown:
                raise CredentialsError(f"{path}:{n}: expected 'ROLE[,ROLE] TOKEN' with roles from "
                                       f"{', '.join(ROLES)}")
            if len(token) < 16:
                raise CredentialsError(f"{path}:{n}: a token needs at least 16 characters")
            tokens[token] = wanted
        return cls(tokens)

    def roles(self, authorization: str | None) -> frozenset[str] | None:
        """The roles of an ``Authorization: Bearer TOKEN`` header; None when it names none."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        digest = _digest(authorization[7:].strip())
        found = None
        for known, roles in self._entries:  # no early exit: the time does not tell which
            if hmac.compare_digest(known, digest):
                found = roles
        return found
