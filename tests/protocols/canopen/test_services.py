"""The services a master relies on beyond SDO and PDO, against python-canopen's RemoteNode:
store/restore (0x1010/0x1011), error history (0x1003), EMCY inhibit time (0x1015), node
guarding (0x100C/0x100D), PDO CAN-IDs that must stay unique, and the node's identity."""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import replace
from pathlib import Path

import canopen
import pytest
from canopen.sdo.exceptions import SdoAbortedError
from canopen_helpers import NODE, publish

from pm4324.config.settings import CanopenSettings, MainSettings, Settings
from pm4324.protocols.canopen import CanopenServer
from pm4324.protocols.canopen.codes import Abort
from pm4324.protocols.canopen.comm import LOAD, SAVE
from pm4324.protocols.canopen.eds import EDS_PATHS
from pm4324.protocols.canopen.od import tpdo_default_can_id
from pm4324.protocols.canopen.storage import ParameterFile, node_files, serial_number
from pm4324.snapshot import Flag

HB, EMCY = 0x700 + NODE, 0x80 + NODE
ROOT = Path(__file__).resolve().parents[3]


def aborts(code, fn, *args):
    with pytest.raises(SdoAbortedError) as info:
        fn(*args)
    assert info.value.code == code, hex(info.value.code)


def emcy_codes(frames) -> list[int]:
    return [struct.unpack_from("<H", f.data)[0] for f in frames]


def reset_node(master, log, cob: int = HB) -> None:
    mark = log.mark()
    master.nmt.send_command(0x81)  # reset node
    log.wait(lambda fs: any(f.cob == cob and f.data == b"\x00" for f in fs), mark)


@pytest.fixture
def parameters(tmp_path) -> ParameterFile:
    return ParameterFile(tmp_path / "meter.canopen.json")


@pytest.fixture
def stored(meter, settings, log, parameters):
    """A node with a parameter file (as `pm4324 run` starts it)."""
    node = CanopenServer(meter, settings, parameters=parameters, serial_number=0x1234_5678)
    node.open()
    log.count(HB, 1)
    yield node
    node.close()


def configure_tpdo1(master) -> None:
    """A master's own TPDO1: CT2 power and energy only, every 250 ms, on CAN-ID 0x1F0."""
    master.sdo[0x1800][1].raw = 0xC000_0000 | 0x185
    master.sdo[0x1A00][0].raw = 0
    master.sdo[0x1A00][1].raw = 0x3200_0220
    master.sdo[0x1A00][0].raw = 1
    master.sdo[0x1800][5].raw = 250
    master.sdo[0x1800][1].raw = 0x1F0
    master.sdo[0x1017].raw = 200


def assert_configured(master) -> None:
    assert master.sdo[0x1800][1].raw & 0x8000_07FF == 0x1F0
    assert (master.sdo[0x1A00][0].raw, master.sdo[0x1A00][1].raw) == (1, 0x3200_0220)
    assert master.sdo[0x1800][5].raw == 250 and master.sdo[0x1017].raw == 200


def assert_defaults(master) -> None:
    assert master.sdo[0x1800][1].raw & 0x7FF == tpdo_default_can_id(1, NODE)
    assert master.sdo[0x1A00][0].raw == 2 and master.sdo[0x1017].raw == 1000


# -- store and restore -----------------------------------------------------------------------------


def test_saved_pdo_configuration_survives_nmt_reset_and_restart(stored, master, log, meter,
                                                                settings, parameters):
    configure_tpdo1(master)
    assert master.sdo[0x1010][1].raw == 1  # saves on command
    master.store()  # python-canopen writes "save" to 0x1010:1
    saved = json.loads(parameters.path.read_text())
    assert saved["communication"]["heartbeat_ms"] == 200
    assert not list(parameters.path.parent.glob("*.tmp"))  # written atomically, nothing left
    reset_node(master, log)
    assert_configured(master)
    mark = log.mark()
    master.nmt.send_command(0x82)  # reset communication
    log.wait(lambda fs: any(f.cob == HB and f.data == b"\x00" for f in fs), mark)
    assert_configured(master)
    stored.close()
    with CanopenServer(meter, settings, parameters=parameters):  # a restart
        log.count(HB, 2)
        assert_configured(master)


def test_unsaved_configuration_is_lost_at_reset(stored, master, log):
    configure_tpdo1(master)
    reset_node(master, log)
    assert_defaults(master)


def test_load_restores_the_defaults_at_the_next_reset(stored, master, log, parameters):
    configure_tpdo1(master)
    master.sdo[0x1010][2].raw = SAVE  # communication parameters
    master.restore()  # "load" to 0x1011:1
    assert_configured(master)  # CiA 301: the defaults come back at the next reset
    reset_node(master, log)
    assert_defaults(master)
    assert "communication" not in json.loads(parameters.path.read_text())


def test_store_and_restore_signatures_and_application_parameters(stored, master):
    for index in (0x1010, 0x1011):
        aborts(Abort.CANNOT_STORE, master.sdo.download, index, 1, struct.pack("<I", 0x12345678))
    aborts(Abort.CANNOT_STORE, master.sdo.download, 0x1010, 1, struct.pack("<I", LOAD))
    assert master.sdo[0x1010][3].raw == 2  # the settings file saves by itself
    master.sdo[0x1010][3].raw = SAVE
    aborts(Abort.CANNOT_STORE, master.sdo.download, 0x1011, 3, struct.pack("<I", LOAD))
    aborts(Abort.READ_ONLY, master.sdo.download, 0x1010, 0, b"\x03")
    assert master.sdo[0x1010][0].raw == master.sdo[0x1011][0].raw == 3  # highest sub-index
    assert [master.sdo[0x1011][s].raw for s in (1, 2, 3)] == [1, 1, 0]


def test_without_a_parameter_file_nothing_is_saved(server, master):
    assert master.sdo[0x1010][1].raw == 0
    aborts(Abort.CANNOT_STORE, master.sdo.download, 0x1010, 1, struct.pack("<I", SAVE))


def test_a_damaged_parameter_file_leaves_the_defaults(meter, settings, log, master, parameters):
    parameters.path.write_text('{"format": 1, "communication": {"heartbeat_ms": "x"}}')
    with CanopenServer(meter, settings, parameters=parameters):
        log.count(HB, 1)
        assert_defaults(master)


def test_saved_default_can_ids_follow_a_new_node_id(meter, settings, log, parameters):
    other = replace(settings, canopen=replace(settings.canopen, node_id=NODE + 20))
    node = CanopenServer(meter, other, parameters=parameters)
    node.comm.storage.put("communication", node.comm.saved())
    node2 = CanopenServer(meter, settings, parameters=parameters)
    assert node2.pdos.tpdo[0].can_id == tpdo_default_can_id(1, NODE)


# -- error history, EMCY inhibit time ------------------------------------------------------------


def test_error_history_newest_first_and_cleared_by_zero(server, master, meter, log):
    assert master.sdo[0x1003][0].raw == 0
    mark = log.mark()
    publish(meter, 8, main_flags={2: Flag.VOLTAGE_ABSENT})
    log.count(EMCY, 1, mark)
    publish(meter, 9, ct_flags={5: Flag.CLIPPING})
    log.count(EMCY, 3, mark)  # the main's reset, the CT's error
    assert master.sdo[0x1003][0].raw == 2
    assert master.sdo[0x1003][1].raw == 0x2100 | 2 << 16 | 5 << 24  # CT5, newest
    assert master.sdo[0x1003][2].raw == 0x3120 | 1 << 16 | 2 << 24  # main 2
    aborts(Abort.VALUE_RANGE, master.sdo.download, 0x1003, 0, b"\x01")
    master.sdo[0x1003][0].raw = 0
    assert master.sdo[0x1003][0].raw == 0


def test_emcy_inhibit_time_holds_back_the_second_frame(server, master, meter, log):
    master.sdo[0x1015].raw = 65535  # 6.5 s: longer than this test waits
    mark = log.mark()
    publish(meter, 8, main_flags={2: Flag.VOLTAGE_ABSENT}, ct_flags={5: Flag.CLIPPING})
    first = log.count(EMCY, 1, mark)
    log.none(EMCY, log.mark())  # the second one waits for the inhibit time
    assert len(log.since(mark, EMCY)) == 1
    master.sdo[0x1015].raw = 0  # no inhibit time: what waited goes out
    frames = log.count(EMCY, 2, mark)
    assert sorted(emcy_codes(frames)) == [0x2100, 0x3120] and frames[0] == first[0]


# -- PDO CAN-IDs ---------------------------------------------------------------------------------


def test_a_tpdo_cannot_take_the_can_id_of_another_pdo(server, master):
    tpdo7 = tpdo_default_can_id(7, NODE)
    master.sdo[0x1802][1].raw = 0xC000_0000 | tpdo_default_can_id(3, NODE)  # TPDO3 invalid
    aborts(Abort.VALUE_RANGE, master.sdo.download, 0x1802, 1, struct.pack("<I", tpdo7))
    aborts(Abort.VALUE_RANGE, master.sdo.download, 0x1802, 1, struct.pack("<I", 0x200 + NODE))
    master.sdo[0x1806][1].raw = 0xC000_0000 | tpdo7  # TPDO7 lets go of it
    master.sdo[0x1802][1].raw = tpdo7
    assert master.sdo[0x1802][1].raw & 0x8000_07FF == tpdo7


# -- node guarding -------------------------------------------------------------------------------


def test_node_guarding_answers_with_the_state_and_a_toggle_bit(server, master, log):
    master.sdo[0x1017].raw = 0  # no heartbeat: guarding instead
    master.sdo[0x100C].raw = 100
    master.sdo[0x100D].raw = 3
    mark = log.mark()
    master.nmt.start_node_guarding(0.05)
    try:
        replies = log.wait(lambda fs: sum(1 for f in fs if f.cob == HB and f.data) >= 4, mark)
    finally:
        master.nmt.stop_node_guarding()
    replies = [f.data[0] for f in replies if f.cob == HB and f.data]
    assert [r & 0x7F for r in replies[:4]] == [0x7F] * 4  # pre-operational
    assert [r & 0x80 for r in replies[:4]] == [0, 0x80, 0, 0x80]
    assert master.nmt.state == "PRE-OPERATIONAL"


def test_life_guarding_emcy_when_the_master_stops_guarding(server, master, log):
    master.sdo[0x1017].raw = 0
    master.sdo[0x100C].raw = 100
    master.sdo[0x100D].raw = 3  # life time 300 ms, 15 guarding periods
    mark = log.mark()
    master.nmt.start_node_guarding(0.02)
    log.wait(lambda fs: sum(1 for f in fs if f.cob == HB and f.data) >= 2, mark)
    master.nmt.stop_node_guarding()
    assert emcy_codes(log.count(EMCY, 1, mark)) == [0x8130]
    assert master.sdo[0x1001].raw & 0x11 == 0x11  # generic + communication
    assert master.sdo[0x1003][1].raw & 0xFFFF == 0x8130
    master.nmt.start_node_guarding(0.02)  # guarding again: the error resets
    try:
        assert emcy_codes(log.count(EMCY, 2, mark))[1] == 0x0000
    finally:
        master.nmt.stop_node_guarding()


# -- identity ------------------------------------------------------------------------------------


def test_identity_serial_number_is_the_meters_not_the_node_id(stored, master):
    assert master.sdo[0x1018][4].raw == 0x1234_5678
    assert master.sdo[0x1018][1].raw == master.object_dictionary[0x1018][1].default


def test_node_files_take_the_serial_from_the_meter_identity(tmp_path, settings):
    meter_ids = [str(uuid.uuid4()) for _ in range(2)]
    serials = []
    for k, meter_id in enumerate(meter_ids):
        path = tmp_path / f"m{k}.toml"
        (tmp_path / f"m{k}.meter-id").write_text(meter_id + "\n")
        parameters, serial = node_files(settings, str(path))
        assert parameters.path == tmp_path / f"m{k}.canopen.json"
        assert serial == int(meter_id.replace("-", "")[:8], 16) == serial_number(meter_id)
        serials.append(serial)
    assert serials[0] != serials[1]
    assert serial_number("00000000-1111-4111-8111-111111111111") == 1  # 0 is reserved


@pytest.mark.parametrize("model", ["PM-4324", "PM-4324A"])
def test_the_node_answers_the_identity_its_models_eds_gives(model, channel, log, master):
    from canopen_helpers import factory, snapshot

    mains = (MainSettings(),) if model == "PM-4324" else (MainSettings(), MainSettings())
    s = replace(Settings(model=model, mains=mains),
                canopen=CanopenSettings(node_id=NODE, interface="virtual", channel=channel))
    od = canopen.import_od(str(ROOT / EDS_PATHS[model]), NODE)
    with CanopenServer(factory.FakeMeter(s, snapshot(s)), s):
        log.count(HB, 1)
        assert master.sdo[0x1008].raw == od[0x1008].default == f"{model}-CPS"
        for sub in (1, 2, 3):
            assert master.sdo[0x1018][sub].raw == od[0x1018][sub].default


def test_python_canopen_pdo_api_then_store(stored, master, log):
    master.tpdo.read()
    master.tpdo[1].event_timer = 250
    master.tpdo[1].save()
    master.store()
    reset_node(master, log)
    master.tpdo.read()
    assert master.tpdo[1].event_timer == 250


def test_a_saved_file_a_master_could_not_have_written_is_not_loaded(meter, settings, parameters,
                                                                   caplog):
    node = CanopenServer(meter, settings, parameters=parameters)
    saved = node.comm.saved()
    tpdo1, tpdo2 = saved["pdos"][0], saved["pdos"][1]
    tpdo2["cob_id"] = tpdo1["cob_id"]  # two valid PDOs on one CAN-ID
    parameters.put("communication", saved)
    again = CanopenServer(meter, settings, parameters=parameters)
    assert "used by another PDO" in again.comm.saved_invalid
    assert again.pdos.tpdo[1].can_id == tpdo_default_can_id(2, NODE)
    assert "not loaded" in caplog.text


def test_emcy_queue_is_spaced_and_bounded():
    from pm4324.protocols.canopen.emcy import QUEUED, EmcyProducer

    emcy = EmcyProducer()
    emcy.inhibit_100us = 10_000  # 1 s
    for k in range(QUEUED + 8):
        emcy.queue(bytes([k]) * 8)
    assert emcy.take(100.0) == [bytes([8]) * 8]  # the 8 oldest were dropped
    assert emcy.take(100.5) == [] and emcy.due() == 101.0
    assert emcy.take(101.0) == [bytes([9]) * 8]
    emcy.inhibit_100us = 0
    assert len(emcy.take(101.0)) == QUEUED - 2 and emcy.due() is None


def test_every_communication_object_of_a_storing_node_answers(stored, master):
    for obj in stored.dictionary:
        if obj.index >= 0x2000:
            break
        for e in obj.entries:
            if e.readable:
                assert len(master.sdo.upload(e.index, e.sub)) == (e.size or len(
                    stored.read(e))), (hex(e.index), e.sub)
