"""The running meter's side of durability: what it serves at power-up, the live status
word, save failures, clock steps, group commits and the commit interval.

A save failure is made real, not simulated: the ring file's descriptor is replaced by a
read-only descriptor of the same file, so the kernel refuses the write (EBADF) exactly as it
refuses one on a failing disk; putting a writable one back is the disk recovering."""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import pytest

from pm4324.config.settings_parse import load_settings
from pm4324.device.meter import Meter
from pm4324.device.store import Store, peek, read_events
from pm4324.registers.image import MapBackend, build_image
from pm4324.snapshot import Status
from pm4324.sources.scenario_parse import parse_scenario
from pm4324.sources.simulator import SimulatorSource

SCENARIO = {"loads": [{"cts": [1, 2, 3], "current_a": 20.0, "pf": 0.9}]}
SETTINGS = """model = "PM-4324"
sample_rate_hz = 2000
[relays.2]
power_up = "last"
[store]
commit_interval_s = {interval}
"""


def open_meter(tmp_path, interval: int = 1, wall=time.time) -> Meter:
    path = tmp_path / "m.toml"
    if not path.exists():
        path.write_text(SETTINGS.format(interval=interval))
    settings = load_settings(path)
    store = Store.open(tmp_path / "var" / "m.state.db", tmp_path / "m.meter-id")
    return Meter(settings, SimulatorSource(parse_scenario(SCENARIO), settings),
                 settings_path=str(path), store=store, wall_clock=wall)


def status_word(backend: MapBackend) -> int:
    return backend.read_registers("input", 0x1005, 1)[0]


def test_power_up_serves_the_restored_energies_and_no_data(tmp_path):
    """The issue's zeros at power-up: energies read 0 for the first second of every start."""
    meter = open_meter(tmp_path)
    for _ in range(3):
        meter.step()
    last = meter.snapshot
    meter.close()
    meter = open_meter(tmp_path)
    backend = MapBackend(meter)
    before = build_image(backend.register_map, last, last.settings, last.relays)
    image = backend.image
    energy = [p for p in backend.register_map.points if p.source.kind == "measured"
              and p.source.group in ("ct_energy", "meter_energy")]
    assert energy and any(before.read(p.table, p.address, p.size) != [0] * p.size
                          for p in energy)
    for p in energy:  # exactly the last published second's counters
        assert image.read(p.table, p.address, p.size) == before.read(p.table, p.address, p.size)
    assert meter.snapshot.seq == -1 and math.isnan(meter.snapshot.ct.p_w[0])
    assert status_word(backend) == Status.NO_DATA
    assert backend.read_registers("input", 0x1006, 2) == [0, 0]  # snapshot_seq
    meter.step()
    assert status_word(backend) == 0 and meter.snapshot.ct.p_w[0] > 0
    meter.close()


def test_a_failing_save_shows_at_once_is_retried_and_logged(tmp_path, caplog):
    meter = open_meter(tmp_path)
    backend = MapBackend(meter)
    for _ in range(2):
        meter.step()
    ring = meter.store._ring
    writable = os.dup(ring._fd)
    readonly = os.open(meter.store.ring_path, os.O_RDONLY)
    os.dup2(readonly, ring._fd)  # the disk refuses from now on
    with caplog.at_level(logging.WARNING):
        done = backend.write_registers(0x1013, [1])  # reset Meter 1: not durable
        assert done.result() is False
        assert status_word(backend) & Status.NOT_SAVED  # between two snapshots
        snap = meter.step()
        assert snap.status & Status.NOT_SAVED and "not_saved" in snap.to_dict()["status"]
        os.dup2(writable, ring._fd)  # the disk works again
        snap = meter.step()
    assert not snap.status & Status.NOT_SAVED and status_word(backend) == 0
    lines = [r.getMessage() for r in caplog.records if "meter status" in r.getMessage()]
    assert lines == ["meter status: not_saved", "meter status: ok"]
    meter.step()
    seen = meter.snapshot.meter_energy.wh_import[0]
    meter.close()
    os.close(readonly)
    os.close(writable)
    kinds = [(e.kind, e.text) for e in read_events(tmp_path / "var" / "m.state.db")]
    errors = [t for k, t in kinds if k == "store_error"]
    assert len(errors) == 2 and "cannot save" in errors[0] and "works again" in errors[1]
    assert ("energy_reset", "Meter 1 (CT1-CT3)") in kinds  # saved late, not lost
    assert peek(tmp_path / "var" / "m.state.db").meter.values()[0, 0] == pytest.approx(seen)


def test_writes_arriving_together_share_one_commit(tmp_path):
    meter = open_meter(tmp_path)
    meter.step()
    store = meter.store
    first = store.last.seq
    with store._lock:  # the disk is busy with a commit: requests queue up behind it
        futures = [meter.set_relay(1, k % 2 == 1) for k in range(10)]
        futures.append(meter.reset_energy(2))
    assert all(f.result() for f in futures)
    assert store.last.seq - first <= 2  # the one under way, and one for all the rest
    assert peek(store.path).relays[1] is True and peek(store.path).meter.values()[1].sum() == 0
    meter.close()


def test_a_write_is_acknowledged_only_once_durable(tmp_path):
    """The meter's future is what a server waits on: False (or not done) is no ack."""
    from pm4324.protocols.modbus.pdu import Deferred, handle_pdu

    meter = open_meter(tmp_path)
    meter.step()
    backend = MapBackend(meter)
    with meter.store._lock:  # a commit that cannot finish yet
        rsp = handle_pdu(backend, bytes.fromhex("05 1001 FF00"))  # relay 2 on
        assert isinstance(rsp, Deferred) and rsp.answer() == bytes.fromhex("85 04")
    rsp.durable.result()
    assert rsp.answer() == bytes.fromhex("05 1001 FF00")
    assert peek(meter.store.path).relays == (False, True)
    meter.close()


def test_clock_steps_are_events_and_a_status_bit(tmp_path):
    """A -1 h step mid-run: event times follow the wall clock, (boot, second) stays in
    order, the snapshot timeline follows the step instead of keeping the old one."""
    offset = [0.0]
    meter = open_meter(tmp_path, wall=lambda: time.time() + offset[0])
    backend = MapBackend(meter)
    for _ in range(3):
        before = meter.step()
    offset[0] = -3600.0
    after = meter.step()
    assert after.status & Status.CLOCK_STEPPED and status_word(backend) & Status.CLOCK_STEPPED
    assert after.time - before.time == pytest.approx(1.0 - 3600.0, abs=0.5)
    meter.set_relay(1, True).result()
    meter.close()
    events = read_events(tmp_path / "var" / "m.state.db")
    step = next(e for e in events if e.kind == "clock_step")
    assert "-3600" in step.text
    keys = [(e.boot, e.second) for e in events]
    assert keys == sorted(keys)
    assert events[-1].time < events[0].time - 3000  # the relay event is on the new clock


def test_a_clock_set_back_while_stopped_is_a_step_at_power_up(tmp_path):
    """The issue: with the clock a day back at start, event times jumped back 86,398 s."""
    meter = open_meter(tmp_path)
    meter.step()
    meter.close()
    meter = open_meter(tmp_path, wall=lambda: time.time() - 86_400)
    assert meter.status & Status.CLOCK_STEPPED
    meter.step()
    meter.close()
    events = read_events(tmp_path / "var" / "m.state.db")
    step = [e for e in events if e.kind == "clock_step"]
    assert len(step) == 1 and "s before the last commit" in step[0].text
    assert 86_300 < int(step[0].text.split(" s before")[0].split()[-1]) <= 86_400
    keys = [(e.boot, e.second) for e in events]
    assert keys == sorted(keys) and [e.boot for e in events][-1] == 2


def test_the_commit_interval_is_a_setting(tmp_path):
    meter = open_meter(tmp_path, interval=10)
    start = meter.store.last.seq
    for _ in range(25):
        meter.step()
    assert meter.store.last.seq - start == 3  # seconds 0, 10 and 20
    assert meter.set_relay(1, True).result() is True  # writes still commit at once
    assert meter.store.last.seq - start == 4
    meter.close()


def test_reads_are_answered_while_a_commit_waits_on_the_disk(tmp_path):
    """Reads keep being answered while a commit waits on the disk."""
    meter = open_meter(tmp_path)
    backend = MapBackend(meter)
    meter.step()
    answered = threading.Event()
    with meter.store._lock:
        meter.set_relay(1, True)
        t = threading.Thread(target=lambda: (backend.read_registers("input", 0x1005, 1),
                                             answered.set()))
        t.start()
        t.join(10)
        assert answered.is_set()
    meter.close()
