"""Test certificates for Modbus/TCP Security: a CA, a server certificate and client
certificates with a role (``pm4324 certs``).

For a lab, a commissioning laptop and the tests; a site with its own PKI issues its own (the
role extension is all the meter needs: OID 1.3.6.1.4.1.50316.802.1, UTF8String, see
identities.py). Keys are ECDSA P-256; every certificate is X.509v3 with basic constraints,
key usage and extended key usage set as a TLS stack checks them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pm4324.security.identities import ROLE_OID, encode_role

DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """``stem.pem`` and ``stem.key`` (the key readable by its owner only)."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem())
        key_path.touch(mode=0o600)
        key_path.chmod(0o600)
        key_path.write_bytes(self.key_pem())
        return cert_path, key_path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pm4324 test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(cn: str = "pm4324 test CA", days: int = 3650) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + days * DAY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                            False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    return Issued(builder.sign(key, hashes.SHA256()), key)


def _leaf(ca: Issued, cn: str, usage: x509.ObjectIdentifier, not_before: dt.datetime,
          not_after: dt.datetime) -> x509.CertificateBuilder:
    key_usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False))


def make_server(ca: Issued, hosts: list[str], days: int = 825) -> Issued:
    """A server certificate for these host names / IP addresses (subjectAltName)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    now = _now()
    builder = (_leaf(ca, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, now - DAY, now + days * DAY)
               .public_key(key.public_key())
               .add_extension(x509.SubjectAlternativeName(names), critical=False))
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_client(ca: Issued, cn: str, role: str | None, days: int = 825,
                not_before: dt.datetime | None = None,
                not_after: dt.datetime | None = None) -> Issued:
    """A client certificate carrying ``role`` (None: no role extension)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = _leaf(ca, cn, ExtendedKeyUsageOID.CLIENT_AUTH, not_before or now - DAY,
                    not_after or now + days * DAY).public_key(key.public_key())
    if role is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(ROLE_OID, encode_role(role)),
                                        critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_set(directory: Path, roles: list[str], hosts: list[str], days: int = 825) -> list[Path]:
    """ca.pem/key, server.pem/key and client-<role>.pem/key in ``directory``; the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    written = list(ca.write(directory, "ca"))
    written += make_server(ca, hosts, days).write(directory, "server")
    for role in roles:
        written += make_client(ca, f"{role} client", role, days).write(directory, f"client-{role}")
    return written


def make_crl(ca: Issued, revoked: list[x509.Certificate], days: int = 30) -> bytes:
    """A PEM CRL of ``ca`` listing ``revoked`` (for ``[security.tls] crl``)."""
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(now - DAY).next_update(now + days * DAY))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(now - DAY).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
