"""SDO server at wire level: frames in, frames out, byte for byte (CiA 301 §7.2.4.3)."""

from __future__ import annotations

import struct

import can
import pytest
from canopen_helpers import NODE, factory
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from pm4324.protocols.canopen import CanopenServer
from pm4324.protocols.canopen.codes import Abort
from pm4324.protocols.canopen.sdo import SdoServer, abort_frame


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def node(meter, settings, channel):
    bus = can.Bus(interface="virtual", channel=channel + "-unused")
    n = CanopenServer(meter, settings, bus=bus)  # not opened: no threads, handle() directly
    yield n
    bus.shutdown()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sdo(node, clock):
    return SdoServer(node, timeout_s=1.0, clock=clock)


def upload(index, sub):
    return struct.pack("<BHB", 0x40, index, sub) + bytes(4)


def expedited(index, sub, data: bytes, indicate=True):
    command = 0x23 | (4 - len(data)) << 2 if indicate else 0x22
    return struct.pack("<BHB", command, index, sub) + data.ljust(4, b"\0")


def aborted(index, sub, code):
    return abort_frame(index, sub, code)


def test_expedited_upload_bytes(sdo):
    assert sdo.handle(upload(0x1017, 0)) == bytes.fromhex("4b 17 10 00 e8 03 00 00")  # 1000 ms
    assert sdo.handle(upload(0x1018, 2)) == bytes.fromhex("43 18 10 02") + struct.pack("<I", 43240)
    assert sdo.handle(upload(0x1001, 0)) == bytes.fromhex("4f 01 10 00 00 00 00 00")


def test_segmented_upload_of_the_device_name(sdo):
    assert sdo.handle(upload(0x1008, 0)) == bytes.fromhex("41 08 10 00 0c 00 00 00")  # 12 bytes
    assert sdo.handle(bytes([0x60]) + bytes(7)) == b"\x00PM-4324"
    assert sdo.handle(bytes([0x70]) + bytes(7)) == bytes([0x10 | 2 << 1 | 1]) + b"A-CPS\0\0"
    # the transfer is over: one more segment is a protocol error
    assert sdo.handle(bytes([0x60]) + bytes(7)) == aborted(0, 0, Abort.COMMAND)


def test_toggle_bit_not_alternated(sdo):
    sdo.handle(upload(0x1008, 0))
    assert sdo.handle(bytes([0x70]) + bytes(7)) == aborted(0x1008, 0, Abort.TOGGLE)


def test_segmented_download(sdo, node):
    assert sdo.handle(bytes([0x21, 0x17, 0x10, 0]) + struct.pack("<I", 2)) == \
        bytes.fromhex("60 17 10 00 00 00 00 00")
    # one segment, 2 bytes (n = 5 unused), last (c = 1)
    assert sdo.handle(bytes([0x00 | 5 << 1 | 1, 0xF4, 0x01]) + bytes(5)) == bytes([0x20]) + bytes(7)
    assert node.heartbeat_ms == 500


def test_segmented_download_length_checks(sdo):
    # 4 bytes announced for a 2-byte UNSIGNED16: refused at initiate
    assert sdo.handle(bytes([0x21, 0x17, 0x10, 0]) + struct.pack("<I", 4)) == \
        aborted(0x1017, 0, Abort.LENGTH)
    # size not announced; 3 bytes sent to a 2-byte object
    sdo.handle(bytes([0x20, 0x17, 0x10, 0]) + bytes(4))
    assert sdo.handle(bytes([0x00 | 4 << 1 | 1, 1, 2, 3]) + bytes(4)) == \
        aborted(0x1017, 0, Abort.LENGTH_HIGH)
    # size not announced; 1 byte sent
    sdo.handle(bytes([0x20, 0x17, 0x10, 0]) + bytes(4))
    assert sdo.handle(bytes([0x00 | 6 << 1 | 1, 1]) + bytes(6)) == aborted(0x1017, 0, Abort.LENGTH_LOW)


def test_expedited_download_checks(sdo, node):
    assert sdo.handle(expedited(0x1017, 0, b"\x64\x00")) == bytes.fromhex("60 17 10 00 00 00 00 00")
    assert node.heartbeat_ms == 100
    assert sdo.handle(expedited(0x1017, 0, b"\x64\x00\x00\x00")) == aborted(0x1017, 0, Abort.LENGTH)
    assert sdo.handle(expedited(0x1000, 0, bytes(4))) == aborted(0x1000, 0, Abort.READ_ONLY)
    assert sdo.handle(expedited(0x3000, 0, bytes(4))) == aborted(0x3000, 0, Abort.NO_OBJECT)
    assert sdo.handle(expedited(0x1018, 9, bytes(4))) == aborted(0x1018, 9, Abort.NO_SUB)
    # size not indicated: the object's own size is taken
    assert sdo.handle(expedited(0x1017, 0, b"\x20\x03\xff\xff", indicate=False))[0] == 0x60
    assert node.heartbeat_ms == 800


def test_read_only_is_refused_before_any_segment(sdo):
    assert sdo.handle(bytes([0x21, 0x08, 0x10, 0]) + struct.pack("<I", 20)) == \
        aborted(0x1008, 0, Abort.READ_ONLY)


def test_write_only_object(sdo):
    assert sdo.handle(upload(0x2011, 0)) == aborted(0x2011, 0, Abort.WRITE_ONLY)


def test_block_transfers_and_unknown_commands_are_refused(sdo):
    assert sdo.handle(bytes([0xA4, 0x08, 0x10, 0, 0x7F, 0, 0, 0])) == aborted(0x1008, 0, Abort.COMMAND)
    assert sdo.handle(bytes([0xC6, 0x17, 0x10, 0, 2, 0, 0, 0])) == aborted(0x1017, 0, Abort.COMMAND)
    assert sdo.handle(bytes([0xE0, 0x17, 0x10, 0, 0, 0, 0, 0])) == aborted(0x1017, 0, Abort.COMMAND)
    assert sdo.handle(bytes([0x00]) + bytes(7)) == aborted(0, 0, Abort.COMMAND)


def test_short_frames_and_client_aborts_get_no_answer(sdo):
    assert sdo.handle(b"\x40\x17\x10") is None
    assert sdo.handle(b"") is None
    sdo.handle(upload(0x1008, 0))
    assert sdo.handle(aborted(0x1008, 0, Abort.GENERAL)) is None
    assert sdo.handle(bytes([0x60]) + bytes(7)) == aborted(0, 0, Abort.COMMAND)


def test_idle_transfer_times_out(sdo, clock):
    sdo.handle(upload(0x1008, 0))
    assert sdo.poll(clock.t + 0.5) is None
    clock.t += 1.5
    assert sdo.poll(clock.t) == aborted(0x1008, 0, Abort.TIMEOUT)
    assert sdo.deadline is None
    sdo.handle(upload(0x1008, 0))
    clock.t += 2.0  # a late segment gets the timeout abort too
    assert sdo.handle(bytes([0x60]) + bytes(7)) == aborted(0x1008, 0, Abort.TIMEOUT)


def test_a_new_request_ends_a_transfer_in_progress(sdo):
    sdo.handle(upload(0x1008, 0))
    assert sdo.handle(upload(0x1017, 0))[0] == 0x4B
    assert sdo.handle(bytes([0x60]) + bytes(7)) == aborted(0, 0, Abort.COMMAND)


def test_values_are_the_snapshot(sdo, meter):
    snap = meter.snapshot
    got = sdo.handle(upload(0x3200, 7))  # sub 7 = CT6
    assert struct.unpack("<i", got[4:])[0] == round(snap.ct.p_w[5])
    got = sdo.handle(upload(0x2200, 3))  # CT3 voltage, REAL32
    assert struct.unpack("<f", got[4:])[0] == pytest.approx(snap.ct.v_rms[2], rel=1e-7)


def frame(cob, data, **kw):
    return can.Message(arbitration_id=cob, data=data, is_extended_id=False, **kw)


@hyp_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cob=st.integers(0, 0x7FF), data=st.binary(max_size=8), remote=st.booleans())
def test_garbage_never_crashes_the_node(node, cob, data, remote):
    node.handle(frame(cob, data if not remote else b"", is_remote_frame=remote, dlc=len(data)))
    node.handle(can.Message(arbitration_id=cob | 0x1000, data=data, is_extended_id=True))
    assert node.sdo.handle(upload(0x1000, 0))[0] == 0x43


def test_a_failing_value_source_is_a_general_abort(node, monkeypatch):
    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(node.values, "image", broken)
    assert node.sdo.handle(upload(0x2200, 1)) == aborted(0x2200, 1, Abort.GENERAL)
    assert node.emcy.register & 0x01  # reported as an internal software error (EMCY 0x6100)
    assert node.sdo.handle(upload(0x1000, 0))[0] == 0x43  # and the node goes on


def test_the_factory_snapshot_has_distinct_values():
    snap = factory.make_snapshot()
    assert len(set(snap.ct.p_w)) == 24 and NODE == 5
