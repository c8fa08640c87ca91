"""The simulated building: seedable scenarios with known truth.

A scenario (TOML, see docs/scenarios.md) describes the mains (voltage, frequency, harmonics,
frequency drift, sags), the loads on each CT (current, PF, harmonics, on/off schedule, daily
profile, import or export), the CTs' ratio and phase errors and the ADC (bits, full scale,
noise). ``Scenario.expected`` states the exact primary values an ideal meter would report.

Synthesis is cheap by construction: per main and block, one complex exponential of the
fundamental phase, its needed powers for the harmonic orders in use, and one matrix product
mapping those to every channel. Noise is drawn from a seeded Gaussian table at random
offsets, instead of fresh normals per sample (which would cost more than the analysis).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from pm4324.config.settings import CT_INPUTS, N_CTS, N_METERS, PHASES, Settings, file_problem
from pm4324.metering.wiring import meter_wiring
from pm4324.sources import fault_effects as fx
from pm4324.sources.base import SampleBlock, Source, SourceError
from pm4324.sources.faults import Fault, FaultBook, FaultError, parse_faults

_PHASE_ANGLE = {"a": 0.0, "b": -2 * math.pi / 3, "c": 2 * math.pi / 3}
NOISE_TABLE = 1 << 18


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


# ---------------------------------------------------------------------------------------------
# Loading


def _harmonics(src: str, key: str, raw: Any) -> dict[int, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise ScenarioError(src, key, raw, 'must be a table like { 5 = 0.03 } or { 5 = [0.03, 180] }')
    out = {}
    for h, v in raw.items():
        if not str(h).isdigit() or not 2 <= int(h) <= 50:
            raise ScenarioError(src, f"{key}.{h}", v, "harmonic orders are 2 to 50")
        frac, deg = (v, 0.0) if isinstance(v, int | float) else (tuple(v) + (0.0,))[:2]
        if not isinstance(frac, int | float) or not 0 <= frac <= 2:
            raise ScenarioError(src, f"{key}.{h}", v, "fraction of the fundamental, 0 to 2")
        out[int(h)] = (float(frac), float(deg))
    return out


def _num(src: str, table: dict, key: str, default: float, lo: float, hi: float,
         prefix: str) -> float:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise ScenarioError(src, prefix + key, v, f"must be a number from {lo:g} to {hi:g}")
    return float(v)


def _check_keys(src: str, table: Any, allowed: set[str], prefix: str) -> None:
    if not isinstance(table, dict):
        raise ScenarioError(src, prefix.rstrip(".") or "(file)", table, "must be a table")
    for k in table:
        if k not in allowed:
            raise ScenarioError(src, prefix + k, table[k], "is not a known scenario key; known: "
                                + ", ".join(sorted(allowed)))


def parse_scenario(data: dict[str, Any], src: str = "<scenario>") -> Scenario:
    _check_keys(src, data, {"name", "seed", "mains", "loads", "adc", "ct_errors", "start",
                            "time_zone", "faults"}, "")
    mains = []
    raw_mains = data.get("mains", {})
    if not isinstance(raw_mains, dict):
        raise ScenarioError(src, "mains", raw_mains, "must be tables [mains.1] and [mains.2]")
    _check_keys(src, raw_mains, {"1", "2"}, "mains.")
    for name, value in (("loads", data.get("loads", [])), ("ct_errors", data.get("ct_errors", {}))):
        if not isinstance(value, list if name == "loads" else dict):
            raise ScenarioError(src, name, value, "must be [[loads]] tables" if name == "loads"
                                else "must be tables [ct_errors.N]")
    for m in (1, 2):
        t = raw_mains.get(str(m), {})
        p = f"mains.{m}."
        _check_keys(src, t, {"voltage_v", "frequency_hz", "drift_hz", "drift_period_s",
                             "phase_scale", "harmonics", "sags"}, p)
        sags = []
        for j, sg in enumerate(t.get("sags", [])):
            q = f"{p}sags.{j}."
            _check_keys(src, sg, {"start_s", "duration_s", "retained", "phases"}, q)
            phases = sg.get("phases", "abc")
            if not (isinstance(phases, str) and phases and set(phases) <= set(PHASES)):
                raise ScenarioError(src, q + "phases", phases, 'must be phases like "a" or "abc"')
            sags.append(Sag(_num(src, sg, "start_s", 0, 0, 1e9, q),
                            _num(src, sg, "duration_s", 0.1, 0, 1e9, q),
                            _num(src, sg, "retained", 0.5, 0, 2, q), phases))
        scale = t.get("phase_scale", [1.0, 1.0, 1.0])
        if not (isinstance(scale, list) and len(scale) == 3
                and all(isinstance(x, int | float) and 0 <= x <= 2 for x in scale)):
            raise ScenarioError(src, p + "phase_scale", scale, "must be three numbers 0..2")
        mains.append(MainSpec(
            voltage_v=_num(src, t, "voltage_v", 230, 0, 1e6, p),
            frequency_hz=_num(src, t, "frequency_hz", 50, 40, 70, p),
            drift_hz=_num(src, t, "drift_hz", 0, 0, 5, p),
            drift_period_s=_num(src, t, "drift_period_s", 600, 1, 1e9, p),
            phase_scale=tuple(float(x) for x in scale),
            harmonics=_harmonics(src, p + "harmonics", t.get("harmonics", {})),
            sags=tuple(sags),
        ))
    loads = []
    for j, ld in enumerate(data.get("loads", [])):
        p = f"loads.{j}."
        _check_keys(src, ld, {"name", "cts", "phases", "current_a", "pf", "export", "harmonics",
                              "on_s", "off_s", "daily_profile", "start_hour"}, p)
        cts = ld.get("cts")
        if not (isinstance(cts, list) and cts and all(isinstance(c, int) and 1 <= c <= N_CTS
                                                      for c in cts)):
            raise ScenarioError(src, p + "cts", cts, "must be a list of CT numbers 1..24")
        phases = ld.get("phases", [PHASES[(c - 1) % 3] for c in cts])
        if not (isinstance(phases, list) and len(phases) == len(cts)
                and all(ph in PHASES for ph in phases)):
            raise ScenarioError(src, p + "phases", phases, 'must list "a"/"b"/"c" per CT')
        pf = _num(src, ld, "pf", 1.0, -1.0, 1.0, p)
        if pf == 0:
            raise ScenarioError(src, p + "pf", pf, "must not be 0 (use 0.001 for a pure reactance)")
        profile = ld.get("daily_profile", [])
        if profile and not (isinstance(profile, list) and len(profile) == 24):
            raise ScenarioError(src, p + "daily_profile", profile, "must be 24 hourly numbers")
        loads.append(LoadSpec(
            name=str(ld.get("name", f"load {j + 1}")), cts=tuple(cts), phases=tuple(phases),
            current_a=_num(src, ld, "current_a", 0, 0, 1e5, p), pf=pf,
            export=bool(ld.get("export", False)),
            harmonics=_harmonics(src, p + "harmonics", ld.get("harmonics", {})),
            on_s=_num(src, ld, "on_s", 0, 0, 1e9, p), off_s=_num(src, ld, "off_s", 0, 0, 1e9, p),
            daily_profile=tuple(float(x) for x in profile),
            start_hour=_num(src, ld, "start_hour", 0, 0, 24, p),
        ))
    adc = None
    if "adc" in data:
        a = data["adc"]
        _check_keys(src, a, {"bits", "voltage_full_scale_v", "current_full_scale_a",
                             "noise_lsb"}, "adc.")
        adc = AdcSpec(bits=int(_num(src, a, "bits", 24, 8, 32, "adc.")),
                      voltage_full_scale_v=_num(src, a, "voltage_full_scale_v", 1000, 1, 1e4,
                                                "adc."),
                      current_full_scale_a=_num(src, a, "current_full_scale_a", 3, 0.01, 100,
                                                "adc."),
                      noise_lsb=_num(src, a, "noise_lsb", 1, 0, 1e6, "adc."))
    errors = {}
    for k, e in data.get("ct_errors", {}).items():
        if not str(k).isdigit() or not 1 <= int(k) <= N_CTS:
            raise ScenarioError(src, f"ct_errors.{k}", e, "keys are CT numbers 1..24")
        errors[int(k)] = CtError(_num(src, e, "ratio_pct", 0, -10, 10, f"ct_errors.{k}."),
                                 _num(src, e, "phase_deg", 0, -5, 5, f"ct_errors.{k}."))
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ScenarioError(src, "seed", seed, "must be a whole number")
    try:
        faults = parse_faults(data.get("faults", []), src)
    except FaultError as exc:
        raise SourceError(str(exc)) from None
    return Scenario(str(data.get("name", "scenario")), seed, tuple(mains), tuple(loads), adc,
                    errors, src, *_start(src, data), faults=faults)


def _start(src: str, data: dict[str, Any]) -> tuple[str, str]:
    """``start`` (a TOML date or local date-time) and ``time_zone`` (IANA), both optional."""
    import datetime as dt
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    start, tz = data.get("start", ""), data.get("time_zone", "")
    if start != "" and not isinstance(start, dt.date):
        raise ScenarioError(src, "start", start, "must be a TOML date or local date-time, "
                            "e.g. 2026-03-01 or 2026-03-01T00:00:00")
    if isinstance(start, dt.datetime) and start.tzinfo is not None:
        raise ScenarioError(src, "start", start, "must be local (no offset): give time_zone")
    try:
        if tz:
            ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScenarioError(src, "time_zone", tz, "must be an IANA zone, e.g. Europe/Berlin") from None
    return (start.isoformat() if start != "" else ""), tz


def load_scenario(path: str | Path | None) -> Scenario:
    """Load a scenario file; None gives the built-in small multi-tenant building."""
    p = Path(path) if path else Path(__file__).resolve().parent.parent / "data" / "building.toml"
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SourceError(file_problem("scenario file", p, exc, "--scenario")) from None
    return parse_scenario(data, str(p))


# ---------------------------------------------------------------------------------------------
# The source


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
