"""Modbus TCP answers a write only once it is on disk, keeps answers in order while a
commit runs, and answers exception 04 when the commit cannot finish within 50 ms
(docs/energy-store.md, "Acknowledged means durable"). The meter is a real one with its
state files; pymodbus's client is one of the peers."""

from __future__ import annotations

import asyncio
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient

from pm4324.config.settings_parse import parse_settings
from pm4324.device.meter import Meter
from pm4324.device.store import Store, peek
from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.registers.image import MapBackend
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

LIMIT = 5.0
RELAY1 = 0x1000
RETRIES = 20


@pytest.fixture
async def served(tmp_path):
    settings = parse_settings({"model": "PM-4324", "sample_rate_hz": 2000})
    store = Store.open(tmp_path / "var" / "t.state.db", tmp_path / "t.meter-id")
    meter = Meter(settings, SimulatorSource(parse_scenario({"loads": []}), settings), store=store)
    meter.step()
    server = TcpServer(MapBackend(meter), unit_id=1, port=0)
    await server.start()
    yield meter, server
    await server.stop()
    meter.close()


async def test_an_acknowledged_coil_write_is_on_disk(served):
    meter, server = served
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=LIMIT)
    await client.connect()
    try:
        for closed in (True, False, True):
            for _ in range(RETRIES):  # exception 04: the commit took > 50 ms (a loaded box)
                rsp = await client.write_coil(RELAY1, closed, device_id=1)
                if not (rsp.isError() and getattr(rsp, "exception_code", None) == 4):
                    break
            assert not rsp.isError()
            assert peek(meter.store.path).relays[0] is closed  # on disk when answered
    finally:
        client.close()


async def _until(condition) -> None:
    """Poll the meter's state, bounded in time (the loop runs the meter meanwhile)."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), LIMIT)


def _frame(tid: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu


async def _answer(reader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readexactly(7), LIMIT)
    tid, _, length, _ = struct.unpack(">HHHB", head)
    return tid, await asyncio.wait_for(reader.readexactly(length - 1), LIMIT)


async def test_a_commit_that_cannot_finish_is_exception_04_and_answers_stay_in_order(served):
    meter, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        with meter.store._lock:  # the disk does not finish the commit
            write = _frame(1, bytes.fromhex("05 1000 FF00"))
            read = _frame(2, bytes.fromhex("01 1000 0002"))  # pipelined behind it
            writer.write(write + read)
            first, second = await _answer(reader), await _answer(reader)
        assert first == (1, bytes.fromhex("85 04"))  # not acknowledged: not (yet) durable
        assert second[0] == 2 and second[1][:2] == bytes.fromhex("01 01")
        assert second[1][2] & 1  # applied in memory all the same
        off = bytes.fromhex("05 1000 0000")
        for tid in range(3, 3 + RETRIES):  # exception 04 again only if the box is loaded
            writer.write(_frame(tid, off))
            answer = await _answer(reader)
            if answer[1] != bytes.fromhex("85 04"):
                break
        assert answer == (tid, off)
        assert peek(meter.store.path).relays[0] is False
    finally:
        writer.close()


async def test_rtu_answers_a_write_once_durable(served):
    """The same over RTU (the serial port is a pipe, as in test_modbus_rtu.py)."""
    import os

    from test_modbus_rtu import _pipe_server

    from pm4324.protocols.modbus.rtu import with_crc

    meter, tcp = served
    server, port, r, w = await _pipe_server(tcp.backend, baud=115200)
    try:
        for closed, value in ((True, "FF00"), (False, "0000")):
            request = with_crc(bytes.fromhex(f"01 05 1000 {value}"))
            for _ in range(RETRIES):  # exception 04: the commit took > 50 ms (a loaded box)
                port.got.clear()
                os.write(w, request)
                await asyncio.wait_for(port.got.wait(), LIMIT)
                if port.written[-1][1] == request:
                    break
            assert port.written[-1][1] == request  # the echo: acknowledged
            assert peek(meter.store.path).relays[0] is closed
    finally:
        await server.stop()
        os.close(r)
        os.close(w)


async def test_the_loop_serves_requests_while_a_second_waits_for_its_commit(served):
    """The 1-s loop awaits its commit instead of blocking the event loop on the disk."""
    meter, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        seq = meter.snapshot.seq
        with meter.store._lock:  # the disk does not finish the next second's commit
            run = asyncio.create_task(meter.run(speed=50, seconds=seq + 3))
            await _until(lambda: meter.seq == seq + 2)  # measured, its commit pending
            for tid in range(1, 4):  # answered all the same, from the loop that runs the meter
                writer.write(_frame(tid, bytes.fromhex("04 1005 0001")))
                assert (await _answer(reader))[0] == tid
            assert meter.snapshot.seq == seq  # the second is not published before its commit
        await asyncio.wait_for(run, LIMIT)
        assert meter.snapshot.seq == seq + 2
    finally:
        writer.close()
