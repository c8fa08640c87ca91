"""IEC 61000-4-30 time aggregation of one main's voltage (compiled, state in arrays).

Basic intervals of 10 (50 Hz) / 12 (60 Hz) cycles, gapless, built from the half-cycle grid of
``kernels.urms_half`` (20 / 24 half cycles: V = RMS over the interval) and the engine's
per-cycle fundamental phasors (their mean over the interval gives the unbalance). They are
aggregated by RMS to 150/180 cycles (15 basic values) and to clock-aligned 10 minutes; at a
10-minute tick the running basic and 150/180-cycle intervals end early and new ones start
(the standard's resynchronisation, metering-standards.md §2.2). A basic interval that
contains a half cycle of a dip, swell or interruption is flagged, and so is every aggregate
containing it (§2.5). The 10-s frequency is the number of whole cycles within the clock
interval over their duration (cycles across a tick are discarded, §2.3).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# output rows (one per completed aggregate): kind, end (absolute sample), Va, Vb, Vc (primary
# rms), u2 %, u0 %, flagged, frequency Hz, seconds covered, basic values in it
ROW_150, ROW_600, ROW_10S = 0, 1, 2
ROW_COLUMNS = 11
# state slots
_B, _BLEN, _BHALF, _BFLAG, _BPH, _BCYC = 0, 3, 4, 5, 6, 12
_S150, _S600 = 13, 21  # v2 x3, u2^2, u0^2, count, flag, seconds
NEXT_600, NEXT_10, _FCOUNT, _FDUR, _FFLAG = 29, 30, 31, 32, 33
STATE_SIZE = 36
_A = complex(-0.5, math.sqrt(3) / 2)  # e^{j120}


@njit(cache=True, inline="always")
def _add_to(st: np.ndarray, at: int, v2: np.ndarray, u2: float, u0: float, flag: float,
            seconds: float) -> None:
    for r in range(3):
        st[at + r] += v2[r]
    st[at + 3] += u2 * u2
    st[at + 4] += u0 * u0
    st[at + 5] += 1.0
    st[at + 6] = max(st[at + 6], flag)
    st[at + 7] += seconds


@njit(cache=True, inline="always")
def _close(st: np.ndarray, at: int, kind: int, end: float, out: np.ndarray, k: int) -> int:
    n = st[at + 5]
    if n > 0 and k < out.shape[0]:
        out[k, 0], out[k, 1] = kind, end
        for r in range(3):
            out[k, 2 + r] = math.sqrt(st[at + r] / n)
        out[k, 5], out[k, 6] = math.sqrt(st[at + 3] / n), math.sqrt(st[at + 4] / n)
        out[k, 7], out[k, 8], out[k, 9], out[k, 10] = st[at + 6], 0.0, st[at + 7], n
        k += 1
    st[at : at + 8] = 0.0
    return k


@njit(cache=True)
def aggregate(sq: np.ndarray, lengths: np.ndarray, ends: np.ndarray, flags: np.ndarray,
              lag: int, bounds: np.ndarray, fundamental: np.ndarray, per_basic: int,
              scale: float, fs: float, line_to_line: bool, st: np.ndarray,
              out: np.ndarray) -> int:
    """Advance one main's aggregates by a step's half cycles and cycles.

    sq: (3, k) integrals of the squared voltages over each half cycle (terminal V^2 x
    samples), lengths: (k,) samples, ends: (k,) absolute end positions; flags: the event
    flags of the Urms(1/2) values, value j ending with half cycle j + lag. bounds: (m + 1,)
    absolute cycle boundaries, fundamental: (m, >= 3) the cycles' fundamental phasors of va,
    vb, vc (any common scale). per_basic: cycles per basic interval (10 / 12). st: state
    (STATE_SIZE,), NEXT_600 / NEXT_10 hold the next clock ticks (absolute samples) and must
    be set before the first call. Completed aggregates go to ``out`` (rows as ROW_*); returns
    their number.
    """
    k = 0
    v2 = np.empty(3)
    j = 0  # next cycle to add to the basic interval
    m = bounds.size - 1
    for c in range(lengths.size):
        for r in range(3):
            st[_B + r] += sq[r, c]
        st[_BLEN] += lengths[c]
        st[_BHALF] += 1.0
        if c - lag >= 0 and flags[c - lag]:
            st[_BFLAG] = 1.0
            st[_FFLAG] = 1.0
        while j < m and bounds[j + 1] <= ends[c]:
            for r in range(3):
                z = fundamental[j, r]
                st[_BPH + 2 * r] += z.real
                st[_BPH + 2 * r + 1] += z.imag
            st[_BCYC] += 1.0
            j += 1
        tick = ends[c] >= st[NEXT_600]
        if st[_BHALF] >= 2 * per_basic or tick:
            k = _basic(st, v2, scale, line_to_line, fs, ends[c], out, k)
            if st[_S150 + 5] >= 15 or tick:
                k = _close(st, _S150, ROW_150, ends[c], out, k)
        if tick:
            k = _close(st, _S600, ROW_600, st[NEXT_600], out, k)
            st[NEXT_600] += 600.0 * fs
    for q in range(j, m):  # cycles ending after the last half cycle: into the running interval
        for r in range(3):
            st[_BPH + 2 * r] += fundamental[q, r].real
            st[_BPH + 2 * r + 1] += fundamental[q, r].imag
        st[_BCYC] += 1.0
    for q in range(m):  # 10-s frequency: whole cycles within the clock interval
        lo, hi = bounds[q], bounds[q + 1]
        if hi > st[NEXT_10]:
            if st[_FCOUNT] > 0 and k < out.shape[0]:
                out[k, :] = 0.0
                out[k, 0], out[k, 1], out[k, 7] = ROW_10S, st[NEXT_10], st[_FFLAG]
                out[k, 8] = fs * st[_FCOUNT] / st[_FDUR]
                out[k, 9], out[k, 10] = st[_FDUR] / fs, st[_FCOUNT]
                k += 1
            st[_FCOUNT] = st[_FDUR] = st[_FFLAG] = 0.0
            while st[NEXT_10] < hi:
                st[NEXT_10] += 10.0 * fs
            if lo < st[NEXT_10] - 10.0 * fs:
                continue  # across the tick: discarded
        st[_FCOUNT] += 1.0
        st[_FDUR] += hi - lo
    return k


@njit(cache=True, inline="always")
def _basic(st: np.ndarray, v2: np.ndarray, scale: float, line_to_line: bool, fs: float,
           end: float, out: np.ndarray, k: int) -> int:
    """Close the running basic interval into the 150/180-cycle and 10-minute sums."""
    length = st[_BLEN]
    for r in range(3):
        v2[r] = st[_B + r] / length * scale * scale
    ua = complex(st[_BPH], st[_BPH + 1])
    ub = complex(st[_BPH + 2], st[_BPH + 3])
    uc = complex(st[_BPH + 4], st[_BPH + 5])
    pos = abs(ua + _A * ub + _A * _A * uc)
    neg = abs(ua + _A * _A * ub + _A * uc)
    zero = abs(ua + ub + uc)
    u2 = 100.0 * neg / pos if pos > 0 else 0.0
    u0 = 100.0 * zero / pos if pos > 0 and not line_to_line else 0.0
    flag = st[_BFLAG]
    _add_to(st, _S150, v2, u2, u0, flag, length / fs)
    _add_to(st, _S600, v2, u2, u0, flag, length / fs)
    st[_B : _BCYC + 1] = 0.0
    return k
