"""One billing run: a local month, every tenant's invoice and the building's reconciliation.

The reconciliation sets Σ (tenants' own circuits while occupied + the same circuits while
vacant + common areas) against the building's main Meter(s): the difference (losses, circuits
nobody is billed for, a shared circuit's unassigned share) is shown, not spread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

from pm4324.billing.config import Building
from pm4324.billing.invoice import Invoice, common_shares, make_invoice, occupancy, qty
from pm4324.billing.usage import read_meters
from pm4324.billing.usage_of import CircuitUse, Grid
from pm4324.history import HistoryStore


class PeriodError(ValueError):
    pass


@dataclass
class Summary:
    period: str
    hours: float
    rows: list[tuple[str, str, Decimal]]  # (kind, name, kWh): tenant, vacant, common
    assigned_kwh: Decimal
    main_kwh: Decimal | None
    difference_kwh: Decimal | None
    main: list[CircuitUse]


@dataclass
class BillingRun:
    building: Building
    period: str
    invoices: list[Invoice]
    summary: Summary


def period_bounds(period: str, tz) -> tuple[float, float]:
    """``2026-11`` -> local midnight of the 1st of November .. of the 1st of December."""
    if not re.fullmatch(r"\d{4}-\d{2}", period or "") or not 1 <= int(period[5:]) <= 12:
        raise PeriodError(f"--period {period!r}: expected a month like 2026-11")
    y, m = int(period[:4]), int(period[5:])
    first = date(y, m, 1)
    after = date(y + m // 12, m % 12 + 1, 1)
    return (datetime.combine(first, time(0), tz).timestamp(),
            datetime.combine(after, time(0), tz).timestamp())


def run_billing(building: Building, store: HistoryStore, period: str, progress=None) -> BillingRun:
    tz = building.tz
    start, end = period_bounds(period, tz)
    circuits = [c for t in building.tenants for c in t.circuits]
    circuits += [c for a in building.common for c in a.circuits] + list(building.main)
    meters = read_meters(store, {c.meter_key for c in circuits}, start, end, progress)
    grid = Grid(start, end, meters, tz)
    common = common_shares(building, grid)
    invoices = []
    for n, tenant in enumerate(building.tenants):
        if occupancy(grid, tenant, tz).any():  # no invoice for a month before move-in / after move-out
            invoices.append(make_invoice(building, tenant, grid, period, common[tenant.id]))
        if progress:
            progress(n + 1, len(building.tenants), f"invoice {tenant.id}")
    return BillingRun(building, period, invoices, summarize(building, grid, period))


def summarize(building: Building, grid: Grid, period: str) -> Summary:
    rows: list[tuple[str, str, Decimal]] = []
    for t in building.tenants:
        occ = occupancy(grid, t, building.tz)
        own = grid.series(t.circuits)
        rows.append(("tenant", f"{t.id} {t.name}", qty(own[occ].sum() / 1000)))
        if not occ.all():
            rows.append(("vacant", f"{t.id} circuits while vacant", qty(own[~occ].sum() / 1000)))
    for a in building.common:
        rows.append(("common", a.name, qty(grid.series(a.circuits).sum() / 1000)))
    assigned = sum((r[2] for r in rows), Decimal(0))
    main_kwh = diff = None
    uses: list[CircuitUse] = []
    if building.main:
        main_kwh = qty(grid.series(building.main).sum() / 1000)
        diff = main_kwh - assigned
        uses = grid.uses(building.main, grid.t == grid.t)
    return Summary(period, len(grid.t) / 4, rows, assigned, main_kwh, diff, uses)
