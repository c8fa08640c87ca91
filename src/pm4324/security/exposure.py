"""What a listener exposes, said before it starts; and the one case that needs a flag.

Binding a plain Modbus/TCP listener to every interface (0.0.0.0, ::) while clients from
other hosts may write is the setup the issue calls billing infrastructure open to a frame:
``pm4324 run`` refuses it unless ``--allow-exposed-writes`` says it is meant. A non-loopback
address always prints who may connect and with which rights.
"""

from __future__ import annotations

import ipaddress

from pm4324.config.security_settings import ListenerAccess, SecuritySettings

ALL_INTERFACES = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _remote_rights(security: SecuritySettings) -> str:
    policy = security.policy["modbus_tcp"]
    reset = "modbus_tcp" in security.energy_reset
    return policy + (" + energy reset" if reset else "")


def remote_writes(security: SecuritySettings) -> bool:
    return security.policy["modbus_tcp"] != "read-only" or "modbus_tcp" in security.energy_reset


def _allows_remote(access: ListenerAccess) -> bool:
    nets = [ipaddress.ip_network(n, strict=False) for n in access.allow]
    return any(not (n.network_address.is_loopback and n.broadcast_address.is_loopback)
               for n in nets)


def describe(kind: str, host: str, port: int, security: SecuritySettings,
             access: ListenerAccess, tls: bool) -> list[str]:
    """Lines for stderr about one listener on a non-loopback address (none for loopback)."""
    if is_loopback(host):
        return []
    where = "every interface" if host in ALL_INTERFACES else host
    lines = [f"{kind} on {host or '*'}:{port} is reachable from other hosts ({where})"]
    if not _allows_remote(access):
        lines.append("  but only loopback clients are admitted: set [security.tcp] allow to"
                     " the networks of your masters")
        return lines
    lines.append(f"  admitted client networks: {', '.join(access.allow)}; at most "
                 f"{access.max_connections_per_client} connections and "
                 f"{access.max_requests_per_s:g} requests/s per client address")
    if tls:
        roles = ", ".join(f"{k}: {'+'.join(v) or 'read'}" for k, v in security.roles.items())
        lines.append(f"  clients need a certificate of the configured CA; rights by role ({roles})")
    else:
        lines.append(f"  write policy for other hosts: {_remote_rights(security)}"
                     f" (this host: {security.policy['modbus_tcp_loopback']}); no TLS, no identity")
    return lines


def needs_flag(host: str, security: SecuritySettings, access: ListenerAccess, tls: bool) -> bool:
    """True for plain TCP on every interface that admits other hosts who may write."""
    return (not tls and host in ALL_INTERFACES and _allows_remote(access)
            and remote_writes(security))
