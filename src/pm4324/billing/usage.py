"""What the history holds for a billing period: per meter, the 15-minute intervals' energy
and counter readings, and the gaps and counter resets inside the period.

Energy per interval comes from counter differences (the history never integrates power), so
a period's energy is exact over gaps: the energy across a gap lands in the first interval
after it. Readings are the counters at the start of the first interval and at the end of the
last one; between them a reset (``reset-energy``) is listed with its pre-reset value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from pm4324.history import HistoryError, HistoryStore, query
from pm4324.history.layout import ENERGY_ELEMENTS, REGISTERS
from pm4324.registers.table import load_map

INTERVAL_S = 900
ELEMENT_INDEX = {e.key: n for n, e in enumerate(ENERGY_ELEMENTS)}
REGISTER_INDEX = {r: n for n, r in enumerate(REGISTERS)}
_RESET = re.compile(r"^(\w+) (\w+): ([-\d.e+]+) Wh -> ([-\d.e+]+) Wh$")


@dataclass(frozen=True)
class Reset:
    time: float
    element: str
    register: str
    before_wh: float
    after_wh: float


@dataclass
class MeterPeriod:
    """One meter's intervals in [start, end): t (n,) and (n, 32, 7) arrays."""

    key: str
    model: str
    names: dict
    t: np.ndarray
    delta: np.ndarray  # energy in each interval, Wh / varh / VAh
    first: np.ndarray  # counters at each interval's start
    last: np.ndarray  # counters at each interval's end
    gaps: list[tuple[float, float, str]] = field(default_factory=list)
    resets: list[Reset] = field(default_factory=list)

    def series(self, element: str, register: str) -> np.ndarray:
        return self.delta[:, ELEMENT_INDEX[element], REGISTER_INDEX[register]]

    def gap_touched(self) -> np.ndarray:
        """Intervals that a gap overlaps or ends in: the first reading after a gap (at ``hi``)
        carries the gap's energy."""
        hit = np.zeros(len(self.t), dtype=bool)
        for lo, hi, _ in self.gaps:
            hit |= (self.t <= hi) & (self.t + INTERVAL_S > lo)
        return hit


def read_period(store: HistoryStore, key: str | None, start: float, end: float) -> MeterPeriod:
    """Every interval of meter ``key`` (the only one when None) in [start, end)."""
    meter = store.find_meter(key)
    info = next(m for m in store.meters() if m["id"] == meter)
    ts, energies = [], []
    for t, _seconds, _agg, energy in query.interval_rows(store, meter, start, end):
        ts.append(t)
        energies.append(energy)
    n = len(ts)
    e = np.stack(energies) if n else np.zeros((0, 3, len(ENERGY_ELEMENTS), len(REGISTERS)))
    resets = []
    for t, kind, text in query.events(store, meter, start, end):
        m = _RESET.match(text)
        if kind == "reset" and m:
            resets.append(Reset(t, m[1], m[2], float(m[3]), float(m[4])))
    return MeterPeriod(info["key"], info.get("model") or "", info.get("names") or {},
                       np.array(ts, dtype=float), e[:, 0], e[:, 1], e[:, 2],
                       query.gaps(store, meter, start, end), resets)


def read_meters(store: HistoryStore, keys: set[str | None], start: float, end: float,
                progress=None) -> dict[str | None, MeterPeriod]:
    """``read_period`` for each meter key named by the tenants file."""
    out = {}
    for n, key in enumerate(sorted(keys, key=lambda k: k or "")):
        try:
            out[key] = read_period(store, key, start, end)
        except HistoryError as exc:
            what = f"meter {key!r}" if key else "circuits without a meter key (\"ct7\", not \"KEY:ct7\")"
            raise HistoryError(f"the tenants file names {what}: {exc}") from None
        if progress:
            progress(n + 1, len(keys), f"read meter {out[key].key}")
    return out


@cache
def register_of(element: str, register: str) -> str:
    """The Modbus input register serving this counter, e.g. ``ct7_kwh_import_f32 (input 0x1370)``."""
    kind = "ct_energy" if element.startswith("ct") else "meter_energy"
    number = int(element.removeprefix("ct").removeprefix("meter"))
    for p in load_map().points:
        s = p.source
        if getattr(s, "group", None) == kind and getattr(s, "field", None) == register and \
                getattr(s, "index", None) == number and p.name.endswith("_f32"):
            return f"{p.name} (input 0x{p.address:04X})"
    return f"{element} {register}"
