"""Tiered blocks, common areas split by consumption and by fixed shares, and a shared circuit,
against the scenario's exact truth (expected values computed here)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from billing_month import GAP, HERE, TZ, local

from pm4324.billing.bill import run_billing
from pm4324.billing.config import load_building
from pm4324.history import HistoryStore

QUARTERS = 745 * 4


def kwh(wh: float) -> Decimal:
    return Decimal(f"{wh / 1000:.3f}")


def money(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def bill(month, tmp_path, edits: dict[str, str]):
    text = (HERE / "tenants.toml").read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    store = HistoryStore.open(month.store_path, readonly=True)
    try:
        run = run_billing(load_building(path), store, "2026-10")
    finally:
        store.close()
    return {i.tenant.id: i for i in run.invoices}, run.summary


def test_blocks_prorated_to_occupancy(month, tmp_path):
    blocks = 'energy = "blocks"\nblocks = [{ up_to_kwh = 100, price = "0.20" }, { price = "0.40" }]'
    inv, _ = bill(month, tmp_path, {'energy = "flat"\nprice = "0.3050"': blocks})
    before = month.t < local(2026, 10, 16)
    total = kwh(month.ct[before, 6, 0].sum()) + kwh(month.ct[before, 8, 0].sum() / 4)
    limit = (Decimal(100) * Decimal(1440) / Decimal(QUARTERS)).quantize(Decimal("0.001"))
    lines = [x for x in inv["apt1"].lines if x.kind == "energy"]
    assert [x.quantity for x in lines] == [limit, total - limit]
    assert [x.amount for x in lines] == [money(limit * Decimal("0.20")),
                                         money((total - limit) * Decimal("0.40"))]


def test_common_split_by_consumption(month, tmp_path):
    inv, _ = bill(month, tmp_path, {'split = "area"': 'split = "consumption"'})
    before = month.t < local(2026, 10, 16)
    own = {"shop": month.meter[:, 1, 0].sum(), "apt1": month.ct[before, 6, 0].sum(),
           "apt2": month.ct[:, 7, 0].sum()}
    every = month.meter[:, 1, 0].sum() + month.ct[:, 6, 0].sum() + month.ct[:, 7, 0].sum()
    stair = month.ct[:, 8, 0]
    assert sum(x.quantity for x in inv["apt2"].lines if x.kind == "common") == kwh(
        stair.sum() * own["apt2"] / every)
    # apt1's share only while it occupied the flat
    assert sum(x.quantity for x in inv["apt1"].lines if x.kind == "common") == kwh(
        stair[before].sum() * own["apt1"] / every)
    shop = [x for x in inv["shop"].lines if x.kind == "common"]
    assert {x.text for x in shop} == {"Energy, peak: share of Stairwell",
                                      "Energy, offpeak: share of Stairwell"}


def test_common_fixed_split_and_shared_circuit(month, tmp_path):
    edits = {'split = "area"': 'split = "fixed"\nshares = { shop = 0.5, apt1 = 0.2, apt2 = 0.3 }',
             'circuits = ["test:ct8"]': 'circuits = ["test:ct8", { circuit = "test:ct7", share = 0.25 }]'}
    inv, summary = bill(month, tmp_path, edits)
    stair = month.ct[:, 8, 0].sum()
    assert sum(x.quantity for x in inv["apt2"].lines if x.kind == "common") == kwh(stair * 0.3)
    energy = next(x for x in inv["apt2"].lines if x.text == "Energy")
    assert energy.quantity == kwh(month.ct[:, 7, 0].sum() + month.ct[:, 6, 0].sum() * 0.25)
    before = month.t < local(2026, 10, 16)
    assert sum(x.quantity for x in inv["apt1"].lines if x.kind == "common") == kwh(
        month.ct[before, 8, 0].sum() * 0.2)
    # CT7 is now billed 1.25 times: the summary shows the difference, it does not hide it
    assert summary.difference_kwh == pytest.approx(
        -kwh(month.ct[:, 6, 0].sum() * 0.25), abs=Decimal("0.003"))


def test_move_in_at_a_local_time(month, tmp_path):
    inv, _ = bill(month, tmp_path, {'circuits = ["test:ct8"]':
                                    'circuits = ["test:ct8"]\nmove_in = 2026-10-10T12:00:00'})
    since = month.t >= local(2026, 10, 10, 12)
    energy = next(x for x in inv["apt2"].lines if x.text == "Energy")
    assert energy.quantity == kwh(month.ct[since, 7, 0].sum())
    assert energy.readings[0].time == local(2026, 10, 10, 12)


def test_no_invoice_for_a_month_after_moving_out(month):
    store = HistoryStore.open(month.store_path, readonly=True)
    try:
        run = run_billing(load_building(HERE / "tenants.toml"), store, "2026-11")
    finally:
        store.close()
    assert [i.tenant.id for i in run.invoices] == ["shop", "apt2"]
    assert all(i.own_kwh == 0 for i in run.invoices)  # the history ends with October


def test_demand_in_one_tou_period(month, tmp_path):
    inv, _ = bill(month, tmp_path, {'demand = { price_per_kw = "11.40" }':
                                    'demand = { price_per_kw = "11.40", periods = ["offpeak"] }'})
    start = local(2026, 10, 1)
    q = ((month.t - start) // 900).astype(int)
    energy = np.bincount(q, month.meter[:, 1, 0], minlength=QUARTERS)
    starts = start + 900 * np.arange(QUARTERS)
    offpeak = np.array([not (d.weekday() < 5 and d.day != 3 and 8 <= d.hour < 20)
                        for d in (datetime.fromtimestamp(int(t), TZ) for t in starts)])
    touched = (starts <= GAP[1]) & (starts + 900 > GAP[0] - 1)
    expected = energy[offpeak & ~touched].max() * 4 / 1000
    got = next(x for x in inv["shop"].lines if x.kind == "demand")
    assert got.text.startswith("Maximum 15-minute demand in offpeak")
    assert got.quantity == Decimal(f"{expected:.3f}")
