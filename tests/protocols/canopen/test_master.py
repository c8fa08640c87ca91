"""The node against a real master: python-canopen's RemoteNode, with our EDS, on ``virtual``."""

from __future__ import annotations

import math
import struct

import canopen
import numpy as np
import pytest
from canopen.sdo.exceptions import SdoAbortedError, SdoCommunicationError
from canopen_helpers import NODE, WAIT, publish

from pm4324.protocols.canopen.codes import Abort, NmtState
from pm4324.protocols.canopen.od import default_dictionary, tpdo_default_can_id
from pm4324.protocols.canopen.values import kw_raw, kwh_raw
from pm4324.registers.codecs import decode as decode_words
from pm4324.snapshot import Flag

HB = 0x700 + NODE
D = default_dictionary()


def aborts(master, code, fn, *args):
    with pytest.raises(SdoAbortedError) as info:
        fn(*args)
    assert info.value.code == code, hex(info.value.code)


def roundtrip(master, log):
    """Once this returns, the node has handled (and the log holds) all that was sent before."""
    mark = log.mark()
    master.sdo.upload(0x1000, 0)
    log.count(0x580 + NODE, 1, mark)


def start(master, log):
    mark = log.mark()
    master.nmt.state = "OPERATIONAL"
    log.wait(lambda fs: any(f.cob == HB and f.data == b"\x05" for f in fs), mark)


# -- NMT, boot-up, heartbeat -----------------------------------------------------------------------


def test_boot_up_then_pre_operational(meter, settings, log, master):
    from pm4324.protocols.canopen import CanopenServer

    with CanopenServer(meter, settings):
        boot = log.count(HB, 1)[0]
        assert boot.data == b"\x00"
        assert master.nmt.wait_for_heartbeat(WAIT) == "PRE-OPERATIONAL"


def test_nmt_transitions(server, master, log):
    start(master, log)
    assert server.state == NmtState.OPERATIONAL
    mark = log.mark()
    master.nmt.state = "STOPPED"
    log.wait(lambda fs: any(f.cob == HB and f.data == b"\x04" for f in fs), mark)
    master.sdo.RESPONSE_TIMEOUT = 0.2
    with pytest.raises(SdoCommunicationError):  # stopped: no SDO
        master.sdo.upload(0x1000, 0)
    master.sdo.RESPONSE_TIMEOUT = 1.0
    mark = log.mark()
    master.nmt.state = "PRE-OPERATIONAL"
    log.wait(lambda fs: any(f.cob == HB and f.data == b"\x7f" for f in fs), mark)
    assert master.sdo.upload(0x1000, 0) == bytes(4)


@pytest.mark.parametrize("command", ["RESET COMMUNICATION", "RESET"])
def test_resets_restore_communication_defaults(server, master, log, command):
    master.sdo[0x1017].raw = 250
    master.sdo[0x1800][2].raw = 1
    start(master, log)
    mark = log.mark()
    master.nmt.state = command
    boot = log.wait(lambda fs: any(f.cob == HB and f.data == b"\x00" for f in fs), mark)
    assert boot
    assert master.sdo[0x1017].raw == 1000 and master.sdo[0x1800][2].raw == 254
    assert server.state == NmtState.PRE_OPERATIONAL


def test_nmt_for_another_node_is_ignored(server, log):
    mark = log.mark()
    log.send(0, bytes([1, NODE + 1]))
    log.send(0, bytes([1]))  # malformed: too short
    log.send(0x600 + NODE, struct.pack("<BHB", 0x40, 0x1000, 0) + bytes(4))  # a round trip
    log.count(0x580 + NODE, 1, mark)
    assert server.state == NmtState.PRE_OPERATIONAL


def test_heartbeat_period_follows_0x1017(server, master, log):
    master.sdo[0x1017].raw = 50
    mark = log.mark()
    beats = log.count(HB, 11, mark)
    gaps = np.diff([b.t for b in beats[1:]])
    assert np.median(gaps) == pytest.approx(0.050, abs=0.010)
    assert all(b.data == b"\x7f" for b in beats)
    master.sdo[0x1017].raw = 0  # off
    mark = log.mark()
    master.sdo.upload(0x1000, 0)
    log.none(HB, log.mark(), quiet=0.2)


# -- SDO: every object, segmented transfers, abort codes -------------------------------------------


def _expected(entry, meter, backend_image):
    """What an entry must hold, from the snapshot itself (not from the node)."""
    snap = meter.snapshot
    if entry.kind == "kw":
        return kw_raw(float(getattr(snap, entry.source.group).p_w[entry.source.index - 1]))
    if entry.kind == "kwh":
        wh = getattr(snap, entry.source.group).wh_import[entry.source.index - 1]
        return kwh_raw(float(wh))
    p = entry.point
    words = backend_image.read(p.table, p.address, p.size)
    return int(words[0]) if p.type == "bit" else decode_words(p.type, words, "low-first")


def _against_snapshot(entry, got, snap) -> None:
    """A measured value, in the snapshot's own units, equals the snapshot's number."""
    src = entry.source
    if entry.kind != "point" or src.kind != "measured" or src.field == "lead_lag":
        return
    array = getattr(getattr(snap, src.group), src.field)
    want = float(array[src.index - 1, src.phase - 1] if src.phase else array[src.index - 1])
    native = entry.point.native(got)
    if math.isnan(want):
        assert math.isnan(native), entry.name
    elif entry.point.type == "float32":
        assert native == pytest.approx(want, rel=1e-6, abs=1e-9), entry.name
    elif src.field == "flags":
        assert native == want, entry.name
    else:  # integer energy counters, 0.01 kWh
        assert native == pytest.approx(want, abs=5.0 + 1e-6), entry.name


def test_upload_every_object(server, master, meter):
    image = server.backend.image
    snap = meter.snapshot
    checked = 0
    for entry in D.entries():
        if not entry.readable:
            continue
        data = master.sdo.upload(entry.index, entry.sub)
        if entry.kind in ("comm", "canopen"):
            assert data == server.read(entry), (hex(entry.index), entry.sub)
            continue
        fmt = {4: "<i", 7: "<I", 6: "<H", 5: "<B", 8: "<f"}[int(entry.data_type)]
        got = struct.unpack(fmt, data)[0]
        want = _expected(entry, meter, image)
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == want, (entry.name, got, want)
        checked += 1
        _against_snapshot(entry, got, snap)
    assert checked > 1000
    # and against the snapshot's own numbers, in the table's units
    ct5_v = struct.unpack("<f", master.sdo.upload(0x2200, 5))[0]
    assert ct5_v == pytest.approx(snap.ct.v_rms[4], rel=1e-6)
    m2_kwh = struct.unpack("<I", master.sdo.upload(0x2580, 2))[0]
    assert m2_kwh * 10 == pytest.approx(snap.meter_energy.wh_import[1], abs=5)
    assert master.sdo["kW"]["meter3"].raw == round(snap.meter.p_w[2])


def test_segmented_transfers(server, master, meter):
    assert master.sdo[0x1008].raw == "PM-4324A-CPS"  # 12 bytes: segmented upload
    master.sdo.download(0x1017, 0, struct.pack("<H", 300), force_segment=True)
    assert master.sdo[0x1017].raw == 300
    master.sdo.download(0x2020, 3, struct.pack("<H", 250), force_segment=True)  # CT ratio
    assert meter.settings.meters[2].ct_ratio == 250
    assert master.sdo[0x2020][3].raw == 250


def test_abort_codes(server, master):
    aborts(master, Abort.NO_OBJECT, master.sdo.upload, 0x3000, 0)
    aborts(master, Abort.NO_SUB, master.sdo.upload, 0x2200, 25)
    aborts(master, Abort.READ_ONLY, master.sdo.download, 0x1000, 0, bytes(4))
    aborts(master, Abort.READ_ONLY, master.sdo.download, 0x2200, 1, bytes(4))
    aborts(master, Abort.WRITE_ONLY, master.sdo.upload, 0x2011, 0)
    aborts(master, Abort.LENGTH, master.sdo.download, 0x1017, 0, bytes(4))
    aborts(master, Abort.VALUE_HIGH, master.sdo.download, 0x2010, 1, b"\x02")  # relay: 0/1
    aborts(master, Abort.VALUE_LOW, master.sdo.download, 0x2020, 1, b"\x00\x00")  # CT ratio 0
    aborts(master, Abort.VALUE_RANGE, master.sdo.download, 0x1800, 2, b"\xfa")  # type 250
    aborts(master, Abort.DEVICE_STATE, master.sdo.download, 0x1A00, 0, b"\x00")  # PDO valid
    aborts(master, Abort.DEVICE_STATE, master.sdo.download, 0x1800, 3, b"\x0a\x00")


def test_settings_rejected_by_the_meter_are_value_range(server, master, meter):
    # "outside" with the slot's empty band (0, 0): the settings refuse a band without width
    aborts(master, Abort.VALUE_RANGE, master.sdo.download, 0x2054, 1, struct.pack("<H", 2))
    assert meter.applied == []


def test_energy_reset_command(server, master, meter):
    master.sdo[0x2011].raw = 3
    master.sdo[0x2011].raw = 9
    assert meter.resets == [3, None]


# -- PDOs ------------------------------------------------------------------------------------------


def _decode(master, n: int, data: bytes) -> tuple[int, int]:
    return struct.unpack("<ii", data)


def test_event_driven_tpdos_carry_the_snapshot(server, master, meter, log):
    master.tpdo.read()  # the master learns the mapping over SDO
    got: dict[int, tuple[int, int]] = {}
    for n in (1, 4, 6, 32):
        tp = master.tpdo[n]
        tp.add_callback(lambda m, n=n: got.__setitem__(n, (m[0].raw, m[1].raw)))
        assert [v.od.parent.index for v in tp.map] == [0x3200, 0x3201]
    start(master, log)
    snap = publish(meter, 8)
    mark = log.mark()
    log.wait(lambda fs: len({f.cob for f in fs if f.cob & 0x780 in (0x180, 0x280, 0x380, 0x480)})
             == 32, mark)
    log.wait(lambda fs: len(got) == 4 and got[32] == (kw_raw(snap.meter.p_w[7]),
                                                      kwh_raw(snap.meter_energy.wh_import[7])))
    assert got[1] == (kw_raw(snap.ct.p_w[0]), kwh_raw(snap.ct_energy.wh_import[0]))
    assert got[6] == (kw_raw(snap.ct.p_w[4]), kwh_raw(snap.ct_energy.wh_import[4]))  # CT5
    assert got[4] == (kw_raw(snap.meter.p_w[0]), kwh_raw(snap.meter_energy.wh_import[0]))


def test_no_pdos_outside_operational(server, master, meter, log):
    mark = log.mark()
    publish(meter, 8)
    log.none(0x180 + NODE, mark)
    start(master, log)
    log.count(0x180 + NODE, 1, mark)  # entering operational sends the values
    mark = log.mark()
    master.nmt.state = "STOPPED"
    log.wait(lambda fs: any(f.cob == HB and f.data == b"\x04" for f in fs), mark)
    publish(meter, 9)
    log.none(0x180 + NODE, mark)


def test_event_timer_repeats_without_snapshots(server, master, log):
    master.sdo[0x1800][5].raw = 100
    start(master, log)
    frames = log.count(0x180 + NODE, 5)
    gaps = np.diff([f.t for f in frames[1:]])  # after the first repeat: the event timer exactly
    assert np.median(gaps) == pytest.approx(0.100, abs=0.02)


def test_inhibit_time_holds_back_transmissions(server, master, meter, log):
    tpdo1 = 0x180 + NODE
    master.sdo[0x1800][1].raw = 0xC0000000 | tpdo1  # invalidate to change it
    master.sdo[0x1800][3].raw = 65535  # 6.5 s: longer than this test waits
    master.sdo[0x1800][1].raw = 0x40000000 | tpdo1
    start(master, log)
    log.count(tpdo1, 1)  # entering operational
    mark = log.mark()
    publish(meter, 8)
    publish(meter, 9)
    log.none(tpdo1, mark)  # the new snapshots wait for the inhibit time
    master.sdo[0x1800][1].raw = 0xC0000000 | tpdo1
    master.sdo[0x1800][3].raw = 0
    master.sdo[0x1800][1].raw = 0x40000000 | tpdo1
    mark = log.mark()
    publish(meter, 10)
    assert struct.unpack_from("<i", log.count(tpdo1, 1, mark)[0].data)[0] == \
        kw_raw(meter.snapshot.ct.p_w[0])


def test_sync_cyclic_and_acyclic(server, master, meter, log):
    master.sdo[0x1800][2].raw = 1  # every SYNC
    master.sdo[0x1801][2].raw = 2  # every 2nd SYNC
    master.sdo[0x1802][2].raw = 0  # at a SYNC after a new snapshot
    start(master, log)
    mark = log.mark()
    for _ in range(4):
        master.network.sync.transmit()
    roundtrip(master, log)
    frames = log.since(mark)
    assert sum(f.cob == 0x180 + NODE for f in frames) == 4
    assert sum(f.cob == 0x280 + NODE for f in frames) == 2
    acyclic = [f for f in frames if f.cob == 0x380 + NODE]
    assert len(acyclic) == 1  # the entering-operational event, at the first SYNC
    snap = publish(meter, 10)
    mark = log.mark()
    master.network.sync.transmit()
    frame = log.count(0x380 + NODE, 1, mark)[0]
    assert struct.unpack("<ii", frame.data) == (kw_raw(snap.ct.p_w[2]),
                                                kwh_raw(snap.ct_energy.wh_import[2]))


def test_remapping_a_tpdo(server, master, meter, log):
    tp = master.tpdo[1]
    tp.read()
    tp.clear()
    tp.add_variable(0x2200, 1)  # CT1 voltage, REAL32
    tp.add_variable(0x2002)  # snapshot_seq, UNSIGNED32
    tp.trans_type = 254
    tp.event_timer = 0
    tp.enabled = True
    tp.save()
    assert master.sdo[0x1A00][0].raw == 2 and master.sdo[0x1A00][1].raw == 0x22000120
    values = []
    tp.add_callback(lambda m: values.append((m[0].raw, m[1].raw)))
    start(master, log)
    snap = publish(meter, 11)
    log.wait(lambda fs: any(v[1] == 11 for v in values))
    v = [v for v in values if v[1] == 11][0]
    assert v[0] == pytest.approx(snap.ct.v_rms[0], rel=1e-6)


def test_mapping_rules(server, master):
    master.sdo[0x1A01][1].raw  # noqa: B018 - readable while valid
    master.sdo[0x1801][1].raw = 0xC0000000 | (0x280 + NODE)
    aborts(master, Abort.DEVICE_STATE, master.sdo.download, 0x1A01, 1, struct.pack("<I", 0))
    master.sdo[0x1A01][0].raw = 0
    for value, code in ((0x20200120, Abort.NOT_MAPPABLE),  # a setting
                        (0x22000110, Abort.NOT_MAPPABLE),  # wrong length
                        (0x30000020, Abort.NO_OBJECT), (0x22001920, Abort.NO_SUB)):
        aborts(master, code, master.sdo.download, 0x1A01, 1, struct.pack("<I", value))
    for sub, value in ((1, 0x22000120), (2, 0x22010120), (3, 0x00040020)):  # + a dummy
        master.sdo[0x1A01][sub].raw = value
    aborts(master, Abort.PDO_LENGTH, master.sdo.download, 0x1A01, 0, b"\x03")  # 96 bits
    aborts(master, Abort.PDO_LENGTH, master.sdo.download, 0x1A01, 0, b"\x09")
    aborts(master, Abort.INCOMPATIBLE, master.sdo.download, 0x1801, 1,
           struct.pack("<I", 0x280 + NODE))  # no mapping: cannot be valid
    aborts(master, Abort.VALUE_RANGE, master.sdo.download, 0x1801, 1,
           struct.pack("<I", 0x605))  # an SDO identifier
    master.sdo[0x1A01][0].raw = 2
    master.sdo[0x1801][1].raw = 0x2F0 + NODE  # a free CAN-ID (0x281 + NODE is TPDO6's)
    assert master.sdo[0x1801][1].raw == 0x400002F0 + NODE  # RTR not supported: bit 30 reads 1
    aborts(master, Abort.DEVICE_STATE, master.sdo.download, 0x1801, 1,
           struct.pack("<I", 0x290 + NODE))  # the CAN-ID of a valid PDO


def test_default_cob_ids_over_sdo(server, master):
    for n in (1, 4, 5, 17, 32):
        assert master.sdo[0x1800 + n - 1][1].raw & 0x7FF == tpdo_default_can_id(n, NODE)


# -- relays, EMCY ----------------------------------------------------------------------------------


def test_relays_by_sdo(server, master, meter):
    master.sdo[0x2010][1].raw = 1
    assert meter.relays == (True, True)
    master.sdo[0x2010][2].raw = 0
    assert meter.relays == (True, False)
    assert (master.sdo[0x2010][1].raw, master.sdo[0x2010][2].raw) == (1, 0)


def test_relays_by_rpdo(server, master, meter, log):
    rpdo = 0x200 + NODE
    log.send(rpdo, b"\x01\x01")  # pre-operational: ignored
    start(master, log)
    assert meter.relays == (False, True)
    mark = log.mark()
    log.send(rpdo, b"\x01\x00")
    roundtrip(master, log)  # the node handles frames in order
    assert meter.relays == (True, False)
    log.send(rpdo, b"\x01")  # too short: EMCY 0x8210, relays unchanged
    emcy = log.count(0x80 + NODE, 1, mark)[0]
    assert emcy.data[:3] == b"\x10\x82\x11"  # code, register: generic + communication
    assert emcy.data[3:5] == bytes([4, 1])  # RPDO 1
    log.send(rpdo, b"\x00\x01")
    reset = log.count(0x80 + NODE, 2, mark)[1]
    assert reset.data[:3] == b"\x00\x00\x00"
    roundtrip(master, log)
    assert meter.relays == (False, True)


def test_synchronous_rpdo_applies_at_the_sync(server, master, meter, log):
    master.sdo[0x1400][2].raw = 0  # RPDO1: synchronous
    start(master, log)
    log.send(0x200 + NODE, b"\x01\x01")
    roundtrip(master, log)
    assert meter.relays == (False, True)  # waits for the SYNC
    master.network.sync.transmit()
    roundtrip(master, log)
    assert meter.relays == (True, True)


def test_emcy_on_voltage_loss_and_over_range(server, master, meter, log):
    mark = log.mark()
    publish(meter, 8, main_flags={2: Flag.VOLTAGE_ABSENT}, ct_flags={3: Flag.CLIPPING})
    frames = log.count(0x80 + NODE, 2, mark)
    codes = {struct.unpack_from("<H", f.data)[0]: f.data for f in frames}
    assert codes[0x3120][3:5] == bytes([1, 2])  # main 2
    assert codes[0x2100][3:5] == bytes([2, 3])  # CT3
    assert codes[0x2100][5] == int(Flag.CLIPPING)
    assert master.sdo[0x1001].raw == 0x07  # generic, current, voltage
    mark = log.mark()
    publish(meter, 9, main_flags={1: Flag.CLIPPING})  # main 1 over range; the others clear
    frames = log.count(0x80 + NODE, 3, mark)
    assert struct.unpack_from("<H", frames[0].data)[0] == 0x3110
    assert [f.data[:2] for f in frames[1:]] == [b"\x00\x00", b"\x00\x00"]
    assert frames[-1].data[2] == 0x05  # still: generic + voltage
    mark = log.mark()
    publish(meter, 10)
    assert log.count(0x80 + NODE, 1, mark)[0].data[:3] == bytes(3)
    assert master.sdo[0x1001].raw == 0


def test_clipping_of_an_unused_ct_or_under_a_clipping_main_is_not_a_current_error(server, log,
                                                                                  meter, master):
    mark = log.mark()
    publish(meter, 8, ct_flags={4: Flag.CLIPPING | Flag.UNUSED, 5: Flag.CLIPPING},
            main_flags={1: Flag.CLIPPING})
    frames = log.count(0x80 + NODE, 1, mark)
    roundtrip(master, log)
    frames = log.since(mark, 0x80 + NODE)
    assert [struct.unpack_from("<H", f.data)[0] for f in frames] == [0x3110]


def test_emcy_on_invalid_samples(server, master, meter, log):
    mark = log.mark()
    publish(meter, 8, ct_flags={7: Flag.INVALID_SAMPLES})
    frame = log.count(0x80 + NODE, 1, mark)[0]
    assert frame.data[:3] == b"\x00\x50\x01" and frame.data[3] == 3  # device


def test_emcy_on_internal_error(server, master, meter, log, monkeypatch):
    start(master, log)
    mark = log.mark()

    def broken(*args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(server.values, "raw", broken)  # every TPDO fails to compose
    publish(meter, 8)
    emcy = log.count(0x80 + NODE, 1, mark)[0]
    assert emcy.data[:3] == b"\x00\x61\x01"
    monkeypatch.undo()
    publish(meter, 9)
    assert log.count(0x80 + NODE, 2, mark)[1].data[:3] == bytes(3)
    assert master.sdo[0x1001].raw == 0


def test_unknown_cob_ids_and_garbage_do_not_disturb(server, log):
    for cob in (0x000, 0x080, 0x100, 0x185, 0x205, 0x605, 0x77F, 0x7FF):
        for data in (b"", b"\xff", bytes(8), b"\x01\x02\x03", b"\xe0" * 8):
            log.send(cob, data)
    log.send(0x605, b"", is_remote_frame=True)
    log.send(0x605, bytes(8), is_extended_id=True)
    mark = log.mark()
    log.send(0x605, struct.pack("<BHB", 0x40, 0x1000, 0) + bytes(4))
    log.wait(lambda fs: any(f.cob == 0x585 and f.data[:4] == b"\x43\x00\x10\x00" for f in fs),
             mark)
    assert server.state == NmtState.PRE_OPERATIONAL


def test_emcy_consumer_of_python_canopen(server, master, meter):
    import threading

    seen = threading.Event()
    master.emcy.add_callback(lambda e: seen.set() if e.code == 0x3120 else None)
    publish(meter, 8, main_flags={1: Flag.VOLTAGE_ABSENT})
    assert seen.wait(WAIT)
    assert "voltage" in master.emcy.active[-1].get_desc().lower()


def test_canopen_master_is_canopen():
    assert canopen.__version__.startswith("2.4")


def test_a_bus_that_cannot_open_is_one_clear_error(meter, settings):
    from dataclasses import replace

    from pm4324.config.settings import CanopenSettings
    from pm4324.protocols.canopen import CanopenBusError, CanopenServer

    bad = replace(settings, canopen=CanopenSettings(node_id=NODE, interface="no_such_interface",
                                                    channel="x"))
    with pytest.raises(CanopenBusError, match="no_such_interface:x"):
        CanopenServer(meter, bad).open()


async def test_async_start_runs_meter_writes_in_the_loop(meter, settings, master, log):
    """Started from a running loop (as `pm4324 run` does), writes reach the meter in it."""
    import asyncio
    import threading

    from pm4324.protocols.canopen import CanopenServer

    loop_thread = threading.get_ident()
    seen = []
    original = meter.set_relay
    meter.set_relay = lambda i, c: (seen.append(threading.get_ident()), original(i, c))
    node = CanopenServer(meter, settings)
    await node.start()
    try:
        await asyncio.to_thread(lambda: master.sdo[0x2010][1].__setattr__("raw", 1))
    finally:
        await node.stop()
    assert meter.relays[0] is True and seen == [loop_thread]


def test_real32_settings_are_written_like_modbus(server, master, meter):
    writable = [e for e in D.entries() if e.writable and e.data_type.name == "REAL32"]
    if not writable:
        pytest.skip("the register table has no float32 setting")
    e = writable[0]
    with pytest.raises(SdoAbortedError):
        master.sdo.download(e.index, e.sub, struct.pack("<f", float("nan")))
    value = float(e.high if e.high is not None and e.high < 100 else 42.5)
    try:
        master.sdo.download(e.index, e.sub, struct.pack("<f", value))
    except SdoAbortedError as exc:  # the meter's settings may refuse it: then value range
        assert exc.code in (Abort.VALUE_RANGE, Abort.DEVICE_STATE)
        return
    assert struct.unpack("<f", master.sdo.upload(e.index, e.sub))[0] == value


def test_refused_now_is_device_state(server, master, monkeypatch):
    """The register backend's "not now" (exception 02: a relay in alarm mode) is 0x08000022."""
    from pm4324.registers.backend import AccessError, ExceptionCode

    def alarm_mode(address, values, *client):
        raise AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS, "relay 1 is in alarm mode")

    monkeypatch.setattr(server.backend, "write_coils", alarm_mode)
    aborts(master, Abort.DEVICE_STATE, master.sdo.download, 0x2010, 1, b"\x01")


def test_a_main_the_model_lacks(channel, log, master):
    from dataclasses import replace

    from canopen_helpers import factory, snapshot

    from pm4324.config.settings import CanopenSettings, MainSettings, Settings
    from pm4324.protocols.canopen import CanopenServer

    s = replace(Settings(model="PM-4324", mains=(MainSettings(),)),
                canopen=CanopenSettings(node_id=NODE, interface="virtual", channel=channel))
    meter = factory.FakeMeter(s, snapshot(s))
    with CanopenServer(meter, s):
        assert master.sdo[0x1008].raw == "PM-4324-CPS" and master.sdo[0x1018][2].raw == 4324
        aborts(master, Abort.DEVICE_STATE, master.sdo.download, 0x2022, 2, struct.pack("<H", 100))
        assert math.isnan(struct.unpack("<f", master.sdo.upload(0x2100, 4))[0])  # main 2: no data
