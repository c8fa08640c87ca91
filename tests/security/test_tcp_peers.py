"""Plain Modbus/TCP under the write policy, against real peers: mbpoll and libmodbus itself
(through ctypes) get exception 01 for what the policy refuses, and the audit log names them;
the allow-list, the per-client limits and the second word-order port, over real sockets."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import struct

import pytest

from peers import LIMIT, run_peer
from pm4324.config.security_settings import ListenerAccess
from pm4324.protocols.modbus.access import SourceControl
from pm4324.protocols.modbus.tcp import TcpServer

MODBUS_ENOBASE = 112345678  # libmodbus: errno of exception n is MODBUS_ENOBASE + n


@pytest.fixture
async def tcp(guarded):
    async with TcpServer(guarded.backend, port=0, access=SourceControl(ListenerAccess())) as srv:
        yield srv


async def run(*args: str) -> tuple[int, str]:
    rc, out, _ = await run_peer(*args, merge=True)
    return rc, out


async def test_mbpoll_refusals_are_exception_01_and_audited(tcp, guarded, mbpoll):
    base = [mbpoll, "-m", "tcp", "-p", str(tcp.port), "-a", "1", "-0", "-1", "-o", "2"]
    rc, out = await run(*base, "-t", "0", "-r", str(0x1000), "127.0.0.1", "1")
    assert rc == 0, out  # a relay from this host: the default policy allows it
    rc, out = await run(*base, "-t", "4", "-r", str(0x1000), "127.0.0.1", "250")
    assert rc != 0 and "Illegal function" in out  # a CT ratio: settings, refused
    rc, out = await run(*base, "-t", "4", "-r", str(0x1013), "127.0.0.1", "9")
    assert rc != 0 and "Illegal function" in out  # energy reset: refused
    assert guarded.meter.relays == (True, False)
    assert not guarded.meter.applied and not guarded.meter.resets
    guarded.audit.flush()
    got = [(e.outcome, e.interface, e.target, e.new) for e in guarded.audit.entries()]
    assert got == [("accepted", "modbus-tcp", "coil 0x1000 relay1", "1"),
                   ("refused", "modbus-tcp", "holding 0x1000 ct_ratio_meter1", "250"),
                   ("refused", "modbus-tcp", "holding 0x1013 energy_reset", "9")]
    assert all(e.address.startswith("127.0.0.1:") for e in guarded.audit.entries())


def _libmodbus():
    name = ctypes.util.find_library("modbus")
    if name is None:
        pytest.skip("libmodbus is not installed (apt-get install libmodbus-dev; .ci/run does)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.modbus_new_tcp.restype = ctypes.c_void_p
    lib.modbus_new_tcp.argtypes = (ctypes.c_char_p, ctypes.c_int)
    for fn in ("modbus_set_slave", "modbus_connect", "modbus_close", "modbus_free",
               "modbus_write_register", "modbus_write_bit", "modbus_set_response_timeout",
               "modbus_read_input_registers"):
        getattr(lib, fn).argtypes = None
    lib.modbus_strerror.restype = ctypes.c_char_p
    return lib


def libmodbus_session(port: int) -> list[tuple[int, int]]:
    """(return code, errno) of: write CT ratio, write word order, write relay 2 coil."""
    lib = _libmodbus()
    ctx = ctypes.c_void_p(lib.modbus_new_tcp(b"127.0.0.1", port))
    lib.modbus_set_slave(ctx, 1)
    lib.modbus_set_response_timeout(ctx, ctypes.c_uint32(2), ctypes.c_uint32(0))
    assert lib.modbus_connect(ctx) == 0
    results = []
    try:
        for call, address, value in ((lib.modbus_write_register, 0x1000, 250),
                                     (lib.modbus_write_register, 0x1012, 1),
                                     (lib.modbus_write_bit, 0x1001, 1)):
            ctypes.set_errno(0)
            rc = call(ctx, address, value)
            results.append((rc, ctypes.get_errno() if rc < 0 else 0))
    finally:
        lib.modbus_close(ctx)
        lib.modbus_free(ctx)
    return results


async def test_libmodbus_refusals(tcp, guarded):
    _libmodbus()
    results = await asyncio.wait_for(asyncio.to_thread(libmodbus_session, tcp.port), LIMIT)
    illegal_function = MODBUS_ENOBASE + 1
    assert results == [(-1, illegal_function), (-1, illegal_function), (1, 0)]
    # the vendor's global word order register: under the write policy, and audited
    assert guarded.meter.settings.modbus.word_order == "low-first"
    guarded.audit.flush()
    refused = guarded.audit.entries(outcome="refused")
    assert [(e.target, e.old, e.new, e.reason) for e in refused] == [
        ("holding 0x1000 ct_ratio_meter1", "100", "250", "needs settings"),
        ("holding 0x1012 word_order", "0", "1", "needs settings")]


async def connect(port: int):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), LIMIT)


def mbap(tid: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection without an answer: an end of file, or a reset (it
    is accepted once its request is there, TCP_DEFER_ACCEPT, and closing a socket with
    unread data sends a reset)."""
    try:
        return await asyncio.wait_for(reader.read(), LIMIT) == b""
    except ConnectionResetError:
        return True


async def test_allow_list_refuses_other_networks(guarded):
    access = SourceControl(ListenerAccess(allow=("10.0.0.0/8",)))
    async with TcpServer(guarded.backend, port=0, access=access) as srv:
        reader, writer = await connect(srv.port)
        writer.write(mbap(1, bytes.fromhex("04 1000 0001")))
        assert await closed_unanswered(reader)
        writer.close()
    assert access.not_allowed == 1


async def test_request_rate_and_connections_per_client(guarded):
    access = SourceControl(ListenerAccess(max_requests_per_s=5, max_connections_per_client=2))
    async with TcpServer(guarded.backend, port=0, access=access) as srv:
        burst = b"".join(mbap(t, bytes.fromhex("04 1000 0001")) for t in range(20))
        a = await connect(srv.port)
        b = await connect(srv.port)
        for (_, w), first in ((a, burst[:1]), (b, b"\x00")):  # a first byte: accepted
            w.write(first)

        async def both_in() -> None:
            while srv.connections < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(both_in(), LIMIT)
        c_reader, c_writer = await connect(srv.port)
        c_writer.write(mbap(1, bytes.fromhex("04 1000 0001")))
        assert await closed_unanswered(c_reader)  # third one: closed
        reader, writer = a
        writer.write(burst[1:])
        answers = [await asyncio.wait_for(reader.readexactly(11 if t < 5 else 9), LIMIT)
                   for t in range(20)]
        assert all(x[7:] == bytes.fromhex("04 02 a8e8") for x in answers[:5])  # 43240
        assert all(x[7:] == bytes.fromhex("84 06") for x in answers[5:])  # server busy
        for w in (writer, b[1], c_writer):
            w.close()
    assert access.over_connections == 1 and access.over_rate == 15


async def answer_or_close(reader: asyncio.StreamReader, size: int) -> bytes:
    """The answer (``size`` bytes), or what came before the server closed (or reset) the
    connection."""
    data = b""
    while len(data) < size:
        try:
            chunk = await asyncio.wait_for(reader.read(size - len(data)), LIMIT)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


async def test_reconnecting_in_a_loop_is_limited(guarded):
    access = SourceControl(ListenerAccess(max_connects_per_s=1))  # a burst of one
    async with TcpServer(guarded.backend, port=0, access=access) as srv:
        answers = []
        for tid in range(3):  # one after the other, each closed before the next
            reader, writer = await connect(srv.port)
            writer.write(mbap(tid, bytes.fromhex("04 1000 0001")))
            answers.append(await answer_or_close(reader, 11))
            writer.close()
    assert [len(a) for a in answers] == [11, 0, 0] and access.over_connections == 2


async def test_second_port_serves_the_other_word_order(guarded):
    b = guarded.backend
    async with TcpServer(b, port=0) as low, TcpServer(b, port=0, word_order="high-first") as high:
        words = {}
        for name, srv in (("low", low), ("high", high)):
            reader, writer = await connect(srv.port)
            writer.write(mbap(1, bytes.fromhex("04 1010 0002")))  # main 1 V a-N, float32
            rsp = await asyncio.wait_for(reader.readexactly(13), LIMIT)
            words[name] = struct.unpack(">HH", rsp[9:])
            writer.close()
    assert words["high"] == words["low"][::-1]
    value = struct.unpack(">f", struct.pack(">HH", *words["high"]))[0]
    assert 100 < value < 400  # a plausible phase voltage, decoded high word first
    assert guarded.meter.settings.modbus.word_order == "low-first"  # nobody else affected
