"""The one-second snapshot: everything the meter knows about one second, frozen.

Every interface (the live table, JSON, Modbus, CANopen) reads only a snapshot, so two
interfaces asked in the same second always agree. Arrays are read-only numpy arrays indexed
from 0 (CT k is index k-1, Meter m is index m-1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import IntFlag
from typing import Any

import numpy as np

from pm4324.config.settings import Settings


class Flag(IntFlag):
    """Quality flags per value (per CT, Meter or main); 0 means good."""

    VOLTAGE_ABSENT = 1  # the voltage this value uses is below 10 % of nominal
    CLIPPING = 2  # a sample reached the input's full scale this second
    FREQUENCY_RANGE = 4  # frequency outside 45..65 Hz
    INVALID_SAMPLES = 8  # NaN/inf samples were dropped (never integrated into energy)
    UNSYNCHRONISED = 16  # no valid zero crossings: cycles run free at the nominal period
    NO_DATA = 32  # no whole cycle ended in this second
    UNUSED = 64  # this CT is not used by its Meter's wiring mode

    def names(self) -> list[str]:
        return [f.name.lower() for f in Flag if f in self]


class Status(IntFlag):
    """The meter status word (input register 0x1005, docs/registers.md); 0 means all well.

    One word for the whole meter: every feature that needs to tell a master something is
    wrong adds its bit here instead of a register of its own.
    """

    NO_DATA = 1  # no measured second yet: instantaneous values read NaN, energies are restored
    NOT_SAVED = 2  # something published is not yet on disk (a save failed; retried every commit)
    RELAY_DRIVER_FAILED = 4  # the relay driver failed to set an output; it is being retried
    CLOCK_STEPPED = 8  # the wall clock stepped (set back or forward) in the last 60 s
    VOLTAGE_RANGE = 16  # a main's nominal voltage at the terminals is outside 10..500 V

    def names(self) -> list[str]:
        return [f.name.lower() for f in Status if f in self]


@dataclass(frozen=True)
class AlarmStatus:
    """Alarm rules at one instant; slot k (1-based) at index k-1 (see device/alarms.py)."""

    active: tuple[bool, ...] = ()  # output on: raised, or latched and not acknowledged
    unacked: tuple[bool, ...] = ()  # latched and not yet acknowledged
    values: tuple[float, ...] = ()  # each rule's last valid input (NaN before the first)

    @staticmethod
    def mask(bits: tuple[bool, ...]) -> int:
        """Bit k-1 = slot k (the alarm status registers)."""
        return sum(1 << k for k, bit in enumerate(bits) if bit)


ENERGY_KINDS = ("wh_import", "wh_export", "varh_q1", "varh_q2", "varh_q3", "varh_q4", "vah")


def _frozen(a: Any) -> np.ndarray:
    arr = np.array(a)
    arr.flags.writeable = False
    return arr


class _Frozen:
    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray | list | tuple) and f.name not in ("wiring",):
                object.__setattr__(self, f.name, _frozen(value))


@dataclass(frozen=True)
class CtValues(_Frozen):
    """Per CT (shape (24,)); harmonics shape (24, 51): rms of orders 0..50 (index = order)."""

    v_rms: np.ndarray
    i_rms: np.ndarray
    p_w: np.ndarray
    q_var: np.ndarray  # fundamental reactive power Q1, signed (+ inductive when importing)
    s_va: np.ndarray  # V_rms * I_rms of the element
    pf: np.ndarray  # P/S, signed like P (IEC); lead/lag from the sign of Q1
    thd_v_pct: np.ndarray
    thd_i_pct: np.ndarray
    frequency_hz: np.ndarray
    v_harmonics: np.ndarray
    i_harmonics: np.ndarray
    flags: np.ndarray
    # each order's phasors summed over the second's windows, turned so that the main's
    # reference (phase a's fundamental) is at 0: only their angles are used (harmonic_deg);
    # 0 where there is none (no data, at or above Nyquist, or a meter run without angles)
    i_harmonic_phasors: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))


@dataclass(frozen=True)
class MeterValues(_Frozen):
    """Per Meter (shape (8,)). s_va is the Meter's kVA (see docs/metering.md)."""

    v_rms: np.ndarray
    i_rms: np.ndarray
    p_w: np.ndarray
    q_var: np.ndarray
    s_va: np.ndarray
    s_arith_va: np.ndarray
    s_vector_va: np.ndarray
    pf: np.ndarray
    frequency_hz: np.ndarray
    flags: np.ndarray


@dataclass(frozen=True)
class MainValues(_Frozen):
    """Per main (shape (n_mains,) or (n_mains, 3) for phases a, b, c / ab, bc, ca)."""

    frequency_hz: np.ndarray
    v_ln: np.ndarray
    v_ll: np.ndarray
    thd_v_pct: np.ndarray
    flags: np.ndarray
    # (n_mains, 3, 51): rms and phasors (as CtValues.i_harmonic_phasors) of each order of
    # va, vb, vc
    v_harmonics: np.ndarray = field(default_factory=lambda: np.empty((0, 3, 0)))
    v_harmonic_phasors: np.ndarray = field(default_factory=lambda: np.empty((0, 3, 0)))


@dataclass(frozen=True)
class Energies(_Frozen):
    """Energy registers in Wh / varh / VAh, shape (n,). varh_qN is quadrant N (IEC 62053-23)."""

    wh_import: np.ndarray
    wh_export: np.ndarray
    varh_q1: np.ndarray
    varh_q2: np.ndarray
    varh_q3: np.ndarray
    varh_q4: np.ndarray
    vah: np.ndarray

    @property
    def varh_import(self) -> np.ndarray:
        """Q+ = QI + QII (OBIS 3.8.0)."""
        return self.varh_q1 + self.varh_q2

    @property
    def varh_export(self) -> np.ndarray:
        """Q- = QIII + QIV (OBIS 4.8.0)."""
        return self.varh_q3 + self.varh_q4


@dataclass(frozen=True)
class Snapshot:
    seq: int  # seconds since the meter started measuring (0, 1, 2 ...)
    time: float  # Unix time of the end of the second
    settings: Settings
    ct: CtValues
    meter: MeterValues
    main: MainValues
    ct_energy: Energies
    meter_energy: Energies
    relays: tuple[bool, bool] = (False, False)
    duration_s: float = 0.0  # total length of the whole cycles this snapshot covers
    alarms: AlarmStatus = AlarmStatus()
    status: int = 0  # Status bits at the time of this second
    # Per main, the samples of the second's last whole cycles in primary V and A at the
    # settings' sample rate: rows va, vb, vc, then the main's CTs (the web's waveform view).
    waveforms: tuple[np.ndarray, ...] = ()
    # power quality (device/pq.py): the mains' latest aggregates, events ended this second,
    # the CTs' latest 10-minute values; JSON-ready, None when PQ is off (docs/power-quality.md)
    pq: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "waveforms", tuple(_frozen(w) for w in self.waveforms))

    # -- JSON view (keys are stable and documented in docs/json.md) ----------------------------

    def to_dict(self, meters: list[int] | None = None,
                harmonics: bool = False) -> dict[str, Any]:
        """``harmonics``: add each phase voltage's and each CT current's harmonic rms and
        angle, orders 0..50 (``--harmonics``; many numbers, so only on request)."""
        chosen = meters or list(range(1, 9))
        cts = [3 * (m - 1) + k for m in chosen for k in (1, 2, 3)]
        d = {
            "seq": self.seq,
            "time": round(self.time, 3),
            "model": self.settings.model,
            "duration_s": round(self.duration_s, 6),
            "status": Status(self.status).names(),
            "relays": list(self.relays),
            "mains": [self._main_dict(i) for i in range(self.settings.n_mains)],
            "cts": [self._ct_dict(k) for k in cts],
            "meters": [self._meter_dict(m) for m in chosen],
        }
        if harmonics:
            mv, c = self.main, self.ct
            below = [self._below_nyquist(i) for i in range(self.settings.n_mains)]
            for i, main in enumerate(d["mains"]):
                main["v_harmonics"] = [
                    {"phase": p, **_spectrum(mv.v_harmonics[i, k],
                                             harmonic_deg(mv.v_harmonic_phasors[i, k]),
                                             below[i])} for k, p in enumerate("abc")]
            for ct in d["cts"]:
                k = ct["ct"] - 1
                ct["i_harmonics"] = _spectrum(c.i_harmonics[k],
                                              harmonic_deg(c.i_harmonic_phasors[k]),
                                              below[self.settings.main_of_ct(k + 1)])
        return d

    def _below_nyquist(self, main: int) -> int:
        """How many orders (from 0) of ``main`` lie below Nyquist this second."""
        f = float(self.main.frequency_hz[main])
        if not np.isfinite(f):
            f = self.settings.mains[main].nominal_frequency_hz
        return math.ceil(self.settings.sample_rate_hz / 2 / f)

    def pq_dict(self) -> dict[str, Any]:
        """``{"pq": ...}`` when the meter measures power quality, else {}; `run --json` and the
        dashboard's stream add it to ``to_dict()``'s keys (Modbus cannot carry it)."""
        return {} if self.pq is None else {"pq": self.pq}

    def alarms_dict(self) -> dict[str, Any]:
        """Relay modes and the enabled alarm rules (slot, relay, rule text, output on,
        unacknowledged, last valid input); `run` adds these keys to ``to_dict()``'s."""
        return {"relay_modes": [r.mode for r in self.settings.relays.relays],
                "alarms": self._alarm_dicts()}

    def _alarm_dicts(self) -> list[dict[str, Any]]:
        out = []
        for k, rule in enumerate(self.settings.alarms):
            if not rule.enabled or k >= len(self.alarms.active):
                continue
            out.append({"alarm": k + 1, "relay": rule.relay, "rule": rule.describe(),
                        "active": self.alarms.active[k], "unacked": self.alarms.unacked[k],
                        "value": _num(self.alarms.values[k])})
        return out

    def _main_dict(self, i: int) -> dict[str, Any]:
        mv = self.main
        return {
            "main": i + 1,
            "frequency_hz": _num(mv.frequency_hz[i]),
            "v_ln": [_num(x) for x in mv.v_ln[i]],
            "v_ll": [_num(x) for x in mv.v_ll[i]],
            "thd_v_pct": [_num(x) for x in mv.thd_v_pct[i]],
            "flags": Flag(int(mv.flags[i])).names(),
        }

    def _ct_dict(self, k: int) -> dict[str, Any]:
        c, i = self.ct, k - 1
        meter = self.settings.meters[i // 3]
        d = {
            "ct": k,
            "name": meter.ct_names[i % 3] or None,
            "v_rms": _num(c.v_rms[i]),
            "i_rms": _num(c.i_rms[i]),
            "p_w": _num(c.p_w[i]),
            "q_var": _num(c.q_var[i]),
            "s_va": _num(c.s_va[i]),
            "pf": _num(c.pf[i]),
            "lead_lag": _lead_lag(c.p_w[i], c.q_var[i]),
            "thd_v_pct": _num(c.thd_v_pct[i]),
            "thd_i_pct": _num(c.thd_i_pct[i]),
            "frequency_hz": _num(c.frequency_hz[i]),
            "flags": Flag(int(c.flags[i])).names(),
        }
        d.update(_energy_dict(self.ct_energy, i))
        return d

    def _meter_dict(self, m: int) -> dict[str, Any]:
        mv, i = self.meter, m - 1
        d = {
            "meter": m,
            "name": self.settings.meters[i].name or None,
            "wiring": self.settings.meters[i].wiring.value,
            "v_rms": _num(mv.v_rms[i]),
            "i_rms": _num(mv.i_rms[i]),
            "p_w": _num(mv.p_w[i]),
            "q_var": _num(mv.q_var[i]),
            "s_va": _num(mv.s_va[i]),
            "s_arith_va": _num(mv.s_arith_va[i]),
            "s_vector_va": _num(mv.s_vector_va[i]),
            "pf": _num(mv.pf[i]),
            "lead_lag": _lead_lag(mv.p_w[i], mv.q_var[i]),
            "frequency_hz": _num(mv.frequency_hz[i]),
            "flags": Flag(int(mv.flags[i])).names(),
        }
        d.update(_energy_dict(self.meter_energy, i))
        return d


def _num(x: Any, digits: int = 6) -> float | None:
    x = float(x)
    if not np.isfinite(x):
        return None
    return float(f"{x:.{digits + 3}g}")


def harmonic_deg(phasors: np.ndarray) -> np.ndarray:
    """Angles in degrees (-180..180) of turned harmonic phasors; NaN where there is none.
    Computed only when asked (``--harmonics``): for every CT and phase voltage it costs
    17 us, 1.4 % of the engine's 1.2 ms per PM-4324A second (measured with numpy here)."""
    with np.errstate(invalid="ignore"):
        return np.where(phasors != 0, np.degrees(np.angle(phasors)), np.nan)


def _spectrum(rms: np.ndarray, deg: np.ndarray, below: int) -> dict[str, list[float | None]]:
    """One channel's orders 0..50 (index = order): rms, and angle in degrees. Orders from
    ``below`` on (at or above Nyquist) do not exist: null. An angle is also null for DC and
    where the order is under 1e-6 of the fundamental (its angle would be noise)."""
    floor = 1e-6 * float(rms[1]) if rms.size > 1 else np.inf
    out: dict[str, list[float | None]] = {"rms": [], "deg": []}
    for h in range(rms.size):
        exists = h < below
        out["rms"].append(_num(rms[h]) if exists else None)
        out["deg"].append(_num(deg[h], 4) if exists and h > 0 and rms[h] > floor else None)
    return out


def _lead_lag(p: float, q: float) -> str:
    """Current lags voltage in quadrants I and III (IEC 62053-23 / §3.5 of the standards brief)."""
    if q == 0 or not np.isfinite(q):
        return ""
    return "lag" if (p >= 0) == (q > 0) else "lead"


def _energy_dict(e: Energies, i: int) -> dict[str, Any]:
    k = 1000.0
    return {
        "kwh_import": _num(e.wh_import[i] / k, 9),
        "kwh_export": _num(e.wh_export[i] / k, 9),
        "kvarh_q1": _num(e.varh_q1[i] / k, 9),
        "kvarh_q2": _num(e.varh_q2[i] / k, 9),
        "kvarh_q3": _num(e.varh_q3[i] / k, 9),
        "kvarh_q4": _num(e.varh_q4[i] / k, 9),
        "kvah": _num(e.vah[i] / k, 9),
    }
