"""Several meters behind one server: a TCP gateway (one port, a unit id per meter) and an RTU
multi-drop line (socat pty pair), read by real peers (mbpoll/libmodbus and pymodbus, through
`pm4324 read`); each unit's values are its own meter's snapshot, as `run --json` prints it."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from snapshot_factory import assert_same  # tests/registers, on pytest's pythonpath
from test_modbus_peers import rtu_args

from peers import LIMIT, run_peer
from pm4324.cli.cli import main
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.protocols.modbus.rtu import RtuServer
from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.registers.image import MapBackend
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

FLOAT = re.compile(r"^\[(\d+)\]:\s+(-?[\d.]+(?:e[-+]?\d+)?)", re.M)
V_AN = 0x1010  # main1_v_an .. main1_v_cn, float32 low word first (map.csv)


def _meter(seed: int, volts: float) -> Meter:
    settings = Settings()
    scenario = load_scenario(None)
    scenario = replace(scenario, seed=seed,
                       mains=tuple(replace(m, voltage_v=volts) for m in scenario.mains))
    meter = Meter(settings, SimulatorSource(scenario, settings), start_time=0.0)
    meter.step()
    return meter


@pytest.fixture(scope="module")
def meters() -> dict[int, Meter]:
    """Two meters that read differently: other noise, other mains voltage."""
    return {3: _meter(1, 230.0), 9: _meter(2, 235.0)}


def v_ln(meter: Meter) -> list[float]:
    snap = meter.snapshot
    assert snap is not None
    return snap.to_dict()["mains"][0]["v_ln"]


async def mbpoll_floats(*args: str) -> tuple[int, list[float], str]:
    rc, out, err = await run_peer(*args)
    return rc, [float(v) for _, v in FLOAT.findall(out)], err


async def read_json(*argv: str) -> dict:
    """`pm4324 read ... --json` (pymodbus's client) in a thread; its parsed output."""
    import contextlib
    import io

    buf = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(buf):
            return main(["read", *argv, "--json"])

    assert await asyncio.wait_for(asyncio.to_thread(run), 2 * LIMIT) == 0
    return json.loads(buf.getvalue())


def same_floats(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(g == pytest.approx(w, rel=1e-5) for g, w in
                                         zip(got, want, strict=True))


def test_the_two_meters_differ(meters) -> None:
    assert not same_floats(v_ln(meters[3]), v_ln(meters[9]))


# -- TCP gateway -----------------------------------------------------------------------------


@pytest.fixture
async def gateway(meters):
    backends = {unit: MapBackend(m) for unit, m in meters.items()}
    async with TcpServer(None, port=0, backends=backends) as srv:
        yield srv


async def test_gateway_with_mbpoll(mbpoll, gateway, meters) -> None:
    for unit, meter in meters.items():
        rc, values, err = await mbpoll_floats(
            mbpoll, "-m", "tcp", "-p", str(gateway.port), "-a", str(unit), "-1", "-o", "2",
            "-0", "-t", "3:float", "-r", str(V_AN), "-c", "3", "127.0.0.1")
        assert rc == 0, err
        assert same_floats(values, v_ln(meter)), unit
    # a unit nobody serves, and 255 (the device itself of a single meter): 0x0B
    for unit in ("5", "255"):
        rc, _, err = await mbpoll_floats(
            mbpoll, "-m", "tcp", "-p", str(gateway.port), "-a", unit, "-1", "-o", "2", "-0",
            "-t", "3", "-r", str(V_AN), "127.0.0.1")
        assert rc != 0 and "Target device failed to respond" in err


async def test_gateway_with_pymodbus_read(gateway, meters) -> None:
    for unit, meter in meters.items():
        got = await read_json("--tcp", f"127.0.0.1:{gateway.port}", "--unit", str(unit))
        assert_same(got, meter.snapshot.to_dict())


async def test_gateway_one_connection_many_units(gateway, meters) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=gateway.port, timeout=LIMIT, retries=0)
    await client.connect()
    try:
        for _ in range(3):  # interleaved on one connection: each answer from its own meter
            for unit, meter in meters.items():
                rr = await client.read_input_registers(V_AN, count=6, device_id=unit)
                floats = client.convert_from_registers(
                    rr.registers, client.DATATYPE.FLOAT32, word_order="little")
                assert same_floats(floats, v_ln(meter))
        rr = await client.read_input_registers(V_AN, count=2, device_id=4)
        assert rr.isError() and rr.exception_code == 0x0B
    finally:
        client.close()


def test_gateway_refuses_bad_arguments(backend) -> None:
    with pytest.raises(ValueError, match="one backend"):
        TcpServer(backend, backends={1: backend})
    with pytest.raises(ValueError, match="one backend"):
        TcpServer(None)
    with pytest.raises(ValueError, match="248"):
        TcpServer(None, backends={248: backend})


# -- RTU multi-drop --------------------------------------------------------------------------


async def test_multidrop_with_mbpoll_and_pymodbus(mbpoll, pty_pair, meters) -> None:
    server_port, client_port = pty_pair
    backends = {unit: MapBackend(m) for unit, m in meters.items()}
    async with RtuServer(None, server_port, baud=19200, backends=backends) as srv:
        assert srv.units == [3, 9]
        for unit, meter in meters.items():
            rc, values, err = await mbpoll_floats(
                *rtu_args(mbpoll, client_port, unit), "-o", "2", "-t", "3:float",
                "-r", str(V_AN), "-c", "3", client_port)
            assert rc == 0, err
            assert same_floats(values, v_ln(meter)), unit
        # unit 5 is on nobody's address: the line stays silent, mbpoll times out
        rc, values, err = await mbpoll_floats(
            *rtu_args(mbpoll, client_port, 5), "-o", "0.3", "-t", "3", "-r", str(V_AN),
            client_port)
        assert rc != 0 and values == [] and "timed out" in err.lower()
        replies = srv.replies
        for unit, meter in meters.items():
            got = await read_json("--rtu", client_port, "--baud", "19200", "--format", "N81",
                                  "--unit", str(unit), "--meter", "1")
            assert_same(got, meter.snapshot.to_dict([1]))
        assert srv.replies > replies


async def test_multidrop_broadcast_write_reaches_every_unit(backend_class, pty_pair) -> None:
    server_port, client_port = pty_pair
    a, b = backend_class(), backend_class()
    async with RtuServer(None, server_port, baud=19200, backends={1: a, 2: b}) as srv:
        client = AsyncModbusSerialClient(client_port, baudrate=19200, bytesize=8, parity="N",
                                         stopbits=1, timeout=2, retries=0)
        assert await asyncio.wait_for(client.connect(), LIMIT)
        try:
            assert not (await client.write_register(10, 77, device_id=2)).isError()
            assert b.holding[10] == 77 and a.holding[10] == 10  # only unit 2 took it
            await client.write_register(11, 55, device_id=0, no_response_expected=True)
            # the next unicast is answered only after the broadcast was served (one line)
            rr = await client.read_holding_registers(11, count=1, device_id=1)
            assert rr.registers == [55] and b.holding[11] == 55
        finally:
            client.close()
    assert srv.replies == 2  # the broadcast got no answer
