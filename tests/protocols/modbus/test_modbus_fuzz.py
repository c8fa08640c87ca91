"""Fuzzing with hypothesis: random and mutated TCP and RTU input. The servers stay up and only
ever send well-formed answers to requests that were actually sent (or nothing)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pm4324.protocols.modbus.rtu import RtuFramer, RtuTiming, crc16, serve_rtu_frame, with_crc
from pm4324.protocols.modbus.tcp import TcpServer

EXCEPTION_CODES = {1, 2, 3, 4, 0x0B}
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))

VALID_PDUS = [
    bytes.fromhex(x)
    for x in (
        "01 0000 000a", "02 0000 0010", "03 0000 0003", "04 0000 007d", "04 012b 0002",
        "05 0001 ff00", "06 0005 1234", "0f 0000 000a 02 ff03", "10 0000 0002 04 000a 000b",
        "2b 0e 01 00", "2b 0e 04 03", "07", "03 00c8 0001",
    )
]


def response_ok(req: bytes, rsp: bytes, unit: int, served_units: tuple[int, ...]) -> bool:
    """Is ``rsp`` a well-formed answer to request PDU ``req``?"""
    fc = req[0]
    if not rsp or fc == 0 or fc >= 0x80:
        return False
    if rsp[0] == fc | 0x80:
        return len(rsp) == 2 and rsp[1] in EXCEPTION_CODES
    if unit not in served_units or rsp[0] != fc:
        return False
    if fc in (1, 2, 3, 4) and len(req) < 5:
        return False  # a truncated read has no normal answer (it gets 03 or nothing)
    if fc in (1, 2):
        qty = struct.unpack_from(">H", req, 3)[0]
        n = (qty + 7) // 8
        return rsp[1] == n and len(rsp) == 2 + n
    if fc in (3, 4):
        qty = struct.unpack_from(">H", req, 3)[0]
        return rsp[1] == 2 * qty and len(rsp) == 2 + 2 * qty
    if fc in (5, 6):
        return rsp == req
    if fc in (0x0F, 0x10):
        return rsp == req[:5]
    if fc == 0x2B:
        if rsp[:3] != req[:3] or len(rsp) > 253 or len(rsp) < 7:
            return False
        pos, count = 7, 0
        while pos < len(rsp):
            pos += 2 + rsp[pos + 1] if pos + 1 < len(rsp) else len(rsp) + 1
            count += 1
        return pos == len(rsp) and count == rsp[6]
    return False


# -- TCP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tcp_port(backend_class):
    """A TcpServer on its own loop in a thread, so hypothesis can drive it synchronously."""
    loop = asyncio.new_event_loop()
    srv = TcpServer(backend_class(), unit_id=1, port=0, idle_timeout_s=5)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fuzz-tcp-server", daemon=True)
    thread.start()
    assert ready.wait(10)
    yield srv.port
    asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def tcp_model(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The frames the server should see in ``data``: (tid, pid, unit, pdu)."""
    frames, pos = [], 0
    while len(data) - pos >= 7:
        tid, pid, length, unit = struct.unpack_from(">HHHB", data, pos)
        if not 2 <= length <= 254 or pos + 6 + length > len(data):
            break
        frames.append((tid, pid, unit, data[pos + 7:pos + 6 + length]))
        pos += 6 + length
    return frames


def tcp_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send everything, half-close, read until the server closes. Returns (bytes, reset)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # the server closed on a garbage MBAP length
            return b"".join(chunks), True
    return b"".join(chunks), False


def check_tcp(port: int, data: bytes) -> None:
    got, reset = tcp_exchange(port, data)
    frames = iter(tcp_model(data))
    pos = 0
    while len(got) - pos >= 6:
        tid, pid, length = struct.unpack_from(">HHH", got, pos)
        if reset and pos + 6 + length > len(got):
            break  # cut by the reset
        assert pid == 0 and 2 <= length <= 254 and pos + 6 + length <= len(got)
        unit, rsp = got[pos + 6], got[pos + 7:pos + 6 + length]
        for f_tid, f_pid, f_unit, f_pdu in frames:  # answers come in request order
            if f_pid == 0 and (f_tid, f_unit) == (tid, unit) and response_ok(
                f_pdu, rsp, unit, (1, 0, 255)
            ):
                break
        else:
            pytest.fail(f"answer {got[pos:pos + 6 + length].hex()} matches no request")
        pos += 6 + length
    assert reset or pos == len(got)


def assert_alive(port: int) -> None:
    req = struct.pack(">HHHB", 0x7777, 0, 6, 1) + bytes.fromhex("0400000002")
    got, _ = tcp_exchange(port, req)
    assert got == struct.pack(">HHHB", 0x7777, 0, 7, 1) + bytes.fromhex("040403e803e9")


def mbap(tid: int, pid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1, unit) + pdu


frame_st = st.builds(
    mbap,
    st.integers(0, 0xFFFF),
    st.sampled_from([0, 0, 0, 0, 1, 0xFFFF]),
    st.sampled_from([1, 1, 1, 0, 255, 2, 247]),
    st.one_of(
        st.sampled_from(VALID_PDUS),
        st.builds(lambda fc, rest: bytes([fc]) + rest,
                  st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 0x2B, 7, 0, 0x80, 0x41]),
                  st.binary(max_size=40)),
        st.binary(min_size=1, max_size=253),
    ),
)


@st.composite
def mutated(draw, frames):
    data = bytearray(b"".join(draw(st.lists(frames, min_size=1, max_size=6))))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[i]
        elif op == "truncate":
            del data[i:]
    return bytes(data)


def test_tcp_fuzz_random_bytes(tcp_port: int) -> None:
    @FUZZ
    @given(st.binary(max_size=600))
    def run(data: bytes) -> None:
        check_tcp(tcp_port, data)

    run()
    assert_alive(tcp_port)


def test_tcp_fuzz_structured_frames(tcp_port: int) -> None:
    @FUZZ
    @given(st.lists(frame_st, max_size=8).map(b"".join))
    # same transaction id throughout, and a truncated read between two good ones
    @example(mbap(0, 0, 1, bytes.fromhex("010000000a")) + mbap(0, 0, 1, b"\x02")
             + mbap(0, 0, 1, bytes.fromhex("0200000010")))
    def run(data: bytes) -> None:
        check_tcp(tcp_port, data)

    run()
    assert_alive(tcp_port)


def test_tcp_fuzz_mutated_frames(tcp_port: int) -> None:
    @FUZZ
    @given(mutated(frame_st))
    def run(data: bytes) -> None:
        check_tcp(tcp_port, data)

    run()
    assert_alive(tcp_port)


# -- RTU ------------------------------------------------------------------------------------

ADDRESS = 1
rtu_frame_st = st.builds(
    lambda unit, pdu: with_crc(bytes([unit]) + pdu),
    st.sampled_from([1, 1, 1, 0, 5, 247]),
    st.one_of(st.sampled_from(VALID_PDUS), st.binary(min_size=1, max_size=40)),
)
chunk_st = st.tuples(
    st.one_of(st.binary(max_size=300), mutated(rtu_frame_st), rtu_frame_st),
    st.sampled_from([0.0, 0.0001, 0.001, 0.003, 0.05]),  # gap before the chunk, seconds
)


def run_rtu(backend, chunks: list[tuple[bytes, float]], baud: int, fmt: str) -> None:
    framer = RtuFramer(RtuTiming.for_line(baud, fmt))
    now = 0.0
    frames: list[tuple[int, bytes]] = []
    for data, gap in chunks:
        now += gap
        frames += framer.expire(now)
        frames += framer.feed(data, now)
    frames += framer.expire(now + 1.0)
    for unit, pdu in frames:
        rsp = serve_rtu_frame(backend, ADDRESS, unit, pdu)
        if rsp is None:
            continue
        assert unit == ADDRESS, "answered a frame for another unit or a broadcast"
        assert crc16(rsp) == 0 and rsp[0] == ADDRESS and len(rsp) <= 256
        assert response_ok(pdu, rsp[1:-2], unit, (ADDRESS,))


@pytest.mark.parametrize(("baud", "fmt"), [(9600, "E81"), (115200, "N82")])
def test_rtu_fuzz(backend_class, baud: int, fmt: str) -> None:
    backend = backend_class()

    @FUZZ
    @given(st.lists(chunk_st, max_size=10))
    def run(chunks: list[tuple[bytes, float]]) -> None:
        run_rtu(backend, chunks, baud, fmt)

    run()


def test_rtu_fuzz_never_answers_other_units(backend_class) -> None:
    backend = backend_class()

    @FUZZ
    @given(st.integers(0, 255).filter(lambda u: u != ADDRESS), st.sampled_from(VALID_PDUS))
    def run(unit: int, pdu: bytes) -> None:
        framer = RtuFramer(RtuTiming.for_line(19200, "N81"))
        frames = framer.feed(with_crc(bytes([unit]) + pdu), 0.0) + framer.expire(1.0)
        assert frames == [(unit, pdu)]
        assert serve_rtu_frame(backend, ADDRESS, unit, pdu) is None

    run()
