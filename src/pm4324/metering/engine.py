"""The metering engine: sample blocks in, per-second measurements and energy increments out.

Pipeline per main (metering-standards.md §2.8, §5):

1. cycle boundaries from the main's voltage (``CycleTracker``);
2. per cycle, exact time-domain integrals (fractional edges) of v_el*i, i^2 and the voltage
   Gram matrix -> true-RMS V and I, P, S;
3. per cycle, a synchronous resampling to 128 phases (bin h of a DFT over whole cycles is
   order h exactly, whatever the frequency): its bin 1 is the cycle's fundamental phasor
   (Q1); harmonics 0..50 from one FFT per IEC 61000-4-7 window of 10 (50 Hz) or 12 (60 Hz)
   cycles, corrected for the interpolation's mean gain;
4. energy is integrated per cycle (P_c * T_c routed to import/export, |Q1_c| * T_c to its
   quadrant, S_c * T_c), so nothing is counted twice or lost at report boundaries;
5. the report for a step aggregates the cycles that ended in it: RMS for V and I,
   time-weighted means for powers; S and PF from the aggregates, never averaged PFs.

numpy plus the compiled per-sample kernels of ``cycles`` and ``resample``, no I/O: the device
feeds it blocks and reads ``StepResult``s; each main's samples and tracker are a
``main_buffer.MainBuffer``. The block copy into the buffer (with its peak and non-finite
checks) and the per-cycle and per-step arithmetic of the collector are compiled too
(``step_kernels``): as numpy they were a few hundred calls of a few microseconds each per
step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, Settings, Wiring
from pm4324.metering.cycles import cycle_integrals
from pm4324.metering.main_buffer import MainBuffer
from pm4324.metering.step_kernels import (
    ALL_VALID,
    BIN_SCALE2,
    CLIPPING,
    INVALID,
    MAX_ORDER,
    N_ENERGY,
    NO_DATA,
    START_FRACTION,
    UNSYNC,
    finish_step,
    main_cycles,
    turned_phasors,
    window_harmonics,
)
from pm4324.metering.wiring import current_signs, meter_wiring

WAVE_CYCLES = 2  # the last whole cycles of each step kept as samples (the web's waveform view)


@dataclass
class StepResult:
    """Measurements for one step (normally one second); arrays follow snapshot.py's layout."""

    duration_s: float
    ct: dict[str, np.ndarray]
    meter: dict[str, np.ndarray]
    main: dict[str, np.ndarray]
    ct_energy: np.ndarray  # (24, 7) increments in Wh, varh, VAh
    meter_energy: np.ndarray  # (8, 7)
    # per main: the last WAVE_CYCLES whole cycles' samples in primary V and A, rows va, vb, vc
    # then the main's CTs (shape (3 + CTs, n)); empty (3 + CTs, 0) when no cycle ended
    waveforms: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class _Elements:
    """Per-main constants of the measuring elements (CTs ``rows``), fixed by the settings."""

    rows: slice
    coeff: np.ndarray  # (k, 3) element voltage from va, vb, vc
    uses_v: np.ndarray  # (k, 3) bool
    gram_weights: np.ndarray  # (k, 6) element V^2 from the Gram rows
    pairs: np.ndarray  # product rows for ``product_integrals``
    pt: float
    pt_ct: np.ndarray  # (k,) terminal V*A -> primary W
    ct2: np.ndarray  # (k,) squared CT ratios (primary A per input unit)
    start_a: np.ndarray  # (k,) anti-creep threshold, primary A
    v_h2: np.ndarray  # (MAX_ORDER + 1,) |rfft bin|^2 of a terminal voltage -> primary V^2
    i_h2: np.ndarray  # (k, MAX_ORDER + 1) the same for the currents
    used: np.ndarray  # (k,) bool
    nominal_v: np.ndarray  # (k,) nominal element voltage, primary
    nominal_ln: float
    meter_rows: slice  # the main's Meters (global indices)
    aron: np.ndarray  # local indices of its 3P3W-2CT Meters


class Engine:
    """Streams sample blocks of one PM-4324(A) into per-step measurements."""

    def __init__(self, settings: Settings, harmonic_angles: bool = False):
        """``harmonic_angles``: also find each harmonic's angle (``turned_phasors``; the
        snapshot's ``*_harmonic_phasors`` stay 0 without it)."""
        self.harmonic_angles = harmonic_angles
        self.pq_hook = None  # f(main, buffer, bounds, offset, fundamentals) per main, step (pq/)
        self.fs = settings.sample_rate_hz
        self.n_mains = settings.n_mains
        per_main = N_CTS // self.n_mains
        self._mains = [MainBuffer(settings, m, np.arange(m * per_main, (m + 1) * per_main))
                       for m in range(self.n_mains)]
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
        # primary A per unit of a CT input (A clip-on, V for 333 mV CTs), and rated primary A
        self.ct = np.repeat([settings.amperes_per_input(m) for m in range(N_METERS)], 3)
        self.rated_a = np.repeat([m.rated_current_a for m in settings.meters], 3)
        self.nominal_el_v = nominal * np.array(
            [settings.mains[settings.main_of_ct(k + 1)].nominal_voltage_v for k in range(N_CTS)]
        )
        self.cal_v = _gain_offset(settings.calibration_v)
        self.cal_i = _gain_offset(settings.calibration_i, current_signs(settings.meters))
        self.aron = np.array([w.wiring is Wiring.W3P3W_2CT for w in self.wirings])
        self.nominal_ln = np.array([settings.mains[m].nominal_voltage_v
                                    for m in range(self.n_mains)])
        self.main_of_ct = np.array(main_of, dtype=np.intp)
        self.elements = [self._elements(ms.main, ms.cts) for ms in self._mains]
        self._clip_key: tuple | None = None
        self._clip_levels = np.empty(0)

    def _elements(self, main: int, cts: np.ndarray) -> _Elements:
        coeff = self.coeff[cts]
        c0, c1, c2 = coeff.T
        ct = self.ct[cts]
        meters = cts[::3] // 3
        aron = np.flatnonzero(self.aron[meters])
        return _Elements(
            rows=slice(cts[0], cts[-1] + 1), coeff=coeff, uses_v=np.abs(coeff) > 0,
            gram_weights=np.stack((c0 * c0, c1 * c1, c2 * c2, 2 * c0 * c1, 2 * c1 * c2,
                                   2 * c2 * c0), axis=1),
            pairs=_product_rows(cts.size, aron), pt=float(self.pt[cts[0]]),
            pt_ct=self.pt[cts] * ct, ct2=ct * ct, start_a=START_FRACTION * self.rated_a[cts],
            v_h2=BIN_SCALE2 * self.pt[cts[0]] ** 2, i_h2=BIN_SCALE2 * (ct * ct)[:, None],
            used=self.used[cts], nominal_v=self.nominal_el_v[cts],
            nominal_ln=self.settings.mains[main].nominal_voltage_v,
            meter_rows=slice(meters[0], meters[-1] + 1), aron=aron,
        )

    # -- input calibration -----------------------------------------------------------------

    def _calibrate(self, x: np.ndarray, cal: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        if cal is None:
            return x
        rows = x.shape[0]
        return cal[0][:rows] * (x - cal[1][:rows])

    def _clip_level(self, full_scale: tuple[float | None, float | None], n_ch: int) -> np.ndarray:
        """Peak |x| per input (va, vb, vc, the currents) that counts as clipping: just under
        the source's full scale; inf where the source has none."""
        key = (full_scale, n_ch)
        if key != self._clip_key:
            v, i = (np.inf if fs is None else fs * (1 - 1e-9) for fs in full_scale)
            self._clip_key, self._clip_levels = key, np.r_[np.full(3, v), np.full(n_ch - 3, i)]
        return self._clip_levels

    # -- the step ------------------------------------------------------------------------------

    def step(self, voltages: np.ndarray, currents: np.ndarray, start: int,
             full_scale: tuple[float | None, float | None] = (None, None),
             final: bool = False) -> StepResult:
        """Feed one block; returns the cycles that ended within it, aggregated.

        ``final`` closes the stream: every whole cycle in the data is reported, the partial
        cycle after the last one is dropped.
        """
        voltages = self._calibrate(voltages, self.cal_v)
        currents = self._calibrate(currents, self.cal_i)
        out, per_main = _Collector(self), N_CTS // self.n_mains
        for ms in self._mains:
            v = voltages[3 * ms.main : 3 * ms.main + 3]
            i = currents[ms.main * per_main : (ms.main + 1) * per_main]
            clip = ms.append(v, i, start, self._clip_level(full_scale, ms.n_ch))
            bounds, synced = ms.new_cycles(final)
            out.add_main(ms, bounds, synced, clip)
            if self.pq_hook is not None:
                self.pq_hook(ms.main, ms.store, bounds, ms.offset, ms.fundamental)
            ms.trim()
        return out.result()


class _Collector:
    """Turns per-cycle quantities into one StepResult (and the energy increments).

    The arithmetic per cycle and the final one per step run in compiled kernels
    (``_cycle_energy``, ``finish_step``): in numpy they were some 150 small calls per step, 1 ms
    per PM-4324A second for a few thousand numbers.
    """

    def __init__(self, engine: Engine):
        self.e = engine
        n = N_CTS
        self.duration = np.zeros(engine.n_mains)
        self.cycles = np.zeros(engine.n_mains)
        self.sync = np.ones(engine.n_mains, dtype=bool)
        # time-integrals (x seconds) accumulated over the step: V^2, I^2, P, Q per CT
        self.el_sums = np.zeros((4, n))
        self.vh2 = np.zeros((n, MAX_ORDER + 1))
        self.ih2 = np.zeros((n, MAX_ORDER + 1))
        self.ph_v2 = np.zeros((engine.n_mains, 3))
        self.ll_v2 = np.zeros((engine.n_mains, 3))
        self.ph_h2 = np.zeros((engine.n_mains, 3, MAX_ORDER + 1))
        # the windows' phasors of every order turned to the main's reference (angles only)
        self.v_turned = np.zeros((engine.n_mains, 3, MAX_ORDER + 1), dtype=complex)
        self.i_turned = np.zeros((n, MAX_ORDER + 1), dtype=complex)
        self.ib2 = np.zeros(N_METERS)  # derived I_b^2*s of 3P3W-2CT Meters
        self.ct_energy = np.zeros((n, N_ENERGY))
        self.meter_energy = np.zeros((N_METERS, N_ENERGY))
        self.flags_ct = np.zeros(n, dtype=np.int64)
        self.flags_main = np.zeros(engine.n_mains, dtype=np.int64)
        self.waves = [np.zeros((3 + N_CTS // engine.n_mains, 0)) for _ in range(engine.n_mains)]

    def add_main(self, ms: MainBuffer, bounds: np.ndarray, synced: bool,
                 clip: np.ndarray) -> None:
        """Add the cycles of one main (once per step and main)."""
        e, m = self.e, ms.main
        el = e.elements[m]
        rows = el.rows
        flags = 0 if synced else UNSYNC
        ct_flags = self.flags_ct[rows]  # a view: |= adds to the step's flags
        if clip.any():
            if clip[:3].any():
                flags |= CLIPPING
            ct_flags |= np.where((el.uses_v & clip[:3]).any(axis=1) | clip[3:], CLIPPING, 0)
        if bounds.size < 2:
            self.flags_main[m] |= flags | NO_DATA
            ct_flags |= NO_DATA
            self.sync[m] &= synced
            return

        # Validity per element and cycle: non-finite samples drop the cycle from energy.
        valid = ALL_VALID
        if ms.bad.shape[1] and ms.bad.any():
            bad_c = cycle_integrals(ms.bad.astype(np.float64), bounds) > 0  # (3+k, cyc)
            bad_el = bad_c[3:] | (el.uses_v.astype(float) @ bad_c[:3].astype(float) > 0)
            valid = ~bad_el
            ct_flags[bad_el.any(axis=1)] |= INVALID
            if bad_c[:3].any():
                flags |= INVALID

        # Per cycle: integrals, energy, fundamentals; the windows' grids for the spectra.
        groups, grid, fundamental, moments = ms.window_buffers(bounds.size - 1)
        weight, seconds, flags = main_cycles(
            ms.store, bounds, e.fs, synced, flags, valid, groups, grid, fundamental, moments,
            el.coeff, el.pairs, el.pt_ct, el.ct2, el.pt**2, el.gram_weights, el.start_a,
            el.used, el.aron, el.nominal_v, el.nominal_ln, self.el_sums[:, rows],
            self.ct_energy[rows], self.meter_energy[el.meter_rows], self.ib2[el.meter_rows],
            self.ph_v2[m], self.ll_v2[m], ct_flags)
        # An rfft bin times sqrt(2) / GRID is the rms phasor of that order (DC: 1 / GRID).
        spec = np.fft.rfft(grid, axis=2, out=ms.spec[: grid.shape[0]])
        window_harmonics(spec, weight, el.coeff, el.v_h2, el.i_h2, self.vh2[rows],
                         self.ih2[rows], self.ph_h2[m])
        if e.harmonic_angles:
            turned_phasors(spec, weight, self.v_turned[m], self.i_turned[rows])
        self.waves[m] = _last_cycles(ms.store, bounds, el)
        self.duration[m] += seconds
        self.cycles[m] += bounds.size - 1
        self.sync[m] &= synced
        self.flags_main[m] |= flags

    def result(self) -> StepResult:
        e = self.e
        freq_main, ct, vh, ih, meter, m_flags, main = finish_step(
            self.duration, self.cycles, self.sync, self.el_sums, self.vh2, self.ih2,
            self.ph_v2, self.ll_v2, self.ph_h2, self.ib2, self.flags_ct, e.used,
            e.nominal_el_v, e.rated_a, e.aron, e.nominal_ln, e.main_of_ct)
        v, i, p, q, s, pf, thd_v, thd_i = ct
        m_v, m_i, mp, mq, m_s, m_arith, m_vector, m_pf = meter
        ph_v, v_ll, main_thd, main_vh = main
        freq_ct = freq_main[e.main_of_ct]
        return StepResult(
            duration_s=max(self.duration.tolist()),
            ct=dict(v_rms=v, i_rms=i, p_w=p, q_var=q, s_va=s, pf=pf,
                    thd_v_pct=thd_v, thd_i_pct=thd_i, frequency_hz=freq_ct,
                    v_harmonics=vh, i_harmonics=ih, i_harmonic_phasors=self.i_turned,
                    flags=self.flags_ct),
            meter=dict(v_rms=m_v, i_rms=m_i, p_w=mp, q_var=mq, s_va=m_s,
                       s_arith_va=m_arith, s_vector_va=m_vector, pf=m_pf,
                       frequency_hz=freq_ct[::3], flags=m_flags),
            main=dict(frequency_hz=freq_main, v_ln=ph_v, v_ll=v_ll, thd_v_pct=main_thd,
                      v_harmonics=main_vh, v_harmonic_phasors=self.v_turned,
                      flags=self.flags_main),
            ct_energy=self.ct_energy,
            meter_energy=self.meter_energy,
            waveforms=tuple(self.waves),
        )


def _last_cycles(store: np.ndarray, bounds: np.ndarray, el: _Elements) -> np.ndarray:
    """A copy of the samples of the last WAVE_CYCLES whole cycles, scaled to primary V and A."""
    k = min(WAVE_CYCLES, bounds.size - 1)
    lo, hi = math.ceil(bounds[-1 - k]), math.floor(bounds[-1]) + 1
    scale = np.r_[np.full(3, el.pt), np.sqrt(el.ct2)]
    return store[: scale.size, lo:hi] * scale[:, None]


def _gain_offset(cals: tuple, signs: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-input (gain, offset) columns of a calibration, None when all are 1 and 0; a sign
    of -1 (a CT set ``reverse``) inverts that input."""
    signs = np.ones(len(cals)) if signs is None else signs
    if all(c.gain == 1 and c.offset == 0 for c in cals) and np.all(signs == 1):
        return None
    return (np.array([c.gain for c in cals])[:, None] * signs[:, None],
            np.array([c.offset for c in cals])[:, None])


def _product_rows(k: int, aron: np.ndarray) -> np.ndarray:
    """Row pairs of a main's buffer (va, vb, vc, then k currents) integrated per cycle
    besides v_el * i: i * i per CT, the voltage Gram matrix (aa, bb, cc, ab, bc, ca), then
    ia * ic of each 3P3W-2CT Meter (for its derived I_b); ``aron`` holds their local indices."""
    ct = np.arange(3, 3 + k)
    pairs = [np.stack((ct, ct), axis=1), np.array([[0, 0], [1, 1], [2, 2], [0, 1], [1, 2], [2, 0]]),
             np.stack((3 + 3 * aron, 5 + 3 * aron), axis=1)]
    return np.concatenate(pairs).astype(np.intp)
