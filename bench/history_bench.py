"""History benchmark: a synthesized multi-year store of one PM-4324A (24 CTs, 8 Meters,
2 mains; the built-in building's exact truth, no raw window), its size and the query times
the issue sets targets for, and what writing history costs a running meter.

    .venv/bin/python bench/history_bench.py --years 10 --store /tmp/h10.db
    .venv/bin/python bench/history_bench.py --store /tmp/h10.db --queries-only

Targets (docs/benchmarks.md): <= 4 GB for 10 years; a CT's daily energy for a year <= 50 ms;
a 1-year 1-minute trend of a CT downsampled to 2,000 points <= 200 ms; all CTs' 15-minute
demand for a month <= 200 ms; writing history <= 3 % of one core for a running meter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from pm4324.config.settings_parse import load_settings
from pm4324.history import HistoryStore, HistoryWriter, query
from pm4324.history.aggregate import batch_of_minutes
from pm4324.history.layout import LAYOUT, Frame
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.truth import Truth

SETTINGS = Path(__file__).resolve().parents[1] / "src" / "pm4324" / "data" / "building-settings.toml"
ZONE = "Europe/Berlin"


def synthesize(path: str, first: date, years: int, noise: float = 0.0) -> None:
    """``noise``: relative rms noise added to every minute value (a real meter's values wander
    a little from minute to minute and compress less than exact truth)."""
    rng = np.random.default_rng(4324)
    store = HistoryStore.open(path, time_zone=ZONE)
    tz = store.tz
    settings = load_settings(SETTINGS)
    meter = store.meter_id("bench", settings.model)
    start = datetime.combine(first, datetime.min.time(), tz).timestamp()
    truth = Truth(load_scenario(None), settings, ZONE, start)
    day, last = first, date(first.year + years, first.month, first.day)
    counters = None
    t0, cpu0 = time.perf_counter(), time.process_time()
    while day < last:
        lo = datetime.combine(day, datetime.min.time(), tz).timestamp()
        day += timedelta(days=1)
        hi = datetime.combine(day, datetime.min.time(), tz).timestamp()
        t = np.arange(lo, hi, 60, dtype=np.int64)
        m = truth.minutes(t)
        batch = batch_of_minutes(t, {"ct": m.ct, "meter": m.meter, "main": m.main},
                                 np.concatenate([m.ct_energy, m.meter_energy], axis=1), counters)
        if noise:
            wobble = 1 + noise * rng.standard_normal(batch.sums.shape)
            batch.sums *= wobble
            batch.mins *= wobble * (1 - noise)
            batch.maxs *= wobble * (1 + noise)
        store.write(meter, batch, float(t[-1] + 59))
        counters = batch.counters[-1]
        if day.day == 1 and day.month == 1:
            print(f"  {day.year - 1} written, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"synthesized {years} years in {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - cpu0:.0f} s CPU")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def timed(label: str, fn, runs: int = 7) -> None:
    fn()  # warm the page cache and the imports
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    print(f"{label}: median {statistics.median(times) * 1e3:.1f} ms "
          f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}, {runs} runs)")


def queries(path: str) -> None:
    store = HistoryStore.open(path, readonly=True)
    m = store.find_meter("bench")
    span = query.span(store, m)
    assert span is not None
    end = span[1] + 900
    year_end = datetime.fromtimestamp(end, store.tz).date()
    year_start = year_end - timedelta(days=365)
    print(f"store: {os.path.getsize(path) / 1e9:.3f} GB ({path}), "
          f"{datetime.fromtimestamp(span[0], store.tz):%Y-%m-%d} .. {year_end}")
    timed("daily energy of ct7 for a year",
          lambda: query.energy(store, m, "ct7", year_start, year_end))
    timed("1-year 1-minute trend of ct7 p_w -> 2000 points",
          lambda: query.trend(store, m, "ct7", "p_w", end - 365 * 86400, end, "1min", 2000))
    timed("15-minute demand of all CTs and Meters for a month",
          lambda: query.demand(store, m, None, end - 31 * 86400, end))
    timed("monthly maximum demand of meter2 for a year",
          lambda: query.max_demand(store, m, "meter2", year_start, year_end, "month"))
    store.close()


def writer_cost(path: str, seconds: int) -> None:
    """CPU a running meter spends on history: ``seconds`` seconds through a writer with its
    default one flush a minute (raw seconds included), per second of meter time."""
    store = HistoryStore.open(path, time_zone=ZONE)
    w = HistoryWriter(store, "cost")
    rng = np.random.default_rng(1)
    values = 1000 + rng.random((seconds, LAYOUT.n_channels))
    t0 = 1_800_000_000.0
    counters = np.zeros((32, 7))
    frames = []
    for s in range(seconds):
        counters = counters + 1.0
        frames.append(Frame(t0 + s, values[s], counters))
    cpu = time.process_time()
    for f in frames:
        w.add(f)
    w.close()
    used = time.process_time() - cpu
    print(f"writer: {seconds} s of a PM-4324A in {used:.2f} s CPU = {100 * used / seconds:.3f} % "
          f"of one core ({w.flushes} flushes)")
    store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="/tmp/pm4324-history-bench.db")
    p.add_argument("--years", type=int, default=10)
    p.add_argument("--queries-only", action="store_true")
    p.add_argument("--writer-seconds", type=int, default=3600)
    p.add_argument("--noise", type=float, default=0.0, help="relative rms noise on every value")
    args = p.parse_args()
    if not args.queries_only:
        for suffix in ("", "-wal", "-shm"):
            Path(args.store + suffix).unlink(missing_ok=True)
        synthesize(args.store, date(2016, 1, 1), args.years, args.noise)
    queries(args.store)
    cost = args.store + ".writer"
    for suffix in ("", "-wal", "-shm"):
        Path(cost + suffix).unlink(missing_ok=True)
    writer_cost(cost, args.writer_seconds)


if __name__ == "__main__":
    main()
