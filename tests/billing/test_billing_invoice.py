"""Invoices against the scenario's exact truth (tests/billing/conftest.py): the expected
quantities and amounts are computed here from the truth's per-minute energies, local clock
and the tariff's stated prices, never by the billing code."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from billing_month import GAP, HERE, RESET, TZ, local

from pm4324.billing.bill import period_bounds, run_billing
from pm4324.billing.config import load_building
from pm4324.history import HistoryStore

MONTH_START, MONTH_END = local(2026, 10, 1), local(2026, 11, 1)
QUARTERS = int((MONTH_END - MONTH_START) // 900)


def kwh(wh: float) -> Decimal:
    return Decimal(f"{wh / 1000:.3f}")


def money(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def run(month):
    store = HistoryStore.open(month.store_path, readonly=True)
    yield run_billing(load_building(HERE / "tenants.toml"), store, "2026-10")
    store.close()


def invoice(run, tenant_id):
    return next(i for i in run.invoices if i.tenant.id == tenant_id)


def line(inv, text):
    return next(x for x in inv.lines if x.text == text)


def test_dst_months_have_743_and_745_hours(run):
    assert QUARTERS == 745 * 4
    assert run.summary.hours == 745 and invoice(run, "apt2").hours == 745
    lo, hi = period_bounds("2026-03", TZ)
    assert (hi - lo) / 3600 == 743


def test_flat_tenant_with_common_area_share(run, month):
    inv = invoice(run, "apt2")
    own = kwh(month.ct[:, 7, 0].sum())
    energy = line(inv, "Energy")
    assert energy.quantity == own and energy.amount == money(own * Decimal("0.3050"))
    # the stairwell (CT9) by floor area: 60 of 240 m² while occupied (all month)
    common = kwh(month.ct[:, 8, 0].sum() * 60 / 240)
    share = line(inv, "Energy: share of Stairwell")
    assert share.quantity == common and share.amount == money(common * Decimal("0.3050"))
    assert [r.register for r in share.readings] == ["ct9_kwh_import_f32 (input 0x138C)"] * 2
    subtotal = energy.amount + share.amount + Decimal("9.90")
    assert inv.subtotal == subtotal
    assert inv.total == subtotal + money(subtotal * Decimal("0.19"))
    # the readings the energy came from: CT8's import register (map.csv: input 0x137E) at the ends
    assert [r.register for r in energy.readings] == ["ct8_kwh_import_f32 (input 0x137E)"] * 2
    assert energy.readings[0].time == MONTH_START and energy.readings[1].time == MONTH_END


def test_tou_follows_local_time(run, month):
    inv = invoice(run, "shop")
    local_dt = [datetime.fromtimestamp(int(t), TZ) for t in month.t]
    peak = np.array([d.weekday() < 5 and d.date().isoformat() != "2026-10-03" and 8 <= d.hour < 20
                     for d in local_dt])
    e = month.meter[:, 1, 0]
    for name, pick, price in (("peak", peak, "0.3120"), ("offpeak", ~peak, "0.2240")):
        got = line(inv, f"Energy, {name}")
        assert got.quantity == kwh(e[pick].sum()), name
        assert got.amount == money(got.quantity * Decimal(price))
    # the Monday after the clocks went back: peak starts at 08:00 local = 07:00 UTC
    monday = (month.t >= local(2026, 10, 26, 7, 45)) & (month.t < local(2026, 10, 26, 8, 15))
    assert peak[monday].tolist() == [False] * 15 + [True] * 15


def test_demand_peak_leaves_out_the_gap(run, month):
    inv = invoice(run, "shop")
    q = ((month.t - MONTH_START) // 900).astype(int)
    per_quarter = np.bincount(q, month.meter[:, 1, 0], minlength=QUARTERS)
    starts = MONTH_START + 900 * np.arange(QUARTERS)
    touched = (starts <= GAP[1]) & (starts + 900 > GAP[0] - 1)
    expected_kw = per_quarter[~touched].max() * 4 / 1000
    got = next(x for x in inv.lines if x.kind == "demand")
    assert got.quantity == Decimal(f"{expected_kw:.3f}")
    assert got.amount == money(got.quantity * Decimal("11.40"))
    assert datetime.fromtimestamp(got.readings[0].time, TZ).strftime("%H:%M") in ("13:45", "14:00")
    # the interval after the gap holds the gap's energy: it would have been the "peak"
    gap_energy = month.meter[(month.t >= GAP[0]) & (month.t < GAP[1] + 60), 1, 0].sum()
    assert gap_energy * 4 / 1000 > 2 * expected_kw


def test_reactive_beyond_pf_threshold(run, month):
    inv = invoice(run, "shop")
    kvarh, kwh_ = month.meter[:, 1, 2].sum() / 1000, month.meter[:, 1, 0].sum() / 1000
    excess = kvarh - kwh_ * np.tan(np.arccos(0.9))  # the shop runs at PF 0.8
    got = next(x for x in inv.lines if x.kind == "reactive")
    assert got.quantity == Decimal(f"{excess:.3f}") and excess > 0
    assert got.amount == money(got.quantity * Decimal("0.0150"))
    assert [r.register for r in got.readings] == ["meter2_kvarh_q1_f32 (input 0x129E)"] * 2


def test_tenant_moving_out_mid_month(run, month):
    inv = invoice(run, "apt1")
    out = local(2026, 10, 16)
    before = month.t < out
    energy = line(inv, "Energy")
    assert energy.quantity == kwh(month.ct[before, 6, 0].sum())
    assert energy.readings[1].time == out
    occupied = int((out - MONTH_START) // 900)
    fixed = next(x for x in inv.lines if x.kind == "fixed")
    assert fixed.amount == money(Decimal("9.90") * occupied / QUARTERS)
    share = line(inv, "Energy: share of Stairwell")
    assert share.quantity == kwh(month.ct[before, 8, 0].sum() / 4)
    assert any("move-out" in n for n in inv.notes)
    vacant = dict(((k, n), v) for k, n, v in run.summary.rows)[("vacant", "apt1 circuits while vacant")]
    assert vacant == kwh(month.ct[~before, 6, 0].sum())


def test_reset_and_gap_are_stated_and_energy_stays_exact(run, month):
    inv = invoice(run, "apt2")
    text = " ".join(inv.notes)
    assert f"counter reset at {datetime.fromtimestamp(RESET, TZ):%Y-%m-%d %H:%M}" in text
    assert "no readings 2026-10-07 13:06 .. 2026-10-07 15:22" in text
    readings = line(inv, "Energy").readings
    after_reset = month.ct[month.t >= RESET, 7, 0].sum()
    assert readings[0].value_wh == 0.0
    assert readings[1].value_wh == pytest.approx(after_reset, rel=1e-9)
    # the end reading minus the start reading is not the energy: the reset is why
    assert kwh(readings[1].value_wh - readings[0].value_wh) < line(inv, "Energy").quantity


def test_building_reconciles_against_the_main_meters(run, month):
    s = run.summary
    main = kwh(month.meter[:, 1, 0].sum() + month.meter[:, 2, 0].sum())
    assert s.main_kwh == main
    # Meters 2 and 3 are exactly the shop, the apartments (occupied or vacant) and the stairwell
    assert abs(s.difference_kwh) <= Decimal("0.003")
    assert s.difference_kwh == s.main_kwh - s.assigned_kwh
