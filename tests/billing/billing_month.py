"""Helpers of the billing tests: a month (October 2026, Europe/Berlin: 745 hours) of the test
building's exact truth in a history store, with a gap and a counter reset stored the way the
history writer stores them, and the same truth per minute for the tests' expected invoices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from pm4324.config.settings_parse import load_settings
from pm4324.history import HistoryStore
from pm4324.history.aggregate import CounterEvent, batch_of_minutes
from pm4324.history.layout import ENERGY_ELEMENTS
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.truth import Truth

HERE = Path(__file__).parent
TZ = ZoneInfo("Europe/Berlin")
FIRST, LAST = date(2026, 10, 1), date(2026, 10, 31)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()


GAP = (local(2026, 10, 7, 13, 7), local(2026, 10, 7, 15, 22))  # minutes [lo, hi) missing
RESET = local(2026, 10, 20, 9, 0)  # `reset-energy`: every counter restarts from zero


@dataclass
class Month:
    store_path: str
    t: np.ndarray  # every minute of the month
    ct: np.ndarray  # (n, 24, 7) Wh in each minute (truth)
    meter: np.ndarray  # (n, 8, 7)


def _write(store: HistoryStore, truth: Truth) -> None:
    meter = store.meter_id("test", "PM-4324A", {"meters": {"2": "Corner Shop"}})
    counters = None
    day = FIRST
    while day <= LAST:
        lo = datetime.combine(day, time(0), TZ).timestamp()
        day += timedelta(days=1)
        t = np.arange(lo, datetime.combine(day, time(0), TZ).timestamp(), 60, dtype=np.int64)
        m = truth.minutes(t)
        energy = np.concatenate([m.ct_energy, m.meter_energy], axis=1)
        values = {"ct": m.ct, "meter": m.meter, "main": m.main}
        parts, events, gaps = [np.ones(len(t), dtype=bool)], [], []
        if t[0] <= GAP[0] < t[-1]:
            # what the writer stores: no minutes in the gap, its energy in the first minute after
            keep = (t < GAP[0]) | (t >= GAP[1])
            after = int(np.searchsorted(t, GAP[1]))
            energy[after] += energy[~keep].sum(axis=0)
            values = {k: {q: x[keep] for q, x in v.items()} for k, v in values.items()}
            t, energy = t[keep], energy[keep]
            gaps = [(GAP[0] - 1, GAP[1], "test gap")]
            parts = [np.ones(len(t), dtype=bool)]
        if t[0] <= RESET < t[-1]:
            parts = [t < RESET, t >= RESET]
        for n, part in enumerate(parts):
            sub = {k: {q: x[part] for q, x in v.items()} for k, v in values.items()}
            start = None if n == 1 else counters
            batch = batch_of_minutes(t[part], sub, energy[part], start)
            if n == 1:
                events = [CounterEvent(RESET, "reset", e.key, "wh_import", float(counters[k, 0]),
                                       float(batch.counters[0, k, 0])) for k, e in enumerate(ENERGY_ELEMENTS)]
            store.write(meter, batch, float(t[part][-1] + 59), events=events, gaps=gaps if n == 0 else ())
            counters = batch.counters[-1]


def write_month(path: str) -> Month:
    """The history at ``path`` and the truth per minute."""
    scenario = load_scenario(str(HERE / "scenario.toml"))
    settings = load_settings(str(resources.files("pm4324") / "data" / "building-settings.toml"))
    start = datetime.combine(FIRST, time(0), TZ).timestamp()
    truth = Truth(scenario, settings, "Europe/Berlin", start)
    store = HistoryStore.open(path, time_zone="Europe/Berlin")
    _write(store, truth)
    store.close()
    t = np.arange(start, local(2026, 11, 1), 60, dtype=np.int64)
    m = truth.minutes(t)
    return Month(path, t, m.ct_energy, m.meter_energy)
