"""Credentials that carry a role, for every interface that has them.

* **Certificates** (Modbus/TCP Security): the role is the client certificate's extension
  1.3.6.1.4.1.50316.802.1, an ASN.1 UTF8String, one role per certificate. A certificate
  without it has no role (NULL), which grants nothing; a PrintableString or any other
  encoding is not a role either (as the MB-TCP-Security test suites treat it).
* **Tokens** (the HTTP API): stored only as a salted scrypt hash, ``scrypt$n$r$p$salt$hash``;
  ``TokenTable`` finds the name and role of a presented token in constant time per entry.
* **Broker accounts** (MQTT commands): the broker authenticates; the account name a command
  arrives under maps to a role (``account_role``).

Later interfaces only turn their credential into a ``Client`` with a role; ``Guard`` does
the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from pm4324.config.security_settings import SecuritySettings
from pm4324.security.roles import HTTP, MQTT, Client

ROLE_OID = x509.ObjectIdentifier("1.3.6.1.4.1.50316.802.1")
_UTF8STRING = 0x0C
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def encode_role(role: str) -> bytes:
    """The DER of the role extension's value: a UTF8String."""
    data = role.encode()
    if len(data) > 127:
        raise ValueError("role names are at most 127 bytes")
    return bytes((_UTF8STRING, len(data))) + data


def role_of(cert: x509.Certificate) -> str | None:
    """The role a certificate carries, or None (no extension, or not a UTF8String)."""
    try:
        ext = cert.extensions.get_extension_for_oid(ROLE_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    der = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(der) < 2 or der[0] != _UTF8STRING or der[1] != len(der) - 2:
        return None
    try:
        return der[2:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def subject_of(cert: x509.Certificate) -> str:
    """The subject's common name (or the whole subject when it has none)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def peer_identity(der: bytes | None) -> tuple[str, str | None]:
    """(subject, role) of a verified peer certificate in DER; ("", None) without one."""
    if not der:
        return "", None
    cert = x509.load_der_x509_certificate(der)
    return subject_of(cert), role_of(cert)


# -- tokens (HTTP API) -----------------------------------------------------------------------


def hash_token(token: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, **_SCRYPT)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_token(token: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(token.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n),
                             r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.urlsafe_b64decode(digest))


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    hashed: str


class TokenTable:
    """Named tokens with roles; a presented token maps to (name, role) or to nothing."""

    def __init__(self, entries: list[TokenEntry]):
        self.entries = list(entries)

    def lookup(self, token: str) -> TokenEntry | None:
        found = None
        for entry in self.entries:  # no early exit: the time does not tell which entry matched
            if verify_token(token, entry.hashed) and found is None:
                found = entry
        return found


def account_role(accounts: Mapping[str, str], account: str) -> str | None:
    """The role of an MQTT broker account (None: not listed, no rights)."""
    return accounts.get(account)


class Identities:
    """The credentials of ``[security]`` for interfaces that have them: each turns what a
    request presents into a ``Client`` for the guard (HTTP: a bearer token; MQTT: the broker
    account a command arrived under)."""

    def __init__(self, security: SecuritySettings):
        self.tokens = TokenTable([TokenEntry(name, role, hashed)
                                  for name, (role, hashed) in security.tokens.items()])
        self.accounts = dict(security.mqtt_accounts)

    def http_client(self, token: str | None, address: str) -> Client:
        entry = self.tokens.lookup(token) if token else None
        return Client(HTTP, address, entry.name if entry else "", entry.role if entry else None)

    def mqtt_client(self, account: str, broker: str) -> Client:
        return Client(MQTT, broker, account, account_role(self.accounts, account))
