"""The streaming power-quality state of one main, around the compiled kernels.

``MainPq.add`` takes a step's buffer, cycle boundaries and fundamentals from the engine and
returns the voltage events that ended and the aggregates that completed (150/180 cycles,
10 minutes, 10-s frequency), stamped in absolute sample positions. No I/O, no clock: the
caller places sample 0 in time (``start_time``), which fixes where the clock ticks fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pm4324.metering.pq import aggregate as A
from pm4324.metering.pq import kernels as K
from pm4324.metering.pq.events import EventLimits
from pm4324.metering.pq.flicker import CLASSES, FlickerDesign, pst

MAX_EVENTS = 64  # per main and step; hysteresis keeps real counts far below
MAX_ROWS = 64
INTERVALS = {A.ROW_150: "150/180 cycles", A.ROW_600: "10 min", A.ROW_10S: "10 s"}


@dataclass(frozen=True)
class Interval:
    """One aggregated value of a main (IEC 61000-4-30 intervals); ``flagged``: it contains
    (part of) a dip, swell or interruption. Voltage fields are 0 for "10 s" (frequency only),
    frequency is 0 except for "10 s"."""

    interval: str  # "150/180 cycles", "10 min", "10 s", "2 h"
    main: int  # 1-based
    end_s: float  # clock time of the interval's end
    v_rms: tuple[float, float, float]  # phases a, b, c (or ab, bc, ca on 3-wire mains)
    u2_pct: float
    u0_pct: float
    frequency_hz: float
    flagged: bool
    seconds: float  # time covered (short at start-up and at a 10-minute resynchronisation)
    pst: tuple[float, float, float] | None = None  # flicker: "10 min" (Pst), "2 h" (Plt)

    def as_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["v_rms"] = list(self.v_rms)
        d["pst"] = None if self.pst is None else list(self.pst)
        return d


class MainPq:
    """Urms(1/2), events and aggregation of one main (0-based ``main``)."""

    def __init__(self, main: int, limits: EventLimits, pt: float, nominal_hz: float, fs: float,
                 start_time: float):
        self.main, self.lim, self.pt, self.fs = main, limits, pt, fs
        self.per_basic = 10 if nominal_hz == 50 else 12
        self.st = np.zeros(K.ST_SIZE)
        agg = 7 + K.STATE_SIZE
        # the next clock ticks, in samples from sample 0 (which is at start_time)
        self.st[agg + A.NEXT_600] = (math.ceil(start_time / 600) * 600 - start_time) * fs
        self.st[agg + A.NEXT_10] = (math.ceil(start_time / 10) * 10 - start_time) * fs
        self.ring = np.zeros((4, 100 if nominal_hz == 50 else 120))
        self.events = np.zeros((MAX_EVENTS, K.EVENT_COLUMNS))
        self.rows = np.zeros((MAX_ROWS, A.ROW_COLUMNS))
        self._work = np.empty((7, 0))
        self._flags = np.empty(0, dtype=np.bool_)
        self._points = np.empty(0)
        self._no_cycles = np.empty((0, 3), dtype=complex)
        self._sub = np.empty((3, 0))
        self.flicker = FlickerDesign.of(nominal_hz, limits.udin / (math.sqrt(3) if
                                                                   limits.line_to_line else 1))
        self.fstate = np.zeros((3, 3 + 2 * self.flicker.sos.shape[0]))
        self.hist = np.zeros((3, CLASSES), dtype=np.int64)
        self.urms, self.stamps, self.flags = self._work[0:3], self._work[3], self._flags

    def configure(self, limits: EventLimits, pt: float) -> None:
        """New thresholds or PT ratio. A new PT ratio, Udin or voltage choice drops the
        events under way (they would end in a different scale) and restarts the RVC's
        steady-state second; the aggregation goes on."""
        if (pt, limits.udin, limits.line_to_line) != (self.pt, self.lim.udin,
                                                      self.lim.line_to_line):
            self.st[: 7 + K.STATE_SIZE] = np.r_[0.0, 0, 0, 0, 0, self.st[5:7],
                                                np.zeros(K.STATE_SIZE)]
        self.lim, self.pt = limits, pt

    def add(self, store: np.ndarray, bounds: np.ndarray, offset: int,
            fundamental: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One step's cycles (``bounds`` relative to ``store``, whose column 0 is absolute
        sample ``offset``; ``fundamental``: their fundamental phasors, rows va, vb, vc first).
        Returns (event rows as ``kernels.scan_events`` writes them, aggregate rows as
        ``aggregate.aggregate`` does), positions absolute. Afterwards ``urms``, ``stamps``
        and ``flags`` hold the step's Urms(1/2) values (views, valid until the next call)."""
        n = 2 * bounds.size + 4
        if self._points.size < n:
            self._work = np.empty((7, n + n // 4))
            self._flags = np.empty(n + n // 4, dtype=np.bool_)
            self._points = np.empty(n + n // 4 + 1)
            self._sub = np.empty((3, 4 * (n + n // 4)))
        if fundamental is None or bounds.size < 2:
            fundamental = self._no_cycles
        got, k, n_rows = K.half_cycles(
            store, bounds, fundamental, self._points, self._work, self._flags, self.st,
            self.ring, self.lim.limits, self.events, self.rows, float(offset),
            self.lim.line_to_line, self.pt, self.fs, self.per_basic, self._sub,
            self.flicker.sos, self.flicker.params, self.fstate, self.hist)
        self.urms, self.stamps = self._work[0:3, :got], self._work[3, :got]
        self.flags = self._flags[:got]
        return self.events[: min(k, MAX_EVENTS)], self.rows[: min(n_rows, MAX_ROWS)]

    def in_progress(self) -> list[str]:
        """Kinds of the events under way (dip, swell, interruption, rvc)."""
        slots = (0, 5, 9, 12)
        kinds = ("dip", "swell", "interruption", "rvc")
        return [kinds[q] for q, s in enumerate(slots) if self.st[7 + s] != 0.0]

    def to_intervals(self, rows: np.ndarray, start_time: float) -> list[Interval]:
        out = []
        for kind, end, va, vb, vc, u2, u0, flag, f, seconds, _ in rows.tolist():
            flicker = None
            if kind == A.ROW_600:  # Pst of the Pinst counted since the last tick
                p = pst(self.hist)
                self.hist[:] = 0
                if np.isfinite(p).all():
                    flicker = (float(p[0]), float(p[1]), float(p[2]))
            out.append(Interval(INTERVALS[int(kind)], self.main + 1, start_time + end / self.fs,
                                (va, vb, vc), u2, u0, f, bool(flag), seconds, flicker))
        return out
