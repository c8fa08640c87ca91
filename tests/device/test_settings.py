from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pm4324.config.settings import Settings, SettingsError, Wiring, voltage_range_warnings
from pm4324.config.settings_file import save_settings, settings_to_toml
from pm4324.config.settings_parse import load_settings, parse_settings

BUILDING = Path(__file__).resolve().parents[2] / "src/pm4324/data/building-settings.toml"


def test_defaults_are_documented_values():
    s = parse_settings({})
    assert s.model == "PM-4324A" and s.n_mains == 2
    assert s.modbus.baud == 19200 and s.modbus.address == 1
    assert s.modbus.word_order == "low-first"
    assert all(m.wiring is Wiring.W3P4W_3CT and m.ct_ratio == 100 for m in s.meters)


def test_building_settings_load():
    s = load_settings(BUILDING)
    assert s.meters[2].wiring is Wiring.W1P2W_1CT
    assert s.meters[0].ct_ratio == 200
    assert s.main_of_ct(12) == 0 and s.main_of_ct(13) == 1


@pytest.mark.parametrize(
    "data, key, fragment",
    [
        ({"model": "PM-9999"}, "model", "must be one of PM-4324, PM-4324A"),
        ({"meters": {"3": {"wiring": "3P5W"}}}, "meters.3.wiring", "must be one of 3P4W-3CT"),
        ({"meters": {"9": {}}}, "meters.9", "numbered 1 to 8"),
        ({"meters": {"1": {"ct_type_a": 150}}}, "meters.1.ct_type_a", "60, 100, 200, 300, 400"),
        ({"meters": {"1": {"ct_ratio": 0}}}, "meters.1.ct_ratio", "from 1 to 65535"),
        ({"meters": {"1": {"ct_ratio": 5, "ct_type_a": 60}}}, "meters.1.ct_ratio", "not both"),
        ({"modbus": {"address": 248}}, "modbus.address", "1 to 247"),
        ({"modbus": {"baud": 4800}}, "modbus.baud", "9600, 19200, 38400, 115200"),
        ({"modbus": {"data_format": "N71"}}, "modbus.data_format", "N81, N82, E81"),
        ({"canopen": {"node_id": 128}}, "canopen.node_id", "1 to 127"),
        ({"canopen": {"bitrate": 100000}}, "canopen.bitrate", "125000"),
        ({"mains": {"1": {"nominal_frequency_hz": 55}}}, "mains.1.nominal_frequency_hz", "50, 60"),
        ({"mains": {"1": {"nominal_voltage_v": 600000}}}, "mains.1.nominal_voltage_v", "500000"),
        ({"model": "PM-4324", "mains": {"2": {}}}, "mains.2", "only PM-4324A"),
        ({"modbus": {"tcp_listen": "5020"}}, "modbus.tcp_listen", "HOST:PORT"),
        ({"colour": "red"}, "colour", "not a known setting"),
        ({"meters": {"2": {"wiring": "3P3W-3CT", "circuit_phases": ["a", "a", "b"]}}},
         "meters.2.circuit_phases", "only to wirings 3P4W-3CT and 1P2W-1CT"),
        ({"meters": {"2": {"wiring": "3P3W-2CT"}}, "cts": {"5": {"phase": "a"}}},
         "cts.5.phase", "only to wirings 3P4W-3CT and 1P2W-1CT"),
        ({"cts": {"25": {"reverse": True}}}, "cts.25", "numbered 1 to 24"),
        ({"cts": {"3": {"direction": "out"}}}, "cts.3.direction", "import, export, both"),
        ({"cts": {"3": {"pf_lagging_min": 1.5}}}, "cts.3.pf_lagging_min", "from 0 to 1"),
        ({"replay": {"inputs": {"CT25": "I1"}}}, "replay.inputs.CT25", "not a meter input"),
        ({"sample_rate_hz": "fast"}, "sample_rate_hz", "must be a number"),
    ],
)
def test_bad_settings_name_key_value_and_allowed(data, key, fragment):
    with pytest.raises(SettingsError) as err:
        parse_settings(data, "x.toml")
    assert err.value.key == key
    assert str(err.value).startswith(f"x.toml: {key} = ")
    assert fragment in str(err.value)


def test_file_errors_are_settings_errors(tmp_path):
    with pytest.raises(SettingsError, match="does not exist: check the path given to --settings"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("model = \n")
    with pytest.raises(SettingsError, match="valid TOML"):
        load_settings(bad)


def test_save_round_trip_is_atomic_and_complete(tmp_path):
    s = load_settings(BUILDING).with_meter(2, ct_ratio=250.0, wiring=Wiring.W3P3W_2CT)
    path = tmp_path / "s.toml"
    save_settings(s, path)
    again = parse_settings(tomllib.loads(path.read_text()), str(path))
    assert replace(again, source_path="") == replace(s, source_path="")
    assert not list(tmp_path.glob("*.tmp"))
    assert "ct_ratio = 250" in settings_to_toml(s)


def test_runtime_change_is_validated():
    with pytest.raises(SettingsError):
        Settings().with_meter(1, ct_ratio=70000.0)
    with pytest.raises(SettingsError):
        Settings().with_main(1, pt_ratio=0.0)


@pytest.mark.parametrize("pt_ratio", [0.01, 655.35])
def test_nominal_voltage_outside_the_inputs_is_a_warning_not_an_error(pt_ratio):
    """230 V over PT 0.01 is 23 kV at the terminals, over 655.35 it is 0.35 V: both load."""
    s = parse_settings({"mains": {"1": {"pt_ratio": pt_ratio}}}, "x.toml")
    assert s.mains[0].pt_ratio == pt_ratio
    [warning] = voltage_range_warnings(s)
    assert warning.startswith("main 1: nominal 230 V / PT ratio") and "10..500 V" in warning
    assert voltage_range_warnings(Settings()) == []
