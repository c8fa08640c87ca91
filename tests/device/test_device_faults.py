"""Device faults: energy counters set near their rollover (the uint32 registers then wrap
like an odometer); a power cycle is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from pm4324.config.settings_parse import load_settings, parse_settings
from pm4324.device.faults import ROLLOVER_KWH, apply_device_faults
from pm4324.device.meter import Meter
from pm4324.registers.map_backend import MapBackend
from pm4324.snapshot import Status
from pm4324.sources.base import SourceError
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

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


def test_power_cycle_keeps_energy_and_follows_the_power_up_rules():
    settings = parse_settings({"relays": {"1": {"power_up": "closed"}, "2": {"power_up": "last"}}})
    scenario = parse_scenario({
        "loads": [{"cts": [1, 2, 3], "current_a": 50.0, "pf": 1.0}],
        "faults": [{"kind": "power_cycle", "target": "all", "start_s": 3, "off_s": 2}]})
    source = SimulatorSource(scenario, settings)
    meter = Meter(settings, source, start_time=0.0)
    apply_device_faults(meter, source.faults)
    heard, power = [], []
    meter.add_listener(lambda s: heard.append(s.seq))
    meter.add_power_listener(power.append)
    meter.set_relay(0, False)
    meter.set_relay(1, True)
    snaps = [meter.step() for _ in range(7)]
    kept = snaps[2].ct_energy.wh_import[0]
    assert [s.seq for s in snaps] == [0, 1, 2, -1, -1, 3, 4]
    assert heard == [0, 1, 2, 3, 4]  # nothing published while off
    assert power == [False, True]
    off = snaps[3]
    assert off.status & Status.NO_DATA and np.isnan(off.ct.p_w[0]) and off.relays == (False, False)
    assert off.ct_energy.wh_import[0] == kept  # energy kept, nothing counted while off
    on = snaps[5]
    assert on.relays == (True, True)  # relay 1: power_up closed; relay 2: its last state
    assert on.time == 6.0 and on.ct.p_w[0] == pytest.approx(11_500.0, rel=1e-3)
    # counting resumes from the kept value: about one second (the fresh engine's first
    # cycle starts at its first zero crossing)
    assert 0.9 < (on.ct_energy.wh_import[0] - kept) * 3600 / 11_500.0 <= 1.0
    kinds = [e.kind for e in meter.events]
    assert kinds.index("power_down") < kinds.index("power_up", kinds.index("power_down"))


def test_power_cycle_takes_the_protocol_servers_offline():
    from pm4324.faults.switch import offline_while_off
    from pm4324.protocols.faults import ProtocolFaults

    source = SimulatorSource(parse_scenario({}), SETTINGS)
    meter = Meter(SETTINGS, source, start_time=0.0)
    apply_device_faults(meter, source.faults)
    protocol = ProtocolFaults("m")
    offline_while_off(meter, protocol)
    meter.step()
    source.faults.set("power_cycle", "all", {"off_s": 1})
    meter.step()
    assert "offline" in protocol.active()
    meter.step()
    assert protocol.active() == {}


def test_power_cycle_in_whole_seconds():
    with pytest.raises(SourceError, match="a power cycle starts on a whole second"):
        parse_scenario({"faults": [{"kind": "power_cycle", "target": "all", "start_s": 1.5}]})
    with pytest.raises(SourceError, match="off_s = 0.5: must be a number from 1"):
        parse_scenario({"faults": [{"kind": "power_cycle", "target": "all", "off_s": 0.5}]})
