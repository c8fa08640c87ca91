"""Modbus TCP under attack: a well-behaved client's latency while others misbehave, in one run.

Command (from the repository root; the throughput part needs gcc, pkg-config, libmodbus-dev)::

    .venv/bin/python bench/modbus_attack.py --runs 3        # 1,000 samples per phase, ~10 min
    .venv/bin/python bench/modbus_attack.py --runs 1 --samples 200 --no-throughput  # a look

The server is a real ``pm4324 run`` (simulated building, real-time metering, settings file and
state store in a temporary directory), pinned to CPU 0. The good client (this process, CPU 1)
reads 60 input registers every 20 ms over one connection, answers checked, 1 s timeout; every
50th sample is made on a fresh connection instead ("a new client gets in"). Phases, each with
one attacker process (on the server's CPU 0 at nice 19, see ATTACKER_CPU) running throughout:

* baseline: no attacker;
* pipeline: one client keeps 500 reads of 125 registers in flight, reading its answers;
* slowloris: 140 connections, each sending one byte every 2 s (never a whole frame), reopened
  when closed: more than the server's 128-connection table;
* noread: a client sends reads of 125 registers and never reads the answers, reconnecting
  when dropped (after the 5-s deadline for taking its answers);
* flood: bursts of 300 connections opened and closed at once;
* writes: 4 clients writing changing settings (CT ratio of Meter 1) as fast as they are
  answered; each write saves the settings file.

Goal (issue #11): in each attack phase the good client's p99 <= max(2 x its baseline p99, 2 ms)
and no timeouts. ``--runs N`` repeats the phases N times (each run its own server and
baseline) and ends with a summary: per phase the p99 of each run, the median, the runs that
met the goal, and a verdict (median p99 within the median goal, no failure in any run).
Then (unless ``--no-throughput``) 8 libmodbus clients' throughput against
pm4324's ``TcpServer`` and libmodbus's C server, alternating, as bench/modbus_bench.py does.
Everything listens on 127.0.0.1 only; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_util import cpu_seconds, recv_exact, stop_process  # noqa: E402
from modbus_bench import Server as BenchServer  # noqa: E402
from modbus_bench import compile_c, free_port, pinned, run_client  # noqa: E402

SERVER_CPU, CLIENT_CPU = "0", "1"
# Attackers share the server's CPU, at nice 19: attack traffic burdens the server's machine
# (its kernel's network work lands there too), not the good client's, which stands for
# another machine. On the client's CPU they delayed the good client itself by ~4 ms (p50).
ATTACKER_CPU = SERVER_CPU
PERIOD_S, TIMEOUT_S = 0.020, 1.0
READ_ADDRESS, READ_COUNT = 0x1100, 60  # CT1..CT3 block of Meter 1
PHASES = ("baseline", "pipeline", "slowloris", "noread", "flood", "writes")
_stop = threading.Event()


def request(tid: int, fc: int, address: int, value: int) -> bytes:
    return struct.pack(">HHHBBHH", tid & 0xFFFF, 0, 6, 1, fc, address, value)


# -- attackers (each in its own process: --attack NAME) -------------------------------------


def attack_pipeline(port: int, stats: dict) -> None:
    """Keep 5 batches of 100 reads of 125 registers in flight, reading the answers; reconnect
    if dropped (a reader starved of CPU can fall behind the server's bounded send buffer)."""
    batch = request(1, 4, 0x1100, 125) * 100
    answers_size = 100 * (9 + 250)
    while not _stop.is_set():
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(TIMEOUT_S)
        in_flight, buf = 0, b""
        try:
            while not _stop.is_set():
                readable, writable, _ = select.select([sock], [sock] if in_flight < 5 else [],
                                                      [], 0.5)
                if writable:
                    sock.sendall(batch)
                    in_flight += 1
                if readable:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                    while len(buf) >= answers_size:
                        if buf[7] != 4:
                            raise RuntimeError(f"bad answer {buf[:9].hex()}")
                        buf, in_flight = buf[answers_size:], in_flight - 1
                        stats["answers"] = stats.get("answers", 0) + 100
        except OSError:
            stats["dropped"] = stats.get("dropped", 0) + 1
        sock.close()


async def _slowloris(port: int, stats: dict) -> None:
    async def holder() -> None:
        while not _stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            stats["opened"] = stats.get("opened", 0) + 1
            try:
                while not _stop.is_set():
                    writer.write(b"\x00")
                    try:  # the pace: one byte every 2 s, or b"" once the server closed us
                        if await asyncio.wait_for(reader.read(1), 2.0) == b"":
                            stats["closed_by_server"] = stats.get("closed_by_server", 0) + 1
                            break
                    except TimeoutError:
                        continue
            except OSError:
                stats["closed_by_server"] = stats.get("closed_by_server", 0) + 1
            writer.close()

    await asyncio.gather(*(holder() for _ in range(140)))


def attack_slowloris(port: int, stats: dict) -> None:
    asyncio.run(_slowloris(port, stats))


def attack_noread(port: int, stats: dict) -> None:
    frames = request(7, 4, 0x1100, 125) * 200
    while not _stop.is_set():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        stats["connections"] = stats.get("connections", 0) + 1
        try:
            while not _stop.is_set():
                try:
                    sock.send(frames)
                except BlockingIOError:  # the server is not reading us (yet): keep pushing
                    time.sleep(0.01)
        except OSError:  # dropped by the server
            stats["dropped"] = stats.get("dropped", 0) + 1
        sock.close()


async def _flood(port: int, stats: dict) -> None:
    loop = asyncio.get_running_loop()
    while not _stop.is_set():
        socks = []
        for _ in range(300):
            s = socket.socket()
            s.setblocking(False)
            try:
                await loop.sock_connect(s, ("127.0.0.1", port))
                socks.append(s)
            except OSError:
                s.close()
        stats["connections"] = stats.get("connections", 0) + len(socks)
        await asyncio.sleep(0.05)
        for s in socks:
            s.close()


def attack_flood(port: int, stats: dict) -> None:
    asyncio.run(_flood(port, stats))


def attack_writes(port: int, stats: dict) -> None:
    lock = threading.Lock()

    def writer(k: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(5.0)
        n = 0
        while not _stop.is_set():
            frame = request(n, 6, 0x1000, 100 + (n + k) % 2)  # CT ratio of Meter 1
            t0 = time.perf_counter()
            sock.sendall(frame)
            head = recv_exact(sock, 9)
            if head[7] & 0x80:  # an exception answer (9 bytes): counted, and go on
                with lock:
                    key = f"exception_{head[8]:02d}"
                    stats[key] = stats.get(key, 0) + 1
                n += 1
                continue
            if head + recv_exact(sock, 3) != frame:
                raise RuntimeError("bad write answer")
            with lock:
                stats.setdefault("write_ms", []).append((time.perf_counter() - t0) * 1e3)
            n += 1

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    _stop.wait()


def run_attacker(name: str, port: int) -> None:
    os.nice(19)
    signal.signal(signal.SIGTERM, lambda *a: _stop.set())
    stats: dict = {}
    worker = threading.Thread(target=globals()[f"attack_{name}"], args=(port, stats), daemon=True)
    worker.start()
    print("ready", flush=True)
    _stop.wait()
    worker.join(3.0)
    ms = sorted(stats.pop("write_ms", []))
    if ms:
        stats.update(writes=len(ms), write_p50_ms=ms[len(ms) // 2], write_p99_ms=ms[int(len(ms) * .99)])
    print(json.dumps(stats), flush=True)


# -- the good client and the orchestration ----------------------------------------------------


def good_client(port: int, samples: int) -> dict:
    """``samples`` reads at 50 Hz: latencies (ms) of those on the kept connection, failures
    (1-s timeout, or refused / closed by the server: then it reconnects), fresh connections
    answered."""
    expect_len = 9 + 2 * READ_COUNT
    lat, timeouts, fresh_ok, fresh = [], 0, 0, 0
    sock = None
    next_t = time.perf_counter()
    for i in range(samples):
        next_t += PERIOD_S
        one_off = i % 50 == 49
        try:
            if sock is None or one_off:
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                s = sock
            t0 = time.perf_counter()
            s.sendall(request(i, 4, READ_ADDRESS, READ_COUNT))
            rsp = recv_exact(s, expect_len)
            dt = (time.perf_counter() - t0) * 1e3
            if rsp[:2] != struct.pack(">H", i & 0xFFFF) or rsp[7] != 4:
                raise RuntimeError(f"bad answer {rsp[:9].hex()}")
            if one_off:
                fresh += 1
                fresh_ok += 1
                s.close()
            else:
                sock = s
                lat.append(dt)
        except (OSError, ConnectionError):
            timeouts += 1
            fresh += one_off
            if sock is not None and not one_off:
                sock.close()
                sock = None
        time.sleep(max(0.0, next_t - time.perf_counter()))
    if sock is not None:
        sock.close()
    lat.sort()
    n = len(lat)
    return {"n": n, "p50": lat[n // 2], "p99": lat[int(n * 0.99)], "max": lat[-1],
            "timeouts": timeouts, "fresh": f"{fresh_ok}/{fresh}"}


class RunningMeter:
    """``pm4324 run`` in a temporary directory, pinned to SERVER_CPU; stderr kept."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        settings = tmp / "settings.toml"
        # On loopback the good client and the attackers share one address, so the per-address
        # limits of [security.tcp] would throttle them together (docs/security.md): lifted
        # here, to measure the server itself. "vendor": plain-TCP settings writes allowed.
        settings.write_text(f'[modbus]\ntcp_listen = "127.0.0.1:{self.port}"\n'
                            '[security]\nprofile = "vendor"\n'
                            '[security.tcp]\nmax_connections_per_client = 10000\n'
                            'max_connects_per_s = 10000\nmax_requests_per_s = 1000000\n')
        self.stderr = open(tmp / "stderr.txt", "w+")  # noqa: SIM115 - closed in stop()
        exe = str(Path(sys.executable).with_name("pm4324"))
        self.proc = subprocess.Popen(pinned(SERVER_CPU, [exe, "run", "--settings", str(settings),
                                                         "--json"]),
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("pm4324 run did not start listening")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server so far (taskset execs it: same PID)."""
        return cpu_seconds(self.proc.pid)

    def log_lines(self) -> int:
        self.stderr.seek(0)
        return sum("Modbus TCP" in line for line in self.stderr)

    def stop(self) -> None:
        stop_process(self.proc)
        self.stderr.close()


def attack_phase(name: str, port: int, samples: int, log_before: int, meter: RunningMeter) -> dict:
    attacker = None
    cpu_attack0 = meter.cpu_s()  # the server's CPU over the attacker's whole life
    if name != "baseline":
        argv = [sys.executable, str(Path(__file__).resolve()), "--attack", name, "--port", str(port)]
        attacker = subprocess.Popen(pinned(ATTACKER_CPU, argv), stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([attacker.stdout], [], [], 30)
        if not ready or not attacker.stdout.readline().startswith("ready"):
            attacker.kill()
            raise RuntimeError(f"attacker {name} did not start")
        time.sleep(1.0)  # let the attack build up before sampling
    cpu0, t0 = meter.cpu_s(), time.monotonic()
    try:
        result = good_client(port, samples)
        result["server_cpu_pct"] = 100 * (meter.cpu_s() - cpu0) / (time.monotonic() - t0)
    finally:
        stats = {}
        if attacker is not None:
            attacker.terminate()
            out, _ = attacker.communicate(timeout=30)
            stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if stats.get("writes"):  # the server's CPU per write answered (load blurs it least)
        stats["server_cpu_ms_per_write"] = (meter.cpu_s() - cpu_attack0) * 1e3 / stats["writes"]
    result["attack"] = stats
    result["server_log_lines"] = meter.log_lines() - log_before
    return result


def throughput(runs: int, previous_src: str | None = None) -> list[tuple[str, float, float]]:
    """8 clients' req/s, median of ``runs`` alternating runs; pm4324 on the loop `run` uses.
    With ``previous_src`` (the ``src`` of another revision) its TcpServer runs as well."""
    me = [sys.executable, str(HERE / "modbus_bench.py")]
    try:
        import uvloop  # noqa: F401
        ours = "pm4324-uvloop"
    except ImportError:
        ours = "pm4324"
    rows: dict[str, list[tuple[float, float]]] = {}  # (req/s, server CPU µs per request)
    with tempfile.TemporaryDirectory() as tmp:
        client, cserver = compile_c(Path(tmp))
        servers = {f"pm4324 TcpServer ({ours})": lambda: me + ["--serve", ours],
                   "libmodbus C server": lambda: [str(cserver), str(free_port()), "200"]}
        if previous_src:
            servers[f"pm4324 TcpServer ({ours}), {previous_src}"] = servers[
                f"pm4324 TcpServer ({ours})"]
        for _ in range(runs):
            for name, argv in servers.items():
                if previous_src and name.endswith(previous_src):
                    os.environ["PYTHONPATH"] = previous_src
                srv = BenchServer(argv())
                os.environ.pop("PYTHONPATH", None)
                try:
                    cpu0 = srv.cpu_s()
                    r = run_client(client, srv.port, 8, 2500)
                    # the client's 200 warm-up reads per connection count too
                    cpu_us = (srv.cpu_s() - cpu0) / (r["requests"] + 8 * 200) * 1e6
                    rows.setdefault(name, []).append((r["rps"], cpu_us))
                finally:
                    srv.stop()
    out = []
    for name, v in rows.items():
        v.sort()
        out.append((name, v[len(v) // 2][0], sorted(c for _, c in v)[len(v) // 2]))
    return out


def print_run(results: dict, title: str) -> float:
    """One run's table; returns its goal (ms)."""
    base = results.get("baseline", {}).get("p99", float("nan"))
    goal = max(2 * base, 2.0)
    print(f"{title}\n")
    print(f"| phase | samples | p50 ms | p99 ms | max ms | failed | fresh connections answered "
          f"| server CPU | server log lines | attacker | p99 <= {goal:.2f} ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ok = "" if name.startswith("baseline") else ("met" if r["p99"] <= goal and not r["timeouts"]
                                            else "MISSED")
        print(f"| {name} | {r['n']} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | "
              f"{r['timeouts']} | {r['fresh']} | {r['server_cpu_pct']:.0f} % | "
              f"{r['server_log_lines']} | "
              f"{json.dumps(r['attack'])} | {ok} |")
    print()
    return goal


def print_summary(runs: list[dict], goals: list[float]) -> None:
    """Per phase over all runs: p99 of each run, the median, the goal, the verdict."""
    n = len(runs)
    print(f"### Summary of {n} run(s): goal p99 <= max(2 x that run's baseline p99, 2 ms), "
          "no failures\n")
    print("| phase | p99 ms per run | median p99 ms | goal ms per run | runs met | failed | "
          "median server CPU | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for name in runs[0]:
        rs = [run[name] for run in runs if name in run]
        p99 = [r["p99"] for r in rs]
        failed = sum(r["timeouts"] for r in rs)
        cpu = sorted(r["server_cpu_pct"] for r in rs)[len(rs) // 2]
        med = sorted(p99)[len(p99) // 2]
        if name.startswith("baseline"):
            met, verdict = "", ""
        else:
            hits = sum(r["p99"] <= g and not r["timeouts"] for r, g in zip(rs, goals, strict=True))
            met = f"{hits}/{len(rs)}"
            verdict = "met" if med <= sorted(goals)[len(goals) // 2] and not failed else "MISSED"
        print(f"| {name} | {', '.join(f'{x:.2f}' for x in p99)} | {med:.3f} | "
              f"{', '.join(f'{g:.2f}' for g in goals)} | {met} | {failed} | {cpu:.0f} % | "
              f"{verdict} |")
    print("\nverdict: the median p99 over the runs within the median goal, and no failure in "
          "any run.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1000, help="good-client samples per phase")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="runs of the attack phases (each with "
                    "its own baseline and server) and throughput runs per server")
    ap.add_argument("--previous-src", metavar="DIR",
                    help="also measure the throughput of the TcpServer in DIR (another revision's "
                    "src, e.g. from `git archive REV src | tar -x -C /tmp/rev`)")
    ap.add_argument("--attack", choices=PHASES[1:], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.attack:
        run_attacker(args.attack, args.port)
        return
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    load0 = os.getloadavg()[0]
    runs: list[dict] = []
    for run in range(args.runs):
        results: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            meter = RunningMeter(Path(tmp))
            try:
                time.sleep(3.0)  # compile and warm up: a few seconds measured before sampling
                for k, name in enumerate(args.phases.split(",")):
                    key = name if name not in results else f"{name} ({k + 1})"
                    results[key] = attack_phase(name, meter.port, args.samples,
                                                meter.log_lines(), meter)
                    print(f"run {run + 1}, {key}: {json.dumps(results[key])}", file=sys.stderr,
                          flush=True)
            finally:
                meter.stop()
        runs.append(results)
    print(f"Load average (1 min) before/after: {load0:.2f} / {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    goals = [print_run(r, f"Run {k + 1} of {len(runs)}") for k, r in enumerate(runs)]
    print_summary(runs, goals)
    if not args.no_throughput:
        rows = throughput(args.runs, args.previous_src)
        print(f"| 8 clients, FC04 x 100 registers, median of {args.runs} | req/s | "
              "server CPU µs/req |\n|---|---|---|")
        for name, rps, cpu_us in rows:
            print(f"| {name} | {rps:,.0f} | {cpu_us:.0f} |")
        ratio = rows[0][1] / rows[1][1]
        print(f"| pm4324 / libmodbus | {ratio:.2f}× ({'met' if ratio >= 0.8 else 'MISSED'}: "
              "goal >= 0.8×) | |")


if __name__ == "__main__":
    main()
