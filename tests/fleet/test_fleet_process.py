"""`pm4324 fleet` as a process: killed with SIGKILL while it runs, restarted, every member's
energy counter read over Modbus before the kill is still there (nothing shown is lost)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pymodbus.client import ModbusTcpClient

METER1_KWH_U32 = 0x11D2  # Meter 1 import energy, uint32 in 0.01 kWh


def _free_port_block(n: int) -> int:
    """A first port with n free ports after it (checked now; bounded tries)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65535:
            continue
        try:
            socks = []
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no block of free ports")


def _start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pm4324.cli.cli", "fleet", str(config),
                             "--speed", "10", "--stats", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _seconds(proc: subprocess.Popen, n: int) -> None:
    """Wait (bounded by the process's own output) until it has published n seconds."""
    for _ in range(n):
        line = proc.stdout.readline()
        assert line, proc.stderr.read()


def _kwh(port: int) -> float:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    assert client.connect()
    try:
        rr = client.read_input_registers(METER1_KWH_U32, count=2, device_id=1)
        assert not rr.isError(), rr
        return (rr.registers[0] | rr.registers[1] << 16) / 100
    finally:
        client.close()


def test_sigkill_and_restart_keep_every_counter(tmp_path):
    port = _free_port_block(3)
    config = tmp_path / "fleet.toml"
    config.write_text(f'[fleet]\nstore = "var/f"\n[[meters]]\nkey = "m{{n}}"\ncount = 3\n'
                      f'load_scale = [10, 10]\n[modbus]\nport = {port}\n')
    proc = _start(config)
    try:
        _seconds(proc, 30)
        before = [_kwh(port + j) for j in range(3)]
        assert all(kwh > 0 for kwh in before)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    again = _start(config)
    try:
        _seconds(again, 1)
        after = [_kwh(port + j) for j in range(3)]
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
    assert all(a >= b for a, b in zip(after, before)), (before, after)
    assert "restored commit" in again.stderr.read()
