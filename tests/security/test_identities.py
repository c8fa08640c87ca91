"""Credentials that carry a role: the certificate role extension (only a UTF8String counts),
hashed tokens, broker accounts."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pm4324.security.certs import make_ca, make_client
from pm4324.security.identities import (
    ROLE_OID,
    TokenEntry,
    TokenTable,
    account_role,
    hash_token,
    new_token,
    peer_identity,
    role_of,
    verify_token,
)


def test_role_extension_encodings():
    ca = make_ca()
    assert role_of(make_client(ca, "a", "settings").cert) == "settings"
    assert role_of(make_client(ca, "b", None).cert) is None
    assert ROLE_OID.dotted_string == "1.3.6.1.4.1.50316.802.1"
    # a PrintableString (tag 0x13) or an OCTET STRING is not a role
    for der in (b"\x13\x08settings", b"\x04\x08settings", b"\x0c\x09settings", b""):
        builder = x509.CertificateBuilder().add_extension(
            x509.UnrecognizedExtension(ROLE_OID, der), critical=False)
        cert = make_client(ca, "c", None).cert
        forged = (builder.subject_name(cert.subject).issuer_name(cert.issuer)
                  .public_key(cert.public_key()).serial_number(1)
                  .not_valid_before(cert.not_valid_before_utc)
                  .not_valid_after(cert.not_valid_after_utc)
                  .sign(ca.key, cert.signature_hash_algorithm))
        assert role_of(forged) is None
    der = make_client(ca, "op 7", "relays").cert.public_bytes(Encoding.DER)
    assert peer_identity(der) == ("op 7", "relays") and peer_identity(None) == ("", None)


def test_tokens_are_stored_hashed():
    token = new_token()
    stored = hash_token(token)
    assert token not in stored and stored.startswith("scrypt$")
    assert verify_token(token, stored) and not verify_token(token + "x", stored)
    assert not verify_token(token, "plain$text") and hash_token(token) != stored  # salted
    table = TokenTable([TokenEntry("hmi", "relays", stored),
                        TokenEntry("billing", "energy-reset", hash_token("other"))])
    assert table.lookup(token).role == "relays" and table.lookup("nope") is None
    assert account_role({"meter-cmd": "relays"}, "meter-cmd") == "relays"
    assert account_role({"meter-cmd": "relays"}, "guest") is None
