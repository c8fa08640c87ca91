"""The simulated building as a sample source: a scenario's terminal-level samples.

The scenario (``sources.scenario``) states the truth; this synthesises what the meter's
inputs see of it: PT and CT ratios and errors, switching inside a block, faults, the ADC.

Synthesis is cheap by construction: per main and block, one complex exponential of the
fundamental phase, its needed powers for the harmonic orders in use, and one matrix product
mapping those to every channel. Noise is drawn from a seeded Gaussian table at random
offsets, instead of fresh normals per sample (which would cost more than the analysis).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pm4324.config.settings import CT_INPUTS, N_CTS, N_METERS, PHASES, Settings
from pm4324.sources import fault_effects as fx
from pm4324.sources.base import SampleBlock, Source
from pm4324.sources.faults import Fault, FaultBook
from pm4324.sources.scenario import CtError, LoadSpec, Scenario

NOISE_TABLE = 1 << 18


class SimulatorSource(Source):
    """Synthesises terminal-level samples of a scenario for a meter with ``settings``."""

    realtime = True

    def __init__(self, scenario: Scenario, settings: Settings):
        super().__init__()
        self.scenario, self.settings = scenario, settings
        self.sample_rate_hz = settings.sample_rate_hz
        self.n_mains = settings.n_mains
        self.phase = np.zeros(self.n_mains)  # fundamental phase at the next sample
        rng = np.random.default_rng(scenario.seed)
        self.rng = rng
        adc = scenario.adc
        if adc is not None:
            self.full_scale_v = adc.voltage_full_scale_v
            # in the CT input's unit: secondary A, or V of a 333 mV CT (scaled alike)
            self.full_scale_i = adc.current_full_scale_a * CT_INPUTS[settings.ct_input]
            self.noise = rng.standard_normal(NOISE_TABLE) if adc.noise_lsb > 0 else None
        self.pt = np.repeat([settings.mains[m].pt_ratio for m in range(self.n_mains)], 3)
        self.ct = np.repeat([settings.amperes_per_input(m) for m in range(N_METERS)], 3)
        err = scenario.ct_errors
        self.ct_gain = np.array([1 + err.get(k, CtError()).ratio_pct / 100
                                 for k in range(1, N_CTS + 1)])
        self.ct_shift = np.radians([err.get(k, CtError()).phase_deg for k in range(1, N_CTS + 1)])
        self._work_shape: tuple[int, int] | None = None
        self._work_arrays: dict[str, np.ndarray] = {}
        # the scenario's faults and live ones; they start and end at the next sample not yet
        # being synthesised (a block in the making keeps the faults it began with)
        self._reading_to = 0
        self.faults = FaultBook(scenario.faults, lambda: self._reading_to / self.sample_rate_hz)
        self._active: tuple[Fault, ...] = ()  # the faults of the segment being synthesised
        self._seg_start = 0  # its first sample

    def _frequency(self, m: int, t: float) -> float:
        return self.scenario.frequency(m, t, self._active)

    def _work(self, n: int, n_orders: int) -> dict[str, np.ndarray]:
        """Scratch arrays reused from block to block: fresh multi-megabyte temporaries cost
        page faults that took as much CPU as the synthesis itself."""
        if self._work_shape != (n, n_orders):
            self._work_shape = (n, n_orders)
            self._work_arrays = {
                "steps": np.arange(n, dtype=np.float64),
                "arg": np.zeros(n, dtype=complex),  # j * theta
                "z": np.empty(n, dtype=complex),
                "power": np.empty(n, dtype=complex),
                "basis": np.empty((2 * n_orders, n)),
                "mixed": np.empty((3 + N_CTS // self.n_mains, n)),
            }
        return self._work_arrays

    def _read_internal(self, n: int) -> SampleBlock:
        fs, start = self.sample_rate_hz, self._next
        self._reading_to = start + n
        if not self.faults.faults:
            v, i = self._synth(start, n)  # the common case, as fast as without faults
            return SampleBlock(start, v, i)
        # a fault that starts or ends inside the block splits it: each part is synthesised
        # with the faults active in it (phase-continuous, like any block boundary)
        t0 = start / fs
        cuts = sorted({min(n, max(0, math.ceil((b - t0) * fs - 1e-9)))
                       for b in self.faults.boundaries(t0, t0 + n / fs)} - {0, n})
        parts = []
        for a, b in zip([0, *cuts], [*cuts, n]):
            mid = (start + 0.5 * (a + b)) / fs
            self._active = self.faults.active(mid)
            parts.append(self._synth(start + a, b - a))
        self._active = ()
        self.faults.advance((start + n) / fs)
        if len(parts) == 1:
            return SampleBlock(start, *parts[0])
        return SampleBlock(start, np.concatenate([p[0] for p in parts], axis=1),
                           np.concatenate([p[1] for p in parts], axis=1))

    def _synth(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        fs = self.sample_rate_hz
        t0 = start / fs
        self._seg_start = start
        volts, currents, orders = self.scenario.phasors(self.settings, t0 + 0.5 * n / fs,
                                                        self._active, sags=False)
        currents = currents / self.ct[:, None] * self.ct_gain[:, None]
        currents = currents * np.exp(1j * np.outer(self.ct_shift, orders))
        out_v = np.empty((3 * self.n_mains, n))
        out_i = np.empty((N_CTS, n))
        per_main = N_CTS // self.n_mains
        w = self._work(n, len(orders))
        z, power, basis = w["z"], w["power"], w["basis"]
        for m in range(self.n_mains):
            f = self._frequency(m, t0)
            theta = w["arg"].imag  # a view: z = exp(arg) = exp(j * theta)
            np.multiply(2 * math.pi * f / fs, w["steps"], out=theta)
            theta += self.phase[m]
            self.phase[m] = (self.phase[m] + 2 * math.pi * f / fs * n) % (2 * math.pi)
            np.exp(w["arg"], out=z)
            power.fill(1.0)
            h_prev = 0
            for j, h in enumerate(orders):
                for _ in range(h - h_prev):
                    np.multiply(power, z, out=power)
                h_prev = h
                basis[2 * j], basis[2 * j + 1] = power.real, power.imag
            coeff = np.concatenate((volts[m] / self.pt[3 * m : 3 * m + 3, None],
                                    currents[m * per_main : (m + 1) * per_main]))
            coeff = coeff * math.sqrt(2)
            mix = np.empty((coeff.shape[0], 2 * len(orders)))
            mix[:, 0::2], mix[:, 1::2] = coeff.real, -coeff.imag
            # one product, then copies: separate voltage and current products round differently
            x = np.matmul(mix, basis, out=w["mixed"])
            out_v[3 * m : 3 * m + 3] = x[:3]
            out_i[m * per_main : (m + 1) * per_main] = x[3:]
        self._switching(out_v, out_i, t0, n)
        on_samples = fx.sample_faults(self._active) if self._active else None
        if on_samples:
            fx.apply_samples(on_samples, out_v, out_i, self.pt, self.ct)
        if self.scenario.adc is not None:
            self._adc(out_v, self.scenario.adc.voltage_full_scale_v)
            self._adc(out_i, self.full_scale_i)
        return out_v, out_i

    def _switching(self, v: np.ndarray, i: np.ndarray, t0: float, n: int) -> None:
        """Apply sags (the block is synthesised without them) and load on/off switching
        that happen inside the block, to the sample."""
        fs, t1 = self.sample_rate_hz, t0 + n / self.sample_rate_hz
        mid = t0 + 0.5 * n / fs
        for m, spec in enumerate(self.scenario.mains[: self.n_mains]):
            for sag in spec.sags:
                a, b = sag.start_s, sag.start_s + sag.duration_s
                if b <= t0 or a >= t1:
                    continue
                lo, hi = max(0, math.ceil((a - t0) * fs)), min(n, math.ceil((b - t0) * fs))
                for ph in sag.phases:
                    v[3 * m + PHASES.index(ph), lo:hi] *= sag.retained
        for ld in self.scenario.loads:
            if ld.off_s <= 0:
                continue
            period = ld.on_s + ld.off_s
            on_mid = ld.level(mid) > 0
            # Within one period the samples' phases only rise, so a block that starts and ends
            # on the same side of on_s, without wrapping, does not switch (the common case).
            first, last = t0 % period, (t0 + (n - 1) / fs) % period
            if n / fs < period and first <= last and (first < ld.on_s) == (last < ld.on_s):
                if (first < ld.on_s) == on_mid:
                    continue
            times = t0 + np.arange(n) / fs
            on = (times % period) < ld.on_s
            if on.all() == on_mid and on.all() or (~on).all() and not on_mid:
                continue
            idx = [c - 1 for c in ld.cts]
            if on_mid:
                i[idx] -= np.where(on, 0.0, 1.0) * self._load_only(ld, i, idx, times, on)
            else:
                i[idx] += np.where(on, 1.0, 0.0) * self._load_only(ld, i, idx, times, on)

    def _load_only(self, ld: LoadSpec, i: np.ndarray, idx: list[int], times: np.ndarray,
                   on: np.ndarray) -> np.ndarray:
        """The load's own contribution to its CTs over the block (for switching inside it)."""
        linear = tuple(f for f in self._active if f not in fx.sample_faults(self._active))
        solo = Scenario(self.scenario.name, 0, self.scenario.mains,
                        (LoadSpec(**{**ld.__dict__, "on_s": 0.0, "off_s": 0.0}),), None, {},
                        faults=linear)
        sim = SimulatorSource(solo, self.settings)
        sim._next, sim.phase = self._seg_start, self.phase.copy()
        # phase has already advanced past this block; rewind it
        fs, n = self.sample_rate_hz, times.size
        for m in range(self.n_mains):
            f = self._frequency(m, times[0])
            sim.phase[m] = (self.phase[m] - 2 * math.pi * f / fs * n) % (2 * math.pi)
        return sim._read_internal(n).currents[idx]

    def _adc(self, x: np.ndarray, full_scale: float) -> None:
        adc = self.scenario.adc
        lsb = full_scale / 2 ** (adc.bits - 1)
        if self.noise is None:
            _quantise(x, full_scale, lsb, np.empty(0), np.empty(0, dtype=np.int64), 0.0)
        else:
            offsets = self.rng.integers(0, NOISE_TABLE - x.shape[1], size=x.shape[0])
            _quantise(x, full_scale, lsb, self.noise, offsets, adc.noise_lsb * lsb)


# Compiled: the numpy form (noise add, clip, divide, round, multiply: five passes over the
# block and a gathered copy of the noise) took 1.4 ms per PM-4324A second, this 0.4 ms.
@njit(cache=True)
def _quantise(x: np.ndarray, full_scale: float, lsb: float, noise: np.ndarray,
              offsets: np.ndarray, noise_scale: float) -> None:
    """ADC in place: add noise[offsets[r]:] * noise_scale to row r (no noise when the table
    is empty), clip to +-full_scale, round to the nearest LSB (half to even)."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        row = x[r]
        if noise.size:
            nz = noise[offsets[r] : offsets[r] + n]
            for j in range(n):
                row[j] += nz[j] * noise_scale
        for j in range(n):
            row[j] = np.rint(min(max(row[j], -full_scale), full_scale) / lsb) * lsb
