"""The one authorization point of every write, and its audit trail.

Every interface hands each write request to ``Guard.authorize`` with the ``Client`` that sent
it, before anything changes; the register backend (Modbus RTU/TCP/TLS, CANopen SDO and RPDO)
does so in ``MapBackend``, later interfaces (HTTP, MQTT) map their request to the same call.
A refused request changes nothing, is answered with the protocol's own refusal (Modbus
exception 01, SDO abort 0x08000020) and is audited; an accepted one is audited with its old
and new values once it has been applied (``Guard.accepted``).

Rights of a client (docs/security.md):

* with credentials (Modbus/TCP Security, HTTP, MQTT): the rights of its role in the settings'
  roles table; no role, or an unknown one, gives none (MB-TCP-Security: NULL, not a default);
* without (plain TCP, RTU, CANopen): the interface's write policy, ``modbus_tcp_loopback``
  for TCP clients on this host, plus energy reset where ``energy_reset`` lists the interface;
* an RTU broadcast never resets energy: nobody answers a broadcast, so nobody would learn
  that counters were zeroed, or by whom.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pm4324.config.security_settings import POLICY_KEYS, SecuritySettings
from pm4324.security.audit import AuditEntry, AuditLog
from pm4324.security.roles import (
    CANOPEN,
    HTTP,
    MODBUS_RTU,
    MODBUS_TCP,
    MODBUS_TLS,
    MQTT,
    POLICIES,
    Client,
    Right,
)

CREDENTIALED = (MODBUS_TLS, HTTP, MQTT)
_POLICY_KEY = {MODBUS_RTU: "modbus_rtu", CANOPEN: "canopen"}


@dataclass(frozen=True)
class Write:
    """One thing a request would change: the right it needs, what, and from/to what."""

    right: Right
    target: str
    old: str
    new: str


class Refused(Exception):
    """The client lacks a right the request needs; nothing was changed."""


class Guard:
    """Decides and audits writes by the ``[security]`` settings (None: allow all, audit none,
    for in-process tools and tests that exercise the register map itself)."""

    def __init__(self, security: SecuritySettings | None, audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.time):
        self.security = security
        self.audit = audit
        self._clock = clock
        self.refused = 0  # refused requests since start
        if security is not None:
            self._roles = {name: frozenset(Right(r) for r in rights)
                           for name, rights in security.roles.items()}
            self._policy = {key: POLICIES[security.policy[key]] |
                            (frozenset({Right.ENERGY_RESET}) if key in security.energy_reset
                             else frozenset())
                            for key in POLICY_KEYS}

    def rights(self, client: Client) -> frozenset[Right]:
        if self.security is None:
            return frozenset(Right)
        if client.interface in CREDENTIALED:
            rights = self._roles.get(client.role or "", frozenset())
        elif client.interface == MODBUS_TCP:
            rights = self._policy["modbus_tcp_loopback" if client.loopback else "modbus_tcp"]
        elif client.interface in _POLICY_KEY:
            rights = self._policy[_POLICY_KEY[client.interface]]
        else:
            rights = frozenset()  # an interface nobody configured may not write
        if client.broadcast:
            rights -= {Right.ENERGY_RESET}
        return rights

    def authorize(self, client: Client, writes: Iterable[Write]) -> None:
        """Raise ``Refused`` (and audit each write) unless the client has every right needed."""
        writes = list(writes)
        rights = self.rights(client)
        missing = sorted({w.right for w in writes} - rights)
        if not missing:
            return
        self.refused += 1
        reason = "needs " + ", ".join(missing) + ("; broadcast" if client.broadcast and
                                                  Right.ENERGY_RESET in missing else "")
        self._audit(client, writes, "refused", reason)
        raise Refused(f"{client.describe()}: {reason}")

    def accepted(self, client: Client, writes: Iterable[Write]) -> None:
        """Audit writes that were applied."""
        self._audit(client, list(writes), "accepted", "")

    def _audit(self, client: Client, writes: list[Write], outcome: str, reason: str) -> None:
        if self.audit is None:
            return
        now = self._clock()
        for w in writes:
            self.audit.record(AuditEntry(now, outcome, client.interface, client.address,
                                         client.subject, client.role, w.target, w.old, w.new,
                                         reason, right=w.right))
