"""A scenario's exact truth per minute, without waveforms: what `history synth` writes.

Per minute, the loads' levels (daily profile at the local clock hour of the minute's middle,
on/off schedule) scale each load's current phasors; every per-CT, per-Meter and per-main
value follows from the phasors as in ``Scenario.expected``, and the energy of the minute is
its power at the middle times 60 s. That is exact for the piecewise-linear daily profiles;
on/off switching is resolved to the minute, and voltage sags (seconds long) and the
frequency drift are left out (the frequency is the nominal one). Meters: P and Q are the
sums of their used CTs, S the arithmetic sum, V and I the means of the used CTs.

A year of one PM-4324A is 525,600 minutes: computed a day (1,440 rows) at a time, in
milliseconds, so DST days, months and years of history take seconds to write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, PHASES, Settings
from pm4324.metering.wiring import current_signs, meter_wiring
from pm4324.sources.scenario import _PHASE_ANGLE, Scenario

ENERGY = ("wh_import", "wh_export", "varh_q1", "varh_q2", "varh_q3", "varh_q4", "vah")


@dataclass(frozen=True)
class MinuteTruth:
    """Values per minute (arrays with the minutes first) and the energy in each minute."""

    t: np.ndarray  # (n,) minute starts, Unix seconds
    ct: dict[str, np.ndarray]  # quantity -> (n, 24)
    meter: dict[str, np.ndarray]  # quantity -> (n, 8)
    main: dict[str, np.ndarray]  # quantity -> (n, n_mains)
    ct_energy: np.ndarray  # (n, 24, 7) Wh in the minute, ENERGY order
    meter_energy: np.ndarray  # (n, 8, 7)


class Truth:
    """Computes minutes of one scenario on one settings file."""

    def __init__(self, scenario: Scenario, settings: Settings, time_zone: str, start: float):
        self.scenario, self.settings = scenario, settings
        self.tz = ZoneInfo(time_zone)
        self.start = start  # Unix time of scenario second 0 (on/off schedules count from it)
        volts, _, orders = scenario.phasors(settings, 1e9)  # no sag that late
        self.orders = orders
        self.volts = volts  # (n_mains, 3, H)
        self.load_currents = load_currents(scenario, orders)
        wirings = [meter_wiring(m) for m in settings.meters]
        self.v_el = np.stack([wirings[(k - 1) // 3].coefficients[(k - 1) % 3]
                              @ volts[settings.main_of_ct(k)] for k in range(1, N_CTS + 1)])
        self.v_el *= current_signs(settings.meters)[:, None]  # [cts.N] reverse: P, Q inverted
        self.used = np.concatenate([w.used for w in wirings])

    def levels(self, t_mid: np.ndarray) -> np.ndarray:
        """(n, loads): each load's level at these instants (local clock for the profile)."""
        hours = _local_hours(t_mid, self.tz)
        since = t_mid - self.start
        out = np.ones((len(t_mid), len(self.scenario.loads)))
        for n, ld in enumerate(self.scenario.loads):
            if ld.daily_profile:
                prof = np.asarray(ld.daily_profile + ld.daily_profile[:1])
                hour = hours % 24.0
                k = hour.astype(int)
                out[:, n] = prof[k] + (hour - k) * (prof[k + 1] - prof[k])
            if ld.off_s > 0:
                out[:, n] *= (since % (ld.on_s + ld.off_s)) < ld.on_s
        return out

    def minutes(self, t: np.ndarray) -> MinuteTruth:
        t = np.asarray(t, dtype=np.int64)
        i = np.einsum("nl,lch->nch", self.levels(t + 30.0), self.load_currents)  # (n, 24, H)
        s = self.v_el[None] * np.conj(i)
        h1 = self.orders.index(1)
        p, q = s.real.sum(axis=2), s[:, :, h1].imag
        v_rms = np.sqrt((np.abs(self.v_el) ** 2).sum(axis=1))[None].repeat(len(t), 0)
        i_rms = np.sqrt((np.abs(i) ** 2).sum(axis=2))
        s_va = v_rms * i_rms
        ct = {"v_rms": v_rms, "i_rms": i_rms, "p_w": p, "q_var": q, "s_va": s_va,
              "pf": ratio(p, s_va), "thd_v_pct": _thd(self.v_el[None], h1).repeat(len(t), 0),
              "thd_i_pct": _thd(i, h1), "frequency_hz": self._ct_frequency(len(t))}
        meter = self._meters(ct)
        main = self._mains(len(t))
        return MinuteTruth(t, ct, meter, main, energy(p, q, s_va, 60.0), energy(
            meter["p_w"], meter["q_var"], meter["s_va"], 60.0))

    def _ct_frequency(self, n: int) -> np.ndarray:
        f = [self.scenario.mains[self.settings.main_of_ct(k)].frequency_hz for k in range(1, N_CTS + 1)]
        return np.tile(np.array(f), (n, 1))

    def _meters(self, ct: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        used = self.used.reshape(N_METERS, 3)

        def per_meter(x: np.ndarray, how: str) -> np.ndarray:
            y = np.where(used[None], x.reshape(len(x), N_METERS, 3), 0.0).sum(axis=2)
            return y / used.sum(axis=1) if how == "mean" else y

        out = {k: per_meter(ct[k], "sum") for k in ("p_w", "q_var", "s_va")}
        out.update({k: per_meter(ct[k], "mean") for k in ("v_rms", "i_rms", "frequency_hz")})
        out["pf"] = ratio(out["p_w"], out["s_va"])
        return out

    def _mains(self, n: int) -> dict[str, np.ndarray]:
        v = self.volts  # (mains, 3, H)
        h1 = self.orders.index(1)
        out = {"frequency_hz": np.array([m.frequency_hz for m in self.scenario.mains[: len(v)]])}
        for j, ph in enumerate(PHASES):
            out[f"v_ln_{ph}"] = np.sqrt((np.abs(v[:, j]) ** 2).sum(axis=1))
            out[f"thd_v_{ph}"] = _thd(v[:, j], h1)
        for name, (a, b) in (("ab", (0, 1)), ("bc", (1, 2)), ("ca", (2, 0))):
            out[f"v_ll_{name}"] = np.sqrt((np.abs(v[:, a] - v[:, b]) ** 2).sum(axis=1))
        return {k: np.tile(x, (n, 1)) for k, x in out.items()}


def load_currents(scenario: Scenario, orders: list[int]) -> np.ndarray:
    """(loads, 24, H): each load's primary current phasors at level 1 (as Scenario.phasors);
    the history's minute truth and the fleet's second truth both scale these."""
    out = np.zeros((len(scenario.loads), N_CTS, len(orders)), dtype=complex)
    for n, ld in enumerate(scenario.loads):
        for ct, ph in zip(ld.cts, ld.phases):
            for j, h in enumerate(orders):
                frac, deg = (1.0, 0.0) if h == 1 else ld.harmonics.get(h, (0.0, 0.0))
                ang = h * _PHASE_ANGLE[ph] + (ld.angle if h == 1 else math.radians(deg)
                                              + (math.pi if ld.export else 0.0))
                out[n, ct - 1, j] += ld.current_a * frac * np.exp(1j * ang)
    return out


def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b where b > 0, else 0 (a power factor of no load)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def _thd(x: np.ndarray, h1: int) -> np.ndarray:
    """THD_F in % over the last axis (harmonic orders)."""
    power = np.abs(x) ** 2
    fund = power[..., h1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(fund > 0, 100 * np.sqrt((power.sum(axis=-1) - fund) / np.where(fund > 0, fund, 1)),
                        np.nan)


def energy(p: np.ndarray, q: np.ndarray, s: np.ndarray, seconds: float) -> np.ndarray:
    """(..., 7) Wh in ``seconds`` of constant P, Q, S, ENERGY order (quadrants as IEC 62053-23).

    The one split of both truths: a minute of the history's (here) and a second of the fleet's.
    """
    h = seconds / 3600.0
    imp = p >= 0
    out = np.zeros((*p.shape, len(ENERGY)))
    out[..., 0] = np.where(imp, p, 0.0) * h
    out[..., 1] = np.where(imp, 0.0, -p) * h
    out[..., 2] = np.where(imp & (q >= 0), q, 0.0) * h
    out[..., 3] = np.where(~imp & (q >= 0), q, 0.0) * h
    out[..., 4] = np.where(~imp & (q < 0), -q, 0.0) * h
    out[..., 5] = np.where(imp & (q < 0), -q, 0.0) * h
    out[..., 6] = s * h
    return out


def _local_hours(t: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Local clock hours (0..24) of Unix times; one offset look-up per distinct UTC hour."""
    hours = t // 3600
    keys, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array([datetime.fromtimestamp(int(k) * 3600, tz).utcoffset().total_seconds()
                        for k in keys])[inverse]
    return ((t + offsets) % 86400) / 3600.0
