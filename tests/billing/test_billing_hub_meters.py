"""A hub's history holds several meters: a tenant's circuits on two of them add up per
interval, and the building's main can be on a third (expected from the scenario's truth)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from importlib import resources

import numpy as np
from billing_month import HERE, TZ, local

from pm4324.billing.bill import run_billing
from pm4324.billing.config import load_building
from pm4324.config.settings_parse import load_settings
from pm4324.history import HistoryStore
from pm4324.history.aggregate import batch_of_minutes
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.truth import Truth

TENANTS = """
[building]
name = "Two meters"
time_zone = "Europe/Berlin"
main = ["b:meter3"]
[tariffs.flat]
currency = "CHF"
decimals = 2
rounding = "half_even"
price = "0.25"
[[tenants]]
id = "both"
tariff = "flat"
circuits = ["a:ct7", "b:ct8"]
"""


def test_circuits_on_two_meters(tmp_path):
    settings = load_settings(str(resources.files("pm4324") / "data" / "building-settings.toml"))
    start, end = local(2026, 10, 1), local(2026, 10, 3)  # two days of a hub's two meters
    t = np.arange(start, end, 60, dtype=np.int64)
    store = HistoryStore.open(str(tmp_path / "hub.sqlite"), time_zone="Europe/Berlin")
    truth = Truth(load_scenario(str(HERE / "scenario.toml")), settings, "Europe/Berlin", start)
    m = truth.minutes(t)
    energy = np.concatenate([m.ct_energy, m.meter_energy], axis=1)
    for key in ("a", "b"):
        meter = store.meter_id(key, "PM-4324A")
        batch = batch_of_minutes(t, {"ct": m.ct, "meter": m.meter, "main": m.main}, energy, None)
        store.write(meter, batch, float(t[-1] + 59))
    path = tmp_path / "tenants.toml"
    path.write_text(TENANTS)
    run = run_billing(load_building(path), store, "2026-10")
    store.close()
    inv = run.invoices[0]
    q = Decimal(f"{(m.ct_energy[:, 6, 0].sum() + m.ct_energy[:, 7, 0].sum()) / 1000:.3f}")
    line = inv.lines[0]
    assert line.quantity == q and inv.total == (q * Decimal("0.25")).quantize(Decimal("0.01"))
    assert {(r.meter, r.element) for r in line.readings} == {("a", "ct7"), ("b", "ct8")}
    assert datetime.fromtimestamp(line.readings[-1].time, TZ) == datetime(2026, 10, 3, tzinfo=TZ)
    assert run.summary.main_kwh == Decimal(f"{m.meter_energy[:, 2, 0].sum() / 1000:.3f}")
