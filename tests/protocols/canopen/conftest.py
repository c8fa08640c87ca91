"""Fixtures of the CANopen tests: a node on a private ``virtual`` bus, a python-canopen master
(``RemoteNode`` with our EDS) and a recorder of every frame on the bus.

Each test gets its own virtual channel, so nodes of different tests never hear each other.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from canopen_helpers import NODE, FrameLog, factory, object_dictionary, snapshot

from pm4324.config.settings import CanopenSettings, Settings
from pm4324.protocols.canopen import CanopenServer


@pytest.fixture
def channel() -> str:
    return f"pm4324-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(channel) -> Settings:
    return replace(Settings(), canopen=CanopenSettings(
        node_id=NODE, bitrate=250_000, interface="virtual", channel=channel))


@pytest.fixture
def meter(settings):
    return factory.FakeMeter(settings, snapshot(settings))


@pytest.fixture
def log(channel):
    frames = FrameLog(channel)
    yield frames
    frames.close()


@pytest.fixture
def server(meter, settings, log):
    node = CanopenServer(meter, settings)
    node.open()
    log.count(0x700 + NODE, 1)  # boot-up
    yield node
    node.close()


@pytest.fixture
def master(channel):
    import canopen

    network = canopen.Network()
    network.NOTIFIER_CYCLE = 0.1  # its receive thread stops within 0.1 s at disconnect
    network.connect(interface="virtual", channel=channel)
    node = network.add_node(NODE, object_dictionary(NODE))
    node.sdo.RESPONSE_TIMEOUT = 1.0
    yield node
    network.disconnect()


