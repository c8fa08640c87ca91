"""The ``[pq]`` table: power-quality thresholds (IEC 61000-4-30 events, EN 50160 report).

Kept apart from settings.py: none of it changes the meter's per-second readings. Voltages
are in percent of the declared supply voltage Udin (default: the main's nominal voltage,
line-to-neutral, or line-to-line where the main's Meters are all 3-wire).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings_parse.py imports this module; the reader is only a parameter here
    from pm4324.config.settings_parse import _Reader

EVENT_VOLTAGES = ("auto", "ln", "ll")


@dataclass(frozen=True)
class PqSettings:
    enabled: bool = True
    declared_voltage_v: float = 0.0  # Udin, primary; 0 = the main's nominal (x sqrt 3 for L-L)
    event_voltage: str = "auto"  # "ln", "ll" or "auto" (L-L when every Meter is 3-wire)
    dip_pct: float = 90.0
    swell_pct: float = 110.0
    interruption_pct: float = 10.0
    hysteresis_pct: float = 2.0
    rvc_pct: float = 5.0  # rapid voltage change threshold (steady-state deviation)
    rvc_hysteresis_pct: float = 2.5
    load_current_a: float = 0.0  # TDD's I_L per CT (primary A); 0 = the CT's rated current


def read_pq(r: _Reader) -> PqSettings:
    d = PqSettings()
    p = PqSettings(
        enabled=r.flag("enabled", d.enabled),
        declared_voltage_v=r.number("declared_voltage_v", d.declared_voltage_v, 0, 1e6),
        event_voltage=r.text("event_voltage", d.event_voltage),
        dip_pct=r.number("dip_pct", d.dip_pct, 1, 99),
        swell_pct=r.number("swell_pct", d.swell_pct, 101, 200),
        interruption_pct=r.number("interruption_pct", d.interruption_pct, 0.1, 50),
        hysteresis_pct=r.number("hysteresis_pct", d.hysteresis_pct, 0, 10),
        rvc_pct=r.number("rvc_pct", d.rvc_pct, 0.5, 20),
        rvc_hysteresis_pct=r.number("rvc_hysteresis_pct", d.rvc_hysteresis_pct, 0, 10),
        load_current_a=r.number("load_current_a", d.load_current_a, 0, 1e6),
    )
    if p.event_voltage not in EVENT_VOLTAGES:
        raise r.error("event_voltage", p.event_voltage, 'must be "auto", "ln" or "ll"')
    if p.interruption_pct + p.hysteresis_pct >= p.dip_pct:
        raise r.error("interruption_pct", p.interruption_pct,
                      "plus hysteresis_pct must stay below dip_pct")
    if p.rvc_hysteresis_pct >= p.rvc_pct:
        raise r.error("rvc_hysteresis_pct", p.rvc_hysteresis_pct, "must be below rvc_pct")
    r.finish()
    return p
