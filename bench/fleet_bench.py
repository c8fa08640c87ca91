"""Fleet benchmark: N meters at the truth or the physics level, in real time, with their
energy store, for S seconds; optionally a Modbus master polling M of them every second.

    .venv/bin/python bench/fleet_bench.py --level truth --meters 10000 --seconds 30
    .venv/bin/python bench/fleet_bench.py --level physics --meters 500 --seconds 30 --workers 2
    .venv/bin/python bench/fleet_bench.py --level truth --meters 10000 --seconds 30 --poll 200

Prints one JSON object: meters, seconds published, publish jitter (the publish instant minus
the second's end: median, 99th percentile, largest absolute), seconds late (commit or
compute not done by the second's end), compute and commit time per second, CPU per
second (the clock process and the physics workers, from /proc), and resident memory per
meter (the process and the workers). With ``--poll M`` the fleet also serves gateway ports
(247 unit ids each) and a master in another process (pymodbus's client, one connection per
gateway port, one request at a time, as a SCADA on a gateway line) reads CT1's V, I, P, Q
and S (10 registers) of units 1..M once a second: its reads per second and latencies are
reported too. Results and the machine: docs/benchmarks.md, "Fleet".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from bench_util import cpu_seconds


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _poller(ports: list[int], units: int, seconds: int, out) -> None:
    """A master polling units 1..units (247 per gateway port) once a second."""
    from pymodbus.client import ModbusTcpClient

    clients: dict[int, ModbusTcpClient] = {}
    lat, errors, t_end = [], 0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        start = time.monotonic()
        for u in range(units):
            p = ports[u // 247]
            if p not in clients:
                clients[p] = ModbusTcpClient("127.0.0.1", port=p, timeout=2)
                clients[p].connect()
            t0 = time.perf_counter()
            rr = clients[p].read_input_registers(0x1100, count=10, device_id=u % 247 + 1)
            lat.append(time.perf_counter() - t0)
            errors += rr.isError()
        time.sleep(max(0.0, start + 1 - time.monotonic()))
    out.send((lat, errors, seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", choices=("truth", "physics"), default="truth")
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=3200.0, help="physics sample rate (S/s)")
    ap.add_argument("--poll", type=int, default=0, help="a master reads this many units a second")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from pm4324.fleet.clock import TruthFleet
    from pm4324.fleet.config import parse_fleet
    from pm4324.fleet.store import FleetStore

    threadpool_limits(limits=1, user_api="blas")
    import sys

    sys.setswitchinterval(0.0005)  # as `pm4324 fleet` (app.GIL_SWITCH_INTERVAL_S)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
        t0 = time.perf_counter()
        config = parse_fleet({"fleet": {"fidelity": args.level, "store": f"{d}/fleet",
                                        "workers": args.workers, "sample_rate_hz": args.rate},
                              "meters": [{"key": "m{n:05}", "count": args.meters}],
                              "modbus": {"mode": "gateway", "port": 0}},
                             "bench", Path(d))
        store = FleetStore.open(config.store, [m.key for m in config.members])
        if args.level == "physics":
            from pm4324.fleet.physics import PhysicsFleet

            fleet = PhysicsFleet(config, store)
            pids = [p.pid for p in fleet._procs]
        else:
            fleet = TruthFleet(config, store)
            pids = []
        setup_s = time.perf_counter() - t0
        polled = _serve_and_poll(fleet, args) if args.poll else None
        rss0 = _rss_mb(os.getpid())
        cpu0 = time.process_time()
        workers0 = [cpu_seconds(p) for p in pids]
        stop = threading.Event()
        wall0 = time.monotonic()
        fleet.run(stop, args.seconds, 1.0)
        wall = time.monotonic() - wall0
        poll = polled() if polled else None
        cpu = time.process_time() - cpu0
        workers_cpu = sum(cpu_seconds(p) - c for p, c in zip(pids, workers0))
        rss = _rss_mb(os.getpid()) + sum(_rss_mb(p) for p in pids)
        jitter = [x * 1000 for x in fleet.jitter_s]
        compute = [x * 1000 for x in fleet.compute_s]
        commits = [x * 1000 for x in store.commit_s]
        ru = resource.getrusage(resource.RUSAGE_SELF)
        result = {
            "level": args.level, "meters": args.meters, "seconds": fleet.published_k + 1,
            "rate_sps": args.rate if args.level == "physics" else None,
            "workers": len(pids) or None, "setup_s": round(setup_s, 1),
            "jitter_ms": {"median": round(_pct(jitter, 0.5), 2),
                          "p99": round(_pct(jitter, 0.99), 2),
                          "max_abs": round(max(abs(x) for x in jitter), 2)},
            "late_seconds": fleet.late,
            "compute_ms": {"median": round(_pct(compute, 0.5), 1),
                           "max": round(max(compute), 1)},
            "commit_ms": {"median": round(_pct(commits, 0.5), 1), "max": round(max(commits), 1)},
            "cpu_per_s": {"clock_process": round(cpu / wall, 3),
                          "workers": round(workers_cpu / wall, 3)},
            "cpu_us_per_meter_second": round((cpu + workers_cpu) / wall / args.meters * 1e6, 1),
            "rss_mb": round(rss, 1), "rss_kb_per_meter": round(rss * 1024 / args.meters, 1),
            "rss_clock_process_mb_before_run": round(rss0, 1),
            "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "store_bytes": store.slot_size * 2,
            "load_average": os.getloadavg(),
        }
        if poll is not None:
            lat, errors, secs = poll
            ms = [x * 1000 for x in lat]
            result["poll"] = {"units": args.poll, "reads_per_s": round(len(lat) / secs, 1),
                              "errors": errors, "latency_ms": {
                                  "median": round(_pct(ms, 0.5), 2),
                                  "p99": round(_pct(ms, 0.99), 2), "max": round(max(ms), 2)}}
        fleet.close()
    print(json.dumps(result))


def _serve_and_poll(fleet, args):
    """Gateway ports in an event loop thread, and the poller process; a function that waits
    for the poller's numbers and stops both."""
    import asyncio
    import multiprocessing as mp

    from pm4324.fleet.expose import Backends, start_tcp

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    servers: list = []
    asyncio.run_coroutine_threadsafe(start_tcp(fleet.config, Backends(fleet.members), servers),
                                     loop).result(120)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_poller, args=([s.port for s in servers], args.poll,
                                             args.seconds, child))
    proc.start()

    def finish():
        got = parent.recv()
        proc.join(10)
        for s in servers:
            asyncio.run_coroutine_threadsafe(s.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        return got

    return finish


if __name__ == "__main__":
    main()
