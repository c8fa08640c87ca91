"""Closed-form test signals and their analytic metering values, independent of the engine.

Written from metering-standards.md (§3.4 wiring formulas, §3.5 signs, §1.10 test matrix), in
float64 with exact phases. Nothing here imports the project's simulator or metering code: the
engine is only driven by ``run`` and compared with ``expected``.

Signal model. Each main m has a fundamental phase u(t) = f_m * t + u0_m in CYCLES (t = k / fs,
k = absolute sample index). A channel is a sum of harmonics

    x(t) = sum_h sqrt(2) * Re(X_h * exp(j * 2 * pi * h * u(t)))

where X_h is the channel's rms phasor of order h and already contains the channel's own angle
(phase b of a positive-sequence set has angle -120 deg * h). With that convention the mean of
x*y over whole cycles is sum_h Re(X_h * conj(Y_h)), so P = Re(V I*), Q1 = Im(V1 I1*) (Q > 0 when
the current lags = inductive import, §3.5).

Units follow the engine contract: voltages at the terminals (after the PT), currents in
secondary amperes (1.0 A = the CT's rated current, primary = ct_ratio * secondary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pm4324.config.settings import N_CTS, PHASES, Settings, Wiring
from pm4324.metering.engine import Engine

SQRT2 = math.sqrt(2.0)
TWO_PI = 2.0 * math.pi
ENERGY_KINDS = ("wh_import", "wh_export", "varh_q1", "varh_q2", "varh_q3", "varh_q4", "vah")
FLAG_VOLTAGE_ABSENT, FLAG_UNUSED = 1, 64  # snapshot.Flag values

# ADC model: 24-bit converter over +-1.5*sqrt2*Un (voltage) and +-2*sqrt2*rated (current),
# Gaussian input noise of 1e-5 of full scale (~97 dB SNR for a full-scale sine, ~16 effective
# bits). On the current inputs that is 2.8e-5 A = 0.028 Ist (Ist = 0.001 In, class 0.2S).
ADC_BITS = 24
V_FULL_SCALE = 1.5 * SQRT2  # x nominal terminal voltage
I_FULL_SCALE = 2.0 * SQRT2  # x rated secondary current (1 A)
ADC_NOISE = 1e-5  # x full scale, rms


# -- phasors ---------------------------------------------------------------------------------


def phasor(rms: float, deg: float) -> complex:
    return rms * complex(math.cos(math.radians(deg)), math.sin(math.radians(deg)))


def three_phase(rms: float | tuple[float, float, float], deg: float = 0.0, order: int = 1,
                sequence: int = 1, angles: tuple[float, float, float] | None = None) -> np.ndarray:
    """(3,) rms phasors of order ``order`` of a three-phase set (sequence +1 abc, -1 acb).

    ``angles`` (degrees of the fundamental of phases a, b, c) overrides the symmetric set.
    """
    mags = np.broadcast_to(np.asarray(rms, dtype=float), (3,))
    base = np.array(angles if angles is not None else (0.0, -120.0 * sequence, 120.0 * sequence))
    ang = np.radians(order * base + deg)
    return mags * np.exp(1j * ang)


def load(level: float, s_deg: float, v_angles_deg=(0.0, -120.0, 120.0),
         scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(3,) current phasors (secondary A) of a load whose S = V I* has angle ``s_deg``.

    s_deg: 0 = PF 1 import, +60 = PF 0.5 inductive import (quadrant I), -60 = PF 0.5 capacitive
    import (IV), 120 = export, Q > 0 (II), -120 = export, Q < 0 (III), 180 = PF 1 export.
    """
    ang = np.radians(np.asarray(v_angles_deg, dtype=float) - s_deg)
    return level * np.asarray(scale, dtype=float) * np.exp(1j * ang)


PF_ANGLE = {  # angle of S for the standard's power factors
    "1": 0.0,
    "0.5ind": math.degrees(math.acos(0.5)),
    "0.8cap": -math.degrees(math.acos(0.8)),
    "0.25ind": math.degrees(math.acos(0.25)),
    "0.5cap": -math.degrees(math.acos(0.5)),
}


def ref_phasor(v1: np.ndarray) -> complex:
    """Fundamental phasor of the engine's cycle reference va - (vb + vc)/2 (cycles.py)."""
    return complex(v1[0] - 0.5 * (v1[1] + v1[2]))


def u0_first_crossing(v1: np.ndarray, at_cycles: float = 0.75) -> float:
    """u0 putting the reference's first rising zero crossing at t = at_cycles / f.

    ref = sqrt2 |R| cos(2 pi u + arg R) rises through zero where 2 pi u + arg R = -pi/2.
    """
    r = ref_phasor(v1)
    return (-0.25 - at_cycles - math.atan2(r.imag, r.real) / TWO_PI) % 1.0


def crossing_times(v1: np.ndarray, f: float, u0: float, t_from: float, t_to: float) -> np.ndarray:
    """Rising zero crossings of the reference's fundamental in [t_from, t_to) (seconds)."""
    r = ref_phasor(v1)
    c = (-0.25 - math.atan2(r.imag, r.real) / TWO_PI) % 1.0  # u (mod 1) at a crossing
    k0 = math.ceil(f * t_from + u0 - c - 1e-12)
    k1 = math.ceil(f * t_to + u0 - c - 1e-12)
    return (np.arange(k0, k1) + c - u0) / f


# -- synthesis ---------------------------------------------------------------------------------


def phase_cycles(n: int, fs: float, f: float, u0: float, start: int = 0) -> np.ndarray:
    """u(t) in cycles for samples start .. start+n-1."""
    return np.arange(start, start + n, dtype=np.float64) * (f / fs) + u0


def synth(tones: dict[int, np.ndarray], u: np.ndarray) -> np.ndarray:
    """Rows sum_h sqrt2 Re(X_h exp(j 2 pi h u)); tones[h] is a (rows,) complex array."""
    rows = len(next(iter(tones.values())))
    out = np.zeros((rows, u.size))
    for h, x in tones.items():
        x = np.asarray(x, dtype=complex)
        if not x.any():
            continue
        if h == 0:
            out += x.real[:, None]  # DC: the value itself
            continue
        ph = TWO_PI * np.mod(h * u, 1.0)
        out += SQRT2 * (np.outer(x.real, np.cos(ph)) - np.outer(x.imag, np.sin(ph)))
    return out


@dataclass(frozen=True)
class Distorted:
    """A distorted load current derived from the parent sine sqrt2*rms*sin(2 pi w).

    w = u + angle/2pi + 1/4 (cycles), so the parent is in phase with a voltage of angle
    ``angle`` (cos convention) and w is an integer at that voltage's rising zero crossing.

    kinds (IEC 62053 influence tests, metering-standards.md Table D / T9):
    * ``halfwave``: half-wave rectified (DC + even harmonics);
    * ``phasefired``: thyristor fired at ``alpha`` into each half cycle (odd harmonics); a
      sample that falls exactly on the firing instant takes the mid-value of the jump (what a
      band-limited front end converges to; it makes the discrete mean exact);
    * ``burst``: full cycles ``on`` on / ``off`` off (sub-harmonics), the pattern starting with
      cycle number ``first`` (w in [first, first + 1)) switched on.
    """

    kind: str
    rms: float
    angle_deg: float = 0.0
    alpha: float = math.pi / 2
    on: int = 2
    off: int = 2
    first: int = 1

    def samples(self, u: np.ndarray) -> np.ndarray:
        w = u + self.angle_deg / 360.0 + 0.25
        s = SQRT2 * self.rms * np.sin(TWO_PI * np.mod(w, 1.0))
        if self.kind == "halfwave":
            return np.maximum(s, 0.0)
        if self.kind == "phasefired":
            x = np.mod(2.0 * w, 1.0)  # position in the half cycle, 0..1
            a = self.alpha / math.pi
            gate = (x > a).astype(float)
            gate[np.abs(x - a) < 1e-9] = 0.5
            return s * gate
        if self.kind == "burst":
            m = np.floor(w + 1e-12)
            return s * (np.mod(m - self.first, self.on + self.off) < self.on)
        raise ValueError(self.kind)

    def power_fraction(self) -> float:
        """Mean(v*i) / (V*rms) for an in-phase sinusoidal voltage over the long run (closed form);
        also I_rms^2 / rms^2 (the same integral of sin^2)."""
        if self.kind == "halfwave":
            return 0.5
        if self.kind == "phasefired":
            a = self.alpha
            return ((math.pi - a) + math.sin(2 * a) / 2) / math.pi
        if self.kind == "burst":
            return self.on / (self.on + self.off)
        raise ValueError(self.kind)

    def cycle_on(self, c: np.ndarray) -> np.ndarray:
        """burst: whether the c-th cycle after w = first (c = 0, 1, ...) conducts."""
        return np.mod(np.asarray(c), self.on + self.off) < self.on


def numeric_mean_power(cur: Distorted, v_rms: float, f: float = 50.0, fs: float = 1e6,
                       periods: int = 4) -> tuple[float, float]:
    """1 MHz numerical reference: (mean v*i, mean i^2) over whole pattern periods."""
    n = int(round(periods * fs / f))
    # from a rising voltage crossing (w = 1), the grid offset by half a step so that no point
    # falls on a jump: the (periodic) trapezoid then handles each jump exactly
    u = (np.arange(n) + 0.5) * (f / fs) + 0.75
    v = SQRT2 * v_rms * np.sin(TWO_PI * np.mod(u + cur.angle_deg / 360.0 + 0.25, 1.0))
    i = cur.samples(u)
    return float(np.mean(v * i)), float(np.mean(i * i))


def adc(x: np.ndarray, full_scale: float, noise_rms: float, rng: np.random.Generator,
        bits: int = ADC_BITS) -> np.ndarray:
    """Gaussian input noise, then a mid-tread quantiser of ``bits`` over +-full_scale."""
    lsb = full_scale / 2 ** (bits - 1)
    code = np.round((x + rng.normal(0.0, noise_rms, x.shape)) / lsb)
    np.clip(code, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, out=code)
    return code * lsb


# -- wiring oracle (from metering-standards.md §3.4, written independently of wiring.py) ---------

_T = 1.0 / 3.0
ELEMENT_ROWS = {
    Wiring.W3P4W_3CT: np.eye(3),
    Wiring.W3P3W_3CT: np.eye(3) - _T,  # virtual neutral va' = va - (va+vb+vc)/3
    Wiring.W3P3W_2CT: np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 1.0]]),  # vab, vcb
    Wiring.W1P3W_2CT: np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
}
USED = {Wiring.W3P3W_2CT: (True, False, True), Wiring.W1P3W_2CT: (True, True, False)}
PHYSICAL_ELEMENTS = (Wiring.W3P4W_3CT, Wiring.W1P3W_2CT, Wiring.W1P2W_1CT)


def element_rows(meter) -> np.ndarray:
    if meter.wiring is Wiring.W1P2W_1CT:
        rows = np.zeros((3, 3))
        for k, ph in enumerate(meter.circuit_phases):
            rows[k, PHASES.index(ph)] = 1.0
        return rows
    return ELEMENT_ROWS[meter.wiring]


# -- scenarios ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One engine run: settings, closed-form inputs per main, and the block layout.

    volts[m][h]: (3,) terminal rms phasors of order h of main m; amps[h]: (24,) secondary rms
    phasors, angles relative to the u(t) of the CT's main. ``shapes`` replace the synthesis of
    some CTs (T9). ``adc[m]``: quantise + noise the inputs of main m. ``gate_s``: all currents of
    main m stop at its first reference crossing after gate_s (the measured interval then ends
    there, known analytically); run enough blocks after it to flush the engine.
    """

    settings: Settings
    freq: tuple[float, ...]
    volts: tuple[dict[int, np.ndarray], ...]
    amps: dict[int, np.ndarray]
    shapes: dict[int, Distorted] = field(default_factory=dict)
    adc: tuple[bool, ...] = (False, False)
    noise_i: float | None = None  # current noise rms (secondary A) instead of ADC_NOISE * FS
    blocks: tuple[int, ...] = (12800,) * 10
    u0: tuple[float, ...] | None = None
    gate_s: float | None = None
    seed: int = 12345

    def main_u0(self, m: int) -> float:
        if self.u0 is not None:
            return self.u0[m]
        return u0_first_crossing(self.volts[m][1])

    def main_of_ct(self) -> np.ndarray:
        return np.repeat(np.arange(self.settings.n_mains), N_CTS // self.settings.n_mains)


@dataclass
class Run:
    sc: Scenario
    durations: np.ndarray  # (steps,)
    ct: dict[str, np.ndarray]  # (steps, 24[, ...])
    meter: dict[str, np.ndarray]  # (steps, 8)
    main: dict[str, np.ndarray]  # (steps, n_mains[, 3])
    ct_energy: np.ndarray  # (steps, 24, 7) increments
    meter_energy: np.ndarray  # (steps, 8, 7)
    gate_times: tuple[float, ...] = ()

    def measured_s(self) -> np.ndarray:
        """Measured interval per main (s): the summed step durations when all mains share their
        cycle boundaries, else (gated runs) the whole cycles from the first crossing (0.75 cycle)
        to the gate, computed from the closed form."""
        sc = self.sc
        if sc.gate_s is None:
            return np.full(sc.settings.n_mains, self.durations.sum())
        out = []
        for m, f in enumerate(sc.freq):
            first = crossing_times(sc.volts[m][1], f, sc.main_u0(m), 0.5 / f, 1.0)[0]
            out.append(round((self.gate_times[m] - first) * f) / f)
        return np.array(out)


def synthesize(sc: Scenario) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    s = sc.settings
    fs = s.sample_rate_hz
    n = sum(sc.blocks)
    n_mains = s.n_mains
    per_main = N_CTS // n_mains
    rng = np.random.default_rng(sc.seed)
    volts = np.empty((3 * n_mains, n))
    amps = np.empty((N_CTS, n))
    gates = []
    for m in range(n_mains):
        u = phase_cycles(n, fs, sc.freq[m], sc.main_u0(m))
        volts[3 * m : 3 * m + 3] = synth(sc.volts[m], u)
        cts = np.arange(m * per_main, (m + 1) * per_main)
        amps[cts] = synth({h: np.asarray(a)[cts] for h, a in sc.amps.items()}, u)
        for k, shape in sc.shapes.items():
            if k in cts:
                amps[k] = shape.samples(u)
        if sc.gate_s is not None:
            t_off = crossing_times(sc.volts[m][1], sc.freq[m], sc.main_u0(m), sc.gate_s,
                                   sc.gate_s + 1.0)[0]
            gates.append(float(t_off))
            # zero from the last sample at or before t_off: the interpolant is then exactly 0
            # after t_off (no sliver of current in the next cycle); the loaded cycle before
            # loses at most one sample interval (< 1e-5 of the run's energy)
            amps[cts, int(math.floor(t_off * fs + 1e-9)) :] = 0.0
        if sc.adc[m] if m < len(sc.adc) else False:
            un = s.mains[m].nominal_voltage_v / s.mains[m].pt_ratio
            fsv = V_FULL_SCALE * un
            volts[3 * m : 3 * m + 3] = adc(volts[3 * m : 3 * m + 3], fsv, ADC_NOISE * fsv, rng)
            noise_i = ADC_NOISE * I_FULL_SCALE if sc.noise_i is None else sc.noise_i
            amps[cts] = adc(amps[cts], I_FULL_SCALE, noise_i, rng)
        elif sc.noise_i is not None:
            amps[cts] = amps[cts] + rng.normal(0.0, sc.noise_i, amps[cts].shape)
    return volts, amps, tuple(gates)


def run(sc: Scenario, harmonic_angles: bool = False) -> Run:
    """Feed the scenario block by block and stack the per-step results."""
    volts, amps, gates = synthesize(sc)
    eng = Engine(sc.settings, harmonic_angles)
    full_scale: tuple[float | None, float | None] = (None, None)
    if any(sc.adc):
        un = max(m.nominal_voltage_v / m.pt_ratio for m in sc.settings.mains)
        full_scale = (V_FULL_SCALE * un, I_FULL_SCALE)
    results = []
    start = 0
    for b, size in enumerate(sc.blocks):
        sl = slice(start, start + size)
        results.append(eng.step(volts[:, sl], amps[:, sl], start, full_scale=full_scale,
                                final=b == len(sc.blocks) - 1))
        start += size

    def stack(dicts, key):
        return np.stack([np.array(d[key], copy=True) for d in dicts])

    ct = {k: stack([r.ct for r in results], k) for k in results[0].ct}
    meter = {k: stack([r.meter for r in results], k) for k in results[0].meter}
    main = {k: stack([r.main for r in results], k) for k in results[0].main}
    return Run(
        sc=sc,
        durations=np.array([r.duration_s for r in results]),
        ct=ct,
        meter=meter,
        main=main,
        ct_energy=np.stack([np.array(r.ct_energy, copy=True) for r in results]),
        meter_energy=np.stack([np.array(r.meter_energy, copy=True) for r in results]),
        gate_times=gates,
    )


# -- expected values -----------------------------------------------------------------------------


@dataclass
class Expected:
    ct: dict[str, np.ndarray]  # (24,): v i p q s pf thd_v thd_i level used physical
    meter: dict[str, np.ndarray]  # (8,): p q s_arith s_vector s (reported kVA) p_phys q_phys level
    freq_ct: np.ndarray


def _rms(x: dict[int, np.ndarray]) -> np.ndarray:
    return np.sqrt(sum(np.abs(v) ** 2 for v in x.values()))


def _thd(x: dict[int, np.ndarray]) -> np.ndarray:
    harm = sum((np.abs(v) ** 2 for h, v in x.items() if h >= 2), np.zeros(np.shape(x[1])))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(x[1]) > 0, np.sqrt(harm) / np.abs(x[1]) * 100.0, 0.0)


def expected(sc: Scenario) -> Expected:
    """Analytic values in primary units from the phasors (§3.1, §3.4, §3.5)."""
    s = sc.settings
    orders = sorted(set(sc.amps) | {h for v in sc.volts for h in v})
    main_of = sc.main_of_ct()
    pt = np.array([s.mains[m].pt_ratio for m in main_of])
    ctr = np.repeat([mt.ct_ratio for mt in s.meters], 3)
    rows = np.concatenate([element_rows(mt) for mt in s.meters])  # (24, 3)
    phase_of = np.argmax(np.abs(rows), axis=1)  # the CT's own phase voltage (oracle P_phys)
    for j, mt in enumerate(s.meters):  # a used CT sits on its own line in 3-wire modes
        if mt.wiring in (Wiring.W3P3W_2CT, Wiring.W3P3W_3CT):
            phase_of[3 * j : 3 * j + 3] = (0, 1, 2)
    used = np.concatenate([USED.get(mt.wiring, (True, True, True)) for mt in s.meters])

    def zero():
        return np.zeros(N_CTS, dtype=complex)

    v_el, i_ct, v_ph = {}, {}, {}
    for h in orders:
        vm = np.stack([sc.volts[m].get(h, np.zeros(3, dtype=complex)) for m in main_of])
        v_el[h] = pt * np.einsum("kj,kj->k", rows, vm)
        v_ph[h] = pt * vm[np.arange(N_CTS), phase_of]
        i_ct[h] = ctr * np.asarray(sc.amps.get(h, zero()))
    for h in (1,):
        v_el.setdefault(h, zero())
        i_ct.setdefault(h, zero())
    # Aron: the physical line-b current is -(ia + ic) (three-wire, no neutral)
    i_phys = {h: i.copy() for h, i in i_ct.items()}
    for j, mt in enumerate(s.meters):
        if mt.wiring is Wiring.W3P3W_2CT:
            for h in orders:
                i_phys[h][3 * j + 1] = -(i_ct[h][3 * j] + i_ct[h][3 * j + 2])

    p = sum(np.real(v_el[h] * np.conj(i_ct[h])) for h in orders)
    q = np.imag(v_el[1] * np.conj(i_ct[1]))
    v, i = _rms(v_el), _rms(i_ct)
    sva = v * i
    level = np.abs(np.asarray(sc.amps.get(1, zero())))
    for k, shape in sc.shapes.items():  # T9 currents: closed form, voltage in phase, sinusoidal
        frac = shape.power_fraction()
        vk = abs(v_el[1][k])
        p[k] = vk * shape.rms * ctr[k] * frac
        q[k] = np.nan  # not a sinusoid: Q1 checked separately if at all
        i[k] = shape.rms * ctr[k] * math.sqrt(frac)
        sva[k] = v[k] * i[k]
        level[k] = shape.rms
    with np.errstate(invalid="ignore", divide="ignore"):
        pf = np.where(sva > 0, p / sva, 0.0)
    ct = dict(v=v, i=i, p=p, q=q, s=sva, pf=pf, thd_v=_thd(v_el), thd_i=_thd(i_ct),
              level=level, used=used,
              physical=np.concatenate([[mt.wiring in PHYSICAL_ELEMENTS] * 3 for mt in s.meters]))

    # the lines that physically exist: used CTs, plus line b of an Aron meter
    lines = used.copy()
    for j, mt in enumerate(s.meters):
        if mt.wiring is Wiring.W3P3W_2CT:
            lines[3 * j + 1] = True
    p_phys = np.where(lines, sum(np.real(v_ph[h] * np.conj(i_phys[h])) for h in orders), 0.0)
    q_phys = np.where(lines, np.imag(v_ph[1] * np.conj(i_phys[1])), 0.0)

    def per_meter(x):
        return np.where(used, x, 0.0).reshape(8, 3).sum(axis=1)

    mp, mq, ms = per_meter(p), per_meter(q), per_meter(sva)
    m_s = ms.copy()
    for j, mt in enumerate(s.meters):
        if mt.wiring is Wiring.W3P3W_2CT:  # 3-wire effective S (§3.2): sqrt(sum V_LL^2 sum I^2 / 3)
            m = main_of[3 * j]
            vm = {h: s.mains[m].pt_ratio * sc.volts[m].get(h, np.zeros(3)) for h in orders}
            vll2 = sum(np.sum(np.abs(x - np.roll(x, -1)) ** 2) for x in vm.values())
            i2 = sum(np.sum(np.abs(i_phys[h][3 * j : 3 * j + 3]) ** 2) for h in orders)
            m_s[j] = math.sqrt(vll2 * i2 / 3.0)
    meter = dict(p=mp, q=mq, s_arith=ms, s_vector=np.hypot(mp, mq), s=m_s,
                 p_phys=p_phys.reshape(8, 3).sum(axis=1),
                 q_phys=q_phys.reshape(8, 3).sum(axis=1),
                 level=np.where(used, level, 0).reshape(8, 3).max(axis=1))
    return Expected(ct=ct, meter=meter, freq_ct=np.asarray(sc.freq)[main_of])


# -- class 0.2S limits (metering-standards.md Table A, IEC 62053-22) -------------------------------


def class_limit(level: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Active-energy error limit of class 0.2S (fraction of reading) for current I/In ``level``
    and the load's P, Q1: rows A1/A3 (PF 1), A4/A6 (0.5 ind .. 0.8 cap), A7 (0.25 ind, 0.5 cap)."""
    level, p, q = np.broadcast_arrays(np.asarray(level, float), np.asarray(p, float),
                                      np.asarray(q, float))
    q = np.nan_to_num(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        pf = np.abs(p) / np.hypot(p, q)
    lag = p * q > 0  # quadrants I and III
    unity = pf >= 0.99
    a46 = ~unity & ((lag & (pf >= 0.5 - 1e-9)) | (~lag & (pf >= 0.8 - 1e-9)))
    return np.where(unity, np.where(level >= 0.05 - 1e-12, 0.002, 0.004),
                    np.where(a46, np.where(level >= 0.1 - 1e-12, 0.003, 0.005), 0.005))

