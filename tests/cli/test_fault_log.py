"""`pm4324 run --fault-log FILE` end to end: a scenario's faults, one JSON line each at their
start and end, on the clock of the seconds the meter prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / "building-settings.toml"
SCENARIO = """
[[loads]]
cts = [1, 2, 3]
current_a = 50.0

[[faults]]
kind = "reversed_ct"
target = "ct2"
start_s = 1
end_s = 2.5

[[faults]]
kind = "energy_rollover"
target = "meter1"
start_s = 2
below_kwh = 0.5
"""


def test_run_writes_the_fault_log(tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text(SETTINGS.read_text() + f'\n[store]\npath = "{tmp_path / "state.db"}"\n')
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    log = tmp_path / "faults.jsonl"
    r = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(settings),
                        "--scenario", str(scenario), "--no-modbus", "--json", "--speed", "20",
                        "--seconds", "4", "--fault-log", str(log)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seconds = [json.loads(x) for x in r.stdout.splitlines()]
    t0 = seconds[0]["time"] - 1.0  # the meter's clock at scenario time 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["event"], x["fault"], x["target"]) for x in lines] == [
        ("start", "reversed_ct", "ct2"), ("start", "energy_rollover", "meter1"),
        ("end", "reversed_ct", "ct2")]
    assert abs(lines[0]["start_unix"] - (t0 + 1.0)) < 1e-3  # JSON times are to the ms
    assert abs(lines[2]["end_unix"] - (t0 + 2.5)) < 1e-3
    assert lines[1]["parameters"] == {"below_kwh": 0.5}
    assert seconds[1]["cts"][1]["p_w"] < 0 < seconds[3]["cts"][1]["p_w"]
    assert seconds[3]["meters"][0]["kwh_import"] > 42_949_672.0
