"""The meter's power quality: the engine's PQ monitor, the CTs' aggregates, and what a
second shows of them (the snapshot's ``pq`` section, the event log's voltage events).

``metering.pq`` does the measuring; this only places it in the meter's clock and turns its
results into event texts and a JSON-ready dict (docs/power-quality.md).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from typing import Any

import numpy as np

from pm4324.config.settings import Settings
from pm4324.metering.engine import Engine, StepResult
from pm4324.metering.pq.channels import ChannelAggregator, ChannelInterval
from pm4324.metering.pq.events import VoltageEvent
from pm4324.metering.pq.monitor import PqMonitor, attach
from pm4324.metering.pq.stream import Interval

EVENT_KINDS = {"dip": "voltage_dip", "swell": "voltage_swell",
               "interruption": "voltage_interruption", "rvc": "voltage_change"}
RECENT = 500  # ended events kept in memory (the event log keeps them all)


def event_text(e: VoltageEvent) -> str:
    """One line for the event log, e.g. "dip on main 1 phase a: 115.0 V (50.0 % of Udin)
    for 0.110 s from 2026-12-05T08:00:01.025Z"."""
    at = dt.datetime.fromtimestamp(e.start_s, dt.UTC).isoformat(timespec="milliseconds")
    where = f"main {e.main} phase{'s' if len(e.channels) > 1 else ''} {e.channels}"
    what = {"dip": "residual", "interruption": "residual", "swell": "maximum",
            "rvc": "max change"}[e.kind]
    extra = f", steady-state change {e.delta_ss_v:+.1f} V" if e.kind == "rvc" else ""
    return (f"{e.kind} on {where}: {what} {e.extreme_v:.1f} V ({e.extreme_pct:.1f} % of Udin)"
            f"{extra} for {e.duration_s:.3f} s from {at.replace('+00:00', 'Z')}")


class DevicePq:
    """Power quality of one meter; None-safe when ``settings.pq.enabled`` is false."""

    def __init__(self, engine: Engine, settings: Settings, start_time: float):
        self.enabled = settings.pq.enabled
        self.monitor: PqMonitor | None = (attach(engine, settings.pq, start_time)
                                          if self.enabled else None)
        self._settings = settings
        rated = np.repeat([m.rated_current_a for m in settings.meters], 3)
        load = np.full(rated.size, settings.pq.load_current_a) if settings.pq.load_current_a \
            else rated
        self.channels = ChannelAggregator(settings.n_mains, load)
        self.recent: deque[VoltageEvent] = deque(maxlen=RECENT)
        self.intervals: deque[Interval] = deque(maxlen=RECENT)  # 10 min and 2 h, newest last
        self.ct_intervals: deque[ChannelInterval] = deque(maxlen=RECENT)
        self._ct_json: list[dict[str, Any]] = []
        self._main_of_ct = [settings.main_of_ct(k + 1) for k in range(rated.size)]
        n = settings.n_mains
        self._freq: list[list[float]] = [[] for _ in range(n)]  # 10-s values since the tick
        self._extra: list[dict[str, Any]] = [{} for _ in range(n)]  # the 10-minute extras

    def configure(self, settings: Settings) -> None:
        if self.monitor is not None:
            self.monitor.configure(settings, settings.pq)
        self._settings = settings

    def after_step(self, r: StepResult, end: float
                   ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
        """The step's news: (event log kind, text) per ended event, and the pq section."""
        if self.monitor is None:
            return [], None
        events, intervals = self.monitor.take()
        self.recent.extend(events)
        flagged = np.array([bool(mp.flags.any()) or bool(mp.in_progress())
                            for mp in self.monitor.mains])
        done = self.channels.add(end, r.duration_s, r.ct["i_rms"], r.ct["i_harmonics"],
                                 r.main["v_harmonics"], flagged)
        for ci in done:
            self.ct_intervals.append(ci)
            if ci.interval == "10 min":
                self._ct_json = [ci.ct_dict(k, m) for k, m in enumerate(self._main_of_ct)]
                for m, extra in enumerate(self._extra):
                    extra["harmonics_10min"] = _harmonics(ci, m)
        for iv in intervals:
            self._frequency(iv)
        self.intervals.extend(iv for iv in intervals if iv.interval in ("10 min", "2 h"))
        news = [(EVENT_KINDS[e.kind], event_text(e)) for e in events]
        return news, self._section(events)

    def _section(self, events: list[VoltageEvent]) -> dict[str, Any]:
        mains = []
        for mp, latest in zip(self.monitor.mains, self.monitor.latest):
            urms = mp.urms
            mains.append({
                "main": mp.main + 1,
                "udin_v": mp.lim.udin,
                "nominal_hz": self._settings.mains[mp.main].nominal_frequency_hz,
                "voltages": "ll" if mp.lim.line_to_line else "ln",
                "in_progress": mp.in_progress(),
                "urms_half_min": urms.min(axis=1).tolist() if urms.size else None,
                "urms_half_max": urms.max(axis=1).tolist() if urms.size else None,
                **{_KEYS[name]: iv.as_dict() for name, iv in latest.items()},
                **self._extra[mp.main],
            })
        return {"mains": mains, "events": [e.as_dict() for e in events], "cts": self._ct_json}


    def _frequency(self, iv: Interval) -> None:
        """Collect the 10-s frequencies; at each 10-minute value, their EN 50160 summary."""
        m = iv.main - 1
        if iv.interval == "10 s" and not iv.flagged:
            self._freq[m].append(iv.frequency_hz)
        elif iv.interval == "10 min":
            f = np.array(self._freq[m])
            nominal = self._settings.mains[m].nominal_frequency_hz
            self._extra[m]["frequency_10min"] = {
                "end_s": iv.end_s, "values": int(f.size),
                "within_1pct": int(np.sum(np.abs(f - nominal) <= 0.01 * nominal)),
                "min_hz": float(f.min()) if f.size else None,
                "max_hz": float(f.max()) if f.size else None}
            self._freq[m] = []


def _harmonics(ci: ChannelInterval, m: int) -> dict[str, Any]:
    """A main's 10-minute voltage THD and harmonics 2..25 in % of the fundamental."""
    h = ci.v_harmonics[m]
    g1 = np.where(h[:, 1] > 0, h[:, 1], np.inf)
    return {"end_s": ci.end_s, "thd_v_pct": ci.thd_v_pct[m].tolist(),
            "v_harmonics_pct": (100 * h[:, 2:26] / g1[:, None]).tolist(),
            "flagged": bool(ci.flagged[m])}


_KEYS = {"150/180 cycles": "short", "10 min": "ten_minutes", "10 s": "frequency_10s",
         "2 h": "two_hours"}
