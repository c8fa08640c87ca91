"""Protocol faults on the CANopen node (protocols/faults.py, bus.py), seen by python-canopen's
master: heartbeat loss (its heartbeat consumer times out while SDO still works), a bus-off
period that ends by itself, and a node that is offline until cleared."""

from __future__ import annotations

import threading
import time

import pytest
from canopen.nmt import NmtError
from canopen.sdo.exceptions import SdoCommunicationError
from canopen_helpers import NODE, WAIT

from pm4324.protocols.canopen import CanopenServer
from pm4324.protocols.faults import FaultChange, ProtocolFaults

HB, SDO_TX = 0x700 + NODE, 0x580 + NODE
QUIET = 0.4  # seconds: how long "nothing comes" is watched (a bounded wait, no sleep)


@pytest.fixture
def events() -> list[FaultChange]:
    return []


@pytest.fixture
def node(meter, settings, log, events):
    faults = ProtocolFaults(f"node-{NODE}", on_change=events.append)
    node = CanopenServer(meter, settings, faults=faults)
    node.open()
    log.count(HB, 1)  # boot-up
    yield node
    node.close()


def test_heartbeat_loss(node, master, log, events):
    master.sdo[0x1017].raw = 50
    assert master.nmt.wait_for_heartbeat(WAIT) == "PRE-OPERATIONAL"
    node.faults.set("heartbeat_loss")
    start = log.mark()
    assert master.sdo.upload(0x1000, 0) == bytes(4)  # SDO still answers
    # frames on the bus after that answer (the log's thread may lag behind the master's)
    frames = log.wait(lambda fs: any(f.cob == SDO_TX for f in fs), start)
    mark = start + next(i for i, f in enumerate(frames) if f.cob == SDO_TX) + 1
    with pytest.raises(NmtError, match="heartbeat"):
        master.nmt.wait_for_heartbeat(QUIET)
    log.none(HB, mark, quiet=0.05)
    assert node.frames_unsent > 0
    node.faults.clear()
    assert master.nmt.wait_for_heartbeat(WAIT) == "PRE-OPERATIONAL"
    assert [(e.fault, e.state) for e in events] == [("heartbeat_loss", "start"),
                                                    ("heartbeat_loss", "end")]


def test_bus_off_period_ends_by_itself(node, master, log):
    master.sdo[0x1017].raw = 50
    ended = threading.Event()
    node.faults.add_listener(lambda e: e.state == "end" and ended.set())
    master.sdo.RESPONSE_TIMEOUT = 0.2
    node.faults.set("bus_off", duration_s=1.0)
    with pytest.raises(SdoCommunicationError):  # deaf and mute
        master.sdo.upload(0x1000, 0)
    assert ended.wait(WAIT)
    master.sdo.RESPONSE_TIMEOUT = 1.0
    assert master.nmt.wait_for_heartbeat(WAIT) == "PRE-OPERATIONAL"
    assert master.sdo.upload(0x1000, 0) == bytes(4)


def wait_until(cond) -> None:
    """Poll a condition on the node's state, bounded in time."""
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_offline_until_cleared(node, master, log):
    node.faults.set("offline")
    master.sdo.RESPONSE_TIMEOUT = 0.2
    with pytest.raises(SdoCommunicationError):
        master.sdo.upload(0x1000, 0)
    master.nmt.state = "OPERATIONAL"  # not heard either
    wait_until(lambda: node.frames_unheard >= 2)  # both reached the node, unheard
    node.faults.clear()
    master.sdo.RESPONSE_TIMEOUT = 1.0
    assert master.sdo.upload(0x1000, 0) == bytes(4)
    assert node.state.name == "PRE_OPERATIONAL"  # the NMT command went unheard; no boot-up
