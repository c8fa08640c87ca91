"""The state store as a user meets it: `run` restarts where it stopped, refuses damaged or
missing state with one clear line, `events` and `reset-energy` work on the state file."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from peers import SMALL_SCENARIO, pm4324
from pm4324.device.store import Store, peek

LIMIT = 60.0
SETTINGS = """model = "PM-4324"
sample_rate_hz = 2000
[store]
path = "state/meter.db"
"""


@pytest.fixture
def meter_files(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "s.toml").write_text(SETTINGS)
    (tmp_path / "sc.toml").write_text(SMALL_SCENARIO)
    return tmp_path / "s.toml", tmp_path / "sc.toml"


def run(settings: Path, scenario: Path, *extra: str) -> subprocess.CompletedProcess:
    return pm4324("run", "--settings", str(settings), "--scenario", str(scenario), "--speed",
                  "50", "--seconds", "2", "--json", "--no-modbus", *extra)


def kwh(r: subprocess.CompletedProcess, line: int = -1) -> float:
    return json.loads(r.stdout.splitlines()[line])["meters"][0]["kwh_import"]


def test_run_restarts_where_it_stopped_and_says_where(meter_files):
    first = run(*meter_files)
    assert first.returncode == 0, first.stderr
    db = meter_files[0].parent / "state" / "meter.db"
    assert f"State file {db}" in first.stderr and "first_start" in first.stderr
    again = run(*meter_files)
    assert again.returncode == 0, again.stderr
    assert "boot 2" in again.stderr
    one_second = kwh(first, -1) - kwh(first, 0)
    assert kwh(first) < kwh(again, 0) <= kwh(first) + 1.5 * one_second
    assert peek(db).meter.values()[0, 0] / 1000 == pytest.approx(kwh(again), abs=1e-9)


def test_damaged_state_is_one_clear_line_and_reset_store_is_explicit(meter_files):
    first = run(*meter_files)
    assert first.returncode == 0
    db = meter_files[0].parent / "state" / "meter.db"
    ring = db.with_suffix(".ring")
    db.write_bytes(b"")  # the event log is damaged: the counters are in the ring
    r = run(*meter_files)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "empty" in r.stderr and ".damaged-" in r.stderr
    assert kwh(first) < kwh(r, 0)  # nothing lost
    db.write_bytes(b"")
    ring.write_bytes(b"\xff" * 4096)  # and now the ring too: no intact record anywhere
    r = run(*meter_files)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert str(ring) in r.stderr and "empty" in r.stderr and "--reset-store" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run(*meter_files, "--reset-store")
    assert r.returncode == 0 and "store_reset" in r.stderr
    assert kwh(r, 0) < kwh(r, 1)  # from zero, as asked
    assert any(".reset-" in p.name for p in db.parent.iterdir())


def test_missing_state_after_a_run_is_refused(meter_files):
    assert run(*meter_files).returncode == 0
    for p in (meter_files[0].parent / "state").glob("meter.*"):
        p.unlink()
    r = run(*meter_files)
    assert r.returncode == 2 and "has run before" in r.stderr and "Traceback" not in r.stderr


def test_events_command(meter_files):
    assert run(*meter_files).returncode == 0
    assert run(*meter_files).returncode == 0
    r = pm4324("events", "--settings", str(meter_files[0]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" power_up ") == 2 and " first_start " in r.stdout
    r = pm4324("events", "--settings", str(meter_files[0]), "--json", "--last", "1")
    event = json.loads(r.stdout)
    assert event["boot"] == 2 and event["kind"] in ("power_up", "relay")
    r = pm4324("events", "--settings", str(meter_files[0].with_name("none.toml")))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_reset_energy_of_a_stopped_meter(meter_files):
    assert run(*meter_files).returncode == 0
    db = meter_files[0].parent / "state" / "meter.db"
    before = peek(db)
    r = pm4324("reset-energy", "--meter", "1", "--settings", str(meter_files[0]))
    assert r.returncode == 0, r.stderr
    assert "Meter 1" in r.stdout
    after = peek(db)
    assert after.meter.values()[0].sum() == 0 and after.ct.values()[:3].sum() == 0
    assert after.boot == before.boot and after.seq == before.seq + 1
    events = pm4324("events", "--settings", str(meter_files[0]), "--last", "1").stdout
    assert "energy_reset" in events and "meter stopped" in events


def test_reset_energy_of_a_running_meter_needs_tcp(meter_files):
    assert run(*meter_files).returncode == 0
    settings = meter_files[0]
    held = Store.open(settings.parent / "state" / "meter.db", settings.with_suffix(".meter-id"))
    try:  # what a running meter does: hold the state file
        r = pm4324("reset-energy", "--all", "--settings", str(settings))
    finally:
        held.close()
    assert r.returncode == 2 and "in use" in r.stderr and "--tcp" in r.stderr


async def test_reset_energy_over_modbus(tmp_path):
    from pm4324.cli.cli import main
    from pm4324.config.settings_parse import load_settings
    from pm4324.device.meter import Meter
    from pm4324.protocols.modbus import TcpServer
    from pm4324.registers.image import MapBackend
    from pm4324.sources.scenario_parse import parse_scenario
    from pm4324.sources.simulator import SimulatorSource

    settings = load_settings(None)
    meter = Meter(settings, SimulatorSource(parse_scenario(
        {"loads": [{"cts": [4, 5, 6], "current_a": 10.0}]}), settings), start_time=0.0)
    meter.step()
    assert meter.meter_registers.values()[1, 0] > 0
    server = TcpServer(MapBackend(meter), unit_id=1, port=0)
    await server.start()
    try:
        argv = ["reset-energy", "--meter", "2", "--tcp", f"127.0.0.1:{server.port}"]
        rc = await asyncio.wait_for(asyncio.to_thread(main, argv), LIMIT)
    finally:
        await server.stop()
    assert rc == 0 and meter.meter_registers.values()[1].sum() == 0
    assert meter.events[-1].kind == "energy_reset"
