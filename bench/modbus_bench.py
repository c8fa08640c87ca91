"""Modbus TCP/RTU benchmark: pm4324's server against pymodbus's and libmodbus's.

Command (from the repository root; needs gcc, pkg-config and libmodbus-dev)::

    .venv/bin/python bench/modbus_bench.py            # full run, about a minute
    .venv/bin/python bench/modbus_bench.py --quick    # fewer requests, one run per cell

What it measures:

* TCP: reads of 100 input registers (FC04, address 0, unit 1) by a C libmodbus client
  (bench/modbus_client.c, forked processes, every answer checked), with 1 and 8 concurrent
  clients: requests per second and p50/p99 latency. Servers: pm4324's ``TcpServer`` (over a
  list-backed backend of 200 input registers), pymodbus 3.16.1's ``ModbusTcpServer`` with a
  ``SimDevice`` of 200 registers, and a minimal libmodbus C server (bench/modbus_cserver.c).
  One more row runs pm4324's handler over asyncio *streams* instead of a ``Protocol``, to
  show what the transport choice costs, and one runs ``TcpServer`` on uvloop if that is
  installed (it is not a dependency; ``TcpServer`` runs on whatever loop the app uses).
  Each server runs in its own process pinned to CPU 0, the clients are pinned to CPU 1
  (``taskset``, if present). Runs go round-robin over the servers, so background load hits
  all of them alike; each cell is the median of ``--runs`` runs (by throughput), with the
  min–max range, and the load average is printed with the tables. The server's CPU time per
  request (from /proc, 10 ms ticks) is the figure least disturbed by other load.
* RTU turnaround: pm4324's ``RtuServer`` on one end of a pty (os.openpty), the bench writing
  the 8-byte request to the other end; time from the write of the last request byte to the
  first reply byte. A pty has no baud pacing: this is the software turnaround only (the
  request itself would take 8 characters on the wire, e.g. 4.6 ms at 19200 8E1).

The C programs are compiled on the fly into a temporary directory. Nothing listens beyond
127.0.0.1, and every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_util import cpu_seconds, stop_process

from pm4324.protocols.modbus.rtu import crc16, with_crc
from pm4324.registers.backend import AccessError, ExceptionCode

HERE = Path(__file__).resolve().parent
NREGS = 200
COUNT = 100
SERVER_CPU, CLIENT_CPU = "0", "1"


# -- servers (run as subprocesses of this script) --------------------------------------------


class ListBackend:
    """The smallest fast RegisterBackend: input register i holds i."""

    def __init__(self, n: int):
        self.input = list(range(n))

    def read_bits(self, table, address, count):
        raise AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS)

    def read_registers(self, table, address, count):
        if address + count > len(self.input):
            raise AccessError(ExceptionCode.ILLEGAL_DATA_ADDRESS)
        return self.input[address:address + count]

    def write_coils(self, address, values):
        self.read_bits("coil", address, len(values))

    def write_registers(self, address, values):
        self.read_bits("coil", address, len(values))

    def device_identification(self):
        return {0: b"bench", 1: b"PM-4324", 2: b"0"}


async def _serve_pm4324(port: int) -> None:
    from pm4324.protocols.modbus.tcp import TcpServer

    srv = TcpServer(ListBackend(NREGS), unit_id=1, port=port, max_connections=64)
    await srv.start()
    print("ready", srv.port, flush=True)
    await asyncio.Event().wait()


async def _serve_pm4324_streams(port: int) -> None:
    """The same handler over asyncio streams (one task per connection), for comparison."""
    import struct

    from pm4324.protocols.modbus.pdu import handle_pdu

    backend = ListBackend(NREGS)
    mbap = struct.Struct(">HHHB")

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, pid, length, unit = mbap.unpack(await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                rsp = handle_pdu(backend, pdu)
                if rsp is not None:
                    writer.write(mbap.pack(tid, 0, len(rsp) + 1, unit) + rsp)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    srv = await asyncio.start_server(conn, "127.0.0.1", port)
    print("ready", srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()


async def _serve_pymodbus(port: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    port = port or free_port()
    dev = SimDevice(id=1, simdata=[SimData(0, values=list(range(NREGS)),
                                           datatype=DataType.REGISTERS)])
    srv = ModbusTcpServer(dev, address=("127.0.0.1", port))
    task = asyncio.create_task(srv.serve_forever())
    for _ in range(500):  # bounded wait until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    print("ready", port, flush=True)
    await task


async def _serve_rtu(path: str, baud: int, fmt: str) -> None:
    from pm4324.protocols.modbus.rtu import RtuServer

    async with RtuServer(ListBackend(NREGS), path, address=1, baud=baud, data_format=fmt):
        print("ready", path, flush=True)
        await asyncio.Event().wait()


# -- orchestration ---------------------------------------------------------------------------


def pinned(cpu: str, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", cpu, *argv] if taskset and os.cpu_count() and os.cpu_count() > 1 \
        else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compile_c(tmp: Path) -> tuple[Path, Path]:
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmodbus"], check=True,
                           capture_output=True, text=True).stdout.split()
    out = []
    for name in ("modbus_client", "modbus_cserver"):
        exe = tmp / name
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / f"{name}.c"), *flags],
                       check=True)
        out.append(exe)
    return out[0], out[1]


class Server:
    """A server subprocess, started pinned to SERVER_CPU and stopped by PID."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(pinned(SERVER_CPU, argv), stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"server {argv} did not start")
        self.port = line.split()[1]

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server so far (Linux /proc; NaN elsewhere)."""
        try:
            return cpu_seconds(self.proc.pid)
        except (OSError, ValueError, IndexError):
            return float("nan")

    def stop(self) -> None:
        stop_process(self.proc)


def run_client(client: Path, port: str, clients: int, requests: int) -> dict:
    res = subprocess.run(
        pinned(CLIENT_CPU, [str(client), "127.0.0.1", port, str(clients), str(requests),
                            str(COUNT)]),
        capture_output=True, text=True, timeout=300,
    )
    if res.returncode != 0:
        raise RuntimeError(f"client failed: {res.stderr.strip()}")
    return json.loads(res.stdout)


def bench_tcp(client: Path, cserver: Path, runs: int, quick: bool) -> list[dict]:
    """Round-robin over the servers for each run, so background load hits all alike."""
    me = [sys.executable, str(Path(__file__).resolve())]
    servers = {
        "pm4324 TcpServer (asyncio Protocol)": lambda: me + ["--serve", "pm4324"],
        "pm4324 TcpServer on uvloop (optional)": lambda: me + ["--serve", "pm4324-uvloop"],
        "pm4324 handler over asyncio streams": lambda: me + ["--serve", "pm4324-streams"],
        "pymodbus 3.16.1 ModbusTcpServer": lambda: me + ["--serve", "pymodbus"],
        "libmodbus 3.1.6 C server": lambda: [str(cserver), str(free_port()), str(NREGS)],
    }
    try:
        import uvloop  # noqa: F401
    except ImportError:  # not a dependency of pm4324: the row is skipped without it
        del servers["pm4324 TcpServer on uvloop (optional)"]
    results: dict[tuple[str, int], list[dict]] = {}
    for run in range(runs):
        for name, argv in servers.items():
            srv = Server(argv())
            try:
                for clients in (1, 8):
                    per_client = (4000 if quick else 20000) // clients
                    cpu0 = srv.cpu_s()
                    r = run_client(client, srv.port, clients, per_client)
                    # warm-up reads (200 per client) count too: the server served them
                    r["cpu_us"] = (srv.cpu_s() - cpu0) / (r["requests"] + 200 * clients) * 1e6
                    results.setdefault((name, clients), []).append(r)
                    print(f"  run {run + 1}: {name}, {clients} client(s): {r['rps']:.0f} req/s, "
                          f"p99 {r['p99_us']:.0f} us", file=sys.stderr)
            finally:
                srv.stop()
    rows = []
    for (name, clients), rs in results.items():
        rs.sort(key=lambda r: r["rps"])
        med = rs[len(rs) // 2]
        rows.append({"server": name, "clients": clients, **med,
                     "rps_min": rs[0]["rps"], "rps_max": rs[-1]["rps"]})
    return rows


def bench_rtu(n: int) -> list[dict]:
    me = [sys.executable, str(Path(__file__).resolve())]
    req = with_crc(bytes.fromhex("01 04 0000 0064"))  # unit 1, FC04, 100 registers
    rsp_len = 3 + 2 * COUNT + 2
    rows = []
    for baud, fmt in ((19200, "E81"), (115200, "N81")):
        master, slave = os.openpty()
        path = os.ttyname(slave)
        srv = Server(me + ["--serve-rtu", path, "--baud", str(baud), "--format", fmt])
        try:
            if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
                os.sched_setaffinity(0, {int(CLIENT_CPU)})
            lat = []
            for i in range(n + 100):
                os.write(master, req)
                t0 = time.perf_counter()
                if not select.select([master], [], [], 2)[0]:
                    raise RuntimeError("no RTU reply within 2 s")
                t1 = time.perf_counter()
                got = os.read(master, 1024)
                while len(got) < rsp_len:
                    select.select([master], [], [], 2)
                    got += os.read(master, 1024)
                if crc16(got) != 0 or got[2] != 2 * COUNT:
                    raise RuntimeError(f"bad RTU reply {got[:8].hex()}")
                if i >= 100:  # warm-up
                    lat.append(t1 - t0)
            lat.sort()
            rows.append({"line": f"{baud} {fmt}", "n": n, "p50_us": lat[n // 2] * 1e6,
                         "p99_us": lat[int(n * 0.99)] * 1e6, "max_us": lat[-1] * 1e6})
        finally:
            srv.stop()
            os.close(master)
            os.close(slave)
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, range(os.cpu_count() or 1))
    return rows


def print_tables(tcp: list[dict], rtu: list[dict], runs: int, load: tuple) -> None:
    print(f"Load average (1 min) before/after: {load[0]:.2f} / {load[1]:.2f}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print(f"### Modbus TCP: read 100 input registers (FC04), C libmodbus client, "
          f"median of {runs} run(s)\n")
    print("| server | clients | req/s (min–max) | p50 ms | p99 ms | server CPU µs/req |")
    print("|---|---|---|---|---|---|")
    for r in tcp:
        print(f"| {r['server']} | {r['clients']} | {r['rps']:,.0f} "
              f"({r['rps_min']:,.0f}–{r['rps_max']:,.0f}) | {r['p50_us'] / 1e3:.3f} | "
              f"{r['p99_us'] / 1e3:.3f} | {r['cpu_us']:.0f} |")
    by = {(r["server"].split()[0], r["clients"]): r["rps"] for r in tcp
          if "streams" not in r["server"] and "uvloop" not in r["server"]}
    print("\n| ratio | 1 client | 8 clients |")
    print("|---|---|---|")
    for other in ("pymodbus", "libmodbus"):
        print(f"| pm4324 / {other} | {by[('pm4324', 1)] / by[(other, 1)]:.2f}× | "
              f"{by[('pm4324', 8)] / by[(other, 8)]:.2f}× |")
    print("\n### Modbus RTU turnaround on a pty (no baud pacing: software time only)\n")
    print("| line setting | requests | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for r in rtu:
        print(f"| {r['line']} | {r['n']} | {r['p50_us'] / 1e3:.3f} | {r['p99_us'] / 1e3:.3f} | "
              f"{r['max_us'] / 1e3:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests, one run per cell")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serve", choices=["pm4324", "pm4324-uvloop", "pm4324-streams",
                                        "pymodbus"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--serve-rtu", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--baud", type=int, default=19200, help=argparse.SUPPRESS)
    ap.add_argument("--format", default="N81", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "pm4324":
        asyncio.run(_serve_pm4324(args.port))
        return
    if args.serve == "pm4324-uvloop":
        import uvloop

        uvloop.run(_serve_pm4324(args.port))
        return
    if args.serve == "pm4324-streams":
        asyncio.run(_serve_pm4324_streams(args.port))
        return
    if args.serve == "pymodbus":
        asyncio.run(_serve_pymodbus(args.port))
        return
    if args.serve_rtu:
        asyncio.run(_serve_rtu(args.serve_rtu, args.baud, args.format))
        return
    runs = 1 if args.quick else args.runs
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        client, cserver = compile_c(Path(tmp))
        tcp = bench_tcp(client, cserver, runs, args.quick)
    rtu = bench_rtu(500 if args.quick else 3000)
    print_tables(tcp, rtu, runs, (load0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
