"""Writes: validated first, applied once and atomically, or refused with nothing changed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.config.settings import MeterSettings, Settings, Wiring
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.codecs import decode
from pm4324.registers.image import MapBackend
from pm4324.registers.table import parse_map

ADDRESS, VALUE = ExceptionCode.ILLEGAL_DATA_ADDRESS, ExceptionCode.ILLEGAL_DATA_VALUE


def refused(backend: MapBackend, meter: FakeMeter, address: int, values: list[int]):
    before = meter.settings
    with pytest.raises(AccessError) as info:
        backend.write_registers(address, values)
    assert meter.settings is before and meter.applied == [] and meter.resets == []
    return info.value.code


def test_ct_ratio_write_is_applied_once_and_read_back(meter):
    b = MapBackend(meter)
    b.write_registers(0x1002, [250])
    assert len(meter.applied) == 1 and meter.settings.meters[2].ct_ratio == 250.0
    assert b.read_registers("holding", 0x1002, 1) == [250]


def test_block_write_is_one_settings_change(meter):
    b = MapBackend(meter)
    values = [10, 20, 30, 40, 50, 60, 70, 80, 150, 200, 1, 2, 3, 0, 0, 0, 4, 0]
    b.write_registers(0x1000, values)
    assert len(meter.applied) == 1
    s = meter.settings
    assert [m.ct_ratio for m in s.meters] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [m.pt_ratio for m in s.mains] == [1.5, 2.0]
    assert [m.wiring.code for m in s.meters] == [1, 2, 3, 0, 0, 0, 4, 0]
    assert b.read_registers("holding", 0x1000, 18) == values
    assert decode("float32", b.read_registers("input", 0x136A, 2)) == 3.0  # Meter 3 wiring


def test_writing_back_the_same_values_changes_nothing(meter):
    b = MapBackend(meter)
    b.write_registers(0x1000, b.read_registers("holding", 0x1000, 0x14))
    assert meter.applied == [] and meter.resets == []


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (0x1000, [0]),  # CT ratio 0
        (0x1008, [0]),  # PT ratio 0.00
        (0x100A, [5]),  # wiring code 5
        (0x1012, [2]),  # word order 2
        (0x1013, [10]),  # reset 10
        (0x1000, [200, 300, 0]),  # one bad value in a block: nothing applied
    ],
)
def test_out_of_range_is_exception_03_and_changes_nothing(meter, address, values):
    assert refused(MapBackend(meter), meter, address, values) == VALUE


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (0x1014, [1]),  # Modbus address: read-only
        (0x1012, [0, 0, 5]),  # spans into the read-only address
        (0x1017, [0]),  # unmapped
        (0x0FFF, [1, 100]),  # starts before the block
    ],
)
def test_read_only_or_unmapped_is_exception_02_and_changes_nothing(meter, address, values):
    assert refused(MapBackend(meter), meter, address, values) == ADDRESS


@pytest.mark.parametrize("value", [0, 1, 100, 65535])  # 0 is below the row's range
def test_second_pt_ratio_on_a_pm4324_is_exception_02_whatever_the_value(value):
    s = Settings(model="PM-4324", mains=(Settings().mains[0],))
    meter = FakeMeter(s, make_snapshot(s))
    assert refused(MapBackend(meter), meter, 0x1009, [value]) == ADDRESS


@pytest.mark.parametrize(("raw", "ratio"), [(1, 0.01), (65535, 655.35)])
def test_pt_ratio_takes_the_ends_of_its_range(meter, raw, ratio):
    """230 V / 0.01 is 23 kV at the terminals: taken as a real meter does (a warning, not 03)."""
    b = MapBackend(meter)
    b.write_registers(0x1008, [raw, raw])
    assert [m.pt_ratio for m in meter.settings.mains] == [ratio, ratio]
    assert b.read_registers("holding", 0x1008, 2) == [raw, raw]


def test_relay_mode_coils_are_the_relay_mode_setting(meter):
    b = MapBackend(meter)
    assert b.read_bits("coil", 0x1010, 2) == [False, False]
    b.write_coils(0x1011, [True])
    assert [r.mode for r in meter.settings.relays.relays] == ["manual", "alarm"]
    assert b.read_bits("coil", 0x1010, 2) == [False, True]
    assert b.read_registers("holding", 0x1020, 2) == [0, 1]  # relayK_mode: the same setting
    with pytest.raises(AccessError) as info:
        b.write_coils(0x1001, [True])  # relay 2 now follows its rules
    assert info.value.code == ADDRESS
    b.write_coils(0x1010, [False, False])
    assert [r.mode for r in meter.settings.relays.relays] == ["manual", "manual"]
    assert len(meter.applied) == 2  # the write of an unchanged mode is no settings change


def test_half_of_a_32_bit_setting_is_exception_02():
    """No 32-bit setting is in the map today; the rule is tested on a table that has one."""
    csv = (
        "name,table,address,type,unit,scale,min,max,access,source,evidence,description\n"
        "ct1,holding,0x1000,uint32,,1,1,65535,RW,setting:meters.1.ct_ratio,ours,ratio\n"
    )
    meter = FakeMeter()
    b = MapBackend(meter, parse_map(csv))
    assert refused(b, meter, 0x1000, [7]) == ADDRESS
    assert refused(b, meter, 0x1001, [0]) == ADDRESS
    assert refused(b, meter, 0x1000, [0, 1]) == VALUE  # 65536 (low word first)
    b.write_registers(0x1000, [7, 0])
    assert meter.settings.meters[0].ct_ratio == 7.0


def test_word_order_write_switches_every_32_bit_value(meter, snapshot):
    b = MapBackend(meter)
    low_first = b.read_registers("input", 0x1100, 2)
    b.write_registers(0x1012, [1])
    assert meter.settings.modbus.word_order == "high-first"
    assert b.read_registers("input", 0x1100, 2) == low_first[::-1]


def test_energy_reset_command(meter):
    b = MapBackend(meter)
    b.write_registers(0x1013, [3])
    b.write_registers(0x1013, [9])
    b.write_registers(0x1013, [0])
    assert meter.resets == [3, None] and meter.applied == []
    assert b.read_registers("holding", 0x1013, 1) == [0]


def test_wiring_away_from_1p2w_resets_circuit_phases():
    meters = list(Settings().meters)
    meters[0] = MeterSettings(wiring=Wiring.W1P2W_1CT, circuit_phases=("b", "b", "a"))
    s = replace(Settings(), meters=tuple(meters))
    meter = FakeMeter(s)
    b = MapBackend(meter)
    b.write_registers(0x100A, [4])  # still 1P2W-1CT: phases kept
    assert meter.settings.meters[0].circuit_phases == ("b", "b", "a")
    b.write_registers(0x100A, [0])
    assert meter.settings.meters[0].wiring is Wiring.W3P4W_3CT
    assert meter.settings.meters[0].circuit_phases == ("a", "b", "c")


def test_relay_coils(meter):
    b = MapBackend(meter)
    b.write_coils(0x1001, [True])
    assert meter.relays == (False, True) and b.read_bits("coil", 0x1000, 2) == [False, True]
    b.write_coils(0x1000, [True, False])
    assert meter.relays == (True, False) and b.read_bits("coil", 0x1000, 2) == [True, False]
    for address, values in [(0x1001, [True, True]), (0x1012, [True])]:
        with pytest.raises(AccessError) as info:
            b.write_coils(address, values)
        assert info.value.code == ADDRESS
    assert meter.relays == (True, False)


def test_writes_reach_the_real_meter_and_survive_a_restart(tmp_path):
    from pm4324.cli.cli import _default_settings_path
    from pm4324.config.settings_parse import load_settings
    from pm4324.device.meter import Meter
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    path = tmp_path / "settings.toml"
    path.write_text(Path(_default_settings_path()).read_text(encoding="utf-8"))
    settings = load_settings(path)
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings),
                  settings_path=str(path), start_time=0.0)  # fmt: skip
    b = MapBackend(meter)
    meter.step()
    assert b.read_registers("input", 0x1006, 2) == [0, 0]  # second 0 is served
    b.write_registers(0x1007, [1234, 100, 120])  # CT ratio Meter 8, PT ratios 1.00 / 1.20
    b.write_registers(0x1012, [1])
    b.write_coils(0x1000, [True])
    meter.step()
    assert decode("uint32", b.read_registers("input", 0x1006, 2), "high-first") == 1
    assert meter.wait_settings_saved()  # saved in a thread: no reply waits for the disk
    reloaded = load_settings(path)  # what the meter reads after a restart
    assert reloaded.meters[7].ct_ratio == 1234.0
    assert [m.pt_ratio for m in reloaded.mains] == [1.0, 1.2]
    assert reloaded.modbus.word_order == "high-first"
    assert meter.relays == (True, False)


def test_rewriting_the_same_wiring_keeps_per_ct_phases():
    meters = list(Settings().meters)
    meters[0] = MeterSettings(circuit_phases=("a", "c", "c"), ct_reverse=(False, True, False))
    meter = FakeMeter(replace(Settings(), meters=tuple(meters)))
    b = MapBackend(meter)
    b.write_registers(0x100A, [0])  # 3P4W-3CT again: the CTs' phases and reverse flags stay
    assert meter.settings.meters[0].circuit_phases == ("a", "c", "c")
    assert meter.settings.meters[0].ct_reverse == (False, True, False)
    b.write_registers(0x100A, [1])  # 3P3W-3CT: its CTs' phases are fixed
    assert meter.settings.meters[0].circuit_phases == ("a", "b", "c")
