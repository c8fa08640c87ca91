"""`pm4324 check-wiring` on the local simulation: the verdicts in words, the settings fix,
and the exit code."""

from __future__ import annotations

import json

from pm4324.cli.cli import _default_settings_path, main

SCENARIO = """
[[loads]]
cts = [1, 2, 3]
current_a = 40.0
pf = 0.9

[[faults]]
kind = "reversed_ct"
target = "ct2"
"""


def test_the_building_is_wired_right(capsys):
    assert main(["check-wiring", "--seconds", "2"]) == 0
    out = capsys.readouterr().out
    assert "No wiring problem found" in out
    assert "CT13 ok (P -8.77 kW" in out  # the PV, declared as exporting


def test_a_reversed_ct_and_its_fix(tmp_path, capsys):
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    assert main(["check-wiring", "--scenario", str(scenario), "--seconds", "2"]) == 1
    out = capsys.readouterr().out
    assert "CT2 reversed (P -8.28 kW at PF 0.90 as wired); swap its leads or set [cts.2] " \
           "reverse = true" in out
    assert "1 wiring problem\n" in out and "  [cts.2]\n  reverse = true" in out
    settings = tmp_path / "fixed.toml"
    settings.write_text(open(_default_settings_path()).read() + "\n[cts.2]\nreverse = true\n")
    assert main(["check-wiring", "--scenario", str(scenario), "--settings", str(settings),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == 0 and report["cts"][1]["status"] == "ok"
