"""A history with known energies, for the history API, page and backfill tests.

Meter 1 of meter "site" draws 600 W, and 1,200 W from 08:00 to 12:00 Berlin time, from
2026-03-27 00:00 to 2026-03-31 00:00 local (DST starts on the 29th: a 23-hour day). CT 1
draws a third of it. The counters written are the cumulative sums of those minute energies,
so the expected kWh per day, the 15-minute demand and each day's maximum are closed-form.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from pm4324.history import HistoryStore
from pm4324.history.aggregate import batch_of_minutes
from pm4324.history.layout import ENERGY_ELEMENTS, REGISTERS

TZ = ZoneInfo("Europe/Berlin")
FIRST, LAST = date(2026, 3, 27), date(2026, 3, 30)
BASE_W, PEAK_W = 600.0, 1200.0
CT1_SHARE = 1 / 3
GAP = (datetime(2026, 3, 29, 23, 7, tzinfo=TZ).timestamp(),  # a hub missed these minutes
       datetime(2026, 3, 30, 0, 52, tzinfo=TZ).timestamp())
M1 = len(ENERGY_ELEMENTS) - 8  # meter1's row among the energy elements (after 24 CTs)


def midnight(d: date) -> float:
    return datetime.combine(d, time(0), TZ).timestamp()


def power_w(t: np.ndarray) -> np.ndarray:
    hours = np.array([datetime.fromtimestamp(int(x), TZ).hour for x in t])
    return np.where((hours >= 8) & (hours < 12), PEAK_W, BASE_W)


def day_wh(d: date) -> float:
    hours = (midnight(d + timedelta(days=1)) - midnight(d)) / 3600
    return BASE_W * hours + (PEAK_W - BASE_W) * 4


def minutes(skip_gap: bool = False) -> tuple[np.ndarray, dict, np.ndarray]:
    """Minute starts, values and Wh per minute; ``skip_gap``: as a hub that missed the gap
    has them, the gap's energy in the first minute after it (its counters' difference)."""
    t = np.arange(midnight(FIRST), midnight(LAST + timedelta(days=1)), 60, dtype=np.int64)
    p = power_w(t)
    n = len(t)
    meter_p = np.full((n, 8), np.nan)
    meter_p[:, 0] = p
    ct_p = np.full((n, 24), np.nan)
    ct_p[:, 0] = p * CT1_SHARE
    energy = np.zeros((n, len(ENERGY_ELEMENTS), len(REGISTERS)))
    energy[:, M1, 0] = p / 60.0  # Wh in each minute
    energy[:, 0, 0] = p * CT1_SHARE / 60.0
    energy[:, M1, 6] = p / 60.0  # VAh (PF 1)
    if skip_gap:
        keep = (t + 60 <= GAP[0]) | (t >= GAP[1])
        after = int(np.argmax(t >= GAP[1]))
        energy[after] += energy[~keep].sum(axis=0)
        t, meter_p, ct_p, energy = t[keep], meter_p[keep], ct_p[keep], energy[keep]
    return t, {"meter": {"p_w": meter_p}, "ct": {"p_w": ct_p}}, energy


def write_site(path: str, key: str = "site", skip_gap: bool = False) -> HistoryStore:
    """The store (open for writing) with meter ``key``'s four days."""
    store = HistoryStore.open(path, time_zone="Europe/Berlin")
    meter = store.meter_id(key, "PM-4324A", {"meters": {"1": "Main board"}, "cts": {"1": "Lighting"}})
    t, values, energy = minutes(skip_gap)
    per_day = 1440
    start = None
    for a in range(0, len(t), per_day):  # a day per transaction, as `history synth` writes
        part = {kind: {q: v[a:a + per_day] for q, v in qs.items()} for kind, qs in values.items()}
        batch = batch_of_minutes(t[a:a + per_day], part, energy[a:a + per_day], start)
        store.write(meter, batch, float(t[a:a + per_day][-1] + 59))
        start = batch.counters[-1]
    if skip_gap:
        store.write(meter, None, None, gaps=[(GAP[0] - 1, GAP[1], "offline")])
    return store
