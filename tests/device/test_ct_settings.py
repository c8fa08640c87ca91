"""`[cts.N] reverse` and `phase` fix a reversed CT and a CT on another phase without
re-wiring: the meter then reads what the circuit does, as the scenario's truth says."""

from __future__ import annotations

import tomllib

import pytest

from pm4324.config.settings_file import settings_to_toml
from pm4324.config.settings_parse import parse_settings
from pm4324.device.meter import Meter
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

LOADS = [{"cts": [1, 2, 3], "current_a": 50.0, "pf": 0.9}]
FAULTS = [{"kind": "reversed_ct", "target": "ct2"},
          {"kind": "wrong_phase", "target": "ct3", "phase": "a"}]
FIXED = {"cts": {"2": {"reverse": True}, "3": {"phase": "a", "direction": "both"}}}


def test_settings_undo_the_wiring_faults_exactly():
    settings = parse_settings(FIXED)
    assert settings.meters[0].ct_reverse == (False, True, False)
    assert settings.meters[0].circuit_phases == ("a", "b", "a")
    assert settings.cts[2].direction == "both"
    scenario = parse_scenario({"loads": LOADS, "faults": FAULTS})
    meter = Meter(settings, SimulatorSource(scenario, settings), start_time=0.0)
    snaps = [meter.step() for _ in range(3)]
    truth = scenario.expected(settings, 2.5)
    clean = parse_scenario({"loads": LOADS}).expected(parse_settings({}), 2.5)
    for k in (1, 2, 3):
        assert truth[k - 1]["p_w"] == pytest.approx(clean[k - 1]["p_w"], rel=1e-12)
        assert snaps[2].ct.p_w[k - 1] == pytest.approx(truth[k - 1]["p_w"], rel=1e-3)
        assert snaps[2].ct.q_var[k - 1] == pytest.approx(truth[k - 1]["q_var"], rel=2e-3)
    assert snaps[2].ct_energy.wh_export[1] == 0


def test_reverse_without_the_fault_reads_negative():
    settings = parse_settings({"cts": {"1": {"reverse": True}}})
    scenario = parse_scenario({"loads": LOADS})
    meter = Meter(settings, SimulatorSource(scenario, settings), start_time=0.0)
    snap = [meter.step() for _ in range(2)][1]
    assert scenario.expected(settings, 1.5)[0]["p_w"] < 0
    assert snap.ct.p_w[0] == pytest.approx(scenario.expected(settings, 1.5)[0]["p_w"], rel=1e-3)


def test_ct_settings_round_trip_through_the_file():
    settings = parse_settings({**FIXED, "cts": {**FIXED["cts"], "7": {"pf_lagging_min": 0.5}}})
    text = settings_to_toml(settings)
    again = parse_settings(tomllib.loads(text))
    assert again.meters == settings.meters and again.cts == settings.cts
    assert "[cts.2]" in text and "reverse = true" in text
