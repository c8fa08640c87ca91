"""A short, bounded fuzz of the Modbus/TCP Security listener: malformed TLS records before and
after the handshake, renegotiation attempts (openssl s_client), plain Modbus sent to the TLS
port, and a peer that never finishes its handshake. The listener must not crash, and a
well-behaved TLS client polling all along must get every answer."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import ssl
import struct

import pytest

from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.protocols.modbus.tls import server_context

LIMIT = 5.0  # bound on any single wait
ROUNDS = 40  # malformed connections per kind


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request):
    """Both loops `pm4324 run` may use (uvloop where installed): their TLS code differs."""
    if request.param == "uvloop":
        return pytest.importorskip("uvloop").EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


def mbap(tid: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu


READ = bytes.fromhex("04 1000 0001")


async def poll(port: int, ctx: ssl.SSLContext, stop: asyncio.Event) -> int:
    """The well-behaved client: one connection, a request at a time; answers received."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), LIMIT)
    answered, tid = 0, 0
    try:
        while not stop.is_set() and answered < 100_000:
            tid = (tid + 1) & 0xFFFF
            writer.write(mbap(tid, READ))
            rsp = await asyncio.wait_for(reader.readexactly(11), LIMIT)
            assert rsp == struct.pack(">HHHB", tid, 0, 5, 1) + bytes.fromhex("04 02 a8e8")
            answered += 1
            await asyncio.sleep(0)  # let the fuzzers run between polls
    finally:
        writer.close()
    return answered


async def raw_send(port: int, data: bytes) -> bytes:
    """Open a plain socket to the TLS port, send ``data``, read what comes back until close."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), LIMIT)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(65536), LIMIT)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


def record(content_type: int, body: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes((content_type,)) + version + struct.pack(">H", len(body)) + body


def garbage_after_handshake(port: int, ctx: ssl.SSLContext, rng: random.Random) -> None:
    """A real handshake through a memory BIO, then a forged record the server cannot decrypt."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=LIMIT) as sock:
        for _ in range(20):  # handshake round trips, bounded
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    return
                incoming.write(data)
        sock.sendall(outgoing.read())
        sock.sendall(record(0x17, rng.randbytes(rng.randrange(1, 300))))
        while sock.recv(65536):  # until the server closes (bounded by the socket timeout)
            pass


async def renegotiate(openssl: str, port: int, pki) -> str:
    """openssl s_client over TLS 1.2 asks for a renegotiation; its stderr."""
    d = pki.directory
    proc = await asyncio.create_subprocess_exec(
        openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2",
        "-cert", str(d / "client-read.pem"), "-key", str(d / "client-read.key"),
        "-CAfile", str(d / "ca.pem"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        # "R" at the start of a line asks s_client to renegotiate (interactive command)
        _, err = await asyncio.wait_for(proc.communicate(b"R\n" + mbap(1, READ)), LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return err.decode(errors="replace")


async def test_tls_listener_survives_fuzz_and_keeps_serving(pki, guarded):
    rng = random.Random(4324)
    good = pki.client_context("client-read")
    async with TcpServer(guarded.backend, port=0, ssl_context=server_context(pki.tls)) as srv:
        port = srv.port
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(port, good, stop))
        silent = await asyncio.open_connection("127.0.0.1", port)  # never says hello
        hello = bytes.fromhex("16 0301 0030 01 00002c 0303") + rng.randbytes(40)
        for _ in range(ROUNDS):
            await raw_send(port, rng.randbytes(rng.randrange(1, 600)))
            await raw_send(port, record(0x16, rng.randbytes(rng.randrange(0, 200))))
            await raw_send(port, hello[: rng.randrange(1, len(hello))])
            await raw_send(port, mbap(rng.randrange(65536), READ))  # plain Modbus to TLS
            await raw_send(port, record(0x15, b"\x02\x28"))  # a fatal alert out of nowhere
            await asyncio.to_thread(garbage_after_handshake, port, good, rng)
        openssl = shutil.which("openssl")
        if openssl is not None:
            for _ in range(3):
                err = await renegotiate(openssl, port, pki)
                assert "RENEGOTIATING" in err and "no renegotiation" in err, err
        assert not poller.done()  # the well-behaved client is still being served
        stop.set()
        answered = await asyncio.wait_for(poller, LIMIT)
        assert answered > 0
        silent[1].close()
        # and a new client is served after it all
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=good, server_hostname="127.0.0.1"), LIMIT)
        writer.write(mbap(7, READ))
        assert (await asyncio.wait_for(reader.readexactly(11), LIMIT))[7:] == bytes.fromhex(
            "04 02 a8e8")
        writer.close()
    if openssl is None:
        pytest.skip("openssl is not installed: renegotiation was not attempted")
