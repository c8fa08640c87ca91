"""Power quality in the history and `pm4324 pq-report` (EN 50160 style) over it.

Truth: a scenario with known characteristics over two 10-minute intervals: 230 V on a, 0.95
and 1.05 on b and c (u2 = 2.89 %, over the 2 % limit), a 3 % 5th harmonic (THD 3 %, within
8 % and H5's 6 %), exactly 50 Hz, and a 0.2-s dip to 50 % in the second interval (so that
interval is flagged and left out, and the dip is listed).
"""

from __future__ import annotations

import json
import math

import pytest

from pm4324.cli.cli import main as cli
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.history import HistoryStore, HistoryWriter
from pm4324.history.pq import read
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

TICK = 1_800_000_000.0


def u2_pct(scale):
    a = complex(math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3))
    va, vb, vc = (s * a**-k for k, s in enumerate(scale))
    return 100 * abs(va + a * a * vb + a * vc) / abs(va + a * vb + a * a * vc)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pq") / "history.db"
    settings = Settings()
    scenario = parse_scenario({"mains": {"1": {
        "phase_scale": [1.0, 0.95, 1.05], "harmonics": {"5": 0.03},
        "sags": [{"start_s": 900.015, "duration_s": 0.2, "retained": 0.5}]}}})
    meter = Meter(settings, SimulatorSource(scenario, settings), start_time=TICK - 599.5)
    writer = HistoryWriter(HistoryStore.open(path, time_zone="UTC"), "local", flush_s=60)
    meter.add_listener(writer.add_snapshot)
    for _ in range(1202):
        meter.step()
    writer.close()
    writer.store.close()
    return path


def test_history_keeps_the_ten_minute_values_and_the_event(store_path):
    store = HistoryStore.open(store_path, readonly=True)
    rows = read(store.db, store.find_meter("local"), TICK - 700, TICK + 700)
    store.close()
    ten = [(t, d) for t, m, k, d in rows if k == "10 min" and m == 1]
    assert [t for t, _ in ten] == [TICK, TICK + 600]
    assert [d["flagged"] for _, d in ten] == [False, True]
    assert ten[0][1]["u2_pct"] == pytest.approx(u2_pct((1.0, 0.95, 1.05)), abs=1e-3)
    harm = [d for _, m, k, d in rows if k == "harmonics" and m == 1]
    assert harm[0]["v_harmonics_pct"][0][3] == pytest.approx(3.0, rel=1e-3)  # order 5
    assert [d["kind"] for _, m, k, d in rows if k == "event"] == ["dip"]
    cts = [d for _, m, k, d in rows if k == "cts"]
    assert len(cts) == 2 and len(cts[0]) == 24


def test_weekly_report(store_path, capsys):
    assert cli(["pq-report", "--store", str(store_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ten_minute_values"] == 2 and report["flagged_values"] == 1
    lines = {(ln["characteristic"], ln["limit"]): ln for ln in report["lines"]}
    volts = lines[("supply voltage (10-min means, each phase)", "230 V +-10 %")]
    assert volts["values"] == 3 and volts["within_pct"] == 100.0 and volts["verdict"] == "pass"
    u2 = lines[("unbalance u2 (10-min)", "<= 2 %")]
    assert u2["within_pct"] == 0.0 and u2["verdict"] == "fail"
    thd = lines[("THD (10-min, orders 2-40, each phase)", "<= 8 %")]
    assert thd["within_pct"] == 100.0
    freq = lines[("power frequency (10-s means)", "50 Hz +-1 %")]
    assert freq["values"] > 50 and freq["within_pct"] == 100.0
    assert report["event_counts"]["dip"] == 1
    (dip,) = report["events"]
    lowest = 0.5 * 0.95 * 230 * math.sqrt(1 + 0.03**2)  # phase b, with its 5th harmonic
    assert dip["extreme_v"] == pytest.approx(lowest, rel=1e-3) and dip["channels"] == "abc"
    assert cli(["pq-report", "--store", str(store_path)]) == 0
    text = capsys.readouterr().out
    assert "unbalance u2" in text and "fail" in text and "1 dip" in text


def test_report_without_records_says_so(tmp_path, capsys):
    HistoryStore.open(tmp_path / "h.db", time_zone="UTC").close()
    assert cli(["pq-report", "--store", str(tmp_path / "h.db")]) == 2
    assert "no" in capsys.readouterr().err
