"""Real peers: mbpoll (libmodbus) over TCP and over RTU on a socat pty pair, and pymodbus's
serial client. A pty has no parity and no baud pacing, so RTU runs at 8N1 here; parity and
timing are covered by the unit tests in test_modbus_rtu.py."""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from pymodbus.client import AsyncModbusSerialClient

from peers import LIMIT, run_peer
from pm4324.protocols.modbus.rtu import RtuServer
from pm4324.protocols.modbus.tcp import TcpServer

VALUE = re.compile(r"^\[(\d+)\]:\s+(-?\d+)", re.M)


async def run_mbpoll(*args: str) -> tuple[int, dict[int, int], str]:
    """Run mbpoll to completion (bounded); return rc, {reference: value}, stderr."""
    rc, out, err = await run_peer(*args)
    return rc, {int(k): int(v) for k, v in VALUE.findall(out)}, err


# -- TCP ------------------------------------------------------------------------------------


@pytest.fixture
async def tcp(backend):
    async with TcpServer(backend, unit_id=1, port=0) as srv:
        yield srv


async def test_mbpoll_tcp_reads(mbpoll, tcp) -> None:
    base = [mbpoll, "-m", "tcp", "-p", str(tcp.port), "-a", "1", "-1", "-o", "2"]
    rc, values, err = await run_mbpoll(*base, "-0", "-r", "0", "-c", "10", "-t", "3", "127.0.0.1")
    assert rc == 0, err
    assert values == {a: 1000 + a for a in range(10)}
    # 1-based references (mbpoll's default): reference 1 is address 0
    rc, values, err = await run_mbpoll(*base, "-r", "101", "-c", "3", "-t", "4", "127.0.0.1")
    assert rc == 0, err
    assert values == {101: 100, 102: 101, 103: 102}
    rc, values, err = await run_mbpoll(*base, "-0", "-r", "0", "-c", "6", "-t", "1", "127.0.0.1")
    assert rc == 0, err
    assert values == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 1}


async def test_mbpoll_tcp_writes_and_reads_back(mbpoll, tcp, backend) -> None:
    base = [mbpoll, "-m", "tcp", "-p", str(tcp.port), "-a", "1", "-1", "-o", "2", "-0"]
    rc, _, err = await run_mbpoll(*base, "-r", "20", "-t", "4", "127.0.0.1", "4321")
    assert rc == 0, err
    rc, _, err = await run_mbpoll(*base, "-r", "30", "-t", "4", "127.0.0.1", "7", "8", "9")
    assert rc == 0, err
    rc, values, err = await run_mbpoll(*base, "-r", "20", "-c", "13", "-t", "4", "127.0.0.1")
    assert rc == 0, err
    assert values[20] == 4321 and [values[a] for a in (30, 31, 32)] == [7, 8, 9]
    assert values[21] == 21
    # coils: one (FC05) and several (FC0F)
    rc, _, err = await run_mbpoll(*base, "-r", "3", "-t", "0", "127.0.0.1", "1")
    assert rc == 0, err
    rc, _, err = await run_mbpoll(*base, "-r", "10", "-t", "0", "127.0.0.1", "1", "0", "1")
    assert rc == 0, err
    rc, values, err = await run_mbpoll(*base, "-r", "0", "-c", "13", "-t", "0", "127.0.0.1")
    assert rc == 0, err
    assert [a for a, v in values.items() if v] == [3, 10, 12]
    assert backend.coils[3] and backend.coils[12] and not backend.coils[11]


async def test_mbpoll_tcp_exceptions(mbpoll, tcp) -> None:
    base = [mbpoll, "-m", "tcp", "-p", str(tcp.port), "-1", "-o", "2", "-0"]
    rc, _, err = await run_mbpoll(*base, "-a", "1", "-r", "299", "-c", "2", "-t", "3", "127.0.0.1")
    assert rc != 0 and "Illegal data address" in err
    rc, _, err = await run_mbpoll(*base, "-a", "9", "-r", "0", "-t", "3", "127.0.0.1")
    assert rc != 0 and "Target device failed to respond" in err


# -- RTU over a socat pty pair ---------------------------------------------------------------


@pytest.fixture
async def rtu(backend, pty_pair):
    server_port, client_port = pty_pair
    async with RtuServer(backend, server_port, address=1, baud=19200, data_format="N81") as srv:
        yield srv, client_port


def rtu_args(mbpoll: str, port: str, unit: int = 1) -> list[str]:
    return [mbpoll, "-m", "rtu", "-b", "19200", "-P", "none", "-d", "8", "-s", "1",
            "-a", str(unit), "-1", "-0"]


async def test_mbpoll_rtu_read_and_write(mbpoll, rtu, backend) -> None:
    _, port = rtu
    base = rtu_args(mbpoll, port) + ["-o", "2"]
    rc, values, err = await run_mbpoll(*base, "-r", "0", "-c", "100", "-t", "3", port)
    assert rc == 0, err
    assert values == {a: 1000 + a for a in range(100)}
    rc, _, err = await run_mbpoll(*base, "-r", "40", "-t", "4", port, "1234", "5678")
    assert rc == 0, err
    rc, values, err = await run_mbpoll(*base, "-r", "40", "-c", "2", "-t", "4", port)
    assert rc == 0, err
    assert values == {40: 1234, 41: 5678}
    rc, _, err = await run_mbpoll(*base, "-r", "7", "-t", "0", port, "1")
    assert rc == 0, err
    assert backend.coils[7]
    rc, _, err = await run_mbpoll(*base, "-r", "300", "-c", "1", "-t", "3", port)
    assert rc != 0 and "Illegal data address" in err


async def test_mbpoll_rtu_other_unit_gets_no_reply(mbpoll, rtu, backend) -> None:
    srv, port = rtu
    base = rtu_args(mbpoll, port, unit=5) + ["-o", "0.3"]
    rc, values, err = await run_mbpoll(*base, "-r", "0", "-c", "2", "-t", "3", port)
    assert rc != 0 and values == {}
    assert "timed out" in err.lower()
    assert srv.requests >= 1 and srv.replies == 0  # it arrived, and we kept quiet
    assert backend.reads == 0


async def test_pymodbus_serial_client(rtu) -> None:
    srv, port = rtu
    client = AsyncModbusSerialClient(
        port, baudrate=19200, bytesize=8, parity="N", stopbits=1, timeout=2, retries=0
    )
    assert await asyncio.wait_for(client.connect(), LIMIT)
    try:
        rr = await client.read_input_registers(0, count=100, device_id=1)
        assert rr.registers == [1000 + a for a in range(100)]
        assert not (await client.write_registers(60, [11, 22], device_id=1)).isError()
        assert (await client.read_holding_registers(60, count=2, device_id=1)).registers == [11, 22]
        assert not (await client.write_coils(0, [True, True], device_id=1)).isError()
        assert (await client.read_coils(0, count=2, device_id=1)).bits[:2] == [True, True]
        rr = await client.read_device_information(read_code=1, device_id=1)
        assert rr.information[1] == b"PM-4324"
    finally:
        client.close()
    assert os.path.exists(port)
