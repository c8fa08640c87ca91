"""Accuracy matrix T1-T16 of metering-standards.md §1.10, against closed-form signals.

Every case drives the real ``Engine`` with closed-form float64 waveforms (``signals.py``: numpy
cos of exact phases, never the project's simulator) for >= 10 s (10 blocks of 1 s at
12.8 kHz unless stated) and checks
* the 1-s values of every step but the first (partial: it starts at the first crossing), and
* the energy: the sum of the increments of all steps against the analytic P*T over exactly the
  measured interval (sum of ``duration_s``; per-main closed form when mains differ).

Tolerances (fractions of reading unless stated), class 0.2S = IEC 62053-22 Table A (§1.2):
* ideal samples: P and energy <= 1/10 of class 0.2S: 0.02 % from 0.05 In (0.04 % below) at
  PF 1; 0.03 % from 0.1 In (0.05 % below) at PF 0.5 ind / 0.8 cap; 0.05 % at 0.25 ind /
  0.5 cap; V and I rms 0.01 %; frequency 1 mHz; Q1 0.05 % of S; THD 0.05 percentage points;
* 24-bit ADC + Gaussian noise: the class 0.2S limits themselves (0.2 %/0.4 %, 0.3 %/0.5 %,
  0.5 %); V, I 0.1 % and frequency 10 mHz (IEC 61000-4-30 class A); Q1 0.5 % of S.
Engine runs are shared: one scenario fills the 24 CTs / 8 Meters with up to 8 test points and
is run once per session (``result``); the parametrized tests only read it.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from pm4324.config.settings import MainSettings, MeterSettings, Settings, Wiring, validate
from pm4324.device.energy import EnergyRegisters

from .signals import (
    FLAG_UNUSED,
    FLAG_VOLTAGE_ABSENT,
    PF_ANGLE,
    PHYSICAL_ELEMENTS,
    Distorted,
    Expected,
    Run,
    Scenario,
    class_limit,
    expected,
    load,
    numeric_mean_power,
    three_phase,
)
from .signals import run as run_engine

W4, W3V, ARON, SPLIT, W1 = (Wiring.W3P4W_3CT, Wiring.W3P3W_3CT, Wiring.W3P3W_2CT,
                            Wiring.W1P3W_2CT, Wiring.W1P2W_1CT)
UN = 230.0
FS = 12800
IDEAL, ADC = "ideal", "adc24"

# -- scenario building -------------------------------------------------------------------------


@dataclass
class MainSpec:
    volts: dict[int, np.ndarray]
    freq: float = 50.0
    settings: MainSettings = MainSettings()


def main_3ph(scale: float = 1.0, freq: float = 50.0, un: float = UN, nominal_f: float = 50.0,
             pt: float = 1.0, **kw) -> MainSpec:
    return MainSpec({1: three_phase(scale * un / pt, **kw)}, freq,
                    MainSettings(pt_ratio=pt, nominal_voltage_v=un, nominal_frequency_hz=nominal_f))


def main_split(scale: float = 1.0, freq: float = 50.0, un: float = 120.0,
               nominal_f: float = 50.0) -> MainSpec:
    """Split phase 120/240 V: va, vb = -va, vc not connected (0 V)."""
    v = scale * un * np.array([1.0, -1.0, 0.0], dtype=complex)
    return MainSpec({1: v}, freq, MainSettings(nominal_voltage_v=un, nominal_frequency_hz=nominal_f))


@dataclass
class MeterSpec:
    wiring: Wiring
    amps: dict[int, np.ndarray]  # order -> (3,) secondary rms phasors
    ct_ratio: float = 100.0
    phases: tuple[str, str, str] = ("a", "b", "c")


def m(wiring: Wiring, level: float = 0.0, pf: str | float = "1", **kw) -> MeterSpec:
    """A balanced load at I/In = ``level`` and PF ``pf`` (key of PF_ANGLE or angle of S)."""
    ang = PF_ANGLE[pf] if isinstance(pf, str) else pf
    return MeterSpec(wiring, {1: load(level, ang, kw.pop("angles", (0.0, -120.0, 120.0)))}, **kw)


def scenario(mains: list[MainSpec], meters: list[MeterSpec], fs: float = FS, **kw) -> Scenario:
    n_mains = len(mains)
    meters = list(meters) + [m(W4)] * (8 - len(meters))
    settings = Settings(
        model="PM-4324" if n_mains == 1 else "PM-4324A",
        sample_rate_hz=float(fs),
        mains=tuple(ms.settings for ms in mains),
        meters=tuple(MeterSettings(wiring=mt.wiring, ct_ratio=mt.ct_ratio,
                                   circuit_phases=mt.phases) for mt in meters),
    )
    validate(settings)
    orders = sorted({h for mt in meters for h in mt.amps})
    amps = {h: np.concatenate([mt.amps.get(h, np.zeros(3, dtype=complex)) for mt in meters])
            for h in orders}
    return Scenario(settings=settings, freq=tuple(ms.freq for ms in mains),
                    volts=tuple(ms.volts for ms in mains), amps=amps, **kw)


SCENARIOS: dict[str, callable] = {}


def builds(name: str):
    def register(fn):
        SCENARIOS[name] = fn
        return fn

    return register


@dataclass
class Result:
    sc: Scenario
    run: Run
    exp: Expected

    @property
    def steady(self) -> np.ndarray:
        """Steps to check as 1-s values: not the first, not empty, not after a gate."""
        ends = np.cumsum(self.sc.blocks) / self.sc.settings.sample_rate_hz
        ok = self.run.durations > 0
        ok[0] = False
        if self.sc.gate_s is not None:
            ok &= ends <= self.sc.gate_s
        return np.flatnonzero(ok)

    @property
    def t_ct(self) -> np.ndarray:
        return self.run.measured_s()[self.sc.main_of_ct()]


@functools.cache
def result(name: str) -> Result:
    sc = SCENARIOS[name]()
    return Result(sc, run_engine(sc), expected(sc))


# -- checks ------------------------------------------------------------------------------------------


class Checks:
    """Collects every comparison of one test; fails once with all the violations listed."""

    def __init__(self, title: str):
        self.title = title
        self.lines: list[str] = []
        self.worst: dict[str, float] = {}

    def _record(self, name, err, tol, unit):
        err = np.asarray(err, dtype=float)
        worst = float(np.max(np.where(np.isnan(err), np.inf, err))) if err.size else 0.0
        self.worst[name] = max(self.worst.get(name, 0.0), worst)
        bad = ~(err <= tol)  # NaN fails too
        if bad.any():
            tol_b = np.broadcast_to(tol, err.shape)[bad]
            self.lines.append(f"{name}: max error {np.max(err[bad]):.4g}{unit} > tolerance "
                              f"{np.min(tol_b):.4g}{unit} ({int(bad.sum())} values)")

    def rel(self, name, meas, exp, tol):
        meas, exp = np.broadcast_arrays(np.asarray(meas, float), np.asarray(exp, float))
        with np.errstate(invalid="ignore", divide="ignore"):
            self._record(name, np.abs(meas - exp) / np.abs(exp), tol, "")

    def abs(self, name, meas, exp, tol, unit=""):
        meas, exp = np.broadcast_arrays(np.asarray(meas, float), np.asarray(exp, float))
        self._record(name, np.abs(meas - exp), tol, unit)

    def true(self, name, cond):
        if not np.all(cond):
            self.lines.append(f"{name}: violated")

    def done(self):
        assert not self.lines, f"{self.title}:\n  " + "\n  ".join(self.lines)


def check_meter(r: Result, j: int, model: str = IDEAL, p_tol: float | None = None,
                routing: bool = True, c: Checks | None = None) -> Checks:
    """All 1-s values and energies of Meter j (0-based) and its used CTs.

    p_tol overrides the class-derived P tolerance (fraction of reading).
    """
    ideal = model == IDEAL
    own = c is None
    c = c or Checks(f"{r.sc.settings.meters[j].wiring.value} Meter {j + 1}")
    e, run = r.exp, r.run
    cts = np.arange(3 * j, 3 * j + 3)
    cts = cts[e.ct["used"][cts]]
    st = r.steady
    k = 0.1 if ideal else 1.0
    wiring = r.sc.settings.meters[j].wiring
    physical = wiring in PHYSICAL_ELEMENTS
    T = r.t_ct[cts]

    # CT level -----------------------------------------------------------------------------------
    ct = {key: run.ct[key][st][:, cts] for key in ("p_w", "q_var", "v_rms", "i_rms", "s_va", "pf",
                                                     "frequency_hz", "thd_v_pct", "thd_i_pct")}
    p, q, s = e.ct["p"][cts], e.ct["q"][cts], e.ct["s"][cts]
    live = (e.ct["v"][cts] > 0) & (e.ct["i"][cts] > 0)
    tol_p = k * class_limit(e.ct["level"][cts], p, q) if p_tol is None else np.full(cts.size, p_tol)
    energy = run.ct_energy.sum(axis=0)[cts]
    check_p = p_tol is None or np.isfinite(p_tol)
    if physical and check_p:
        c.rel("CT P (1 s)", ct["p_w"][:, live], p[live], tol_p[live])
        c.rel("CT energy P", (energy[:, 0] - energy[:, 1])[live], (p * T / 3600)[live],
              tol_p[live])
    elif ideal:  # an element of a 3-wire mode has no physical meaning: 0.01 % of its S
        c.abs("element P (1 s) / S", ct["p_w"][:, live] / s[live], p[live] / s[live], 1e-4)
    rms_tol = 1e-4 if ideal else 1e-3
    c.rel("V rms", ct["v_rms"][:, e.ct["v"][cts] > 0], e.ct["v"][cts][e.ct["v"][cts] > 0], rms_tol)
    c.rel("I rms", ct["i_rms"][:, e.ct["i"][cts] > 0], e.ct["i"][cts][e.ct["i"][cts] > 0], rms_tol)
    c.rel("S = V I", ct["s_va"][:, live], s[live], 2 * rms_tol)
    c.abs("frequency", ct["frequency_hz"], e.freq_ct[cts], 1e-3 if ideal else 1e-2, " Hz")
    qfin = np.isfinite(q) & live
    c.abs("Q1 / S", ct["q_var"][:, qfin] / s[qfin], q[qfin] / s[qfin], 5e-4 if ideal else 5e-3)
    if ideal:
        vok = e.ct["v"][cts] > 0
        c.abs("THD_V", ct["thd_v_pct"][:, vok], e.ct["thd_v"][cts][vok], 0.05, " pp")
        iok = np.isfinite(q) & (e.ct["i"][cts] > 0)
        c.abs("THD_I", ct["thd_i_pct"][:, iok], e.ct["thd_i"][cts][iok], 0.05, " pp")
        c.abs("PF", ct["pf"][:, live], e.ct["pf"][cts][live], 1e-4)
        c.rel("CT energy VAh", energy[live, 6], (s * T / 3600)[live], 2 * rms_tol)

    # Meter level ---------------------------------------------------------------------------------
    mp, mq, ms = e.meter["p"][j], e.meter["q"][j], e.meter["s"][j]
    if ms == 0:
        if own:
            c.done()
        return c
    tm = T[0]
    tol_m = (k * class_limit(e.meter["level"][j], mp, mq) if p_tol is None else p_tol)
    me = run.meter_energy.sum(axis=0)[j]
    c.abs("Meter P = physical P (oracle, / S)", mp / ms, e.meter["p_phys"][j] / ms, 1e-12)
    if check_p:
        c.rel("Meter P (1 s)", run.meter["p_w"][st, j], mp, tol_m)
        c.rel("Meter energy P", me[0] - me[1], mp * tm / 3600, tol_m)
    c.abs("Meter Q1 / S", run.meter["q_var"][st, j] / ms, mq / ms, 5e-4 if ideal else 5e-3)
    c.rel("Meter S (kVA)", run.meter["s_va"][st, j], ms, 2 * rms_tol)
    c.rel("Meter S arithmetic", run.meter["s_arith_va"][st, j], e.meter["s_arith"][j], 2 * rms_tol)
    c.rel("Meter S vector", run.meter["s_vector_va"][st, j], e.meter["s_vector"][j], 2 * rms_tol)
    # docs/metering.md: the Meter's V and I are the means over its used elements
    c.rel("Meter V = mean of elements", run.meter["v_rms"][st, j], e.ct["v"][cts].mean(), rms_tol)
    c.rel("Meter I = mean of elements", run.meter["i_rms"][st, j], e.ct["i"][cts].mean(), rms_tol)
    c.rel("Meter energy VAh", me[6], ms * tm / 3600, 2 * rms_tol)
    c.abs("Meter energy Q1 / (S T)", (me[2] + me[3] - me[4] - me[5]) / (ms * tm / 3600), mq / ms,
          5e-4 if ideal else 5e-3)
    if routing:  # §3.5: import/export and quadrant registers, per cycle
        steps = run.meter_energy[:, j]
        if abs(mp) > 0.01 * ms:
            wrong = 1 if mp > 0 else 0
            c.true(f"Meter P routed to {'import' if mp > 0 else 'export'} only",
                   steps[:, wrong] == 0)
        if abs(mq) > 0.01 * ms and abs(mp) > 0.01 * ms:
            quad = {(True, True): 2, (False, True): 3, (False, False): 4, (True, False): 5}[
                (mp >= 0, mq >= 0)]
            others = [x for x in (2, 3, 4, 5) if x != quad]
            c.true(f"Meter Q routed to {('Q1', 'Q2', 'Q3', 'Q4')[quad - 2]} only",
                   steps[:, others] == 0)
            c.rel("Meter energy in its quadrant", me[quad], abs(mq) * tm / 3600,
                  5e-4 * ms / abs(mq) if ideal else 5e-3 * ms / abs(mq))
    if own:
        c.done()
    return c


def ids(values, fmt):
    return [fmt.format(v) for v in values]


# =================================================================================================
# T1-T3: current sweeps at PF 1, 0.5 ind / 0.8 cap, 0.25 ind / 0.5 cap (3P4W, 8 points per run)

T1_LEVELS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.2)
T2_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.2)
T3_POINTS = (("0.25ind", 0.1), ("0.25ind", 0.2), ("0.25ind", 0.5), ("0.25ind", 1.0),
             ("0.25ind", 1.2), ("0.5cap", 0.1), ("0.5cap", 0.5), ("0.5cap", 1.2))


def _sweep(points, model):
    return scenario([main_3ph()], [m(W4, lv, pf) for pf, lv in points], adc=(model == ADC,))


for _model in (IDEAL, ADC):
    builds(f"t1-{_model}")(functools.partial(_sweep, [("1", lv) for lv in T1_LEVELS], _model))
    for _pf in ("0.5ind", "0.8cap"):
        builds(f"t2-{_pf}-{_model}")(functools.partial(
            _sweep, [(_pf, lv) for lv in T2_LEVELS] + [(_pf, 1.0)], _model))
    builds(f"t3-{_model}")(functools.partial(_sweep, list(T3_POINTS), _model))


@pytest.mark.parametrize("level", T1_LEVELS, ids=ids(T1_LEVELS, "I={}In"))
@pytest.mark.parametrize("model", [IDEAL, ADC], ids=["ideal-tol0.02%(0.04%<0.05In)",
                                                    "adc24-tol0.2%(0.4%<0.05In)"])
def test_t1_current_sweep_pf1(model, level):
    check_meter(result(f"t1-{model}"), T1_LEVELS.index(level), model)


@pytest.mark.parametrize("level", T2_LEVELS, ids=ids(T2_LEVELS, "I={}In"))
@pytest.mark.parametrize("pf", ["0.5ind", "0.8cap"])
@pytest.mark.parametrize("model", [IDEAL, ADC], ids=["ideal-tol0.03%(0.05%<0.1In)",
                                                    "adc24-tol0.3%(0.5%<0.1In)"])
def test_t2_current_sweep_pf05ind_pf08cap(model, pf, level):
    check_meter(result(f"t2-{pf}-{model}"), T2_LEVELS.index(level), model)


@pytest.mark.parametrize("point", T3_POINTS, ids=[f"PF{p}-I={lv}In" for p, lv in T3_POINTS])
@pytest.mark.parametrize("model", [IDEAL, ADC], ids=["ideal-tol0.05%", "adc24-tol0.5%"])
def test_t3_pf025ind_pf05cap(model, point):
    check_meter(result(f"t3-{model}"), T3_POINTS.index(point), model)


# =================================================================================================
# T4: reactive Q1 at sin(phi) = 1, 0.5, 0.25 (ind and cap); |dQ1| <= 0.05 % of S

T4_POINTS = (("sin1ind", 90.0, 0.05), ("sin1ind", 90.0, 0.1), ("sin1ind", 90.0, 1.0),
             ("sin1cap", -90.0, 1.0), ("sin0.5ind", 30.0, 1.0), ("sin0.5cap", -30.0, 0.2),
             ("sin0.25ind", math.degrees(math.asin(0.25)), 1.0),
             ("sin0.25cap", -math.degrees(math.asin(0.25)), 0.5))


@builds("t4")
def _t4():
    return scenario([main_3ph()], [m(W4, lv, ang) for _, ang, lv in T4_POINTS])


@pytest.mark.parametrize("point", T4_POINTS, ids=[f"{n}-I={lv}In-tol0.05%S" for n, _, lv in T4_POINTS])
def test_t4_reactive_q1(point):
    r = result("t4")
    j = T4_POINTS.index(point)
    # P tolerance as a fraction of S here (at sin(phi) = 1, P = 0): 0.02 % of S
    c = Checks(f"T4 {point[0]}")
    e = r.exp
    cts = np.arange(3 * j, 3 * j + 3)
    s = e.ct["s"][cts]
    c.abs("CT P / S", r.run.ct["p_w"][r.steady][:, cts] / s, e.ct["p"][cts] / s, 2e-4)
    check_meter(r, j, p_tol=np.inf, c=c)
    en = r.run.ct_energy.sum(axis=0)[cts]
    c.abs("CT energy Q1 / (S T)", (en[:, 2] + en[:, 3] - en[:, 4] - en[:, 5]) / (s * r.t_ct[cts]
          / 3600), e.ct["q"][cts] / s, 5e-4)
    c.done()


# =================================================================================================
# T5: single-phase load on the three-phase modes (each element alone; 3-wire: line-to-line load)


def _line_load(level, pf, pair):
    """Line-to-line load between lines pair=(x, y): i_x = I, i_y = -I, referred to V_xy."""
    v = three_phase(1.0)
    vxy = v[pair[0]] - v[pair[1]]
    cur = level * np.exp(1j * (np.angle(vxy) - np.radians(PF_ANGLE[pf])))
    out = np.zeros(3, dtype=complex)
    out[pair[0]], out[pair[1]] = cur, -cur
    return out


T5_NAMES = ["3P4W-a-alone-PF1", "3P4W-b-alone-PF1", "3P4W-c-alone-PF1", "3P4W-b-alone-PF0.5ind",
            "3P3W3CT-ab-PF1", "3P3W3CT-bc-PF0.5ind", "Aron-ab-PF1", "Aron-ca-PF0.5ind"]


def _alone(level, pf, phase):
    keep = np.zeros(3)
    keep[phase] = 1.0
    return MeterSpec(W4, {1: load(level, PF_ANGLE[pf]) * keep})


@builds("t5")
def _t5():
    meters = [_alone(1.0, "1", 0), _alone(1.0, "1", 1), _alone(1.0, "1", 2),
              _alone(1.0, "0.5ind", 1),
              MeterSpec(W3V, {1: _line_load(1.0, "1", (0, 1))}),
              MeterSpec(W3V, {1: _line_load(0.5, "0.5ind", (1, 2))}),
              MeterSpec(ARON, {1: _line_load(1.0, "1", (0, 1))}),
              MeterSpec(ARON, {1: _line_load(1.0, "0.5ind", (2, 0))})]
    return scenario([main_3ph()], meters)


@pytest.mark.parametrize("j", range(8), ids=[f"{n}-tol{'0.03' if '0.5' in n else '0.02'}%"
                                             for n in T5_NAMES])
def test_t5_single_phase_load(j):
    check_meter(result("t5"), j)


# =================================================================================================
# T6: frequency (50-Hz nominal at 49, 51, 45, 55, 65, 57.5 Hz; 60-Hz mains 120 V and 277 V)

T6_FREQS = (49.0, 51.0, 45.0, 55.0, 65.0, 57.5)
T6_METERS = [m(W4, 1.0, "1"), m(W4, 1.0, "0.5ind"), m(W4, 0.1, "0.8cap"), m(W4, 0.05, "1"),
             m(ARON, 1.0, "1"), m(W3V, 0.5, "0.5ind"), m(W1, 1.2, "1"), m(W4, 0.02, "1")]
T6_NAMES = ["3P4W-In-PF1", "3P4W-In-PF0.5ind", "3P4W-0.1In-PF0.8cap", "3P4W-0.05In-PF1",
            "Aron-In-PF1", "3P3W3CT-0.5In-PF0.5ind", "1P2W-1.2In-PF1", "3P4W-0.02In-PF1"]
for _f in T6_FREQS:
    builds(f"t6-{_f}")(functools.partial(
        lambda f: scenario([main_3ph(freq=f)], T6_METERS), _f))


@builds("t6-60hz")
def _t6_60():
    meters = [m(W4, 1.0, "1"), m(W4, 1.0, "0.5ind"), m(ARON, 1.0, "0.8cap"), m(W1, 0.1, "1")]
    return scenario([main_3ph(freq=60.0, un=120.0, nominal_f=60.0),
                     main_3ph(freq=60.0, un=277.0, nominal_f=60.0)], meters + meters)


@pytest.mark.parametrize("j", range(8), ids=T6_NAMES)
@pytest.mark.parametrize("f", T6_FREQS, ids=ids(T6_FREQS, "{}Hz"))
def test_t6_frequency(f, j):
    check_meter(result(f"t6-{f}"), j)


@pytest.mark.parametrize("j", range(8), ids=[f"{u}V-{n}" for u in (120, 277) for n in
                                             ("3P4W-In-PF1", "3P4W-In-PF0.5ind",
                                              "Aron-In-PF0.8cap", "1P2W-0.1In-PF1")])
def test_t6_60hz_mains_120_277v(j):
    check_meter(result("t6-60hz"), j)


# =================================================================================================
# T7: voltage 0.8, 0.9, 1.1, 1.15 Un (two mains per run, same frequency and phase)

T7_METERS = [m(W4, 1.0, "1"), m(W4, 1.0, "0.5ind"), m(ARON, 1.0, "1"), m(W4, 0.05, "1")]
T7_VOLTS = (0.8, 0.9, 1.1, 1.15)
builds("t7-lo")(lambda: scenario([main_3ph(0.8), main_3ph(0.9)], T7_METERS + T7_METERS))
builds("t7-hi")(lambda: scenario([main_3ph(1.1), main_3ph(1.15)], T7_METERS + T7_METERS))


@pytest.mark.parametrize("j", range(4), ids=["3P4W-In-PF1", "3P4W-In-PF0.5ind", "Aron-In-PF1",
                                             "3P4W-0.05In-PF1"])
@pytest.mark.parametrize("u", T7_VOLTS, ids=ids(T7_VOLTS, "{}Un"))
def test_t7_voltage(u, j):
    k = T7_VOLTS.index(u)
    check_meter(result("t7-lo" if k < 2 else "t7-hi"), j + 4 * (k % 2))


# =================================================================================================
# T8: harmonics, U5 = 10 % Un and I5 = 40 % I1 in phase: P = 1.04 U1 I1; THD_V 10 %, THD_I 40 %


def _with5(wiring, level, pf="1", i5=0.4, phase5=0.0, **kw):
    base = m(wiring, level, pf, **kw)
    base.amps[5] = three_phase(i5 * level, order=5, deg=phase5)
    return base


T8_LEVEL = (0.6, 1.0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6)
T8_NAMES = ["3P4W-0.6In-I5inphase", "3P4W-In-I5inphase", "Aron-0.6In-I5inphase",
            "3P3W3CT-0.6In-I5inphase", "1P2W-0.6In-I5inphase", "3P4W-0.6In-sineI",
            "3P4W-0.6In-I5antiphase", "3P4W-0.6In-PF0.5ind-I5inphase"]


@builds("t8")
def _t8():
    main = main_3ph()
    main.volts[5] = three_phase(0.1 * UN, order=5)
    meters = [_with5(W4, 0.6), _with5(W4, 1.0), _with5(ARON, 0.6), _with5(W3V, 0.6),
              _with5(W1, 0.6), m(W4, 0.6), _with5(W4, 0.6, phase5=180.0),
              _with5(W4, 0.6, "0.5ind")]
    return scenario([main], meters)


@pytest.mark.parametrize("j", range(8), ids=[f"{n}-tol0.02%" for n in T8_NAMES])
def test_t8_harmonics(j):
    r = result("t8")
    c = check_meter(r, j, p_tol=2e-4, c=Checks(f"T8 {T8_NAMES[j]}"))
    e = r.exp
    cts = np.arange(3 * j, 3 * j + 3)[e.ct["used"][3 * j : 3 * j + 3]]
    if j in (0, 1, 4):  # the standard's point: P = 1.04 U1 I1 exactly
        u1i1 = UN * 100.0 * T8_LEVEL[j]
        c.rel("P = 1.04 U1 I1", r.run.ct["p_w"][r.steady][:, cts], 1.04 * u1i1, 2e-4)
    c.abs("THD_V = 10 %", r.run.ct["thd_v_pct"][r.steady][:, cts], 10.0, 0.05, " pp")
    if j not in (5,):
        c.abs("THD_I = 40 %", r.run.ct["thd_i_pct"][r.steady][:, cts], 40.0, 0.05, " pp")
    vh, ih = r.run.ct["v_harmonics"][r.steady][:, cts], r.run.ct["i_harmonics"][r.steady][:, cts]
    v1 = np.abs(e.ct["v"][cts]) / math.sqrt(1.01)
    c.rel("V1 rms (harmonic 1)", vh[..., 1], v1, 1e-4)
    c.abs("V5 / V1", vh[..., 5] / v1, 0.1, 5e-4)
    c.abs("main THD_V per phase", r.run.main["thd_v_pct"][r.steady], 10.0, 0.05, " pp")
    if j != 5:
        i1 = e.ct["i"][cts] / math.sqrt(1.16)
        c.rel("I1 rms (harmonic 1)", ih[..., 1], i1, 1e-4)
        c.abs("I5 / I1", ih[..., 5] / i1, 0.4, 5e-4)
    c.done()


# T8 extended: a spectrum up to order 50 at off-nominal / 60 Hz, where a cycle is not a whole
# number of samples and the interpolation onto the synchronous grid would lose 3-5 % at order
# 50 without its gain correction. Targets: P 0.02 %; THD_V, THD_I 0.05 pp; each harmonic
# 0.1 % of reading (IEC 61000-4-7 class I asks 5 % for components >= 1 % of nominal).
SPECTRUM = (2, 3, 5, 7, 11, 13, 25, 40, 50)  # V_h = 2 % Un, I_h = 5 % I1, all in phase


def _spectrum(f, nominal_f):
    main = main_3ph(freq=f, nominal_f=nominal_f)
    meters = [m(W4, 1.0), m(W4, 0.2)]
    for h in SPECTRUM:
        main.volts[h] = three_phase(0.02 * UN, order=h)
        for mt in meters:
            mt.amps[h] = three_phase(0.05 * abs(mt.amps[1][0]), order=h)
    return scenario([main], meters)


builds("t8-spectrum-50.37")(lambda: _spectrum(50.37, 50.0))
builds("t8-spectrum-60.0")(lambda: _spectrum(60.0, 60.0))


@pytest.mark.parametrize("f", [50.37, 60.0], ids=["50.37Hz", "60Hz"])
def test_t8_spectrum_to_order_50_harmonics_and_thd(f):
    r = result(f"t8-spectrum-{f}")
    st, e = r.steady, r.exp
    c = Checks(f"T8 spectrum at {f} Hz")
    vh, ih = r.run.ct["v_harmonics"][st][:, :6], r.run.ct["i_harmonics"][st][:, :6]
    for h in SPECTRUM:
        c.rel(f"V{h} (0.1 %)", vh[..., h], 0.02 * UN, 1e-3)
        c.rel(f"I{h} (0.1 %)", ih[..., h], 0.05 * np.abs(r.sc.amps[1][:6]) * 100.0, 1e-3)
    c.abs("THD_V (0.05 pp)", r.run.ct["thd_v_pct"][st][:, :6], e.ct["thd_v"][:6], 0.05, " pp")
    c.abs("THD_I (0.05 pp)", r.run.ct["thd_i_pct"][st][:, :6], e.ct["thd_i"][:6], 0.05, " pp")
    c.done()


@pytest.mark.parametrize("f", [50.37, 60.0], ids=["50.37Hz", "60Hz"])
@pytest.mark.parametrize("j", [0, 1], ids=["3P4W-In-tol0.02%", "3P4W-0.2In-tol0.02%"])
def test_t8_spectrum_to_order_50_power_and_energy(f, j):
    r = result(f"t8-spectrum-{f}")
    c = Checks(f"T8 spectrum P at {f} Hz")
    cts = np.arange(3 * j, 3 * j + 3)
    e = r.exp
    c.rel("P (1 s)", r.run.ct["p_w"][r.steady][:, cts], e.ct["p"][cts], 2e-4)
    c.rel("P = 1.009 P1", e.ct["p"][cts], 1.009 * UN * 100.0 * abs(r.sc.amps[1][3 * j]), 1e-12)
    c.rel("V, I rms", r.run.ct["v_rms"][r.steady][:, cts], e.ct["v"][cts], 1e-4)
    c.rel("I rms", r.run.ct["i_rms"][r.steady][:, cts], e.ct["i"][cts], 1e-4)
    en = r.run.ct_energy.sum(axis=0)[cts]
    c.rel("energy", en[:, 0] - en[:, 1], e.ct["p"][cts] * r.t_ct[cts] / 3600, 2e-4)
    c.rel("Meter energy", r.run.meter_energy.sum(axis=0)[j, 0],
          e.meter["p"][j] * r.t_ct[3 * j] / 3600, 2e-4)
    c.done()


# =================================================================================================
# T9: distorted currents (half-wave rectified, 90 deg phase-fired, burst-fired 2 on / 2 off)
# Sinusoidal 230 V at exactly 50 Hz, 256 samples per cycle, phase-aligned so that the firing
# instants fall on samples; reference = closed-form mean of v*i (checked against a 1 MHz
# numerical integral below). Tolerance 0.05 % for P (1 s and energy) and I rms.

T9_KINDS = ("halfwave", "phasefired", "burst")
T9_LEVELS = (1.0, 0.5)


@builds("t9")
def _t9():
    shapes = {}
    for j, lv in enumerate(T9_LEVELS):
        for k, kind in enumerate(T9_KINDS):
            shapes[3 * j + k] = Distorted(kind, lv)
    meters = [MeterSpec(W1, {1: np.zeros(3, dtype=complex)}, phases=("a", "a", "a"))] * 2
    return scenario([main_3ph()], meters, shapes=shapes)


@pytest.mark.parametrize("kind", T9_KINDS)
def test_t9_reference_closed_form_matches_1mhz_numeric(kind):
    cur = Distorted(kind, 1.0)
    p, i2 = numeric_mean_power(cur, UN)
    assert p == pytest.approx(UN * cur.power_fraction(), rel=1e-6)
    assert i2 == pytest.approx(cur.power_fraction(), rel=1e-6)


@pytest.mark.parametrize("level", T9_LEVELS, ids=ids(T9_LEVELS, "I={}In"))
@pytest.mark.parametrize("kind", T9_KINDS, ids=[f"{k}-tol0.05%" for k in T9_KINDS])
def test_t9_distorted_currents(kind, level):
    r = result("t9")
    k = 3 * T9_LEVELS.index(level) + T9_KINDS.index(kind)
    shape = r.sc.shapes[k]
    st = r.steady
    f = r.sc.freq[0]
    n_cyc = np.rint(r.run.durations * f).astype(int)  # whole cycles per step
    vi = UN * level * 100.0  # V * I (parent sine, primary)
    if kind == "burst":  # which cycles each step holds: cycle 0 starts at the first crossing
        first = np.concatenate(([0], np.cumsum(n_cyc)[:-1]))
        on = np.array([shape.cycle_on(np.arange(a, a + n)).sum() for a, n in zip(first, n_cyc,
                                                                                     strict=True)])
        frac_step = on / np.maximum(n_cyc, 1)
        frac_total = on.sum() / n_cyc.sum()
    else:
        frac_step = np.full(n_cyc.size, shape.power_fraction())
        frac_total = shape.power_fraction()
    c = Checks(f"T9 {kind} {level} In")
    c.rel("P (1 s)", r.run.ct["p_w"][st, k], vi * frac_step[st], 5e-4)
    i_ref = level * 100.0 * np.sqrt(frac_step[st])
    if kind == "phasefired":
        # A current that jumps has no exact sampled rms (the jump sample can make v*i exact, as
        # here, or i^2, not both; the harmonics above fs/2 are lost anyway): compare with the
        # rms of the very samples over one cycle (256 per cycle, mid-value at the jumps).
        i_ref = 100.0 * np.sqrt(np.mean(shape.samples(np.arange(256) / 256.0) ** 2))
    c.rel("I rms (1 s)", r.run.ct["i_rms"][st, k], i_ref, 5e-4)
    en = r.run.ct_energy[:, k].sum(axis=0)
    c.rel("energy", en[0] - en[1], vi * frac_total * r.run.durations.sum() / 3600, 5e-4)
    c.true("no export", en[1] == 0)
    c.done()


# =================================================================================================
# T10: unbalance: one / two voltage phases interrupted (currents still flowing), reversed
# sequence, an unbalanced (IEEE 1459 style) supply with unbalanced 3- and 4-wire loads

T10_INT_NAMES = ["3P4W-In-PF1", "3P4W-In-PF0.5ind", "1P2W-In-PF1", "3P4W-0.1In-PF1"]


@builds("t10-interrupted")
def _t10_int():
    meters = [m(W4, 1.0, "1"), m(W4, 1.0, "0.5ind"), m(W1, 1.0, "1"), m(W4, 0.1, "1")]
    one = MainSpec({1: three_phase((UN, UN, 0.0))})  # phase c interrupted
    two = MainSpec({1: three_phase((UN, 0.0, 0.0))})  # phases b and c interrupted
    return scenario([one, two], meters + meters)


@pytest.mark.parametrize("j", range(8), ids=[f"{w}-{n}-tol0.02%" for w in
                                             ("c-interrupted", "b+c-interrupted")
                                             for n in T10_INT_NAMES])
def test_t10_phases_interrupted(j):
    r = result("t10-interrupted")
    c = check_meter(r, j, c=Checks(f"T10 interrupted Meter {j + 1}"))
    dead = (np.arange(3 * j, 3 * j + 3) % 3) >= (2 if j < 4 else 1)
    cts = np.arange(3 * j, 3 * j + 3)[dead]
    flags = r.run.ct["flags"][r.steady][:, cts]
    c.true("dead elements flagged voltage_absent", (flags & FLAG_VOLTAGE_ABSENT) != 0)
    c.abs("dead elements P / S_nominal", r.run.ct["p_w"][r.steady][:, cts] / (UN * 100.0), 0.0,
          1e-6)
    en = r.run.ct_energy.sum(axis=0)[cts]
    c.true("dead elements register no energy", en == 0)
    c.done()


T10_SEQ_NAMES = ["acb-3P4W-0.1In-PF1", "acb-3P4W-In-PF0.5ind", "acb-Aron-In-PF1",
                 "acb-3P3W3CT-In-PF0.8cap", "unbal-3P4W-unbal-load", "unbal-3P3W3CT-3wire-load",
                 "unbal-Aron-3wire-load", "unbal-1P2W"]
UNBAL_ANGLES = (0.0, -125.0, 112.0)
UNBAL_V = three_phase((UN, 0.9 * UN, 1.1 * UN), angles=UNBAL_ANGLES)


def _three_wire_currents(ia, ic):
    return np.array([ia, -(ia + ic), ic])


@builds("t10-sequence")
def _t10_seq():
    acb = (0.0, 120.0, -120.0)
    rev = main_3ph(sequence=-1)
    unbal = MainSpec({1: UNBAL_V})
    i3w = _three_wire_currents(0.9 * np.exp(-0.35j), 0.6 * np.exp(2.27j))
    meters = [m(W4, 0.1, "1", angles=acb), m(W4, 1.0, "0.5ind", angles=acb),
              m(ARON, 1.0, "1", angles=acb), m(W3V, 1.0, "0.8cap", angles=acb),
              MeterSpec(W4, {1: load(1.0, 0.0, UNBAL_ANGLES, (1.0, 0.7, 0.4))
                             * np.exp(1j * np.radians([0, -60, 36.87]))}),
              MeterSpec(W3V, {1: i3w}), MeterSpec(ARON, {1: i3w}),
              MeterSpec(W1, {1: load(0.8, 25.0, UNBAL_ANGLES)})]
    return scenario([rev, unbal], meters)


@pytest.mark.parametrize("j", range(8), ids=T10_SEQ_NAMES)
def test_t10_reversed_sequence_and_unbalanced_supply(j):
    check_meter(result("t10-sequence"), j)


# =================================================================================================
# T11: no load at 1.15 Un, I = 0 plus noise at Ist/10 (Ist = 0.001 In), 24-bit ADC:
# every energy increment of every CT and Meter must be exactly zero.

IST = 0.001


@builds("t11")
def _t11():
    meters = [m(W4), m(W3V), m(ARON), m(W1), m(SPLIT), MeterSpec(W1, {1: np.zeros(3)},
              phases=("a", "b", "a")), m(SPLIT), m(W1)]
    return scenario([main_3ph(1.15), main_split(1.15, freq=60.0, nominal_f=60.0)], meters,
                    adc=(True, True), noise_i=IST / 10)


def test_t11_no_load_registers_exactly_zero():
    r = result("t11")
    assert np.all(r.run.ct_energy == 0), np.argwhere(r.run.ct_energy != 0)[:10]
    assert np.all(r.run.meter_energy == 0), np.argwhere(r.run.meter_energy != 0)[:10]
    # the run did measure: both mains tracked (1.15 Un), whole cycles in every later step
    f = r.run.main["frequency_hz"][r.steady]
    np.testing.assert_allclose(f, np.broadcast_to([50.0, 60.0], f.shape), rtol=0, atol=0.01)


# =================================================================================================
# T12: starting current I = Ist = 0.001 In, PF 1: registers in every step, energy within 5 %
# (main 1 ideal samples, main 2 through the 24-bit ADC with noise)

T12_NAMES = ["3P4W", "3P3W3CT", "Aron", "1P2W"]


@builds("t12")
def _t12():
    meters = [m(W4, IST), m(W3V, IST), m(ARON, IST), m(W1, IST)]
    return scenario([main_3ph(), main_3ph()], meters + meters, adc=(False, True))


@pytest.mark.parametrize("j", range(8), ids=[f"{s}-{n}-tol5%" for s in (IDEAL, ADC)
                                             for n in T12_NAMES])
def test_t12_starting_current(j):
    r = result("t12")
    e = r.exp
    cts = np.arange(3 * j, 3 * j + 3)[e.ct["used"][3 * j : 3 * j + 3]]
    c = Checks(f"T12 Meter {j + 1}")
    st = np.arange(1, r.run.durations.size)
    c.true("CT registers import in every step", r.run.ct_energy[st][:, cts, 0] > 0)
    c.true("Meter registers import in every step", r.run.meter_energy[st, j, 0] > 0)
    en = r.run.ct_energy.sum(axis=0)[cts]
    c.rel("CT energy", en[:, 0] - en[:, 1], e.ct["p"][cts] * r.t_ct[cts] / 3600, 0.05)
    me = r.run.meter_energy.sum(axis=0)[j]
    c.rel("Meter energy", me[0] - me[1], e.meter["p"][j] * r.t_ct[3 * j] / 3600, 0.05)
    c.done()


# =================================================================================================
# T13: four quadrants, import/export and quadrant register routing, every wiring mode
# (PF 0.5: S at 60, 120, -120, -60 deg = quadrants I, II, III, IV)

QUADS = {"QI": 60.0, "QII": 120.0, "QIII": -120.0, "QIV": -60.0}


@builds("t13-4wire")
def _t13_a():
    return scenario([main_3ph()], [m(W4, 1.0, a) for a in QUADS.values()]
                    + [m(W3V, 0.5, a) for a in QUADS.values()])


@builds("t13-aron-split")
def _t13_b():
    split = [MeterSpec(SPLIT, {1: load(0.8, a, (0.0, 180.0, 0.0), (1, 1, 0))})
             for a in QUADS.values()]
    return scenario([main_3ph(), main_split()], [m(ARON, 1.0, a) for a in QUADS.values()] + split)


T13_CASES = ([("t13-4wire", j, f"3P4W-{q}") for j, q in enumerate(QUADS)]
             + [("t13-4wire", 4 + j, f"3P3W3CT-{q}") for j, q in enumerate(QUADS)]
             + [("t13-aron-split", j, f"Aron-{q}") for j, q in enumerate(QUADS)]
             + [("t13-aron-split", 4 + j, f"1P3W-{q}") for j, q in enumerate(QUADS)])


@pytest.mark.parametrize("case", T13_CASES, ids=[c[2] for c in T13_CASES])
def test_t13_four_quadrants(case):
    name, j, _ = case
    check_meter(result(name), j)


# 1P2W: each circuit in its own quadrant; and the PT 100 (23 kV) / CT 400 ratios case
RATIO_NAMES = ["23kV-CT400-3P4W-In-PF1", "23kV-CT400-3P4W-0.1In-PF0.5ind",
               "23kV-CT400-Aron-In-PF0.8cap", "23kV-CT400-3P3W3CT-0.5In-QII",
               "1P2W-CT60-QI,QII,QIII", "1P2W-CT200-QIV,export,import", "3P4W-CT300-In-PF1",
               "3P4W-CT60-0.01In-PF1"]


@builds("t13-1p2w-ratios")
def _t13_c():
    hv = main_3ph(un=23000.0, pt=100.0)
    circuits1 = np.array([load(1.0, 60.0)[0], load(0.7, 120.0)[1], load(0.4, -120.0)[2]])
    circuits2 = np.array([load(0.9, -60.0)[2], load(0.6, 180.0)[0], load(0.3, 0.0)[1]])
    meters = [m(W4, 1.0, "1", ct_ratio=400.0), m(W4, 0.1, "0.5ind", ct_ratio=400.0),
              m(ARON, 1.0, "0.8cap", ct_ratio=400.0), m(W3V, 0.5, 120.0, ct_ratio=400.0),
              MeterSpec(W1, {1: circuits1}, ct_ratio=60.0),
              MeterSpec(W1, {1: circuits2}, ct_ratio=200.0, phases=("c", "a", "b")),
              m(W4, 1.0, "1", ct_ratio=300.0), m(W4, 0.01, "1", ct_ratio=60.0)]
    return scenario([hv, main_3ph()], meters)


@pytest.mark.parametrize("j", range(8), ids=RATIO_NAMES)
def test_t13_1p2w_quadrants_and_pt_ct_ratios(j):
    r = result("t13-1p2w-ratios")
    c = check_meter(r, j, c=Checks(f"{RATIO_NAMES[j]}"))
    # per-circuit routing for 1P2W (each CT is a circuit of its own)
    if r.sc.settings.meters[j].wiring is W1:
        for k in range(3 * j, 3 * j + 3):
            p, q = r.exp.ct["p"][k], r.exp.ct["q"][k]
            steps = r.run.ct_energy[:, k]
            c.true(f"CT{k + 1} P routed to one direction", steps[:, 1 if p > 0 else 0] == 0)
            if abs(q) > 0.01 * r.exp.ct["s"][k]:
                quad = {(True, True): 2, (False, True): 3, (False, False): 4,
                        (True, False): 5}[(p >= 0, q >= 0)]
                c.true(f"CT{k + 1} Q routed to one quadrant",
                       steps[:, [x for x in (2, 3, 4, 5) if x != quad]] == 0)
    c.done()


# =================================================================================================
# T14: every wiring mode on a PM-4324A whose mains run at 50.0 Hz (3-phase 230 V) and 50.3 Hz
# (split phase 120/240 V) at once. The loads stop at each main's first crossing after 10 s and
# two more seconds flush the engine, so the measured interval of each main is known in closed
# form (whole cycles from 0.75 cycle to the gate); 1-s values are checked on steps 1..9.

T14_NAMES = ["3P4W-unbalanced-4wire", "3P3W3CT-unbalanced-3wire", "Aron-unbalanced-3wire",
             "1P2W-abc", "1P3W-legs+bogus-CTc", "1P3W-240V-load+legs", "1P2W-a,b,a",
             "1P3W-export"]


@builds("t14")
def _t14():
    i4 = load(1.0, 0.0) * np.array([1.0, 0.5, 0.8]) * np.exp(-1j * np.radians([0, 60, -36.87]))
    i3 = _three_wire_currents(0.9 * np.exp(-0.35j), 0.6 * np.exp(2.27j))
    va = (0.0, 180.0, 0.0)
    legs = load(1.0, 20.0, va, (1, 1, 0)) + np.array([0, 0, 0.3])  # bogus current on CT c
    i240 = 0.8 * np.exp(-0.5j)
    l240 = np.array([i240 + 0.3, -i240 + load(0.5, 25.0, va)[1], 0.0])
    meters = [MeterSpec(W4, {1: i4}), MeterSpec(W3V, {1: i3}), MeterSpec(ARON, {1: i3}),
              MeterSpec(W1, {1: load(0.7, 30.0)}),
              MeterSpec(SPLIT, {1: legs}), MeterSpec(SPLIT, {1: l240}),
              MeterSpec(W1, {1: np.array([load(0.5, 0.0, va)[0], load(0.7, 60.0, va)[1],
                                          load(0.2, 180.0, va)[0]])}, phases=("a", "b", "a")),
              MeterSpec(SPLIT, {1: load(0.6, 150.0, va, (1, 1, 0))})]
    return scenario([main_3ph(freq=50.0), main_split(freq=50.3)], meters,
                    blocks=(FS,) * 12, gate_s=10.0)


@pytest.mark.parametrize("j", range(8), ids=T14_NAMES)
def test_t14_wiring_modes_two_mains_50_and_50p3hz(j):
    check_meter(result("t14"), j)


def test_t14_mains_frequencies_and_gate():
    r = result("t14")
    f = r.run.main["frequency_hz"][r.steady]
    np.testing.assert_allclose(f, np.broadcast_to([50.0, 50.3], f.shape), rtol=0, atol=1e-3)
    # after the gate (+ the engine's latency) nothing is registered any more
    assert np.all(r.run.ct_energy[-1] == 0)


# =================================================================================================
# T15: continuity at 50.37 Hz with an irrational phase and irregular block sizes (1 sample ..
# 1.6 s): the summed increments equal P * (sum of durations) to 1e-6 (one lost or doubled
# sample would be 8e-6, one cycle 2e-3); every step holds whole cycles.

T15_BLOCKS = (12800, 5000, 100, 7, 20000, 12800, 3333, 1, 9999, 12800, 777, 12800, 25, 15000,
              12800, 12800, 4096, 12800)


@builds("t15")
def _t15():
    meters = [m(W4, 1.0, "1"), m(W4, 0.5, "0.5ind"), m(ARON, 0.8, "0.8cap"), m(W1, 0.2, 120.0),
              m(W3V, 1.2, -120.0), _with5(W4, 0.6), m(W4, 0.05, "1"), m(SPLIT, 0.3, 30.0)]
    return scenario([main_3ph(freq=50.37)], meters, blocks=T15_BLOCKS,
                    u0=(math.sqrt(2.0) - 1.0,))


def test_t15_energy_continuity_off_nominal():
    r = result("t15")
    e, run = r.exp, r.run
    f = 50.37
    cycles = run.durations * f
    np.testing.assert_allclose(cycles, np.rint(cycles), atol=1e-6, err_msg="whole cycles")
    total = run.durations.sum()
    assert total > 10.0
    en = run.ct_energy.sum(axis=0)
    used = e.ct["used"] & (e.ct["i"] > 0)
    np.testing.assert_allclose((en[:, 0] - en[:, 1])[used], (e.ct["p"] * total / 3600)[used],
                               rtol=1e-6, err_msg="CT energy vs P * sum(duration)")
    np.testing.assert_allclose(en[used, 6], (e.ct["s"] * total / 3600)[used], rtol=1e-6)
    me = run.meter_energy.sum(axis=0)
    np.testing.assert_allclose(me[:, 0] - me[:, 1], e.meter["p"] * total / 3600, rtol=1e-6)
    # the same through the 1-s values (steps with cycles, first excluded)
    for j in range(8):
        check_meter(r, j)


T15_STARTUP_BLOCKS = (1, 2, 3, 50, 100, 200, 12800, 12799, 12801, 1, 25600, 12800, 12800, 12800,
                      12800, 12800, 1000)


@builds("t15-startup")
def _t15_startup():
    meters = [m(W4, 1.0, "0.5ind"), m(ARON, 0.5, "1"), m(SPLIT, 0.3, -150.0)]
    return scenario([main_3ph(freq=49.83)], meters, blocks=T15_STARTUP_BLOCKS, u0=(math.pi % 1,))


def test_t15_continuity_tiny_blocks_at_start():
    r = result("t15-startup")
    cycles = r.run.durations * 49.83
    np.testing.assert_allclose(cycles, np.rint(cycles), atol=1e-6, err_msg="whole cycles")
    total = r.run.durations.sum()
    en = r.run.ct_energy.sum(axis=0)
    used = r.exp.ct["used"] & (r.exp.ct["i"] > 0)
    np.testing.assert_allclose((en[:, 0] - en[:, 1])[used], (r.exp.ct["p"] * total / 3600)[used],
                               rtol=1e-6)


@builds("t15-final")
def _t15_final():
    # first crossing at 0.75 cycle (15 ms), the last one in the data at 9.995 s: 64 samples
    # before the end of the last block, which is fed with final=True
    return scenario([main_3ph()], [m(W4, 1.0, "1")])


def test_t15_final_block_reports_every_whole_cycle():
    r = result("t15-final")
    f = 50.0
    first, last = 0.75 / f, 0.75 / f + 499 / f
    assert last < 10.0 - 3 / FS  # a whole cycle, with the samples its interpolation needs
    assert r.run.durations.sum() == pytest.approx(last - first, abs=1e-9)
    en = r.run.ct_energy.sum(axis=0)[:3]
    np.testing.assert_allclose(en[:, 0], r.exp.ct["p"][:3] * (last - first) / 3600, rtol=1e-6)


# =================================================================================================
# T16: long-run register arithmetic: 1 kW for one year of 1-s increments, error < 1 uWh


def test_t16_one_year_at_1kw_register_exact_to_1uwh():
    inc = 1000.0 / 3600.0  # Wh per second at 1 kW
    year_s = 365 * 24 * 3600
    # a naive float32 register cannot even add one increment once it holds 10 MWh (ulp 1 Wh)
    assert np.float32(1e7) + np.float32(inc) == np.float32(1e7)
    # Vectorised: 8760 registers (one per hour of the year, 7 columns each) run the 3600
    # sequential additions of their hour in lock-step; the year is their exact (integer) sum.
    hours = year_s // 3600
    reg = EnergyRegisters(hours)
    step = np.full((hours, 7), inc)
    for _ in range(3600):
        reg.add(step)
    total_uwh = int(reg.micro[:, 0].sum()) + math.fsum(reg.remainder[:, 0])
    assert abs(total_uwh - 8_760_000 * 1_000_000) < 1.0  # < 1 uWh vs the exact 8 760 kWh
    assert np.all(reg.micro == reg.micro[0, 0])  # every hour (and every column) identical
    # one register, one day, sequentially, starting at 10 MWh (where float32 stops counting)
    one = EnergyRegisters(1)
    one.micro[:] = 10_000_000 * 1_000_000
    day = np.full((1, 7), inc)
    for _ in range(86_400):
        one.add(day)
    got = (one.micro[0, 0] - 10_000_000 * 1_000_000) + one.remainder[0, 0]
    assert abs(got - 24_000 * 1_000_000) < 1.0
    assert one.values()[0, 0] == pytest.approx(10_024_000.0, abs=1e-6)


# =================================================================================================
# Flags: clean measurements carry no flag; unused CTs say so; nothing clips under the ADC model

# (not at exactly 45 / 65 Hz: a reading of 65.000001 Hz is legitimately "outside 45..65")
FLAG_SCENARIOS = ["t1-ideal", "t1-adc24", "t6-49.0", "t6-57.5", "t6-60hz", "t8", "t10-sequence",
                  "t13-aron-split", "t13-1p2w-ratios", "t14"]


@pytest.mark.parametrize("name", FLAG_SCENARIOS)
def test_flags_clean(name):
    r = result(name)
    flags = r.run.ct["flags"][r.steady]
    used = r.exp.ct["used"]
    assert np.all(flags[:, used] == 0), {int(k) + 1: int(flags[:, k].max())
                                         for k in np.flatnonzero((flags[:, used] != 0).any(0))}
    assert np.all(flags[:, ~used] & FLAG_UNUSED)
    assert np.all(r.run.main["flags"][r.steady] == 0)



# =================================================================================================
# The same checks at 3 kS/s (60 samples per cycle at 50 Hz; docs/metering.md), off nominal


@builds("fs3k")
def _fs3k():
    main = main_3ph(freq=49.7)
    main.volts[5] = three_phase(0.1 * UN, order=5)
    meters = [m(W4, 1.0, "1"), m(W4, 1.0, "0.5ind"), m(W4, 0.1, "0.8cap"), m(W4, 0.05, "1"),
              m(ARON, 1.0, "1"), m(W3V, 0.5, "0.5ind"), _with5(W4, 0.6), m(W1, 0.2, "0.25ind")]
    return scenario([main], meters, fs=3000, blocks=(3000,) * 10)


FS3K_NAMES = ["3P4W-In-PF1", "3P4W-In-PF0.5ind", "3P4W-0.1In-PF0.8cap", "3P4W-0.05In-PF1",
              "Aron-In-PF1", "3P3W3CT-0.5In-PF0.5ind", "3P4W-0.6In-U5I5", "1P2W-0.2In-PF0.25ind"]


@pytest.mark.parametrize("j", range(8), ids=FS3K_NAMES)
def test_sample_rate_3khz_at_49p7hz(j):
    check_meter(result("fs3k"), j)


# =================================================================================================
# Unused CTs (docs/metering.md): report their current, V = P = Q = S = 0, flag ``unused``


def test_unused_cts_report_current_only():
    r = result("t14")
    st = r.steady
    unused = ~r.exp.ct["used"]
    assert np.flatnonzero(unused).tolist() == [7, 14, 17, 23]  # Aron CT b, CT c of the 1P3Ws
    for key in ("v_rms", "p_w", "q_var", "s_va"):
        assert np.all(r.run.ct[key][st][:, unused] == 0), key
    # the bogus 0.3 A on CT c of Meter 5 (1P3W) and line b of the Aron Meter 3 (-(ia + ic))
    np.testing.assert_allclose(r.run.ct["i_rms"][st, 14], 30.0, rtol=1e-4)
    ib = abs(r.sc.amps[1][6] + r.sc.amps[1][8]) * 100.0
    np.testing.assert_allclose(r.run.ct["i_rms"][st, 7], ib, rtol=1e-4)
    assert np.all(r.run.ct_energy[:, unused] == 0)


# =================================================================================================
# The checks are not vacuous: a 0.03 % error in P (above the 0.02 % target) must be caught


def test_checks_detect_a_small_error():
    r = result("t1-ideal")
    bad_run = copy.deepcopy(r.run)
    bad_run.ct["p_w"] *= 1.0003
    with pytest.raises(AssertionError, match="CT P"):
        check_meter(Result(r.sc, bad_run, r.exp), 6)
    bad_run = copy.deepcopy(r.run)
    bad_run.meter_energy[5, 6, 0] *= 1.01  # one step of Meter 7 off by 1 % (0.1 % of the total)
    with pytest.raises(AssertionError, match="Meter energy P"):
        check_meter(Result(r.sc, bad_run, r.exp), 6)


# =================================================================================================
# No NaN/inf in clean measurements (NaN is documented only for the frequency of an
# unsynchronised main); unused CTs: THD 0 like any element without voltage (docs/metering.md)


def test_all_values_finite_and_unused_thd_zero():
    r = result("t14")
    st = r.steady
    bad = {f"ct.{k}": np.flatnonzero((~np.isfinite(v[st])).reshape(st.size, 24, -1).any((0, 2)))
           + 1 for k, v in r.run.ct.items()}
    bad.update({f"meter.{k}": np.flatnonzero((~np.isfinite(v[st])).any(0)) + 1
                for k, v in r.run.meter.items()})
    bad = {k: v.tolist() for k, v in bad.items() if v.size}
    assert not bad, f"non-finite values (1-based CT/Meter numbers): {bad}"
    unused = ~r.exp.ct["used"]
    assert np.all(r.run.ct["thd_v_pct"][st][:, unused] == 0)
