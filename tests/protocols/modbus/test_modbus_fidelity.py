"""The register map's leftovers, through real peers against a real meter: the relay-mode coils
0x1010/0x1011, PT ratio at the ends of its range, one exception code for a main the model
lacks, and docs/registers.md listing the function codes the server serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from test_modbus_peers import run_mbpoll

from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.protocols.modbus.pdu import FC_NAMES
from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.registers.image import MapBackend
from pm4324.snapshot import Status
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

LIMIT = 5.0
REGISTERS_MD = Path(__file__).resolve().parents[3] / "docs/registers.md"


def _meter(model: str = "PM-4324A") -> Meter:
    settings = Settings() if model == "PM-4324A" else \
        Settings(model=model, mains=(Settings().mains[0],))
    return Meter(settings, SimulatorSource(load_scenario(None), settings), start_time=0.0)


@pytest.fixture
async def served(request):
    meter = _meter(getattr(request, "param", "PM-4324A"))
    meter.step()
    async with TcpServer(MapBackend(meter), unit_id=1, port=0) as srv:
        client = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=LIMIT, retries=0)
        await client.connect()
        try:
            yield meter, srv, client
        finally:
            client.close()


@pytest.mark.parametrize(("raw", "ratio"), [(1, 0.01), (65535, 655.35)])
async def test_pt_ratio_ends_are_taken_and_flagged(served, raw, ratio) -> None:
    meter, _, client = served
    rr = await client.write_registers(0x1008, [raw, raw], device_id=1)
    assert not rr.isError(), rr
    assert [m.pt_ratio for m in meter.settings.mains] == [ratio, ratio]
    assert (await client.read_holding_registers(0x1008, count=2, device_id=1)).registers == \
        [raw, raw]
    meter.step()
    status = (await client.read_input_registers(0x1005, count=1, device_id=1)).registers[0]
    assert status & Status.VOLTAGE_RANGE
    assert meter.events[-1].kind == "voltage_range"


@pytest.mark.parametrize("served", ["PM-4324"], indirect=True)
@pytest.mark.parametrize("raw", [0, 100, 65535])
async def test_second_pt_ratio_on_a_pm4324_is_always_exception_02(served, raw) -> None:
    meter, _, client = served
    before = meter.settings
    rr = await client.write_register(0x1009, raw, device_id=1)
    assert rr.isError() and rr.exception_code == 2
    assert meter.settings is before


async def test_relay_mode_coils_with_mbpoll(mbpoll, served) -> None:
    meter, srv, _ = served
    base = [mbpoll, "-m", "tcp", "-p", str(srv.port), "-a", "1", "-1", "-o", "2", "-0",
            "-t", "0"]
    rc, _, err = await run_mbpoll(*base, "-r", "0x1011", "127.0.0.1", "1")
    assert rc == 0, err
    assert [r.mode for r in meter.settings.relays.relays] == ["manual", "alarm"]
    rc, values, err = await run_mbpoll(*base, "-r", "0x1010", "-c", "2", "127.0.0.1")
    assert rc == 0, err
    assert values == {0x1010: 0, 0x1011: 1}
    # relay 2 now follows its rules: its coil is read-only (exception 02)
    rc, _, err = await run_mbpoll(*base, "-r", "0x1001", "127.0.0.1", "1")
    assert rc != 0 and "Illegal data address" in err
    rc, _, err = await run_mbpoll(*base, "-r", "0x1010", "127.0.0.1", "0", "0")
    assert rc == 0, err
    assert [r.mode for r in meter.settings.relays.relays] == ["manual", "manual"]


async def test_relay_mode_coils_with_pymodbus(served) -> None:
    meter, _, client = served
    assert not (await client.write_coil(0x1010, True, device_id=1)).isError()
    assert meter.settings.relays.relays[0].mode == "alarm"
    assert (await client.read_holding_registers(0x1020, count=1, device_id=1)).registers == [1]
    assert (await client.read_coils(0x1010, count=2, device_id=1)).bits[:2] == [True, False]


async def test_registers_md_lists_the_served_function_codes(served) -> None:
    _, _, client = served
    line = re.search(r"\*\*Function codes\*\*: (.*?)any other", REGISTERS_MD.read_text(),
                     re.S)[1]
    listed = {int(h, 16) for h in re.findall(r"(?<!/)0x([0-9A-F]{2})\b", line)}
    listed |= {int(d) for d in re.findall(r"\b(0[1-6])\b", line)}
    assert listed == set(FC_NAMES)
    rr = await client.read_device_information(device_id=1)  # 0x2B/0x0E, served
    assert not rr.isError() and rr.information[0] == b"ICP DAS"
