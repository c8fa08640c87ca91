"""A Grafana dashboard over the meter's Prometheus metrics (``/metrics``, docs/web.md).

One row per concern (mains, Meters, CTs, energy, status), every panel a PromQL query on the
``pm4324_`` families, with a ``meter`` variable so one dashboard serves ``run`` (meter
"local") and every meter of a hub. Circuit names come through the ``name`` label.
"""

from __future__ import annotations

import json
from typing import Any

# The metric families the panels use; tests check each against a real /metrics page.
METRICS = (
    "pm4324_up", "pm4324_status_word", "pm4324_main_voltage_volts", "pm4324_main_frequency_hertz",
    "pm4324_submeter_active_power_watts", "pm4324_submeter_power_factor_ratio",
    "pm4324_submeter_active_energy_joules_total", "pm4324_ct_active_power_watts",
    "pm4324_ct_current_amperes", "pm4324_ct_active_energy_joules_total",
    "pm4324_relay_closed",
)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(pid: int, title: str, kind: str, exprs: list[tuple[str, str]], unit: str,
           x: int, y: int, w: int = 12, h: int = 8) -> dict[str, Any]:
    return {"id": pid, "title": title, "type": kind, "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "datasource": DATASOURCE, "expr": expr,
                         "legendFormat": legend} for i, (expr, legend) in enumerate(exprs)]}


def dashboard(title: str = "PM-4324") -> dict[str, Any]:
    sel = 'meter=~"$meter"'
    panels = [
        _panel(1, "Meter up", "stat", [(f"pm4324_up{{{sel}}}", "{{meter}}")], "none", 0, 0, 6, 4),
        _panel(2, "Status word", "stat", [(f"pm4324_status_word{{{sel}}}", "{{meter}}")], "none",
               6, 0, 6, 4),
        _panel(3, "Relays", "stat", [(f"pm4324_relay_closed{{{sel}}}", "{{meter}} R{{relay}}")],
               "bool_on_off", 12, 0, 12, 4),
        _panel(4, "Phase voltages", "timeseries",
               [(f"pm4324_main_voltage_volts{{{sel}}}", "{{meter}} main {{main}} {{phase}}-N")],
               "volt", 0, 4),
        _panel(5, "Frequency", "timeseries",
               [(f"pm4324_main_frequency_hertz{{{sel}}}", "{{meter}} main {{main}}")], "hertz",
               12, 4),
        _panel(6, "Power per Meter", "timeseries",
               [(f"pm4324_submeter_active_power_watts{{{sel}}}",
                 "{{meter}} Meter {{submeter}} {{name}}")], "watt", 0, 12),
        _panel(7, "Power factor per Meter", "timeseries",
               [(f"pm4324_submeter_power_factor_ratio{{{sel}}}",
                 "{{meter}} Meter {{submeter}} {{name}}")], "none", 12, 12),
        _panel(8, "Energy per Meter today (import)", "bargauge",
               [(f'increase(pm4324_submeter_active_energy_joules_total{{{sel},direction="import"}}'
                 "[$__range]) / 3600000", "{{meter}} Meter {{submeter}} {{name}}")], "kwatth",
               0, 20),
        _panel(9, "Power per CT", "timeseries",
               [(f"pm4324_ct_active_power_watts{{{sel}}}", "{{meter}} CT {{ct}} {{name}}")],
               "watt", 12, 20),
        _panel(10, "Current per CT", "timeseries",
               [(f"pm4324_ct_current_amperes{{{sel}}}", "{{meter}} CT {{ct}} {{name}}")], "amp",
               0, 28),
        _panel(11, "Energy per CT in the range (import)", "bargauge",
               [(f'increase(pm4324_ct_active_energy_joules_total{{{sel},direction="import"}}'
                 "[$__range]) / 3600000", "{{meter}} CT {{ct}} {{name}}")], "kwatth", 12, 28),
    ]
    return {
        "title": title, "uid": "pm4324-meters", "schemaVersion": 39, "version": 1,
        "editable": True, "time": {"from": "now-6h", "to": "now"}, "refresh": "10s",
        "tags": ["pm4324", "energy"], "timezone": "browser",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus"},
            {"name": "meter", "type": "query", "datasource": DATASOURCE, "label": "Meter",
             "query": "label_values(pm4324_up, meter)", "refresh": 2, "multi": True,
             "includeAll": True, "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


def grafana(settings: Any, target: Any) -> str:
    """The dashboard JSON (import it in Grafana: Dashboards > New > Import)."""
    return json.dumps(dashboard(f"PM-4324 {target.name}"), indent=2) + "\n"
