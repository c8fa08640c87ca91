"""FLEET.toml: compact groups expand to members with their own key, seed, CT ratio and load
factors; mistakes are one line naming the key, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from pm4324.cli.cli import main
from pm4324.config.settings import SettingsError
from pm4324.fleet.config import load_fleet, parse_fleet
from pm4324.sources.scenario_parse import load_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleet"


def test_sixty_meters_seeds_and_ct_ratios_varied():
    config = load_fleet(EXAMPLES / "building-60.toml")
    members = config.members
    assert [m.key for m in members[:2]] == ["bldg-001", "bldg-002"] and len(members) == 60
    assert [m.scenario.seed for m in members] == list(range(1, 61))
    assert [m.settings.meters[0].ct_ratio for m in members[:4]] == [100, 200, 400, 100]
    assert all(m.settings.meters[7].ct_ratio == m.settings.meters[0].ct_ratio for m in members)
    base = load_scenario(None)
    for m in members[:5]:  # each load's current is the base's times the member's own factor
        assert all(0.8 <= k <= 1.2 for k in m.load_scale)
        assert [ld.current_a for ld in m.scenario.loads] == pytest.approx(
            [ld.current_a * k for ld, k in zip(base.loads, m.load_scale)])
    assert members[0].load_scale != members[1].load_scale
    assert load_fleet(EXAMPLES / "building-60.toml").members[7].load_scale == members[7].load_scale
    assert config.tcp_place(7) == (5107, 1)


def test_gateway_places_247_units_per_port():
    config = load_fleet(EXAMPLES / "gateway.toml")
    assert len(config.members) == 240 and config.members[200].key == "plant-01"
    assert config.tcp_place(0) == (5200, 1) and config.tcp_place(239) == (5200, 240)
    big = load_fleet(EXAMPLES / "big.toml")
    assert len(big.members) == 10_000
    assert big.tcp_place(246) == (5300, 247) and big.tcp_place(247) == (5301, 1)


@pytest.mark.parametrize(("data", "key"), [
    ({"meters": []}, "meters"),
    ({"meters": [{"count": 0}]}, "meters.1.count"),
    ({"meters": [{"count": 3, "key": "same"}]}, "meters.1.key"),
    ({"meters": [{"count": 3, "key": "m-{x}"}]}, "meters.1.key"),
    ({"meters": [{"count": 3, "seeds": [1, 5]}]}, "meters.1.seeds"),
    ({"meters": [{"ct_ratios": [0]}]}, "meters.1.ct_ratios"),
    ({"meters": [{"load_scale": [2, 1]}]}, "meters.1.load_scale"),
    ({"meters": [{"colour": "red"}]}, "meters.1.colour"),
    ({"meters": [{"key": "a"}, {"key": "a"}]}, "meters.2.key"),
    ({"meters": [{}], "fleet": {"fidelity": "exact"}}, "fleet.fidelity"),
    ({"meters": [{}], "modbus": {"mode": "bus"}}, "modbus.mode"),
    ({"meters": [{"count": 100}], "modbus": {"port": 65500}}, "modbus.port"),
    ({"meters": [{}], "rtu": {"baud": 1234}}, "rtu.baud"),
])
def test_bad_fleet_files_name_the_key(data, key):
    with pytest.raises(SettingsError) as exc:
        parse_fleet(data, "fleet.toml")
    assert exc.value.key == key


def test_fleet_command_says_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "fleet.toml"
    path.write_text('[[meters]]\ncount = 2\nscenario = "nowhere.toml"\n')
    assert main(["fleet", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "meters.1.scenario" in err and "nowhere.toml" in err
    path.write_text("[[meters]\n")
    assert main(["fleet", str(path)]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
