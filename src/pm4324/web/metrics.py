"""``/metrics``: one or many meters' last second in the Prometheus text format 0.0.4.

Naming follows prometheus.io/docs/practices/naming: one ``pm4324_`` prefix, base units
(volts, amperes, ratio for percentages and PF, hertz, joules for Wh x 3600), ``_total`` on
the energy counters; power has no base unit and is exported in watts (var, volt-amperes)
as every energy exporter does. Labels: ``meter`` (which PM-4324: "local" for `run`, the
hub's name for each of its meters), ``submeter`` (the Meter 1..8 inside it), ``ct``,
``main``, ``phase``, and ``name`` (the circuit's name from the settings).
Hand-written rather than prometheus_client's registry: the values already exist once per
second, and a hub of 200 meters renders in one pass without 60,000 metric objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

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


def _fmt(x: float) -> str:
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(*parts: str) -> str:
    return "{" + ",".join(p for p in parts if p) + "}"


class _Out:
    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, labels: str, value: float) -> None:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = (kind, help_text, [])
        family[2].append(f"{name}{labels} {_fmt(value)}")

    def text(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text, samples) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def render(meters: Iterable[tuple[str, Snapshot | None]], version: str = "") -> str:
    """The text for every (meter name, its last snapshot); meters without a second yet only
    report ``pm4324_up 0``."""
    out = _Out()
    out.add("pm4324_build_info", "gauge", "pm4324 version", _labels(f'version="{_esc(version)}"'), 1)
    for name, snap in meters:
        meter = f'meter="{_esc(name)}"'
        out.add("pm4324_up", "gauge", "1 when the meter has a measured second",
                _labels(meter), 0 if snap is None else 1)
        if snap is not None:
            _meter(out, meter, snap)
    return out.text()


def _meter(out: _Out, meter: str, snap: Snapshot) -> None:
    s = snap.settings
    lab = _labels(meter)
    out.add("pm4324_info", "gauge", "The meter's model", _labels(meter, f'model="{s.model}"'), 1)
    out.add("pm4324_last_second_timestamp_seconds", "gauge", "Unix time of the end of the last second",
            lab, snap.time)
    out.add("pm4324_status_word", "gauge", "Meter status word (input register 0x1005)", lab, snap.status)
    for k, closed in enumerate(snap.relays, 1):
        out.add("pm4324_relay_closed", "gauge", "1 when the relay is closed",
                _labels(meter, f'relay="{k}"'), int(closed))
    for k, (active, unacked) in enumerate(zip(snap.alarms.active, snap.alarms.unacked), 1):
        if k <= len(s.alarms) and s.alarms[k - 1].enabled:
            al = _labels(meter, f'alarm="{k}"')
            out.add("pm4324_alarm_active", "gauge", "1 when the alarm's output is on", al, int(active))
            out.add("pm4324_alarm_unacknowledged", "gauge", "1 when latched and not acknowledged",
                    al, int(unacked))
    for m in range(s.n_mains):
        mv, ml = snap.main, f'main="{m + 1}"'
        out.add("pm4324_main_frequency_hertz", "gauge", "Frequency of the main", _labels(meter, ml),
                mv.frequency_hz[m])
        for k, p in enumerate(PHASES):
            pl = _labels(meter, ml, f'phase="{p}"')
            out.add("pm4324_main_voltage_volts", "gauge", "Line-to-neutral RMS voltage", pl, mv.v_ln[m][k])
            out.add("pm4324_main_voltage_thd_ratio", "gauge", "Voltage THD", pl, mv.thd_v_pct[m][k] * 0.01)
        for k, p in enumerate(("ab", "bc", "ca")):
            out.add("pm4324_main_line_voltage_volts", "gauge", "Line-to-line RMS voltage",
                    _labels(meter, ml, f'phase="{p}"'), mv.v_ll[m][k])
    for i in range(24):
        ct = i + 1
        lab = _labels(meter, f'submeter="{i // 3 + 1}"', f'ct="{ct}"', f'phase="{PHASES[i % 3]}"',
                      f'main="{s.main_of_ct(ct) + 1}"', f'name="{_esc(ct_name(snap, ct))}"')
        _group(out, "ct", lab, snap.ct, snap.ct_energy, i, _POWER + _CT_ONLY)
        out.add("pm4324_ct_flags", "gauge", "Quality flag bits (docs/json.md)", lab, snap.ct.flags[i])
    for i in range(8):
        lab = _labels(meter, f'submeter="{i + 1}"', f'main="{s.main_of_meter(i + 1) + 1}"',
                      f'name="{_esc(meter_name(snap, i + 1))}"')
        _group(out, "submeter", lab, snap.meter, snap.meter_energy, i, _POWER)


def _group(out: _Out, level: str, lab: str, values, energies, i: int, gauges) -> None:
    for suffix, field, scale, help_text in gauges:
        out.add(f"pm4324_{level}_{suffix}", "gauge", help_text, lab, getattr(values, field)[i] * scale)
    for suffix, kinds, help_text in _ENERGY:
        for field, extra in kinds:
            out.add(f"pm4324_{level}_{suffix}", "counter", help_text,
                    lab[:-1] + ("," + extra if extra else "") + "}", getattr(energies, field)[i] * WH)
