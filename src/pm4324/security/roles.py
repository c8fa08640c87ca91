"""One set of roles and rights for every interface, and the identity of a client.

Rights are what a write needs: ``relays`` (relay coils, alarm acknowledgement), ``settings``
(CT/PT ratios, wiring, word order, relay modes, alarm rules) and ``energy-reset`` (zeroing
counters: billing data, so a right of its own). Reading needs no right.

A *role* names a set of rights (``[security.roles]``; defaults in
config/security_settings.py). Credentials carry roles: the role extension of an X.509
client certificate (Modbus/TCP Security), a hashed token or user for the HTTP API, the broker
account for MQTT commands (``identities.py``). Interfaces without credentials (RS-485, CAN,
plain TCP) get the rights of their write policy instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum


class Right(StrEnum):
    RELAYS = "relays"
    SETTINGS = "settings"
    ENERGY_RESET = "energy-reset"


# Write policies (per interface, in the settings) and the rights they grant.
POLICIES: dict[str, frozenset[Right]] = {
    "read-only": frozenset(),
    "relays": frozenset({Right.RELAYS}),
    "all": frozenset({Right.RELAYS, Right.SETTINGS}),
}


@dataclass(frozen=True)
class Client:
    """Who sent a request: the interface, its address there, and credentials if any.

    ``interface`` is one of the names below (``MODBUS_TCP`` ...); ``address`` is "ip:port" on
    TCP, the serial device on RTU, the bus on CANopen; ``subject`` and ``role`` come from a
    verified certificate (or a token, an account); ``role`` None means no role (Modbus/TCP
    Security: NULL, not a default).
    ``broadcast`` marks an RTU request to unit 0.
    """

    interface: str
    address: str = ""
    subject: str = ""
    role: str | None = None
    broadcast: bool = False

    @property
    def host(self) -> str:
        """The address without its port ("127.0.0.1:5555" -> "127.0.0.1", "[::1]:5" -> "::1")."""
        host, sep, port = self.address.rpartition(":")
        return host.strip("[]") if sep and port.isdigit() else self.address

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def describe(self) -> str:
        parts = [self.interface, self.address]
        if self.subject:
            parts.append(f"subject={self.subject}")
        if self.subject or self.role is not None:
            parts.append(f"role={self.role or '(none)'}")
        if self.broadcast:
            parts.append("broadcast")
        return " ".join(p for p in parts if p)


# Interfaces, as a Client names them (the audit log's "interface").
MODBUS_TCP = "modbus-tcp"
MODBUS_TLS = "modbus-tls"
MODBUS_RTU = "modbus-rtu"
CANOPEN = "canopen"
HTTP = "http"
MQTT = "mqtt"


def peer_address(peername: object) -> str:
    """asyncio's peername tuple as "host:port" ("[host]:port" for IPv6)."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = str(peername[0]), peername[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peername or "")
