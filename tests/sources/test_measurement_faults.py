"""Measurement faults in the simulator: each one visible in the measured values exactly as
the scenario's truth (``Scenario.expected``) says, scheduled or switched live."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pm4324.config.settings_parse import load_settings
from pm4324.device.meter import Meter
from pm4324.sources.base import SourceError
from pm4324.sources.faults import FaultError
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

SETTINGS = load_settings(None)  # PM-4324A, 3P4W-3CT everywhere, 100 A CTs
LOADS = [
    {"name": "motor", "cts": [1, 2, 3], "current_a": 50.0, "pf": 0.9},
    {"name": "shop", "cts": [4, 5, 6], "current_a": 30.0, "pf": -0.95},
    {"name": "pv", "cts": [13, 14, 15], "current_a": 20.0, "pf": 1.0, "export": True},
]
MAINS = {"1": {"voltage_v": 230.0}, "2": {"voltage_v": 231.0}}


def _run(faults: list[dict], seconds: int, adc: dict | None = None, live=None):
    data = {"mains": MAINS, "loads": LOADS, "faults": faults}
    if adc:
        data["adc"] = adc
    scenario = parse_scenario(data)
    source = SimulatorSource(scenario, SETTINGS)
    meter = Meter(SETTINGS, source, start_time=0.0)
    snaps = []
    for k in range(seconds):
        if live:
            live(k, source)
        snaps.append(meter.step())
    return scenario, source, snaps


def _check(snap, rows, cts, rel=1e-3):
    for k in cts:
        row, i = rows[k - 1], k - 1
        assert snap.ct.v_rms[i] == pytest.approx(row["v_rms"], rel=rel, abs=1e-3)
        assert snap.ct.i_rms[i] == pytest.approx(row["i_rms"], rel=rel, abs=1e-3)
        s = max(row["v_rms"] * row["i_rms"], 1.0)
        assert abs(snap.ct.p_w[i] - row["p_w"]) <= rel * s
        assert abs(snap.ct.q_var[i] - row["q_var"]) <= rel * s


def _fault(kind: str, target: str, start: float = 2.0, **params) -> dict:
    return {"kind": kind, "target": target, "start_s": start, **params}


@pytest.mark.parametrize("fault, cts", [
    (_fault("reversed_ct", "ct2"), [2]),
    (_fault("wrong_phase", "ct3", phase="a"), [3]),
    (_fault("wrong_phase", "ct5", phase="c", **{"from": "b"}), [5]),
    (_fault("open_ct", "ct1"), [1]),
    (_fault("ct_saturation", "ct2", clip_a=50.0), [2]),
    (_fault("vt_loss", "main1.b"), [2, 5]),
    (_fault("vt_loss", "main1.c", retained=0.4), [3, 6]),
    (_fault("phase_swap", "main1", order=["a", "c", "b"]), [1, 2, 3, 4, 5, 6]),
    (_fault("harmonic_rich", "ct4", harmonics={3: 0.3, 5: [0.2, 90]}), [4]),
    (_fault("dc_offset", "ct6", offset=5.0), [6]),
    (_fault("dc_offset", "main1.a", offset=60.0), [1, 4]),
    (_fault("gain_drift", "ct13", pct_per_hour=3600.0), [13]),
    (_fault("gain_drift", "main2.a", pct_per_hour=-3600.0), [13]),
], ids=lambda x: x["kind"] + "-" + x["target"] if isinstance(x, dict) else "")
def test_each_fault_is_measured_as_truth_says(fault, cts):
    scenario, _, snaps = _run([fault], 5)
    before, during = scenario.expected(SETTINGS, 1.5), scenario.expected(SETTINGS, 3.5)
    _check(snaps[1], before, cts)
    _check(snaps[3], during, cts)
    # the fault changed what these CTs read (so the comparison above means something)
    assert any(abs(during[k - 1][q] - before[k - 1][q]) > 0.01 * abs(before[k - 1][q]) + 1e-6
               for k in cts for q in ("v_rms", "i_rms", "p_w", "q_var"))


def test_the_truth_of_simple_faults_is_analytic():
    scenario = parse_scenario({"mains": MAINS, "loads": LOADS, "faults": [
        _fault("reversed_ct", "ct2", 0), _fault("open_ct", "ct1", 0),
        _fault("vt_loss", "main1.c", 0), _fault("dc_offset", "ct4", 0, offset=40.0),
        _fault("harmonic_rich", "ct5", 0, harmonics={3: 0.3, 5: 0.4})]})
    clean = parse_scenario({"mains": MAINS, "loads": LOADS}).expected(SETTINGS, 1.0)
    rows = scenario.expected(SETTINGS, 1.0)
    assert rows[1]["p_w"] == pytest.approx(-clean[1]["p_w"], rel=1e-12)
    assert rows[0]["i_rms"] == 0 and rows[0]["p_w"] == 0
    assert rows[2]["v_rms"] == 0 and rows[5]["p_w"] == 0
    assert rows[3]["i_rms"] == pytest.approx(math.hypot(30.0, 40.0), rel=1e-9)
    assert rows[3]["p_w"] == pytest.approx(clean[3]["p_w"], rel=1e-9)
    assert rows[4]["i_rms"] == pytest.approx(30.0 * math.sqrt(1 + 0.09 + 0.16), rel=1e-12)


def test_harmonic_rich_load_shows_its_thd():
    _, _, snaps = _run([_fault("harmonic_rich", "ct4", 0, harmonics={3: 0.3, 5: 0.4})], 3)
    assert snaps[2].ct.thd_i_pct[3] == pytest.approx(50.0, rel=2e-3)


def test_frequency_excursion_on_one_main():
    scenario, _, snaps = _run([_fault("frequency_excursion", "main2", frequency_hz=51.5)], 5)
    assert scenario.expected(SETTINGS, 3.5)[12]["frequency_hz"] == 51.5
    assert snaps[1].main.frequency_hz[1] == pytest.approx(50.0, abs=1e-3)
    assert snaps[3].main.frequency_hz[1] == pytest.approx(51.5, abs=1e-3)
    assert snaps[3].main.frequency_hz[0] == pytest.approx(50.0, abs=1e-3)
    _check(snaps[3], scenario.expected(SETTINGS, 3.5), [13, 14, 15])


def test_a_fault_inside_a_second_splits_it_at_the_sample():
    """Reversed from 2.5 s to 4.0 s: 1.5 s of export, whatever the seconds (energy is
    routed per cycle, so the two cycles the flips fall in count their net: up to one cycle
    of 20 ms less)."""
    scenario, _, snaps = _run([_fault("reversed_ct", "ct1", 2.5, end_s=4.0)], 5)
    p = scenario.expected(SETTINGS, 1.5)[0]["p_w"]
    assert p * 1.48 / 3600 <= snaps[4].ct_energy.wh_export[0] <= p * 1.5 / 3600
    # second 2 reports the cycles that ended in it: about half of them reversed
    assert abs(snaps[2].ct.p_w[0]) < 0.1 * p
    assert snaps[3].ct.p_w[0] == pytest.approx(-p, rel=1e-3)
    assert 0.9 * p < snaps[4].ct.p_w[0] < p  # its first cycle (or so) still reversed


def test_open_ct_reads_the_noise_floor_with_a_real_adc():
    adc = {"bits": 24, "voltage_full_scale_v": 800.0, "current_full_scale_a": 3.0,
           "noise_lsb": 2.0}
    _, _, snaps = _run([_fault("open_ct", "ct1")], 4, adc=adc)
    noise_a = 2.0 * 3.0 / 2 ** 23 * 100.0  # rms noise in primary amperes (100 A CT)
    assert snaps[3].ct.i_rms[0] < 3 * noise_a
    assert snaps[1].ct.i_rms[0] == pytest.approx(50.0, rel=2e-3)


def test_live_set_and_clear():
    def live(k, source):
        if k == 2:
            live.fault = source.faults.set("reversed_ct", "ct2")
        if k == 4:
            assert [f.id for f in source.faults.clear(live.fault.id)] == [live.fault.id]

    scenario, source, snaps = _run([], 6, live=live)
    fault = source.faults.faults[0]
    assert (fault.start_s, fault.end_s, fault.live) == (2.0, 4.0, True)
    _check(snaps[3], scenario.expected(SETTINGS, 3.5, source.faults.faults), [2])
    assert snaps[3].ct.p_w[1] < 0 < snaps[5].ct.p_w[1]


def test_starts_and_ends_are_reported_once():
    heard = []

    def live(k, source):
        if k == 0:
            source.faults.add_listener(lambda ev, f, t: heard.append((ev, f.kind, t)))

    _run([_fault("open_ct", "ct1", 1.0, end_s=2.5), _fault("reversed_ct", "ct2", 3.0)], 5,
         live=live)
    assert heard == [("start", "open_ct", 1.0), ("end", "open_ct", 2.5),
                     ("start", "reversed_ct", 3.0)]


@pytest.mark.parametrize("fault, message", [
    ({"kind": "melted", "target": "ct1"}, "faults.0.kind = 'melted': must be one of"),
    ({"kind": "open_ct", "target": "ct25"}, "faults.0.target = 'ct25': must be ctN (1..24)"),
    ({"kind": "vt_loss", "target": "main1"}, "must be mainM.a|b|c"),
    ({"kind": "open_ct", "target": "ct1", "clip_a": 3}, "not a parameter of open_ct"),
    ({"kind": "wrong_phase", "target": "ct1", "phase": "d"}, 'must be "a", "b" or "c"'),
    ({"kind": "open_ct", "target": "ct1", "start_s": 5, "end_s": 4}, "need 0 <= start_s < end_s"),
])
def test_bad_faults_are_one_line_errors(fault, message):
    with pytest.raises(SourceError, match="^<scenario>: ") as info:
        parse_scenario({"faults": [fault]})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_live_faults_are_validated():
    source = SimulatorSource(parse_scenario({}), SETTINGS)
    with pytest.raises(FaultError, match="must be ctN"):
        source.faults.set("open_ct", "main1")
    assert source.faults.faults == ()


def test_no_fault_no_change():
    """A scenario without faults synthesises exactly what it did before faults existed."""
    scenario = parse_scenario({"mains": MAINS, "loads": LOADS})
    a = SimulatorSource(scenario, SETTINGS).read(12800)
    faulted = parse_scenario({"mains": MAINS, "loads": LOADS,
                              "faults": [_fault("open_ct", "ct1", 100.0)]})
    b = SimulatorSource(faulted, SETTINGS).read(12800)
    np.testing.assert_array_equal(a.currents, b.currents)
    np.testing.assert_array_equal(a.voltages, b.voltages)
