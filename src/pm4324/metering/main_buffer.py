"""The samples of one main between blocks, its cycle tracker, and its harmonic windows.

The engine keeps one per main: a block is appended (checked for clipping and non-finite
samples on the way in), the tracker's new boundaries say which cycles can be processed now,
and after a step the samples no longer needed are dropped, keeping the filter's history.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from pm4324.config.settings import Settings
from pm4324.metering.cycles import CycleTracker, raw_crossings
from pm4324.metering.resample import moments_needed
from pm4324.metering.step_kernels import ABSENT_FRACTION, GRID, MAX_ORDER, ingest_block, shift_left


class MainBuffer:
    """Buffer and tracker of one main; ``cts`` are the 0-based CTs it serves.

    The buffer and the spectrum work arrays are allocated once and reused: a fresh ~2 MB
    array per block (the concatenate this replaced) costs page faults, which here took
    as much CPU time as the arithmetic.
    """

    def __init__(self, settings: Settings, main: int, cts: np.ndarray):
        ms = settings.mains[main]
        self.fs = settings.sample_rate_hz
        self.main = main
        self.cts = cts
        self.nominal_terminal_v = ms.nominal_voltage_v / ms.pt_ratio
        self.tracker = CycleTracker(
            self.fs, ms.nominal_frequency_hz, ABSENT_FRACTION * self.nominal_terminal_v * 2**0.5
        )
        self.n_ch = 3 + cts.size
        self.store = np.zeros((self.n_ch, 0))  # rows va, vb, vc, then the currents
        self.length = 0  # samples held: store[:, :length]
        self.bad = np.zeros((self.n_ch, 0), dtype=bool)  # non-finite samples, kept only while any
        self.offset = 0  # absolute index of store[:, 0]
        self.bounds: list[float] = []  # boundaries not yet closed into a processed cycle
        self.sync: list[bool] = []
        self.period: float | None = None  # length of the last processed cycle, samples
        # IEC 61000-4-7 harmonic window: 10 cycles at 50 Hz, 12 at 60 Hz (200 ms)
        self.window = 10 if ms.nominal_frequency_hz == 50 else 12
        self._windows: dict[int, np.ndarray] = {}  # window starts for a number of cycles
        self.grid = np.empty((0, self.n_ch, GRID))  # summed synchronous samples per group
        self.spec = np.empty((0, self.n_ch, GRID // 2 + 1), dtype=complex)
        self.moments = np.empty((0, moments_needed(self.tracker.min_period, MAX_ORDER)))
        self.fundamental = np.empty((0, self.n_ch), dtype=complex)

    def append(self, v: np.ndarray, i: np.ndarray, start: int,
               clip_level: np.ndarray) -> np.ndarray:
        """Add a block; returns which inputs reached ``clip_level`` (their full scale).
        Non-finite samples are held as 0 and marked in ``bad``."""
        n = v.shape[1]
        if self.length == 0:
            self.offset = start
        end = self.length + n
        if end > self.store.shape[1]:  # with room for the tail kept between blocks
            grown = np.empty((self.n_ch, end + end // 4))
            grown[:, : self.length] = self.store[:, : self.length]
            self.store = grown
        peak = np.empty(self.n_ch)
        finite = ingest_block(np.ascontiguousarray(v, dtype=np.float64),
                         np.ascontiguousarray(i, dtype=np.float64), self.store, self.length, peak)
        self.length = end
        if not finite or (self.bad.shape[1] and self.bad.any()):
            block = self.store[:, end - n : end]
            bad_block = ~np.isfinite(block)
            block[bad_block] = 0.0
            peak = np.abs(block).max(axis=1)
            pad = end - n - self.bad.shape[1]
            self.bad = np.concatenate((np.pad(self.bad, ((0, 0), (pad, 0))), bad_block), axis=1)
        elif self.bad.shape[1]:
            self.bad = np.zeros((self.n_ch, 0), dtype=bool)
        return peak >= clip_level

    def new_cycles(self, final: bool = False) -> tuple[np.ndarray, bool]:
        """Boundaries of the cycles that can be processed now (relative to store), sync flag.

        ``final``: the stream ends here, so the cycles the filter delay still hides are
        closed too: after a measured cycle, at its period (exact at a steady frequency);
        in a recording too short for the filter, at the raw zero crossings.
        """
        new, real = self.tracker.update(self.store[:3, : self.length], self.offset)
        self.bounds.extend(new.tolist())
        self.sync.extend(real.tolist())
        end = self.offset + self.length - 3  # interpolation needs 2 samples beyond
        if final:
            self._close(end)
        usable = bisect.bisect_right(self.bounds, end)
        if usable < 2:
            return np.empty(0), True
        rel = np.array(self.bounds[:usable]) - self.offset
        self.period = self.bounds[usable - 1] - self.bounds[usable - 2]
        synced = all(self.sync[1:usable])
        del self.bounds[: usable - 1]
        del self.sync[: usable - 1]
        return rel, synced

    def _close(self, end: float) -> None:
        if len(self.bounds) < 2 and self.period is None:
            raw = raw_crossings(self.store[:3, : self.length], self.tracker.min_period)
            if raw.size >= 2:
                self.bounds[:] = (raw + self.offset).tolist()
                self.sync[:] = [True] * raw.size
            return
        period = self.period if self.period is not None else self.bounds[-1] - self.bounds[-2]
        if self.period is None:
            # Nothing processed yet, so the buffer holds the whole stream: the cycles before
            # the filter's first crossing count too (a 4-cycle recording gives 3, not 2).
            while self.bounds[0] - period >= self.offset + 1.0:
                self.bounds.insert(0, self.bounds[0] - period)
                self.sync.insert(0, self.sync[0])
        while self.bounds[-1] + period <= end:
            self.bounds.append(self.bounds[-1] + period)
            self.sync.append(self.sync[-1])
        self.tracker.last = self.bounds[-1]

    def window_buffers(self, m: int) -> tuple[np.ndarray, ...]:
        """Harmonic windows for ``m`` cycles and the work arrays of ``main_cycles``.

        The step's cycles are split into round(m / window) windows of equal size (+-1), so
        every cycle counts once and no window straddles two reports. Returns the cycle
        indices where each window starts (and m), and views of the summed grids (windows,
        3 + CTs, GRID), the cycles' bin 1 (m, 3 + CTs) and the moments (windows, moments_needed).
        """
        groups = self._windows.get(m)
        if groups is None:
            if len(self._windows) > 100:  # steps of every size: keep the cache small
                self._windows.clear()
            n_groups = max(1, round(m / self.window))
            groups = self._windows[m] = np.arange(n_groups + 1) * m // n_groups
        n_groups = groups.size - 1
        if self.grid.shape[0] < n_groups:
            self.grid = np.empty((n_groups + 2, self.n_ch, GRID))
            self.spec = np.empty((n_groups + 2, self.n_ch, GRID // 2 + 1), dtype=complex)
            self.moments = np.empty((n_groups + 2, self.moments.shape[1]))
        if self.fundamental.shape[0] < m:
            self.fundamental = np.empty((m + m // 4, self.n_ch), dtype=complex)
        return (groups, self.grid[:n_groups], self.fundamental[:m],
                self.moments[:n_groups])

    def trim(self) -> None:
        """Drop samples no longer needed: keep filter history before the oldest open boundary."""
        keep_from = (self.bounds[0] if self.bounds else self.offset + self.length)
        cut = math.floor(keep_from) - self.offset - self.tracker.history_needed()
        cut = max(0, min(cut, self.length))
        if cut:
            rest = self.length - cut
            shift_left(self.store, cut, rest)
            self.length = rest
            if self.bad.shape[1]:
                self.bad = self.bad[:, cut:]
            self.offset += cut
