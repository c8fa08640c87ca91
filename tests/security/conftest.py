"""Shared fixtures: a test PKI (made once per session with ``security.certs``), and a meter
behind a guard whose audit log the tests read."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.config.security_settings import SecuritySettings, TlsSettings
from pm4324.config.settings import Settings
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.certs import make_ca, make_client, make_crl, make_server
from pm4324.security.guard import Guard

ROLES = ("read", "relays", "settings", "energy-reset")


@dataclass(frozen=True)
class Pki:
    directory: Path
    tls: TlsSettings  # the server's files

    def client_context(self, stem: str | None, max_tls12: bool = False) -> ssl.SSLContext:
        """A client context trusting our CA, presenting ``stem``.pem/.key (None: no certificate)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.directory / "ca.pem")
        if max_tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if stem is not None:
            ctx.load_cert_chain(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    ca.write(d, "ca")
    make_server(ca, ["127.0.0.1", "localhost"]).write(d, "server")
    for role in ROLES:
        make_client(ca, f"{role} operator", role).write(d, f"client-{role}")
    make_client(ca, "no role", None).write(d, "client-norole")
    now = dt.datetime.now(dt.UTC)
    make_client(ca, "expired", "settings", not_before=now - dt.timedelta(days=30),
                not_after=now - dt.timedelta(days=1)).write(d, "client-expired")
    make_client(make_ca("another CA"), "stranger", "settings").write(d, "client-otherca")
    lost = make_client(ca, "lost laptop", "settings")
    lost.write(d, "client-revoked")
    (d / "crl.pem").write_bytes(make_crl(ca, [lost.cert]))
    tls = TlsSettings(enabled=True, certificate=str(d / "server.pem"), key=str(d / "server.key"),
                      ca=str(d / "ca.pem"))
    return Pki(d, tls)


@dataclass
class Guarded:
    meter: FakeMeter
    backend: MapBackend
    audit: AuditLog


@pytest.fixture
def guarded() -> Guarded:
    """A meter (relays open) behind the default [security] policy, auditing in memory."""
    settings = Settings()
    meter = FakeMeter(settings, make_snapshot(settings))
    meter.relays = (False, False)
    audit = AuditLog(None)
    return Guarded(meter, MapBackend(meter, guard=Guard(SecuritySettings(), audit)), audit)
