"""Fleet, hub and billing files are read by one helper (config/toml_file.py): a missing,
unreadable or invalid file is one error line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pm4324.billing.config import BillingConfigError, load_building
from pm4324.config.settings import SettingsError
from pm4324.fleet.config import load_fleet, parse_fleet
from pm4324.hub.config import load_hub, parse_hub

LOADERS = [(load_fleet, SettingsError), (load_hub, SettingsError),
           (load_building, BillingConfigError)]


def _bad_files(tmp: Path) -> list[tuple[Path, str]]:
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text("a = = 1\n", encoding="utf-8")
    latin1 = tmp / "latin1.toml"
    latin1.write_bytes(b"name = \"Caf\xe9\"\n")
    directory = tmp / "dir.toml"
    directory.mkdir()
    return [(tmp / "nope.toml", r"nope\.toml: \(file\) = '.*nope\.toml': file not found$"),
            (directory, r"dir\.toml: \(file\) = '.*dir\.toml': cannot be read: "),
            (latin1, r"latin1\.toml: \(file\) = '.*latin1\.toml': cannot be read: .*utf-8"),
            (bad_toml, r"bad\.toml: \(syntax\) = 'Invalid value .*line 1.*': must be valid TOML$")]


@pytest.mark.parametrize(("load", "error"), LOADERS, ids=["fleet", "hub", "billing"])
def test_unusable_file_is_one_line(tmp_path: Path, load, error) -> None:
    (tmp_path / load.__name__).mkdir()
    for path, message in _bad_files(tmp_path / load.__name__):
        with pytest.raises(error, match=message) as info:
            load(path)
        assert "\n" not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(("parse", "data", "key"), [
    (parse_fleet, {"meters": [{"colour": "red"}]}, "meters.1.colour"),
    (parse_hub, {"meters": [{"key": "a", "tcp": "127.0.0.1:5020", "colour": "red"}]},
     "meters.1.colour"),
], ids=["fleet", "hub"])
def test_an_unknown_key_names_the_known_ones(parse, data, key):
    with pytest.raises(SettingsError, match=r"is not a known key; known: .*\bkey\b") as exc:
        parse(data, "x.toml")
    assert exc.value.key == key


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize(("parse", "data", "key"), [
    (parse_fleet, lambda v: {"meters": [{}], "fleet": {"sample_rate_hz": v}},
     "fleet.sample_rate_hz"),
    (parse_hub, lambda v: {"meters": [{"key": "a", "tcp": "127.0.0.1:5020", "poll_s": v}]},
     "meters.1.poll_s"),
], ids=["fleet", "hub"])
def test_a_number_must_be_finite(parse, data, key, value):
    with pytest.raises(SettingsError, match="must be a number from") as exc:
        parse(data(value), "x.toml")
    assert exc.value.key == key


def test_the_scenario_file_checks_its_tables_the_same_way():
    from pm4324.sources.scenario import ScenarioError
    from pm4324.sources.scenario_parse import parse_scenario

    with pytest.raises(ScenarioError, match=r"mains\.1\.colour = 'red': is not a known scenario "
                       r"key; known: drift_hz, "):
        parse_scenario({"mains": {"1": {"colour": "red"}}}, "s.toml")
    with pytest.raises(ScenarioError, match=r"mains\.1\.voltage_v = inf: must be a number from 0"):
        parse_scenario({"mains": {"1": {"voltage_v": float("inf")}}}, "s.toml")
