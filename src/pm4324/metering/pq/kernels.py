"""Compiled per-half-cycle kernels of the power-quality monitor (IEC 61000-4-30 class S).

``urms_half`` turns a main's buffered samples into Urms(1/2) values (one-cycle RMS refreshed
every half cycle, host-side-notes.md §5); ``scan_events`` runs the dip / swell /
interruption / rapid-voltage-change state machine over them. Both keep their state in small
arrays the caller owns, so a stream split into blocks anywhere gives the same values and
events. Compiled because the state machines walk ~100-120 values per main and second, and
the half-cycle sums touch every sample: as Python they would cost more than the metering.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pm4324.metering.cycles import _trapezoid
from pm4324.metering.pq.aggregate import STATE_SIZE as AGG_STATE_SIZE
from pm4324.metering.pq.aggregate import aggregate
from pm4324.metering.pq.flicker import pinst

# event kinds (column 0 of the events array)
DIP, SWELL, INTERRUPTION, RVC = 0, 1, 2, 3
EVENT_COLUMNS = 7  # kind, start, end, extreme, channel mask, delta_ss, unused
# state slots of scan_events
_DIP, _SWELL, _INT, _RVC = 0, 5, 9, 12  # active, start, extreme, mask[, had interruption]
_STEADY, _COUNT, _POS, _SUMS, _BEFORE = 15, 16, 17, 18, 21
STATE_SIZE = 24
# limit slots (volts)
DIP_ON, DIP_OFF, SWELL_ON, SWELL_OFF, INT_ON, INT_OFF, RVC_ON, RVC_STEADY = range(8)


@njit(cache=True, inline="always")
def _sq(x: np.ndarray, r: int, n: int, line_to_line: bool) -> float:
    if line_to_line:
        d = x[r, n] - x[(r + 1) % 3, n]
        return d * d
    return x[r, n] * x[r, n]


@njit(cache=True, fastmath={"reassoc", "contract"})
def urms_half(x: np.ndarray, points: np.ndarray, line_to_line: bool, scale: float,
              carry: np.ndarray, urms: np.ndarray, stamps: np.ndarray, sq: np.ndarray,
              sub: np.ndarray) -> int:
    """Urms(1/2) of the three phase (or line-to-line ab, bc, ca) voltages.

    x: (>= 3, n) buffer, rows va, vb, vc in terminal volts; points: (k + 1,) half-cycle
    boundaries (fractional positions into x, each interval longer than one sample, as for
    ``cycles.cycle_integrals``). A value is the RMS over two consecutive half cycles (one
    cycle) times ``scale`` (the PT ratio), stamped with the window's end.
    carry: (5,) the last half cycle of the previous call (three integrals of squares, its
    length, 1 when set); updated. urms: (3, >= k) and stamps: (>= k,) receive the values,
    sq: (3, >= k) every half cycle's integrals of the squares (terminal V^2 x samples),
    sub: (3, >= 4k) the mean squares over its quarters (the flickermeter's input).
    Returns how many values were written (k, or k - 1 on the very first call).
    """
    count = 0
    seg = np.empty(3)
    for c in range(points.size - 1):
        lo, hi = points[c], points[c + 1]
        quarter = 0.25 * (hi - lo)
        seg[:] = 0.0
        for q in range(4):
            ql, qh = lo + q * quarter, lo + (q + 1) * quarter
            a = int(math.floor(ql)) + 1
            b = int(math.floor(qh))
            for r in range(3):
                if line_to_line:
                    u, w = x[r, a - 1 : b + 2], x[(r + 1) % 3, a - 1 : b + 2]
                    part = _squares_ll(u, w, a - ql, qh - b)
                else:
                    part = _squares(x[r, a - 1 : b + 2], a - ql, qh - b)
                seg[r] += part
                sub[r, 4 * c + q] = part / quarter
        for r in range(3):
            sq[r, c] = seg[r]
        if carry[4] > 0:
            for r in range(3):
                urms[r, count] = math.sqrt(max(0.0, carry[r] + seg[r])
                                           / (carry[3] + hi - lo)) * scale
            stamps[count] = hi
            count += 1
        carry[0], carry[1], carry[2], carry[3], carry[4] = seg[0], seg[1], seg[2], hi - lo, 1.0
    return count


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _squares(u: np.ndarray, al: float, be: float) -> float:
    """Integral of u^2 over a half cycle; u runs from the sample before it to the one after
    (slices from 0: LLVM vectorises the sum)."""
    last = u.size - 1
    s = 0.0
    for n in range(1, last):
        s += u[n] * u[n]
    return _trapezoid(s, u[0] * u[0], u[1] * u[1], u[last - 1] * u[last - 1],
                      u[last] * u[last], al, be)


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _squares_ll(u: np.ndarray, w: np.ndarray, al: float, be: float) -> float:
    """``_squares`` of u - w (a line-to-line voltage)."""
    last = u.size - 1
    s = 0.0
    for n in range(1, last):
        s += (u[n] - w[n]) * (u[n] - w[n])
    d0, d1, d2, d3 = u[0] - w[0], u[1] - w[1], u[last - 1] - w[last - 1], u[last] - w[last]
    return _trapezoid(s, d0 * d0, d1 * d1, d2 * d2, d3 * d3, al, be)


@njit(cache=True)
def half_grid(bounds: np.ndarray, grid: np.ndarray, points: np.ndarray) -> int:
    """The step's half-cycle grid (written to ``points``, same frame as ``bounds``); returns
    the number of points (0 or >= 2).

    Not the tracker's boundaries themselves: its filter moves a boundary near a deep
    amplitude step by up to ~15 % of a cycle, and a window that is not one whole cycle
    misreads a sine's RMS. The grid steps by half the step's median cycle, continuing from
    grid[0] (where it got to; grid[1] = 1 once set, same frame), and is shifted back onto
    the boundaries' half-cycle phase when it has drifted 2 % of a cycle off it (regular
    cycles only), so it stays on the zero crossings as the frequency wanders; it never skips
    or repeats a half cycle. grid is updated.
    """
    if bounds.size < 2:
        return 0
    lengths = np.diff(bounds)
    period = np.median(lengths)
    g = grid[0] if grid[1] > 0 else bounds[0]
    if lengths.max() - lengths.min() < 0.01 * period:
        half = 0.5 * period
        off = (bounds[0] - g) % half  # the shift that puts g on a boundary's half-cycle phase
        if off > 0.5 * half:
            off -= half
        if abs(off) > 0.02 * period:
            g += off
    k = int((bounds[-1] - g) / (0.5 * period) + 1e-9)
    if k < 1:
        return 0
    for j in range(k + 1):
        points[j] = g + 0.5 * period * j
    grid[0], grid[1] = points[k], 1.0
    return k + 1


@njit(cache=True, inline="always")
def _emit(events: np.ndarray, k: int, kind: int, start: float, end: float, extreme: float,
          mask: float, delta_ss: float) -> int:
    if k < events.shape[0]:
        events[k, 0], events[k, 1], events[k, 2] = kind, start, end
        events[k, 3], events[k, 4], events[k, 5], events[k, 6] = extreme, mask, delta_ss, 0.0
    return k + 1


@njit(cache=True)
def scan_events(urms: np.ndarray, stamps: np.ndarray, limits: np.ndarray, state: np.ndarray,
                ring: np.ndarray, ring_t: np.ndarray, events: np.ndarray,
                flags: np.ndarray) -> int:
    """Dips, swells, interruptions and rapid voltage changes from Urms(1/2) values.

    urms: (3, n) values; stamps: (n,) their time stamps (window ends). limits: (8,) volts,
    see DIP_ON..RVC_STEADY. Polyphase rules (IEC 61000-4-30 §5.4): a dip starts when any
    channel falls below DIP_ON and ends when all are at or above DIP_OFF (threshold +
    hysteresis); residual = lowest value. A swell is the mirror (highest value). An
    interruption starts when all channels are below INT_ON and ends when any reaches INT_OFF;
    a dip that contained an interruption is reported as the interruption only. An RVC (§5.11)
    starts when, in steady state, a value leaves the mean of the preceding ring.shape[1]
    values (100/120: one second) by more than RVC_ON; it ends when those values are all
    within RVC_STEADY of their mean again (end = the first value of that steady second);
    extreme = largest deviation from the mean before, delta_ss = mean after - mean before
    (largest channel); a dip, swell or interruption during it cancels it.
    state: (STATE_SIZE,), ring: (3, N), ring_t: (N,) carry everything between calls.
    events: (E, EVENT_COLUMNS) out, flags: (n,) out (True while a dip, swell or
    interruption is in progress). Returns the number of events (only the first E stored).
    """
    n_ring = ring.shape[1]
    k = 0
    for j in range(stamps.size):
        t = stamps[j]
        lo = min(urms[0, j], urms[1, j], urms[2, j])
        hi = max(urms[0, j], urms[1, j], urms[2, j])
        below, above = 0.0, 0.0
        for r in range(3):
            if urms[r, j] < limits[DIP_ON]:
                below += 2.0**r
            if urms[r, j] > limits[SWELL_ON]:
                above += 2.0**r
        if state[_DIP] == 0.0:
            if lo < limits[DIP_ON]:
                state[_DIP], state[_DIP + 1], state[_DIP + 2] = 1.0, t, lo
                state[_DIP + 3], state[_DIP + 4] = below, 0.0
        else:
            state[_DIP + 2] = min(state[_DIP + 2], lo)
            state[_DIP + 3] = float(int(state[_DIP + 3]) | int(below))
        if state[_INT] == 0.0:
            if hi < limits[INT_ON]:
                state[_INT], state[_INT + 1], state[_INT + 2] = 1.0, t, lo
                state[_DIP + 4] = 1.0
        else:
            state[_INT + 2] = min(state[_INT + 2], lo)
            if hi >= limits[INT_OFF]:
                k = _emit(events, k, INTERRUPTION, state[_INT + 1], t, state[_INT + 2], 7.0, 0.0)
                state[_INT] = 0.0
        if state[_DIP] != 0.0 and lo >= limits[DIP_OFF]:
            if state[_DIP + 4] == 0.0:
                k = _emit(events, k, DIP, state[_DIP + 1], t, state[_DIP + 2], state[_DIP + 3],
                          0.0)
            state[_DIP] = 0.0
        if state[_SWELL] == 0.0:
            if hi > limits[SWELL_ON]:
                state[_SWELL], state[_SWELL + 1], state[_SWELL + 2] = 1.0, t, hi
                state[_SWELL + 3] = above
        else:
            state[_SWELL + 2] = max(state[_SWELL + 2], hi)
            state[_SWELL + 3] = float(int(state[_SWELL + 3]) | int(above))
            if hi <= limits[SWELL_OFF]:
                k = _emit(events, k, SWELL, state[_SWELL + 1], t, state[_SWELL + 2],
                          state[_SWELL + 3], 0.0)
                state[_SWELL] = 0.0
        busy = state[_DIP] != 0.0 or state[_SWELL] != 0.0 or state[_INT] != 0.0
        flags[j] = busy
        if busy:  # no RVC inside an event, and a fresh steady second after it
            state[_RVC] = state[_STEADY] = state[_COUNT] = 0.0
            continue
        k = _rvc_value(urms, j, t, limits, state, ring, ring_t, n_ring, events, k)
    return k


@njit(cache=True, inline="always")
def _rvc_value(urms: np.ndarray, j: int, t: float, limits: np.ndarray, state: np.ndarray,
               ring: np.ndarray, ring_t: np.ndarray, n_ring: int, events: np.ndarray,
               k: int) -> int:
    """One value through the RVC detector of ``scan_events``."""
    full = state[_COUNT] >= n_ring
    if state[_STEADY] != 0.0 and full:
        dev = 0.0
        for r in range(3):
            dev = max(dev, abs(urms[r, j] - state[_SUMS + r] / n_ring))
        if state[_RVC] == 0.0 and dev > limits[RVC_ON]:
            state[_RVC], state[_RVC + 1], state[_RVC + 2] = 1.0, t, dev
            for r in range(3):
                state[_BEFORE + r] = state[_SUMS + r] / n_ring
            state[_STEADY] = 0.0
    if state[_RVC] != 0.0:
        for r in range(3):
            state[_RVC + 2] = max(state[_RVC + 2], abs(urms[r, j] - state[_BEFORE + r]))
    pos = int(state[_POS])
    if state[_COUNT] == 0.0:
        pos = 0
        for r in range(3):
            state[_SUMS + r] = 0.0
    for r in range(3):
        state[_SUMS + r] += urms[r, j] - (ring[r, pos] if full else 0.0)
        ring[r, pos] = urms[r, j]
    ring_t[pos] = t
    state[_COUNT] = min(state[_COUNT] + 1.0, n_ring)
    state[_POS] = (pos + 1) % n_ring
    if state[_POS] == 0.0:  # re-summed once per turn: no drift over months
        for r in range(3):
            state[_SUMS + r] = ring[r, :].sum()
    if state[_STEADY] == 0.0 and state[_COUNT] >= n_ring:
        steady = True
        for r in range(3):
            mean = state[_SUMS + r] / n_ring
            for q in range(n_ring):
                if abs(ring[r, q] - mean) > limits[RVC_STEADY]:
                    steady = False
        if steady:
            state[_STEADY] = 1.0
            if state[_RVC] != 0.0:
                ss = 0.0
                for r in range(3):
                    d = state[_SUMS + r] / n_ring - state[_BEFORE + r]
                    if abs(d) > abs(ss):
                        ss = d
                oldest = int(state[_POS])  # the slot written next holds the oldest value
                k = _emit(events, k, RVC, state[_RVC + 1], ring_t[oldest], state[_RVC + 2],
                          7.0, ss)
                state[_RVC] = 0.0
    return k


@njit(cache=True)
def half_cycles(store: np.ndarray, bounds: np.ndarray, fundamental: np.ndarray,
                points: np.ndarray, work: np.ndarray, flags: np.ndarray, st: np.ndarray,
                ring: np.ndarray, limits: np.ndarray, events: np.ndarray, rows: np.ndarray,
                offset: float, line_to_line: bool, scale: float, fs: float,
                per_basic: int, sub: np.ndarray, sos: np.ndarray, fparams: np.ndarray,
                fstate: np.ndarray, hist: np.ndarray) -> tuple[int, int, int]:
    """One main's step in one call (as Python glue it cost more than the kernels): the
    half-cycle grid, Urms(1/2), the event scan, then the aggregation (``aggregate``).

    bounds: the step's cycle boundaries relative to ``store`` (column 0 = absolute sample
    ``offset``); fundamental: (m, >= 3) the cycles' fundamental phasors. st: the main's
    state (ST_SIZE: carry, grid, event and aggregation state); ring: (4, N) the RVC ring
    (three channels, then the stamps). work: (7, >= n) scratch, afterwards rows 0-2 the
    Urms(1/2) values and row 3 their stamps (absolute); flags: (>= n,) their event flags.
    sub, sos, fparams, fstate, hist: the flickermeter's (``flicker.pinst``).
    Returns (values, events, aggregate rows).
    """
    carry, grid = st[0:5], st[5:7]
    state, agg = st[7 : 7 + STATE_SIZE], st[7 + STATE_SIZE :]
    grid[0] -= offset  # kept absolute between calls
    n_points = half_grid(bounds, grid, points)
    grid[0] += offset
    urms, stamps, sq = work[0:3], work[3], work[4:7]
    got = urms_half(store, points[:n_points], line_to_line, scale, carry, urms, stamps, sq,
                    sub)
    halves = max(0, n_points - 1)
    pinst(sub[:, : 4 * halves], sos, fparams, fstate, hist)
    stamps[:got] += offset
    k = scan_events(urms[:, :got], stamps[:got], limits, state, ring[0:3], ring[3], events,
                    flags)
    ends = points[1:n_points] + offset
    n_rows = aggregate(sq[:, :halves], np.diff(points[:n_points]), ends, flags, halves - got,
                       bounds + offset, fundamental, per_basic, scale, fs, line_to_line, agg,
                       rows)
    return got, k, n_rows


ST_SIZE = 7 + STATE_SIZE + AGG_STATE_SIZE
