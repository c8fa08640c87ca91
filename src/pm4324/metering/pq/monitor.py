"""The power-quality monitor of a meter: one ``MainPq`` per main, fed by the engine.

``Engine.pq_hook`` calls ``PqMonitor.add`` once per main and step with the main's buffer,
the step's cycle boundaries and their fundamentals; ``take`` hands over the events and
aggregates completed since the last call, in clock time (``start_time`` = the time of
sample 0, as the device keeps it). 2-hour values (clock aligned) are the RMS of the
10-minute values within them.
"""

from __future__ import annotations

import math

import numpy as np

from pm4324.config.pq_settings import PqSettings
from pm4324.config.settings import Settings, Wiring
from pm4324.metering.pq.events import EventLimits, VoltageEvent, to_events
from pm4324.metering.pq.flicker import plt
from pm4324.metering.pq.stream import Interval, MainPq

THREE_WIRE = (Wiring.W3P3W_3CT, Wiring.W3P3W_2CT)


def line_to_line(settings: Settings, pq: PqSettings, main: int) -> bool:
    """Whether a main's events use L-L voltages: "ll", or "auto" with only 3-wire Meters."""
    if pq.event_voltage != "auto":
        return pq.event_voltage == "ll"
    wirings = [m.wiring for k, m in enumerate(settings.meters)
               if settings.main_of_meter(k + 1) == main]
    return all(w in THREE_WIRE for w in wirings)


class PqMonitor:
    """Voltage events and aggregates of every main of one meter."""

    def __init__(self, settings: Settings, pq: PqSettings, start_time: float = 0.0):
        self.start_time = start_time
        self.fs = settings.sample_rate_hz
        self.mains = []
        for m in range(settings.n_mains):
            limits, pt = self._limits(settings, pq, m)
            self.mains.append(MainPq(m, limits, pt, settings.mains[m].nominal_frequency_hz,
                                     self.fs, start_time))
        self._events: list[VoltageEvent] = []
        self._intervals: list[Interval] = []
        self._two_hour: list[list[Interval]] = [[] for _ in self.mains]
        # the latest value of each interval kind per main (JSON, the dashboard)
        self.latest: list[dict[str, Interval]] = [{} for _ in self.mains]

    @staticmethod
    def _limits(settings: Settings, pq: PqSettings, m: int) -> tuple[EventLimits, float]:
        ms = settings.mains[m]
        return EventLimits.of(pq, ms.nominal_voltage_v, line_to_line(settings, pq, m)), ms.pt_ratio

    def configure(self, settings: Settings, pq: PqSettings) -> None:
        for m, mp in enumerate(self.mains):
            mp.configure(*self._limits(settings, pq, m))

    def add(self, main: int, store: np.ndarray, bounds: np.ndarray, offset: int,
            fundamental: np.ndarray | None = None) -> None:
        """The engine's hook: one main's new cycles of a step."""
        mp = self.mains[main]
        events, rows = mp.add(store, bounds, offset, fundamental)
        if events.shape[0]:
            self._events.extend(to_events(events, main, mp.lim, self.fs, self.start_time))
        if rows.shape[0]:
            for iv in mp.to_intervals(rows, self.start_time):
                self._interval(iv)

    def _interval(self, iv: Interval) -> None:
        m = iv.main - 1
        self.latest[m][iv.interval] = iv
        self._intervals.append(iv)
        if iv.interval != "10 min":
            return
        block = self._two_hour[m]
        block.append(iv)
        if round(iv.end_s) % 7200 == 0:
            self._interval(two_hours(block))
            block.clear()

    def take(self) -> tuple[list[VoltageEvent], list[Interval]]:
        """Events and aggregates completed since the last call, oldest first."""
        out = self._events, self._intervals
        self._events, self._intervals = [], []
        return out

    def take_events(self) -> list[VoltageEvent]:
        events, _ = self.take()
        return events


def two_hours(tens: list[Interval]) -> Interval:
    """The 2-hour value: RMS of its 10-minute values, flagged if any is."""
    n = len(tens)
    rms = [math.sqrt(sum(iv.v_rms[r] ** 2 for iv in tens) / n) for r in range(3)]
    psts = [np.array(iv.pst) for iv in tens if iv.pst is not None]
    flicker = tuple(float(x) for x in plt(psts)) if psts else None  # Plt
    return Interval("2 h", tens[-1].main, tens[-1].end_s, (rms[0], rms[1], rms[2]),
                    math.sqrt(sum(iv.u2_pct**2 for iv in tens) / n),
                    math.sqrt(sum(iv.u0_pct**2 for iv in tens) / n), 0.0,
                    any(iv.flagged for iv in tens), sum(iv.seconds for iv in tens), flicker)


def attach(engine, pq: PqSettings | None = None, start_time: float = 0.0) -> PqMonitor:
    """A monitor for ``engine``'s settings, hooked into it."""
    monitor = PqMonitor(engine.settings, pq or PqSettings(), start_time)
    engine.pq_hook = monitor.add
    return monitor
