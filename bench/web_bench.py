"""Web benchmark: page load, what open dashboards cost the meter, and /metrics time.

Command (from the repository root; needs Debian's chromium)::

    .venv/bin/python bench/web_bench.py            # about two minutes
    .venv/bin/python bench/web_bench.py --quick    # shorter CPU windows

What it measures:

* Page load: `pm4324 run --http` on the simulated building in a subprocess (its own state
  file in a temporary directory), each page opened 5 times in a fresh chromium context
  (Playwright): time to DOMContentLoaded and to the first second drawn (``#live[data-seq]``
  and the page's content), median and maximum.
* Dashboards' cost: the meter's CPU time (utime + stime from /proc/PID/stat) over a window
  with no page open, then with five Building pages, then with five Meter pages open (each
  Meter page fetches its waveforms and a spectrum every second). The difference to the idle
  window, in % of one core, is what the dashboards cost the meter.
* /metrics: the median time of 200 GETs of one meter's /metrics over loopback (httpx), and
  ``metrics.render`` for a hub of 200 meters (200 copies of one measured second), in process.

With ``--history STORE`` it measures the history API instead (docs/benchmarks.md): a year
of the building's synthesized history (`pm4324 history synth`, written to STORE first when it
does not exist) behind an in-process web server: the median of 7 GETs over loopback of each
history endpoint, and the Trends page in chromium switching to a 1-year trend (request,
server-side downsampling and SVG drawing).

    .venv/bin/python bench/web_bench.py --history /tmp/web-year.db

Nothing listens beyond 127.0.0.1; the meter subprocess is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_util import cpu_seconds, stop_process

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "src" / "pm4324" / "data" / "building-settings.toml"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = ("", "meter", "trends", "events", "settings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_meter(tmp: Path) -> tuple[subprocess.Popen, str]:
    settings = tmp / "settings.toml"
    settings.write_text(SETTINGS.read_text() + f'\n[store]\npath = "{tmp / "state.db"}"\n')
    port = free_port()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "pm4324"), "run", "--settings", str(settings),
                             "--http", f"127.0.0.1:{port}", "--no-modbus", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # numba's first compile can take a while
        try:
            if httpx.get(url + "api/snapshot", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the meter did not answer within 60 s")


def page_loads(browser, url: str, runs: int) -> None:
    print("\nPage load (ms), median / max of", runs)
    print(f"{'page':<10} {'DOMContentLoaded':>18} {'first second drawn':>20}")
    for slug in PAGES:
        dom, drawn = [], []
        for _ in range(runs):
            context = browser.new_context()
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(url + slug, wait_until="domcontentloaded")
            dom.append(time.perf_counter() - t0)
            page.wait_for_selector("#live[data-seq]", timeout=10_000)
            page.wait_for_function("document.querySelector('#content').children.length > 0")
            drawn.append(time.perf_counter() - t0)
            context.close()
        print(f"{slug or 'building':<10} {1000 * statistics.median(dom):>9.0f} / {1000 * max(dom):<6.0f}"
              f" {1000 * statistics.median(drawn):>11.0f} / {1000 * max(drawn):<6.0f}")


def dashboards_cost(browser, url: str, pid: int, window: float) -> None:
    def seqs(pages) -> list[int]:
        return [int(p.get_attribute("#live", "data-seq") or -1) for p in pages]

    def measure(slug: str | None) -> float:
        contexts, pages = [], []
        if slug is not None:
            for _ in range(5):
                context = browser.new_context()
                pages.append(context.new_page())
                pages[-1].goto(url + slug)
                contexts.append(context)
            for p in pages:
                p.wait_for_selector("#live[data-seq]", timeout=10_000)
        before = seqs(pages)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        used = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        drawn = [b - a for a, b in zip(before, seqs(pages))]
        if drawn and min(drawn) < window - 2:
            print(f"  (a page drew only {min(drawn)} of ~{window:.0f} seconds)")
        for context in contexts:
            context.close()
        return 100 * used

    idle = measure(None)
    print(f"\nMeter CPU over {window:.0f} s windows (% of one core)")
    print(f"no dashboard: {idle:.1f} %")
    for slug, name in (("", "Building"), ("meter?m=1", "Meter")):
        busy = measure(slug)
        print(f"five {name} pages: {busy:.1f} %  (+{busy - idle:.1f} %)")


def cpu_per_request(url: str, pid: int, n: int) -> None:
    """The meter's CPU per answer: steadier than a window's total on a loaded machine."""
    print(f"\nMeter CPU per request ({n} sequential GETs each, minus the meter's own idle CPU)")
    with httpx.Client(timeout=5) as http:
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(5)
        idle_rate = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        for path in ("api/snapshot", "api/meters/1/waveforms", "api/cts/1/harmonics", "metrics"):
            c0, t0 = cpu_seconds(pid), time.monotonic()
            for _ in range(n):
                assert http.get(url + path).status_code == 200
            spent = cpu_seconds(pid) - c0 - idle_rate * (time.monotonic() - t0)
            print(f"  /{path:<24} {1000 * spent / n:6.2f} ms")


def metrics_times(url: str) -> None:
    with httpx.Client(timeout=5) as http:
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            r = http.get(url + "metrics")
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
    print(f"\n/metrics of one meter over HTTP: median {1000 * statistics.median(times):.2f} ms, "
          f"{len(r.content)} bytes")
    sys.path.insert(0, str(ROOT / "tests" / "web"))
    from conftest import start_live_meter, stop_live_meter
    from pm4324.web import metrics

    live, thread = start_live_meter()
    try:
        snap = live.step()
        fleet = [(f"meter-{k:03d}", snap) for k in range(200)]
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            text = metrics.render(fleet)
            runs.append(time.perf_counter() - t0)
    finally:
        stop_live_meter(live, thread)
    print(f"metrics.render for a hub of 200 meters: median {1000 * statistics.median(runs):.0f} ms "
          f"(min {1000 * min(runs):.0f}), {len(text) / 1e6:.1f} MB, {text.count(chr(10))} lines")


def history_endpoints(store_path: Path) -> None:
    from datetime import date, timedelta

    from playwright.sync_api import sync_playwright

    from pm4324.history import HistoryStore
    from pm4324.web.server import WebServer

    last = date(2026, 12, 4)
    if not store_path.exists():
        t0 = time.perf_counter()
        subprocess.run([str(ROOT / ".venv" / "bin" / "pm4324"), "history", "synth", "--store",
                        str(store_path), "--meter-key", "local", "--time-zone", "Europe/Berlin",
                        "--from", str(last - timedelta(days=364)), "--to", str(last)], check=True)
        print(f"synthesized a year in {time.perf_counter() - t0:.0f} s")
    web = WebServer(None, "127.0.0.1", 0, keys=["local"],
                    history=HistoryStore.open(store_path, readonly=True))
    web.start_in_thread()
    try:
        with httpx.Client(base_url=web.url.rstrip("/"), timeout=60) as http:
            span = http.get("/api/history/span").json()
            end = span["last"] + 900
            year, month, day = end - 365 * 86400, end - 31 * 86400, end - 86400
            cases = [
                ("span", "/api/history/span", {}),
                ("today (32 elements)", "/api/history/today", {}),
                ("trend ct7 P, 24 h, 1-min -> 1200", "/api/history/trend",
                 {"element": "ct7", "start": day, "end": end, "points": 1200}),
                ("trend ct7 P, 1 year, 1-min -> 2000", "/api/history/trend",
                 {"element": "ct7", "start": year, "end": end, "points": 2000, "resolution": "1min"}),
                ("trend ct7 P, 1 year, auto (1-min) -> 1200", "/api/history/trend",
                 {"element": "ct7", "start": year, "end": end, "points": 1200}),
                ("trend ct7 PF, 1 year (15-min only) -> 1200", "/api/history/trend",
                 {"element": "ct7", "quantity": "pf", "start": year, "end": end, "points": 1200}),
                ("energy per day, 31 days", "/api/history/energy", {"element": "meter2"}),
                ("energy per day, 1 year", "/api/history/energy",
                 {"element": "meter2", "first": str(last - timedelta(days=364)), "last": str(last)}),
                ("energy per month, 12 months", "/api/history/energy",
                 {"element": "meter2", "period": "month"}),
                ("15-min demand, 24 h", "/api/history/demand",
                 {"element": "meter2", "start": day, "end": end}),
                ("15-min demand, 31 days", "/api/history/demand",
                 {"element": "meter2", "start": month, "end": end}),
                ("max demand per month, 1 year", "/api/history/max-demand",
                 {"element": "meter2", "period": "month"}),
                ("backfill, 6 h (360 min, 24 intervals)", "/api/history/backfill",
                 {"start": end - 6 * 3600, "end": end}),
            ]
            print("\nHistory API over loopback, a year of one PM-4324A (ms, median / min of 7)")
            for name, path, params in cases:
                times = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    r = http.get(path, params=params)
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                print(f"  {name:<44} {1000 * statistics.median(times):7.1f} / {1000 * min(times):<7.1f}"
                      f" {len(r.content) / 1000:8.1f} kB")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            loads, years = [], []
            for _ in range(5):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(web.url + "trends")
                page.wait_for_selector("#content[data-ready='1']", timeout=30_000)
                loads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                page.select_option("#trend-range", str(366 * 86400))
                page.wait_for_selector(f"#trend[data-span='{366 * 86400}'] svg", timeout=30_000)
                years.append(time.perf_counter() - t0)
                context.close()
            browser.close()
        print(f"\nTrends page (chromium), ms median / max of 5: loaded with its 24-h trend, days, months "
              f"and demand {1000 * statistics.median(loads):.0f} / {1000 * max(loads):.0f}; "
              f"switched to 1 year {1000 * statistics.median(years):.0f} / {1000 * max(years):.0f}")
    finally:
        web.stop_thread()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10-s CPU windows, 3 loads per page")
    ap.add_argument("--history", type=Path, metavar="STORE", help="measure the history API on a year")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"{os.uname().nodename}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if args.history:
        history_endpoints(args.history)
        print(f"load {os.getloadavg()[0]:.2f}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_meter(Path(tmp))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page_loads(browser, url, 3 if args.quick else 5)
                dashboards_cost(browser, url, proc.pid, 10 if args.quick else 30)
                browser.close()
            cpu_per_request(url, proc.pid, 200 if args.quick else 500)
            metrics_times(url)
        finally:
            stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
