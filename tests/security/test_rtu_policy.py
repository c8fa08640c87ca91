"""The write policy on Modbus RTU, with mbpoll on a socat pty pair: refusals are exception 01
from the addressed meter, a broadcast energy reset is never executed (and never answered),
and both are audited with the line they came from."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from pm4324.config.settings_parse import parse_settings
from pm4324.protocols.modbus.rtu import RtuServer, serve_rtu_frame
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard
from pm4324.security.roles import MODBUS_RTU, Client

LIMIT = 10.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}; .ci/run installs it)")
    return path


@pytest.fixture
async def pty_pair(tmp_path: Path):
    socat = tool("socat")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIMIT
        while not (a.exists() and b.exists()):  # bounded poll for socat's links
            if proc.poll() is not None or loop.time() > deadline:
                pytest.fail(f"socat did not create {a} and {b}")
            await asyncio.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def mbpoll(port: str, *args: str, value: str) -> tuple[int, str]:
    base = [tool("mbpoll"), "-m", "rtu", "-b", "19200", "-P", "none", "-d", "8", "-s", "1",
            "-a", "1", "-1", "-0", "-o", "1"]
    proc = await asyncio.create_subprocess_exec(*base, *args, port, value, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode()


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
