"""A tenant's (or common area's, or main's) energy per 15-minute interval on one time grid,
with the counter readings it came from.

All meters' intervals are put on the period's grid of quarter hours, so circuits of several
meters add up interval by interval; an interval a meter has no row for holds no energy (the
energy across a gap is in the first interval after it, from the counters).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from pm4324.billing.config import Circuit
from pm4324.billing.usage import ELEMENT_INDEX, INTERVAL_S, REGISTER_INDEX, MeterPeriod, register_of
from pm4324.history.names import label as _label

IMPORT, QI = "wh_import", "varh_q1"


@dataclass(frozen=True)
class Reading:
    """One counter at one time, as the history holds it (traceable to the meter)."""

    meter: str
    element: str
    label: str
    register: str
    value_wh: float
    time: float


@dataclass(frozen=True)
class CircuitUse:
    circuit: Circuit
    start: Reading | None  # None: no interval of this circuit inside the range
    end: Reading | None
    energy_wh: float  # the share billed, import
    resets: list[str]
    gaps: list[str]


class Grid:
    """The period's quarter hours and each meter's rows on them."""

    def __init__(self, start: float, end: float, meters: dict[str | None, MeterPeriod], tz):
        self.start, self.end, self.tz = start, end, tz
        self.t = np.arange(start, end, INTERVAL_S, dtype=float)
        self.meters = meters
        self.rows = {k: ((m.t - start) // INTERVAL_S).astype(int) for k, m in meters.items()}
        self._labels: dict[str, np.ndarray] = {}
        self._touched = {k: self.rows[k][m.gap_touched()] for k, m in meters.items()}

    def touched(self, circuits: tuple[Circuit, ...]) -> np.ndarray:
        """Grid intervals that hold a gap's energy on any of these circuits' meters."""
        out = np.zeros(len(self.t), dtype=bool)
        for c in circuits:
            out[self._touched[c.meter_key]] = True
        return out

    def labels(self, tariff) -> np.ndarray:
        """The tariff's TOU period of each interval (computed once per tariff)."""
        if tariff.name not in self._labels:
            self._labels[tariff.name] = tariff.classify(self.t, self.tz)
        return self._labels[tariff.name]

    def series(self, circuits: tuple[Circuit, ...], register: str = IMPORT) -> np.ndarray:
        """Σ share × energy per grid interval (Wh)."""
        out = np.zeros(len(self.t))
        for c in circuits:
            m = self.meters[c.meter_key]
            np.add.at(out, self.rows[c.meter_key], m.series(c.element, register) * float(c.share))
        return out

    def uses(self, circuits: tuple[Circuit, ...], mask: np.ndarray, register: str = IMPORT
             ) -> list[CircuitUse]:
        tz = self.tz
        """Each circuit's readings at the first and last interval inside ``mask``."""
        out = []
        for c in circuits:
            m = self.meters[c.meter_key]
            inside = mask[self.rows[c.meter_key]]
            picks = np.flatnonzero(inside)
            label = _label(m.names, c.element)
            e, r = ELEMENT_INDEX[c.element], REGISTER_INDEX[register]
            if not len(picks):
                out.append(CircuitUse(c, None, None, 0.0, [], []))
                continue
            a, b = picks[0], picks[-1]
            start = Reading(m.key, c.element, label, register_of(c.element, register),
                            float(m.first[a, e, r]), float(m.t[a]))
            end = Reading(m.key, c.element, label, register_of(c.element, register),
                          float(m.last[b, e, r]), float(m.t[b] + INTERVAL_S))
            energy = float(m.delta[picks, e, r].sum()) * float(c.share)
            lo, hi = m.t[a], m.t[b] + INTERVAL_S
            resets = [f"counter reset at {datetime.fromtimestamp(x.time, tz):%Y-%m-%d %H:%M}: "
                      f"{x.before_wh / 1000:.3f} kWh before, counted from {x.after_wh / 1000:.3f} kWh "
                      "after; billed = energy before the reset + energy after it"
                      for x in m.resets if x.element == c.element and x.register == register
                      and lo <= x.time < hi]
            gaps = [f"no readings {datetime.fromtimestamp(g0, tz):%Y-%m-%d %H:%M} .. "
                    f"{datetime.fromtimestamp(g1, tz):%Y-%m-%d %H:%M} ({why}); energy over the gap "
                    "from the counters (exact), billed when readings resumed; its intervals are "
                    "left out of the demand"
                    for g0, g1, why in m.gaps if g1 > lo and g0 < hi]
            out.append(CircuitUse(c, start, end, energy, resets, gaps))
        return out

    def reading_at(self, c: Circuit, k: int) -> tuple[Reading, Reading] | None:
        """The circuit's counters at the start and end of grid interval ``k``."""
        m = self.meters[c.meter_key]
        rows = np.flatnonzero(self.rows[c.meter_key] == k)
        if not len(rows):
            return None
        j, e, r = rows[0], ELEMENT_INDEX[c.element], REGISTER_INDEX[IMPORT]
        label, reg = _label(m.names, c.element), register_of(c.element, IMPORT)
        return (Reading(m.key, c.element, label, reg, float(m.first[j, e, r]), float(m.t[j])),
                Reading(m.key, c.element, label, reg, float(m.last[j, e, r]), float(m.t[j] + INTERVAL_S)))

