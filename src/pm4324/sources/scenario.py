"""A scenario of the simulated building: what it is made of, and its exact truth.

A scenario (TOML, see docs/scenarios.md) describes the mains (voltage, frequency, harmonics,
frequency drift, sags), the loads on each CT (current, PF, harmonics, on/off schedule, daily
profile, import or export), the CTs' ratio and phase errors and the ADC (bits, full scale,
noise). ``Scenario.expected`` states the exact primary values an ideal meter would report;
the simulator (``sources.simulator``) synthesises samples from the same ``phasors``, so the
two cannot disagree. Reading a scenario file is ``sources.scenario_parse``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pm4324.config.settings import N_CTS, PHASES, Settings
from pm4324.metering.wiring import meter_wiring
from pm4324.sources import fault_effects as fx
from pm4324.sources.base import SourceError
from pm4324.sources.faults import Fault

_PHASE_ANGLE = {"a": 0.0, "b": -2 * math.pi / 3, "c": 2 * math.pi / 3}


class ScenarioError(SourceError):
    def __init__(self, source: str, key: str, value: Any, allowed: str):
        super().__init__(f"{source}: {key} = {value!r}: {allowed}")


@dataclass(frozen=True)
class Sag:
    start_s: float
    duration_s: float
    retained: float  # fraction of the voltage kept (0 = interruption, > 1 = a swell)
    phases: str = "abc"  # the phases it affects


@dataclass(frozen=True)
class MainSpec:
    voltage_v: float = 230.0  # primary rms, line to neutral
    frequency_hz: float = 50.0
    drift_hz: float = 0.0  # amplitude of a slow sinusoidal frequency wander
    drift_period_s: float = 600.0
    phase_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-phase unbalance
    harmonics: dict[int, tuple[float, float]] = field(default_factory=dict)  # h: (frac, deg)
    sags: tuple[Sag, ...] = ()


@dataclass(frozen=True)
class LoadSpec:
    name: str
    cts: tuple[int, ...]
    phases: tuple[str, ...]  # phase voltage each CT's current is referenced to
    current_a: float  # primary rms of the fundamental per CT
    pf: float  # displacement PF; > 0 lagging (inductive), < 0 leading (capacitive)
    export: bool = False
    harmonics: dict[int, tuple[float, float]] = field(default_factory=dict)
    on_s: float = 0.0  # on/off cycle: on for on_s, then off for off_s (off_s = 0: always on)
    off_s: float = 0.0
    daily_profile: tuple[float, ...] = ()  # 24 hourly multipliers, linearly interpolated
    start_hour: float = 0.0

    @property
    def angle(self) -> float:
        """Current angle relative to its voltage (radians, negative = lagging)."""
        phi = math.acos(min(1.0, abs(self.pf)))
        return (-phi if self.pf > 0 else phi) + (math.pi if self.export else 0.0)

    def level(self, t: float) -> float:
        """Multiplier at time t (profile x schedule)."""
        lvl = 1.0
        if self.daily_profile:
            hour = (self.start_hour + t / 3600.0) % 24.0
            prof = self.daily_profile
            k = int(hour)
            lvl = prof[k] + (hour - k) * (prof[(k + 1) % 24] - prof[k])
        if self.off_s > 0 and (t % (self.on_s + self.off_s)) >= self.on_s:
            lvl = 0.0
        return lvl


@dataclass(frozen=True)
class AdcSpec:
    bits: int = 24
    voltage_full_scale_v: float = 1000.0  # peak at the terminal
    current_full_scale_a: float = 3.0  # peak secondary (1.0 A rms = rated)
    noise_lsb: float = 1.0  # rms noise in LSB


@dataclass(frozen=True)
class CtError:
    ratio_pct: float = 0.0
    phase_deg: float = 0.0  # positive: secondary leads the primary


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    mains: tuple[MainSpec, ...]
    loads: tuple[LoadSpec, ...]
    adc: AdcSpec | None
    ct_errors: dict[int, CtError]
    source: str = "<scenario>"
    start: str = ""  # ISO local date/time the scenario starts at (history synth); "" = unset
    time_zone: str = ""  # IANA zone of ``start`` and of the daily profiles' hours
    faults: tuple[Fault, ...] = ()  # scheduled measurement and device faults (sources/faults.py)

    def load_on(self, ct: int) -> list[tuple[LoadSpec, str]]:
        return [(ld, ph) for ld in self.loads for c, ph in zip(ld.cts, ld.phases) if c == ct]

    # -- the truth ---------------------------------------------------------------------------

    def phasors(self, settings: Settings, t: float, faults: tuple[Fault, ...] | None = None,
                sags: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Primary rms phasors at time t: voltages (n_mains, 3, H), currents (24, H), orders;
        with the linear faults active at t (``faults``: the scenario's when None);
        ``sags=False``: as if no sag were under way."""
        active = [f for f in (self.faults if faults is None else faults) if f.active(t)]
        orders = sorted({1} | {h for m in self.mains for h in m.harmonics}
                        | {h for ld in self.loads for h in ld.harmonics} | fx.fault_orders(active))
        n_mains = settings.n_mains
        volts = np.zeros((n_mains, 3, len(orders)), dtype=complex)
        for m in range(n_mains):
            spec = self.mains[m]
            for p, ph in enumerate(PHASES):
                base = spec.voltage_v * spec.phase_scale[p] * (_retained(spec, t, ph) if sags
                                                                else 1.0)
                for j, h in enumerate(orders):
                    frac, deg = (1.0, 0.0) if h == 1 else spec.harmonics.get(h, (0.0, 0.0))
                    volts[m, p, j] = base * frac * np.exp(1j * (h * _PHASE_ANGLE[ph]
                                                                + math.radians(deg)))
        currents = np.zeros((N_CTS, len(orders)), dtype=complex)
        for ld in self.loads:
            lvl = ld.level(t)
            for ct, ph in zip(ld.cts, ld.phases):
                for j, h in enumerate(orders):
                    frac, deg = (1.0, 0.0) if h == 1 else ld.harmonics.get(h, (0.0, 0.0))
                    ang = h * _PHASE_ANGLE[ph] + (ld.angle if h == 1 else math.radians(deg)
                                                  + (math.pi if ld.export else 0.0))
                    currents[ct - 1, j] += ld.current_a * lvl * frac * np.exp(1j * ang)
        if active:
            phases = {ct: ph for ld in reversed(self.loads) for ct, ph in zip(ld.cts, ld.phases)}
            fx.apply_linear(active, volts, currents, orders, phases, t)
        return volts, currents, orders

    def frequency(self, m: int, t: float, faults: tuple[Fault, ...] | None = None) -> float:
        """Main m's (0-based) frequency at time t: nominal, drift, frequency excursions."""
        spec = self.mains[m]
        f = spec.frequency_hz + spec.drift_hz * math.sin(2 * math.pi * t / spec.drift_period_s)
        active = [f for f in (self.faults if faults is None else faults) if f.active(t)]
        return fx.frequency(active, m, f) if active else f

    def expected(self, settings: Settings, t: float, faults: tuple[Fault, ...] | None = None
                 ) -> list[dict[str, float]]:
        """Exact per-CT V rms, I rms, P, Q1 and frequency an ideal meter reports at time t
        (primary units), with the faults active at t (``faults``: the scenario's when None)."""
        volts, currents, orders = self.phasors(settings, t, faults)
        active = [f for f in (self.faults if faults is None else faults) if f.active(t)]
        on_samples = fx.sample_faults(active)
        v_dc = fx.dc_volts(on_samples, settings.n_mains)
        rows = []
        for k in range(1, N_CTS + 1):
            m = (k - 1) // 3
            w = meter_wiring(settings.meters[m])
            coeff = w.coefficients[(k - 1) % 3]
            if settings.meters[m].ct_reverse[(k - 1) % 3]:  # the meter inverts the current:
                coeff = -coeff  # same P and Q as an inverted voltage
            v_el = coeff @ volts[settings.main_of_ct(k)]  # (H,)
            el_dc = float(coeff @ v_dc[settings.main_of_ct(k)])
            i = currents[k - 1]
            i_dc, i_rms = 0.0, float(np.sqrt(np.sum(np.abs(i) ** 2)))
            if any(f.target.kind == "ct" and f.target.index == k for f in on_samples):
                i, i_dc, i_rms = fx.ct_waveform_truth(on_samples, k, i, orders)
            s = v_el * np.conj(i)
            rows.append({
                "ct": k,
                "v_rms": float(np.sqrt(np.sum(np.abs(v_el) ** 2) + el_dc ** 2)),
                "i_rms": i_rms,
                "p_w": float(np.sum(s.real)) + el_dc * i_dc,
                "q_var": float(s[orders.index(1)].imag),
                "frequency_hz": self.frequency(settings.main_of_ct(k), t, faults),
            })
        return rows


def _retained(spec: MainSpec, t: float, phase: str) -> float:
    """The fraction of phase ``phase``'s voltage kept at t (overlapping sags multiply)."""
    kept = 1.0
    for sag in spec.sags:
        if phase in sag.phases and sag.start_s <= t < sag.start_s + sag.duration_s:
            kept *= sag.retained
    return kept
