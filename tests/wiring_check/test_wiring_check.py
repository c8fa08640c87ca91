"""The wiring check on the simulator: each wiring fault found as the fault it is, with the
setting that fixes it; clean wiring across the expected PF range and exporting circuits
declared as such give no alarm."""

from __future__ import annotations

import pytest

from pm4324.config.settings_parse import parse_settings
from pm4324.device.meter import Meter
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource
from pm4324.wiring_check import check_wiring

MOTOR = {"name": "motor", "cts": [1, 2, 3], "current_a": 40.0, "pf": 0.9}
SHOP = {"name": "shop", "cts": [4, 5, 6], "current_a": 20.0, "pf": 0.98}
OFFICE = {"name": "office", "cts": [7, 8, 9], "current_a": 15.0, "pf": 0.85}
MAIN2 = {"name": "lab", "cts": [16, 17, 18], "current_a": 30.0, "pf": 0.8}


def _check(loads, faults=(), settings=None, adc=True):
    data = {"loads": list(loads), "faults": list(faults)}
    if adc:
        data["adc"] = {"bits": 24, "voltage_full_scale_v": 800.0, "current_full_scale_a": 3.0,
                       "noise_lsb": 2.0}
    settings = parse_settings(settings or {})
    meter = Meter(settings, SimulatorSource(parse_scenario(data), settings), start_time=0.0)
    snaps = [meter.step() for _ in range(3)]
    return check_wiring(snaps[1:])


def _alarms(report):
    """Verdicts other than ok (CTs without a load read "open or unused": not alarms here)."""
    return {c.ct: c.text for c in report.cts if c.status not in ("ok", "open", "unused")} | {
        -m.main: m.text for m in report.mains if m.status != "ok"}


def _by_ct(report):
    return {c.ct: c for c in report.cts}


def test_clean_wiring_across_the_expected_range_gives_no_alarm():
    loads = []
    for n, pf in enumerate((0.7, 0.75, 0.85, 0.95, 1.0, -0.99, -0.97, -0.95)):
        loads.append({"cts": [3 * n + 1, 3 * n + 2, 3 * n + 3], "current_a": 10.0 + 5 * n,
                      "pf": pf})
    report = _check(loads)
    assert report.problems == 0, [c.text for c in report.cts if c.status != "ok"]
    assert all(c.status == "ok" for c in report.cts)
    assert [m.status for m in report.mains] == ["ok", "ok"]
    assert "CT1 ok (P 1.61 kW at PF 0.70 lagging on phase a)" in report.cts[0].text


def test_an_exporting_circuit_declared_as_such_is_no_alarm():
    pv = {"cts": [13, 14, 15], "current_a": 25.0, "pf": 1.0, "export": True}
    cts = {str(k): {"direction": "export"} for k in (13, 14, 15)}
    report = _check([MOTOR, pv], settings={"cts": cts})
    assert _alarms(report) == {}
    both = _check([MOTOR, pv], settings={"cts": {str(k): {"direction": "both"}
                                                 for k in (13, 14, 15)}})
    assert _alarms(both) == {}
    # the same circuit declared (by default) as importing looks reversed: that is the point
    undeclared = _by_ct(_check([MOTOR, pv]))
    assert undeclared[13].status == "reversed"


def test_reversed_ct():
    ct = _by_ct(_check([MOTOR, SHOP], [{"kind": "reversed_ct", "target": "ct5"}]))[5]
    assert ct.status == "reversed"
    assert ct.fix == ["[cts.5] reverse = true"]
    assert ct.text.startswith("CT5 reversed (P -4.51 kW at PF 0.98")
    assert "swap its leads or set [cts.5] reverse = true" in ct.text
    assert _by_ct(_check([MOTOR, SHOP]))[5].status == "ok"


def test_reversed_ct_already_set_reverse_is_told_to_unset():
    ct = _by_ct(_check([SHOP], settings={"cts": {"5": {"reverse": True}}}))[5]
    assert ct.status == "reversed" and ct.fix == ["[cts.5] reverse = false"]


def test_ct_on_the_wrong_phase():
    report = _check([OFFICE], [{"kind": "wrong_phase", "target": "ct8", "phase": "c"}])
    ct = _by_ct(report)[8]
    assert ct.status == "wrong_phase"
    assert ct.text.startswith("CT8 on phase c, configured as b (120° off;")
    assert ct.fix == ['[cts.8] phase = "c"']
    assert ct.angles_to_phases["c"] == pytest.approx(31.8, abs=0.5)  # PF 0.85 behind V_c


def test_wrong_phase_on_a_three_wire_meter_says_move_it():
    settings = {"meters": {"3": {"wiring": "3P3W-3CT"}}}
    ct = _by_ct(_check([OFFICE], [{"kind": "wrong_phase", "target": "ct8", "phase": "c"}],
                       settings))[8]
    assert ct.status == "wrong_phase" and "no setting can" in ct.fix[0]


def test_open_ct():
    ct = _by_ct(_check([MOTOR], [{"kind": "open_ct", "target": "ct2"}]))[2]
    assert ct.status == "open" and ct.text.startswith("CT2 open or unused (I = ")
    assert _by_ct(_check([MOTOR]))[12].status == "open"  # nothing on CT12 either


def test_vt_loss_names_the_phase_and_spares_its_cts_a_verdict():
    report = _check([MOTOR, MAIN2], [{"kind": "vt_loss", "target": "main2.b"}])
    assert report.mains[1].status == "phase_missing"
    assert report.mains[1].text.startswith("main 2: phase b missing (")
    cts = _by_ct(report)
    assert cts[17].status == "no_voltage" and cts[16].status == "ok" and cts[2].status == "ok"


def test_phase_swap_of_the_voltage_inputs():
    report = _check([MOTOR, SHOP, OFFICE],
                    [{"kind": "phase_swap", "target": "main1", "order": ["a", "c", "b"]}])
    assert report.mains[0].status == "inputs_swapped"
    assert "carry phases a, c, b: inputs b and c are swapped" in report.mains[0].text
    assert all(c.status == "ok" for c in report.cts if c.ct <= 9)


def test_ambiguous_says_both_readings():
    # a leading load (PF 0.92) on phase b, its CT configured on a: it reads 97 deg behind
    # phase a, which fits "on phase b, PF 0.92 leading" and "reversed on phase c, PF 0.80
    # lagging" alike
    load = {"cts": [4], "phases": ["a"], "current_a": 30.0, "pf": -0.92}
    report = _check([load], [{"kind": "wrong_phase", "target": "ct4", "phase": "b"}])
    ct = _by_ct(report)[4]
    assert ct.status == "ambiguous"
    assert "on phase b (importing at PF 0.92 leading)" in ct.text
    assert "reversed and on phase c (importing at PF 0.80 lagging)" in ct.text
    assert sorted(ct.fix) == ['[cts.4] phase = "b"', '[cts.4] reverse = true and [cts.4] phase = "c"']


def test_saturation_and_harmonics_are_noted_not_alarmed():
    report = _check([MOTOR, SHOP], [
        {"kind": "ct_saturation", "target": "ct1", "clip_a": 25.0},
        {"kind": "harmonic_rich", "target": "ct4", "harmonics": {3: 0.4, 5: 0.2}}])
    cts = _by_ct(report)
    assert cts[1].status == "ok" and "distorted" in cts[1].text
    assert cts[4].status == "ok" and "distorted (THD 45 %)" in cts[4].text


def test_other_measurement_faults_raise_no_wiring_alarm():
    report = _check([MOTOR, MAIN2], [
        {"kind": "frequency_excursion", "target": "main1", "frequency_hz": 51.5},
        {"kind": "dc_offset", "target": "ct2", "offset": 2.0},
        {"kind": "gain_drift", "target": "ct16", "pct_per_hour": 3600.0}])
    assert _alarms(report) == {}
