"""Device faults: energy counters set near their rollover (the uint32 registers then wrap
like an odometer); a power cycle is refused with a reason."""

from __future__ import annotations

import pytest

from pm4324.config.settings import load_settings
from pm4324.device.faults import ROLLOVER_KWH, apply_device_faults
from pm4324.device.meter import Meter
from pm4324.registers.map_backend import MapBackend
from pm4324.sources.base import SourceError
from pm4324.sources.faults import FaultError
from pm4324.sources.simulator import SimulatorSource, parse_scenario

SETTINGS = load_settings(None)  # word order low-first
CT1_KWH_U32 = 0x11A8


def _u32(backend: MapBackend, address: int) -> int:
    lo, hi = backend.read_registers("input", address, 2)
    return lo | hi << 16


def test_energy_rollover_presets_the_counters_and_the_register_wraps():
    scenario = parse_scenario({
        "loads": [{"cts": [1, 2, 3], "current_a": 50.0, "pf": 1.0}],
        "faults": [{"kind": "energy_rollover", "target": "meter1", "start_s": 1,
                    "below_kwh": 0.01}]})
    source = SimulatorSource(scenario, SETTINGS)
    meter = Meter(SETTINGS, source, start_time=0.0)
    apply_device_faults(meter, source.faults)
    backend = MapBackend(meter)
    p = scenario.expected(SETTINGS, 0.5)[0]["p_w"]  # 11.5 kW: 3.19 Wh a second per CT
    snaps = [meter.step() for _ in range(6)]
    top = ROLLOVER_KWH * 1000
    assert snaps[0].ct_energy.wh_import[0] < 10
    # preset at t = 1 s to 10 Wh short of the rollover, then a second of energy on top
    assert snaps[1].ct_energy.wh_import[0] == pytest.approx(top - 10 + p / 3600, abs=0.1)
    assert snaps[1].ct_energy.wh_import[3] < 20  # CT4 (Meter 2) untouched
    assert snaps[1].meter_energy.wh_import[0] == pytest.approx(top - 10 + 3 * p / 3600, abs=0.3)
    wh = snaps[5].ct_energy.wh_import[0]
    assert wh > top  # the meter keeps counting; its uint32 register rolls over
    assert _u32(backend, CT1_KWH_U32) == round(wh / 10) % 2**32 < 2
    assert any(e.kind == "energy_preset" and "Meter 1" in e.text for e in meter.events)


def test_power_cycle_is_refused_with_the_reason():
    with pytest.raises(SourceError, match="power_cycle is not simulated .* stop `pm4324 run`"):
        parse_scenario({"faults": [{"kind": "power_cycle", "target": "all"}]})
    source = SimulatorSource(parse_scenario({}), SETTINGS)
    with pytest.raises(FaultError, match="energy is kept in the state store"):
        source.faults.set("power_cycle", "all")
