"""Each cycle resampled onto a fixed grid of phases, and the harmonic sums over the grids.

The cycles come from ``cycles`` (boundaries with fractional-sample edges). Resampling every
cycle at the same number of equally spaced phases turns harmonic analysis into one FFT per
10/12-cycle window (IEC 61000-4-7 grouping), and the interpolation's own gain at each order,
known exactly from moments of the taps' positions (``interpolation_gain``), is corrected.

Compiled kernels (numba, cached on disk); per main and second of a PM-4324A (12 CTs,
12.8 kS/s, docs/benchmarks.md), numpy -> compiled: synchronous resampling 1.5 -> 0.31 ms,
harmonic sums 0.70 -> 0.09 ms. Summing the cycles' grids per window in the resampling (one
FFT per window instead of per cycle) took it 0.45 -> 0.05 ms; unsigned tap indices (-25 to
-35 %) and real arithmetic for the element phasors in the harmonic sums (-20 %) gave
bit-identical results in the checks made.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def _lagrange_in_u() -> np.ndarray:
    """The Lagrange basis through the samples at -1, 0, 1, 2 as cubics in u = t - 1/2 (t in
    [0, 1) is the position past sample 0): row k holds w_k's coefficients of u^0 .. u^3."""
    nodes = (-1, 0, 1, 2)
    rows = []
    for k in nodes:
        others = [r for r in nodes if r != k]
        rows.append(np.polynomial.polynomial.polyfromroots([r - 0.5 for r in others])
                    / np.prod([k - r for r in others]))
    return np.array(rows)


_LAGRANGE_U = _lagrange_in_u()
_SIXTH = 1.0 / 6.0
GAIN_TERMS = 21  # Taylor terms of exp(-j w u) up to Nyquist, |w u| < pi/2: the 21st < 3e-16
N_MOMENTS = GAIN_TERMS + 3  # moments of u: 0 .. GAIN_TERMS + 2 (the most any rate needs)


def moments_needed(min_period: float, orders: int) -> int:
    """Moments of u (``N_MOMENTS`` at most) that the gain up to ``orders`` needs for cycles
    of at least ``min_period`` samples: Taylor terms until (w/2)^n / n! < 3e-15. 12.8 kS/s
    needs 17 terms (20 moments), a rate where order 50 nears Nyquist all 21; each moment
    costs a pass over every cycle's grid points, so rates that do not need them skip them."""
    half_w = min(math.pi, 2 * math.pi * orders / min_period) / 2
    terms, term = 1, half_w
    while term >= 3e-15 and terms < GAIN_TERMS:
        terms += 1
        term *= half_w / terms
    return terms + 3


@njit(cache=True, fastmath={"reassoc", "contract"})
def synchronous_resample(x: np.ndarray, bounds: np.ndarray, groups: np.ndarray,
                         out: np.ndarray, fundamental: np.ndarray,
                         moments: np.ndarray) -> None:
    """Resample rows of x at ``out.shape[2]`` equally spaced phases of each cycle and sum the
    cycles of each group (their grids, not spectra: the group's DFT is then one FFT).

    The point p of cycle c is x[r] at bounds[c] + (bounds[c+1] - bounds[c]) * p / points, by
    4-point Lagrange interpolation (error O((w dt)^4): ~3e-6 on the fundamental even at 60
    samples per cycle, where linear interpolation would lose 1e-3). Cycles groups[g] ..
    groups[g + 1] - 1 form group g. Fills out (groups, rows, points) with the summed grids,
    fundamental (cycles, rows) with each cycle's rfft bin 1 (the per-cycle Q1 needs it), and
    moments (groups, N_MOMENTS) with the sums over the group's points of u^n, u = t - 1/2,
    t the interpolation's fractional position, for ``interpolation_gain``.
    """
    points = out.shape[2]
    # Unsigned positions of the first tap: numba checks signed indices for wraparound on
    # every load, which cost a third of this kernel's time. Boundaries are >= 1 (one sample
    # before each); the clamp only keeps a boundary in [0, 1) (a raw crossing in the first
    # sample interval of a very short recording) inside the row instead of wrapping to its end.
    # The per-point loops that do not gather (weights, sums, moments, the bin-1 products) are
    # apart from the interpolation so that they vectorise: together 40 % faster than one loop;
    # the weights multiply by 1/6 rather than divide (10 % of the kernel).
    first = np.empty(points, dtype=np.uint64)
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    phase = np.arange(points) / points
    w0, w1, w2, w3 = np.empty(points), np.empty(points), np.empty(points), np.empty(points)
    u, power, tap, y = np.empty(points), np.empty(points), np.empty(points), np.empty((3, points))
    rows = out.shape[1]
    cos_p = np.cos(2 * np.pi * np.arange(points) / points)
    sin_p = np.sin(2 * np.pi * np.arange(points) / points)
    out[:] = 0.0
    moments[:] = 0.0
    for g in range(groups.size - 1):
        for c in range(groups[g], groups[g + 1]):
            length, start = bounds[c + 1] - bounds[c], bounds[c]
            for p in range(points):
                pos = start + length * phase[p]
                whole = np.floor(pos)
                t = pos - whole
                tm1, tp1, tm2 = t - 1.0, t + 1.0, t - 2.0
                tap[p] = max(whole - 1.0, 0.0)
                w0[p] = -t * tm1 * tm2 * _SIXTH
                w1[p] = tp1 * tm1 * tm2 * 0.5
                w2[p] = -tp1 * t * tm2 * 0.5
                w3[p] = tp1 * t * tm1 * _SIXTH
                u[p] = t - 0.5
                power[p] = 1.0
            for p in range(points):  # apart: a double to integer conversion does not vectorise
                first[p] = np.uint64(tap[p])
            for n in range(moments.shape[1]):
                total = 0.0
                for p in range(points):
                    total += power[p]
                    power[p] *= u[p]
                moments[g, n] += total
            # three rows per pass share the taps' positions and weights (20 % faster); a
            # last partial triple repeats its final row
            for r0 in range(0, rows, 3):
                xa, xb, xc = x[r0], x[min(r0 + 1, rows - 1)], x[min(r0 + 2, rows - 1)]
                ya, yb, yc = y[0], y[1], y[2]
                for p in range(points):
                    j = first[p]
                    a0, a1, a2, a3 = w0[p], w1[p], w2[p], w3[p]
                    ya[p] = a0 * xa[j] + a1 * xa[j + one] + a2 * xa[j + two] + a3 * xa[j + three]
                    yb[p] = a0 * xb[j] + a1 * xb[j + one] + a2 * xb[j + two] + a3 * xb[j + three]
                    yc[p] = a0 * xc[j] + a1 * xc[j + one] + a2 * xc[j + two] + a3 * xc[j + three]
                for q in range(min(3, rows - r0)):
                    o, yq = out[g, r0 + q], y[q]
                    re = im = 0.0
                    for p in range(points):
                        o[p] += yq[p]
                        re += yq[p] * cos_p[p]
                        im += yq[p] * sin_p[p]
                    fundamental[c, r0 + q] = complex(re, -im)


@njit(cache=True)
def interpolation_gain(moments: np.ndarray, period: np.ndarray, orders: int) -> np.ndarray:
    """Mean complex gain of the 4-point interpolation at each harmonic order over a group's
    points, from the moments of ``synchronous_resample``.

    At fractional position t the interpolant of exp(j w n) is exp(j w (i + t)) times
    H_t(w) = sum_k w_k(t) exp(j w (k - 1 - t)), so the bin of that harmonic in the group's
    synchronous DFT carries the mean of H over the points: 1 where the points fall on
    samples, down to 0.94 at w = 1.47 (order 50 of 60 Hz at 12.8 kS/s) and 0.44 just below
    Nyquist (w = pi) when t is spread. With u = t - 1/2, H = sum_k exp(j w (k - 3/2)) w_k(u)
    exp(-j w u), a cubic times a Taylor series in u: its mean needs only the moments of u,
    and is a polynomial in w per group (evaluated by Horner's rule for each order). moments
    (groups, 3 + Taylor terms, see ``moments_needed``) as filled there (sums), period
    (groups,) mean cycle length in samples. Returns (groups, orders + 1) complex; 1 at and
    above Nyquist (w >= pi: those orders cannot be measured,
    ``window_weights`` drops them).
    """
    n_groups = moments.shape[0]
    gain = np.ones((n_groups, orders + 1), dtype=np.complex128)
    # mean(u^j exp(-j w u)) = A_j(w^2) - j w B_j(w^2), real polynomials in w^2 with
    # coefficients even[m, j] = (-1)^m / (2m)! mean(u^(2m + j)) and odd[m, j] = (-1)^m /
    # (2m + 1)! mean(u^(2m + 1 + j)); real arithmetic is four times less work than complex
    terms = moments.shape[1] - 3
    n_even, n_odd = (terms + 1) // 2, terms // 2
    even, odd = np.empty((n_even, 4)), np.empty((n_odd, 4))
    for g in range(n_groups):
        mean = moments[g] / moments[g, 0]
        factorial = 1.0
        for n in range(terms):
            sign = -1.0 if (n // 2) % 2 else 1.0
            for j in range(4):
                if n % 2:
                    odd[n // 2, j] = sign * mean[n + j] / factorial
                else:
                    even[n // 2, j] = sign * mean[n + j] / factorial
            factorial *= n + 1
        for h in range(1, orders + 1):
            om = 2 * np.pi * h / period[g]
            if om >= np.pi:
                break
            w2 = om * om
            half = complex(np.cos(0.5 * om), np.sin(0.5 * om))
            cube = half * half * half
            rotation = (cube.conjugate(), half.conjugate(), half, cube)  # exp(j w (k - 3/2))
            total = 0.0j
            for j in range(4):
                re = even[n_even - 1, j]
                for m in range(n_even - 2, -1, -1):
                    re = re * w2 + even[m, j]
                im = odd[n_odd - 1, j]
                for m in range(n_odd - 2, -1, -1):
                    im = im * w2 + odd[m, j]
                basis = 0.0j
                for k in range(4):
                    basis += rotation[k] * _LAGRANGE_U[k, j]
                total += basis * complex(re, -om * im)
            gain[g, h] = total
    return gain


@njit(cache=True)
def window_weights(bounds: np.ndarray, groups: np.ndarray, moments: np.ndarray, fs: float,
                   orders: int, fundamental: np.ndarray) -> np.ndarray:
    """Weights of the |bin|^2 of the groups' summed-grid spectra (groups, orders + 1): the
    group's seconds over its cycles squared (the mean cycle's spectrum), over the
    interpolation's mean power gain at that order; 0 for orders at or above Nyquist (half
    the samples per cycle), whose bins hold only images of the orders below it. Divides each
    cycle's ``fundamental`` (cycles, rows) by its group's gain at order 1 in place."""
    n_groups = groups.size - 1
    cycles = np.empty(n_groups)
    period = np.empty(n_groups)
    for g in range(n_groups):
        cycles[g] = groups[g + 1] - groups[g]
        period[g] = (bounds[groups[g + 1]] - bounds[groups[g]]) / cycles[g]
    gain = interpolation_gain(moments, period, orders)
    weight = np.empty((n_groups, orders + 1))
    for g in range(n_groups):
        for h in range(orders + 1):
            z = gain[g, h]
            if 2 * h >= period[g]:
                weight[g, h] = 0.0
            else:
                weight[g, h] = period[g] / fs / cycles[g] / (z.real * z.real + z.imag * z.imag)
        for c in range(groups[g], groups[g + 1]):
            fundamental[c] /= gain[g, 1]
    return weight


@njit(cache=True)
def harmonic_sums(spec: np.ndarray, weight: np.ndarray,
                  coeff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted harmonic powers of window spectra.

    spec: (windows, 3 + k, bins) complex, rows va, vb, vc then k currents; weight: (windows,
    orders + 1) applied to each |bin|^2; coeff: (k, 3) element voltages from the phase
    voltages. Returns, for orders 0..orders, sum_g weight |X_ch|^2 per channel (3 + k,
    orders + 1) and sum_g weight |V_el|^2 per element (k, orders + 1).
    """
    n_groups, n_ch = spec.shape[0], spec.shape[1]
    orders = weight.shape[1] - 1
    k = coeff.shape[0]
    ch = np.zeros((n_ch, orders + 1))
    el = np.zeros((k, orders + 1))
    for g in range(n_groups):
        for r in range(n_ch):
            for h in range(orders + 1):
                z = spec[g, r, h]
                ch[r, h] += weight[g, h] * (z.real * z.real + z.imag * z.imag)
        for r in range(k):
            # V_el in real arithmetic: the same values as coeff * complex, a third of the work
            c0, c1, c2 = coeff[r, 0], coeff[r, 1], coeff[r, 2]
            for h in range(orders + 1):
                va, vb, vc = spec[g, 0, h], spec[g, 1, h], spec[g, 2, h]
                zr = c0 * va.real + c1 * vb.real + c2 * vc.real
                zi = c0 * va.imag + c1 * vb.imag + c2 * vc.imag
                el[r, h] += weight[g, h] * (zr * zr + zi * zi)
    return ch, el


@njit(cache=True)
def fundamental_products(fundamental: np.ndarray, coeff: np.ndarray) -> np.ndarray:
    """V_el,1 * conj(I_1) per element and cycle (k, cycles) from each cycle's bin 1
    (cycles, 3 + k): rows va, vb, vc then the k currents."""
    m, k = fundamental.shape[0], coeff.shape[0]
    s1 = np.empty((k, m), dtype=np.complex128)
    for c in range(m):
        va, vb, vc = fundamental[c, 0], fundamental[c, 1], fundamental[c, 2]
        for r in range(k):
            v_el = coeff[r, 0] * va + coeff[r, 1] * vb + coeff[r, 2] * vc
            s1[r, c] = v_el * np.conj(fundamental[c, 3 + r])
    return s1
