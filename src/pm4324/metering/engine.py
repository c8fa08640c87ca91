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

numpy plus the compiled per-sample kernels of ``cycles``, no I/O: the device feeds it blocks
and reads ``StepResult``s. The block copy into the buffer (with its peak and non-finite
checks) and the per-cycle and per-step arithmetic of the collector are compiled here too:
as numpy they were a few hundred calls of a few microseconds each per step.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from pm4324.config.settings import N_CTS, N_METERS, Settings, Wiring
from pm4324.metering.cycles import (
    CycleTracker,
    cycle_integrals,
    fundamental_products,
    harmonic_sums,
    moments_needed,
    product_integrals,
    raw_crossings,
    synchronous_resample,
    window_weights,
)
from pm4324.metering.wiring import meter_wiring

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


@dataclass
class StepResult:
    """Measurements for one step (normally one second); arrays follow snapshot.py's layout."""

    duration_s: float
    ct: dict[str, np.ndarray]
    meter: dict[str, np.ndarray]
    main: dict[str, np.ndarray]
    ct_energy: np.ndarray  # (24, 7) increments in Wh, varh, VAh
    meter_energy: np.ndarray  # (8, 7)


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
        finite = _ingest(np.ascontiguousarray(v, dtype=np.float64),
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
        """Harmonic windows for ``m`` cycles and the work arrays of ``_main_cycles``.

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
            _shift_left(self.store, cut, rest)
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
        # primary A per unit of a CT input (A clip-on, V for 333 mV CTs), and rated primary A
        self.ct = np.repeat([settings.amperes_per_input(m) for m in range(N_METERS)], 3)
        self.rated_a = np.repeat([m.rated_current_a for m in settings.meters], 3)
        self.nominal_el_v = nominal * np.array(
            [settings.mains[settings.main_of_ct(k + 1)].nominal_voltage_v for k in range(N_CTS)]
        )
        self.cal_v = _gain_offset(settings.calibration_v)
        self.cal_i = _gain_offset(settings.calibration_i)
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
            v_h2=_BIN_SCALE2 * self.pt[cts[0]] ** 2, i_h2=_BIN_SCALE2 * (ct * ct)[:, None],
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
        out = _Collector(self)
        per_main = N_CTS // self.n_mains
        for ms in self._mains:
            v = voltages[3 * ms.main : 3 * ms.main + 3]
            i = currents[ms.main * per_main : (ms.main + 1) * per_main]
            clip = ms.append(v, i, start, self._clip_level(full_scale, ms.n_ch))
            bounds, synced = ms.new_cycles(final)
            out.add_main(ms, bounds, synced, clip)
            ms.trim()
        return out.result()


class _Collector:
    """Turns per-cycle quantities into one StepResult (and the energy increments).

    The arithmetic per cycle and the final one per step run in compiled kernels
    (``_cycle_energy``, ``_finish``): in numpy they were some 150 small calls per step, 1 ms
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

    def add_main(self, ms: _MainState, bounds: np.ndarray, synced: bool,
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
        valid = _ALL_VALID
        if ms.bad.shape[1] and ms.bad.any():
            bad_c = cycle_integrals(ms.bad.astype(np.float64), bounds) > 0  # (3+k, cyc)
            bad_el = bad_c[3:] | (el.uses_v.astype(float) @ bad_c[:3].astype(float) > 0)
            valid = ~bad_el
            ct_flags[bad_el.any(axis=1)] |= INVALID
            if bad_c[:3].any():
                flags |= INVALID

        # Per cycle: integrals, energy, fundamentals; the windows' grids for the spectra.
        groups, grid, fundamental, moments = ms.window_buffers(bounds.size - 1)
        weight, seconds, flags = _main_cycles(
            ms.store, bounds, e.fs, synced, flags, valid, groups, grid, fundamental, moments,
            el.coeff, el.pairs, el.pt_ct, el.ct2, el.pt**2, el.gram_weights, el.start_a,
            el.used, el.aron, el.nominal_v, el.nominal_ln, self.el_sums[:, rows],
            self.ct_energy[rows], self.meter_energy[el.meter_rows], self.ib2[el.meter_rows],
            self.ph_v2[m], self.ll_v2[m], ct_flags)
        # An rfft bin times sqrt(2) / GRID is the rms phasor of that order (DC: 1 / GRID).
        spec = np.fft.rfft(grid, axis=2, out=ms.spec[: grid.shape[0]])
        _window_harmonics(spec, weight, el.coeff, el.v_h2, el.i_h2, self.vh2[rows],
                          self.ih2[rows], self.ph_h2[m], self.v_turned[m], self.i_turned[rows])
        self.duration[m] += seconds
        self.cycles[m] += bounds.size - 1
        self.sync[m] &= synced
        self.flags_main[m] |= flags

    def result(self) -> StepResult:
        e = self.e
        freq_main, ct, vh, ih, meter, m_flags, main = _finish(
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
                    v_harmonics=vh, i_harmonics=ih, i_harmonic_deg=_degrees(self.i_turned),
                    flags=self.flags_ct),
            meter=dict(v_rms=m_v, i_rms=m_i, p_w=mp, q_var=mq, s_va=m_s,
                       s_arith_va=m_arith, s_vector_va=m_vector, pf=m_pf,
                       frequency_hz=freq_ct[::3], flags=m_flags),
            main=dict(frequency_hz=freq_main, v_ln=ph_v, v_ll=v_ll, thd_v_pct=main_thd,
                      v_harmonics=main_vh, v_harmonic_deg=_degrees(self.v_turned),
                      flags=self.flags_main),
            ct_energy=self.ct_energy,
            meter_energy=self.meter_energy,
        )


def _gain_offset(cals: tuple) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-input (gain, offset) columns of a calibration, None when all are 1 and 0."""
    if all(c.gain == 1 and c.offset == 0 for c in cals):
        return None
    return (np.array([c.gain for c in cals])[:, None], np.array([c.offset for c in cals])[:, None])


def _product_rows(k: int, aron: np.ndarray) -> np.ndarray:
    """Row pairs of a main's buffer (va, vb, vc, then k currents) integrated per cycle
    besides v_el * i: i * i per CT, the voltage Gram matrix (aa, bb, cc, ab, bc, ca), then
    ia * ic of each 3P3W-2CT Meter (for its derived I_b); ``aron`` holds their local indices."""
    ct = np.arange(3, 3 + k)
    pairs = [np.stack((ct, ct), axis=1), np.array([[0, 0], [1, 1], [2, 2], [0, 1], [1, 2], [2, 0]]),
             np.stack((3 + 3 * aron, 5 + 3 * aron), axis=1)]
    return np.concatenate(pairs).astype(np.intp)


_ALL_VALID = np.ones((0, 0), dtype=bool)  # ``valid`` of ``_cycle_energy`` without bad samples
_ABS_BITS = np.uint64(0x7FFF_FFFF_FFFF_FFFF)  # a double's bits without the sign
_INF_BITS = np.uint64(0x7FF0_0000_0000_0000)  # +inf; NaNs are above it


@njit(cache=True)
def _ingest(v: np.ndarray, i: np.ndarray, dst: np.ndarray, col: int, peak: np.ndarray) -> bool:
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
def _shift_left(x: np.ndarray, cut: int, rest: int) -> None:
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
    q_scale = _BIN_SCALE2[1] * pt_ct
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
def _main_cycles(store, bounds, fs, synced, flags, valid, groups, grid, fundamental, moments,
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
def _window_harmonics(spec: np.ndarray, weight: np.ndarray, coeff: np.ndarray,
                      v_h2: np.ndarray, i_h2: np.ndarray, vh2: np.ndarray, ih2: np.ndarray,
                      ph_h2: np.ndarray, v_turned: np.ndarray, i_turned: np.ndarray) -> None:
    """Add a main's window spectra as ``harmonic_sums`` (channels, elements), scaled to
    primary units by v_h2 and i_h2, to the step's element (vh2), current (ih2) and phase
    (ph_h2) sums; and, for the angles, each window's bins of the phase voltages (v_turned)
    and currents (i_turned) times its weight, turned by h times the reference's angle.

    The reference is phase a's fundamental, or the cycles' own reference va - (vb + vc) / 2
    where phase a is under a tenth of it (absent): an order's angle is then its phase in
    degrees with the reference's fundamental at 0 (cosine convention), the same in every
    window and at any frequency. Weights are 0 at or above Nyquist: no angle there.
    """
    h_ch, h_el = harmonic_sums(spec, weight, coeff)
    for r in range(h_el.shape[0]):
        for h in range(h_el.shape[1]):
            vh2[r, h] += h_el[r, h] * v_h2[h]
            ih2[r, h] += h_ch[3 + r, h] * i_h2[r, h]
    for ph in range(3):
        for h in range(h_el.shape[1]):
            ph_h2[ph, h] += h_ch[ph, h] * v_h2[h]
    for g in range(spec.shape[0]):
        ref = spec[g, 0, 1]
        clarke = ref - 0.5 * (spec[g, 1, 1] + spec[g, 2, 1])
        if abs(ref) < 0.1 * abs(clarke):
            ref = clarke
        if ref == 0:
            continue
        turn = np.conj(ref) / abs(ref)
        rotation = 1.0 + 0.0j
        for h in range(weight.shape[1]):
            w = weight[g, h] * rotation
            for ph in range(3):
                v_turned[ph, h] += w * spec[g, ph, h]
            for r in range(i_turned.shape[0]):
                i_turned[r, h] += w * spec[g, 3 + r, h]
            rotation *= turn


def _degrees(turned: np.ndarray) -> np.ndarray:
    """Angles in degrees of the turned phasor sums; NaN where there is none (no data, or
    an order at or above Nyquist)."""
    return np.where(turned != 0, np.degrees(np.angle(turned)), np.nan)


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
def _finish(duration, cycles, sync, el_sums, vh2, ih2, ph_v2, ll_v2, ph_h2, ib2, ct_flags,
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
