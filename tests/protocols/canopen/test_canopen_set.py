"""`pm4324 set --canopen` against our CANopen node on a virtual bus (python-canopen master):
validated before anything is sent, written by SDO download, read back, one line per refusal."""

from __future__ import annotations

import pytest
from canopen_helpers import NODE

from pm4324.cli.cli import main
from pm4324.config.settings import Wiring


def run_set(settings, *assignments: str) -> int:
    return main(["set", "--canopen", f"virtual:{settings.canopen.channel}", "--node", str(NODE),
                 "--timeout", "2", *assignments])


def test_set_over_canopen_writes_and_reads_back(server, settings, meter, capsys):
    rc = run_set(settings, "meters.2.ct_ratio=200", "meters.2.wiring=3P3W-3CT",
                 "mains.1.pt_ratio=2", "relays.2=closed")
    out = capsys.readouterr()
    assert rc == 0 and out.err == "" and out.out.count("written and read back") == 4
    assert "meters.2.ct_ratio = 200: written and read back (0x2020:2)" in out.out
    assert meter.settings.meters[1].ct_ratio == 200
    assert meter.settings.meters[1].wiring is Wiring.W3P3W_3CT
    assert meter.settings.mains[0].pt_ratio == 2 and meter.relays[1] is True


@pytest.mark.parametrize(("assignment", "why"), [
    ("meters.2.ct_ratio=0", "must be from 1 to 65535"),
    ("relays.1=ajar", "open or closed"),
])
def test_bad_input_sends_nothing_over_canopen(server, settings, meter, log, capsys, assignment, why):
    rc = run_set(settings, "meters.3.ct_ratio=300", assignment)
    err = capsys.readouterr().err
    assert rc == 2 and why in err and "nothing was sent" in err and len(err.splitlines()) == 1
    assert meter.applied == [] and meter.settings.meters[2].ct_ratio != 300
    assert log.since(0, 0x600 + NODE) == []  # not one SDO request went out


def test_a_refusal_over_canopen_is_one_line_and_exit_1(server, settings, meter, capsys):
    rc = run_set(settings, "relays.1.mode=alarm", "relays.1=closed")
    out = capsys.readouterr()
    assert rc == 1 and "relays.1.mode = alarm: written and read back" in out.out
    assert out.err.startswith("relays.1 = closed: refused by the device (SDO abort Code 0x")
    assert len(out.err.splitlines()) == 1 and meter.relays[0] is False


def test_no_node_is_one_line_and_exit_2(settings, capsys):
    assert run_set(settings, "meters.1.ct_ratio=5") == 2
    err = capsys.readouterr().err
    assert err.strip() == f"pm4324 set: virtual:{settings.canopen.channel}: node {NODE} does not answer"
