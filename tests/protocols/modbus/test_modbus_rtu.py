"""RTU units: CRC, character times, silence framing with fake clocks, unit filtering,
pyserial arguments and the turnaround of RtuServer (a pipe stands in for the port)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from unittest import mock

import pytest
import serial

from pm4324.protocols.modbus import rtu
from pm4324.protocols.modbus.rtu import (
    RtuFramer,
    RtuServer,
    RtuTiming,
    bits_per_char,
    crc16,
    serial_kwargs,
    serve_rtu_frame,
    with_crc,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# -- CRC -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "crc_on_wire"),
    [
        ("01 04 0000 0002", "71cb"),
        ("01 04 0000 007e", "702a"),
        ("01 03 0000 000a", "c5cd"),
        ("11 03 006b 0003", "7687"),  # Modbus over Serial Line V1.02, §6.2.2 example
        ("01 84 03", "0301"),
    ],
)
def test_crc_known_answers(frame: str, crc_on_wire: str) -> None:
    assert crc16(h(frame)).to_bytes(2, "little") == h(crc_on_wire)
    assert with_crc(h(frame)) == h(frame + crc_on_wire)
    assert crc16(h(frame + crc_on_wire)) == 0


# -- character time and silences -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "bits"), [("N81", 10), ("N82", 11), ("E81", 11), ("E82", 12), ("O81", 11), ("O82", 12)]
)
def test_bits_per_char(fmt: str, bits: int) -> None:
    assert bits_per_char(fmt) == bits


@pytest.mark.parametrize(
    ("baud", "fmt", "t15", "t35"),
    [
        (9600, "N81", 1.5 * 10 / 9600, 3.5 * 10 / 9600),  # 3.646 ms
        (9600, "E81", 1.5 * 11 / 9600, 3.5 * 11 / 9600),  # 4.010 ms
        (9600, "O82", 1.5 * 12 / 9600, 3.5 * 12 / 9600),
        (19200, "N81", 1.5 * 10 / 19200, 3.5 * 10 / 19200),  # 1.823 ms
        (19200, "E82", 1.5 * 12 / 19200, 3.5 * 12 / 19200),
        (38400, "N81", 0.00075, 0.00175),  # fixed above 19200 baud
        (115200, "E82", 0.00075, 0.00175),
    ],
)
def test_timing(baud: int, fmt: str, t15: float, t35: float) -> None:
    t = RtuTiming.for_line(baud, fmt)
    assert t.char_s == pytest.approx(bits_per_char(fmt) / baud)
    assert (t.t15_s, t.t35_s) == (pytest.approx(t15), pytest.approx(t35))


@pytest.mark.parametrize("bad", ["N71", "X81", "E83", ""])
def test_bad_data_format(bad: str) -> None:
    with pytest.raises(ValueError, match="data_format"):
        RtuTiming.for_line(9600, bad)


# -- pyserial arguments ----------------------------------------------------------------------

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
STOP = {"1": serial.STOPBITS_ONE, "2": serial.STOPBITS_TWO}


@pytest.mark.parametrize("baud", [9600, 19200, 38400, 115200])
@pytest.mark.parametrize("fmt", ["N81", "N82", "E81", "E82", "O81", "O82"])
async def test_serial_opened_with_line_settings(backend, baud: int, fmt: str) -> None:
    r, w = os.pipe()
    try:
        with mock.patch.object(rtu.serial, "Serial") as serial_cls:
            serial_cls.return_value.fileno.return_value = r
            server = RtuServer(backend, "/dev/ttyFAKE", address=3, baud=baud, data_format=fmt)
            await server.start()
            await server.stop()
        serial_cls.assert_called_once_with(
            port="/dev/ttyFAKE", baudrate=baud, bytesize=8, parity=PARITY[fmt[0]],
            stopbits=STOP[fmt[2]], timeout=0,
        )
        serial_cls.return_value.close.assert_called_once()
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"address": 0}, "address"),
    ({"address": 248}, "address"),
    ({"baud": 4800}, "baud"),
    ({"data_format": "E71"}, "data_format"),
])
def test_server_rejects_bad_settings(backend, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RtuServer(backend, "/dev/null", **kwargs)


def test_serial_kwargs() -> None:
    assert serial_kwargs(19200, "E82") == {
        "baudrate": 19200, "bytesize": 8, "parity": "E", "stopbits": 2, "timeout": 0,
    }


# -- framing with fake timestamps ------------------------------------------------------------

T = RtuTiming.for_line(19200, "E81")  # char 0.573 ms, t1.5 0.859 ms, t3.5 2.005 ms
REQ = with_crc(h("01 04 0000 0002"))
WRITE = with_crc(h("01 10 0000 0002 04 000a 000b"))


def test_complete_frame_is_served_without_waiting_for_silence() -> None:
    f = RtuFramer(T)
    assert f.feed(REQ, 0.0) == [(1, h("04 0000 0002"))]
    assert f.deadline is None  # nothing pending: no timer needed


def test_frame_byte_by_byte_within_t15() -> None:
    f = RtuFramer(T, strict_t15=True)
    out = []
    for i, b in enumerate(WRITE):
        out += f.feed(bytes([b]), i * T.char_s)
    assert out == [(1, WRITE[1:-2])]


def test_gap_above_t35_starts_a_new_frame() -> None:
    f = RtuFramer(T)
    assert f.feed(REQ[:5], 0.0) == []
    assert f.deadline == pytest.approx(T.t35_s)
    # the rest comes after a silence: the old part is dropped, the new frame stands alone
    assert f.feed(REQ[5:], 0.0 + T.t35_s + 1e-4) == []
    assert f.feed(REQ, 1.0) == [(1, REQ[1:-2])]


def test_gap_between_t15_and_t35_only_breaks_a_frame_in_strict_mode() -> None:
    gap = (T.t15_s + T.t35_s) / 2
    lax = RtuFramer(T)
    lax.feed(REQ[:4], 0.0)
    assert lax.feed(REQ[4:], gap) == [(1, REQ[1:-2])]
    strict = RtuFramer(T, strict_t15=True)
    strict.feed(REQ[:4], 0.0)
    assert strict.feed(REQ[4:], gap) == []
    assert strict.feed(REQ, gap + 2 * T.t35_s) == [(1, REQ[1:-2])]


def test_bad_crc_is_silent_and_resyncs_after_silence() -> None:
    f = RtuFramer(T)
    bad = REQ[:-1] + bytes([REQ[-1] ^ 1])
    assert f.feed(bad + REQ, 0.0) == []  # the good frame in the same burst is lost too
    assert f.crc_errors == 1
    assert f.feed(REQ, 0.0005) == []  # still no silence: still discarding
    assert f.feed(REQ, 0.0005 + T.t35_s) == [(1, REQ[1:-2])]


def test_garbage_before_a_frame_then_silence() -> None:
    f = RtuFramer(T)
    assert f.feed(b"\x00\xff\x13\x37\x01\x03", 0.0) == []
    assert f.expire(T.t35_s / 2) == []
    assert f.expire(T.t35_s) == []
    assert f.garbage_bytes > 0
    assert f.feed(REQ, 0.01) == [(1, REQ[1:-2])]


def test_back_to_back_frames_in_one_read() -> None:
    f = RtuFramer(T)
    assert f.feed(REQ + WRITE + REQ, 0.0) == [(1, REQ[1:-2]), (1, WRITE[1:-2]), (1, REQ[1:-2])]


def test_impossible_length_is_garbage() -> None:
    f = RtuFramer(T)
    frame = with_crc(h("01 10 0000 007d fa") + bytes(250))  # 259 bytes > 256
    assert f.feed(frame, 0.0) == []
    assert f.deadline is not None


def test_unknown_function_code_waits_for_silence() -> None:
    f = RtuFramer(T)
    frame = with_crc(h("01 41 0102"))
    assert f.feed(frame, 0.0) == []
    assert f.deadline == pytest.approx(T.t35_s)
    assert f.expire(T.t35_s * 0.9) == []
    assert f.expire(T.t35_s) == [(1, h("41 0102"))]


def test_unknown_function_code_closed_by_next_burst() -> None:
    f = RtuFramer(T)
    frame = with_crc(h("01 41 0102"))
    f.feed(frame, 0.0)
    assert f.feed(REQ, 0.01) == [(1, h("41 0102")), (1, REQ[1:-2])]


def test_other_slaves_response_is_not_mistaken_for_a_request() -> None:
    # unit 7 answers FC03 with 4 registers whose data are a valid write addressed to us:
    # a framer that hunts for frames at later offsets would execute it.
    hidden_write = with_crc(h("01 06 0005 1234"))
    rsp = with_crc(h("07 03 08") + hidden_write)
    f = RtuFramer(T)
    assert f.feed(with_crc(h("07 03 0000 0004")), 0.0) == [(7, h("03 0000 0004"))]
    assert f.feed(rsp, 0.010) == []
    assert f.expire(0.010 + T.t35_s) == []


# -- unit filtering and RTU golden frames ----------------------------------------------------


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        ("01 04 0000 0002 71cb", "01 04 04 03e8 03e9 " + crc16(h("01 04 04 03e8 03e9"))
         .to_bytes(2, "little").hex()),
        ("01 04 0000 007e 702a", "01 84 03 0301"),
        ("01 07", "01 87 01 " + crc16(h("01 87 01")).to_bytes(2, "little").hex()),
        ("01 06 0005 1234", "01 06 0005 1234 " + crc16(h("01 06 0005 1234"))
         .to_bytes(2, "little").hex()),
    ],
)
def test_rtu_golden(backend, request_hex: str, response_hex: str) -> None:
    req = h(request_hex)
    if crc16(req) != 0:
        req = with_crc(req)
    f = RtuFramer(T)
    ((unit, pdu),) = f.feed(req, 0.0) or f.expire(1.0)
    assert serve_rtu_frame(backend, 1, unit, pdu) == h(response_hex)


def test_other_unit_gets_no_reply_and_no_access(backend) -> None:
    for pdu in (h("04 0000 0002"), h("06 0005 0001"), h("07"), h("04 0000 007e")):
        assert serve_rtu_frame(backend, 1, 5, pdu) is None
    assert backend.reads == 0 and backend.writes == []


def test_broadcast_write_executed_without_reply(backend) -> None:
    assert serve_rtu_frame(backend, 1, 0, h("06 0005 1234")) is None
    assert serve_rtu_frame(backend, 1, 0, h("0f 0000 0002 01 03")) is None
    assert backend.holding[5] == 0x1234 and backend.coils[0] and backend.coils[1]


def test_broadcast_read_ignored(backend) -> None:
    assert serve_rtu_frame(backend, 1, 0, h("03 0000 0001")) is None
    assert serve_rtu_frame(backend, 1, 0, h("2b 0e 01 00")) is None
    assert backend.reads == 0


# -- RtuServer over a pipe: dispatch and turnaround ------------------------------------------


class _PipeSerial:
    """Stands in for serial.Serial: reads from a pipe, records writes with their time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.written: list[tuple[float, bytes]] = []
        self.got = asyncio.Event()

    def fileno(self) -> int:
        return self.fd

    def reset_input_buffer(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        self.written.append((time.monotonic(), data))
        self.got.set()
        return len(data)

    def close(self) -> None:
        pass


async def _pipe_server(backend, **kw):
    r, w = os.pipe()
    os.set_blocking(r, False)
    port = _PipeSerial(r)
    with mock.patch.object(rtu.serial, "Serial", return_value=port):
        server = RtuServer(backend, "/dev/ttyPIPE", address=1, **kw)
        await server.start()
    return server, port, r, w


async def test_server_turnaround_below_2ms(backend) -> None:
    server, port, r, w = await _pipe_server(backend, baud=9600, data_format="E81")
    try:
        turnaround = []
        for _ in range(50):
            port.got.clear()
            os.write(w, REQ[:3])  # a request arriving in two reads
            os.write(w, REQ[3:])
            t_end = time.monotonic()
            await asyncio.wait_for(port.got.wait(), 2)
            t_reply, data = port.written[-1]
            assert data == with_crc(h("01 04 04 03e8 03e9"))
            turnaround.append(t_reply - t_end)
        # t3.5 at 9600 E81 is 4 ms: a reply within 2 ms proves no wait for the silence
        assert statistics.median(turnaround) < 0.002
    finally:
        await server.stop()
        os.close(r)
        os.close(w)


async def test_server_answers_unknown_function_after_silence(backend) -> None:
    server, port, r, w = await _pipe_server(backend, baud=115200)
    try:
        os.write(w, with_crc(h("01 41 0102")))
        await asyncio.wait_for(port.got.wait(), 2)
        assert port.written[-1][1] == with_crc(h("01 c1 01"))
    finally:
        await server.stop()
        os.close(r)
        os.close(w)


async def test_server_silent_for_other_units_and_broadcast(backend) -> None:
    server, port, r, w = await _pipe_server(backend)
    try:
        os.write(w, with_crc(h("05 04 0000 0002")))
        os.write(w, with_crc(h("00 06 0007 4321")))
        os.write(w, REQ)  # a frame for us afterwards proves the others were processed
        await asyncio.wait_for(port.got.wait(), 2)
        assert [d for _, d in port.written] == [with_crc(h("01 04 04 03e8 03e9"))]
        assert backend.holding[7] == 0x4321
        assert server.requests == 3 and server.replies == 1
    finally:
        await server.stop()
        os.close(r)
        os.close(w)


def test_silence_override(backend) -> None:
    server = RtuServer(backend, "/dev/null", baud=115200, silence_s=0.02)
    assert server.framer.timing.t35_s == 0.02
    assert server.framer.timing.t15_s == pytest.approx(0.00075)


async def test_local_echo_is_skipped(backend) -> None:
    server, port, r, w = await _pipe_server(backend, local_echo=True)
    try:
        write = with_crc(h("01 06 0009 0001"))  # the reply to FC06 equals the request
        os.write(w, write)
        await asyncio.wait_for(port.got.wait(), 2)
        port.got.clear()
        os.write(w, write[:3])  # the adapter's echo of our reply, in two pieces
        os.write(w, write[3:])
        os.write(w, REQ)
        await asyncio.wait_for(port.got.wait(), 2)
        assert [d for _, d in port.written] == [write, with_crc(h("01 04 04 03e8 03e9"))]
        assert server.requests == 2
    finally:
        await server.stop()
        os.close(r)
        os.close(w)
