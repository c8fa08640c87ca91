"""Cycle boundaries from the voltage, and exact integrals over them.

Everything the meter reports is built on cycles of the measured fundamental (IEC 61000-4-30
style): a fixed-length window at nominal frequency costs up to 1.85 % of P at PF 0.5 and
50.5 Hz, whereas integrating over exact periods with fractional-sample edges is exact to
~1e-8 (metering-standards.md §5.3).

Frequency tracking (§5.2): the reference is the Clarke alpha signal va - (vb + vc)/2, which
survives the loss of any one phase, ignores a floating neutral and equals va on single-phase
systems. It is low-passed by a triangular FIR (two moving averages of half a nominal period:
zeros at every even harmonic, more than 20x suppression of the 3rd) whose constant group delay
is subtracted, so boundaries sit on the fundamental's rising zero crossings. Crossings are
located by linear interpolation between the two bracketing samples, which is exact to third
order on the filtered, nearly sinusoidal signal.

The per-sample work is done by small compiled kernels (numba, cached on disk): in numpy each
of them needed several passes and multi-megabyte temporaries over the buffer. Times per main
and second of a PM-4324A (12 CTs, 12.8 kS/s, docs/benchmarks.md), numpy -> compiled: product
integrals 6.9 -> 0.13 ms, tracker filter 0.30 -> 0.08 ms. One voltage row for single-phase
elements in the product integrals gave -10 to -15 % with bit-identical results. The
resampling onto each cycle's grid and the harmonic sums over it are in ``resample``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

F_MIN_HZ, F_MAX_HZ = 40.0, 70.0  # tracker lock range (reported range is 45..65 Hz)


class CycleTracker:
    """Streaming zero-crossing tracker for one main.

    ``update(v, offset)`` takes the phase voltages (rows va, vb, vc) held in the caller's
    buffer (absolute index of v[:, 0] = ``offset``) and returns the new cycle boundaries
    (absolute, fractional sample positions) with a flag per new boundary telling whether it
    is a real crossing (True) or a free-running one at the nominal period (voltage absent).
    """

    def __init__(self, fs: float, nominal_hz: float, min_amplitude: float):
        self.fs = fs
        self.nominal_period = fs / nominal_hz
        self.half = max(1, int(round(self.nominal_period / 2)))
        self.delay = self.half - 1.0  # group delay of the two-stage moving average
        self.min_period = fs / F_MAX_HZ
        self.max_period = fs / F_MIN_HZ
        self.min_amplitude = min_amplitude
        self.last: float | None = None  # last boundary emitted (absolute)
        self.last_real = True  # whether it was a real crossing (else free-running)

    def history_needed(self) -> int:
        """Samples before the last boundary the caller must keep in its buffer."""
        return 2 * self.half + 4

    def update(self, v: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
        n = v.shape[1]
        first_valid = 2 * (self.half - 1)
        if n <= first_valid + 2:
            return np.empty(0), np.empty(0, dtype=bool)
        mean_square, rising = filtered_crossings(v, self.half)
        # The filter output y[j] belongs to sample j + first_valid; its delay-corrected
        # position is j + first_valid - delay.
        shift = offset + first_valid - self.delay
        strong = math.sqrt(2 * mean_square) >= self.min_amplitude
        crossings = rising + shift if strong else np.empty(0)
        # Nothing beyond the filter's last output can be known yet; without a voltage there
        # is nothing to wait for, and free-running cycles may use the whole buffer.
        limit = shift + (n - first_valid) - 1 if strong else offset + n - 1.0
        last = self.last
        first = None  # the very first boundary, when there was none before
        if last is None:
            if crossings.size:
                last = float(crossings[0])
            elif not strong:
                last = offset + 1.0  # interpolation needs one sample before a boundary
            elif limit - shift > self.max_period:
                last = float(shift)
            else:
                return np.empty(0), np.empty(0, dtype=bool)
            first = last, crossings.size > 0
        new, real = _boundaries(crossings, last, self.min_period, self.max_period,
                                self.nominal_period, limit, self.last_real)
        self.last = float(new[-1]) if new.size else last
        self.last_real = bool(real[-1]) if new.size else self.last_real
        if first is not None:
            return np.r_[first[0], new], np.r_[first[1], real]
        return new, real


@njit(cache=True)
def _boundaries(crossings: np.ndarray, last: float, lo: float, hi: float, nominal: float,
                limit: float, last_real: bool) -> tuple[np.ndarray, np.ndarray]:
    """Boundaries after ``last``: the next is the first crossing at least ``lo`` after the
    previous one if it comes within ``hi``; where none does (a crossing too late, or none
    while data reaches beyond last + hi, i.e. up to ``limit``), run free at the nominal
    period. After a free-running boundary a crossing from lo / 2 on re-locks: otherwise one
    boundary displaced by a deep amplitude step (the filter moves it by up to ~15 % of a
    cycle) leaves the real crossings too close to every free-running boundary (at exactly
    the nominal frequency: for ever). Returns them and whether each is a real crossing."""
    cap = crossings.size + int((limit - last) / nominal) + 2
    out = np.empty(cap)
    real = np.empty(cap, dtype=np.bool_)
    n = 0
    k = 0
    while n < cap:
        gap = lo if (real[n - 1] if n else last_real) else 0.5 * lo
        while k < crossings.size and crossings[k] < last + gap:
            k += 1
        if k < crossings.size and crossings[k] <= last + hi:
            last = crossings[k]
            real[n] = True
        elif k < crossings.size or last + hi < limit:
            last = last + nominal
            real[n] = False
        else:
            break
        out[n] = last
        n += 1
    return out[:n], real[:n]


def raw_crossings(v: np.ndarray, min_gap: float) -> np.ndarray:
    """Rising zero crossings of the unfiltered Clarke reference, at least ``min_gap`` apart.

    Only for recordings too short for the filter (under ~2.5 cycles): on a distorted voltage
    these sit a constant phase away from the fundamental's, which still gives whole periods.
    """
    ref = v[0] - 0.5 * (v[1] + v[2])
    j = np.flatnonzero((ref[:-1] < 0) & (ref[1:] >= 0))
    found = j + ref[j] / (ref[j] - ref[j + 1])
    kept: list[float] = []
    for x in found:  # a handful per recording
        if not kept or x >= kept[-1] + min_gap:
            kept.append(float(x))
    return np.asarray(kept)


@njit(cache=True)
def filtered_crossings(v: np.ndarray, half: int) -> tuple[float, np.ndarray]:
    """Mean square of the filtered reference y, and the positions of y's rising zero crossings.

    The reference is the Clarke alpha va - (vb + vc) / 2 of v's rows; y is that through two
    moving averages of ``half`` samples, so y[j] covers samples j .. j + 2 half - 2; a rising
    crossing between y[j] < 0 and y[j + 1] >= 0 is at j + y[j] / (y[j] - y[j + 1]). One
    pass with two running sums over ring buffers (three passes and four temporaries took
    three times as long).
    """
    n = v.shape[1]
    size = n + 2 - 2 * half
    if size < 1:
        return 0.0, np.empty(0)
    # ring buffers of the last ``half`` reference samples and first-stage sums; the first
    # 2 half - 2 samples only fill them (no output yet)
    ref = np.zeros(half)
    box = np.zeros(half)
    sum_ref = sum_box = 0.0
    slot = 0
    for i in range(2 * half - 2):
        x = v[0, i] - 0.5 * (v[1, i] + v[2, i])
        sum_ref += x - ref[slot]
        ref[slot] = x
        if i >= half - 1:
            sum_box += sum_ref - box[slot]
            box[slot] = sum_ref
        slot = slot + 1 if slot + 1 < half else 0
    scale = 1.0 / (half * half)
    total = 0.0
    rising = np.empty(size)
    found = 0
    previous = 0.0
    for j in range(size):
        i = j + 2 * half - 2
        x = v[0, i] - 0.5 * (v[1, i] + v[2, i])
        sum_ref += x - ref[slot]
        ref[slot] = x
        sum_box += sum_ref - box[slot]
        box[slot] = sum_ref
        slot = slot + 1 if slot + 1 < half else 0
        y = sum_box * scale
        total += y * y
        if j > 0 and previous < 0 and y >= 0:
            rising[found] = j - 1 + previous / (previous - y)
            found += 1
        previous = y
    return total / size, rising[:found]


def cycle_integrals(y: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Integral of the piecewise-linear interpolant of each row over each cycle.

    y: (rows, n) samples (one unit of the second axis = one sample period).
    bounds: (m + 1,) increasing fractional positions into y, each cycle longer than one
    sample, with 1 <= bounds[0] and bounds[-1] <= n - 2.
    Returns (rows, m) integrals in y-units x samples (divide by the cycle length for a mean).
    """
    a = np.floor(bounds).astype(np.intp) + 1  # first sample strictly after each boundary
    alpha = a - bounds  # (0, 1]: part of the sample interval before a
    b = a[1:] - 1  # last sample at or before each cycle's end
    beta = bounds[1:] - b  # [0, 1)
    s = np.add.reduceat(y[:, : a[-1]], a[:-1], axis=1)  # sums of samples a_c .. b_c
    ya, ya1 = y[:, a[:-1]], y[:, a[:-1] - 1]
    yb, yb1 = y[:, b], y[:, b + 1]
    al, be = alpha[:-1], beta
    y_start = ya1 + (1.0 - al) * (ya - ya1)
    y_end = yb + be * (yb1 - yb)
    return s - 0.5 * (ya + yb) + 0.5 * al * (y_start + ya) + 0.5 * be * (yb + y_end)


@njit(cache=True, inline="always")
def _trapezoid(inner: float, ya1: float, ya: float, yb: float, yb1: float, al: float,
               be: float) -> float:
    """A cycle's integral from the sum of its whole samples a..b and the four edge samples."""
    y_start = ya1 + (1.0 - al) * (ya - ya1)
    y_end = yb + be * (yb1 - yb)
    return inner - 0.5 * (ya + yb) + 0.5 * al * (y_start + ya) + 0.5 * be * (yb + y_end)


@njit(cache=True, fastmath={"reassoc", "contract"})
def product_integrals(x: np.ndarray, coeff: np.ndarray, pairs: np.ndarray,
                      bounds: np.ndarray) -> np.ndarray:
    """``cycle_integrals`` of products of rows of x, formed on the fly.

    Rows of the result: for each row r of ``coeff``, (coeff[r] . x[0:3]) * x[3 + r] (element
    voltage times its current), then x[p] * x[q] for each (p, q) row of ``pairs``. Same
    trapezoid rule and fractional edges as ``cycle_integrals``, which would need every product
    row built over the whole buffer first; only the summation order differs (~1e-16 relative).
    x must be C-contiguous. Returns (len(coeff) + len(pairs), len(bounds) - 1).
    """
    k = coeff.shape[0]
    m = bounds.size - 1
    out = np.empty((k + pairs.shape[0], m))
    # An element on one phase voltage (wye wiring) reads that row alone: half the loads per
    # sample, and the same products (the zero terms add exactly nothing).
    phase = np.full(k, -1)
    for r in range(k):
        nonzero = np.flatnonzero(coeff[r])
        if nonzero.size == 1:
            phase[r] = nonzero[0]
    for c in range(m):
        a = int(np.floor(bounds[c])) + 1  # first sample strictly after the cycle's start
        b = int(np.floor(bounds[c + 1]))  # last sample at or before its end
        al = a - bounds[c]  # (0, 1]
        be = bounds[c + 1] - b  # [0, 1)
        # Slices indexed from 0 let LLVM vectorise the sums (no negative-index checks).
        va, vb, vc = x[0, a - 1 : b + 2], x[1, a - 1 : b + 2], x[2, a - 1 : b + 2]
        last = va.size - 1
        for r in range(k + pairs.shape[0]):
            s = 0.0
            if r < k and phase[r] >= 0:
                cp = coeff[r, phase[r]]
                u = x[phase[r], a - 1 : b + 2]
                i = x[3 + r, a - 1 : b + 2]
                for n in range(1, last):
                    s += cp * u[n] * i[n]
                y0, y1 = cp * u[0] * i[0], cp * u[1] * i[1]
                y2, y3 = cp * u[last - 1] * i[last - 1], cp * u[last] * i[last]
            elif r < k:
                c0, c1, c2 = coeff[r, 0], coeff[r, 1], coeff[r, 2]
                i = x[3 + r, a - 1 : b + 2]
                for n in range(1, last):
                    s += (c0 * va[n] + c1 * vb[n] + c2 * vc[n]) * i[n]
                y0 = (c0 * va[0] + c1 * vb[0] + c2 * vc[0]) * i[0]
                y1 = (c0 * va[1] + c1 * vb[1] + c2 * vc[1]) * i[1]
                y2 = (c0 * va[last - 1] + c1 * vb[last - 1] + c2 * vc[last - 1]) * i[last - 1]
                y3 = (c0 * va[last] + c1 * vb[last] + c2 * vc[last]) * i[last]
            else:
                u = x[pairs[r - k, 0], a - 1 : b + 2]
                w = x[pairs[r - k, 1], a - 1 : b + 2]
                for n in range(1, last):
                    s += u[n] * w[n]
                y0, y1 = u[0] * w[0], u[1] * w[1]
                y2, y3 = u[last - 1] * w[last - 1], u[last] * w[last]
            out[r, c] = _trapezoid(s, y0, y1, y2, y3, al, be)
    return out
