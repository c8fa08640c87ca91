"""Short, bounded versions of the attacks in bench/modbus_attack.py: while each one runs, a
well-behaved pymodbus client is answered, correctly. No timing is asserted here (the
latencies are measured by the bench, docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from pm4324.protocols.modbus.tcp import TcpServer

LIMIT = 10.0  # seconds: the bound on every test's attack and polling
GOOD_READS = 50


def mbap(tid: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu


async def good_client(port: int, until=lambda: True) -> int:
    """Read 60 input registers at least GOOD_READS times and until ``until()`` (the attack
    has had its effect); check every answer. Bounded by the caller's wait_for."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=LIMIT, retries=0)
    assert await client.connect()
    try:
        n = 0
        while (n < GOOD_READS or not until()) and n < 1_000_000:
            rr = await client.read_input_registers(n % 200, count=60, device_id=1)
            assert not rr.isError(), rr
            assert rr.registers == [1000 + a for a in range(n % 200, n % 200 + 60)]
            n += 1
        return n
    finally:
        client.close()


async def attack_while(attack, port: int, until) -> int:
    """Run ``attack`` and the good client together until ``until()``; then stop the attack."""
    stop = asyncio.Event()
    task = asyncio.create_task(attack(stop))
    try:
        return await asyncio.wait_for(good_client(port, until), LIMIT)
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT)


@pytest.fixture
async def server(backend):
    async with TcpServer(backend, port=0, max_connections=16, frame_deadline_s=0.3) as srv:
        yield srv


async def test_pipelining_client_does_not_starve_a_good_one(server) -> None:
    request = mbap(9, bytes.fromhex("04 0000 0064"))  # 100 registers
    answer = mbap(9, bytes((4, 200)) + b"".join(struct.pack(">H", 1000 + a) for a in range(100)))
    answered = 0

    async def pipeline(stop: asyncio.Event) -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        while not stop.is_set() and answered < 200_000:
            writer.write(request * 500)  # 500 requests in flight at once
            got = await asyncio.wait_for(reader.readexactly(500 * len(answer)), LIMIT)
            assert got == answer * 500
            answered += 500
        writer.close()

    assert await attack_while(pipeline, server.port, lambda: answered >= 5000) >= GOOD_READS
    assert answered >= 5000  # the pipeliner was served too, in order


async def test_slow_loris_holders_cannot_lock_out_a_new_client(server) -> None:
    holders_opened = 0

    async def hold(stop: asyncio.Event) -> None:
        """Keep the table full of connections that send one byte at a time."""
        nonlocal holders_opened
        held: list[asyncio.StreamWriter] = []
        while not stop.is_set() and holders_opened < 5000:
            while len(held) < server.max_connections:
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                held.append(writer)
                holders_opened += 1
            for writer in held:
                writer.write(b"\x00")
            await asyncio.sleep(0.05)
            held = [w for w in held if not w.transport.is_closing()]
            for w in list(held):
                if w.transport.get_extra_info("socket") is None:
                    held.remove(w)
        for writer in held:
            writer.close()

    stop = asyncio.Event()
    task = asyncio.create_task(hold(stop))
    try:
        async def table_full() -> None:
            while server.connections < server.max_connections:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(table_full(), LIMIT)
        reads = good_client(server.port, lambda: server.timed_out >= server.max_connections)
        assert await asyncio.wait_for(reads, LIMIT) >= GOOD_READS
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT)
    assert server.evicted >= 1  # the good client got in by evicting a holder
    assert server.timed_out >= server.max_connections  # holders closed by the frame deadline


async def test_frame_deadline_closes_a_one_byte_sender(server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    frame = mbap(1, bytes.fromhex("04 0000 0001"))

    async def trickle() -> None:
        for byte in frame[:-1]:  # never the last byte; each byte well within the idle timeout
            if reader.at_eof() or writer.transport.is_closing():
                break
            try:
                writer.write(bytes((byte,)))
            except ConnectionError:  # closed by the server
                break
            await asyncio.sleep(0.1)  # the attacker's pace
        assert await reader.read() == b""  # closed by the server, nothing answered

    await asyncio.wait_for(trickle(), LIMIT)
    assert server.timed_out == 1
    writer.close()


async def test_client_that_never_reads_is_dropped_while_a_good_one_is_served(backend) -> None:
    async with TcpServer(backend, port=0, write_high_water=16384, frame_deadline_s=0.5) as srv:
        request = mbap(7, bytes.fromhex("04 0000 007d"))

        async def never_read(stop: asyncio.Event) -> None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
            try:
                for _ in range(100_000):
                    if stop.is_set() or srv.slow_readers_dropped:
                        break
                    try:
                        sock.send(request * 100)
                    except BlockingIOError:
                        await asyncio.sleep(0.005)
                    except OSError:  # dropped by the server
                        break
                    await asyncio.sleep(0)
            finally:
                sock.close()

        until = lambda: srv.slow_readers_dropped > 0  # noqa: E731
        assert await attack_while(never_read, srv.port, until) >= GOOD_READS
        assert srv.slow_readers_dropped == 1


async def test_connection_flood_is_survived_and_its_log_lines_are_few(server, caplog) -> None:
    opened = 0

    async def flood(stop: asyncio.Event) -> None:
        nonlocal opened
        while not stop.is_set() and opened < 30_000:
            socks = []
            for _ in range(2 * server.max_connections):
                s = socket.socket()
                s.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", server.port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
                opened += 1
            await asyncio.sleep(0.01)
            for s in socks:
                s.close()

    with caplog.at_level(logging.INFO, logger="pm4324.protocols.modbus.tcp"):
        assert await attack_while(flood, server.port, lambda: opened >= 3000) >= GOOD_READS
    assert server.evicted == 0  # connections that never ask anything make no room for others
    assert len(caplog.records) <= 4  # one line per kind per 10 s, not one per connection


class SlowWrites:
    """Wraps a backend: a register write blocks until the test lets it finish (as a write
    blocks on the fsync of the settings file), reads go straight through."""

    def __init__(self, backend):
        self.backend = backend
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def write_registers(self, address: int, values: list[int]) -> None:
        self.entered.set()
        self.release.wait(LIMIT)
        self.backend.write_registers(address, values)


async def test_reads_are_served_while_a_write_is_saving(backend) -> None:
    slow = SlowWrites(backend)
    async with TcpServer(slow, port=0) as srv:
        writer = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=LIMIT, retries=0)
        await writer.connect()
        try:
            write = asyncio.create_task(writer.write_register(20, 4321, device_id=1))
            await asyncio.wait_for(asyncio.to_thread(slow.entered.wait, LIMIT), LIMIT)
            assert not write.done()
            # the write is stuck in its "fsync": every read of another client is answered
            assert await asyncio.wait_for(good_client(srv.port), LIMIT) >= GOOD_READS
            assert not write.done() and backend.holding[20] == 20
            slow.release.set()
            rr = await asyncio.wait_for(write, LIMIT)
            assert not rr.isError() and backend.holding[20] == 4321
        finally:
            slow.release.set()
            writer.close()


def meter_with_a_settings_file(path: Path):
    """A real meter on the built-in building, default settings saved to ``path`` (where its
    settings writes go), one second measured."""
    from pm4324.config.settings import Settings
    from pm4324.config.settings_file import save_settings
    from pm4324.device.meter import Meter
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = Settings()
    save_settings(settings, path)
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings),
                  settings_path=str(path), start_time=0.0)
    meter.step()
    return meter


async def test_settings_write_storm_on_a_real_meter(tmp_path: Path) -> None:
    """Changing CT-ratio writes, saved to the settings file each, while a client reads."""
    from pm4324.registers.image import MapBackend

    meter = meter_with_a_settings_file(tmp_path / "settings.toml")
    writes = 0
    async with TcpServer(MapBackend(meter), port=0) as srv:
        async def storm(stop: asyncio.Event) -> None:
            nonlocal writes
            client = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=LIMIT, retries=0)
            await client.connect()
            while not stop.is_set() and writes < 2000:
                rr = await client.write_register(0x1000, 100 + writes % 2, device_id=1)
                assert not rr.isError(), rr
                writes += 1
            client.close()

        async def reads(stop: asyncio.Event) -> int:
            client = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=LIMIT, retries=0)
            await client.connect()
            n = 0
            while n < GOOD_READS:
                rr = await client.read_input_registers(0x1000, count=6, device_id=1)
                assert rr.registers[0] == 43240 and rr.registers[3] == 0x0100  # model, firmware
                n += 1
            client.close()
            return n

        stop = asyncio.Event()
        task = asyncio.create_task(storm(stop))
        try:
            assert await asyncio.wait_for(reads(stop), LIMIT) == GOOD_READS
        finally:
            stop.set()
            await asyncio.wait_for(task, LIMIT)
    assert writes >= 1
    assert meter.settings.meters[0].ct_ratio == 100 + (writes - 1) % 2


async def test_writes_of_several_clients_at_once_are_all_applied_and_saved(tmp_path: Path
                                                                           ) -> None:
    """Four real clients write their own Meter's CT ratio at once (writes queue in the write
    thread, each after a turn of the loop; saves are shared): every write is answered, and
    the meter and the settings file end with each client's last value."""
    from pm4324.config.settings_parse import load_settings
    from pm4324.registers.image import MapBackend

    path = tmp_path / "settings.toml"
    meter = meter_with_a_settings_file(path)
    ratios = (60, 100, 200, 300, 400)
    async with TcpServer(MapBackend(meter), port=0) as srv:
        async def writer(m: int) -> int:
            client = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=LIMIT, retries=0)
            await client.connect()
            try:
                for k in range(12):  # CT ratio of Meter m+1: holding 0x1000 + m (map.csv)
                    rr = await client.write_register(0x1000 + m, ratios[(k + m) % 5],
                                                     device_id=1)
                    assert not rr.isError(), rr
            finally:
                client.close()
            return ratios[(11 + m) % 5]

        last = await asyncio.wait_for(asyncio.gather(*(writer(m) for m in range(4))), LIMIT)
    assert [meter.settings.meters[m].ct_ratio for m in range(4)] == last
    assert meter.wait_settings_saved()
    assert [load_settings(path).meters[m].ct_ratio for m in range(4)] == last
    assert 1 <= meter._settings_file.saves <= 48
    meter.close()


class StuckSource:
    """Wraps a source: from the third second on, reading a block waits until released (a
    slow measurement), so the test knows a step is in progress."""

    def __init__(self, source):
        self.source = source
        self.blocks = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read(self, n: int):
        self.blocks += 1
        if self.blocks >= 3:
            self.entered.set()
            self.release.wait(LIMIT)
        return self.source.read(n)


async def test_reads_are_served_while_the_meter_measures() -> None:
    from pm4324.config.settings import Settings
    from pm4324.device.meter import Meter
    from pm4324.registers.image import MapBackend
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = Settings()
    source = StuckSource(SimulatorSource(load_scenario(None), settings))
    meter = Meter(settings, source, start_time=0.0)
    threads: set[int] = set()
    meter.add_listener(lambda snap: threads.add(threading.get_ident()))
    async with TcpServer(MapBackend(meter), port=0) as srv:
        run = asyncio.create_task(meter.run(speed=0, seconds=3))
        try:
            await asyncio.wait_for(asyncio.to_thread(source.entered.wait, LIMIT), LIMIT)
            client = AsyncModbusTcpClient("127.0.0.1", port=srv.port, timeout=LIMIT, retries=0)
            await client.connect()
            published = meter.snapshot.seq  # the step after it is stuck in its measurement
            for _ in range(GOOD_READS):
                rr = await client.read_input_registers(0x1006, count=2, device_id=1)
                assert rr.registers == [published, 0]  # snapshot_seq, low word first
            client.close()
            assert not run.done()
        finally:
            source.release.set()
            await asyncio.wait_for(run, LIMIT)
    assert meter.seq == 3 and threading.get_ident() not in threads  # stepped off the loop
