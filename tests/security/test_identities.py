"""Credentials that carry a role: the certificate role extension (only a UTF8String counts),
hashed tokens, broker accounts."""

from __future__ import annotations

import pytest
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


def test_settings_credentials_map_to_clients_with_roles():
    import tomllib

    from pm4324.config.settings import SettingsError
    from pm4324.config.settings_file import settings_to_toml
    from pm4324.config.settings_parse import parse_settings
    from pm4324.security.guard import Guard
    from pm4324.security.identities import Identities

    token = new_token()
    s = parse_settings({"security": {"tokens": {"hmi": {"role": "relays", "hash": hash_token(token)}},
                                     "mqtt_accounts": {"meter-cmd": "settings"}}})
    assert parse_settings(tomllib.loads(settings_to_toml(s))).security == s.security
    ids, guard = Identities(s.security), Guard(s.security)
    http = ids.http_client(token, "127.0.0.1:8080")
    assert (http.subject, http.role) == ("hmi", "relays") and guard.rights(http) == {"relays"}
    assert guard.rights(ids.http_client("wrong", "127.0.0.1:8080")) == set()
    assert guard.rights(ids.http_client(None, "127.0.0.1:8080")) == set()
    assert guard.rights(ids.mqtt_client("meter-cmd", "127.0.0.1:1883")) == {"relays", "settings"}
    assert guard.rights(ids.mqtt_client("guest", "127.0.0.1:1883")) == set()
    for bad, key in (({"tokens": {"x": {"role": "relays", "hash": "secret"}}}, "security.tokens.x.hash"),
                     ({"tokens": {"x": {"role": "root", "hash": "scrypt$1"}}}, "security.tokens.x.role"),
                     ({"mqtt_accounts": {"a": "root"}}, "security.mqtt_accounts.a")):
        with pytest.raises(SettingsError) as info:
            parse_settings({"security": bad})
        assert info.value.key == key
