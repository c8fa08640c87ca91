"""Currents, harmonics, THD and TDD of every CT (and the mains' voltage harmonics) over
clock-aligned 10 minutes and 2 hours.

Built from the engine's 1-s values, which are themselves RMS over IEC 61000-4-7 windows of
10/12 cycles (docs/metering.md): the 10-minute value of each quantity is the RMS of the
seconds ending in it, time-weighted (class S: the standard's 150/180-cycle step is skipped for
these, its RMS of RMS values gives the same 10-minute result). THD = sqrt(sum_{h=2..40}
G_h^2) / G_1 (IEC 61000-4-7, H = 40 as EN 50160) and TDD = sqrt(sum_{h=2..50} I_h^2) / I_L
(IEEE 519, I_L the configured load current) come from the aggregated harmonics. A value is
flagged when its main had a dip, swell or interruption in it. Pure numpy, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

THD_ORDERS = 40


@dataclass(frozen=True)
class ChannelInterval:
    """One 10-minute or 2-hour value of every CT and main phase (arrays, primary units)."""

    interval: str  # "10 min" | "2 h"
    end_s: float
    seconds: float
    i_rms: np.ndarray  # (24,)
    i_harmonics: np.ndarray  # (24, 51) rms per order
    thd_i_pct: np.ndarray  # (24,)
    tdd_pct: np.ndarray  # (24,)
    v_harmonics: np.ndarray  # (mains, 3, 51)
    thd_v_pct: np.ndarray  # (mains, 3)
    flagged: np.ndarray  # (mains,) bool

    def ct_dict(self, k: int, main: int) -> dict[str, object]:
        """JSON of 0-based CT k (on 0-based ``main``)."""
        return {"ct": k + 1, "interval": self.interval, "end": self.end_s,
                "i_rms": float(self.i_rms[k]), "thd_i_pct": float(self.thd_i_pct[k]),
                "tdd_pct": float(self.tdd_pct[k]), "flagged": bool(self.flagged[main])}


def thd_pct(h: np.ndarray) -> np.ndarray:
    """THD_F in % along the last axis (orders 0..); 0 where the fundamental is 0."""
    num = np.sqrt(np.sum(h[..., 2 : THD_ORDERS + 1] ** 2, axis=-1))
    g1 = h[..., 1]
    return np.divide(100 * num, g1, out=np.zeros_like(num), where=g1 > 0)


def tdd_pct(h: np.ndarray, load_a: np.ndarray) -> np.ndarray:
    """TDD in % of ``load_a`` (IEEE 519): all orders from 2 on."""
    return 100 * np.sqrt(np.sum(h[..., 2:] ** 2, axis=-1)) / load_a


class ChannelAggregator:
    """Accumulates seconds into 10-minute values, and those into 2-hour values.

    ``load_a``: (24,) I_L of the TDD per CT (primary A).
    """

    def __init__(self, n_mains: int, load_a: np.ndarray, orders: int = 51):
        self.load_a = np.asarray(load_a, dtype=float)
        n_ct = self.load_a.size
        self.i2 = np.zeros(n_ct)
        self.ih2 = np.zeros((n_ct, orders))
        self.vh2 = np.zeros((n_mains, 3, orders))
        self.seconds = 0.0
        self.flagged = np.zeros(n_mains, dtype=bool)
        self._tick: int | None = None  # index of the 10-minute interval under way
        self._tens: list[ChannelInterval] = []

    def add(self, end_s: float, seconds: float, i_rms: np.ndarray, i_harmonics: np.ndarray,
            v_harmonics: np.ndarray, flagged: np.ndarray) -> list[ChannelInterval]:
        """One step ending at clock time ``end_s`` and ``seconds`` long; returns the values
        it completed (a 10-minute one at each tick, a 2-hour one every 12th)."""
        tick = math.ceil(end_s / 600 - 1e-9)
        out: list[ChannelInterval] = []
        if self._tick is not None and tick != self._tick and self.seconds > 0:
            out = self._close(600.0 * self._tick)
        self._tick = tick
        if seconds > 0:
            self.i2 += seconds * np.square(i_rms)
            self.ih2 += seconds * np.square(i_harmonics)
            self.vh2 += seconds * np.square(v_harmonics)
            self.seconds += seconds
        self.flagged |= flagged
        if abs(end_s - 600.0 * tick) < 1e-6 and self.seconds > 0:  # a step ending on the tick
            out += self._close(600.0 * tick)
            self._tick = None
        return out

    def _close(self, end_s: float) -> list[ChannelInterval]:
        s = self.seconds
        ten = self._interval("10 min", end_s, s, np.sqrt(self.i2 / s), np.sqrt(self.ih2 / s),
                             np.sqrt(self.vh2 / s), self.flagged.copy())
        self.i2[:], self.ih2[:], self.vh2[:], self.seconds = 0.0, 0.0, 0.0, 0.0
        self.flagged[:] = False
        self._tens.append(ten)
        out = [ten]
        if round(end_s) % 7200 == 0:
            tens, self._tens = self._tens, []
            w = np.array([t.seconds for t in tens])
            total = w.sum()

            def rms(xs: list[np.ndarray]) -> np.ndarray:
                return np.sqrt(np.tensordot(w, np.square(np.stack(xs)), axes=1) / total)

            out.append(self._interval(
                "2 h", end_s, total, rms([t.i_rms for t in tens]),
                rms([t.i_harmonics for t in tens]), rms([t.v_harmonics for t in tens]),
                np.any([t.flagged for t in tens], axis=0)))
        return out

    def _interval(self, name: str, end_s: float, seconds: float, i_rms: np.ndarray,
                  ih: np.ndarray, vh: np.ndarray, flagged: np.ndarray) -> ChannelInterval:
        return ChannelInterval(name, end_s, seconds, i_rms, ih, thd_pct(ih),
                               tdd_pct(ih, self.load_a), vh, thd_pct(vh), flagged)
