"""The history API (/api/history/...): trends, energy per day and month, 15-minute demand and
its maxima, gaps, events, today's energy, and the backfill a hub fetches after an outage.

It reads the store through a connection of its own (``WebHistory``), one query at a time,
so the meter's or hub's writer thread keeps its connection to itself. A meter that has no
history yet (a fresh meter, history switched off, a hub's meter never reached) answers 200
with empty values: every page loads before the first minute is stored.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from pm4324.history import HistoryError, HistoryStore, query
from pm4324.history.aggregate import Counters
from pm4324.history.fill import export
from pm4324.history.layout import (
    ENERGY_ELEMENTS,
    LAYOUT,
    QUANTITIES,
    REGISTERS,
    frame_from_snapshot,
    parse_element,
)
from pm4324.history.names import label, names_of
from pm4324.history.store import DAY_S
from pm4324.web import history_models as hm
from pm4324.web.models import Error

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Error} for code in (404, 422)}
MAX_POINTS = 10_000
RAW_SPAN_S = 7 * DAY_S  # raw seconds are kept a week: a longer raw trend is a mistake
BACKFILL_SPAN_S = 6 * 3600  # one backfill answer: a hub pages through a longer outage
FIRST_DATE, LAST_DATE = date(1970, 1, 2), date(2200, 12, 31)
Device = Annotated[str | None, Query(max_length=100, description="which meter (its key in a hub); "
                                     "default: this server's own or first meter")]
CTS = "ct([1-9]|1[0-9]|2[0-4])"
Element = Annotated[str, Query(pattern=f"^({CTS}|meter[1-8]|main[12])$",
                               description="ct1..ct24, meter1..meter8, main1..main2")]
EnergyElement = Annotated[str, Query(pattern=f"^({CTS}|meter[1-8])$",
                                     description="ct1..ct24 or meter1..meter8")]
Quantity = Literal[tuple(dict.fromkeys(q for qs in QUANTITIES.values() for q in qs))]  # type: ignore[valid-type]
Time = Annotated[float | None, Query(ge=0, le=7e9, description="Unix seconds")]
Day = Annotated[date | None, Query(description="local date (ISO); default: see the summary")]
Period = Annotated[str, Query(pattern="^(day|month)$")]
UNITS = {"v": "V", "i_rms": "A", "p_w": "W", "q_var": "var", "s_va": "VA", "pf": "",
         "frequency_hz": "Hz", "thd": "%"}


def unit(quantity: str) -> str:
    if quantity.startswith(("v_", "thd")):
        return "%" if "thd" in quantity else "V"
    return UNITS.get(quantity, "")


class WebHistory:
    """The web's own read connection to a history store (None: no history kept)."""

    def __init__(self, store: HistoryStore | None):
        self.store = store
        self.lock = threading.Lock()
        self._ids: dict[str, int] = {}

    def meter(self, key: str) -> int | None:
        """The store's id of meter ``key``; None while it has no history."""
        if self.store is None:
            return None
        if key not in self._ids:
            with self.lock:
                found = {m["key"]: m["id"] for m in self.store.meters()}
            if key not in found:
                return None
            self._ids[key] = found[key]
        return self._ids[key]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _numbers(a: np.ndarray) -> list[float | None]:
    return [float(x) if math.isfinite(x) else None for x in a.tolist()]


def _element(text: str, energy: bool = False) -> str:
    try:
        e = parse_element(text)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if energy and e.kind == "main":
        raise HTTPException(422, f"{text}: only CTs and Meters have energy registers")
    return e.key


def _dates(first: date | None, last: date | None, today: date, default_days: int) -> tuple[date, date]:
    last = last or today
    if not FIRST_DATE <= last <= LAST_DATE:
        raise HTTPException(422, f"dates from {FIRST_DATE} to {LAST_DATE}")
    first = first or max(FIRST_DATE, last - timedelta(days=default_days - 1))
    if not FIRST_DATE <= first <= LAST_DATE:
        raise HTTPException(422, f"dates from {FIRST_DATE} to {LAST_DATE}")
    if first > last:
        raise HTTPException(422, f"first ({first}) is after last ({last})")
    return first, last


def _period_dates(period: str, first: date | None, last: date | None, today: date
                  ) -> tuple[date, date]:
    """The days of a per-day or per-month query; by default the last 31 days, or the last 12
    months (from the first of the month eleven months back)."""
    if period == "month":
        first = first or (today.replace(day=1) - timedelta(days=335)).replace(day=1)
    return _dates(first, last, today, 31)


def history_router(service: Any, hist: WebHistory) -> APIRouter:
    """``service`` is the API's Service: the fleet's keys, live snapshots and names."""
    api = APIRouter(prefix="/api/history", responses=ERRORS, tags=["history"])

    def key_of(device: str | None) -> str:
        key = device or service.primary
        if service.fleet.get(key) is None:
            raise HTTPException(404, f"no meter {key!r} here (see /api/fleet)")
        return key

    def live(key: str):
        member = service.fleet.get(key)
        return member.snapshot if member is not None else None

    def names(key: str, meter: int | None) -> dict:
        snap = live(key)
        if snap is not None:
            return names_of(snap.settings)
        if meter is not None and hist.store is not None:
            with hist.lock:
                meters = hist.store.meters()
            return next((m["names"] for m in meters if m["id"] == meter), {})
        return {}

    def newest(key: str, meter: int | None) -> float:
        """The newest second known: the live one, else the last stored, else the clock."""
        snap = live(key)
        if snap is not None and snap.time > 0:
            return float(snap.time)
        if meter is not None:
            with hist.lock:
                state = hist.store.load_state(meter)
            if state.last_time:
                return float(state.last_time)
        return time.time()

    def today(key: str, meter: int | None) -> date:
        tz = hist.store.tz if hist.store is not None else None
        return datetime.fromtimestamp(newest(key, meter), tz).date()

    def window(key: str, meter: int | None, start: float | None, end: float | None,
               default_s: float) -> tuple[float, float]:
        end = end if end is not None else newest(key, meter) + 1
        start = start if start is not None else max(0.0, end - default_s)
        if end <= start:
            raise HTTPException(422, f"end ({end:g}) must be after start ({start:g})")
        return start, end

    def run(fn, *args):
        """One query on the web's connection; a refusal of the store is a 422 with its reason."""
        try:
            with hist.lock:
                return fn(hist.store, *args)
        except HistoryError as exc:
            raise HTTPException(422, str(exc)) from None

    @api.get("/span", summary="What the history holds for a meter: first and last interval, zone")
    def span(device: Device = None) -> hm.Span:
        key = key_of(device)
        meter = hist.meter(key)
        held = run(query.span, meter) if meter is not None else None
        labels = names(key, meter)
        return hm.Span(device=key, enabled=hist.store is not None,
                       time_zone=hist.store.time_zone if hist.store is not None else None,
                       first=held[0] if held else None, last=held[1] if held else None,
                       today=today(key, meter).isoformat(),
                       labels=[hm.Label(element=e.key, label=label(labels, e.key)) for e in ENERGY_ELEMENTS])

    @api.get("/trend", summary="One quantity over time, downsampled on the server (default: the "
             "last 24 h; resolution auto = raw up to 3 h, else 1 min where the quantity is kept per "
             "minute, else 15 min)")
    def trend(element: Element,
              quantity: Annotated[Quantity, Query(description="of the element's kind")] = "p_w",
              start: Time = None, end: Time = None,
              resolution: Annotated[str, Query(pattern="^(auto|raw|1min|15min)$")] = "auto",
              points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 2000,
              device: Device = None) -> hm.Trend:
        key, e = key_of(device), _element(element)
        kind = e.rstrip("0123456789")
        if quantity not in QUANTITIES[kind]:
            raise HTTPException(422, f"{quantity!r}: a {kind} has " + ", ".join(QUANTITIES[kind]))
        meter = hist.meter(key)
        start, end = window(key, meter, start, end, DAY_S)
        if resolution == "raw" and end - start > RAW_SPAN_S:
            raise HTTPException(422, "raw seconds are kept 7 days: ask 1min or 15min for a longer span")
        name = label(names(key, meter), e)
        if meter is None:
            return hm.Trend(element=e, label=name, quantity=quantity, unit=unit(quantity),
                            resolution="", start=start, end=end, t=[], mean=[], min=[], max=[])
        per_minute = (e, quantity, "mean") in LAYOUT.minute_series
        if resolution == "auto" and end - start > 31 * DAY_S and per_minute:
            # the 1-minute blocks hold one quantity each: a year of them reads in ~60 ms, the
            # 15-minute rows (every channel in each) in ~1 s (docs/benchmarks.md)
            resolution = "1min"
        got = run(query.trend, meter, e, quantity, start, end, resolution, points)
        return hm.Trend(element=e, label=name, quantity=quantity, unit=unit(quantity),
                        resolution=got.resolution, start=start, end=end, t=got.t.tolist(),
                        mean=_numbers(got.mean), min=_numbers(got.min), max=_numbers(got.max))

    @api.get("/energy", summary="Energy per local day or month of a CT or Meter (Wh, varh, VAh; "
             "default: the last 31 days, or the last 12 months)")
    def energy(element: EnergyElement, period: Period = "day", first: Day = None, last: Day = None,
               device: Device = None) -> hm.Energy:
        key, e = key_of(device), _element(element, energy=True)
        meter = hist.meter(key)
        now = today(key, meter)
        first, last = _period_dates(period, first, last, now)
        rows = run(query.energy, meter, e, first, last, period) if meter is not None else []
        return hm.Energy(element=e, label=label(names(key, meter), e), period=period,
                         units=hm.ENERGY_UNITS,
                         rows=[hm.EnergyRow(period=r.period, seconds=int(r.seconds),
                                            energy={k: v for k, v in r.energy.items() if math.isfinite(v)})
                               for r in rows])

    @api.get("/demand", summary="15-minute demand of a CT or Meter and the range's maximum "
             "(default: the last 24 h)")
    def demand(element: EnergyElement, start: Time = None, end: Time = None,
               device: Device = None) -> hm.Demand:
        key, e = key_of(device), _element(element, energy=True)
        meter = hist.meter(key)
        start, end = window(key, meter, start, end, DAY_S)
        if end - start > 400 * DAY_S:
            raise HTTPException(422, "at most 400 days of 15-minute demand at once")
        name = label(names(key, meter), e)
        if meter is None:
            return hm.Demand(element=e, label=name, t=[], seconds=[], kw=[], kvar=[], kva=[], max=None)
        d = run(query.demand, meter, [e], start, end)
        kw, kvar, kva = (np.nan_to_num(x[:, 0]).tolist() for x in (d.kw, d.kvar, d.kva))
        peak = None
        if len(d.t):
            j = int(np.argmax(d.kw[:, 0]))
            peak = hm.Peak(period="", kw=kw[j], at=float(d.t[j]))
        return hm.Demand(element=e, label=name, t=d.t.tolist(), seconds=d.seconds.tolist(),
                         kw=kw, kvar=kvar, kva=kva, max=peak)

    @api.get("/max-demand", summary="Each local day's or month's maximum 15-minute kW demand and "
             "when it started (default: the last 31 days, or the last 12 months)")
    def max_demand(element: EnergyElement, period: Period = "day", first: Day = None,
                   last: Day = None, device: Device = None) -> hm.MaxDemand:
        key, e = key_of(device), _element(element, energy=True)
        meter = hist.meter(key)
        now = today(key, meter)
        first, last = _period_dates(period, first, last, now)
        if (last - first).days > 4000:
            raise HTTPException(422, "at most 4000 days at once")
        rows = run(query.max_demand, meter, e, first, last, period) if meter is not None else []
        return hm.MaxDemand(element=e, label=label(names(key, meter), e), period=period,
                            rows=[hm.Peak(period=r.period, kw=r.kw if math.isfinite(r.kw) else 0.0,
                                          at=r.at) for r in rows])

    @api.get("/gaps", summary="Stretches without readings (restarts, an unreachable meter); "
             "default: the last 31 days")
    def gaps(start: Time = None, end: Time = None, device: Device = None) -> list[hm.Gap]:
        key = key_of(device)
        meter = hist.meter(key)
        start, end = window(key, meter, start, end, 31 * DAY_S)
        if meter is None:
            return []
        return [hm.Gap(start=a, end=b, reason=r) for a, b, r in run(query.gaps, meter, start, end)]

    @api.get("/gap-summary", summary="Every meter's gaps in the last `days` days before its "
             "newest second: how many, how long, and how many were backfilled")
    def gap_summary(days: Annotated[int, Query(ge=1, le=3660)] = 7) -> list[hm.GapSummary]:
        out = []
        for key in service.fleet.keys:
            meter = hist.meter(key)
            rows = []
            if meter is not None:
                end = newest(key, meter) + 1
                rows = run(query.gaps, meter, end - days * DAY_S, end)
            open_ = [(a, b) for a, b, reason in rows if "backfilled" not in reason]
            out.append(hm.GapSummary(device=key, gaps=len(open_), missing_s=sum(b - a for a, b in open_),
                                     backfilled=len(rows) - len(open_),
                                     last_end=max((b for _, b, _ in rows), default=None)))
        return out

    @api.get("/events", summary="Events the history keeps (energy resets with the value before, "
             "rollovers, offline/online); default: the last 31 days")
    def events(start: Time = None, end: Time = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
               device: Device = None) -> list[hm.HistoryEvent]:
        key = key_of(device)
        meter = hist.meter(key)
        start, end = window(key, meter, start, end, 31 * DAY_S)
        if meter is None:
            return []
        rows = run(query.events, meter, start, end)[-limit:]
        return [hm.HistoryEvent(time=t, kind=k, text=x) for t, k, x in rows]

    @api.get("/today", summary="Each CT's and Meter's energy since local midnight: the stored "
             "minutes plus what the counters added since the last write")
    def today_energy(device: Device = None) -> hm.Today:
        key = key_of(device)
        meter = hist.meter(key)
        day = today(key, meter)
        labels = names(key, meter)
        values = np.full((len(ENERGY_ELEMENTS), len(REGISTERS)), np.nan)
        if meter is not None:
            values = run(_today, meter, day, live(key))
        return hm.Today(date=day.isoformat(), units=hm.ENERGY_UNITS, rows=[
            hm.TodayRow(element=e.key, label=label(labels, e.key),
                        energy=dict(zip(REGISTERS, _numbers(values[k]), strict=True)))
            for k, e in enumerate(ENERGY_ELEMENTS)])

    @api.get("/backfill", summary="A meter's stored minutes and 15-minute intervals in a range "
             "(at most 6 h), for a hub that missed them (docs/web.md)")
    def backfill(start: Annotated[float, Query(ge=0, le=7e9)],
                 end: Annotated[float, Query(ge=0, le=7e9)], device: Device = None) -> hm.Backfill:
        key = key_of(device)
        if not 0 < end - start <= BACKFILL_SPAN_S:
            raise HTTPException(422, "end must be after start, by at most 6 hours")
        meter = hist.meter(key)
        minutes, intervals = run(export, meter, start, end) if meter is not None else ([], [])
        return hm.Backfill(
            device=key, start=start, end=end, series=[".".join(k) for k in LAYOUT.minute_series],
            channels=LAYOUT.n_channels, registers=list(REGISTERS),
            minutes=[hm.BackfillMinute(t=t, values=_numbers(v)) for t, v in minutes],
            intervals=[hm.BackfillInterval(t=iv.t, seconds=iv.seconds,
                                           agg=[_numbers(r) for r in iv.agg],
                                           energy=[[_numbers(r) for r in part] for part in iv.energy])
                       for iv in intervals])

    return api


def _today(store: HistoryStore, meter: int, day: date, snap) -> np.ndarray:
    """(32, 7): today's stored energy plus the counters' advance since the last write (the
    same rollover/reset rules as the writer); NaN where nothing is known."""
    db = store.db
    rows = db.execute(f"SELECT energy FROM {db.t('day')} WHERE meter = ? AND date = ?",
                      (meter, day.isoformat()))
    shape = (len(ENERGY_ELEMENTS), len(REGISTERS))
    stored, last = np.zeros(shape), store.load_state(meter).counters
    if rows:
        e = np.frombuffer(bytes(rows[0][0]), "<f8").reshape(3, *shape)
        stored, last = e[0].copy(), e[2]
    if snap is None or last is None:
        return stored if rows else np.full(shape, np.nan)
    live = frame_from_snapshot(snap)
    if datetime.fromtimestamp(live.time, store.tz).date() != day:
        return stored
    added, _ = Counters(last).advance(live.time, live.counters)
    return stored + added
