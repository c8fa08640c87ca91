"""An EN 50160-style weekly report of one main, from the history's power-quality records.

For each characteristic: the share of the week's 10-minute values (10-s for frequency,
2-hour for Plt) within the EN 50160 low-voltage limit, against the share the standard asks
for; values flagged for a dip, swell or interruption are left out, as IEC 61000-4-30 §4.7
intends. Limits (host-side-notes.md §5): frequency +-1 % for 99.5 %; supply voltage within
Un +-10 % for 95 % and within +10 / -15 % for 100 %; u2 <= 2 % and THD <= 8 % and each
harmonic within its table value for 95 %; Plt <= 1 for 95 %. Then the voltage events.
Pure: it takes the rows of ``history.pq.read``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# EN 50160 individual harmonic voltages, % of the fundamental (orders 2..25)
HARMONIC_LIMITS = {2: 2.0, 3: 5.0, 4: 1.0, 5: 6.0, 6: 0.5, 7: 5.0, 8: 0.5, 9: 1.5, 10: 0.5,
                   11: 3.5, 12: 0.5, 13: 3.0, 14: 0.5, 15: 0.5, 16: 0.5, 17: 2.0, 18: 0.5,
                   19: 1.5, 20: 0.5, 21: 0.5, 22: 0.5, 23: 1.5, 24: 0.5, 25: 1.5}


def _share(ok: int, total: int) -> float | None:
    return None if total == 0 else 100.0 * ok / total


def _line(name: str, limit: str, required: float, ok: int, total: int) -> dict[str, Any]:
    share = _share(ok, total)
    return {"characteristic": name, "limit": limit, "required_pct": required,
            "within_pct": share, "values": total,
            "verdict": "no data" if share is None else "pass" if share >= required else "fail"}


def weekly(rows: list[tuple[float, int, str, dict[str, Any]]], main: int, udin: float,
           nominal_hz: float, t0: float, t1: float) -> dict[str, Any]:
    """The report of ``main`` (1-based) for t0 <= t < t1 from ``history.pq.read`` rows."""
    ten = [d for _, m, k, d in rows if m == main and k == "10 min"]
    good = [d for d in ten if not d["flagged"]]
    volts = [v for d in good for v in d["v_rms"]]
    lines = []
    freq = [d for _, m, k, d in rows if m == main and k == "frequency"]
    lines.append(_line("power frequency (10-s means)", f"{nominal_hz:g} Hz +-1 %", 99.5,
                       sum(d["within_1pct"] for d in freq), sum(d["values"] for d in freq)))
    lines.append(_line("supply voltage (10-min means, each phase)", f"{udin:g} V +-10 %", 95.0,
                       sum(abs(v - udin) <= 0.1 * udin for v in volts), len(volts)))
    lines.append(_line("supply voltage (10-min means, each phase)", f"{udin:g} V +10 / -15 %",
                       100.0, sum(0.85 * udin <= v <= 1.1 * udin for v in volts), len(volts)))
    lines.append(_line("unbalance u2 (10-min)", "<= 2 %", 95.0,
                       sum(d["u2_pct"] <= 2.0 for d in good), len(good)))
    harm = [d for _, m, k, d in rows if m == main and k == "harmonics" and not d["flagged"]]
    thd = [x for d in harm for x in d["thd_v_pct"]]
    lines.append(_line("THD (10-min, orders 2-40, each phase)", "<= 8 %", 95.0,
                       sum(x <= 8.0 for x in thd), len(thd)))
    worst = _worst_harmonic(harm)
    lines.append(_line("harmonics 2-25 (10-min, each phase)", "EN 50160 table", 95.0, *worst))
    plts = [x for _, m, k, d in rows if m == main and k == "2 h" and not d["flagged"]
            for x in (d.get("pst") or ())]
    lines.append(_line("flicker Plt (2-h)", "<= 1", 95.0, sum(x <= 1.0 for x in plts), len(plts)))
    events = [d for _, m, k, d in rows if m == main and k == "event"]
    counts = {kind: sum(e["kind"] == kind for e in events)
              for kind in ("dip", "swell", "interruption", "rvc")}
    return {"main": main, "from": t0, "to": t1, "udin_v": udin, "ten_minute_values": len(ten),
            "flagged_values": len(ten) - len(good), "lines": lines, "event_counts": counts,
            "events": events}


def _worst_harmonic(harm: list[dict[str, Any]]) -> tuple[int, int]:
    """(within, total) of the order with the lowest share within its limit."""
    best: tuple[int, int] = (0, 0)
    worst_share = 101.0
    for h, limit in HARMONIC_LIMITS.items():
        values = [phase[h - 2] for d in harm for phase in d["v_harmonics_pct"]]
        if not values:
            continue
        ok = sum(v <= limit for v in values)
        if 100.0 * ok / len(values) < worst_share:
            worst_share, best = 100.0 * ok / len(values), (ok, len(values))
    return best


def render(report: dict[str, Any]) -> str:
    """The report as text."""
    def when(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    out = [f"EN 50160-style report, main {report['main']}: {when(report['from'])} to "
           f"{when(report['to'])}",
           f"Udin {report['udin_v']:g} V; {report['ten_minute_values']} 10-minute values, "
           f"{report['flagged_values']} flagged (left out)", "",
           f"{'characteristic':44} {'limit':22} {'needed':>7} {'within':>8}  verdict"]
    for ln in report["lines"]:
        share = "-" if ln["within_pct"] is None else f"{ln['within_pct']:.2f} %"
        out.append(f"{ln['characteristic']:44} {ln['limit']:22} {ln['required_pct']:6.1f}% "
                   f"{share:>8}  {ln['verdict']}")
    counts = report["event_counts"]
    out += ["", "Events: " + ", ".join(f"{n} {k}{'s' if n != 1 else ''}"
                                       for k, n in counts.items())]
    for e in report["events"]:
        what = {"swell": "max", "rvc": "max change"}.get(e["kind"], "residual")
        out.append(f"  {when(e['start_s'])}  {e['kind']:12} phases {e['channels']:8} "
                   f"{e['duration_s']:9.3f} s  {what} {e['extreme_v']:.1f} V "
                   f"({e['extreme_pct']:.1f} %)")
    return "\n".join(out)
