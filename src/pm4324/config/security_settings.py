"""The ``[security]`` section: write policy per interface, roles, listeners, TLS, audit log.

Defaults (a settings file without ``[security]``), and why (docs/security.md):

* plain Modbus/TCP from **this host** may switch relays and acknowledge alarms (a local HMI
  or script), from **other hosts** it is read-only: plain TCP carries no identity, and an
  address on the network proves nothing;
* Modbus RTU and CANopen are read-only: anything wired to the bus can send a frame;
* energy reset (billing data) is allowed on no interface without a credential;
* the plain TCP listener accepts loopback clients only until ``[security.tcp] allow`` names
  networks;
* ``profile = "vendor"`` restores what the PM-4324 ships with: every interface may write
  everything, energy reset included (explicit keys still override).

Kept apart from settings.py like alarm_settings.py; the reader is settings_parse.py's, so errors
name file, key, value and what is allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pm4324.config.settings_parse import _Reader

WRITE_POLICIES = ("read-only", "relays", "all")
RIGHTS = ("relays", "settings", "energy-reset")
PROFILES = ("secure", "vendor")
# Interfaces without credentials: their rights come from a write policy (settings keys).
POLICY_KEYS = ("modbus_tcp", "modbus_tcp_loopback", "modbus_rtu", "canopen")
SECURE_POLICY = {"modbus_tcp": "read-only", "modbus_tcp_loopback": "relays",
                 "modbus_rtu": "read-only", "canopen": "read-only"}
DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "read": (),
    "relays": ("relays",),
    "settings": ("relays", "settings"),
    "energy-reset": ("energy-reset",),
}
LOOPBACK_NETS = ("127.0.0.0/8", "::1/128")
ANY_NET = ("0.0.0.0/0", "::/0")
MB_TLS_PORT = 802  # Modbus/TCP Security's registered port


@dataclass(frozen=True)
class ListenerAccess:
    """Who may connect to one TCP listener, and how much each client address may ask."""

    allow: tuple[str, ...] = LOOPBACK_NETS  # client networks (CIDR)
    max_connections_per_client: int = 16  # open at once
    max_connects_per_s: float = 10.0  # new connections per client address (a burst of as many)
    max_requests_per_s: float = 1000.0  # per client address; beyond it: exception 06 (busy)


@dataclass(frozen=True)
class TlsSettings:
    """The Modbus/TCP Security listener (TLS >= 1.2, mutual X.509 authentication, roles)."""

    enabled: bool = False
    listen: str = f"127.0.0.1:{MB_TLS_PORT}"
    certificate: str = ""  # server certificate chain (PEM)
    key: str = ""  # its private key (PEM)
    ca: str = ""  # CA(s) whose client certificates are accepted (PEM)
    crl: str = ""  # revoked client certificates (PEM CRL of that CA); "" = none checked
    plain_tcp: bool = True  # keep the plain Modbus/TCP listener beside TLS
    access: ListenerAccess = ListenerAccess(allow=ANY_NET)


@dataclass(frozen=True)
class SecuritySettings:
    profile: str = "secure"
    policy: Mapping[str, str] = field(default_factory=lambda: dict(SECURE_POLICY))
    energy_reset: tuple[str, ...] = ()  # POLICY_KEYS allowed to reset energy without a credential
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    tcp: ListenerAccess = ListenerAccess()
    tls: TlsSettings = TlsSettings()
    # credentials of later interfaces: HTTP API tokens (name -> (role, scrypt hash)) and MQTT
    # broker accounts allowed to send commands (account -> role)
    tokens: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    mqtt_accounts: Mapping[str, str] = field(default_factory=dict)
    audit_path: str = ""  # "" = beside the state file
    audit_max_entries: int = 100_000  # per outcome and right (security/audit.py)
    audit_max_age_days: float = 400.0  # a billing year and a margin

    def __eq__(self, other: object) -> bool:  # Mapping fields: compare as plain dicts
        if not isinstance(other, SecuritySettings):
            return NotImplemented
        return _key(self) == _key(other)

    def __hash__(self) -> int:
        return hash(repr(_key(self)))


def _key(s: SecuritySettings) -> tuple:
    return (s.profile, sorted(s.policy.items()), s.energy_reset, sorted(s.roles.items()), s.tcp,
            s.tls, sorted(s.tokens.items()), sorted(s.mqtt_accounts.items()), s.audit_path,
            s.audit_max_entries, s.audit_max_age_days)


def _networks(r: _Reader, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = r.get(name, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise r.error(name, value, 'must be a list of networks, e.g. ["192.168.1.0/24"]')
    for v in value:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise r.error(name, value, f"{v!r} is not a network (e.g. 10.0.0.0/8, ::1/128)") from None
    return tuple(value)


def _access(r: _Reader, default: ListenerAccess) -> ListenerAccess:
    access = ListenerAccess(
        allow=_networks(r, "allow", default.allow),
        max_connections_per_client=r.integer("max_connections_per_client",
                                             default.max_connections_per_client, 1, 10_000),
        max_connects_per_s=r.number("max_connects_per_s", default.max_connects_per_s, 0.01, 1e4),
        max_requests_per_s=r.number("max_requests_per_s", default.max_requests_per_s, 1, 1e6),
    )
    return access


def _listen(r: _Reader, name: str, default: str) -> str:
    value = r.text(name, default)
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise r.error(name, value, f'must be "HOST:PORT", e.g. "127.0.0.1:{MB_TLS_PORT}"')
    return value


def read_security(r: _Reader) -> SecuritySettings:
    profile = r.choice("profile", "secure", PROFILES)
    vendor = profile == "vendor"
    policy = {k: r.choice(k, "all" if vendor else SECURE_POLICY[k], WRITE_POLICIES)
              for k in POLICY_KEYS}
    resets = r.get("energy_reset", list(POLICY_KEYS) if vendor else [])
    if not isinstance(resets, list) or any(k not in POLICY_KEYS for k in resets):
        raise r.error("energy_reset", resets, "must be a list of " + ", ".join(POLICY_KEYS))
    roles_r = r.sub("roles")
    roles = dict(DEFAULT_ROLES)
    for name, rights in roles_r.table.items():
        roles_r.used.add(name)
        if not isinstance(rights, list) or any(x not in RIGHTS for x in rights):
            raise roles_r.error(name, rights, "must be a list of rights: " + ", ".join(RIGHTS))
        roles[name] = tuple(rights)
    roles_r.finish()
    tcp_r = r.sub("tcp")
    tcp = _access(tcp_r, ListenerAccess(allow=ANY_NET if vendor else LOOPBACK_NETS))
    tcp_r.finish()
    tls_r = r.sub("tls")
    tls = TlsSettings(
        enabled=tls_r.flag("enabled", False),
        listen=_listen(tls_r, "listen", TlsSettings.listen),
        certificate=tls_r.text("certificate", ""),
        key=tls_r.text("key", ""),
        ca=tls_r.text("ca", ""),
        crl=tls_r.text("crl", ""),
        plain_tcp=tls_r.flag("plain_tcp", True),
        access=_access(tls_r, TlsSettings().access),
    )
    if tls.enabled:
        for name in ("certificate", "key", "ca"):
            if not getattr(tls, name):
                raise tls_r.error(name, "", "is needed when [security.tls] enabled = true")
    tls_r.finish()
    tokens_r = r.sub("tokens")
    tokens = {}
    for name in list(tokens_r.table):
        t = tokens_r.sub(name)
        role = t.choice("role", "read", tuple(roles))
        hashed = t.text("hash", "")
        if not hashed.startswith("scrypt$"):
            raise t.error("hash", hashed, "must be a hash from `pm4324 token` (scrypt$...)")
        t.finish()
        tokens[name] = (role, hashed)
    tokens_r.finish()
    accounts_r = r.sub("mqtt_accounts")
    accounts = {name: accounts_r.choice(name, "", tuple(roles)) for name in list(accounts_r.table)}
    accounts_r.finish()
    security = SecuritySettings(
        profile=profile,
        policy=policy,
        energy_reset=tuple(resets),
        roles=roles,
        tcp=tcp,
        tls=tls,
        tokens=tokens,
        mqtt_accounts=accounts,
        audit_path=r.text("audit_path", ""),
        audit_max_entries=r.integer("audit_max_entries", 100_000, 100, 10_000_000),
        audit_max_age_days=r.number("audit_max_age_days", 400.0, 1, 36_500),
    )
    r.finish()
    return security


def security_table(s: SecuritySettings) -> dict[str, Any]:
    """``[security]`` as a TOML table, empty when it is all defaults (a short settings file)."""
    if s == SecuritySettings():
        return {}
    t: dict[str, Any] = {"profile": s.profile, **{k: s.policy[k] for k in POLICY_KEYS},
                         "energy_reset": list(s.energy_reset)}
    if s.audit_path:
        t["audit_path"] = s.audit_path
    t["audit_max_entries"] = s.audit_max_entries
    t["audit_max_age_days"] = s.audit_max_age_days
    if dict(s.roles) != DEFAULT_ROLES:
        t["roles"] = {k: list(v) for k, v in s.roles.items()}
    if s.tokens:
        t["tokens"] = {name: {"role": role, "hash": hashed}
                       for name, (role, hashed) in s.tokens.items()}
    if s.mqtt_accounts:
        t["mqtt_accounts"] = dict(s.mqtt_accounts)
    t["tcp"] = _access_table(s.tcp)
    tls = s.tls
    t["tls"] = {"enabled": tls.enabled, "listen": tls.listen, "certificate": tls.certificate,
                "key": tls.key, "ca": tls.ca, "crl": tls.crl, "plain_tcp": tls.plain_tcp,
                **_access_table(tls.access)}
    return t


def _access_table(a: ListenerAccess) -> dict[str, Any]:
    return {"allow": list(a.allow), "max_connections_per_client": a.max_connections_per_client,
            "max_connects_per_s": a.max_connects_per_s,
            "max_requests_per_s": a.max_requests_per_s}
