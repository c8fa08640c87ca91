"""The newcomer's path of docs/relays-and-alarms.md, run as written: the documented rule, on
the built-in building, trips relay 1 in `pm4324 run` at the documented seconds."""

from __future__ import annotations

import json
from pathlib import Path

from peers import pm4324
from pm4324.cli.cli import _default_settings_path

ROOT = Path(__file__).resolve().parents[2]


def documented_settings(tmp_path: Path) -> Path:
    doc = (ROOT / "docs" / "relays-and-alarms.md").read_text(encoding="utf-8")
    snippet = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my-meter.toml"
    path.write_text(Path(_default_settings_path()).read_text(encoding="utf-8") + "\n" + snippet)
    return path


def test_documented_over_current_alarm_trips_relay_1(tmp_path):
    settings = documented_settings(tmp_path)
    r = pm4324("run", "--settings", str(settings), "--speed", "50", "--seconds", "20", "--json",
               "--no-modbus", "--meter", "4")
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / "var" / "my-meter.state.db") in r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    # the lift draws 30 A from 0 to 15 s: raised at second 2 (on-delay 2), cleared at 18
    assert [d["relays"][0] for d in lines] == [False] * 2 + [True] * 16 + [False] * 2
    assert [d["alarms"][0]["active"] for d in lines] == [d["relays"][0] for d in lines]
    assert lines[0]["relay_modes"] == ["alarm", "manual"]
    events = pm4324("events", "--settings", str(settings)).stdout
    assert "alarm_raised        alarm 1 (lift over-current)" in events
    assert "relay 1 closed (alarm)" in events and "relay 1 open (alarm)" in events


def test_run_table_shows_relay_and_alarm(tmp_path):
    r = pm4324("run", "--settings", str(documented_settings(tmp_path)), "--speed", "50",
               "--seconds", "3", "--no-modbus", "--meter", "4")
    assert r.returncode == 0, r.stderr
    last = r.stdout.split("PM-4324A  second 2")[1]
    assert last.startswith(" ") and "R1 CLOSED (alarm)  R2 open (manual)" in last
    assert "alarm 1 -> R1: lift over-current: ACTIVE  (value 30" in last
