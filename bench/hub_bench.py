"""Hub benchmark: one hub polling N lightweight Modbus TCP servers at 1 s and writing their
history. The servers (our TcpServer over a static register image recorded from the
built-in building) run in a child process, so the hub's CPU is measured alone.

    .venv/bin/python bench/hub_bench.py --meters 200 --seconds 30 [--pipeline 4] [--scrapes 20]

Prints readings per second achieved (N per second is the target), how late polls started
(p50 / p99 / max of ``late_s``), the hub's CPU share of one core (the servers' process is
not counted), and the history written. With ``--scrapes N`` the hub also serves its web
interface (as ``pm4324 hub --http``) and the measured window ends with N GETs of its
``/metrics`` over loopback, one a second (each a new second, so none is served from the
per-second cache; the servers then publish their recorded second anew each second, with a new
seq and time, so the hub's snapshots change as a running meter's do): the time to the whole
answer, median and max. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SETTINGS = Path(__file__).resolve().parents[1] / "src" / "pm4324" / "data" / "building-settings.toml"


def record_image() -> dict:
    """One second of the built-in building, as `pm4324 run --json` prints it."""
    with tempfile.TemporaryDirectory() as d:
        settings = Path(d) / "s.toml"
        settings.write_text(SETTINGS.read_text())
        out = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings),
                              "--seconds", "3", "--speed", "100", "--no-modbus", "--json"],
                             capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.splitlines()[-1])


class StaticMeter:
    """A MeterControl that always shows one recorded snapshot (a register image)."""

    def __init__(self, snapshot):
        from pm4324.snapshot import AlarmStatus

        self.snapshot, self.settings = snapshot, snapshot.settings
        self.relays, self.alarm_status = snapshot.relays, AlarmStatus()
        self.listeners: list = []

    def add_listener(self, callback) -> None:
        self.listeners.append(callback)

    def next_second(self, seq: int, time_s: float) -> None:
        """The same values as a new second (new seq and time), as a running meter publishes."""
        from dataclasses import replace

        self.snapshot = replace(self.snapshot, seq=seq, time=time_s)
        for callback in self.listeners:
            callback(self.snapshot)


def serve(recorded: dict, count: int, ports: multiprocessing.Queue, stop: multiprocessing.Event,
          ticking: bool) -> None:
    from pm4324.client.snapshot import snapshot_from_dict
    from pm4324.protocols.modbus import TcpServer
    from pm4324.registers.image import MapBackend

    async def main() -> None:
        snap = snapshot_from_dict(recorded)
        servers, meters = [], []
        for _ in range(count):
            meters.append(StaticMeter(snap))
            srv = TcpServer(MapBackend(meters[-1]), unit_id=1, port=0)
            await srv.start()
            servers.append(srv)
        ports.put([s.port for s in servers])
        seq = snap.seq
        while not stop.is_set():
            await asyncio.sleep(1.0 if ticking else 0.2)
            if ticking:  # every meter publishes a new second (its register image rebuilt)
                seq += 1
                for meter in meters:
                    meter.next_second(seq, time.time() // 1)
        for s in servers:
            await s.stop()

    asyncio.run(main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meters", type=int, default=200)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    p.add_argument("--pipeline", type=int, default=4, help="requests in flight per meter")
    p.add_argument("--scrapes", type=int, default=0, help="GETs of the hub's /metrics (0: no web)")
    args = p.parse_args()

    from pm4324.history import HistoryStore
    from pm4324.hub import Hub, parse_hub

    recorded = record_image()
    ports: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=serve, args=(recorded, args.meters, ports, stop,
                                                            args.scrapes > 0))
    child.start()
    try:
        port_list = ports.get(timeout=120)
        with tempfile.TemporaryDirectory() as d:
            config = parse_hub({"hub": {"history": f"{d}/hub.db", "time_zone": "UTC"},
                                "meters": [{"key": f"m{k}", "tcp": f"127.0.0.1:{port}", "gap_s": 30,
                                            "pipeline": args.pipeline}
                                           for k, port in enumerate(port_list)]})
            store = HistoryStore.open(config.history)
            said: list[str] = []
            hub = Hub(config, store, say=said.append)
            stop_hub = threading.Event()
            web = start_web(config, hub, d) if args.scrapes else None
            runner = threading.Thread(target=hub.run, kwargs={"stop": stop_hub})
            runner.start()
            time.sleep(args.warmup)  # connections made, phases spread, first minute begun
            n0, t0, cpu0 = hub.readings, time.perf_counter(), time.process_time()
            hub.late_s.clear()
            time.sleep(args.seconds)
            scrapes = scrape(web.url + "metrics", args.scrapes) if web else []
            n, wall, cpu = hub.readings - n0, time.perf_counter() - t0, time.process_time() - cpu0
            late = sorted(hub.late_s)
            stop_hub.set()
            runner.join()
            if web is not None:
                web.stop_thread()
            size = store.db.size_bytes()
            store.close()
    finally:
        stop.set()
        child.join(timeout=30)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    servers_cpu = usage.ru_utime + usage.ru_stime
    print(f"{args.meters} meters, pipeline {args.pipeline}, {wall:.1f} s after {args.warmup:g} s warm-up: "
          f"{n} readings = {n / wall:.1f}/s (target {args.meters}/s); late_s p50 "
          f"{_q(late, 0.5) * 1e3:.0f} ms, p99 {_q(late, 0.99) * 1e3:.0f} ms, max "
          f"{_q(late, 1.0) * 1e3:.0f} ms; hub CPU {cpu:.1f} s = {100 * cpu / wall:.0f} % of one core; "
          f"history {size / 1e6:.1f} MB; the servers' process: {servers_cpu:.0f} s CPU in all; "
          f"{sum('offline' in x for x in said)} offline events")
    for problem in sorted({x.split(": ", 1)[1] for x in said if "offline" in x})[:5]:
        print("  offline:", problem)
    if scrapes:
        times = sorted(ms for ms, _, _ in scrapes[1:])  # the first builds the label tables
        print(f"/metrics of the hub's {args.meters} meters over HTTP, {len(scrapes)} GETs a second apart: "
              f"first {scrapes[0][0]:.0f} ms, then median {_q(times, 0.5):.0f} ms, max {times[-1]:.0f} ms; "
              f"{scrapes[-1][1] / 1e6:.1f} MB, {scrapes[-1][2]} meters' series in the last")


def start_web(config, hub, home: str):
    """The hub's web interface as `pm4324 hub --http` starts it (cli/hub_cmd.py), on a free port."""
    from pm4324.history import HistoryStore
    from pm4324.web.server import WebServer

    web = WebServer(None, "127.0.0.1", 0, keys=[m.key for m in config.meters],
                    history=HistoryStore.open(config.history, readonly=True))
    web.start_in_thread()
    hub.listeners.append(web.publish)
    hub.watchers.append(web.fleet.mark)
    return web


def scrape(url: str, count: int) -> list[tuple[float, int, int]]:
    """(ms to the whole answer, bytes, meters in it) of ``count`` GETs, one a second."""
    import httpx

    out = []
    with httpx.Client(timeout=10) as http:
        for _ in range(count):
            t0 = time.perf_counter()
            r = http.get(url)
            ms = 1000 * (time.perf_counter() - t0)
            r.raise_for_status()
            meters = len({line.split('meter="', 1)[1].split('"', 1)[0]
                          for line in r.text.splitlines() if 'meter="' in line})
            out.append((ms, len(r.content), meters))
            time.sleep(max(0.0, 1.0 - ms / 1000))  # the next second: a new render
    return out


def _q(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


if __name__ == "__main__":
    main()
