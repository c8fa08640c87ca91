"""Power quality in the running meter: voltage events in the event log and the snapshot's
``pq`` section (JSON), the CTs' 10-minute THD / TDD, the [pq] settings.

Truth: the simulator scenario's sags (exact start, depth, phases) and its loads' harmonics.
"""

from __future__ import annotations

import json
import math

import pytest

from pm4324.config.settings import SettingsError
from pm4324.config.settings_parse import parse_settings
from pm4324.device.meter import Meter
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

TICK = 1_800_000_000.0


def run(scenario: dict, seconds: int, start_time: float, settings_data: dict | None = None):
    settings = parse_settings(settings_data or {})
    meter = Meter(settings, SimulatorSource(parse_scenario(scenario), settings),
                  start_time=start_time)
    snaps = [meter.step() for _ in range(seconds)]
    return meter, snaps


def test_events_reach_the_event_log_and_json() -> None:
    T = 0.02
    scenario = {"mains": {"1": {"sags": [
        {"start_s": 2 + 0.75 * T, "duration_s": 0.1, "retained": 0.5, "phases": "c"}]}}}
    meter, snaps = run(scenario, 4, TICK)
    logged = [e for e in meter.events if e.kind == "voltage_dip"]
    assert len(logged) == 1
    assert "main 1 phase c: residual 115.0 V (50.0 % of Udin)" in logged[0].text
    assert "2027-01-15T08:00:02.025Z" in logged[0].text  # TICK + 2.015 s + T/2
    with_event = [s for s in snaps if s.pq["events"]]
    assert len(with_event) == 1
    d = json.loads(json.dumps(with_event[0].pq_dict()))
    (ev,) = d["pq"]["events"]
    assert ev["kind"] == "dip" and ev["channels"] == "c" and ev["main"] == 1
    assert ev["extreme_v"] == pytest.approx(115.0, rel=1e-6)
    assert ev["duration_s"] == pytest.approx(0.1 + T / 2, abs=0.02 * T)
    main1 = d["pq"]["mains"][0]
    assert main1["udin_v"] == 230.0 and main1["voltages"] == "ln"
    short = snaps[-1].pq["mains"][0]["short"]  # the 150 cycles ending at ~3 s hold the dip
    assert short["interval"] == "150/180 cycles" and short["flagged"] is True
    assert short["end_s"] == pytest.approx(TICK + 3.0, abs=0.03)


def test_ten_minute_thd_and_tdd_of_a_ct() -> None:
    """CT1 draws 50 A with 20 % 5th and 10 % 7th harmonic: THD = sqrt(0.2^2 + 0.1^2) = 22.36 %;
    with load_current_a = 100, TDD = 50 * 0.2236 / 100 = 11.18 %."""
    scenario = {"loads": [{"cts": [1], "current_a": 50.0, "pf": 1.0,
                           "harmonics": {"5": 0.2, "7": 0.1}}]}
    meter, snaps = run(scenario, 6, TICK - 4.0, {"pq": {"load_current_a": 100.0}})
    cts = [s.pq["cts"] for s in snaps if s.pq["cts"]]
    assert cts, "no 10-minute value at the tick"
    ct1 = cts[0][0]
    assert ct1["ct"] == 1 and ct1["end"] == TICK and ct1["interval"] == "10 min"
    thd = 100 * math.hypot(0.2, 0.1)
    assert ct1["thd_i_pct"] == pytest.approx(thd, rel=1e-3)
    assert ct1["tdd_pct"] == pytest.approx(thd * 50 / 100, rel=1e-3)
    assert ct1["i_rms"] == pytest.approx(50 * math.sqrt(1 + 0.05), rel=1e-3)
    assert ct1["flagged"] is False


def test_pq_settings() -> None:
    s = parse_settings({"pq": {"dip_pct": 85, "swell_pct": 115, "declared_voltage_v": 240}})
    assert s.pq.dip_pct == 85 and s.pq.declared_voltage_v == 240
    with pytest.raises(SettingsError, match="pq.event_voltage"):
        parse_settings({"pq": {"event_voltage": "xy"}})
    with pytest.raises(SettingsError, match="pq.dip_pct"):
        parse_settings({"pq": {"dip_pct": 120}})
    off = parse_settings({"pq": {"enabled": False}})
    meter = Meter(off, SimulatorSource(parse_scenario({}), off), start_time=0.0)
    snap = meter.step()
    assert snap.pq is None and snap.pq_dict() == {}
