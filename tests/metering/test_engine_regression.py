"""The fast metering path against a slow, straightforward reference of the same math.

The engine's per-sample work runs in compiled kernels and a vectorised tracker
(metering/cycles.py, resample.py); the collector reorganises the per-cycle arithmetic. None of
that may change a result beyond 1e-9 relative. This file keeps an independent, cycle-by-cycle
reference written from the docstrings (plain trapezoids, textbook Lagrange basis,
np.convolve filter, the tracker's original one-boundary-at-a-time loop, numpy FFTs of the
windows' mean grids and of each cycle, the interpolation gain from its definition)
and checks each kernel and whole engine runs against it: one block holding the whole signal,
and the same signal in 1-s blocks (energies summed over the steps). The simulator's fast path
(compiled ADC, no per-sample schedule for loads that do not switch in a block) is checked
against the numpy formula and the load schedule.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pm4324.config.settings import N_CTS, Settings, Wiring
from pm4324.config.settings_parse import load_settings
from pm4324.metering import engine as E
from pm4324.metering import step_kernels as K
from pm4324.metering.cycles import (
    F_MAX_HZ,
    F_MIN_HZ,
    CycleTracker,
    cycle_integrals,
    filtered_crossings,
    product_integrals,
)
from pm4324.metering.resample import (
    N_MOMENTS,
    fundamental_products,
    harmonic_sums,
    synchronous_resample,
    window_weights,
)
from pm4324.metering.wiring import meter_wiring
from pm4324.sources.scenario_parse import load_scenario, parse_scenario
from pm4324.sources.simulator import SimulatorSource

RTOL = 1e-9
BUILDING_SETTINGS = Path(E.__file__).resolve().parents[1] / "data" / "building-settings.toml"

# -- reference math ----------------------------------------------------------------------------


def ref_integral(y: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Integral over [t0, t1] of the piecewise-linear interpolant of each row's samples
    y[..., 0], y[..., 1], ...: trapezoids between t0, the whole samples inside, and t1."""
    lo, hi = math.floor(t0), math.ceil(t1)
    knots = np.concatenate(([t0], np.arange(lo + 1, hi), [t1]))

    def at(t: float) -> np.ndarray:
        j = min(math.floor(t), y.shape[-1] - 2)
        return y[..., j] + (t - j) * (y[..., j + 1] - y[..., j])

    vals = np.concatenate((at(t0)[..., None], y[..., lo + 1 : hi], at(t1)[..., None]), axis=-1)
    return np.sum(np.diff(knots) * (vals[..., 1:] + vals[..., :-1]) / 2, axis=-1)


def ref_lagrange(y: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Cubic Lagrange interpolation of each row of y through the samples floor(pos) - 1 ..
    floor(pos) + 2, from the textbook basis polynomials."""
    i = np.floor(pos).astype(int)
    return sum(basis * y[..., i + k]
               for k, basis in zip((-1, 0, 1, 2), ref_lagrange_basis(pos - i)))


def ref_lagrange_basis(t: np.ndarray) -> list[np.ndarray]:
    """The four basis polynomials at fractional positions t (nodes -1, 0, 1, 2)."""
    nodes = (-1, 0, 1, 2)
    return [math.prod((t - j) / (k - j) for j in nodes if j != k) for k in nodes]


def ref_windows(m: int, nominal_hz: float) -> np.ndarray:
    """Cycle indices where each harmonic window starts (and the end): round(m / 10) windows
    at 50 Hz (12 at 60 Hz) of equal size +-1."""
    n = max(1, round(m / (10 if nominal_hz == 50 else 12)))
    return np.arange(n + 1) * m // n


def ref_gain(bounds: np.ndarray, orders: int) -> np.ndarray:
    """Mean over a window's grid points of the interpolation's complex gain at each order,
    straight from its definition: H_t(w) = sum_k w_k(t) exp(j w (k - 1 - t)), with w the
    order's angle per sample at the window's mean cycle length; 1 from Nyquist (pi) on."""
    pos = np.concatenate([a + (b - a) * np.arange(K.GRID) / K.GRID
                          for a, b in zip(bounds[:-1], bounds[1:])])
    t = pos - np.floor(pos)
    basis = ref_lagrange_basis(t)
    period = (bounds[-1] - bounds[0]) / (bounds.size - 1)
    gain = np.ones(orders + 1, dtype=complex)
    for h in range(1, orders + 1):
        w = 2 * np.pi * h / period
        if w < np.pi:
            gain[h] = np.mean(sum(basis[k] * np.exp(1j * w * (k - 1 - t)) for k in range(4)))
    return gain


def ref_filter(ref: np.ndarray, half: int) -> np.ndarray:
    """The tracker's triangular FIR: two moving averages of ``half`` samples, 'valid' part."""
    box = np.ones(half) / half
    return np.convolve(ref, np.convolve(box, box), mode="valid")


class RefTracker:
    """The tracker as first written: numpy filter, one boundary per loop iteration (plus the
    re-lock after a free-running boundary: a crossing from min_period / 2 on counts)."""

    def __init__(self, fs: float, nominal_hz: float, min_amplitude: float):
        self.nominal_period = fs / nominal_hz
        self.half = max(1, int(round(self.nominal_period / 2)))
        self.delay = self.half - 1.0
        self.min_period, self.max_period = fs / F_MAX_HZ, fs / F_MIN_HZ
        self.min_amplitude = min_amplitude
        self.last: float | None = None
        self.last_real = True

    def update(self, v: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
        first_valid = 2 * (self.half - 1)
        if v.shape[1] <= first_valid + 2:
            return np.empty(0), np.empty(0, dtype=bool)
        y = ref_filter(v[0] - 0.5 * (v[1] + v[2]), self.half)
        shift = offset + first_valid - self.delay
        crossings = np.empty(0)
        strong = np.sqrt(np.mean(y * y)) * np.sqrt(2) >= self.min_amplitude
        if strong:
            j = np.flatnonzero((y[:-1] < 0) & (y[1:] >= 0))
            crossings = j + y[j] / (y[j] - y[j + 1]) + shift
        # without a voltage, free-running cycles start at the buffer's second sample and may
        # use the whole buffer
        limit = shift + y.shape[0] - 1 if strong else offset + v.shape[1] - 1.0
        out: list[float] = []
        real: list[bool] = []
        last = self.last
        if last is None:
            if crossings.size:
                last = float(crossings[0])
                out.append(last)
                real.append(True)
            elif not strong:
                last = offset + 1.0
                out.append(last)
                real.append(False)
            elif limit - shift > self.max_period:
                last = float(shift)
                out.append(last)
                real.append(False)
            else:
                return np.empty(0), np.empty(0, dtype=bool)
        while True:
            was_real = real[-1] if real else self.last_real
            gap = self.min_period if was_real else 0.5 * self.min_period
            k = int(np.searchsorted(crossings, last + gap, side="left"))
            nxt = crossings[k] if k < crossings.size else None
            if nxt is not None and nxt <= last + self.max_period:
                last = float(nxt)
                real.append(True)
            elif nxt is not None or last + self.max_period < limit:
                last = last + self.nominal_period
                real.append(False)
            else:
                break
            out.append(last)
        self.last = last
        self.last_real = real[-1] if real else self.last_real
        return np.asarray(out), np.asarray(real, dtype=bool)


def _route(p: float, q: float, s: float) -> np.ndarray:
    """One cycle's W*s, var*s, VA*s to the seven registers (in W*s, var*s, VA*s)."""
    reg = np.zeros(K.N_ENERGY)
    reg[0 if p > 0 else 1] = abs(p)
    reg[2 + (0 if p >= 0 and q >= 0 else 1 if q >= 0 else 2 if p < 0 else 3)] = abs(q)
    reg[6] = s
    return reg


def reference_step(settings: Settings, volts: np.ndarray, currents: np.ndarray) -> dict:
    """What Engine.step reports for one block holding the whole signal, cycle by cycle."""
    fs, n = settings.sample_rate_hz, volts.shape[1]
    per_main = N_CTS // settings.n_mains
    ct_ratio = np.repeat([m.ct_ratio for m in settings.meters], 3)
    out = {k: np.zeros(N_CTS) for k in ("v2", "i2", "p", "q")}
    out.update(vh2=np.zeros((N_CTS, K.MAX_ORDER + 1)), ih2=np.zeros((N_CTS, K.MAX_ORDER + 1)),
               ct_energy=np.zeros((N_CTS, K.N_ENERGY)),
               meter_energy=np.zeros((len(settings.meters), K.N_ENERGY)),
               v_ln2=np.zeros((settings.n_mains, 3)), v_ll2=np.zeros((settings.n_mains, 3)),
               cycles=np.zeros(settings.n_mains), t_main=np.zeros(settings.n_mains),
               synced=np.ones(settings.n_mains, dtype=bool))
    scale = np.r_[1.0, np.full(K.MAX_ORDER, 2.0)] / K.GRID**2  # |bin|^2 -> rms^2
    for m in range(settings.n_mains):
        main = settings.mains[m]
        bad = ~np.isfinite(np.concatenate((volts[3 * m : 3 * m + 3],
                                           currents[m * per_main : (m + 1) * per_main])))
        v = np.nan_to_num(volts[3 * m : 3 * m + 3], nan=0.0, posinf=0.0, neginf=0.0)
        cur = np.nan_to_num(currents[m * per_main : (m + 1) * per_main], nan=0.0, posinf=0.0,
                            neginf=0.0)
        tracker = RefTracker(fs, main.nominal_frequency_hz,
                             K.ABSENT_FRACTION * main.nominal_voltage_v / main.pt_ratio * 2**0.5)
        bounds, real = tracker.update(v, 0)
        usable = bounds <= n - 3
        bounds = bounds[usable]
        out["synced"][m] = real[usable][1:].all()
        pt = main.pt_ratio
        k0 = m * per_main
        meters = range(k0 // 3, (k0 + per_main) // 3)
        wirings = [meter_wiring(settings.meters[(k0 + j) // 3]) for j in range(per_main)]
        coeff = np.array([w.coefficients[j % 3] for j, w in enumerate(wirings)])
        used = np.array([w.used[j % 3] for j, w in enumerate(wirings)])
        ct = ct_ratio[k0 : k0 + per_main]
        v_el = coeff @ v
        ll = v - np.roll(v, -1, axis=0)  # ab, bc, ca
        ib = -(cur[0::3] + cur[2::3])  # the derived phase-b current of an Aron Meter
        # every product integrated per cycle, one row each
        y = np.concatenate((v_el * cur, cur**2, v_el**2, v**2, ll**2, ib**2))
        # harmonics: per window, the mean of its cycles' synchronous grids, gain-corrected
        windows = ref_windows(bounds.size - 1, main.nominal_frequency_hz)
        gains = []
        for w0, w1 in zip(windows[:-1], windows[1:]):
            gain = ref_gain(bounds[w0 : w1 + 1], K.MAX_ORDER)
            gains += [gain] * (w1 - w0)
            grids = [ref_lagrange(np.concatenate((v, cur)),
                                 t0 + (t1 - t0) * np.arange(K.GRID) / K.GRID)
                     for t0, t1 in zip(bounds[w0:w1], bounds[w0 + 1 : w1 + 1])]
            spec = np.fft.rfft(np.mean(grids, axis=0))[:, : K.MAX_ORDER + 1] / gain
            period = (bounds[w1] - bounds[w0]) / (w1 - w0)
            spec[:, 2 * np.arange(K.MAX_ORDER + 1) >= period] = 0  # at or above Nyquist
            seconds = (bounds[w1] - bounds[w0]) / fs
            rows = slice(k0, k0 + per_main)
            out["vh2"][rows] += np.abs(coeff @ spec[:3]) ** 2 * scale * pt**2 * seconds
            out["ih2"][rows] += np.abs(spec[3:]) ** 2 * scale * (ct**2)[:, None] * seconds
        for c, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:])):
            dt = (t1 - t0) / fs
            support = slice(math.floor(t0), math.ceil(t1) + 1)
            phases = t0 + (t1 - t0) * np.arange(K.GRID) / K.GRID
            fund = np.fft.rfft(ref_lagrange(np.concatenate((v, cur)), phases))[:, 1] / gains[c][1]
            el1, i1 = coeff @ fund[:3], fund[3:]
            integ = ref_integral(y, t0, t1) / fs
            p = integ[:per_main] * pt * ct
            i2 = integ[per_main : 2 * per_main] * ct**2
            v2 = integ[2 * per_main : 3 * per_main] * pt**2
            ln2, ll2 = integ[3 * per_main : 3 * per_main + 3], integ[3 * per_main + 3 : 3 * per_main + 6]
            ib2 = integ[3 * per_main + 6 :] * ct[0::3] ** 2
            q = (el1 * np.conj(i1)).imag * scale[1] * pt * ct * dt
            out["cycles"][m] += 1
            out["t_main"][m] += dt
            out["v_ln2"][m] += ln2 * pt**2
            out["v_ll2"][m] += ll2 * pt**2
            rows = slice(k0, k0 + per_main)
            for key, val in (("v2", v2), ("i2", i2), ("p", p), ("q", q)):
                out[key][rows] += val
            meter_cycle = np.zeros((len(meters), 4))  # P, Q, S, live elements
            for j in range(per_main):
                invalid = bad[3 + j, support].any() or bad[:3, support][coeff[j] != 0].any()
                irms = math.sqrt(i2[j] / dt)
                if used[j] and not invalid and irms >= K.START_FRACTION * ct[j]:
                    s = math.sqrt(max(v2[j], 0) / dt) * irms * dt
                    out["ct_energy"][k0 + j] += _route(p[j], q[j], s)
                    meter_cycle[j // 3] += (p[j], q[j], s, 1)
            for local, meter in enumerate(meters):
                p_m, q_m, s_m, n_live = meter_cycle[local]
                if settings.meters[meter].wiring is Wiring.W3P3W_2CT:
                    # S from the line-to-line voltages and Ia, Ib = -(Ia + Ic), Ic
                    isum = i2[3 * local] + ib2[local] + i2[3 * local + 2]
                    s_m = math.sqrt(max(ll2.sum() * pt**2 * isum, 0) / 3) if n_live else 0.0
                out["meter_energy"][meter] += _route(p_m, q_m, s_m)
    out["ct_energy"] /= 3600.0
    out["meter_energy"] /= 3600.0
    return out


# -- helpers ----------------------------------------------------------------------------------


def close(got: np.ndarray, want: np.ndarray, scale: np.ndarray | float, what: str) -> None:
    """|got - want| <= RTOL * max(|want|, scale): relative, with a floor for values near 0."""
    got = np.asarray(got)  # real or complex
    want = np.broadcast_to(np.asarray(want), got.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN where the other is not"
    floor = np.maximum(np.abs(want), np.broadcast_to(scale, want.shape))
    err = np.nan_to_num(np.abs(got - want) / np.where(floor > 0, floor, 1.0))
    assert np.all(err <= RTOL), f"{what}: max relative error {err.max():.3g} (> {RTOL:g})"


def synthetic(freq: float = 50.0, v2: float = 231.0, adc: bool = True, drift: float = 0.0):
    data = {"name": "regression", "seed": 7,
            "mains": {"1": {"voltage_v": 230.0, "frequency_hz": freq, "drift_hz": drift,
                            "harmonics": {"3": 0.01, "5": [0.03, 40]}},
                      "2": {"voltage_v": v2, "frequency_hz": freq}},
            "loads": [{"cts": [1, 2, 3], "current_a": 50.0, "pf": 0.8,
                       "harmonics": {"5": 0.1, "11": 0.05}},
                      {"cts": [4, 5, 6], "current_a": 20.0, "pf": -0.9, "export": True},
                      {"cts": [7], "current_a": 5.0, "pf": 0.99},
                      {"cts": [13, 14, 15], "current_a": 40.0, "pf": 0.7},
                      {"cts": [19, 21], "phases": ["a", "c"], "current_a": 30.0, "pf": 0.9}]}
    if adc:
        data["adc"] = {"bits": 24, "noise_lsb": 1.0}
    return parse_scenario(data)


def samples(scenario, settings: Settings, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    block = SimulatorSource(scenario, settings).read(int(round(seconds * settings.sample_rate_hz)))
    return block.voltages, block.currents


def _wirings() -> Settings:
    """Aron Meters on both mains, split phase, virtual neutral, and a PT on main 1."""
    return (Settings().with_main(1, pt_ratio=2.0)
            .with_meter(1, wiring=Wiring.W3P3W_2CT).with_meter(7, wiring=Wiring.W3P3W_2CT)
            .with_meter(2, wiring=Wiring.W1P3W_2CT).with_meter(5, wiring=Wiring.W3P3W_3CT))


def _with_nan():
    v, i = samples(synthetic(), Settings(), 2.0)
    v, i = v.copy(), i.copy()
    v[1, 5000:5010] = np.nan
    i[4, 17000] = np.inf
    i[0, 20100:20300] = np.nan
    return Settings(), v, i


def _building():
    settings = load_settings(BUILDING_SETTINGS)
    return settings, *samples(load_scenario(None), settings, 3.0)


def _case(settings: Settings, scenario, seconds: float = 2.0):
    return lambda: (settings, *samples(scenario, settings, seconds))


CASES = {
    "building": _building,
    "off-nominal 50.37 Hz": _case(Settings(), synthetic(50.37, drift=0.2)),
    "3 kS/s": _case(replace(Settings(), sample_rate_hz=3000.0), synthetic(49.8)),
    "voltage absent on main 2": _case(Settings(), synthetic(v2=0.0)),
    "wirings and PT": _case(_wirings(), synthetic(50.2)),
    "PM-4324 at 60 Hz, no ADC": _case(replace(Settings(), model="PM-4324"),
                                      synthetic(60.0, adc=False)),
    "non-finite samples": _with_nan,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    settings, v, i = CASES[request.param]()
    return request.param, settings, v, i, reference_step(settings, v, i)


# -- whole engine -----------------------------------------------------------------------------


def test_one_block_matches_reference(case):
    name, settings, v, i, ref = case
    r = E.Engine(settings).step(v, i, 0)
    main_of_ct = np.repeat(np.arange(settings.n_mains), N_CTS // settings.n_mains)
    t = ref["t_main"][main_of_ct]
    s = np.sqrt(ref["v2"] / t) * np.sqrt(ref["i2"] / t)
    close(r.duration_s, ref["t_main"].max(), 0, f"{name}: duration")
    freq = np.where(ref["synced"], ref["cycles"] / ref["t_main"], np.nan)
    close(r.main["frequency_hz"], freq, 0, f"{name}: frequency")
    close(r.main["v_ln"], np.sqrt(ref["v_ln2"] / ref["t_main"][:, None]), 0, f"{name}: V_LN")
    close(r.main["v_ll"], np.sqrt(ref["v_ll2"] / ref["t_main"][:, None]), 0, f"{name}: V_LL")
    close(r.ct["v_rms"], np.sqrt(ref["v2"] / t), 1e-3, f"{name}: V")
    close(r.ct["i_rms"], np.sqrt(ref["i2"] / t), 1e-6, f"{name}: I")
    # below the anti-creep current a CT reads P = Q = 0 (docs/metering.md)
    rated = np.repeat([m.ct_ratio for m in settings.meters], 3)
    live = np.sqrt(ref["i2"] / t) >= K.START_FRACTION * rated
    close(r.ct["p_w"], np.where(live, ref["p"] / t, 0.0), s, f"{name}: P")
    close(r.ct["q_var"], np.where(live, ref["q"] / t, 0.0), s, f"{name}: Q1")
    vh, ih = np.sqrt(ref["vh2"] / t[:, None]), np.sqrt(ref["ih2"] / t[:, None])
    close(r.ct["v_harmonics"], vh, vh.max(axis=1, keepdims=True), f"{name}: V harmonics")
    close(r.ct["i_harmonics"], ih, ih.max(axis=1, keepdims=True), f"{name}: I harmonics")
    close(r.ct_energy, ref["ct_energy"], np.abs(ref["ct_energy"]).max(axis=1, keepdims=True),
          f"{name}: CT energy")
    close(r.meter_energy, ref["meter_energy"],
          np.abs(ref["meter_energy"]).max(axis=1, keepdims=True), f"{name}: Meter energy")


@pytest.mark.parametrize("sizes", [None, (977, 100, 3001, 256, 57)],
                         ids=["1-s blocks", "odd and sub-cycle blocks"])
def test_streaming_sums_match_reference(case, sizes):
    """Streamed blocks: the same cycles are processed in the end, so the energies add up to
    the one-block reference (this exercises the buffer, the tracker's state and the
    bad-sample mask across block edges). Blocks of odd sizes, some shorter than a cycle (as
    an ADC delivering small DMA buffers would), make cycles span several blocks."""
    name, settings, v, i, ref = case
    sizes = sizes or (int(settings.sample_rate_hz),)
    engine = E.Engine(settings)
    ct_e = np.zeros((N_CTS, K.N_ENERGY))
    m_e = np.zeros((len(settings.meters), K.N_ENERGY))
    start, k = 0, 0
    while start < v.shape[1]:
        end = min(start + sizes[k % len(sizes)], v.shape[1])
        r = engine.step(v[:, start:end], i[:, start:end], start)
        ct_e += r.ct_energy
        m_e += r.meter_energy
        start, k = end, k + 1
    close(ct_e, ref["ct_energy"], np.abs(ref["ct_energy"]).max(axis=1, keepdims=True),
          f"{name}: CT energy")
    close(m_e, ref["meter_energy"], np.abs(ref["meter_energy"]).max(axis=1, keepdims=True),
          f"{name}: Meter energy")


# -- kernels ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signal():
    """Three phase voltages and four currents with harmonics, 60.3 Hz at 12.8 kS/s."""
    rng = np.random.default_rng(1)
    t = np.arange(6000) / 12800.0
    w = 2 * np.pi * 60.3 * t
    rows = [325 * np.sin(w - k * 2.0944) + 8 * np.sin(5 * w + k) for k in range(3)]
    rows += [1.3 * np.sin(w - 0.6 - k) + 0.2 * np.sin(7 * w) for k in range(4)]
    x = np.array(rows) + rng.normal(0, 1e-3, (7, t.size))
    bounds = 3.7 + np.cumsum(np.r_[0.0, rng.uniform(205, 220, 26)])
    return x, bounds


def test_product_integrals(signal):
    x, bounds = signal
    coeff = np.array([[1.0, 0, 0], [0, 1, -1], [2 / 3, -1 / 3, -1 / 3], [0, 0, 1]])
    pairs = np.array([[3, 3], [0, 1], [4, 6], [2, 2]])
    got = product_integrals(x, coeff, pairs, bounds)
    rows = [(coeff[r] @ x[:3]) * x[3 + r] for r in range(4)] + [x[p] * x[q] for p, q in pairs]
    want = np.array([[ref_integral(y, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
                     for y in rows])
    close(got, want, np.abs(want).max(axis=1, keepdims=True), "product integrals")
    close(cycle_integrals(np.array(rows), bounds), want,
          np.abs(want).max(axis=1, keepdims=True), "cycle integrals")


def test_synchronous_resample(signal):
    x, bounds = signal
    groups = np.array([0, 4, 11, 26])  # unequal windows
    out = np.empty((3, x.shape[0], K.GRID))
    fundamental = np.empty((26, x.shape[0]), dtype=complex)
    moments = np.empty((3, N_MOMENTS))
    synchronous_resample(x, bounds, groups, out, fundamental, moments)
    for g in range(3):
        grids, powers = [], []
        for c in range(groups[g], groups[g + 1]):
            pos = bounds[c] + (bounds[c + 1] - bounds[c]) * np.arange(K.GRID) / K.GRID
            grid = np.array([ref_lagrange(row, pos) for row in x])
            close(fundamental[c], np.fft.rfft(grid)[:, 1], np.abs(x).max() * K.GRID,
                  f"bin 1 of cycle {c}")
            grids.append(grid)
            powers.append((pos - np.floor(pos) - 0.5)[:, None] ** np.arange(N_MOMENTS))
        close(out[g], np.sum(grids, axis=0), np.abs(x).max(), f"summed grid {g}")
        close(moments[g], np.concatenate(powers).sum(axis=0), 0, f"moments {g}")
    # exact on cubics, whatever the phase
    cubic = np.polyval([1e-6, -2e-3, 0.5, 3.0], np.arange(6000.0))[None, :]
    one = np.empty((26, 1, K.GRID))
    synchronous_resample(np.ascontiguousarray(cubic), bounds, np.arange(27), one,
                         np.empty((26, 1), dtype=complex), np.empty((26, N_MOMENTS)))
    pos = bounds[:-1, None] + np.diff(bounds)[:, None] * np.arange(K.GRID) / K.GRID
    close(one[:, 0], np.polyval([1e-6, -2e-3, 0.5, 3.0], pos), 0, "cubic")


def test_window_weights_and_gain(signal):
    x, bounds = signal
    groups = np.array([0, 4, 11, 26])
    out = np.empty((3, x.shape[0], K.GRID))
    fundamental = np.empty((26, x.shape[0]), dtype=complex)
    moments = np.empty((3, N_MOMENTS))
    synchronous_resample(x, bounds, groups, out, fundamental, moments)
    raw = fundamental.copy()
    weight = window_weights(bounds, groups, moments, 12800.0, K.MAX_ORDER, fundamental)
    for g in range(3):
        edges = bounds[groups[g] : groups[g + 1] + 1]
        gain = ref_gain(edges, K.MAX_ORDER)
        assert np.abs(gain[1:]).min() < 0.99  # the signal's cycles are 205-220 samples
        n = groups[g + 1] - groups[g]
        close(weight[g], (edges[-1] - edges[0]) / 12800.0 / n**2 / np.abs(gain) ** 2, 0,
              f"weights {g}")
        close(fundamental[groups[g] : groups[g + 1]], raw[groups[g] : groups[g + 1]] / gain[1],
              np.abs(raw).max(), f"corrected bin 1, window {g}")


@pytest.mark.parametrize("samples_per_cycle", [213.3333, 254.1, 256.0, 197.3])
def test_corrected_windows_read_true_harmonic_amplitudes(samples_per_cycle):
    """A cosine of order h sampled at a cycle length that is no whole number of samples: the
    gain-corrected window bin reads its amplitude (the uncorrected one droops by up to 7 %)."""
    n_cycles = 10
    bounds = 2.37 + samples_per_cycle * np.arange(n_cycles + 1)
    t = np.arange(int(bounds[-1]) + 4, dtype=float)
    amps = {1: 1.0, 7: 0.3, 25: 0.1, 40: 0.05, 50: 0.05}
    x = sum(a * np.cos(2 * np.pi * h * (t - bounds[0]) / samples_per_cycle + 0.1 * h)
            for h, a in amps.items())[None, :]
    out = np.empty((1, 1, K.GRID))
    fundamental = np.empty((n_cycles, 1), dtype=complex)
    moments = np.empty((1, N_MOMENTS))
    groups = np.array([0, n_cycles])
    synchronous_resample(np.ascontiguousarray(x), bounds, groups, out, fundamental, moments)
    weight = window_weights(bounds, groups, moments, 1.0, K.MAX_ORDER, fundamental)
    seconds = bounds[-1] - bounds[0]
    power = np.abs(np.fft.rfft(out[0, 0])[: K.MAX_ORDER + 1]) ** 2 * weight[0] / seconds
    amplitude = np.sqrt(power) * 2 / K.GRID
    raw = np.abs(np.fft.rfft(out[0, 0])[: K.MAX_ORDER + 1]) * 2 / K.GRID / n_cycles
    for h, a in amps.items():
        assert amplitude[h] == pytest.approx(a, rel=3e-4), f"order {h}"
    if samples_per_cycle != 256.0:
        assert raw[50] < 0.05 * 0.99  # what the correction undoes
    # per cycle, the other orders leak up to 1e-4 into bin 1; that averages out over cycles
    fundamental_amplitude = np.abs(fundamental[:, 0]) * 2 / K.GRID
    assert fundamental_amplitude == pytest.approx(1.0, rel=2e-4)
    assert fundamental_amplitude.mean() == pytest.approx(1.0, rel=2e-5)


def test_filtered_crossings(signal):
    x, _ = signal
    half = 106
    mean_square, rising = filtered_crossings(x[:3], half)
    y = ref_filter(x[0] - 0.5 * (x[1] + x[2]), half)
    j = np.flatnonzero((y[:-1] < 0) & (y[1:] >= 0))
    close(mean_square, np.mean(y * y), 0, "mean square")
    assert rising.size == j.size
    assert np.abs(rising - (j + y[j] / (y[j] - y[j + 1]))).max() < 1e-9  # samples


def test_harmonic_sums():
    rng = np.random.default_rng(2)
    spec = rng.normal(size=(4, 7, 65)) + 1j * rng.normal(size=(4, 7, 65))
    fundamental = rng.normal(size=(9, 7)) + 1j * rng.normal(size=(9, 7))
    coeff = np.array([[1.0, 0, 0], [1, -1, 0], [0, 0, 0], [2 / 3, -1 / 3, -1 / 3]])
    weight = rng.uniform(0.001, 0.003, (4, 51))
    ch, el = harmonic_sums(spec, weight, coeff)
    s1 = fundamental_products(fundamental, coeff)
    spec = spec[:, :, :51]
    el_spec = np.einsum("kj,gjh->gkh", coeff, spec[:, :3])
    close(ch, np.einsum("gh,grh->rh", weight, np.abs(spec) ** 2), 0, "channel powers")
    close(el, np.einsum("gh,gkh->kh", weight, np.abs(el_spec) ** 2), 1e-12, "element powers")
    want = ((fundamental[:, :3] @ coeff.T) * np.conj(fundamental[:, 3:])).T
    close(s1.real, want.real, np.abs(want), "V1 I1* real")
    close(s1.imag, want.imag, np.abs(want), "V1 I1* imag")


def test_tracker_matches_one_boundary_at_a_time():
    """The compiled boundary loop gives exactly the original loop's boundaries,
    through drift, a dropout (free run) and its recovery, and a 20 Hz burst that puts
    crossings both too close (< 1/70 s) and too far apart (> 1/40 s)."""
    fs, n = 12800.0, 12800 * 4
    t = np.arange(n) / fs
    phase = 2 * np.pi * (50 * t + 0.4 * np.sin(2 * np.pi * t / 3))
    amp = np.where((t > 1.3) & (t < 1.9), 0.0, 325.0)
    v = np.array([amp * np.sin(phase - k * 2.0944) for k in range(3)])
    v[0] += np.where((t > 2.5) & (t < 2.6), 800 * np.sin(2 * np.pi * 20 * t), 0.0)
    _, rising = filtered_crossings(v, 128)
    spacing = np.diff(rising)
    assert (spacing < fs / F_MAX_HZ).any() and (spacing > fs / F_MIN_HZ).sum() > 1
    for block in (1000, 3173, 12800):
        new, old = CycleTracker(fs, 50.0, 32.5), RefTracker(fs, 50.0, 32.5)
        got, want = [], []
        lo = 0
        for hi in [*range(block, n, block), n]:
            for tracker, out in ((new, got), (old, want)):
                out.append(tracker.update(v[:, lo:hi], lo))
            if new.last is not None:
                lo = max(lo, int(new.last) - new.history_needed())
        b_new, b_old = (np.concatenate([b for b, _ in x]) for x in (got, want))
        real_new, real_old = (np.concatenate([r for _, r in x]) for x in (got, want))
        assert b_new.size == b_old.size > 190
        assert np.abs(b_new - b_old).max() < 1e-9  # samples
        assert np.array_equal(real_new, real_old)
        assert not real_new.all()  # the dropout ran free


# -- simulator fast path ----------------------------------------------------------------------


def test_adc_kernel_is_the_numpy_formula():
    """The compiled ADC does exactly (bit for bit) what the five numpy passes did."""
    from pm4324.sources.simulator import _quantise

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1.2, (5, 3000))
    noise = rng.standard_normal(10000)
    offsets = rng.integers(0, 7000, 5)
    full_scale, lsb, noise_scale = 3.0, 3.0 / 2**23, 2 * 3.0 / 2**23
    want = x + np.stack([noise[o : o + 3000] for o in offsets]) * noise_scale
    want = np.round(np.clip(want, -full_scale, full_scale) / lsb) * lsb
    got = x.copy()
    _quantise(got, full_scale, lsb, noise, offsets, noise_scale)
    assert np.array_equal(got, want)
    got = x.copy()
    _quantise(got, full_scale, lsb, np.empty(0), np.empty(0, dtype=np.int64), 0.0)
    assert np.array_equal(got, np.round(np.clip(x, -full_scale, full_scale) / lsb) * lsb)


def test_switching_load_follows_its_schedule_in_odd_blocks():
    """Blocks that do not switch skip the per-sample schedule; the others still switch on
    the exact sample: the current is the always-on current where on, zero where off."""
    blocks = [977] * 40 + [12800] * 2

    def current(on_s: float, off_s: float) -> np.ndarray:
        sc = parse_scenario({"loads": [{"cts": [1], "current_a": 20.0, "pf": 0.9,
                                        "on_s": on_s, "off_s": off_s}]})
        src = SimulatorSource(sc, Settings())
        return np.concatenate([src.read(n).currents[0] for n in blocks])

    switched, always = current(0.3, 0.2), current(0.0, 0.0)
    starts = np.cumsum([0] + blocks[:-1])
    t = np.concatenate([s / 12800.0 + np.arange(n) / 12800.0 for s, n in zip(starts, blocks)])
    on = (t % 0.5) < 0.3  # sample times as the simulator forms them (block start + k / fs)
    assert 0 < on.mean() < 1
    assert np.allclose(switched[on], always[on], rtol=0, atol=1e-12)
    assert np.abs(switched[~on]).max() < 1e-12
