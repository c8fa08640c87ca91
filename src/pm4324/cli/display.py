"""The human-readable table shared by `run`, `analyze` and `read`.

It takes the JSON form of a snapshot (``Snapshot.to_dict()``, or what `pm4324 read` decodes
from registers), so every command shows the same thing whatever the meter it talks to.
Missing values (None) print as "-".
"""

from __future__ import annotations

import math
import time
from typing import Any

HEADER = (f"{'Meter':<6}{'wiring':<10}{'CT':>3} {'V':>8} {'I A':>8} {'P kW':>9} {'Q kvar':>9}"
          f" {'S kVA':>9} {'PF':>7} {'THDv%':>6} {'THDi%':>6} {'kWh imp':>11} {'kWh exp':>11}"
          "  flags")


def _f(x: Any, width: int, digits: int, scale: float = 1.0) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{_unsigned_zero(x / scale, digits):>{width}.{digits}f}"


def _unsigned_zero(x: float, digits: int) -> float:
    """x, or 0.0 where it rounds to zero: the table never shows "-0.000"."""
    return 0.0 if round(x, digits) == 0 else x


def _pf(pf: Any, lead_lag: str | None) -> str:
    if pf is None:
        return f"{'-':>7}"
    mark = {"lag": "L", "lead": "C"}.get(lead_lag or "", " ")
    return f"{_unsigned_zero(pf, 3):>6.3f}{mark}"


def digits_for(resolution_kwh: float | None) -> int:
    """Decimals that show the resolution a meter gives (0.01 kWh -> 2), at most 4."""
    if not resolution_kwh:
        return 4
    return max(0, min(4, math.ceil(-math.log10(resolution_kwh) - 1e-9)))


def _row(label: str, wiring: str, ct: str, d: dict[str, Any], kwh: int = 4) -> str:
    flags = ",".join(d.get("flags") or [])
    return (f"{label:<6}{wiring:<10}{ct:>3} {_f(d.get('v_rms'), 8, 1)} {_f(d.get('i_rms'), 8, 2)}"
            f" {_f(d.get('p_w'), 9, 3, 1e3)} {_f(d.get('q_var'), 9, 3, 1e3)}"
            f" {_f(d.get('s_va'), 9, 3, 1e3)} {_pf(d.get('pf'), d.get('lead_lag'))}"
            f" {_f(d.get('thd_v_pct'), 6, 1)} {_f(d.get('thd_i_pct'), 6, 1)}"
            f" {_f(d.get('kwh_import'), 11, kwh)} {_f(d.get('kwh_export'), 11, kwh)}  {flags}")


def render_table(d: dict[str, Any], energy_digits: int = 4) -> str:
    """One screen: mains, then each Meter's CTs and total; energies with ``energy_digits``
    decimals (what the meter resolves, for `read`)."""
    stamp = d.get("time")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"
    relays = d.get("relays") or []
    modes = d.get("relay_modes") or []
    relay_txt = "  ".join(
        f"R{k + 1} {'-' if r is None else 'CLOSED' if r else 'open'}"
        + (f" ({modes[k]})" if k < len(modes) else "") for k, r in enumerate(relays))
    status = "  status " + ",".join(d["status"]) if d.get("status") else ""
    lines = [f"{d.get('model') or '-'}  second {d.get('seq', '-')}  {when}  {relay_txt}{status}"]
    for a in d.get("alarms") or []:
        state = ("ACTIVE" if a["active"] else "ok") + (", unacknowledged" if a["unacked"] else "")
        value = "" if a.get("value") is None else f"  (value {a['value']:g})"
        lines.append(f"alarm {a['alarm']} -> R{a['relay']}: {a['rule']}: {state}{value}")
    for m in d.get("mains", []):
        v = "/".join(_f(x, 1, 1).strip() for x in m.get("v_ln") or [])
        vll = "/".join(_f(x, 1, 1).strip() for x in m.get("v_ll") or [])
        thd = "/".join(_f(x, 1, 1).strip() for x in m.get("thd_v_pct") or [])
        flags = ",".join(m.get("flags") or [])
        lines.append(f"main {m['main']}: {_f(m.get('frequency_hz'), 1, 3).strip()} Hz"
                     f"  V L-N {v}  V L-L {vll}  THD-V % {thd}  {flags}")
    lines.append(HEADER)
    cts = {c["ct"]: c for c in d.get("cts", [])}
    for meter in d.get("meters", []):
        m = meter["meter"]
        wiring = meter.get("wiring") or "-"
        for k in (1, 2, 3):
            ct = 3 * (m - 1) + k
            if ct in cts:
                lines.append(_row(str(m) if k == 1 else "", wiring if k == 1 else "", str(ct),
                                  cts[ct], energy_digits))
        lines.append(_row("", "  total", "", meter, energy_digits))
    return "\n".join(lines)
