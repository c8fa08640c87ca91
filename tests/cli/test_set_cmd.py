"""`pm4324 set` against our Modbus TCP server over a meter that validates like the real one:
validated before sending, read back after, one line per refusal."""

from __future__ import annotations

import asyncio

import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.cli.cli import main
from pm4324.config.settings import Wiring
from pm4324.registers.image import MapBackend

LIMIT = 20.0


@pytest.fixture
async def device():
    from pm4324.protocols.modbus import TcpServer

    snap = make_snapshot()
    meter = FakeMeter(snap.settings, snap)
    srv = TcpServer(MapBackend(meter), unit_id=1, port=0)
    await srv.start()
    yield meter, f"127.0.0.1:{srv.port}"
    await srv.stop()


async def run_cli(argv: list[str]) -> int:
    return await asyncio.wait_for(asyncio.to_thread(main, argv), LIMIT)


async def test_set_writes_and_reads_back(device, capsys):
    meter, where = device
    rc = await run_cli(["set", "--tcp", where, "meters.2.ct_ratio=200", "meters.2.wiring=3P3W-3CT",
                        "mains.1.pt_ratio=2", "relays.2=closed"])
    out = capsys.readouterr()
    assert rc == 0 and out.err == "" and out.out.count("written and read back") == 4
    assert meter.settings.meters[1].ct_ratio == 200
    assert meter.settings.meters[1].wiring is Wiring.W3P3W_3CT
    assert meter.settings.mains[0].pt_ratio == 2 and meter.relays == (False, True)


@pytest.mark.parametrize(("assignment", "why"), [
    ("meters.2.ct_ratio=0", "must be from 1 to 65535"),
    ("meters.9.ct_ratio=5", "numbered 1 to 8"),
    ("meters.1.wiring=4P5W", "must be one of"),
    ("relays.1=ajar", "open or closed"),
    ("colour=blue", "not a known setting"),
    ("meters.1.ct_ratio", "expected KEY=VALUE"),
])
async def test_bad_input_sends_nothing(device, capsys, assignment, why):
    meter, where = device
    rc = await run_cli(["set", "--tcp", where, "meters.3.ct_ratio=300", assignment])
    err = capsys.readouterr().err
    assert rc == 2 and why in err and "nothing was sent" in err and len(err.splitlines()) == 1
    assert meter.applied == [] and meter.settings.meters[2].ct_ratio != 300


async def test_a_refusal_is_one_line_and_exit_1(device, capsys):
    meter, where = device
    rc = await run_cli(["set", "--tcp", where, "relays.1.mode=alarm", "relays.1=closed"])
    out = capsys.readouterr()
    assert rc == 1 and "relays.1.mode = alarm: written and read back" in out.out
    assert out.err.strip() == "relays.1 = closed: refused by the device (exception 2: illegal data address)"
    assert meter.relays[0] is False
