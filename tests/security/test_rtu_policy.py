"""The write policy on Modbus RTU, with mbpoll on a socat pty pair: refusals are exception 01
from the addressed meter, a broadcast energy reset is never executed (and never answered),
and both are audited with the line they came from."""

from __future__ import annotations

from peers import run_peer, tool
from pm4324.config.settings_parse import parse_settings
from pm4324.protocols.modbus.rtu import RtuServer, serve_rtu_frame
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard
from pm4324.security.roles import MODBUS_RTU, Client


async def mbpoll(port: str, *args: str, value: str) -> tuple[int, str]:
    base = [tool("mbpoll"), "-m", "rtu", "-b", "19200", "-P", "none", "-d", "8", "-s", "1",
            "-a", "1", "-1", "-0", "-o", "1"]
    rc, out, _ = await run_peer(*base, *args, port, value, merge=True)
    return rc, out


async def test_mbpoll_rtu_refusals(guarded, pty_pair):
    server_port, client_port = pty_pair
    async with RtuServer(guarded.backend, server_port, address=1):
        rc, out = await mbpoll(client_port, "-t", "0", "-r", str(0x1000), value="1")
        assert rc != 0 and "Illegal function" in out  # RS-485 is read-only by default
        rc, out = await mbpoll(client_port, "-t", "4", "-r", str(0x1013), value="9")
        assert rc != 0 and "Illegal function" in out
    assert guarded.meter.relays == (False, False) and not guarded.meter.resets
    guarded.audit.flush()
    assert [(e.outcome, e.interface, e.address, e.target) for e in guarded.audit.entries()] == [
        ("refused", "modbus-rtu", server_port, "coil 0x1000 relay1"),
        ("refused", "modbus-rtu", server_port, "holding 0x1013 energy_reset")]


def test_broadcast_energy_reset_is_never_executed(guarded):
    """Vendor profile (everything writable on RS-485): a reset addressed to the meter works,
    the same reset as a broadcast does not, while a broadcast CT ratio does."""
    vendor = parse_settings({"security": {"profile": "vendor"}}).security
    audit = AuditLog(None)
    backend = MapBackend(guarded.meter, guard=Guard(vendor, audit))
    line = Client(MODBUS_RTU, "/dev/ttyS1")
    unicast, broadcast = backend.for_client(line), backend.for_client(
        Client(MODBUS_RTU, "/dev/ttyS1", broadcast=True))
    reset = bytes.fromhex("06 1013 0009")
    assert serve_rtu_frame(unicast, 1, 1, reset, broadcast) is not None  # echoed: done
    assert serve_rtu_frame(unicast, 1, 0, reset, broadcast) is None  # broadcast: silence
    assert serve_rtu_frame(unicast, 1, 0, bytes.fromhex("06 1000 00fa"), broadcast) is None
    assert guarded.meter.resets == [None]  # only the addressed one
    assert guarded.meter.settings.meters[0].ct_ratio == 250
    audit.flush()
    assert [(e.outcome, e.target, e.reason) for e in audit.entries()] == [
        ("accepted", "holding 0x1013 energy_reset", ""),
        ("refused", "holding 0x1013 energy_reset", "needs energy-reset; broadcast"),
        ("accepted", "holding 0x1000 ct_ratio_meter1", "")]
