"""The truth fidelity level: every member's second straight from its scenario's exact truth,
computed for all members of a group at once (no waveforms, no engine).

A group is the members of one ``[[meters]]`` table: one scenario, one settings file. They
differ by each load's current factor (from their seed), by their CT ratio, and by live CT
ratio writes. Per second, each load's level (daily profile, on/off schedule) and the
mains' voltages (sags) are taken at the middle of the second, as ``Scenario.expected``
states them; each member's CT currents are then one matrix product of its load factors
with the loads' current phasors, and every value follows from the phasors as the meter
defines it (docs/metering.md): V and I rms, P and Q1, S = V.I, PF = P/S, THD_F, anti-creep
below 0.04 % of rated current, the Meter totals over their used CTs (the 3P3W-2CT Meter's
kVA the IEEE 1459 effective one), and the energy of the second as its power times 1 s.
The frequency is the main's, with its drift at the middle of the second.

Cost: a few array passes over (members, 24, orders): ~10,000 meters in tens of
milliseconds a second (docs/benchmarks.md, "Fleet").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from pm4324.config.settings import CT_SECONDARY_RATED_A, N_CTS, N_METERS, Settings, Wiring
from pm4324.metering.wiring import meter_wiring
from pm4324.snapshot import Flag
from pm4324.sources.faults import SAMPLE_KINDS, Fault
from pm4324.sources.scenario import Scenario
from pm4324.sources.truth import energy, load_currents, ratio

START_FRACTION = 0.0004  # anti-creep (metering/step_kernels.py)
STARTING_FRACTION = 0.001  # THD_I reads 0 below the starting current


@dataclass(frozen=True)
class Second:
    """One second of every member of a group (arrays with the members first)."""

    k: int  # the second's number since the fleet started (0, 1, ...)
    ct: dict[str, np.ndarray]  # (n, 24); v_rms, thd_v_pct, frequency_hz shared: (24,)
    meter: dict[str, np.ndarray]  # (n, 8); v_rms, frequency_hz shared: (8,)
    main: dict[str, np.ndarray]  # (n_mains,) or (n_mains, 3), shared
    ct_energy: np.ndarray  # (n, 24, 7) Wh in the second
    meter_energy: np.ndarray  # (n, 8, 7)
    load_levels: np.ndarray | None = None  # (n, loads): each member's load factors now
    gain: np.ndarray | None = None  # (n, 24): live CT ratio over the installed one
    # members with active faults: row -> their own one-member (per-member) second
    overrides: Mapping[int, Second] = field(default_factory=dict)
    # the physics level: every array has the members first (also V, f and the mains), and
    # the quality flags are the engine's: (n, 24) and (n, 8)
    ct_flags: np.ndarray | None = None
    meter_flags: np.ndarray | None = None

    @property
    def per_member(self) -> bool:
        return self.ct_flags is not None


class GroupTruth:
    """Computes seconds of the members of one group."""

    def __init__(self, scenario: Scenario, settings: Settings, scales: np.ndarray):
        self.scenario, self.settings = scenario, settings
        self.scales = np.asarray(scales, dtype=float)  # (n, loads)
        _, _, orders = scenario.phasors(settings, 0.0, ())
        self.orders = orders
        self.h1 = orders.index(1)
        self.lc = load_currents(scenario, orders)
        self.lc_flat = self.lc.reshape(len(scenario.loads), -1)
        wirings = [meter_wiring(m) for m in settings.meters]
        self.coeff = np.stack([wirings[(k - 1) // 3].coefficients[(k - 1) % 3]
                               for k in range(1, N_CTS + 1)])  # (24, 3)
        reverse = np.array([m.ct_reverse[j] for m in settings.meters for j in range(3)])
        self.coeff[reverse] *= -1.0  # [cts.N] reverse: the meter inverts the current
        self.main_of_ct = np.array([settings.main_of_ct(k) for k in range(1, N_CTS + 1)])
        self.used = np.concatenate([w.used for w in wirings])  # (24,)
        self.aron = np.array([m.wiring is Wiring.W3P3W_2CT for m in settings.meters])
        nominal = np.array([settings.mains[m].nominal_voltage_v for m in self.main_of_ct])
        self.nominal_el_v = nominal * np.concatenate([w.nominal_factor for w in wirings])
        self.unused_flags = np.where(self.used, 0, int(Flag.UNUSED)).astype(np.int64)

    def levels(self, t: float) -> np.ndarray:
        return np.array([ld.level(t) for ld in self.scenario.loads])

    def currents(self, load_levels: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """(n, 24, H) primary current phasors of members with these load levels."""
        i = (load_levels @ self.lc_flat).reshape(len(load_levels), N_CTS, len(self.orders))
        return i * gain[:, :, None]

    def second(self, k: int, gain: np.ndarray, rated_a: np.ndarray,
               faulted: Mapping[int, tuple[Scenario, tuple[Fault, ...]]] | None = None
               ) -> Second:
        """Second ``k`` (its middle is scenario time k + 0.5) of every member; ``gain`` and
        ``rated_a``: (n, 24) live CT ratio over the installed one, rated current;
        ``faulted``: row -> (the member's scenario, its faults active at k + 0.5)."""
        t = k + 0.5
        volts, _, _ = self.scenario.phasors(self.settings, t, ())  # (mains, 3, H); sags at t
        load_levels = self.scales * self.levels(t)[None, :]
        i = self.currents(load_levels, gain)
        freq = np.array([self.scenario.frequency(m, t, ()) for m in range(self.settings.n_mains)])
        sec = self._second(k, volts, i, self.h1, rated_a, freq, load_levels, gain)
        if not faulted:
            return sec
        overrides = {}
        for row, (scenario, faults) in faulted.items():
            one = self._faulted(k, scenario, faults, gain[row], rated_a[row])
            sec.ct_energy[row], sec.meter_energy[row] = one.ct_energy[0], one.meter_energy[0]
            overrides[row] = one
        return replace(sec, overrides=overrides)

    def _faulted(self, k: int, scenario: Scenario, faults: tuple[Fault, ...], gain: np.ndarray,
                 rated_a: np.ndarray) -> Second:
        """One member's second with its active faults (as ``Scenario.expected`` states it),
        every array with the member first."""
        t, n_mains = k + 0.5, self.settings.n_mains
        volts, currents, orders = scenario.phasors(self.settings, t, faults)
        freq = np.array([scenario.frequency(m, t, faults) for m in range(n_mains)])
        exact = None
        if any(f.kind in SAMPLE_KINDS for f in faults):  # clipped or offset waveforms
            exact = scenario.expected(self.settings, t, faults)
        sec = self._second(k, volts, currents[None] * gain[None, :, None], orders.index(1),
                           rated_a[None], freq, exact=exact)
        ct = {key: np.broadcast_to(x, (1, N_CTS)).copy() for key, x in sec.ct.items()}
        meter = {key: np.broadcast_to(x, (1, N_METERS)).copy() for key, x in sec.meter.items()}
        main = {key: x[None] for key, x in sec.main.items()}
        return Second(k, ct, meter, main, sec.ct_energy, sec.meter_energy,
                      ct_flags=self.unused_flags[None], meter_flags=np.zeros((1, N_METERS),
                                                                             dtype=np.int64))

    def _second(self, k: int, volts: np.ndarray, i: np.ndarray, h1: int, rated_a: np.ndarray,
                freq_main: np.ndarray, load_levels: np.ndarray | None = None,
                gain: np.ndarray | None = None, exact: list[dict] | None = None) -> Second:
        """Every value of members with these phasors: volts (mains, 3, H) shared, currents
        (n, 24, H); ``exact``: per-CT rows that replace V, I, P and Q (sample faults)."""
        v_el = np.einsum("cp,cph->ch", self.coeff, volts[self.main_of_ct])  # (24, H)
        v_rms = np.sqrt((np.abs(v_el) ** 2).sum(axis=1))
        i2 = i.real ** 2 + i.imag ** 2
        i_rms = np.sqrt(i2.sum(axis=2))
        p = np.einsum("nch,ch->nc", i.real, v_el.real) + np.einsum("nch,ch->nc", i.imag,
                                                                    v_el.imag)
        q = v_el[:, h1].imag * i[:, :, h1].real - v_el[:, h1].real * i[:, :, h1].imag
        if exact is not None:
            v_rms = np.array([r["v_rms"] for r in exact])
            i_rms = np.array([[r["i_rms"] for r in exact]])
            p = np.array([[r["p_w"] for r in exact]])
            q = np.array([[r["q_var"] for r in exact]])
        creep = i_rms < START_FRACTION * rated_a
        s = np.where(creep, 0.0, v_rms[None] * i_rms)
        p[creep] = 0.0
        q[creep] = 0.0
        fund = i2[:, :, h1]
        on = np.sqrt(fund) >= STARTING_FRACTION * rated_a
        with np.errstate(invalid="ignore", divide="ignore"):
            thd_i = np.where(on, 100 * np.sqrt(np.maximum(i2.sum(axis=2) - fund, 0)
                                               / np.where(on, fund, 1)), 0.0)
        freq_ct = freq_main[self.main_of_ct]
        ct = {"v_rms": v_rms, "i_rms": i_rms, "p_w": p, "q_var": q, "s_va": s,
              "pf": ratio(p, s), "thd_v_pct": self._thd_v(v_el, h1), "thd_i_pct": thd_i,
              "frequency_hz": freq_ct}
        meter = self._meters(ct, i, volts)
        meter["frequency_hz"] = freq_ct[::3]
        main = self._mains(volts, freq_main, h1)
        return Second(k, ct, meter, main, energy(p, q, s, 1.0), energy(
            meter["p_w"], meter["q_var"], meter["s_va"], 1.0), load_levels, gain)

    def _thd_v(self, v_el: np.ndarray, h1: int) -> np.ndarray:
        """THD_F of each element's voltage; 0 where it is under 10 % of its nominal value."""
        power = np.abs(v_el) ** 2
        fund = power[:, h1]
        on = self.used & (np.sqrt(fund) >= 0.1 * self.nominal_el_v)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(on, 100 * np.sqrt(np.maximum(power.sum(axis=1) - fund, 0)
                                              / np.where(on, fund, 1)), 0.0)

    def _meters(self, ct: dict[str, np.ndarray], i: np.ndarray, volts: np.ndarray
                ) -> dict[str, np.ndarray]:
        used = self.used.reshape(N_METERS, 3)
        n_used = used.sum(axis=1)

        def total(x: np.ndarray) -> np.ndarray:
            return np.where(used[None], x.reshape(-1, N_METERS, 3), 0.0).sum(axis=2)

        p, q, arith = total(ct["p_w"]), total(ct["q_var"]), total(ct["s_va"])
        s = arith.copy()
        for m in np.flatnonzero(self.aron):  # IEEE 1459 Se with Ib = -(Ia + Ic)
            main = self.settings.main_of_meter(m + 1)
            v = volts[main]
            ll = sum((np.abs(v[a] - v[b]) ** 2).sum() for a, b in ((0, 1), (1, 2), (2, 0)))
            ia, ic = i[:, 3 * m], i[:, 3 * m + 2]
            isq = (np.abs(ia) ** 2 + np.abs(ia + ic) ** 2 + np.abs(ic) ** 2).sum(axis=1)
            both_off = (ct["s_va"][:, 3 * m] + ct["s_va"][:, 3 * m + 2]) == 0
            s[:, m] = np.where(both_off, 0.0, np.sqrt(ll * isq / 3))
        v_m = np.where(used, ct["v_rms"].reshape(N_METERS, 3), 0.0).sum(axis=1) / n_used
        i_m = total(ct["i_rms"]) / n_used
        return {"v_rms": v_m, "i_rms": i_m, "p_w": p, "q_var": q, "s_va": s,
                "s_arith_va": arith, "s_vector_va": np.hypot(p, q), "pf": ratio(p, s)}

    def _mains(self, volts: np.ndarray, freq: np.ndarray, h1: int) -> dict[str, np.ndarray]:
        n = self.settings.n_mains
        power = np.abs(volts) ** 2  # (mains, 3, H)
        v_ln = np.sqrt(power.sum(axis=2))
        v_ll = np.stack([np.sqrt((np.abs(volts[:, a] - volts[:, b]) ** 2).sum(axis=1))
                         for a, b in ((0, 1), (1, 2), (2, 0))], axis=1)
        fund = power[:, :, h1]
        with np.errstate(invalid="ignore", divide="ignore"):
            thd = np.where(fund > 0, 100 * np.sqrt(np.maximum(power.sum(axis=2) - fund, 0)
                                                   / np.where(fund > 0, fund, 1)), 0.0)
        return {"frequency_hz": freq[:n], "v_ln": v_ln, "v_ll": v_ll, "thd_v_pct": thd,
                "flags": np.zeros(n, dtype=np.int64)}

    def harmonics(self, sec: Second, member: int) -> tuple[np.ndarray, np.ndarray]:
        """(24, 51) rms of each order of every CT's voltage and of member's currents."""
        volts, _, _ = self.scenario.phasors(self.settings, sec.k + 0.5, ())
        v_el = np.einsum("cp,cph->ch", self.coeff, volts[self.main_of_ct])
        i = self.currents(sec.load_levels[member : member + 1], sec.gain[member : member + 1])[0]
        vh, ih = np.zeros((N_CTS, 51)), np.zeros((N_CTS, 51))
        vh[:, self.orders], ih[:, self.orders] = np.abs(v_el), np.abs(i)
        return vh, ih


def rated_currents(settings: Settings) -> np.ndarray:
    """(24,) rated primary current of each CT."""
    return np.repeat([m.ct_ratio * CT_SECONDARY_RATED_A for m in settings.meters], 3)
