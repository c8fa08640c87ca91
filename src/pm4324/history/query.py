"""Reading the history: trends at a chosen resolution, downsampled server-side; daily and
monthly energy per register; 15-minute demand and its daily/monthly maxima; gaps; events.

Times are Unix seconds (a trend point's time is the start of its bucket); dates are ISO
local dates in the store's time zone (``store.time_zone``); energies are Wh / varh / VAh.
Every function takes the store and a meter id (``store.find_meter(key)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from pm4324.history.codec import unpack
from pm4324.history.layout import (
    ENERGY_ELEMENTS,
    LAYOUT,
    QUANTITIES,
    REGISTERS,
    parse_element,
)
from pm4324.history.store import DAY_S, INTERVAL_S, HistoryError, HistoryStore, local_dates

RESOLUTIONS = {"raw": 1, "1min": 60, "15min": INTERVAL_S}
_E_INDEX = {e.key: n for n, e in enumerate(ENERGY_ELEMENTS)}


@dataclass(frozen=True)
class Trend:
    """One quantity over time: bucket starts and mean/min/max per bucket (NaN = no data)."""

    element: str
    quantity: str
    resolution: str  # the stored resolution read ("raw", "1min", "15min")
    t: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


def choose_resolution(start: float, end: float, element: str, quantity: str) -> str:
    """raw up to 3 h, 1-minute up to 31 days (if kept per minute), else 15-minute."""
    span = end - start
    if span <= 3 * 3600:
        return "raw" if (element, quantity) in LAYOUT.raw_index else "15min"
    if span <= 31 * DAY_S and (element, quantity, "mean") in LAYOUT.minute_series:
        return "1min"
    return "15min"


def trend(store: HistoryStore, meter: int, element: str, quantity: str, start: float, end: float,
          resolution: str = "auto", max_points: int | None = 2000) -> Trend:
    """``quantity`` of ``element`` ("ct7", "meter2", "main1") in [start, end)."""
    e = parse_element(element)
    if quantity not in QUANTITIES[e.kind]:
        raise HistoryError(f"{quantity!r}: a {e.kind} has " + ", ".join(QUANTITIES[e.kind]))
    if resolution == "auto":
        resolution = choose_resolution(start, end, e.key, quantity)
    if resolution not in RESOLUTIONS:
        raise HistoryError(f"resolution {resolution!r}: use auto, " + ", ".join(RESOLUTIONS))
    read = {"raw": _raw, "1min": _minutes, "15min": _intervals}[resolution]
    t, mean, lo, hi = read(store, meter, e.key, quantity, start, end)
    if max_points and len(t) > max_points:
        t, mean, lo, hi = downsample(t, mean, lo, hi, start, end, max_points)
    return Trend(e.key, quantity, resolution, t, mean, lo, hi)


def downsample(t: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, start: float,
               end: float, n: int) -> tuple[np.ndarray, ...]:
    """``n`` equal buckets: mean of the means, min of the minima, max of the maxima (points
    sorted by time, as every reader returns them)."""
    edges = np.linspace(start, end, n + 1)
    firsts = np.searchsorted(t, edges[:-1])
    lasts = np.searchsorted(t, edges[1:])
    full = lasts > firsts
    means, mins, maxs = (np.full(n, np.nan) for _ in range(3))
    if full.any():
        at = firsts[full]
        ok = np.isfinite(mean)
        sums = np.add.reduceat(np.where(ok, mean, 0.0), at)
        counts = np.add.reduceat(ok.astype(int), at)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[full] = sums / counts
        mins[full] = np.fmin.reduceat(lo, at)
        maxs[full] = np.fmax.reduceat(hi, at)
    return edges[:-1], means, mins, maxs


def _raw(store, meter, element, quantity, start, end):
    col = LAYOUT.raw_index.get((element, quantity))
    if col is None:
        raise HistoryError(f"{element} {quantity} is not kept per second (raw keeps P, Q, S, I "
                           "and the phase voltages)")
    db = store.db
    rows = db.execute(f"SELECT t, data FROM {db.t('raw')} WHERE meter = ? AND t >= ? AND t < ?"
                      " ORDER BY t", (meter, int(start // 60 * 60), end))
    ts, vs = [], []
    for t0, data in rows:
        table = unpack(bytes(data))
        ts.append(t0 + table[:, 0].astype(float))
        vs.append(table[:, 1 + col].astype(float))
    t = np.concatenate(ts) if ts else np.zeros(0)
    v = np.concatenate(vs) if vs else np.zeros(0)
    keep = (t >= start) & (t < end)
    return t[keep], v[keep], v[keep], v[keep]


def _minutes(store, meter, element, quantity, start, end):
    key = f"{element}.{quantity}"
    stats = LAYOUT.blocks.get(key)
    if stats is None:
        raise HistoryError(f"{element} {quantity} is kept at 15-minute resolution only")
    pick = [stats.index(st) if st in stats else stats.index("mean") for st in ("mean", "min", "max")]
    db = store.db
    first_day, last_day = int(start // DAY_S), int((end - 1) // DAY_S)
    rows = db.execute(f"SELECT day, data FROM {db.t('minute_block')} WHERE meter = ? AND element = ?"
                      " AND day >= ? AND day <= ? ORDER BY day", (meter, key, first_day, last_day))
    ts, vals = [], []
    minute = np.arange(1440) * 60
    for day, data in rows:
        ts.append(day * DAY_S + minute)
        vals.append(unpack(bytes(data))[pick])
    recent = db.execute(f"SELECT t, data FROM {db.t('minute_recent')} WHERE meter = ? AND t >= ?"
                        " AND t < ? ORDER BY t", (meter, int(start), end))
    if recent:
        ts.append(np.array([r[0] for r in recent]))
        vec = np.stack([np.frombuffer(r[1], "<f4") for r in recent])
        vals.append(vec[:, [LAYOUT.block_rows[key][k] for k in pick]].T)
    if not ts:
        return (np.zeros(0),) * 4
    t = np.concatenate(ts).astype(float)
    v = np.concatenate(vals, axis=1).astype(float)
    keep = (t >= start) & (t < end) & np.isfinite(v[0])
    return t[keep], v[0, keep], v[1, keep], v[2, keep]


def _intervals(store, meter, element, quantity, start, end):
    ch = LAYOUT.channels[(element, quantity)]
    db = store.db
    rows = db.execute(f"SELECT t, agg FROM {db.t('interval')} WHERE meter = ? AND t >= ? AND t < ?"
                      " ORDER BY t", (meter, int(start // INTERVAL_S * INTERVAL_S), end))
    t = np.array([r[0] for r in rows], dtype=float)
    v = np.array([unpack(bytes(r[1]))[:, ch] for r in rows], dtype=float).reshape(-1, 3)
    keep = (t >= start) & np.isfinite(v[:, 0])
    return t[keep], v[keep, 0], v[keep, 1], v[keep, 2]


# -- energy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyRow:
    """Energy of one element in one local day or month, per register (Wh/varh/VAh)."""

    period: str  # "2026-03-29" or "2026-03"
    energy: dict[str, float]
    first: dict[str, float]  # register values at the start (NaN before the first reading)
    last: dict[str, float]
    seconds: int  # seconds with a reading (a whole day is 86,400 except on DST days)


def energy(store: HistoryStore, meter: int, element: str, first: date, last: date,
           period: str = "day") -> list[EnergyRow]:
    """Daily (or monthly) energy of a CT or Meter for local dates first..last inclusive."""
    e = parse_element(element)
    if e.key not in _E_INDEX:
        raise HistoryError(f"{element}: only CTs and Meters have energy registers")
    k = _E_INDEX[e.key]
    db = store.db
    rows = db.execute(f"SELECT date, seconds, energy FROM {db.t('day')} WHERE meter = ? AND"
                      " date >= ? AND date <= ? ORDER BY date", (meter, first.isoformat(),
                                                                  last.isoformat()))
    out: list[EnergyRow] = []
    for d, seconds, blob in rows:
        a = np.frombuffer(bytes(blob), "<f8").reshape(3, len(ENERGY_ELEMENTS), len(REGISTERS))[:, k]
        label = d if period == "day" else d[:7]
        if out and out[-1].period == label:
            prev = out[-1]
            out[-1] = EnergyRow(label, {r: prev.energy[r] + float(a[0, j]) for j, r in enumerate(REGISTERS)},
                                prev.first, _regs(a[2]), prev.seconds + seconds)
        else:
            out.append(EnergyRow(label, _regs(a[0]), _regs(a[1]), _regs(a[2]), seconds))
    return out


def _regs(a: np.ndarray) -> dict[str, float]:
    return {r: float(a[j]) for j, r in enumerate(REGISTERS)}


# -- demand ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    """15-minute block demand: mean kW (import), kvar (QI + QII) and kVA per interval."""

    elements: tuple[str, ...]
    t: np.ndarray  # (n,) interval starts
    seconds: np.ndarray  # (n,) seconds with a reading (900 = complete)
    kw: np.ndarray  # (n, elements)
    kvar: np.ndarray
    kva: np.ndarray


def demand(store: HistoryStore, meter: int, elements: list[str] | None, start: float,
           end: float) -> Demand:
    """Demand of the given CTs/Meters (all 32 when None) in [start, end)."""
    keys = [parse_element(x).key for x in elements] if elements else [e.key for e in ENERGY_ELEMENTS]
    bad = [x for x in keys if x not in _E_INDEX]
    if bad:
        raise HistoryError(f"{bad[0]}: only CTs and Meters have demand")
    idx = [_E_INDEX[x] for x in keys]
    db = store.db
    rows = db.execute(f"SELECT t, seconds, demand FROM {db.t('interval')} WHERE meter = ? AND t >= ?"
                      " AND t < ? ORDER BY t", (meter, int(start // INTERVAL_S * INTERVAL_S), end))
    n = len(rows)
    deltas = np.frombuffer(b"".join(bytes(r[2]) for r in rows), "<f4").reshape(
        n, len(ENERGY_ELEMENTS), len(REGISTERS))[:, idx].astype(float)
    hours = INTERVAL_S / 3600.0
    reg = {r: j for j, r in enumerate(REGISTERS)}
    return Demand(tuple(keys), np.array([r[0] for r in rows], dtype=float),
                  np.array([r[1] for r in rows], dtype=int),
                  deltas[:, :, reg["wh_import"]] / 1000 / hours,
                  (deltas[:, :, reg["varh_q1"]] + deltas[:, :, reg["varh_q2"]]) / 1000 / hours,
                  deltas[:, :, reg["vah"]] / 1000 / hours)


@dataclass(frozen=True)
class MaxDemand:
    period: str  # local date or month
    kw: float
    at: float  # start of the interval with the maximum (Unix seconds)


def max_demand(store: HistoryStore, meter: int, element: str, first: date, last: date,
               period: str = "day") -> list[MaxDemand]:
    """Each local day's (or month's) maximum 15-minute kW demand and when it started."""
    start, end = local_midnight(store, first), local_midnight(store, last + timedelta(days=1))
    d = demand(store, meter, [element], start, end)
    if not len(d.t):
        return []
    labels = local_dates(d.t.astype(np.int64), store.tz)
    if period == "month":
        labels = np.array([x[:7] for x in labels])
    out = []
    for label in dict.fromkeys(labels.tolist()):
        pick = np.flatnonzero(labels == label)
        j = pick[np.argmax(d.kw[pick, 0])]
        out.append(MaxDemand(label, float(d.kw[j, 0]), float(d.t[j])))
    return out


def local_midnight(store: HistoryStore, day: date) -> float:
    from datetime import datetime, time

    return datetime.combine(day, time(0), store.tz).timestamp()


# -- gaps and events ---------------------------------------------------------------------------


def gaps(store: HistoryStore, meter: int, start: float, end: float) -> list[tuple[float, float, str]]:
    db = store.db
    return [tuple(r) for r in db.execute(
        f"SELECT start_t, end_t, reason FROM {db.t('gap')} WHERE meter = ? AND end_t > ? AND"
        " start_t < ? ORDER BY start_t", (meter, start, end))]


def events(store: HistoryStore, meter: int, start: float, end: float) -> list[tuple[float, str, str]]:
    db = store.db
    return [tuple(r) for r in db.execute(
        f"SELECT t, kind, text FROM {db.t('event')} WHERE meter = ? AND t >= ? AND t < ?"
        " ORDER BY t", (meter, start, end))]


def span(store: HistoryStore, meter: int | None = None) -> tuple[float, float] | None:
    """First and last interval start held (None when empty)."""
    db = store.db
    where, args = ("WHERE meter = ?", (meter,)) if meter is not None else ("", ())
    lo, hi = db.execute(f"SELECT MIN(t), MAX(t) FROM {db.t('interval')} {where}", args)[0]
    return None if lo is None else (float(lo), float(hi))


# -- whole rows, for exports -------------------------------------------------------------------


def interval_rows(store: HistoryStore, meter: int, start: float, end: float):
    """Each 15-minute interval in [start, end): (t, seconds, stats (3, channels) mean/min/max,
    energy (3, 32, 7): energy in it, register values at its start and at its end)."""
    db = store.db
    for t, seconds, agg, energy_blob in db.execute(
            f"SELECT t, seconds, agg, energy FROM {db.t('interval')} WHERE meter = ? AND t >= ? AND"
            " t < ? ORDER BY t", (meter, int(start), end)):
        e = unpack(bytes(energy_blob)).reshape(3, len(ENERGY_ELEMENTS), len(REGISTERS))
        yield int(t), int(seconds), unpack(bytes(agg)), e


def minute_rows(store: HistoryStore, meter: int, start: float, end: float):
    """Each stored minute in [start, end): (t, {element: {(quantity, stat): value}})."""
    grids: dict[int, np.ndarray] = {}
    db = store.db
    for key, data_rows in LAYOUT.block_rows.items():
        for day, data in db.execute(
                f"SELECT day, data FROM {db.t('minute_block')} WHERE meter = ? AND element = ? AND"
                " day >= ? AND day <= ?", (meter, key, int(start // DAY_S), int((end - 1) // DAY_S))):
            grid = grids.setdefault(day, np.full((LAYOUT.n_minute, 1440), np.nan, dtype="<f4"))
            grid[data_rows] = unpack(bytes(data))
    for t, data in db.execute(f"SELECT t, data FROM {db.t('minute_recent')} WHERE meter = ? AND"
                              " t >= ? AND t < ?", (meter, int(start), end)):
        grid = grids.setdefault(t // DAY_S, np.full((LAYOUT.n_minute, 1440), np.nan, dtype="<f4"))
        grid[:, (t % DAY_S) // 60] = np.frombuffer(data, "<f4")
    keys = list(LAYOUT.minute_series)
    for day in sorted(grids):
        grid = grids[day]
        for col in np.flatnonzero(~np.isnan(grid).all(axis=0)):
            t = day * DAY_S + int(col) * 60
            if start <= t < end:
                values: dict[str, dict] = {}
                for n, (e, q, st) in enumerate(keys):
                    values.setdefault(e, {})[(q, st)] = float(grid[n, col])
                yield t, values
