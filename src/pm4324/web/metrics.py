"""``/metrics``: one or many meters' last second in the Prometheus text format 0.0.4.

Naming follows prometheus.io/docs/practices/naming: one ``pm4324_`` prefix, base units
(volts, amperes, ratio for percentages and PF, hertz, joules for Wh x 3600), ``_total`` on
the energy counters; power has no base unit and is exported in watts (var, volt-amperes)
as every energy exporter does. Labels: ``meter`` (which PM-4324: "local" for `run`, the
hub's name for each of its meters), ``submeter`` (the Meter 1..8 inside it), ``ct``,
``main``, ``phase``, and ``name`` (the circuit's name from the settings).
Hand-written rather than prometheus_client's registry: the values already exist once per
second, and a hub of 200 meters renders in one pass without 100,000 metric objects. The
label part of every line is built once per meter and settings (``_layout``), so a scrape
only formats numbers (docs/benchmarks.md: a hub of 200 meters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import add
from typing import Any

import numpy as np

from pm4324.config.settings import Settings
from pm4324.snapshot import Snapshot
from pm4324.web.views import PHASES, ct_name, meter_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WH = 3600.0  # joules per Wh (var s per varh, VA s per VAh)

# (metric suffix, snapshot field, scale to the base unit, help)
_POWER = (
    ("voltage_volts", "v_rms", 1.0, "RMS voltage"),
    ("current_amperes", "i_rms", 1.0, "RMS current"),
    ("active_power_watts", "p_w", 1.0, "Active power (+ import)"),
    ("reactive_power_vars", "q_var", 1.0, "Fundamental reactive power Q1 (+ inductive)"),
    ("apparent_power_voltamperes", "s_va", 1.0, "Apparent power"),
    ("power_factor_ratio", "pf", 1.0, "Power factor P/S, signed like P"),
    ("frequency_hertz", "frequency_hz", 1.0, "Frequency of the voltage"),
)
_CT_ONLY = (
    ("voltage_thd_ratio", "thd_v_pct", 0.01, "Voltage THD (orders 2..50 over the fundamental)"),
    ("current_thd_ratio", "thd_i_pct", 0.01, "Current THD (orders 2..50 over the fundamental)"),
)
# (metric suffix, energy fields with their label, help)
_ENERGY = (
    ("active_energy_joules_total", (("wh_import", 'direction="import"'),
                                    ("wh_export", 'direction="export"')), "Active energy"),
    ("reactive_energy_var_seconds_total", tuple((f"varh_q{q}", f'quadrant="{q}"') for q in range(1, 5)),
     "Reactive energy per quadrant (IEC 62053-23)"),
    ("apparent_energy_voltampere_seconds_total", (("vah", ""),), "Apparent energy"),
)


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Getter = Callable[[Snapshot], Any]  # the values of one family, in the order of its label sets


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text


_FAMILIES: dict[str, _Family] = {}


def _family(name: str, kind: str, help_text: str) -> _Family:
    if name not in _FAMILIES:
        _FAMILIES[name] = _Family(name, kind, help_text)
    return _FAMILIES[name]


class _Layout:
    """Per meter and settings: for each family, its lines' label parts and a value getter."""

    def __init__(self, name: str, s: Settings, snap: Snapshot):
        self.settings = s
        self.parts: list[tuple[_Family, list[str], Getter]] = []
        meter = f'meter="{_esc(name)}"'
        self._add("pm4324_info", "gauge", "The meter's model", [f'{meter},model="{s.model}"'],
                  lambda sn: [1])
        self._add("pm4324_last_second_timestamp_seconds", "gauge",
                  "Unix time of the end of the last second", [meter], lambda sn: [sn.time])
        self._add("pm4324_status_word", "gauge", "Meter status word (input register 0x1005)", [meter],
                  lambda sn: [sn.status])
        self._add("pm4324_relay_closed", "gauge", "1 when the relay is closed",
                  [f'{meter},relay="{k}"' for k in (1, 2)], lambda sn: [int(c) for c in sn.relays])
        slots = [k for k, rule in enumerate(s.alarms) if rule.enabled and k < len(snap.alarms.active)]
        labels = [f'{meter},alarm="{k + 1}"' for k in slots]
        self._add("pm4324_alarm_active", "gauge", "1 when the alarm's output is on", labels,
                  lambda sn: [int(sn.alarms.active[k]) for k in slots])
        self._add("pm4324_alarm_unacknowledged", "gauge", "1 when latched and not acknowledged", labels,
                  lambda sn: [int(sn.alarms.unacked[k]) for k in slots])
        mains = [f'{meter},main="{m + 1}"' for m in range(s.n_mains)]
        phased = [f'{ml},phase="{p}"' for ml in mains for p in PHASES]
        self._add("pm4324_main_frequency_hertz", "gauge", "Frequency of the main", mains,
                  lambda sn: sn.main.frequency_hz)
        self._add("pm4324_main_voltage_volts", "gauge", "Line-to-neutral RMS voltage", phased,
                  lambda sn: sn.main.v_ln.ravel())
        self._add("pm4324_main_voltage_thd_ratio", "gauge", "Voltage THD", phased,
                  lambda sn: sn.main.thd_v_pct.ravel() * 0.01)
        self._add("pm4324_main_line_voltage_volts", "gauge", "Line-to-line RMS voltage",
                  [f'{ml},phase="{p}"' for ml in mains for p in ("ab", "bc", "ca")],
                  lambda sn: sn.main.v_ll.ravel())
        cts = [f'{meter},submeter="{i // 3 + 1}",ct="{i + 1}",phase="{PHASES[i % 3]}",'
               f'main="{s.main_of_ct(i + 1) + 1}",name="{_esc(ct_name(snap, i + 1))}"' for i in range(24)]
        self._group("ct", cts, lambda sn: sn.ct, lambda sn: sn.ct_energy, _POWER + _CT_ONLY)
        self._add("pm4324_ct_flags", "gauge", "Quality flag bits (docs/json.md)", cts,
                  lambda sn: sn.ct.flags)
        subs = [f'{meter},submeter="{i + 1}",main="{s.main_of_meter(i + 1) + 1}",'
                f'name="{_esc(meter_name(snap, i + 1))}"' for i in range(8)]
        self._group("submeter", subs, lambda sn: sn.meter, lambda sn: sn.meter_energy, _POWER)

    def _add(self, name: str, kind: str, help_text: str, labels: list[str], get: Getter) -> None:
        self.parts.append((_family(name, kind, help_text), [f"{name}{{{lab}}} " for lab in labels], get))

    def _group(self, level: str, labels: list[str], values: Getter, energies: Getter, gauges) -> None:
        for suffix, field, scale, help_text in gauges:
            self._add(f"pm4324_{level}_{suffix}", "gauge", help_text, labels,
                      lambda sn, f=field, k=scale: getattr(values(sn), f) * k)
        for suffix, kinds, help_text in _ENERGY:
            fields = [field for field, _ in kinds]
            self._add(f"pm4324_{level}_{suffix}", "counter", help_text,
                      [f"{lab},{extra}" if extra else lab for _, extra in kinds for lab in labels],
                      lambda sn, fs=fields: np.concatenate([getattr(energies(sn), f) for f in fs]) * WH)


_layouts: dict[str, _Layout] = {}


def _layout(name: str, snap: Snapshot) -> _Layout:
    layout = _layouts.get(name)
    if layout is None or layout.settings is not snap.settings:
        if len(_layouts) > 10_000:  # names come from configuration; keep it bounded anyway
            _layouts.clear()
        layout = _layouts[name] = _Layout(name, snap.settings, snap)
    return layout


def render(meters: Iterable[tuple[str, Snapshot | None]], version: str = "") -> str:
    """The text for every (meter name, its last snapshot); meters without a second yet only
    report ``pm4324_up 0``."""
    meters = list(meters)
    out = ["# HELP pm4324_build_info pm4324 version", "# TYPE pm4324_build_info gauge",
           f'pm4324_build_info{{version="{_esc(version)}"}} 1',
           "# HELP pm4324_up 1 when the meter has a measured second", "# TYPE pm4324_up gauge"]
    out += [f'pm4324_up{{meter="{_esc(name)}"}} {0 if snap is None else 1}' for name, snap in meters]
    lines: dict[str, list[str]] = {}
    for name, snap in meters:
        if snap is None:
            continue
        for family, prefixes, get in _layout(name, snap).parts:
            values = np.asarray(get(snap), dtype=float)
            text = map(repr, values.tolist()) if np.isfinite(values).all() else map(_number, values)
            lines.setdefault(family.name, []).extend(map(add, prefixes, text))
    for name, samples in lines.items():
        family = _FAMILIES[name]
        out += [f"# HELP {name} {family.help}", f"# TYPE {name} {family.kind}", *samples]
    return "\n".join(out) + "\n"


def _number(x: float) -> str:
    """The format's spelling of NaN and the infinities (repr gives nan, inf)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x))
