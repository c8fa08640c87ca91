"""Who may write over HTTP: the security item's tokens, roles and guard (docs/security.md).

A write presents ``Authorization: Bearer TOKEN``; ``[security.tokens]`` (made with
`pm4324 token`, kept as scrypt hashes) gives the token a name and a role, and the same
``Guard`` that decides Modbus, CANopen and MQTT writes decides this one from the role's
rights and audits it, accepted or refused. Reading needs no credential.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from pm4324.config.security_settings import SecuritySettings
from pm4324.security.guard import Guard, Refused, Write
from pm4324.security.identities import Identities
from pm4324.security.roles import Client


def bearer(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip() or None


def authorize(guard: Guard, security: SecuritySettings, request: Request, authorization: str | None,
              writes: list[Write]) -> Client:
    """The client, once the guard allowed every write; 401 without a known token, 403 when
    its role lacks a right (both audited by the guard)."""
    token = bearer(authorization)
    peer = request.client
    address = f"{peer.host}:{peer.port}" if peer else ""
    client = Identities(security).http_client(token, address)
    try:
        guard.authorize(client, writes)
    except Refused as exc:
        if token is None or client.role is None:
            raise HTTPException(401, "this write needs a credential: a known token (Authorization: "
                                "Bearer TOKEN; `pm4324 token` makes one)",
                                headers={"WWW-Authenticate": "Bearer"}) from None
        raise HTTPException(403, f"role {client.role!r} may not: {exc}") from None
    return client
