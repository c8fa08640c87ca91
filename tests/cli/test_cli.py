"""The CLI as a user runs it: real subprocesses, clear errors, no tracebacks."""

from __future__ import annotations

import json

import pytest

from peers import pm4324


def test_run_json_lines_one_per_second():
    r = pm4324("run", "--speed", "50", "--seconds", "3", "--json", "--no-modbus")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [d["seq"] for d in lines] == [0, 1, 2]
    assert lines[-1]["meters"][0]["wiring"] == "3P4W-3CT"
    assert lines[-1]["cts"][0]["p_w"] > 0


def test_run_table_shows_meters():
    r = pm4324("run", "--speed", "50", "--seconds", "2", "--meter", "3", "--no-modbus")
    assert r.returncode == 0, r.stderr
    assert "1P2W-1CT" in r.stdout and "main 1:" in r.stdout and "total" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (("run", "--settings", "/nonexistent.toml"), "does not exist"),
    (("run", "--scenario", "/nonexistent.toml"), "does not exist"),
    (("run", "--speed", "-1"), "positive"),
])
def test_bad_input_is_one_clear_line(args, fragment):
    r = pm4324(*args)
    assert r.returncode == 2
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_settings_value(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[meters.2]\nwiring = "3P5W"\n')
    r = pm4324("run", "--settings", str(f), "--seconds", "1")
    assert r.returncode == 2
    assert f"{f}: meters.2.wiring = '3P5W': must be one of" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_scenario_value(tmp_path):
    f = tmp_path / "sc.toml"
    f.write_text('[[loads]]\ncts = [25]\ncurrent_a = 3\n')
    r = pm4324("run", "--scenario", str(f), "--seconds", "1")
    assert r.returncode == 2 and "loads.0.cts" in r.stderr and "Traceback" not in r.stderr


def test_expected_prints_truth():
    r = pm4324("expected", "--json", "--at", "5")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 24 and rows[0]["p_w"] > 0 and rows[12]["p_w"] < 0
