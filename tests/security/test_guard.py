"""The write policy and roles, through the one authorization point (``MapBackend`` writes),
against a recording meter: what is refused changes nothing and is audited, with the client."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.config.security_settings import SecuritySettings
from pm4324.config.settings import Settings, SettingsError
from pm4324.config.settings_file import settings_to_toml
from pm4324.config.settings_parse import parse_settings
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard
from pm4324.security.roles import CANOPEN, MODBUS_RTU, MODBUS_TCP, MODBUS_TLS, Client

LOCAL = Client(MODBUS_TCP, "127.0.0.1:40000")
REMOTE = Client(MODBUS_TCP, "192.0.2.7:40000")
RTU = Client(MODBUS_RTU, "/dev/ttyS0")


def import_kwh(meters: range) -> str:
    """What the audit entry of a reset records: the counters it would zero (from the snapshot)."""
    wh = make_snapshot(Settings()).meter_energy.wh_import
    return "import " + ", ".join(f"M{m} {wh[m - 1] / 1000:.2f}" for m in meters) + " kWh"


ALL_KWH = import_kwh(range(1, 9))


def setup(security: SecuritySettings | None = None):
    settings = Settings()
    meter = FakeMeter(settings, make_snapshot(settings))
    meter.relays = (False, False)
    audit = AuditLog(None)
    backend = MapBackend(meter, guard=Guard(security or SecuritySettings(), audit))
    return meter, backend, audit


def refused(fn, *args) -> None:
    with pytest.raises(AccessError) as info:
        fn(*args)
    assert info.value.code is ExceptionCode.ILLEGAL_FUNCTION


def test_defaults_relays_from_loopback_only():
    meter, backend, audit = setup()
    backend.for_client(LOCAL).write_coils(0x1000, [True])
    assert meter.relays == (True, False)
    refused(backend.for_client(REMOTE).write_coils, 0x1000, [False])
    refused(backend.for_client(RTU).write_coils, 0x1001, [True])
    refused(backend.for_client(Client(CANOPEN, "virtual:x")).write_coils, 0x1001, [True])
    refused(backend.for_client(LOCAL).write_registers, 0x1000, [300])  # CT ratio: settings
    refused(backend.for_client(LOCAL).write_registers, 0x1013, [9])  # energy reset
    assert meter.relays == (True, False) and not meter.applied and not meter.resets
    backend.for_client(LOCAL).write_registers(0x1026, [3])  # alarm ack: a relays right
    assert meter.acks == [None]
    audit.flush()
    entries = audit.entries()
    assert [(e.outcome, e.address, e.target, e.old, e.new) for e in entries] == [
        ("accepted", "127.0.0.1:40000", "coil 0x1000 relay1", "0", "1"),
        ("refused", "192.0.2.7:40000", "coil 0x1000 relay1", "1", "0"),
        ("refused", "/dev/ttyS0", "coil 0x1001 relay2", "0", "1"),
        ("refused", "virtual:x", "coil 0x1001 relay2", "0", "1"),
        ("refused", "127.0.0.1:40000", "holding 0x1000 ct_ratio_meter1", "100", "300"),
        ("refused", "127.0.0.1:40000", "holding 0x1013 energy_reset", ALL_KWH, "9"),
        ("accepted", "127.0.0.1:40000", "holding 0x1026 alarm_ack", "0", "3"),
    ]
    assert entries[1].reason == "needs relays" and entries[5].reason == "needs energy-reset"
    assert backend.guard.refused == 5
    meter.publish(make_snapshot(meter.settings, seq=8))  # counters are served per second
    assert backend.read_registers("input", 0x1084, 2) == [5, 0]  # writes_refused, ours


def test_refusal_comes_before_value_checks_and_changes_nothing():
    meter, backend, _ = setup()
    # a CT ratio out of range from a client without the right: 01, not 03
    refused(backend.for_client(REMOTE).write_registers, 0x1000, [0])
    # a multi-register write needing settings and energy reset is refused whole
    sec = replace(SecuritySettings(), policy={**SecuritySettings().policy, "modbus_tcp_loopback": "all"})
    meter, backend, _ = setup(sec)
    refused(backend.for_client(LOCAL).write_registers, 0x1012, [1, 9])
    assert not meter.applied and not meter.resets
    backend.for_client(LOCAL).write_registers(0x1012, [1, 0])  # word order, no reset: allowed
    assert meter.settings.modbus.word_order == "high-first" and not meter.resets


def test_vendor_profile_and_rtu_broadcast_never_resets_energy():
    settings = parse_settings({"security": {"profile": "vendor"}})
    meter, backend, audit = setup(settings.security)
    backend.for_client(RTU).write_registers(0x1013, [4])
    assert meter.resets == [4]
    refused(backend.for_client(replace(RTU, broadcast=True)).write_registers, 0x1013, [9])
    backend.for_client(replace(RTU, broadcast=True)).write_registers(0x1000, [250])
    assert meter.resets == [4] and meter.settings.meters[0].ct_ratio == 250
    audit.flush()
    assert audit.entries(outcome="refused")[0].reason == "needs energy-reset; broadcast"
    assert audit.entries()[0].old == import_kwh(range(4, 5))  # what the reset zeroed
    assert audit.entries()[0].old.startswith("import M4 ") and "M5" not in audit.entries()[0].old


@pytest.mark.parametrize(("role", "coil", "ct_ratio", "reset"), [
    ("read", False, False, False),
    ("relays", True, False, False),
    ("settings", True, True, False),
    ("energy-reset", False, False, True),
    (None, False, False, False),  # no role extension: NULL, not a default role
    ("admin", False, False, False),  # a role the table does not know
])
def test_roles_of_credentialed_clients(role, coil, ct_ratio, reset):
    meter, backend, _ = setup()
    session = backend.for_client(Client(MODBUS_TLS, "192.0.2.9:1", "op", role))
    for allowed, args in ((coil, ("write_coils", 0x1000, [True])),
                          (ct_ratio, ("write_registers", 0x1000, [300])),
                          (reset, ("write_registers", 0x1013, [2]))):
        fn = getattr(session, args[0])
        if allowed:
            fn(*args[1:])
        else:
            refused(fn, *args[1:])
    assert (meter.relays[0], bool(meter.applied), meter.resets == [2]) == (coil, ct_ratio, reset)


def test_custom_roles_table():
    settings = parse_settings({"security": {"roles": {"billing": ["energy-reset", "relays"]}}})
    _, backend, _ = setup(settings.security)
    assert backend.guard.rights(Client(MODBUS_TLS, "x:1", "s", "billing")) == {
        "energy-reset", "relays"}


def test_security_settings_round_trip_and_errors():
    data = {"security": {"modbus_rtu": "all", "energy_reset": ["modbus_rtu"],
                         "tcp": {"allow": ["10.0.0.0/8"], "max_requests_per_s": 50},
                         "tls": {"enabled": True, "certificate": "s.pem", "key": "s.key",
                                 "ca": "ca.pem", "plain_tcp": False},
                         "roles": {"ops": ["relays"]}}}
    s = parse_settings(data)
    again = parse_settings(tomllib.loads(settings_to_toml(s)))
    assert again.security == s.security
    assert "[security]" not in settings_to_toml(Settings())  # defaults: not written
    for bad, key in (({"modbus_tcp": "write"}, "security.modbus_tcp"),
                     ({"energy_reset": ["http"]}, "security.energy_reset"),
                     ({"tcp": {"allow": ["10.0.0.300/8"]}}, "security.tcp.allow"),
                     ({"tls": {"enabled": True}}, "security.tls.certificate"),
                     ({"roles": {"x": ["root"]}}, "security.roles.x"),
                     ({"bogus": 1}, "security.bogus")):
        with pytest.raises(SettingsError) as info:
            parse_settings({"security": bad})
        assert info.value.key == key
