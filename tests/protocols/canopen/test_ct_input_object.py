"""The CT input type (PM-4324P, 333 mV CTs; ours) in the CANopen view: object 0x2007, read
by python-canopen's SDO client from a node on a private virtual bus."""

from __future__ import annotations

from dataclasses import replace

import pytest
from canopen_helpers import NODE

from pm4324.config.settings import CanopenSettings, Settings


@pytest.fixture
def settings(channel) -> Settings:
    return replace(Settings(), ct_input="333mV", canopen=CanopenSettings(
        node_id=NODE, bitrate=250_000, interface="virtual", channel=channel))


def test_ct_input_type_object_reads_333mv(server, master):
    assert master.sdo.upload(0x2007, 0) == (1).to_bytes(2, "little")
    assert master.sdo[0x2007].raw == 1
