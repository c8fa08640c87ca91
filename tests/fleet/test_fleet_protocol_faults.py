"""Protocol faults per member, behind one gateway and on one RTU line: pymodbus's client
sees the member's own fault (an exception, a timeout, a CRC error) while its neighbours on
the same port or line answer normally; scheduled and live faults are in the fault log."""

from __future__ import annotations

import asyncio
import json

import pytest
from fleet_helpers import ct_address, open_fleet, run_seconds, serving, small_fleet
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from pm4324.fleet.expose import Backends, start_rtu, start_tcp

SCHEDULED = [{"meter": "solo", "kind": "exception", "code": 6, "start_s": 0, "end_s": 1000}]


async def test_gateway_member_faults(tmp_path):
    config = small_fleet(tmp_path, faults=SCHEDULED, modbus={"mode": "gateway", "port": 0})
    fleet = open_fleet(config)
    async with serving(fleet) as servers:
        await start_tcp(config, Backends(fleet.members), servers, fleet.faults.protocol)
        await asyncio.to_thread(run_seconds, fleet, 2)
        fleet.faults.protocol[2].set("no_answer")  # m3, live
        client = AsyncModbusTcpClient("127.0.0.1", port=servers[0].port, timeout=1, retries=0)
        await client.connect()
        try:
            ok = await client.read_input_registers(ct_address(1), count=2, device_id=1)
            assert not ok.isError()
            rr = await client.read_input_registers(ct_address(1), count=2, device_id=4)
            assert rr.isError() and rr.exception_code == 6  # solo: scheduled exception 6
            with pytest.raises(ModbusIOException):  # m3: no answer, the master times out
                await client.read_input_registers(ct_address(1), count=2, device_id=3)
            fleet.faults.protocol[2].clear()
        finally:
            client.close()
    lines = [json.loads(x) for x in open(config.fault_log, encoding="utf-8")]
    said = {(x["event"], x["meter"], x["fault"]) for x in lines}
    assert {("start", "solo", "exception"), ("start", "m3", "no_answer"),
            ("end", "m3", "no_answer")} <= said


async def test_rtu_member_bad_crc(tmp_path, pty_pair):
    server_port, client_port = pty_pair
    fleet = open_fleet(small_fleet(tmp_path, rtu={"device": server_port}, modbus={"mode": "off"}))
    async with serving(fleet) as servers:
        await start_rtu(fleet.config, Backends(fleet.members), servers, fleet.faults.protocol)
        await asyncio.to_thread(run_seconds, fleet, 1)
        fleet.faults.protocol[1].set("bad_crc")
        client = AsyncModbusSerialClient(client_port, baudrate=19200, bytesize=8, parity="N",
                                         stopbits=1, timeout=1, retries=0)
        assert await asyncio.wait_for(client.connect(), 10)
        try:
            assert not (await client.read_input_registers(0x1100, count=2,
                                                          device_id=1)).isError()
            with pytest.raises(ModbusIOException):  # unit 2's reply fails its CRC
                await client.read_input_registers(0x1100, count=2, device_id=2)
            assert not (await client.read_input_registers(0x1100, count=2,
                                                          device_id=3)).isError()
        finally:
            client.close()
