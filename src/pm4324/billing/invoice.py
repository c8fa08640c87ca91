"""From a period's intervals to each tenant's invoice lines and the building's reconciliation.

Quantities are kWh (import), kW and kvarh rounded to 0.001 before they are priced; each
line's amount is rounded once with the tariff's rule; taxes apply to the rounded subtotal.
Common areas are apportioned per interval (so TOU prices apply to the common share too): by
floor area (a tenant's area over every tenant's area, while it occupies the premises; the
vacant premises' part is the owner's), by consumption (the tenant's own kWh over all
metered tenant kWh, vacancies included), or by fixed shares (while occupied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import numpy as np

from pm4324.billing.config import Building, CommonArea, Tenant
from pm4324.billing.tariff import Tariff
from pm4324.billing.usage_of import QI, CircuitUse, Grid, Reading

KWH = Decimal("0.001")


def qty(x: float) -> Decimal:
    return Decimal(f"{x:.3f}")


@dataclass
class Line:
    kind: str  # energy, common, demand, reactive, fixed, tax
    text: str
    quantity: Decimal | None
    unit: str
    price: Decimal | None
    amount: Decimal
    readings: list[Reading] = field(default_factory=list)
    basis: str = ""  # how the quantity follows from the readings


@dataclass
class Invoice:
    tenant: Tenant
    tariff: Tariff
    period: str
    start: float
    end: float
    occupied_from: float
    occupied_to: float
    hours: float
    lines: list[Line]
    subtotal: Decimal
    total: Decimal
    circuits: list[CircuitUse]
    notes: list[str]
    profile_kw: np.ndarray  # own + common kW per grid interval (NaN when not occupied)
    own_kwh: Decimal
    common_kwh: Decimal


def occupancy(grid: Grid, tenant: Tenant, tz) -> np.ndarray:
    lo = tenant.move_in.replace(tzinfo=tz).timestamp() if tenant.move_in else -math.inf
    hi = tenant.move_out.replace(tzinfo=tz).timestamp() if tenant.move_out else math.inf
    return (grid.t >= lo) & (grid.t < hi)


def common_shares(building: Building, grid: Grid) -> dict[str, list[tuple[CommonArea, np.ndarray]]]:
    """Tenant id -> [(common area, Wh per interval apportioned to it)]."""
    tz = building.tz
    occ = {t.id: occupancy(grid, t, tz) for t in building.tenants}
    own = {t.id: grid.series(t.circuits) for t in building.tenants}
    out: dict[str, list[tuple[CommonArea, np.ndarray]]] = {t.id: [] for t in building.tenants}
    for area in building.common:
        series = grid.series(area.circuits)
        for t in building.tenants:
            if area.split == "area":
                total = float(sum((x.area_m2 for x in building.tenants), Decimal(0)))
                w = float(t.area_m2) / total * occ[t.id]
            elif area.split == "fixed":
                w = float(area.shares.get(t.id, 0)) * occ[t.id]
            else:
                total = sum(float(s.sum()) for s in own.values())
                w = (float(own[t.id][occ[t.id]].sum()) / total if total else 0.0) * occ[t.id]
            out[t.id].append((area, series * w))
    return out


def make_invoice(building: Building, tenant: Tenant, grid: Grid, period: str,
                 common: list[tuple[CommonArea, np.ndarray]]) -> Invoice:
    tz = building.tz
    tariff = building.tariffs[tenant.tariff]
    occ = occupancy(grid, tenant, tz)
    own = grid.series(tenant.circuits) * occ
    uses = grid.uses(tenant.circuits, occ)
    readings = [r for u in uses for r in (u.start, u.end) if r]
    labels = grid.labels(tariff)
    lines: list[Line] = []
    own_wh = float(own.sum())
    common_wh = [(area.name, s * occ) for area, s in common]
    common_readings = {area.name: [r for u in grid.uses(area.circuits, occ) for r in (u.start, u.end) if r]
                       for area, _ in common}
    lines += _energy_lines(tariff, labels, own, common_wh, readings, common_readings, occ, len(grid.t))
    if tariff.demand_price is not None:
        lines.append(_demand_line(tariff, tenant, grid, own, labels, occ))
    if tariff.reactive_price is not None:
        lines.append(_reactive_line(tariff, grid, tenant, occ, own_wh))
    fraction = Decimal(int(occ.sum())) / Decimal(len(grid.t)) if len(grid.t) else Decimal(0)
    for name, amount in tariff.fixed:
        text = name if fraction == 1 else f"{name} ({fraction * 100:.1f} % of the period occupied)"
        lines.append(Line("fixed", text, None, "", amount, tariff.money(amount * fraction)))
    subtotal = sum((x.amount for x in lines), Decimal(0))
    for name, rate in tariff.taxes:
        lines.append(Line("tax", name, subtotal, tariff.currency, rate, tariff.money(subtotal * rate)))
    total = subtotal + sum((x.amount for x in lines if x.kind == "tax"), Decimal(0))
    notes = [f"{building.time_zone}: the period has {len(grid.t) / 4:g} hours"]
    season = tariff.season_of(datetime.fromtimestamp(grid.start, tz).month)
    if season:
        notes.append(f"time of use: {season} season")
    on = np.flatnonzero(occ)
    occ_from = float(grid.t[on[0]]) if len(on) else grid.start
    occ_to = float(grid.t[on[-1]] + 900) if len(on) else grid.start
    if len(on) < len(occ):
        notes.append(f"occupied {_local(occ_from, tz)} .. {_local(occ_to, tz)} (move-in/move-out); "
                     "fixed charges prorated by time, demand and energy from that time only")
    for u in uses:
        notes += [f"{u.circuit.ref}: {x}" for x in u.resets + u.gaps]
    covered = np.zeros(len(grid.t), dtype=bool)
    for c in tenant.circuits:
        covered[grid.rows[c.meter_key]] = True
    missing = int((occ & ~covered).sum())
    if missing:
        notes.append(f"{missing} of {int(occ.sum())} quarter hours have no readings (energy from the "
                     "counters across them)")
    profile = np.where(occ, (own + sum((s for _, s in common_wh), np.zeros(len(own)))) / 250.0, np.nan)
    return Invoice(tenant, tariff, period, grid.start, grid.end, occ_from, occ_to, len(grid.t) / 4,
                   lines, subtotal, total, uses, notes, profile, qty(own_wh / 1000),
                   qty(sum(float(s.sum()) for _, s in common_wh) / 1000))


def _energy_lines(tariff: Tariff, labels: np.ndarray, own: np.ndarray,
                  common: list[tuple[str, np.ndarray]], readings: list[Reading],
                  common_readings: dict[str, list[Reading]], occ: np.ndarray, n: int) -> list[Line]:
    basis = "Σ of the 15-minute intervals' counter differences between the readings"
    out = []
    if tariff.energy_kind == "blocks":
        total_kwh = qty(own.sum() / 1000) + sum((qty(s.sum() / 1000) for _, s in common), Decimal(0))
        fraction = Decimal(int(occ.sum())) / Decimal(n) if n else Decimal(0)
        left, lower = total_kwh, Decimal(0)
        for b in tariff.blocks:
            size = None if b.up_to_kwh is None else (b.up_to_kwh * fraction).quantize(KWH) - lower
            q = left if size is None else min(left, size)
            upper = "" if b.up_to_kwh is None else f" up to {(b.up_to_kwh * fraction).quantize(KWH)} kWh"
            out.append(Line("energy", f"Energy, block from {lower} kWh{upper}", q, "kWh", b.price,
                            tariff.money(q * b.price), readings, basis + " (own + common share)"))
            left -= q
            lower += size or Decimal(0)
        return out
    for period in tariff.period_names():
        pick = labels == period
        price = tariff.flat_price if tariff.energy_kind == "flat" else tariff.prices[period]
        name = "Energy" if tariff.energy_kind == "flat" else f"Energy, {period}"
        q = qty(own[pick].sum() / 1000)
        out.append(Line("energy", name, q, "kWh", price, tariff.money(q * price), readings, basis))
        for area, s in common:
            q = qty(s[pick].sum() / 1000)
            out.append(Line("common", f"{name}: share of {area}", q, "kWh", price, tariff.money(q * price),
                            common_readings[area], "the common area's intervals × this tenant's share"))
    return out


def _demand_line(tariff: Tariff, tenant: Tenant, grid: Grid, own: np.ndarray, labels: np.ndarray,
                 occ: np.ndarray) -> Line:
    price = tariff.demand_price or Decimal(0)
    ok = occ & ~grid.touched(tenant.circuits)
    if tariff.demand_periods:
        ok &= np.isin(labels, list(tariff.demand_periods))
    kw = np.where(ok, own / 250.0, -np.inf)
    where = " in " + ", ".join(tariff.demand_periods) if tariff.demand_periods else ""
    if not ok.any():
        return Line("demand", f"Maximum 15-minute demand{where}: no interval", Decimal(0), "kW", price,
                    Decimal(0).quantize(tariff.quantum))
    k = int(np.argmax(kw))
    q = qty(kw[k])
    readings = [r for c in tenant.circuits for r in (grid.reading_at(c, k) or ())]
    text = f"Maximum 15-minute demand{where}, {_local(grid.t[k], grid.tz)}"
    return Line("demand", text, q, "kW", price, tariff.money(q * price), readings,
                "import energy of the interval (counter difference) / 0.25 h")


def _reactive_line(tariff: Tariff, grid: Grid, tenant: Tenant, occ: np.ndarray, own_wh: float) -> Line:
    kvarh = float((grid.series(tenant.circuits, QI) * occ).sum()) / 1000
    allowed = own_wh / 1000 * math.tan(math.acos(float(tariff.pf_threshold)))
    q = qty(max(0.0, kvarh - allowed))
    price = tariff.reactive_price or Decimal(0)
    readings = [r for u in grid.uses(tenant.circuits, occ, QI) for r in (u.start, u.end) if r]
    return Line("reactive", f"Reactive energy beyond PF {tariff.pf_threshold} ({kvarh:.3f} kvarh QI, "
                f"{allowed:.3f} kvarh free)", q, "kvarh", price, tariff.money(q * price), readings,
                "QI kvarh − kWh × tan(acos(PF threshold)), from the interval counter differences")


def _local(t: float, tz) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")
