"""The pipelined asyncio client against a running `pm4324 run` meter: the same second read
by pymodbus (``client.modbus.read_meter``) and by the plan over asyncio gives the same dict."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymodbus.client import ModbusTcpClient
from software_meter import SoftwareMeter

from pm4324.client.modbus import ReadError, modbus_reader, read_meter
from pm4324.client.modbus_async import AsyncModbusTcp
from pm4324.client.plan import ReadPlan

WAIT_S = 90.0  # bound: the meter's first second, and a round of reads inside one second


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = SoftwareMeter(tmp_path_factory.mktemp("async"))
    with (m.home / "meter.toml").open("a") as f:  # three readings back to back from one address
        f.write("\n[security.tcp]\nmax_requests_per_s = 100000\n")
    try:
        yield m.start()
    finally:
        m.kill()


@pytest.mark.parametrize(("pipeline", "meters"), [(4, None), (1, (2, 5)), (16, (8,))])
def test_async_reading_equals_the_synchronous_one(meter, pipeline, meters):
    sync = ModbusTcpClient("127.0.0.1", port=meter.port, timeout=5)
    assert sync.connect()
    read = modbus_reader(sync, 1, "meter")
    plan = ReadPlan(meters)

    async def run() -> tuple[dict, dict]:
        client = AsyncModbusTcp("127.0.0.1", meter.port, 1, timeout_s=5, pipeline=pipeline)
        try:
            end = time.monotonic() + WAIT_S
            while time.monotonic() < end:
                before = read_meter(read, meters)
                got = await client.read(plan, "low-first")
                after = read_meter(read, meters)
                if before["seq"] == after["seq"] and before["time"]:  # measured, and one second
                    return before, got
            raise AssertionError("the meter's second never held still for three reads")
        finally:
            client.close()

    try:
        want, got = asyncio.run(run())
    finally:
        sync.close()
    assert got == want
    assert got["meters"][0]["p_w"] is not None and got["model"] == "PM-4324A"


def test_a_silent_device_times_out_and_a_closed_port_is_refused():
    async def run() -> list[str]:
        async def silent(reader, writer):
            await reader.read(1000)  # takes the requests and never answers

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        errors = []
        client = AsyncModbusTcp("127.0.0.1", port, 1, timeout_s=0.3, pipeline=4)
        for _ in range(2):
            try:
                await client.read(ReadPlan((1,)), "low-first")
            except ReadError as exc:
                errors.append(str(exc))
        server.close()
        await server.wait_closed()
        try:
            await AsyncModbusTcp("127.0.0.1", port, 1, timeout_s=0.3).read(ReadPlan((1,)), "low-first")
        except ReadError as exc:
            errors.append(str(exc))
        return errors

    errors = asyncio.run(run())
    assert errors[:2] == [f"127.0.0.1:{errors[0].split(':')[1]}: no answer from unit 1"] * 2
    assert errors[2].startswith("cannot connect to 127.0.0.1:")
