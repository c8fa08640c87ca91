"""HUB.toml mistakes are one line naming the key and exit code 2; names are validated."""

from __future__ import annotations

import pytest

from pm4324.cli.cli import main
from pm4324.config.settings import SettingsError
from pm4324.config.settings_parse import parse_settings
from pm4324.hub import parse_hub

GOOD = {"key": "a", "tcp": "127.0.0.1:5020"}


@pytest.mark.parametrize(("meters", "key"), [
    ([{**GOOD, "key": "bad key"}], "meters.1.key"),
    ([{"key": "a"}], "meters.1.tcp"),
    ([{**GOOD, "rtu": "/dev/ttyS0"}], "meters.1.tcp"),
    ([{**GOOD, "poll_s": 0}], "meters.1.poll_s"),
    ([{**GOOD, "meters": [9]}], "meters.1.meters"),
    ([{**GOOD, "pipeline": 0}], "meters.1.pipeline"),
    ([{**GOOD, "pipeline": 17}], "meters.1.pipeline"),
    ([{**GOOD, "colour": "red"}], "meters.1.colour"),
    ([{**GOOD, "names": {"cts": {"25": "x"}}}], "meters.1.names.cts"),
    ([GOOD, GOOD], "meters.key"),
    ([{"key": "a", "rtu": "/dev/x", "unit": 2}, {"key": "b", "rtu": "/dev/x", "unit": 2}], "meters.b.unit"),
    ([], "meters"),
])
def test_bad_hub_files_name_the_key(meters, key):
    with pytest.raises(SettingsError) as exc:
        parse_hub({"meters": meters}, "hub.toml")
    assert exc.value.key == key


def test_hub_command_says_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "hub.toml"
    path.write_text('[[meters]]\nkey = "a"\ntcp = "127.0.0.1:5020"\nbaud = 1234\n')
    assert main(["hub", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "meters.1.baud" in err


@pytest.mark.parametrize(("meter", "why"), [
    ({"name": "x" * 65}, "at most 64"), ({"name": "two\nlines"}, "one line"),
    ({"ct_names": ["a", "b"]}, "three labels"), ({"ct_names": ["a", 3, ""]}, "at most 64"),
])
def test_labels_are_validated(meter, why):
    with pytest.raises(SettingsError, match=why):
        parse_settings({"meters": {"1": meter}})


def test_labels_round_trip_through_the_settings_file():
    from pm4324.config.settings_file import settings_to_toml

    s = parse_settings({"meters": {"3": {"name": 'Shop "3"', "ct_names": ["Shop 3 – lighting", "", "x"]}}})
    again = parse_settings(__import__("tomllib").loads(settings_to_toml(s)))
    assert again.meters[2].name == 'Shop "3"'
    assert again.meters[2].ct_names == ("Shop 3 – lighting", "", "x")
