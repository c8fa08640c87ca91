"""`pm4324 run` keeps its own history: the minutes are the means of the seconds it printed,
the energy is its counters' difference, and the names in the settings come along."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from pm4324.history import HistoryStore, query

SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / "building-settings.toml"


def test_run_writes_history_with_names(tmp_path):
    text = SETTINGS.read_text().replace(
        '[meters.1]\nwiring = "3P4W-3CT"',
        '[meters.1]\nwiring = "3P4W-3CT"\nname = "Rooftop HVAC"\nct_names = ["HVAC L1", "", "HVAC L3"]')
    settings = tmp_path / "site.toml"
    settings.write_text(text + '\n[history]\ntime_zone = "Europe/Berlin"\n')
    out = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings),
                          "--seconds", "130", "--speed", "1000", "--no-modbus", "--json", "--meter", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seconds = [json.loads(line) for line in out.stdout.splitlines()]
    assert seconds[0]["meters"][0]["name"] == "Rooftop HVAC"
    assert [c["name"] for c in seconds[0]["cts"]] == ["HVAC L1", None, "HVAC L3"]

    store = HistoryStore.open(tmp_path / "var" / "site.history.db", readonly=True)
    assert store.time_zone == "Europe/Berlin"
    (meter,) = store.meters()
    assert meter["names"] == {"meters": {"1": "Rooftop HVAC"}, "cts": {"1": "HVAC L1", "3": "HVAC L3"}}
    m = meter["id"]
    t = np.array([s["time"] for s in seconds])
    p = np.array([s["cts"][0]["p_w"] for s in seconds])
    tr = query.trend(store, m, "ct1", "p_w", t[0] - 60, t[-1] + 60, "1min")
    for start, mean, lo, hi in zip(tr.t, tr.mean, tr.min, tr.max):
        pick = (t >= start) & (t < start + 60)
        assert mean == pytest.approx(p[pick].mean(), rel=1e-6)
        assert (lo, hi) == pytest.approx((p[pick].min(), p[pick].max()), rel=1e-6)
    days = query.energy(store, m, "meter1", date(2000, 1, 1), date(2100, 1, 1))
    kwh = [s["meters"][0]["kwh_import"] for s in seconds]
    assert sum(d.energy["wh_import"] for d in days) == pytest.approx((kwh[-1] - kwh[0]) * 1000, abs=1e-3)
    store.close()
