"""What security costs: Modbus TCP reads through the guard's per-client session, with the
per-address source control, and over TLS; TLS connection setup; audited writes; audit flushes.

Command (from the repository root; about 20 s)::

    .venv/bin/python bench/security_bench.py            # --requests N to change the count

Method: the server (``TcpServer`` over ``MapBackend`` with a guard, on a snapshot of the
built-in building) runs in an asyncio loop in a background thread; a blocking client in the
main thread sends FC04 reads of 72 input registers (Meter 1) one at a time (request, answer, next) on
one connection, so each figure is one client's round trip through both, in one process on
one machine. Compare rows with each other, not with bench/modbus_bench.py (C clients, other
processes). Loopback only; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "registers"))

from bench_util import recv_exact
from snapshot_factory import FakeMeter, make_snapshot  # noqa: E402

from pm4324.config.security_settings import ListenerAccess, SecuritySettings, TlsSettings  # noqa: E402
from pm4324.config.settings import Settings  # noqa: E402
from pm4324.protocols.modbus.access import SourceControl  # noqa: E402
from pm4324.protocols.modbus.tcp import TcpServer  # noqa: E402
from pm4324.protocols.modbus.tls import server_context  # noqa: E402
from pm4324.registers.image import MapBackend  # noqa: E402
from pm4324.security.audit import AuditEntry, AuditLog  # noqa: E402
from pm4324.security.certs import make_ca, make_client, make_server  # noqa: E402
from pm4324.security.guard import Guard  # noqa: E402
from pm4324.security.roles import MODBUS_TCP, Client  # noqa: E402

TIMEOUT = 5.0
READ = struct.pack(">HHHB", 1, 0, 6, 1) + bytes.fromhex("04 1100 0048")  # Meter 1: 72 registers
ANSWER = 9 + 144


class Loop:
    """An asyncio loop in a thread, to run servers while the main thread is the client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)


def reads(port: int, n: int, ctx: ssl.SSLContext | None) -> float:
    """Requests per second of one sequential client."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
    try:
        for _ in range(50):  # warm-up
            sock.sendall(READ)
            recv_exact(sock, ANSWER)
        t0 = time.perf_counter()
        for _ in range(n):
            sock.sendall(READ)
            recv_exact(sock, ANSWER)
        return n / (time.perf_counter() - t0)
    finally:
        sock.close()


def handshakes(port: int, n: int, ctx: ssl.SSLContext) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(READ)
            recv_exact(sock, ANSWER)
    return n / (time.perf_counter() - t0)


def pki(directory: Path) -> tuple[TlsSettings, ssl.SSLContext]:
    ca = make_ca()
    ca.write(directory, "ca")
    make_server(ca, ["127.0.0.1"]).write(directory, "server")
    make_client(ca, "bench", "read").write(directory, "client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(directory / "ca.pem")
    ctx.load_cert_chain(directory / "client.pem", directory / "client.key")
    tls = TlsSettings(enabled=True, certificate=str(directory / "server.pem"),
                      key=str(directory / "server.key"), ca=str(directory / "ca.pem"))
    return tls, ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    n = args.requests
    settings = Settings()
    meter = FakeMeter(settings, make_snapshot(settings))
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / "audit.sqlite")
        backend = MapBackend(meter, guard=Guard(SecuritySettings(), audit))
        tls, client_ctx = pki(Path(tmp))
        loop = Loop()
        servers = {
            "plain TCP": TcpServer(backend, port=0),
            "plain TCP + source control": TcpServer(
                backend, port=0, access=SourceControl(ListenerAccess(max_requests_per_s=1e6))),
            "TLS + source control": TcpServer(
                backend, port=0, ssl_context=server_context(tls),
                access=SourceControl(ListenerAccess(allow=("127.0.0.0/8",),
                                                    max_requests_per_s=1e6))),
        }
        try:
            for srv in servers.values():
                loop.run(srv.start())
            print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.2f}; {n} sequential FC04 reads of 72 registers, "
                  "median of 3 runs")
            for name, srv in servers.items():
                ctx = client_ctx if srv.ssl_context else None
                rates = [reads(srv.port, n, ctx) for _ in range(3)]
                print(f"  {name:<28} {statistics.median(rates):8.0f} req/s "
                      f"(runs {min(rates):.0f}..{max(rates):.0f})")
            rate = handshakes(servers["TLS + source control"].port, 200, client_ctx)
            print(f"  TLS connect + handshake + 1 read + close: {rate:.0f} /s")
        finally:
            for srv in servers.values():
                loop.run(srv.stop())
            loop.close()
        session = backend.for_client(Client(MODBUS_TCP, "127.0.0.1:1"))
        t0 = time.perf_counter()
        for i in range(n):
            session.write_coils(0x1000, [bool(i & 1)])  # accepted, audited
        accepted = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            try:
                session.write_registers(0x1000, [100 + i % 1000])  # refused, audited
            except Exception:
                pass
        refused = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        audit.flush()
        flush_ms = (time.perf_counter() - t0) * 1e3
        print(f"  writes through the guard, audited in memory: {accepted:.0f} accepted/s (each "
              "rebuilds the register image, as before), "
              f"{refused:.0f} refused/s")
        print(f"  audit flush of {n} accepted + {min(n, 1000)} coalesced refusals: {flush_ms:.1f} ms")
        entries = [AuditEntry(time.time(), "accepted", "modbus-tcp", "127.0.0.1:1", "", None,
                              "coil 0x1000 relay1", "0", "1") for _ in range(n)]
        t0 = time.perf_counter()
        for e in entries:
            audit.record(e)
        audit.flush()
        print(f"  record + flush of {n} entries: {(time.perf_counter() - t0) * 1e3:.1f} ms")
        audit.close()


if __name__ == "__main__":
    main()
