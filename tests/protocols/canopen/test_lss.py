"""LSS (CiA 305) against python-canopen's LssMaster: switch state global and selective,
inquire identity, configure and store node-ID and bit rate, identify, and fastscan."""

from __future__ import annotations

import json

import pytest
from canopen.lss import (
    CS_INQUIRE_PRODUCT_CODE,
    CS_INQUIRE_REVISION_NUMBER,
    CS_INQUIRE_SERIAL_NUMBER,
    CS_INQUIRE_VENDOR_ID,
    LssError,
)
from canopen_helpers import NODE, WAIT

from pm4324.protocols.canopen import CanopenServer
from pm4324.protocols.canopen.storage import ParameterFile

HB, LSS_REPLY = 0x700 + NODE, 0x7E4
SERIAL = 0x8000_0001  # few one-bits: fastscan waits a reply timeout for each


@pytest.fixture
def parameters(tmp_path) -> ParameterFile:
    return ParameterFile(tmp_path / "meter.canopen.json")


@pytest.fixture
def node(meter, settings, log, parameters):
    n = CanopenServer(meter, settings, parameters=parameters, serial_number=SERIAL)
    n.open()
    log.count(HB, 1)
    yield n
    n.close()


@pytest.fixture
def lss(master):
    return master.network.lss


def address(master) -> list[int]:
    return [master.sdo[0x1018][sub].raw for sub in (1, 2, 3, 4)]


def booted(log, node_id: int, mark: int) -> None:
    log.wait(lambda fs: any(f.cob == 0x700 + node_id and f.data == b"\x00" for f in fs), mark)


def test_switch_state_global_then_inquire_the_identity(node, master, lss):
    with pytest.raises(LssError):  # waiting state: inquiries are not answered
        lss.inquire_node_id()
    lss.send_switch_state_global(lss.CONFIGURATION_STATE)
    inquired = [lss.inquire_lss_address(cs) for cs in (
        CS_INQUIRE_VENDOR_ID, CS_INQUIRE_PRODUCT_CODE, CS_INQUIRE_REVISION_NUMBER,
        CS_INQUIRE_SERIAL_NUMBER)]
    assert inquired == address(master) and inquired[3] == SERIAL
    assert lss.inquire_node_id() == NODE
    lss.send_switch_state_global(lss.WAITING_STATE)
    with pytest.raises(LssError):
        lss.inquire_node_id()


def test_switch_state_selective_needs_the_whole_address(node, master, lss):
    vendor, product, revision, serial = address(master)
    with pytest.raises(LssError):  # no node answers
        lss.send_switch_state_selective(vendor, product, revision, serial + 1)
    assert lss.send_switch_state_selective(vendor, product, revision, serial)
    assert lss.inquire_node_id() == NODE


def test_identify_remote_slave_by_address_ranges(node, master, lss, log):
    vendor, product, revision, serial = address(master)
    mark = log.mark()
    lss.send_identify_remote_slave(vendor, product, 0, revision, serial - 1, serial + 1)
    assert log.count(LSS_REPLY, 1, mark)[0].data[0] == 0x4F
    mark = log.mark()
    lss.send_identify_remote_slave(vendor, product, 0, revision, serial + 1, serial + 9)
    lss.send_identify_non_configured_remote_slave()  # it has a node-ID
    log.none(LSS_REPLY, mark)


def test_configure_and_store_the_node_id(node, master, lss, log, meter, settings, parameters):
    lss.send_switch_state_global(lss.CONFIGURATION_STATE)
    with pytest.raises(LssError, match="Error: 1"):
        lss.configure_node_id(0)
    lss.configure_node_id(9)
    lss.store_configuration()
    assert json.loads(parameters.path.read_text())["lss"] == {"node_id": 9, "bitrate": 250_000}
    lss.send_switch_state_global(lss.WAITING_STATE)
    assert master.sdo[0x2030].raw == NODE  # pending until the next reset
    mark = log.mark()
    master.nmt.send_command(0x81)
    booted(log, 9, mark)
    node9 = master.network.add_node(9, master.object_dictionary)
    assert node9.sdo[0x2030].raw == 9
    assert node9.sdo[0x1800][1].raw & 0x7FF == 0x189  # the PDOs follow the new node-ID
    node.close()
    mark = log.mark()
    with CanopenServer(meter, settings, parameters=parameters):  # a restart keeps it
        booted(log, 9, mark)
        assert node9.sdo[0x2030].raw == 9


def test_configure_activate_and_store_the_bit_rate(node, master, lss, parameters):
    lss.send_switch_state_global(lss.CONFIGURATION_STATE)
    with pytest.raises(LssError, match="Error: 1"):
        lss.configure_bit_timing(1)  # 800 kbit/s: not a rate of this meter
    lss.configure_bit_timing(2)  # 500 kbit/s
    lss.activate_bit_timing(0)
    lss.store_configuration()
    lss.send_switch_state_global(lss.WAITING_STATE)
    assert master.sdo[0x2031].raw == 500_000  # the node answers on its reopened bus
    assert json.loads(parameters.path.read_text())["lss"]["bitrate"] == 500_000


def test_store_without_a_parameter_file_is_not_supported(server, lss):
    lss.send_switch_state_global(lss.CONFIGURATION_STATE)
    with pytest.raises(LssError, match="Error: 1"):
        lss.store_configuration()


def test_fastscan_finds_a_node_without_node_id(node, master, lss, log, meter, settings,
                                               parameters):
    identity = address(master)
    lss.send_switch_state_global(lss.CONFIGURATION_STATE)
    lss.configure_node_id(0xFF)  # unconfigured, from the next reset on
    lss.store_configuration()
    lss.send_switch_state_global(lss.WAITING_STATE)
    master.nmt.send_command(0x81)
    node.close()
    mark = log.mark()
    with CanopenServer(meter, settings, parameters=parameters, serial_number=SERIAL) as fresh:
        log.none(HB, mark)  # no node-ID: no boot-up, no heartbeat
        assert fresh.node_id == 0xFF
        lss.send_identify_non_configured_remote_slave()  # python-canopen does not wait for it
        assert lss.responses.get(timeout=WAIT)[0] == 0x50  # so take it before fastscan begins
        found, scanned = lss.fast_scan()
        assert found and scanned == identity
        lss.configure_node_id(12)  # fastscan left the node in configuration state
        mark = log.mark()
        lss.send_switch_state_global(lss.WAITING_STATE)
        booted(log, 12, mark)
        assert master.network.add_node(12, master.object_dictionary).sdo[0x1018][4].raw == SERIAL
