"""What each measurement fault does to the simulated inputs, and so to the truth.

Linear faults change the primary rms phasors (per main, phase and harmonic order; per CT and
order), so the simulator's samples and ``Scenario.expected`` follow from the same numbers:
reversed CT (x -1), CT on another phase (x e^{jh(angle)}), open CT (x 0), VT loss (x
retained), phase swap (a permutation), harmonic-rich load (added orders, locked to the CT's
fundamental), gain drift (x a gain linear in time, constant over one block). A frequency
excursion replaces the main's frequency. Two faults act on samples: a DC offset (added) and
CT saturation (the secondary clipped at a peak); their truth is the waveform of one cycle,
clipped and offset, integrated numerically (4096 points a cycle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from pm4324.config.settings import PHASES
from pm4324.sources.faults import SAMPLE_KINDS, Fault

PHASE_ANGLE = {"a": 0.0, "b": -2 * math.pi / 3, "c": 2 * math.pi / 3}
TRUTH_POINTS = 4096  # points per cycle for the numerical truth of clipped waveforms


def fault_orders(faults: Iterable[Fault]) -> set[int]:
    return {h for f in faults if f.kind == "harmonic_rich" for h in f.params["harmonics"]}


def gain(f: Fault, t: float) -> float:
    return 1.0 + f.params["pct_per_hour"] / 100.0 * (t - f.start_s) / 3600.0


def apply_linear(faults: Iterable[Fault], volts: np.ndarray, currents: np.ndarray,
                 orders: list[int], load_phase: dict[int, str], t: float) -> None:
    """Apply the active linear faults in place (volts (mains, 3, H), currents (24, H));
    ``load_phase``: the phase of the circuit on each CT (default: its position a, b, c)."""
    h = np.asarray(orders, dtype=float)
    for f in faults:
        tg, kind = f.target, f.kind
        if tg.kind == "main" or tg.kind == "phase":
            m = tg.index - 1
            if m >= volts.shape[0]:
                continue
            if kind == "vt_loss":
                volts[m, PHASES.index(tg.phase)] *= f.params["retained"]
            elif kind == "phase_swap":
                volts[m] = volts[m][[PHASES.index(p) for p in f.params["order"]]]
            elif kind == "gain_drift":
                volts[m, PHASES.index(tg.phase)] *= gain(f, t)
            continue
        if tg.kind != "ct":
            continue
        k = tg.index - 1
        if kind == "reversed_ct":
            currents[k] *= -1.0
        elif kind == "open_ct":
            currents[k] = 0.0
        elif kind == "wrong_phase":
            frm = f.params["from"] or load_phase.get(tg.index, PHASES[k % 3])
            currents[k] *= np.exp(1j * h * (PHASE_ANGLE[f.params["phase"]] - PHASE_ANGLE[frm]))
        elif kind == "gain_drift":
            currents[k] *= gain(f, t)
        elif kind == "harmonic_rich":
            ref = PHASE_ANGLE[load_phase.get(tg.index, PHASES[k % 3])]
            i1 = currents[k, orders.index(1)]
            for order, (frac, deg) in f.params["harmonics"].items():
                currents[k, orders.index(order)] += frac * i1 * np.exp(
                    1j * ((order - 1) * ref + math.radians(deg)))


def frequency(faults: Iterable[Fault], main: int, base: float) -> float:
    """The main's (0-based) frequency: the last active excursion's, else ``base``."""
    for f in faults:
        if f.kind == "frequency_excursion" and f.target.index == main + 1:
            base = f.params["frequency_hz"]
    return base


def sample_faults(faults: Iterable[Fault]) -> list[Fault]:
    return [f for f in faults if f.kind in SAMPLE_KINDS]


def apply_samples(faults: list[Fault], v: np.ndarray, i: np.ndarray, pt: np.ndarray,
                  amps_per_input: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Clip saturated CTs, then add DC offsets, on samples [start:stop] of terminal-level
    rows (pt: per voltage row, amps_per_input: primary A per unit of each CT input)."""
    for f in faults:
        if f.kind == "ct_saturation":
            k = f.target.index - 1
            c = f.params["clip_a"] / amps_per_input[k]
            np.clip(i[k, start:stop], -c, c, out=i[k, start:stop])
    for f in faults:
        if f.kind != "dc_offset":
            continue
        tg = f.target
        if tg.kind == "ct":
            i[tg.index - 1, start:stop] += f.params["offset"] / amps_per_input[tg.index - 1]
        elif 3 * (tg.index - 1) < v.shape[0]:
            row = 3 * (tg.index - 1) + PHASES.index(tg.phase)
            v[row, start:stop] += f.params["offset"] / pt[row]


def dc_volts(faults: Iterable[Fault], n_mains: int) -> np.ndarray:
    """(n_mains, 3) primary DC offsets of the phase voltages."""
    out = np.zeros((n_mains, 3))
    for f in faults:
        if f.kind == "dc_offset" and f.target.kind == "phase" and f.target.index <= n_mains:
            out[f.target.index - 1, PHASES.index(f.target.phase)] += f.params["offset"]
    return out


def ct_waveform_truth(faults: Iterable[Fault], ct: int, i: np.ndarray,
                      orders: list[int]) -> tuple[np.ndarray, float, float]:
    """A CT's current after its sample faults: phasors at ``orders``, its DC and its rms.

    One cycle of the primary waveform (sqrt 2 * Re sum I_h e^{jh theta}) is clipped and
    offset as the simulator does, then analysed: the bins of its DFT are the phasors."""
    mine = [f for f in faults if f.target.kind == "ct" and f.target.index == ct]
    theta = 2 * math.pi * np.arange(TRUTH_POINTS) / TRUTH_POINTS
    w = np.zeros(TRUTH_POINTS)
    for h, c in zip(orders, i):
        w += math.sqrt(2) * (c * np.exp(1j * h * theta)).real
    for f in mine:
        if f.kind == "ct_saturation":
            np.clip(w, -f.params["clip_a"], f.params["clip_a"], out=w)
    for f in mine:
        if f.kind == "dc_offset":
            w += f.params["offset"]
    spec = np.fft.rfft(w) / TRUTH_POINTS
    phasors = np.array([math.sqrt(2) * spec[h] for h in orders])
    return phasors, float(spec[0].real), float(np.sqrt(np.mean(w * w)))
