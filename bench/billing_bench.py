"""Billing benchmark: 24 tenants (one CT each, TOU + demand + reactive tariff, a common area)
billed from a year of 1-minute history of one PM-4324A (the built-in building's exact truth).

    .venv/bin/python bench/billing_bench.py --store /tmp/bill-year.sqlite

The store is synthesized on the first run (a few minutes) and reused after. Targets
(docs/benchmarks.md): one month of 24 tenants <= 5 s, a year (12 monthly runs) <= 30 s,
both including every tenant's PDF, CSV and JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import numpy as np

from pm4324.billing.bill import run_billing
from pm4324.billing.config import load_building
from pm4324.cli.bill_cmd import write_files
from pm4324.config.settings_parse import load_settings
from pm4324.history import HistoryStore
from pm4324.history.aggregate import batch_of_minutes
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.truth import Truth

SETTINGS = Path(__file__).resolve().parents[1] / "src" / "pm4324" / "data" / "building-settings.toml"
ZONE = "Europe/Berlin"
YEAR = 2026

TENANTS = """
[building]
name = "Benchmark building"
time_zone = "Europe/Berlin"
main = [{main}]

[tariffs.t]
currency = "EUR"
energy = "tou"
prices = {{ peak = "0.3120", offpeak = "0.2240" }}
default_period = "offpeak"
windows = [{{ period = "peak", days = "weekday", from = "08:00", to = "20:00" }}]
demand = {{ price_per_kw = "11.40", periods = ["peak"] }}
reactive = {{ price_per_kvarh = "0.0150", pf_threshold = 0.9 }}
fixed = [{{ name = "Metering service", amount = "6.50" }}]
taxes = [{{ name = "VAT 19 %", rate = "0.19" }}]
{tenants}
[[common]]
name = "Services"
circuits = ["bench:meter1"]
split = "consumption"
"""


def synthesize(path: str) -> None:
    store = HistoryStore.open(path, time_zone=ZONE)
    tz = store.tz
    settings = load_settings(SETTINGS)
    meter = store.meter_id("bench", settings.model)
    day, last = date(YEAR, 1, 1), date(YEAR + 1, 1, 1)
    truth = Truth(load_scenario(None), settings, ZONE, datetime.combine(day, dtime(0), tz).timestamp())
    counters = None
    while day < last:
        lo = datetime.combine(day, dtime(0), tz).timestamp()
        day += timedelta(days=1)
        t = np.arange(lo, datetime.combine(day, dtime(0), tz).timestamp(), 60, dtype=np.int64)
        m = truth.minutes(t)
        energy = np.concatenate([m.ct_energy, m.meter_energy], axis=1)
        batch = batch_of_minutes(t, {"ct": m.ct, "meter": m.meter, "main": m.main}, energy, counters)
        store.write(meter, batch, float(t[-1] + 59))
        counters = batch.counters[-1]
    store.close()


def tenants_file(folder: Path) -> Path:
    blocks = "".join(f'\n[[tenants]]\nid = "t{k:02d}"\nname = "Tenant {k}"\ntariff = "t"\n'
                     f'area_m2 = {40 + k}\ncircuits = ["bench:ct{k}"]\n' for k in range(1, 25))
    main = ", ".join(f'"bench:meter{m}"' for m in range(1, 9))
    path = folder / "tenants.toml"
    path.write_text(TENANTS.format(main=main, tenants=blocks))
    return path


def bill(store: HistoryStore, tenants: Path, out: Path, months: list[str]) -> tuple[float, ...]:
    """Seconds, wall and CPU: computing the invoices only, and with writing PDF/CSV/JSON."""
    building = load_building(tenants)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = [run_billing(building, store, period) for period in months]
    wall1, cpu1 = time.perf_counter(), time.process_time()
    for period, result in zip(months, results):
        (out / period).mkdir(parents=True)
        write_files(result, out / period, True, None)
    wall2, cpu2 = time.perf_counter(), time.process_time()
    return wall1 - wall0, cpu1 - cpu0, wall2 - wall0, cpu2 - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="/tmp/pm4324-bill-year.sqlite")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not Path(args.store).exists():
        t0 = time.perf_counter()
        synthesize(args.store)
        print(f"synthesized {YEAR} in {time.perf_counter() - t0:.0f} s -> {args.store}")
    store = HistoryStore.open(args.store, readonly=True)
    months = [f"{YEAR}-{m:02d}" for m in range(1, 13)]
    with tempfile.TemporaryDirectory() as tmp:
        tenants = tenants_file(Path(tmp))
        for run in range(args.runs):
            out = Path(tmp) / f"run{run}"
            for what, periods in (("one month (2026-10)", ["2026-10"]), ("a year (12 months)", months)):
                w, c, wf, cf = bill(store, tenants, out / what[:5], periods)
                print(f"run {run + 1}: {what}: computing {w:.2f} s wall ({c:.2f} s CPU); with every "
                      f"PDF+CSV+JSON {wf:.2f} s wall ({cf:.2f} s CPU)", flush=True)
    store.close()


if __name__ == "__main__":
    main()
