"""Invoices and the building summary as JSON and CSV.

JSON keeps money and quantities as decimal strings (never binary floats) and every reading
as meter key, element, register, value (kWh) and local time, so a disputed line can be traced
back to the meter. CSV has one row per invoice line with the same references.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from pm4324.billing.bill import BillingRun, Summary
from pm4324.billing.invoice import Invoice
from pm4324.billing.usage_of import CircuitUse, Reading


def _s(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def local_time(t: float, tz) -> str:
    return datetime.fromtimestamp(t, tz).isoformat(timespec="minutes")


def unit_of(r: Reading) -> str:
    return "kvarh" if "kvarh" in r.register else "kWh"


def reading_dict(r: Reading, tz) -> dict[str, Any]:
    return {"meter": r.meter, "element": r.element, "label": r.label, "register": r.register,
            "value": f"{r.value_wh / 1000:.3f}", "unit": unit_of(r), "time": local_time(r.time, tz)}


def use_dict(u: CircuitUse, tz) -> dict[str, Any]:
    return {"circuit": u.circuit.ref, "share": str(u.circuit.share),
            "start": reading_dict(u.start, tz) if u.start else None,
            "end": reading_dict(u.end, tz) if u.end else None,
            "kwh": f"{u.energy_wh / 1000:.3f}", "resets": u.resets, "gaps": u.gaps}


def invoice_dict(inv: Invoice, tz) -> dict[str, Any]:
    t = inv.tariff
    return {
        "tenant": {"id": inv.tenant.id, "name": inv.tenant.name, "address": inv.tenant.address},
        "period": inv.period, "start": local_time(inv.start, tz), "end": local_time(inv.end, tz),
        "hours": inv.hours, "occupied": [local_time(inv.occupied_from, tz), local_time(inv.occupied_to, tz)],
        "tariff": {"name": t.name, "currency": t.currency, "rounding": f"{t.rounding} to {t.quantum}",
                   "energy": t.energy_kind},
        "own_kwh": str(inv.own_kwh), "common_kwh": str(inv.common_kwh),
        "lines": [{"kind": x.kind, "text": x.text, "quantity": _s(x.quantity), "unit": x.unit,
                   "price": _s(x.price), "amount": str(x.amount), "basis": x.basis,
                   "readings": [reading_dict(r, tz) for r in x.readings]} for x in inv.lines],
        "subtotal": str(inv.subtotal), "total": str(inv.total), "currency": t.currency,
        "circuits": [use_dict(u, tz) for u in inv.circuits],
        "notes": inv.notes,
    }


def summary_dict(s: Summary, tz) -> dict[str, Any]:
    return {"period": s.period, "hours": s.hours,
            "rows": [{"kind": k, "name": n, "kwh": str(v)} for k, n, v in s.rows],
            "assigned_kwh": str(s.assigned_kwh), "main_kwh": _s(s.main_kwh),
            "difference_kwh": _s(s.difference_kwh),
            "difference_pct": (f"{s.difference_kwh / s.main_kwh * 100:.2f}"
                               if s.main_kwh and s.difference_kwh is not None else None),
            "main": [use_dict(u, tz) for u in s.main]}


def invoice_json(inv: Invoice, tz) -> str:
    return json.dumps(invoice_dict(inv, tz), indent=2, ensure_ascii=False) + "\n"


def invoice_csv(inv: Invoice, tz) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["tenant", "period", "kind", "text", "quantity", "unit", "price", "amount", "currency",
                "readings", "basis"])
    for x in inv.lines:
        refs = "; ".join(f"{r.meter} {r.element} {r.register} = {r.value_wh / 1000:.3f} {unit_of(r)} at "
                         f"{local_time(r.time, tz)}" for r in x.readings)
        w.writerow([inv.tenant.id, inv.period, x.kind, x.text, _s(x.quantity), x.unit, _s(x.price),
                    str(x.amount), inv.tariff.currency, refs, x.basis])
    w.writerow([inv.tenant.id, inv.period, "total", "Total", "", "", "", str(inv.total),
                inv.tariff.currency, "", ""])
    return buf.getvalue()


def summary_csv(s: Summary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["period", "kind", "name", "kwh"])
    for k, n, v in s.rows:
        w.writerow([s.period, k, n, str(v)])
    w.writerow([s.period, "assigned", "Σ tenants + vacant + common areas", str(s.assigned_kwh)])
    if s.main_kwh is not None:
        w.writerow([s.period, "main", "main Meter(s)", str(s.main_kwh)])
        w.writerow([s.period, "difference", "main − Σ", str(s.difference_kwh)])
    return buf.getvalue()


def run_json(run: BillingRun) -> str:
    tz = run.building.tz
    return json.dumps({"building": run.building.name, "time_zone": run.building.time_zone,
                       "summary": summary_dict(run.summary, tz),
                       "invoices": [{"tenant": i.tenant.id, "total": str(i.total),
                                     "currency": i.tariff.currency} for i in run.invoices]},
                      indent=2, ensure_ascii=False) + "\n"
