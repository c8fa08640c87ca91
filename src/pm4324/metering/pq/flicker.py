"""Flicker Pst / Plt (IEC 61000-4-15 flickermeter) per main phase.

Input: the mean square of each phase voltage over eighths of a cycle on the half-cycle grid
of ``kernels.urms_half`` (8 f_nominal values a second: 400 / 480 Hz). Averaging over whole
eighths of a cycle is the anti-alias filter: the squared voltage's components at 2 h f fold
onto multiples of 2 f, never into the 0.05-35 Hz flicker band; its sinc response is part of
the calibration below. Then the standard's blocks 2-4 (digital, bilinear transform): the
mean square normalised by its own 27.3-s average (square-law demodulation), a 0.05-Hz
first-order high pass, a 35-Hz sixth-order Butterworth low pass, the eye-lamp weighting
filter (230 V or 120 V lamp), squaring, a 300-ms first-order low pass; scaled so a 8.8-Hz
sinusoidal fluctuation of dU/U = 0.25 % (120 V lamp: 0.321 %) gives a mean Pinst of 1.
Block 5: a log-class histogram of Pinst per 10-minute interval (4800 classes over 1e-6 ..
1e6, 0.6 % wide) gives the percentiles of Pst; Plt = cube root of the mean of 12 Pst^3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

SUBS = 4  # mean squares per half cycle
CLASSES, DECADES_FROM = 4800, -6.0  # histogram: 400 classes a decade from 1e-6
PER_DECADE = 400.0
WARM_UP_S = 20.0  # filters settling (the 0.05 Hz high pass, the 27.3 s average)
# eye-lamp weighting (IEC 61000-4-15 Ed. 2): k, lambda, w1, w2, w3, w4 (Hz for the w's)
LAMPS = {230: (1.74802, 4.05981, 9.15494, 2.27979, 1.22535, 21.9),
         120: (1.6357, 4.167375, 9.077169, 2.939902, 1.394468, 17.31512)}
REFERENCE = {230: 0.0025, 120: 0.00321}  # dU/U of the 8.8 Hz sine that gives Pinst = 1
# Pst (block 5): weights of the smoothed percentiles and which percentiles each averages
PST_TERMS = ((0.0314, (0.1,)), (0.0525, (0.7, 1.0, 1.5)), (0.0657, (2.2, 3.0, 4.0)),
             (0.28, (6.0, 8.0, 10.0, 13.0, 17.0)), (0.08, (30.0, 50.0, 80.0)))


def _bilinear(b: tuple[float, float, float], a: tuple[float, float, float],
              fs: float) -> np.ndarray:
    """One analog section b0 + b1 s + b2 s^2 over a0 + a1 s + a2 s^2 as a digital biquad row
    (b0, b1, b2, 1, a1, a2)."""
    k = 2.0 * fs
    num = (b[0] + b[1] * k + b[2] * k * k, 2 * b[0] - 2 * b[2] * k * k,
           b[0] - b[1] * k + b[2] * k * k)
    den = (a[0] + a[1] * k + a[2] * k * k, 2 * a[0] - 2 * a[2] * k * k,
           a[0] - a[1] * k + a[2] * k * k)
    return np.array([*num, *den]) / den[0]


def design(rate: float, lamp: int) -> np.ndarray:
    """The block 3 chain (high pass, Butterworth low pass, weighting) as biquads (n, 6)."""
    w = 2 * math.pi
    rows = [_bilinear((0.0, 1.0, 0.0), (w * 0.05, 1.0, 0.0), rate)]
    wc = 2 * rate * math.tan(math.pi * 35.0 / rate)  # pre-warped: -3 dB at 35 Hz exactly
    for q in range(3):  # sixth order: three conjugate pole pairs
        re = wc * math.cos(math.pi * (2 * q + 7) / 12)
        rows.append(_bilinear((wc * wc, 0.0, 0.0), (wc * wc, -2 * re, 1.0), rate))
    k, lam, w1, w2, w3, w4 = LAMPS[lamp]
    lam, w1, w2, w3, w4 = w * lam, w * w1, w * w2, w * w3, w * w4
    rows.append(_bilinear((0.0, k * w1, 0.0), (w1 * w1, 2 * lam, 1.0), rate))
    rows.append(_bilinear((1.0, 1 / w2, 0.0), (1.0, 1 / w3 + 1 / w4, 1 / (w3 * w4)), rate))
    return np.array(rows)


def response(sos: np.ndarray, f: float, rate: float) -> float:
    """|H| of the biquads times the eighth-cycle averaging's sinc, at f Hz."""
    z = np.exp(-2j * math.pi * f / rate)
    h = 1.0 + 0j
    for b0, b1, b2, a0, a1, a2 in sos:
        h *= (b0 + b1 * z + b2 * z * z) / (a0 + a1 * z + a2 * z * z)
    x = math.pi * f / rate
    return abs(h) * math.sin(x) / x


@dataclass(frozen=True)
class FlickerDesign:
    rate: float  # mean squares per second
    sos: np.ndarray
    params: np.ndarray  # normalising-average alpha, 300 ms low pass alpha, Pinst scale

    @classmethod
    def of(cls, nominal_hz: float, nominal_v: float) -> FlickerDesign:
        rate = 2 * SUBS * nominal_hz
        lamp = 120 if nominal_v <= 150 else 230
        sos = design(rate, lamp)
        m = REFERENCE[lamp] / 2  # dU/U is peak to peak: a modulation of amplitude m
        scale = 1.0 / (2 * m * m * response(sos, 8.8, rate) ** 2)
        alphas = (1 - math.exp(-1 / (27.3 * rate)), 1 - math.exp(-1 / (0.3 * rate)))
        return cls(rate, sos, np.array([*alphas, scale, WARM_UP_S * rate]))


@njit(cache=True, fastmath={"contract"})
def pinst(ms: np.ndarray, sos: np.ndarray, params: np.ndarray, state: np.ndarray,
          hist: np.ndarray) -> None:
    """Run mean squares (3, n) through blocks 2-4 and count Pinst into the histogram.

    state: (3, 3 + 2 * len(sos)) per channel: normalising average, 300-ms low pass, samples
    seen, then two delay elements per biquad (transposed direct form II). hist: (3, CLASSES).
    Pinst is classified once a cycle (every 2 SUBS values: 50 / 60 a second, the standard
    asks for at least 50). The channels run side by side: three independent filter chains
    keep the CPU's pipelines busy where one chain would wait on each result.
    """
    alpha, beta, scale, warm = params[0], params[1], params[2], params[3]
    n_sec = sos.shape[0]
    for j in range(ms.shape[1]):
        for r in range(ms.shape[0]):
            st = state[r]
            x = ms[r, j]
            if st[2] < 2 * SUBS:  # the first cycle: its mean (one value holds 2f ripple)
                st[0] = (st[0] * st[2] + x) / (st[2] + 1.0)
            else:
                st[0] += alpha * (x - st[0])
            y = x / st[0] - 1.0 if st[0] > 0 else 0.0
            for q in range(n_sec):
                d = 3 + 2 * q
                out = sos[q, 0] * y + st[d]
                st[d] = sos[q, 1] * y - sos[q, 4] * out + st[d + 1]
                st[d + 1] = sos[q, 2] * y - sos[q, 5] * out
                y = out
            st[1] += beta * (y * y - st[1])
            st[2] += 1.0
            if st[2] > warm and st[2] % (2 * SUBS) == 0.0:
                p = scale * st[1]
                c = int((math.log10(p) - DECADES_FROM) * PER_DECADE) if p > 0 else 0
                hist[r, min(max(c, 0), CLASSES - 1)] += 1


def percentile_levels(hist: np.ndarray, shares: list[float]) -> np.ndarray:
    """Levels exceeded for ``shares`` % of the time, per row of a Pinst histogram (the
    class's geometric centre); NaN for an empty row."""
    out = np.full((hist.shape[0], len(shares)), np.nan)
    centres = 10 ** (DECADES_FROM + (np.arange(CLASSES) + 0.5) / PER_DECADE)
    for r, row in enumerate(hist):
        total = row.sum()
        if total == 0:
            continue
        above = np.cumsum(row[::-1])  # counts at or above each class, from the top
        for k, share in enumerate(shares):
            idx = int(np.searchsorted(above, share / 100 * total))
            out[r, k] = centres[CLASSES - 1 - min(idx, CLASSES - 1)]
    return out


def pst(hist: np.ndarray) -> np.ndarray:
    """Pst per row of a 10-minute Pinst histogram (IEC 61000-4-15 §4.7.2)."""
    shares = [p for _, ps in PST_TERMS for p in ps]
    levels = percentile_levels(hist, shares)
    total = np.zeros(hist.shape[0])
    col = 0
    for weight, ps in PST_TERMS:
        total += weight * levels[:, col : col + len(ps)].mean(axis=1)
        col += len(ps)
    return np.sqrt(total)


def plt(psts: list[np.ndarray]) -> np.ndarray:
    """Plt from the Pst values of a 2-hour interval (12, or fewer at start-up)."""
    return np.cbrt(np.mean(np.power(np.stack(psts), 3), axis=0))
