"""Protocol faults (protocols/faults.py) as real masters see them: pymodbus's TCP and serial
clients and mbpoll (libmodbus) get the timeout, the exception, the wrong transaction id, the
CRC error, the frozen values; and the fault object itself (events, expiry, checks)."""

from __future__ import annotations

import asyncio
import logging
import struct
import threading

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from test_modbus_peers import rtu_args, run_mbpoll

from peers import LIMIT
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.protocols.faults import FaultChange, ProtocolFaults, parse_params
from pm4324.protocols.modbus.rtu import RtuServer
from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.registers.image import MapBackend
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

SEQ = 0x1006  # snapshot_seq, uint32 low word first (map.csv)
SHORT = 0.5  # seconds: the client's timeout where no answer is the expected outcome


# -- the fault object ------------------------------------------------------------------------


def test_set_clear_replace_and_events() -> None:
    events: list[FaultChange] = []
    f = ProtocolFaults("m7", on_change=events.append)
    assert not f.current
    f.set("latency", ms=200)
    f.set("latency", ms=300, jitter_ms=10)  # replaces: end of the first, start of the second
    f.set("exception", code=6)
    f.clear("latency")
    f.clear("no_answer")  # not active: nothing
    f.clear()
    got = [(e.fault, e.state, e.reason, dict(e.params)) for e in events]
    assert got == [
        ("latency", "start", "", {"ms": 200.0, "jitter_ms": 0.0}),
        ("latency", "end", "replaced", {"ms": 200.0, "jitter_ms": 0.0}),
        ("latency", "start", "", {"ms": 300.0, "jitter_ms": 10.0}),
        ("exception", "start", "", {"code": 6, "probability": 1.0}),
        ("latency", "end", "cleared", {"ms": 300.0, "jitter_ms": 10.0}),
        ("exception", "end", "cleared", {"code": 6, "probability": 1.0}),
    ]
    assert not f.current and f.active() == {}
    line = events[3].to_dict()
    assert line["meter"] == "m7" and line["fault"] == "exception" and line["state"] == "start"
    assert line["params"] == {"code": 6, "probability": 1.0} and line["time"] > 1.7e9


def test_duration_ends_a_fault_by_itself() -> None:
    ended = threading.Event()
    f = ProtocolFaults("m1", on_change=lambda e: e.state == "end" and ended.set())
    f.set("stale", duration_s=0.05)
    assert "stale" in f.current
    assert ended.wait(LIMIT)
    assert not f.current


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("lag", {}, "unknown protocol fault 'lag'"),
    ("latency", {"ms": -1}, "latency: ms = -1: allowed 0..60000"),
    ("exception", {"code": 0}, "exception: code = 0: allowed 1..255"),
    ("exception", {"code": 2.5}, "must be a whole number"),
    ("no_answer", {"probability": 2}, "allowed 0..1"),
    ("stale", {"ms": 3}, "stale: unknown parameter ms"),
    ("offline", {"duration_s": 0}, "duration_s = 0: must be > 0"),
])
def test_bad_faults_are_refused_in_one_line(kind, params, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ProtocolFaults().set(kind, **params)


def test_parse_params() -> None:
    assert parse_params("latency", ["ms=200", "jitter_ms=50"]) == {"ms": 200, "jitter_ms": 50}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_params("latency", ["200"])
    with pytest.raises(ValueError, match="not a number"):
        parse_params("exception", ["code=busy"])


def test_probability_is_seeded() -> None:
    def draws(seed: int) -> list[bool]:
        f = ProtocolFaults(seed=seed)
        f.set("no_answer", probability=0.5)
        return [f.hit("no_answer") for _ in range(200)]

    a = draws(3)
    assert a == draws(3) and 60 < sum(a) < 140


# -- Modbus TCP with pymodbus ----------------------------------------------------------------


@pytest.fixture
async def faulty(backend):
    faults = ProtocolFaults("m1")
    async with TcpServer(backend, unit_id=1, port=0, faults=faults) as srv:
        yield srv, faults


async def tcp_client(srv: TcpServer, timeout: float = LIMIT) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=timeout, retries=0)
    assert await client.connect()
    return client


async def test_exception_code(faulty) -> None:
    srv, faults = faulty
    client = await tcp_client(srv)
    try:
        faults.set("exception", code=6)
        rr = await client.read_input_registers(0, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 6
        rr = await client.write_register(5, 9, device_id=1)
        assert rr.isError() and rr.exception_code == 6
        faults.clear()
        assert (await client.read_input_registers(0, count=2, device_id=1)).registers == \
            [1000, 1001]
    finally:
        client.close()
    assert srv.faults_applied["exception"] == 2


@pytest.mark.parametrize("kind", ["no_answer", "offline"])
async def test_no_answer_is_a_timeout(faulty, backend, kind) -> None:
    srv, faults = faulty
    faults.set(kind)
    client = await tcp_client(srv, SHORT)
    try:
        with pytest.raises(ModbusIOException, match="No response"):
            await client.read_input_registers(0, count=2, device_id=1)
        with pytest.raises(ModbusIOException, match="No response"):
            await client.write_register(7, 70, device_id=1)
    finally:
        client.close()
    assert backend.holding[7] == 7  # a request that got lost was not executed
    faults.clear()
    client = await tcp_client(srv)
    try:
        assert (await client.read_input_registers(0, count=1, device_id=1)).registers == [1000]
    finally:
        client.close()


async def test_wrong_transaction_id(faulty, caplog) -> None:
    srv, faults = faulty
    caplog.set_level(logging.ERROR, logger="pymodbus")  # a CLI test run in-process may have hushed it
    faults.set("wrong_tid")
    client = await tcp_client(srv, SHORT)
    try:  # pymodbus's framer skips the answer, says why, and the request times out
        with pytest.raises(ModbusIOException, match="No response"):
            await client.read_input_registers(0, count=2, device_id=1)
    finally:
        client.close()
    assert "ask for transaction_id=1 but got id=2" in caplog.text


async def test_latency_split_and_merge_still_answer_correctly(faulty, backend) -> None:
    srv, faults = faulty
    client = await tcp_client(srv)
    try:
        faults.set("latency", ms=20, jitter_ms=20)
        faults.set("split", gap_ms=20)
        for a in range(3):
            assert (await client.read_input_registers(a, count=3, device_id=1)).registers == \
                [1000 + a, 1001 + a, 1002 + a]
        assert not (await client.write_register(8, 88, device_id=1)).isError()
        assert backend.holding[8] == 88
        faults.clear()
        faults.set("merge", window_ms=20)  # one request at a time: each goes out alone, late
        assert (await client.read_holding_registers(8, count=1, device_id=1)).registers == [88]
    finally:
        client.close()
    assert srv.faults_applied["latency"] == 4 and srv.faults_applied["split"] == 4
    assert srv.faults_applied["merge"] == 1


async def test_merge_sends_pipelined_answers_in_one_segment(faulty) -> None:
    srv, faults = faulty
    faults.set("merge", window_ms=5000)
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", srv.port),
                                            LIMIT)
    try:
        req = [struct.pack(">HHHB", tid, 0, 6, 1) + bytes.fromhex(f"04 000{tid} 0001")
               for tid in (1, 2)]
        writer.write(req[0] + req[1])
        want = [struct.pack(">HHHB", tid, 0, 5, 1) + b"\x04\x02" + struct.pack(">H", 1000 + tid)
                for tid in (1, 2)]
        got = await asyncio.wait_for(reader.readexactly(2 * len(want[0])), LIMIT)
        assert got == want[0] + want[1]  # both, in order, long before the 5-s window
    finally:
        writer.close()
    assert srv.faults_applied["merge"] == 2


async def test_stale_values_freeze_the_registers() -> None:
    settings = Settings()
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings), start_time=0.0)
    meter.step()
    faults = ProtocolFaults("m1")
    async with TcpServer(MapBackend(meter), unit_id=1, port=0, faults=faults) as srv:
        client = await tcp_client(srv)
        try:
            async def seq() -> int:
                rr = await client.read_input_registers(SEQ, count=2, device_id=1)
                return rr.registers[0] | rr.registers[1] << 16

            assert await seq() == 0
            faults.set("stale")
            assert await seq() == 0
            meter.step()
            meter.step()
            assert meter.snapshot.seq == 2 and await seq() == 0  # frozen
            faults.clear()
            assert await seq() == 2
        finally:
            client.close()


async def test_gateway_faults_are_per_unit(backend_class) -> None:
    a, b = backend_class(), backend_class()
    fb = ProtocolFaults("b")
    async with TcpServer(None, port=0, backends={1: a, 2: b}, faults={2: fb}) as srv:
        client = await tcp_client(srv)
        try:
            fb.set("offline")  # the gateway's target is gone: 0x0B, as for an unknown unit
            rr = await client.read_input_registers(0, count=1, device_id=2)
            assert rr.isError() and rr.exception_code == 0x0B
            assert (await client.read_input_registers(0, count=1, device_id=1)).registers == \
                [1000]
        finally:
            client.close()


async def test_mbpoll_sees_tcp_faults(mbpoll, faulty) -> None:
    srv, faults = faulty
    base = [mbpoll, "-m", "tcp", "-p", str(srv.port), "-a", "1", "-1", "-0", "-t", "3",
            "-r", "0", "-c", "2"]
    faults.set("exception", code=6)
    rc, _, err = await run_mbpoll(*base, "-o", "2", "127.0.0.1")
    assert rc != 0 and "busy" in err.lower()
    faults.set("no_answer")
    rc, values, err = await run_mbpoll(*base, "-o", str(SHORT), "127.0.0.1")
    assert rc != 0 and values == {} and "timed out" in err.lower()
    faults.clear()
    rc, values, err = await run_mbpoll(*base, "-o", "2", "127.0.0.1")
    assert rc == 0 and values == {0: 1000, 1: 1001}, err


# -- Modbus RTU over a socat pty pair --------------------------------------------------------


async def test_rtu_faults_with_pymodbus_and_mbpoll(mbpoll, backend, pty_pair) -> None:
    server_port, client_port = pty_pair
    faults = ProtocolFaults("m1")
    async with RtuServer(backend, server_port, address=1, baud=19200, faults=faults) as srv:
        client = AsyncModbusSerialClient(client_port, baudrate=19200, bytesize=8, parity="N",
                                         stopbits=1, timeout=1.0, retries=0)
        assert await asyncio.wait_for(client.connect(), LIMIT)
        try:
            faults.set("bad_crc")
            with pytest.raises(ModbusIOException):  # pymodbus drops the frame: no response
                await client.read_input_registers(0, count=2, device_id=1)
            faults.set("exception", code=4)
            faults.clear("bad_crc")
            rr = await client.read_input_registers(0, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 4
            faults.clear()
            faults.set("latency", ms=30)
            assert (await client.read_input_registers(0, count=2, device_id=1)).registers == \
                [1000, 1001]
            faults.set("no_answer")
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=1)
        finally:
            client.close()
        faults.clear()
        faults.set("bad_crc")
        base = rtu_args(mbpoll, client_port) + ["-o", "1", "-t", "3", "-r", "0", "-c", "2"]
        rc, values, err = await run_mbpoll(*base, client_port)
        assert rc != 0 and values == {} and "crc" in err.lower(), err
        faults.clear()
        rc, values, err = await run_mbpoll(*base, client_port)
        assert rc == 0 and values == {0: 1000, 1: 1001}, err
    assert srv.faults_applied["bad_crc"] == 2 and srv.faults_applied["no_answer"] == 1
