"""The write policy on CANopen, against python-canopen's master: a refused SDO download is
aborted with 0x08000020 and audited; with ``canopen = "all"`` the same downloads work, and an
RPDO write goes through the same guard."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from canopen.sdo.exceptions import SdoAbortedError
from canopen_helpers import NODE

from pm4324.config.security_settings import SecuritySettings
from pm4324.protocols.canopen import CanopenServer
from pm4324.protocols.canopen.codes import Abort
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard


def all_import_kwh() -> str:
    """The audit entry's old value of a reset of all Meters: their import counters."""
    from canopen_helpers import snapshot

    from pm4324.config.settings import Settings

    wh = snapshot(Settings()).meter_energy.wh_import
    return "import " + ", ".join(f"M{m} {wh[m - 1] / 1000:.2f}" for m in range(1, 9)) + " kWh"


ALL_KWH = all_import_kwh()


def guarded_node(meter, settings, log, security: SecuritySettings):
    audit = AuditLog(None)
    backend = MapBackend(meter, guard=Guard(security, audit))
    node = CanopenServer(meter, settings, backend=backend)
    node.open()
    log.count(0x700 + NODE, 1)  # boot-up
    return node, audit


@pytest.mark.parametrize(("index", "sub", "data", "target"), [
    (0x2010, 1, b"\x01", "coil 0x1000 relay1"),
    (0x2020, 1, struct.pack("<H", 250), "holding 0x1000 ct_ratio_meter1"),
    (0x2011, 0, struct.pack("<H", 9), "holding 0x1013 energy_reset"),
    (0x2026, 0, struct.pack("<H", 1), "holding 0x1012 word_order"),
])
def test_read_only_by_default(meter, settings, log, master, index, sub, data, target):
    meter.relays = (False, False)
    node, audit = guarded_node(meter, settings, log, SecuritySettings())
    try:
        with pytest.raises(SdoAbortedError) as info:
            master.sdo.download(index, sub, data)
        assert info.value.code == Abort.CANNOT_STORE == 0x08000020
        assert master.sdo.upload(0x2020, 1) == struct.pack("<H", 100)  # reading still works
    finally:
        node.close()
    assert meter.relays == (False, False) and not meter.applied and not meter.resets
    audit.flush()
    [entry] = audit.entries()
    assert (entry.outcome, entry.interface, entry.address, entry.target) == (
        "refused", "canopen", f"virtual:{settings.canopen.channel}", target)


def test_policy_all_allows_settings_but_not_energy_reset(meter, settings, log, master):
    security = replace(SecuritySettings(), policy={**SecuritySettings().policy, "canopen": "all"})
    node, audit = guarded_node(meter, settings, log, security)
    try:
        master.sdo.download(0x2020, 1, struct.pack("<H", 250))
        with pytest.raises(SdoAbortedError) as info:
            master.sdo.download(0x2011, 0, struct.pack("<H", 9))
        assert info.value.code == 0x08000020
    finally:
        node.close()
    assert meter.settings.meters[0].ct_ratio == 250 and not meter.resets
    audit.flush()
    assert [(e.outcome, e.old, e.new) for e in audit.entries()] == [
        ("accepted", "100", "250"), ("refused", ALL_KWH, "9")]


def test_rpdo_writes_pass_the_same_guard(meter, settings, log, master):
    meter.relays = (False, False)
    node, audit = guarded_node(meter, settings, log, SecuritySettings())
    try:
        mark = log.mark()
        master.nmt.state = "OPERATIONAL"
        log.wait(lambda fs: any(f.cob == 0x700 + NODE and f.data == b"\x05" for f in fs), mark)
        log.send(0x200 + NODE, b"\x01\x01")  # RPDO 1: both relays closed
        mark = log.mark()
        master.sdo.upload(0x1000, 0)  # once answered, the RPDO before it has been handled
        log.count(0x580 + NODE, 1, mark)
    finally:
        node.close()
    assert meter.relays == (False, False)
    audit.flush()
    assert [(e.outcome, e.target) for e in audit.entries()] == [
        ("refused", "coil 0x1000 relay1"), ("refused", "coil 0x1001 relay2")]
