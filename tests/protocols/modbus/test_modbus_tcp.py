"""TCP server: MBAP rules, unit ids, pymodbus's client, limits, timeouts and backpressure."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient

from pm4324.protocols.modbus.tcp import TcpServer, parse_listen

LIMIT = 5.0  # seconds: the bound on any single wait in these tests


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def mbap(tid: int, unit: int, pdu: bytes, pid: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1 if length is None else length, unit) + pdu


async def eventually(cond, timeout: float = LIMIT) -> None:
    """Poll a condition on the server's state, bounded in time."""
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def server(backend):
    srv = TcpServer(backend, unit_id=1, port=0, idle_timeout_s=30)
    await srv.start()
    yield srv
    await srv.stop()


async def connect(srv: TcpServer):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", srv.port), LIMIT)


async def exchange(reader, writer, frame: bytes) -> bytes:
    writer.write(frame)
    head = await asyncio.wait_for(reader.readexactly(6), LIMIT)
    (length,) = struct.unpack(">H", head[4:])
    return head + await asyncio.wait_for(reader.readexactly(length), LIMIT)


# -- MBAP and unit id ------------------------------------------------------------------------


def test_port_zero_is_resolved_after_start(server) -> None:
    assert server.port != 0


@pytest.mark.parametrize(("unit", "response_pdu"), [
    (1, "04 04 03e8 03e9"),
    (0, "04 04 03e8 03e9"),  # "the device itself" on TCP, not a broadcast
    (255, "04 04 03e8 03e9"),  # libmodbus's default TCP unit id
    (2, "84 0b"),  # any other unit: gateway target failed to respond
    (247, "84 0b"),
])
async def test_unit_ids(server, unit: int, response_pdu: str) -> None:
    reader, writer = await connect(server)
    rsp = await exchange(reader, writer, mbap(0x1234, unit, h("04 0000 0002")))
    assert rsp == mbap(0x1234, unit, h(response_pdu))
    writer.close()


async def test_bad_protocol_id_and_length_mismatch_are_dropped(server) -> None:
    reader, writer = await connect(server)
    writer.write(mbap(1, 1, h("04 0000 0002"), pid=1))  # protocol id 1
    writer.write(mbap(2, 1, h("04 0000 0002 00")))  # FC04 with one byte too many
    writer.write(mbap(3, 1, h("10 0000 0001 02 0001 00")))  # byte count 2, 3 data bytes
    rsp = await exchange(reader, writer, mbap(4, 1, h("03 0000 0001")))
    assert rsp == mbap(4, 1, h("03 02 0000"))  # only the valid request got an answer
    assert server.bad_frames == 3
    writer.close()


@pytest.mark.parametrize("length", [0, 1, 255, 0xFFFF])
async def test_garbage_length_closes_the_connection(server, length: int) -> None:
    reader, writer = await connect(server)
    writer.write(mbap(1, 1, h("04 0000 0002"), length=length) + b"\x00" * 8)
    assert await asyncio.wait_for(reader.read(), LIMIT) == b""


async def test_pipelined_and_fragmented_requests(server) -> None:
    reader, writer = await connect(server)
    frames = [mbap(t, 1, h(f"03 {t:04x} 0001")) for t in range(5)]
    blob = b"".join(frames)
    writer.write(blob[:3])
    await writer.drain()
    for i in range(3, len(blob), 7):  # odd splits, across frame boundaries
        writer.write(blob[i:i + 7])
        await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(5 * 11), LIMIT)
    assert data == b"".join(mbap(t, 1, h(f"03 02 {t:04x}")) for t in range(5))
    writer.close()


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:5020") == ("127.0.0.1", 5020)
    assert parse_listen("[::1]:502") == ("::1", 502)
    assert parse_listen(":0") == ("127.0.0.1", 0)
    for bad in ("5020", "host:", "host:99999", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


# -- pymodbus's client -----------------------------------------------------------------------


async def test_pymodbus_client_round_trip(server, backend) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=LIMIT, retries=0)
    assert await asyncio.wait_for(client.connect(), LIMIT)
    try:
        rr = await client.read_input_registers(0, count=100, device_id=1)
        assert rr.registers == [1000 + a for a in range(100)]
        rr = await client.read_holding_registers(10, count=3, device_id=1)
        assert rr.registers == [10, 11, 12]
        rr = await client.read_discrete_inputs(0, count=4, device_id=1)
        assert rr.bits[:4] == [False, True, False, True]

        assert not (await client.write_register(20, 4321, device_id=1)).isError()
        assert not (await client.write_registers(30, [7, 8, 9], device_id=1)).isError()
        rr = await client.read_holding_registers(20, count=1, device_id=1)
        assert rr.registers == [4321]
        assert (await client.read_holding_registers(30, count=3, device_id=1)).registers == [7, 8, 9]

        assert not (await client.write_coil(5, True, device_id=1)).isError()
        assert not (await client.write_coils(10, [True, False, True], device_id=1)).isError()
        rr = await client.read_coils(5, count=8, device_id=1)
        assert rr.bits[:8] == [True, False, False, False, False, True, False, True]

        rr = await client.read_input_registers(299, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        rr = await client.read_holding_registers(100, count=1, device_id=255)
        assert rr.registers == [100]
        rr = await client.read_input_registers(0, count=1, device_id=9)
        assert rr.isError() and rr.exception_code == 0x0B

        rr = await client.read_device_information(read_code=1, object_id=0, device_id=1)
        assert rr.information == {0: b"ICP DAS", 1: b"PM-4324", 2: b"1.05"}
    finally:
        client.close()


# -- limits, timeouts, hostile clients -------------------------------------------------------


async def test_full_table_evicts_the_connection_idle_the_longest(backend) -> None:
    async with TcpServer(backend, port=0, max_connections=2) as srv:
        silent = await connect(srv)  # connected first, never completes a request
        silent[1].write(mbap(1, 1, h("03 0000 0001"))[:3])
        await eventually(lambda: srv.connections == 1)
        active = await connect(srv)
        assert await exchange(*active, mbap(1, 1, h("03 0000 0001"))) == mbap(1, 1, h("03 02 0000"))
        newcomer = await connect(srv)  # silent: not even accepted yet (TCP_DEFER_ACCEPT)
        another = await connect(srv)
        another[1].write(b"\x00")  # the table is full: it waits, never asks, evicts nobody
        await eventually(lambda: len(srv._waiting) == 1)
        assert srv.evicted == 0
        # ... until it asks something: then the silent one makes room
        assert await exchange(*newcomer, mbap(2, 1, h("03 0000 0001"))) == mbap(
            2, 1, h("03 02 0000"))
        assert await asyncio.wait_for(silent[0].read(), LIMIT) == b""
        assert srv.evicted == 1
        assert await exchange(*active, mbap(3, 1, h("03 0000 0001"))) == mbap(3, 1, h("03 02 0000"))
        third = await connect(srv)  # both served: the one idle the longest (newcomer) goes
        assert await exchange(*third, mbap(4, 1, h("03 0000 0001"))) == mbap(4, 1, h("03 02 0000"))
        assert await asyncio.wait_for(newcomer[0].read(), LIMIT) == b""
        assert srv.evicted == 2 and srv.connections == 2
        for _, writer in (silent, active, newcomer, another, third):
            writer.close()


async def test_connections_waiting_for_room_are_bounded(backend) -> None:
    async with TcpServer(backend, port=0, max_connections=1) as srv:
        served = await connect(srv)
        assert await exchange(*served, mbap(1, 1, h("03 0000 0001"))) == mbap(1, 1, h("03 02 0000"))
        waiting = []
        for _ in range(3):  # each sends a byte: accepted (TCP_DEFER_ACCEPT), never a request
            w = await connect(srv)
            w[1].write(b"\x00")
            waiting.append(w)
        assert await asyncio.wait_for(waiting[0][0].read(), LIMIT) == b""  # the oldest went
        await eventually(lambda: srv.probation_dropped == 2)
        assert srv.evicted == 0 and srv.connections == 1
        assert await exchange(*served, mbap(2, 1, h("03 0000 0001"))) == mbap(2, 1, h("03 02 0000"))
        for _, writer in (served, *waiting):
            writer.close()


async def test_half_open_connection_closed_after_idle_timeout(backend) -> None:
    async with TcpServer(backend, port=0, idle_timeout_s=0.2) as srv:
        reader, writer = await connect(srv)
        writer.write(mbap(1, 1, h("04 0000 0002"))[:5])  # a partial frame, then nothing
        assert await asyncio.wait_for(reader.read(), LIMIT) == b""
        assert srv.timed_out == 1
        assert srv.connections == 0


async def test_active_connection_is_not_timed_out(backend) -> None:
    async with TcpServer(backend, port=0, idle_timeout_s=0.3) as srv:
        reader, writer = await connect(srv)
        deadline = asyncio.get_running_loop().time() + 0.9  # three idle periods
        while asyncio.get_running_loop().time() < deadline:
            rsp = await exchange(reader, writer, mbap(1, 1, h("03 0000 0001")))
            assert rsp == mbap(1, 1, h("03 02 0000"))
        assert srv.timed_out == 0
        writer.close()


def _stuff(sock: socket.socket, frame: bytes) -> int:
    """Send requests until the kernel refuses more; return how many went out."""
    sent = 0
    sock.setblocking(False)
    burst = frame * 256
    try:
        while sent < 2_000_000:
            n = sock.send(burst)
            sent += n // len(frame)
    except BlockingIOError:
        pass
    return sent


async def test_client_that_never_reads_is_dropped_and_others_are_served(backend) -> None:
    async with TcpServer(backend, port=0, write_high_water=16384, frame_deadline_s=0.5) as srv:
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", srv.port))
        loop = asyncio.get_running_loop()
        reader, writer = await connect(srv)
        big = mbap(7, 1, h("04 0000 007d"))  # 12-byte request, 259-byte answer

        async def stuff() -> None:  # until the server drops the hog (bounded by LIMIT)
            for _ in range(1000):
                try:
                    await loop.run_in_executor(None, _stuff, hog, big)
                except OSError:  # reset by the server
                    return
                if srv.slow_readers_dropped:
                    return
                await asyncio.sleep(0.01)

        async def keep_polling() -> int:
            t = 0
            while not srv.slow_readers_dropped:
                rsp = await exchange(reader, writer, mbap(t & 0xFFFF, 1, h("04 0000 0002")))
                assert rsp == mbap(t & 0xFFFF, 1, h("04 04 03e8 03e9"))
                t += 1
            return t

        _, polls = await asyncio.wait_for(asyncio.gather(stuff(), keep_polling()), LIMIT)
        assert polls > 0 and srv.slow_readers_dropped == 1
        await eventually(lambda: srv.connections == 1)  # the hog is gone, the poller is not
        rsp = await exchange(reader, writer, mbap(1, 1, h("04 0000 0002")))
        assert rsp == mbap(1, 1, h("04 04 03e8 03e9"))
        writer.close()
        hog.close()


async def test_client_that_reads_late_gets_every_answer(backend) -> None:
    async with TcpServer(backend, port=0, write_high_water=16384) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        n, answer = 2000, 9 + 250  # 2,000 reads of 125 registers: 518 KB of answers
        sock.sendall(b"".join(mbap(t, 1, h("04 0000 007d")) for t in range(n)))
        await eventually(lambda: srv.stalls >= 1)  # our buffer is full: it stopped serving

        def read_all() -> bytes:
            sock.settimeout(LIMIT)
            buf = bytearray()
            while len(buf) < n * answer:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
            return bytes(buf)

        got = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, read_all),
                                     3 * LIMIT)
        body = h("04 fa") + b"".join(struct.pack(">H", 1000 + a) for a in range(125))
        assert got == b"".join(mbap(t, 1, body) for t in range(n))
        assert srv.slow_readers_dropped == 0
        sock.close()


async def test_hundred_concurrent_connections(backend) -> None:
    async with TcpServer(backend, port=0, max_connections=128) as srv:

        async def one(i: int) -> bytes:
            reader, writer = await connect(srv)
            try:
                return await exchange(reader, writer, mbap(i, 1, h(f"04 {i:04x} 0002")))
            finally:
                writer.close()

        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(100))), 20)
        for i, rsp in enumerate(results):
            assert rsp == mbap(i, 1, h("04 04") + struct.pack(">HH", 1000 + i, 1001 + i))


def test_runs_on_uvloop_too(backend) -> None:
    """TcpServer uses only the public loop API; uvloop is optional (not a dependency)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with TcpServer(backend, port=0, idle_timeout_s=0.3) as srv:
            reader, writer = await connect(srv)
            rsp = await exchange(reader, writer, mbap(5, 1, h("04 0000 0002")))
            assert rsp == mbap(5, 1, h("04 04 03e8 03e9"))
            assert await asyncio.wait_for(reader.read(), LIMIT) == b""  # idle timeout
            assert srv.timed_out == 1

    uvloop.run(asyncio.wait_for(main(), 20))
