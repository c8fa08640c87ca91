"""Relay drivers, and relays and alarms in the running meter: over Modbus, in the store, in
the event log. The simulated load switches on and off at stated seconds, so every expected
trip second follows from the scenario and the rule."""

from __future__ import annotations

import sys
import tomllib

import pytest

from pm4324.config.settings_file import save_settings
from pm4324.config.settings_parse import load_settings, parse_settings
from pm4324.device.meter import Meter
from pm4324.device.relays import (
    CommandDriver,
    GpioSysfsDriver,
    RecordingDriver,
    RelayDriverError,
    RelayModeError,
    SupervisedDriver,
)
from pm4324.device.store import Store, peek, read_events
from pm4324.registers.backend import AccessError, ExceptionCode
from pm4324.registers.codecs import encode
from pm4324.registers.image import MapBackend
from pm4324.snapshot import Status
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

# CT10 carries 30 A for 4 s, then nothing for 4 s, and so on
SCENARIO = {"loads": [{"cts": [10], "current_a": 30.0, "pf": 0.9, "on_s": 4, "off_s": 4},
                      {"cts": [1, 2, 3], "current_a": 10.0}]}
OVER_CURRENT = """
sample_rate_hz = 4000
[relays.1]
mode = "alarm"
[relays.2]
power_up = "{power_up}"
[[alarms]]
name = "CT10 over-current"
relay = 1
quantity = "i"
target = "ct:10"
threshold = 25.0
hysteresis = 2.0
on_delay_s = 1
off_delay_s = 1
latch = {latch}
"""


def settings_file(tmp_path, latch: bool = False, power_up: str = "open"):
    path = tmp_path / "meter.toml"
    text = OVER_CURRENT.format(latch=str(latch).lower(), power_up=power_up)
    save_settings(parse_settings(tomllib.loads(text), str(path)), path)
    return path


def start(path, store: bool = True, driver=None) -> Meter:
    settings = load_settings(path)
    st = Store.open(path.parent / "var" / "m.db", path.with_suffix(".meter-id")) if store else None
    return Meter(settings, SimulatorSource(parse_scenario(SCENARIO), settings),
                 settings_path=str(path), start_time=0.0, store=st, driver=driver)


# -- drivers -----------------------------------------------------------------------------------


def test_gpio_driver_writes_the_value_file(tmp_path):
    for n in (17, 27):
        (tmp_path / f"gpio{n}").mkdir()
    GpioSysfsDriver((17, 27), root=str(tmp_path)).set(1, True)
    assert (tmp_path / "gpio27" / "value").read_text() == "1"
    low = GpioSysfsDriver((17, 27), active_low=True, root=str(tmp_path))
    low.set(0, True)
    low.set(1, False)
    assert (tmp_path / "gpio17" / "value").read_text() == "0"
    assert (tmp_path / "gpio27" / "value").read_text() == "1"
    with pytest.raises(RelayDriverError, match="relay 2: cannot write .*gpio4"):
        GpioSysfsDriver((3, 4), root=str(tmp_path)).set(1, True)


def test_command_driver_runs_the_command_per_change(tmp_path):
    out = tmp_path / "log"
    d = CommandDriver((sys.executable, "-c",
                       f"open({str(out)!r}, 'a').write('{{relay}}={{state}}\\n')"))
    d.set(0, True)
    d.wait(30)
    d.set(1, False)
    d.wait(30)
    assert out.read_text() == "1=1\n2=0\n" and d.poll() == [(0, None), (1, None)]


def test_command_driver_reports_failures_and_kills_hangs(tmp_path):
    with pytest.raises(RelayDriverError, match="cannot run"):
        CommandDriver((str(tmp_path / "missing"),)).set(0, True)
    hang = CommandDriver(("tail", "-f", "/dev/null"), timeout_s=0.0)
    hang.set(1, True)
    assert hang.poll() == [(1, "relay 2: tail killed after 0 s")]


def test_failed_command_is_reported_once():
    d = CommandDriver((sys.executable, "-c", "raise SystemExit(3)"))
    d.set(0, True)
    d._running[0][0].wait(30)  # the run has ended; the next poll collects it
    assert d.poll() == [(0, f"relay 1: {sys.executable} exited with 3")] and d.poll() == []


# -- the meter ---------------------------------------------------------------------------------


def test_over_current_closes_relay_1_at_the_stated_seconds(tmp_path):
    driver = RecordingDriver()
    meter = start(settings_file(tmp_path), store=False, driver=driver)
    closed = [meter.step().relays[0] for _ in range(12)]
    # 30 A in seconds 0-3 and 8-11; on/off delay 1: closed from second 1 to 4, and from 9
    assert closed == [False, True, True, True, True, False, False, False, False, True, True, True]
    assert driver.history == [(0, False), (1, False), (0, True), (0, False), (0, True)]
    kinds = [e.kind for e in meter.events]
    assert kinds.count("alarm_raised") == 2 and kinds.count("alarm_cleared") == 1
    d = meter.snapshot.alarms_dict()
    assert d["relay_modes"] == ["alarm", "manual"]
    assert d["alarms"][0]["active"] and d["alarms"][0]["rule"] == "CT10 over-current"
    assert d["alarms"][0]["value"] == pytest.approx(30.0, rel=0.01)


def test_relay_state_over_modbus_and_coil_writes_in_alarm_mode(tmp_path):
    meter = start(settings_file(tmp_path), store=False)
    b = MapBackend(meter)
    assert b.image is b.image  # no value yet (NaN): the image is still not rebuilt per request
    for _ in range(2):
        meter.step()
    assert b.read_bits("coil", 0x1000, 2) == [True, False]
    assert b.read_registers("input", 0x1080, 2) == [1, 0]
    with pytest.raises(AccessError) as info:
        b.write_coils(0x1000, [False, True])  # relay 1 in alarm mode: nothing changes
    assert info.value.code == ExceptionCode.ILLEGAL_DATA_ADDRESS
    assert meter.relays == (True, False)
    with pytest.raises(RelayModeError):
        meter.set_relay(0, False)  # the same rule for CANopen and any other interface
    b.write_coils(0x1001, [True])
    assert meter.relays == (True, True)
    b.write_registers(0x1020, [0])  # relay 1 to manual: it keeps its state, coil writable
    b.write_coils(0x1000, [False])
    assert meter.relays == (False, True)
    assert meter.wait_settings_saved()
    assert load_settings(meter.settings_path).relays.relays[0].mode == "manual"


def test_alarm_slot_written_over_modbus_is_one_validated_change(tmp_path):
    meter = start(settings_file(tmp_path), store=False)
    b = MapBackend(meter)
    slot = [2, 0, 2, 1, 2, 1, 0, 0]  # relay 2, V, main 1, outside, latch, no delays
    for x in (0.0, 207.0, 253.0, 3.0):  # threshold, band low/high, hysteresis
        slot += encode("float32", x)
    b.write_registers(0x1110, slot)  # slot 2 of 16
    assert meter.wait_settings_saved()
    rule = load_settings(meter.settings_path).alarms[1]
    assert (rule.relay, rule.quantity, rule.target, rule.comparison, rule.band, rule.latch) == (
        2, "v", "main:1", "outside", (207.0, 253.0), True)
    assert b.read_registers("holding", 0x1110, 16) == slot
    bad = slot[:8] + encode("float32", 0.0) + encode("float32", 253.0) + encode(
        "float32", 207.0) + encode("float32", 3.0)  # low > high
    before = meter.settings
    with pytest.raises(AccessError) as info:
        b.write_registers(0x1110, bad)
    assert info.value.code == ExceptionCode.ILLEGAL_DATA_VALUE and meter.settings is before
    assert any(e.kind == "settings" and "[alarms.2]" in e.text for e in meter.events)


def test_latched_alarm_survives_a_restart_until_acknowledged(tmp_path):
    path = settings_file(tmp_path, latch=True)
    meter = start(path)
    for _ in range(6):  # raised at second 1, condition cleared at 5: held by the latch
        meter.step()
    assert meter.relays[0] and meter.alarm_status.unacked == (True,)
    meter.close()
    meter = start(path)  # power-up: the latch comes back from the store
    assert meter.relays == (True, False)
    b = MapBackend(meter)
    assert b.read_registers("input", 0x1081, 1) == [1]
    b.write_registers(0x1026, [1])  # acknowledge relay 1
    assert meter.relays == (False, False) and b.read_registers("input", 0x1080, 2) == [0, 0]
    meter.close()
    kinds = [e.kind for e in read_events(tmp_path / "var" / "m.db")]
    assert kinds.count("power_up") == 2 and "alarm_held" in kinds
    assert kinds[-3:] == ["alarm_acknowledged", "alarm_cleared", "relay"]


@pytest.mark.parametrize(("power_up", "before", "expected"), [
    ("open", True, False), ("closed", False, True), ("last", True, True), ("last", False, False)])
def test_manual_relay_power_up_state(tmp_path, power_up, before, expected):
    path = settings_file(tmp_path, power_up=power_up)
    meter = start(path)
    meter.set_relay(1, before)
    meter.step()
    meter.close()
    assert start(path).relays[1] is expected


def test_energy_reset_over_modbus_is_saved_and_logged_at_once(tmp_path):
    meter = start(settings_file(tmp_path))
    b = MapBackend(meter)
    for _ in range(3):
        meter.step()
    db = tmp_path / "var" / "m.db"
    assert peek(db).meter.values()[3, 0] > 0  # Meter 4 (CT10) imported energy
    assert b.write_registers(0x1013, [4]).result() is True
    r = peek(db)  # on disk once the future the server answers on is True
    assert r.meter.values()[3].sum() == 0 and r.ct.values()[9:12].sum() == 0
    assert r.meter.values()[0, 0] > 0  # Meter 1 untouched
    assert read_events(db, last=1)[0].kind == "energy_reset"
    meter.close()


# -- a failing driver: seen everywhere, retried like a relay board -----------------------------


def test_failing_relay_output_is_flagged_retried_and_recovers(tmp_path):
    """GPIO line not exported: status bit (Modbus 0x1005), one event and one console line per
    streak; retried after 1, 2, 4 ... s; once exported, the output takes the decided state."""
    gpio = tmp_path / "gpio"
    gpio.mkdir()
    (gpio / "gpio5").mkdir()  # relay 1's line exported, relay 2's (gpio6) not
    path = settings_file(tmp_path, power_up="closed")
    meter = start(path, store=False, driver=GpioSysfsDriver((5, 6), root=str(gpio)))
    b = MapBackend(meter)
    statuses = []
    for second in range(6):
        if second == 3:  # the retry at the end of second 1 failed; export the line now
            (gpio / "gpio6").mkdir()
        snap = meter.step()
        statuses.append(Status(snap.status))
        if second == 0:
            assert b.read_registers("input", 0x1005, 1) == [int(Status.RELAY_DRIVER_FAILED)]
            assert snap.to_dict()["status"] == ["relay_driver_failed"]
    failed = Status.RELAY_DRIVER_FAILED
    assert statuses == [failed, failed, failed, Status(0), Status(0), Status(0)]
    assert (gpio / "gpio6" / "value").read_text() == "1"  # power_up = "closed"
    assert b.read_registers("input", 0x1005, 1) == [0]
    texts = [e.text for e in meter.events if e.kind == "relay_driver"]
    assert len(texts) == 2
    assert texts[0].startswith("relay 2: cannot write ") and "retrying" in texts[0]
    assert texts[1] == "relay 2: the driver works again (after 2 retries); the output is closed"


def test_failing_command_is_retried_until_it_succeeds(tmp_path):
    """A relay command that fails (exit 1) is run again; its success clears the flag."""
    marker = tmp_path / "ok"
    script = f"import os, sys; sys.exit(0 if os.path.exists({str(marker)!r}) else 1)"
    driver = CommandDriver((sys.executable, "-c", script))
    sup = SupervisedDriver(driver)
    sup.set(0, True)
    assert not sup.failing  # started: the outcome comes with a later poll
    driver.wait(30)
    news = sup.poll()
    assert sup.failing and news == [f"relay 1: {sys.executable} exited with 1; the output may "
                                    "not match: retrying (1, 2, 4 ... 60 s)"]
    marker.touch()
    assert sup.poll() == []  # 1 s: not yet due
    assert sup.poll() == []  # 2 s: retried, running
    driver.wait(30)
    assert sup.poll() == ["relay 1: the driver works again (after 1 retry); the output is closed"]
    assert not sup.failing


def test_run_shows_a_failing_relay_driver_on_the_console(tmp_path):
    import subprocess

    path = tmp_path / "s.toml"
    path.write_text(f'[relays]\ndriver = "gpio"\ngpio_lines = [5, 6]\ngpio_root = "{tmp_path}"\n'
                    '[relays.2]\npower_up = "closed"\n')
    r = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(path),
                        "--seconds", "2", "--speed", "20", "--no-modbus", "--meter", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "relay driver" in x]
    assert len(lines) == 2 and "relay 1: cannot write" in lines[0], r.stderr  # one per relay
    assert "status relay_driver_failed" in r.stdout


def test_events_carry_the_meter_clock_the_console_shows(tmp_path):
    """A replay or `--speed 50` runs on the meter's clock: an event is stamped with the time
    of the second it happened in, as that second's snapshot (the console, JSON) shows it."""
    meter = start(settings_file(tmp_path), store=False)  # start_time 0: far from the wall
    times = {}
    for _ in range(10):
        snap = meter.step()
        times[snap.seq] = snap.time
    alarms = [e for e in meter.events if e.kind.startswith("alarm")]
    assert [e.second for e in alarms] == [1, 5, 9]
    assert [e.time for e in alarms] == [times[1], times[5], times[9]]
    assert next(e for e in meter.events if e.kind == "power_up").time == 0.0
