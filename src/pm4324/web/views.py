"""Snapshot -> the API's JSON views: values with units, harmonics, waveforms and phasors.

Pure functions of one snapshot, so every view of a second agrees with the others and with
the register map (the units come from the map's own table).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pm4324.registers.table import FIELD_UNITS
from pm4324.snapshot import Flag, Snapshot, Status

PHASES = ("a", "b", "c")
LABELS = {
    "v_rms": "Voltage", "i_rms": "Current", "p_w": "Active power", "q_var": "Reactive power (Q1)",
    "s_va": "Apparent power", "s_arith_va": "Apparent power (arithmetic)",
    "s_vector_va": "Apparent power (vector)", "pf": "Power factor", "thd_v_pct": "THD voltage",
    "thd_i_pct": "THD current", "frequency_hz": "Frequency",
    "wh_import": "Active energy import", "wh_export": "Active energy export",
    "varh_q1": "Reactive energy QI", "varh_q2": "Reactive energy QII",
    "varh_q3": "Reactive energy QIII", "varh_q4": "Reactive energy QIV", "vah": "Apparent energy",
}
CT_FIELDS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "pf", "thd_v_pct", "thd_i_pct",
             "frequency_hz")
METER_FIELDS = ("v_rms", "i_rms", "p_w", "q_var", "s_va", "s_arith_va", "s_vector_va", "pf",
                "frequency_hz")
ENERGY_FIELDS = ("wh_import", "wh_export", "varh_q1", "varh_q2", "varh_q3", "varh_q4", "vah")


def number(x: Any) -> float | None:
    """JSON has no NaN: a value the meter does not have is null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _value(field: str, x: Any) -> dict[str, Any]:
    return {"quantity": field, "label": LABELS[field], "value": number(x), "unit": FIELD_UNITS[field]}


def ct_name(snap: Snapshot, ct: int) -> str:
    """The circuit's name from the settings when it has one, else "CT k"."""
    meter = snap.settings.meters[(ct - 1) // 3]
    names = getattr(meter, "ct_names", ("", "", ""))  # per-CT labels (the history item's)
    return names[(ct - 1) % 3] or f"CT {ct}"


def meter_name(snap: Snapshot, meter: int) -> str:
    return getattr(snap.settings.meters[meter - 1], "name", "") or f"Meter {meter}"


def ct_view(snap: Snapshot, ct: int) -> dict[str, Any]:
    i = ct - 1
    meter = (ct - 1) // 3 + 1
    values = [_value(f, getattr(snap.ct, f)[i]) for f in CT_FIELDS]
    values += [_value(f, getattr(snap.ct_energy, f)[i]) for f in ENERGY_FIELDS]
    return {"ct": ct, "name": ct_name(snap, ct), "meter": meter, "main": snap.settings.main_of_ct(ct) + 1,
            "phase": PHASES[i % 3], "flags": Flag(int(snap.ct.flags[i])).names(), "values": values}


def meter_view(snap: Snapshot, meter: int) -> dict[str, Any]:
    i = meter - 1
    values = [_value(f, getattr(snap.meter, f)[i]) for f in METER_FIELDS]
    values += [_value(f, getattr(snap.meter_energy, f)[i]) for f in ENERGY_FIELDS]
    return {"meter": meter, "name": meter_name(snap, meter),
            "wiring": snap.settings.meters[i].wiring.value,
            "main": snap.settings.main_of_meter(meter) + 1, "cts": [3 * i + 1, 3 * i + 2, 3 * i + 3],
            "flags": Flag(int(snap.meter.flags[i])).names(), "values": values}


def main_view(snap: Snapshot, main: int) -> dict[str, Any]:
    m, mv = main - 1, snap.main
    phases = [{"phase": p, "v_ln": number(mv.v_ln[m][k]), "v_ll": number(mv.v_ll[m][k]),
               "thd_v_pct": number(mv.thd_v_pct[m][k])} for k, p in enumerate(PHASES)]
    return {"main": main, "frequency_hz": number(mv.frequency_hz[m]), "phases": phases,
            "units": {"v_ln": "V", "v_ll": "V", "thd_v_pct": "%", "frequency_hz": "Hz"},
            "flags": Flag(int(mv.flags[m])).names()}


def harmonics_view(snap: Snapshot, ct: int) -> dict[str, Any]:
    """RMS of orders 1..50 of the CT's element voltage and current, and the THDs."""
    i = ct - 1
    return {"ct": ct, "name": ct_name(snap, ct), "orders": list(range(1, 51)),
            "v_rms": [number(x) for x in snap.ct.v_harmonics[i][1:51]],
            "i_rms": [number(x) for x in snap.ct.i_harmonics[i][1:51]],
            "thd_v_pct": number(snap.ct.thd_v_pct[i]), "thd_i_pct": number(snap.ct.thd_i_pct[i]),
            "units": {"v_rms": "V", "i_rms": "A", "thd_v_pct": "%", "thd_i_pct": "%"}}


def waveform_view(snap: Snapshot, meter: int) -> dict[str, Any]:
    """The Meter's main's three phase voltages and its three CT currents over the last whole
    cycles, with each channel's fundamental phasor (rms, degrees relative to phase a)."""
    main = snap.settings.main_of_meter(meter)
    per_main = 24 // snap.settings.n_mains
    rows = [0, 1, 2] + [3 + (3 * (meter - 1) + k) - main * per_main for k in range(3)]
    fs = snap.settings.sample_rate_hz
    if main >= len(snap.waveforms) or snap.waveforms[main].shape[1] < 4:
        empty: list[float | None] = []
        return {"meter": meter, "sample_rate_hz": fs, "v": [empty] * 3, "i": [empty] * 3,
                "v_phasors": [], "i_phasors": [], "units": {"v": "V", "i": "A"}}
    w = snap.waveforms[main][rows]
    phasors = _fundamentals(w, snap.main.frequency_hz[main], fs)
    ref = np.angle(phasors[0]) if abs(phasors[0]) > 0 else 0.0

    def polar(z: complex, name: str) -> dict[str, Any]:
        deg = math.degrees(float(np.angle(z) - ref))
        return {"name": name, "rms": number(abs(z)), "deg": number((deg + 180) % 360 - 180)}

    return {"meter": meter, "sample_rate_hz": fs,
            "v": [[number(x) for x in row] for row in w[:3]],
            "i": [[number(x) for x in row] for row in w[3:]],
            "v_phasors": [polar(phasors[k], f"V{p}") for k, p in enumerate(PHASES)],
            "i_phasors": [polar(phasors[3 + k], f"I{p}") for k, p in enumerate(PHASES)],
            "units": {"v": "V", "i": "A"}}


def _fundamentals(w: np.ndarray, f_hz: float, fs: float) -> np.ndarray:
    """Fundamental rms phasors of rows holding whole cycles (a DFT at the measured frequency)."""
    n = w.shape[1]
    f = float(f_hz) if math.isfinite(float(f_hz)) and f_hz > 0 else fs / n
    cycles = max(1, round(n * f / fs))
    kernel = np.exp(-2j * np.pi * cycles * np.arange(n) / n)
    return (w @ kernel) * math.sqrt(2) / n


def live_view(snap: Snapshot) -> dict[str, Any]:
    """One second for the dashboard's stream: the JSON snapshot plus names and alarms."""
    d = snap.to_dict()
    d.update(snap.alarms_dict())
    d.update(snap.pq_dict())
    d["status_word"] = int(snap.status)
    d["status"] = Status(snap.status).names()
    for ct in d["cts"]:
        ct["name"] = ct_name(snap, ct["ct"])
    for m in d["meters"]:
        m["name"] = meter_name(snap, m["meter"])
    d["units"] = {**{f: FIELD_UNITS[f] for f in (*CT_FIELDS, *METER_FIELDS)},
                  "kwh_import": "kWh", "kwh_export": "kWh", "kvarh_q1": "kvarh", "kvarh_q2": "kvarh",
                  "kvarh_q3": "kvarh", "kvarh_q4": "kvarh", "kvah": "kVAh", "v_ln": "V", "v_ll": "V"}
    return d
