"""Seconds -> minutes: sums, counts, minima and maxima per channel, and energy from counters.

Energy is never integrated from power here: each second's energy is the difference of the
meter's own counters, so a day's kWh is exact even when seconds or minutes are missing (the
difference across a gap lands in the first minute after it). A counter that goes down is a
uint32 rollover when it wrapped from near the top to near zero, otherwise a reset
(`reset-energy`): the energy after a reset counts from zero and the pre-reset value is kept
as an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pm4324.history.layout import ENERGY_ELEMENTS, LAYOUT, REGISTERS, Frame

#: the uint32 energy registers (0.01 kWh) roll over after 2**32 counts
ROLLOVER_WH = 2.0**32 * 10.0
_COUNTER_SHAPE = (len(ENERGY_ELEMENTS), len(REGISTERS))


@dataclass
class MinuteBatch:
    """Consecutive or sparse whole minutes of one meter, as arrays (row = one minute)."""

    t: np.ndarray  # (n,) int64 minute start, Unix seconds, multiple of 60
    sums: np.ndarray  # (n, n_channels) float64
    counts: np.ndarray  # (n, n_channels) int32
    mins: np.ndarray  # (n, n_channels)
    maxs: np.ndarray  # (n, n_channels)
    deltas: np.ndarray  # (n, 32, 7) Wh in the minute (from counter differences)
    counters: np.ndarray  # (n, 32, 7) Wh, the last counter value known at the minute's end
    seconds: np.ndarray  # (n,) int32 seconds that contributed
    raw: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per minute

    @property
    def n(self) -> int:
        return len(self.t)

    def stats(self) -> np.ndarray:
        """(n, 3, n_channels): mean, min, max (NaN where a channel had no value)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.sums / self.counts
        return np.stack([mean, self.mins, self.maxs], axis=1)

    @classmethod
    def concat(cls, parts: list[MinuteBatch]) -> MinuteBatch:
        raw = [r for p in parts for r in p.raw] if all(len(p.raw) == p.n for p in parts) else []
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                     ("t", "sums", "counts", "mins", "maxs", "deltas", "counters", "seconds")),
                   raw=raw)


@dataclass(frozen=True)
class CounterEvent:
    time: float
    kind: str  # "reset" or "rollover"
    element: str
    register: str
    before_wh: float
    after_wh: float


class Counters:
    """The last counter values seen, and the energy each new reading adds."""

    def __init__(self, last: np.ndarray | None = None, modulus: float = ROLLOVER_WH):
        self.last = np.full(_COUNTER_SHAPE, np.nan) if last is None else last.copy()
        self.modulus = modulus

    def advance(self, time: float, cur: np.ndarray) -> tuple[np.ndarray, list[CounterEvent]]:
        """Energy since the previous reading (Wh, 0 where unknown) and any resets/rollovers."""
        prev = self.last
        known = np.isfinite(cur) & np.isfinite(prev)
        delta = np.where(known, cur - prev, 0.0)
        events: list[CounterEvent] = []
        down = known & (delta < -(1e-9 * np.abs(prev) + 1e-6))
        if down.any():
            wrapped = down & (prev > 0.9 * self.modulus) & (cur < 0.1 * self.modulus)
            delta = np.where(wrapped, cur + self.modulus - prev, delta)
            delta = np.where(down & ~wrapped, cur, delta)
            for e, r in zip(*np.nonzero(down)):
                events.append(CounterEvent(time, "rollover" if wrapped[e, r] else "reset",
                                           ENERGY_ELEMENTS[e].key, REGISTERS[r],
                                           float(prev[e, r]), float(cur[e, r])))
        delta = np.where(known & ~down, np.maximum(delta, 0.0), delta)
        self.last = np.where(np.isfinite(cur), cur, prev)
        return delta, events


class MinuteAccumulator:
    """Collects the seconds of one minute; ``add`` returns the finished minute on rollover."""

    def __init__(self, counters: Counters, keep_raw: bool = True):
        self.counters = counters
        self.keep_raw = keep_raw
        self.events: list[CounterEvent] = []
        self._minute: int | None = None
        self._reset()

    def _reset(self) -> None:
        n = LAYOUT.n_channels
        self._sums = np.zeros(n)
        self._counts = np.zeros(n, dtype=np.int32)
        self._mins = np.full(n, np.inf)
        self._maxs = np.full(n, -np.inf)
        self._deltas = np.zeros(_COUNTER_SHAPE)
        self._seconds = 0
        self._raw_t: list[float] = []
        self._raw_v: list[np.ndarray] = []

    @property
    def minute(self) -> int | None:
        return self._minute

    def add(self, frame: Frame) -> MinuteBatch | None:
        minute = int(frame.time // 60) * 60
        done = None
        if self._minute is not None and minute != self._minute:
            done = self.finish()
        self._minute = minute
        v = frame.values
        ok = np.isfinite(v)
        self._sums += np.where(ok, v, 0.0)
        self._counts += ok
        np.fmin(self._mins, v, out=self._mins)
        np.fmax(self._maxs, v, out=self._maxs)
        delta, events = self.counters.advance(frame.time, frame.counters)
        self._deltas += delta
        self.events += events
        self._seconds += 1
        if self.keep_raw:
            self._raw_t.append(frame.time - minute)
            self._raw_v.append(v[LAYOUT.raw_channels])
        return done

    def finish(self) -> MinuteBatch | None:
        """The minute so far as a batch of one (None when empty); starts a new minute."""
        if self._minute is None or self._seconds == 0:
            return None
        mins = np.where(np.isinf(self._mins), np.nan, self._mins)
        maxs = np.where(np.isinf(self._maxs), np.nan, self._maxs)
        raw = [(np.array(self._raw_t), np.array(self._raw_v))] if self.keep_raw else []
        batch = MinuteBatch(np.array([self._minute], dtype=np.int64), self._sums[None],
                            self._counts[None], mins[None], maxs[None], self._deltas[None],
                            self.counters.last[None].copy(),
                            np.array([self._seconds], dtype=np.int32), raw)
        self._minute = None
        self._reset()
        return batch


def batch_of_minutes(t: np.ndarray, values: dict[str, dict[str, np.ndarray]], energy: np.ndarray,
                     start: np.ndarray | None) -> MinuteBatch:
    """Whole minutes known exactly (a scenario's truth): ``values[kind][quantity]`` is
    (n, count) per minute, ``energy`` (n, 32, 7) Wh in each minute, ``start`` the counters
    before the first minute (None = zero). Every minute counts as 60 seconds."""
    n = len(t)
    v = np.full((n, LAYOUT.n_channels), np.nan)
    for (element, quantity), ch in LAYOUT.channels.items():
        kind = element.rstrip("0123456789")
        column = int(element[len(kind):]) - 1
        series = values.get(kind, {}).get(quantity)
        if series is not None and column < series.shape[1]:
            v[:, ch] = series[:, column]
    base = np.zeros(_COUNTER_SHAPE) if start is None else np.nan_to_num(start)
    counters = base + np.cumsum(energy, axis=0)
    ok = np.isfinite(v)
    return MinuteBatch(np.asarray(t, dtype=np.int64), np.where(ok, v * 60, 0.0),
                       np.where(ok, 60, 0).astype(np.int32), v, v, energy, counters,
                       np.full(n, 60, dtype=np.int32))
