"""The metering engine: sample blocks in, per-second measurements and energy increments out.

Pipeline per main (metering-standards.md §2.8, §5):

1. cycle boundaries from the main's voltage (``CycleTracker``);
2. per cycle, exact time-domain integrals (fractional edges) of v_el*i, i^2 and the voltage
   Gram matrix -> true-RMS V and I, P, S;
3. per cycle, a synchronous resampling to 128 phases per cycle and an FFT -> fundamental
   phasors (Q1, P1) and harmonics 1..50 (bin h is order h exactly, whatever the frequency);
4. energy is integrated per cycle (P_c * T_c routed to import/export, |Q1_c| * T_c to its
   quadrant, S_c * T_c), so nothing is counted twice or lost at report boundaries;
5. the report for a step aggregates the cycles that ended in it: RMS for V and I,
   time-weighted means for powers; S and PF from the aggregates, never averaged PFs.

numpy plus the compiled per-sample kernels of ``cycles``, no I/O: the device feeds it blocks
and reads ``StepResult``s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pm4324.device.settings import N_CTS, N_METERS, Settings, Wiring
from pm4324.metering.cycles import (
    CycleTracker,
    cycle_integrals,
    harmonic_sums,
    product_integrals,
    raw_crossings,
    synchronous_resample,
)
from pm4324.metering.wiring import meter_wiring

GRID = 128  # synchronous points per cycle: harmonics up to 63 are resolved, 50 reported
MAX_ORDER = 50
START_FRACTION = 0.0004  # anti-creep: no energy below 0.04 % of rated current (0.4 x Ist 0.2S)
ABSENT_FRACTION = 0.1  # a voltage below 10 % of its nominal value counts as absent
N_ENERGY = 7  # wh_import, wh_export, varh_q1..q4, vah

# flag bits (same values as device.snapshot.Flag; metering does not import the device)
VOLTAGE_ABSENT, CLIPPING, FREQUENCY_RANGE, INVALID, UNSYNC, NO_DATA, UNUSED = (
    1, 2, 4, 8, 16, 32, 64,
)


@dataclass
class StepResult:
    """Measurements for one step (normally one second); arrays follow snapshot.py's layout."""

    duration_s: float
    ct: dict[str, np.ndarray]
    meter: dict[str, np.ndarray]
    main: dict[str, np.ndarray]
    ct_energy: np.ndarray  # (24, 7) increments in Wh, varh, VAh
    meter_energy: np.ndarray  # (8, 7)


# Line-to-line V^2 (ab, bc, ca) from the phase-voltage Gram rows (aa, bb, cc, ab, bc, ca).
_GRAM_TO_LL = np.array([[1, 1, 0, -2, 0, 0], [0, 1, 1, 0, -2, 0], [1, 0, 1, 0, 0, -2]], dtype=float)
# |rfft bin|^2 -> rms^2 of that order: (sqrt(2) / GRID)^2, DC (1 / GRID)^2
_BIN_SCALE2 = np.r_[1.0, np.full(MAX_ORDER, 2.0)] / GRID**2


@dataclass(frozen=True)
class _Elements:
    """Per-main constants of the measuring elements (CTs ``rows``), fixed by the settings."""

    rows: slice
    coeff: np.ndarray  # (k, 3) element voltage from va, vb, vc
    uses_v: np.ndarray  # (k, 3) bool
    gram_weights: np.ndarray  # (k, 6) element V^2 from the Gram rows
    pairs: np.ndarray  # product rows for ``product_integrals``
    pt: float
    pt_ct: np.ndarray  # (k, 1) terminal V*A -> primary W
    ct2: np.ndarray  # (k, 1) squared CT ratios
    start_a: np.ndarray  # (k, 1) anti-creep threshold, primary A
    used: np.ndarray  # (k,) bool
    nominal_v: np.ndarray  # (k,) nominal element voltage, primary
    nominal_ln: float
    meters: np.ndarray  # global index of each of the main's Meters
    aron: np.ndarray  # local indices of its 3P3W-2CT Meters


class _MainState:
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
        self.grid = np.empty((0, self.n_ch, GRID))  # synchronous samples (cycle, channel, phase)
        self.spec = np.empty((0, self.n_ch, GRID // 2 + 1), dtype=complex)

    def append(self, v: np.ndarray, i: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Add a block; returns each input's peak |x| and whether it had non-finite samples
        (those are held as 0 and marked in ``bad``)."""
        n = v.shape[1]
        if self.length == 0:
            self.offset = start
        end = self.length + n
        if end > self.store.shape[1]:  # with room for the tail kept between blocks
            grown = np.empty((self.n_ch, end + end // 4))
            grown[:, : self.length] = self.store[:, : self.length]
            self.store = grown
        block = self.store[:, self.length : end]
        block[:3], block[3:] = v, i
        self.length = end
        hi, lo = block.max(axis=1), block.min(axis=1)
        nonfinite = ~(np.isfinite(hi) & np.isfinite(lo))  # max and min propagate NaN and +-inf
        if nonfinite.any() or self.bad.any():
            bad_block = ~np.isfinite(block)
            block[bad_block] = 0.0
            hi, lo = block.max(axis=1), block.min(axis=1)
            pad = end - n - self.bad.shape[1]
            self.bad = np.concatenate((np.pad(self.bad, ((0, 0), (pad, 0))), bad_block), axis=1)
        else:
            self.bad = np.zeros((self.n_ch, 0), dtype=bool)
        return np.maximum(hi, -lo), nonfinite

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
        usable = int(np.searchsorted(np.asarray(self.bounds), end, side="right"))
        if usable < 2:
            return np.empty(0), True
        rel = np.asarray(self.bounds[:usable]) - self.offset
        self.period = rel[-1] - rel[-2]
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
        while self.bounds[-1] + period <= end:
            self.bounds.append(self.bounds[-1] + period)
            self.sync.append(self.sync[-1])
        self.tracker.last = self.bounds[-1]

    def spectra(self, bounds: np.ndarray) -> np.ndarray:
        """Per-cycle spectra of the inputs, (cycles, 3 + CTs, GRID // 2 + 1), unscaled rfft.

        Synchronous resampling to GRID phases per cycle, then one FFT per cycle and channel:
        bin h is harmonic order h exactly, whatever the frequency.
        """
        m = bounds.size - 1
        if self.grid.shape[0] < m:
            self.grid = np.empty((m + m // 4, self.n_ch, GRID))
            self.spec = np.empty((m + m // 4, self.n_ch, GRID // 2 + 1), dtype=complex)
        synchronous_resample(self.store, bounds, self.grid[:m])
        return np.fft.rfft(self.grid[:m], axis=2, out=self.spec[:m])

    def trim(self) -> None:
        """Drop samples no longer needed: keep filter history before the oldest open boundary."""
        keep_from = (self.bounds[0] if self.bounds else self.offset + self.length)
        cut = int(np.floor(keep_from)) - self.offset - self.tracker.history_needed()
        cut = max(0, min(cut, self.length))
        if cut:
            rest = self.length - cut
            self.store[:, :rest] = self.store[:, cut : self.length]
            self.length = rest
            if self.bad.shape[1]:
                self.bad = self.bad[:, cut:]
            self.offset += cut


class Engine:
    """Streams sample blocks of one PM-4324(A) into per-step measurements."""

    def __init__(self, settings: Settings):
        self.fs = settings.sample_rate_hz
        self.n_mains = settings.n_mains
        per_main = N_CTS // self.n_mains
        self._mains = [
            _MainState(settings, m, np.arange(m * per_main, (m + 1) * per_main))
            for m in range(self.n_mains)
        ]
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """Apply ratios, wiring and calibration; safe between steps (buffers are kept)."""
        if settings.n_mains != self.n_mains or settings.sample_rate_hz != self.fs:
            raise ValueError("model and sample rate are fixed for the life of an engine")
        self.settings = settings
        coeff = np.zeros((N_CTS, 3))
        used = np.zeros(N_CTS, dtype=bool)
        nominal = np.zeros(N_CTS)
        self.wirings = []
        for m, meter in enumerate(settings.meters):
            w = meter_wiring(meter)
            self.wirings.append(w)
            sl = slice(3 * m, 3 * m + 3)
            coeff[sl], used[sl] = w.coefficients, w.used
            nominal[sl] = w.nominal_factor
        self.coeff, self.used = coeff, used
        main_of = [settings.main_of_ct(k + 1) for k in range(N_CTS)]
        self.pt = np.array([settings.mains[m].pt_ratio for m in main_of])
        self.ct = np.repeat([m.ct_ratio for m in settings.meters], 3)
        self.nominal_el_v = nominal * np.array(
            [settings.mains[settings.main_of_ct(k + 1)].nominal_voltage_v for k in range(N_CTS)]
        )
        self.cal_v = settings.calibration_v
        self.cal_i = settings.calibration_i
        self.aron = np.array([w.wiring is Wiring.W3P3W_2CT for w in self.wirings])
        self.elements = [self._elements(ms.main, ms.cts) for ms in self._mains]

    def _elements(self, main: int, cts: np.ndarray) -> _Elements:
        coeff = self.coeff[cts]
        c0, c1, c2 = coeff.T
        ct = self.ct[cts][:, None]
        meters = cts[::3] // 3
        aron = np.flatnonzero(self.aron[meters])
        return _Elements(
            rows=slice(cts[0], cts[-1] + 1), coeff=coeff, uses_v=np.abs(coeff) > 0,
            gram_weights=np.stack((c0 * c0, c1 * c1, c2 * c2, 2 * c0 * c1, 2 * c1 * c2,
                                   2 * c2 * c0), axis=1),
            pairs=_product_rows(cts.size, aron), pt=float(self.pt[cts[0]]),
            pt_ct=self.pt[cts][:, None] * ct, ct2=ct * ct, start_a=START_FRACTION * ct,
            used=self.used[cts], nominal_v=self.nominal_el_v[cts],
            nominal_ln=self.settings.mains[main].nominal_voltage_v, meters=meters, aron=aron,
        )

    # -- input calibration -----------------------------------------------------------------

    def _calibrate(self, x: np.ndarray, cals: tuple, first_row: int) -> np.ndarray:
        rows = range(x.shape[0])
        if all(cals[first_row + r].gain == 1 and cals[first_row + r].offset == 0 for r in rows):
            return x
        gain = np.array([cals[first_row + r].gain for r in rows])[:, None]
        offset = np.array([cals[first_row + r].offset for r in rows])[:, None]
        return gain * (x - offset)

    # -- the step ------------------------------------------------------------------------------

    def step(self, voltages: np.ndarray, currents: np.ndarray, start: int,
             full_scale: tuple[float | None, float | None] = (None, None),
             final: bool = False) -> StepResult:
        """Feed one block; returns the cycles that ended within it, aggregated.

        ``final`` closes the stream: every whole cycle in the data is reported, the partial
        cycle after the last one is dropped.
        """
        voltages = self._calibrate(voltages, self.cal_v, 0)
        currents = self._calibrate(currents, self.cal_i, 0)
        out = _Collector(self)
        per_main = N_CTS // self.n_mains
        for ms in self._mains:
            v = voltages[3 * ms.main : 3 * ms.main + 3]
            i = currents[ms.main * per_main : (ms.main + 1) * per_main]
            peak, nonfinite = ms.append(v, i, start)
            clip = np.zeros(peak.shape, dtype=bool)
            if full_scale[0] is not None:
                clip[:3] = peak[:3] >= full_scale[0] * (1 - 1e-9)
            if full_scale[1] is not None:
                clip[3:] = peak[3:] >= full_scale[1] * (1 - 1e-9)
            bounds, synced = ms.new_cycles(final)
            out.add_main(ms, bounds, synced, clip, nonfinite)
            ms.trim()
        return out.result()


class _Collector:
    """Turns per-cycle quantities into one StepResult (and the energy increments)."""

    def __init__(self, engine: Engine):
        self.e = engine
        n = N_CTS
        self.duration = np.zeros(engine.n_mains)
        self.cycles = np.zeros(engine.n_mains)
        self.sync = np.ones(engine.n_mains, dtype=bool)
        # time-integrals (x seconds) accumulated over the step
        self.v2 = np.zeros(n)
        self.i2 = np.zeros(n)
        self.p = np.zeros(n)
        self.q = np.zeros(n)
        self.vh2 = np.zeros((n, MAX_ORDER + 1))
        self.ih2 = np.zeros((n, MAX_ORDER + 1))
        self.ph_v2 = np.zeros((engine.n_mains, 3))
        self.ll_v2 = np.zeros((engine.n_mains, 3))
        self.ph_h2 = np.zeros((engine.n_mains, 3, MAX_ORDER + 1))
        self.ib2 = np.zeros(N_METERS)  # derived I_b^2*s of 3P3W-2CT Meters
        self.ct_energy = np.zeros((n, N_ENERGY))
        self.meter_energy = np.zeros((N_METERS, N_ENERGY))
        self.flags_ct = np.zeros(n, dtype=np.int64)
        self.flags_main = np.zeros(engine.n_mains, dtype=np.int64)

    def add_main(self, ms: _MainState, bounds: np.ndarray, synced: bool,
                 clip: np.ndarray, nonfinite: np.ndarray) -> None:
        e, m = self.e, ms.main
        el = e.elements[m]
        rows = el.rows
        flags = 0 if synced else UNSYNC
        if clip[:3].any():
            flags |= CLIPPING
        ct_flags = np.where((el.uses_v & clip[:3]).any(axis=1) | clip[3:], CLIPPING, 0)
        if bounds.size < 2:
            self.flags_main[m] |= flags | NO_DATA
            self.flags_ct[rows] |= ct_flags | NO_DATA
            self.sync[m] &= synced
            return
        dt = np.diff(bounds) / e.fs  # seconds per cycle
        n_cyc = dt.size
        k = el.coeff.shape[0]
        # (rows, cyc) in unit*s: v_el*i per CT, then i*i, the voltage Gram (aa bb cc ab bc ca)
        # and ia*ic per 3P3W-2CT Meter
        integ = product_integrals(ms.store, el.coeff, el.pairs, bounds) / e.fs
        p_c = integ[:k] * el.pt_ct  # W*s per cycle
        i2_c = integ[k : 2 * k] * el.ct2
        g = integ[2 * k : 2 * k + 6] * el.pt**2  # Gram of phase voltages, V^2*s
        v2_c = el.gram_weights @ g  # element V^2*s per cycle
        ll2_c = _GRAM_TO_LL @ g  # line-to-line V^2*s per cycle

        # Synchronous spectrum: fundamental phasors and harmonics per cycle. An rfft bin times
        # sqrt(2) / GRID is the rms phasor of that order (DC: 1 / GRID, its rms is its mean).
        h_ch, h_el, s1 = harmonic_sums(ms.spectra(bounds), el.coeff, dt, MAX_ORDER)
        q_c = s1.imag * dt * (_BIN_SCALE2[1] * el.pt_ct)  # var*s

        # Validity per element and cycle: non-finite samples drop the cycle from energy.
        valid = True
        if ms.bad.shape[1] and ms.bad.any():
            bad_c = cycle_integrals(ms.bad.astype(np.float64), bounds) > 0  # (3+k, cyc)
            bad_el = bad_c[3:] | (el.uses_v.astype(float) @ bad_c[:3].astype(float) > 0)
            valid = ~bad_el
            ct_flags[bad_el.any(axis=1)] |= INVALID
            if bad_c[:3].any():
                flags |= INVALID

        irms_c = np.sqrt(i2_c / dt)
        vrms_c = np.sqrt(np.maximum(v2_c, 0) / dt)
        live = valid & (irms_c >= el.start_a) & el.used[:, None]
        s_c = vrms_c * irms_c * dt  # VA*s per element and cycle

        # Energy per cycle: the CTs' elements that count, and their Meters' totals.
        p_live, q_live, s_live = (np.where(live, x, 0.0) for x in (p_c, q_c, s_c))
        pm = p_live.reshape(-1, 3, n_cyc).sum(axis=1)
        qm = q_live.reshape(-1, 3, n_cyc).sum(axis=1)
        sm = s_live.reshape(-1, 3, n_cyc).sum(axis=1)
        aron = el.aron
        if aron.size:
            cross = 2 * integ[2 * k + 6 :] * el.ct2[3 * aron]
            ib2_c = i2_c[3 * aron] + i2_c[3 * aron + 2] + cross
            self.ib2[el.meters[aron]] += ib2_c.sum(axis=1)
            isum = i2_c[3 * aron] + ib2_c + i2_c[3 * aron + 2]
            se_c = np.sqrt(np.maximum(ll2_c.sum(axis=0)[None, :] * isum, 0) / 3)  # VA*s
            sm[aron] = np.where(live.reshape(-1, 3, n_cyc).any(axis=1)[aron], se_c, 0)
        inc = _energy(np.concatenate((p_live, pm)), np.concatenate((q_live, qm)),
                      np.concatenate((s_live, sm)))
        self.ct_energy[rows] += inc[:k]
        self.meter_energy[el.meters] += inc[k:]

        # Step aggregates (x seconds)
        self.v2[rows] += v2_c.sum(axis=1)
        self.i2[rows] += i2_c.sum(axis=1)
        self.p[rows] += p_c.sum(axis=1)
        self.q[rows] += q_c.sum(axis=1)
        self.vh2[rows] += h_el * (_BIN_SCALE2 * el.pt**2)
        self.ih2[rows] += h_ch[3:] * _BIN_SCALE2 * el.ct2
        self.ph_v2[m] += g[:3].sum(axis=1)
        self.ll_v2[m] += ll2_c.sum(axis=1)
        self.ph_h2[m] += h_ch[:3] * (_BIN_SCALE2 * el.pt**2)
        total = dt.sum()
        self.duration[m] += total
        self.cycles[m] += n_cyc
        self.sync[m] &= synced

        # Flags
        vrms_ph = np.sqrt(g[:3].sum(axis=1) / total)
        if vrms_ph.max() < ABSENT_FRACTION * el.nominal_ln:
            flags |= VOLTAGE_ABSENT
        el_v = np.sqrt(v2_c.sum(axis=1) / total)
        ct_flags[(el_v < ABSENT_FRACTION * el.nominal_v) & el.used] |= VOLTAGE_ABSENT
        freq = n_cyc / total
        if synced and not 45.0 <= freq <= 65.0:
            flags |= FREQUENCY_RANGE
        self.flags_main[m] |= flags
        ct_flags |= flags & (FREQUENCY_RANGE | UNSYNC)
        ct_flags[~el.used] |= UNUSED
        self.flags_ct[rows] |= ct_flags

    def result(self) -> StepResult:
        e = self.e
        main_of_ct = np.repeat(np.arange(e.n_mains), N_CTS // e.n_mains)
        with np.errstate(invalid="ignore", divide="ignore"):
            t_main = np.where(self.duration > 0, self.duration, np.nan)
            t = t_main[main_of_ct]
            freq_main = np.where(self.sync, self.cycles / t_main, np.nan)
            v = np.sqrt(self.v2 / t)
            i = np.sqrt(self.i2 / t)
            p, q = self.p / t, self.q / t
            s = v * i
            vh = np.sqrt(self.vh2 / t[:, None])
            ih = np.sqrt(self.ih2 / t[:, None])
            rated = e.ct
            thd_v = np.where(e.used & (vh[:, 1] >= ABSENT_FRACTION * e.nominal_el_v),
                             _thd(vh), 0.0)
            thd_i = np.where(ih[:, 1] >= START_FRACTION * rated, _thd(ih), 0.0)
            used = e.used
            u = used.reshape(N_METERS, 3)
            mp = np.where(used, p, 0).reshape(N_METERS, 3).sum(axis=1)
            mq = np.where(used, q, 0).reshape(N_METERS, 3).sum(axis=1)
            m_arith = np.where(used, s, 0).reshape(N_METERS, 3).sum(axis=1)
            m_vector = np.hypot(mp, mq)
            t_m = t[::3]
            m_i2 = self.i2.reshape(N_METERS, 3)
            m_ll = self.ll_v2[np.arange(N_METERS) * e.n_mains // N_METERS].sum(axis=1)
            se = np.sqrt(m_ll / t_m * (m_i2[:, 0] + self.ib2 + m_i2[:, 2]) / t_m / 3)
            m_s = np.where(e.aron, se, m_arith)
            m_v = (np.where(used, v, 0).reshape(N_METERS, 3).sum(axis=1)) / u.sum(axis=1)
            m_i = (np.where(used, i, 0).reshape(N_METERS, 3).sum(axis=1)) / u.sum(axis=1)
            ph_h = np.sqrt(self.ph_h2 / t_main[:, None, None])
            ph_v = np.sqrt(self.ph_v2 / t_main[:, None])
            main_thd = np.where(ph_h[:, :, 1] >= ABSENT_FRACTION * _nominal_ln(e)[:, None],
                                _thd(ph_h), 0.0)
            ct_flags = self.flags_ct
            m_flags = np.bitwise_or.reduce(
                np.where(used, ct_flags, 0).reshape(N_METERS, 3), axis=1)
            return StepResult(
                duration_s=float(self.duration.max()),
                ct=dict(v_rms=v, i_rms=i, p_w=p, q_var=q, s_va=s, pf=_pf(p, s),
                        thd_v_pct=thd_v, thd_i_pct=thd_i, frequency_hz=freq_main[main_of_ct],
                        v_harmonics=vh, i_harmonics=ih, flags=ct_flags),
                meter=dict(v_rms=m_v, i_rms=m_i, p_w=mp, q_var=mq, s_va=m_s,
                           s_arith_va=m_arith, s_vector_va=m_vector, pf=_pf(mp, m_s),
                           frequency_hz=freq_main[main_of_ct[::3]], flags=m_flags),
                main=dict(frequency_hz=freq_main, v_ln=ph_v,
                          v_ll=np.sqrt(self.ll_v2 / t_main[:, None]), thd_v_pct=main_thd,
                          flags=self.flags_main),
                ct_energy=self.ct_energy,
                meter_energy=self.meter_energy,
            )


def _product_rows(k: int, aron: np.ndarray) -> np.ndarray:
    """Row pairs of a main's buffer (va, vb, vc, then k currents) integrated per cycle
    besides v_el * i: i * i per CT, the voltage Gram matrix (aa, bb, cc, ab, bc, ca), then
    ia * ic of each 3P3W-2CT Meter (for its derived I_b); ``aron`` holds their local indices."""
    ct = np.arange(3, 3 + k)
    pairs = [np.stack((ct, ct), axis=1), np.array([[0, 0], [1, 1], [2, 2], [0, 1], [1, 2], [2, 0]]),
             np.stack((3 + 3 * aron, 5 + 3 * aron), axis=1)]
    return np.concatenate(pairs).astype(np.intp)


def _nominal_ln(e: Engine) -> np.ndarray:
    return np.array([e.settings.mains[m].nominal_voltage_v for m in range(e.n_mains)])


def _thd(h: np.ndarray) -> np.ndarray:
    """THD_F in % (IEC 61000-4-7 definition): rms of orders 2..50 over the fundamental."""
    return np.sqrt(np.sum(h[..., 2 : MAX_ORDER + 1] ** 2, axis=-1)) / h[..., 1] * 100.0


def _pf(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """P/S, signed like P; 0 when there is no apparent power."""
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)


def _energy(p: np.ndarray, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Register increments in Wh, varh, VAh (rows, 7) from per-cycle W*s, var*s, VA*s.

    Import/export is decided per cycle by the sign of P; the reactive quadrant per cycle by
    the signs of P and Q1 (IEC 62053-23 quadrants, metering-standards.md §3.5).
    """
    imp, ind = p >= 0, q >= 0
    qa = np.abs(q)
    inc = np.stack((
        np.where(p > 0, p, 0.0).sum(axis=1),
        np.where(p < 0, -p, 0.0).sum(axis=1),
        (qa * (imp & ind)).sum(axis=1),
        (qa * (~imp & ind)).sum(axis=1),
        (qa * (~imp & ~ind)).sum(axis=1),
        (qa * (imp & ~ind)).sum(axis=1),
        s.sum(axis=1),
    ), axis=1)
    return inc / 3600.0
