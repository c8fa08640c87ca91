"""The compiled per-step arithmetic of the engine, and the constants it shares with it.

``engine`` keeps the buffers, the cycle bookkeeping and the collection of a step; these
kernels do its numbers: the block copy into the buffer with its peak and non-finite checks,
the per-cycle element arithmetic and energy routing, the windows' harmonic sums and angles,
and the step's report (``finish_step``). As numpy they were a few hundred calls of a few
microseconds each per step.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pm4324.metering.cycles import product_integrals
from pm4324.metering.resample import (
    fundamental_products,
    harmonic_sums,
    synchronous_resample,
    window_weights,
)

GRID = 128  # synchronous points per cycle: harmonics up to 63 are resolved, 50 reported
MAX_ORDER = 50
START_FRACTION = 0.0004  # anti-creep: no energy below 0.04 % of rated current (0.4 x Ist 0.2S)
STARTING_FRACTION = 0.001  # class 0.2S starting current Ist: THD_I reads 0 below it
ABSENT_FRACTION = 0.1  # a voltage below 10 % of its nominal value counts as absent
N_ENERGY = 7  # wh_import, wh_export, varh_q1..q4, vah

# flag bits (same values as device.snapshot.Flag; metering does not import the device)
VOLTAGE_ABSENT, CLIPPING, FREQUENCY_RANGE, INVALID, UNSYNC, NO_DATA, UNUSED = (
    1, 2, 4, 8, 16, 32, 64,
)


# |rfft bin|^2 -> rms^2 of that order: (sqrt(2) / GRID)^2, DC (1 / GRID)^2
BIN_SCALE2 = np.r_[1.0, np.full(MAX_ORDER, 2.0)] / GRID**2


ALL_VALID = np.ones((0, 0), dtype=bool)  # ``valid`` of ``_cycle_energy`` without bad samples
_ABS_BITS = np.uint64(0x7FFF_FFFF_FFFF_FFFF)  # a double's bits without the sign
_INF_BITS = np.uint64(0x7FF0_0000_0000_0000)  # +inf; NaNs are above it


@njit(cache=True)
def ingest_block(v: np.ndarray, i: np.ndarray, dst: np.ndarray, col: int, peak: np.ndarray) -> bool:
    """Copy the rows of v then i, (rows, n) each, to dst[:, col : col + n] and put each row's
    peak |x| in ``peak``: inf or NaN when the row holds a non-finite sample. Returns whether
    every sample was finite.

    One pass instead of numpy's copy, max and min (0.75 ms per PM-4324A second). The peak is
    taken on the bit patterns with the sign cleared: for non-negative doubles the integer
    order is the numbers' order and inf and NaN sort above every finite value, and an integer
    max vectorises where a float max (NaN rules) does not. v and i must be C-contiguous.
    """
    top = peak.view(np.uint64)
    n = v.shape[1]
    highest = np.uint64(0)
    for part, row0 in ((v, 0), (i, v.shape[0])):
        bits = part.view(np.uint64)
        for r in range(part.shape[0]):
            s, b, d = part[r], bits[r], dst[row0 + r, col : col + n]
            m = np.uint64(0)
            for j in range(n):
                d[j] = s[j]
                m = max(m, b[j] & _ABS_BITS)
            top[row0 + r] = m
            highest = max(highest, m)
    return highest < _INF_BITS


@njit(cache=True)
def shift_left(x: np.ndarray, cut: int, rest: int) -> None:
    """x[:, :rest] = x[:, cut : cut + rest] without numpy's overlap checks and temporary."""
    for r in range(x.shape[0]):
        row = x[r]
        for j in range(rest):
            row[j] = row[cut + j]


@njit(cache=True, inline="always")
def _route(out: np.ndarray, p: float, q: float, s: float) -> None:
    """Add one cycle's W*s, var*s, VA*s to the 7 registers (wh_import .. vah).

    Import/export is decided per cycle by the sign of P; the reactive quadrant per cycle by
    the signs of P and Q1 (IEC 62053-23 quadrants, metering-standards.md §3.5).
    """
    if p > 0:
        out[0] += p
    elif p < 0:
        out[1] -= p
    if p >= 0:
        out[2 if q >= 0 else 5] += abs(q)
    else:
        out[3 if q >= 0 else 4] += abs(q)
    out[6] += s


@njit(cache=True)
def _cycle_energy(integ: np.ndarray, s1: np.ndarray, dt: np.ndarray, valid: np.ndarray,
                  pt_ct: np.ndarray, ct2: np.ndarray, pt2: float, gram_weights: np.ndarray,
                  start_a: np.ndarray, used: np.ndarray, aron: np.ndarray,
                  el_sums: np.ndarray, ct_energy: np.ndarray, meter_energy: np.ndarray,
                  ib2: np.ndarray, ph_v2: np.ndarray, ll_v2: np.ndarray) -> None:
    """One main's per-cycle element arithmetic and energy routing, added to the step's sums.

    integ: ``product_integrals`` / fs, (k + 6 + len(aron), cycles); s1: V_el,1 * conj(I_1)
    bins per element and cycle; valid: (k, cycles), or (0, 0) when every cycle is valid.
    Per element and cycle: P, I^2, V^2 from the phase-voltage Gram, Q1, S = Vrms * Irms *
    dt; the element counts for energy if valid, used and above the anti-creep current.
    A Meter's cycle sums its counted elements, except that a 3P3W-2CT Meter's S comes from
    the line voltages and its derived I_b (``aron``: the local indices of those Meters). Adds
    to el_sums (4, k) V^2, I^2, P, Q x s, the registers ct_energy (k, 7) and meter_energy
    (k / 3, 7) in Wh, varh, VAh, ib2 (k / 3,) I_b^2 x s, ph_v2 (3,) and ll_v2 (3,) phase and
    line-to-line V^2 x s.
    """
    k, m = pt_ct.size, dt.size
    n_meters = k // 3
    inc = np.zeros((k + n_meters, 7))  # W*s, var*s, VA*s; in Wh etc. at the end
    g = np.empty(6)
    p, q, s, i2 = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    live = np.empty(k, dtype=np.bool_)
    q_scale = BIN_SCALE2[1] * pt_ct
    aron_of = np.full(n_meters, -1)
    aron_of[aron] = np.arange(aron.size)
    for c in range(m):
        d = dt[c]
        for j in range(6):
            g[j] = integ[2 * k + j, c] * pt2
        # line-to-line V^2 (ab, bc, ca) from the Gram rows (aa, bb, cc, ab, bc, ca)
        ll = (g[0] + g[1] - 2 * g[3], g[1] + g[2] - 2 * g[4], g[0] + g[2] - 2 * g[5])
        for j in range(3):
            ph_v2[j] += g[j]
            ll_v2[j] += ll[j]
        for r in range(k):
            p[r] = integ[r, c] * pt_ct[r]
            i2[r] = integ[k + r, c] * ct2[r]
            q[r] = s1[r, c].imag * d * q_scale[r]
            v2 = 0.0
            for j in range(6):
                v2 += gram_weights[r, j] * g[j]
            irms = np.sqrt(i2[r] / d)
            live[r] = ((valid.shape[1] == 0 or valid[r, c]) and irms >= start_a[r]
                       and used[r])
            s[r] = np.sqrt(max(v2, 0.0) / d) * irms * d
            el_sums[0, r] += v2
            el_sums[1, r] += i2[r]
            el_sums[2, r] += p[r]
            el_sums[3, r] += q[r]
            if live[r]:
                _route(inc[r], p[r], q[r], s[r])
        for mt in range(n_meters):
            pm = qm = sm = 0.0
            counted = False
            for r in range(3 * mt, 3 * mt + 3):
                if live[r]:
                    pm += p[r]
                    qm += q[r]
                    sm += s[r]
                    counted = True
            a = aron_of[mt]
            if a >= 0:  # 3P3W-2CT: S from the line voltages and the derived I_b
                ia, ic = 3 * mt, 3 * mt + 2
                ib2_c = i2[ia] + i2[ic] + 2 * integ[2 * k + 6 + a, c] * ct2[ia]
                ib2[mt] += ib2_c
                isum = i2[ia] + ib2_c + i2[ic]
                sm = np.sqrt(max((ll[0] + ll[1] + ll[2]) * isum, 0.0) / 3) if counted else 0.0
            _route(inc[k + mt], pm, qm, sm)
    inc /= 3600.0
    ct_energy += inc[:k]
    meter_energy += inc[k:]


@njit(cache=True)
def main_cycles(store, bounds, fs, synced, flags, valid, groups, grid, fundamental, moments,
                 coeff, pairs, pt_ct, ct2, pt2, gram_weights, start_a, used, aron, nominal_v,
                 nominal_ln, el_sums, ct_energy, meter_energy, ib2, ph_v2, ll_v2, ct_flags):
    """One main's cycles of a step, everything before the windows' FFT, in one call (as
    Python glue between the kernels it cost 0.3 ms per PM-4324A second): the product
    integrals, the synchronous grids and fundamentals, the window weights, the energy and
    time-integrals (``_cycle_energy``), then the main's flags. Returns (the windows' |bin|^2
    weights, the cycles' seconds, the main's flags); ``ct_flags`` is updated in place.
    """
    # (rows, cyc) in unit*s: v_el*i per CT, then i*i, the voltage Gram (aa bb cc ab bc ca)
    # and ia*ic per 3P3W-2CT Meter
    integ = product_integrals(store, coeff, pairs, bounds) / fs
    synchronous_resample(store, bounds, groups, grid, fundamental, moments)
    weight = window_weights(bounds, groups, moments, fs, MAX_ORDER, fundamental)
    dt = np.diff(bounds) / fs
    _cycle_energy(integ, fundamental_products(fundamental, coeff), dt, valid, pt_ct, ct2, pt2,
                  gram_weights, start_a, used, aron, el_sums, ct_energy, meter_energy, ib2,
                  ph_v2, ll_v2)
    seconds = dt.sum()
    # flags (the accumulators hold this main's cycles only: it is added once per step)
    if np.sqrt(ph_v2.max() / seconds) < ABSENT_FRACTION * nominal_ln:
        flags |= VOLTAGE_ABSENT
    frequency = dt.size / seconds
    if synced and not 45.0 <= frequency <= 65.0:
        flags |= FREQUENCY_RANGE
    for r in range(ct_flags.size):
        if not used[r]:
            ct_flags[r] |= UNUSED
        elif np.sqrt(el_sums[0, r] / seconds) < ABSENT_FRACTION * nominal_v[r]:
            ct_flags[r] |= VOLTAGE_ABSENT
        ct_flags[r] |= flags & (FREQUENCY_RANGE | UNSYNC)
    return weight, seconds, flags


@njit(cache=True)
def window_harmonics(spec: np.ndarray, weight: np.ndarray, coeff: np.ndarray,
                     v_h2: np.ndarray, i_h2: np.ndarray, vh2: np.ndarray, ih2: np.ndarray,
                     ph_h2: np.ndarray) -> None:
    """Add a main's window spectra as ``harmonic_sums`` (channels, elements), scaled to
    primary units by v_h2 and i_h2, to the step's element (vh2), current (ih2) and phase
    (ph_h2) sums."""
    h_ch, h_el = harmonic_sums(spec, weight, coeff)
    for r in range(h_el.shape[0]):
        for h in range(h_el.shape[1]):
            vh2[r, h] += h_el[r, h] * v_h2[h]
            ih2[r, h] += h_ch[3 + r, h] * i_h2[r, h]
    for ph in range(3):
        for h in range(h_el.shape[1]):
            ph_h2[ph, h] += h_ch[ph, h] * v_h2[h]


@njit(cache=True)
def turned_phasors(spec: np.ndarray, weight: np.ndarray, v_turned: np.ndarray,
                   i_turned: np.ndarray) -> None:
    """For the harmonic angles: add each window's bins of the phase voltages (v_turned) and
    currents (i_turned) times its weight, turned by h times the reference's angle.

    The reference is phase a's fundamental, or the cycles' own reference va - (vb + vc) / 2
    where phase a is under a tenth of it (absent): an order's angle is then its phase in
    degrees with the reference's fundamental at 0 (cosine convention), the same in every
    window and at any frequency. Weights are 0 at or above Nyquist: no angle there. Only
    on request (``Engine(harmonic_angles=True)``): it costs 3-4 % of the analysis.
    """
    orders = weight.shape[1]
    turned_weight = np.empty(orders, dtype=np.complex128)
    for g in range(spec.shape[0]):
        ref = spec[g, 0, 1]
        clarke = ref - 0.5 * (spec[g, 1, 1] + spec[g, 2, 1])
        if abs(ref) < 0.1 * abs(clarke):
            ref = clarke
        if ref == 0:
            continue
        turn = np.conj(ref) / abs(ref)
        rotation = 1.0 + 0.0j
        for h in range(orders):
            turned_weight[h] = weight[g, h] * rotation
            rotation *= turn
        for ph in range(3):
            for h in range(orders):
                v_turned[ph, h] += turned_weight[h] * spec[g, ph, h]
        for r in range(i_turned.shape[0]):
            for h in range(orders):
                i_turned[r, h] += turned_weight[h] * spec[g, 3 + r, h]


@njit(cache=True, inline="always")
def _thd(h: np.ndarray) -> float:
    """THD_F in % (IEC 61000-4-7 definition): rms of orders 2..50 over the fundamental."""
    total = 0.0
    for x in h[2 : MAX_ORDER + 1]:
        total += x * x
    return np.sqrt(total) / h[1] * 100.0


@njit(cache=True, inline="always")
def _pf(p: float, s: float) -> float:
    """P/S, signed like P; 0 when there is no apparent power."""
    return p / s if s > 0 else 0.0


@njit(cache=True, error_model="numpy")
def finish_step(duration, cycles, sync, el_sums, vh2, ih2, ph_v2, ll_v2, ph_h2, ib2, ct_flags,
            used, nominal_el_v, rated_a, aron, nominal_ln, main_of_ct):
    """The step's report from the time-integrals: RMS for V and I, time-weighted means for
    powers, S and PF from those (never averaged PFs), Meter totals over their used CTs.
    A CT below the anti-creep current reads P = Q = S = PF = 0 (it adds no energy either),
    and THD_I 0 below the starting current (docs/metering.md).

    A main without cycles (duration 0) gives NaN, like the numpy it replaced (hence the
    numpy error model: x / 0 is inf or NaN, not an exception).
    """
    n, n_mains, n_meters = used.size, duration.size, used.size // 3
    t_main = np.where(duration > 0, duration, np.nan)
    freq_main = np.where(sync, cycles / t_main, np.nan)
    ct = np.empty((8, n))  # few arrays out: boxing each costs a few microseconds
    v, i, p, q, s, pf, thd_v, thd_i = ct
    vh, ih = np.empty(vh2.shape), np.empty(ih2.shape)
    for r in range(n):
        t = t_main[main_of_ct[r]]
        v[r] = np.sqrt(el_sums[0, r] / t)
        i[r] = np.sqrt(el_sums[1, r] / t)
        p[r] = el_sums[2, r] / t
        q[r] = el_sums[3, r] / t
        if i[r] >= START_FRACTION * rated_a[r]:
            s[r] = v[r] * i[r]
        else:  # below the anti-creep threshold no energy counts: no power either
            p[r] = q[r] = s[r] = 0.0
        pf[r] = _pf(p[r], s[r])
        vh[r] = np.sqrt(vh2[r] / t)
        ih[r] = np.sqrt(ih2[r] / t)
        on_v = used[r] and vh[r, 1] >= ABSENT_FRACTION * nominal_el_v[r]
        thd_v[r] = _thd(vh[r]) if on_v else 0.0
        thd_i[r] = _thd(ih[r]) if ih[r, 1] >= STARTING_FRACTION * rated_a[r] else 0.0
    meter = np.empty((8, n_meters))
    m_v, m_i, mp, mq, m_s, m_arith, m_vector, m_pf = meter
    m_flags = np.zeros(n_meters, dtype=np.int64)
    for mt in range(n_meters):
        r0 = 3 * mt
        u = used[r0 : r0 + 3]
        mp[mt] = _used_sum(p, u, r0)
        mq[mt] = _used_sum(q, u, r0)
        m_arith[mt] = _used_sum(s, u, r0)
        m_vector[mt] = np.hypot(mp[mt], mq[mt])
        n_used = u[0] + u[1] + u[2]
        m_v[mt] = _used_sum(v, u, r0) / n_used
        m_i[mt] = _used_sum(i, u, r0) / n_used
        if aron[mt] and s[r0] + s[r0 + 2] == 0:  # both CTs below the anti-creep threshold
            m_s[mt] = 0.0
        elif aron[mt]:
            t = t_main[main_of_ct[r0]]
            ll = ll_v2[main_of_ct[r0]]
            m_ll = ll[0] + ll[1] + ll[2]
            m_s[mt] = np.sqrt(m_ll / t * (el_sums[1, r0] + ib2[mt] + el_sums[1, r0 + 2])
                              / t / 3)
        else:
            m_s[mt] = m_arith[mt]
        m_pf[mt] = _pf(mp[mt], m_s[mt])
        for r in range(r0, r0 + 3):
            if used[r]:
                m_flags[mt] |= ct_flags[r]
    main = np.empty((3, n_mains, 3))
    ph_v, v_ll, main_thd = main
    main_vh = np.empty(ph_h2.shape)
    for mn in range(n_mains):
        t = t_main[mn]
        for ph in range(3):
            h = main_vh[mn, ph] = np.sqrt(ph_h2[mn, ph] / t)
            ph_v[mn, ph] = np.sqrt(ph_v2[mn, ph] / t)
            v_ll[mn, ph] = np.sqrt(ll_v2[mn, ph] / t)
            main_thd[mn, ph] = _thd(h) if h[1] >= ABSENT_FRACTION * nominal_ln[mn] else 0.0
    return freq_main, ct, vh, ih, meter, m_flags, (ph_v, v_ll, main_thd, main_vh)


@njit(cache=True, inline="always")
def _used_sum(x: np.ndarray, u: np.ndarray, r0: int) -> float:
    """x[r0] + x[r0 + 1] + x[r0 + 2] over the used ones (numpy's order: unused count as 0)."""
    return ((x[r0] if u[0] else 0.0) + (x[r0 + 1] if u[1] else 0.0)
            + (x[r0 + 2] if u[2] else 0.0))
