"""The hub reading a running software meter whose counters are reset mid-run (`pm4324
reset-energy --tcp`, as a user does it) or roll over (the live fault `energy_rollover`, set
with `pm4324 fault`): the history records a reset with the pre-reset value and counts from
zero after it, and takes a uint32 rollover for energy, not for a reset (issue #13).

The meter's own JSON lines (its unwrapped counters, every second) are the truth the hub's
readings and the history are compared with."""

from __future__ import annotations

import contextlib
import io
import json
import queue
import re
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from software_meter import SoftwareMeter

from pm4324.cli.cli import main
from pm4324.history import HistoryStore, query
from pm4324.history.aggregate import ROLLOVER_WH
from pm4324.hub import Hub, parse_hub
from pm4324.security.identities import hash_token

WAIT = 60.0  # seconds: the bound on waiting for any one reading or line
U32_WH = 10.0  # the integer energy registers count 0.01 kWh
TOKEN = "settings-token-0123456789"  # an HTTP token with the settings right (faults)
RESET_ALLOWED = '\n[security]\nenergy_reset = ["modbus_tcp_loopback"]\n'


def meter1_wh(line: dict) -> float:
    """Meter 1's import counter (Wh) in a JSON line of the meter or of `pm4324 read`."""
    return next(m for m in line["meters"] if m["meter"] == 1)["kwh_import"] * 1000.0


@contextlib.contextmanager
def polling(tmp_path: Path, meter: SoftwareMeter, **options) -> Iterator[tuple[queue.Queue, queue.Queue]]:
    """A Hub polling Meter 1 of ``meter`` in a thread: what it says, and every reading as
    (time, Meter 1 import Wh), as it hands them to its listeners."""
    config = parse_hub({"hub": {"history": str(tmp_path / "hub.db"), "time_zone": "UTC", "flush_s": 5},
                        "meters": [{"key": "m0", "tcp": f"127.0.0.1:{meter.port}", "meters": [1],
                                    **options}]})
    store = HistoryStore.open(config.history, time_zone="UTC")
    said: queue.Queue[str] = queue.Queue()
    readings: queue.Queue[tuple[float, float]] = queue.Queue()
    hub = Hub(config, store, say=said.put)
    hub.listeners.append(lambda key, snap: readings.put((snap.time, float(snap.meter_energy.wh_import[0]))))
    stop = threading.Event()
    runner = threading.Thread(target=hub.run, kwargs={"stop": stop})
    runner.start()
    try:
        assert said.get(timeout=WAIT) == "m0: online"
        yield said, readings
    finally:
        stop.set()
        runner.join(timeout=WAIT)
        store.close()
    assert not runner.is_alive()
    while not said.empty():
        assert "offline" not in (text := said.get_nowait()), text


def history(tmp_path: Path) -> tuple[HistoryStore, int, list, float]:
    """The hub's store (read-only), its meter, its events and Meter 1's import energy (Wh)."""
    store = HistoryStore.open(tmp_path / "hub.db", readonly=True)
    m = store.find_meter("m0")
    days = query.energy(store, m, "meter1", date(2000, 1, 1), date(2100, 1, 1))
    return store, m, query.events(store, m, 0, 2e9), sum(d.energy["wh_import"] for d in days)


def counter_event(events: list, kind: str) -> tuple[float, float]:
    """The Wh before and after of the one ``kind`` event of Meter 1's import register."""
    (text,) = [e[2] for e in events if e[1] == kind and e[2].startswith("meter1 wh_import:")]
    before, after = re.fullmatch(r"meter1 wh_import: ([\d.]+) Wh -> ([\d.]+) Wh", text).groups()
    return float(before), float(after)


def kept(readings: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The readings the history takes: each later than every one before it (a second read
    twice is taken once, like ``HistoryWriter.add``)."""
    out: list[tuple[float, float]] = []
    for t, wh in readings:
        if not out or t > out[-1][0]:
            out.append((t, wh))
    return out


def truth_of(meter: SoftwareMeter) -> dict[int, float]:
    """Meter 1's import counter (Wh) as the meter published it, by its second's time (what
    the hub's reading is stamped with: the ``snapshot_time`` register, whole seconds)."""
    return {round(d["time"]): meter1_wh(d) for d in meter.lines}


def published(reading: tuple[float, float], truth: dict[int, float], tol: float,
              modulus: float = 0.0) -> float:
    """The meter's own counter value a hub reading shows: of the second it is stamped with,
    or of the next one (a reading whose requests straddle a second); within ``tol`` (the
    register's resolution), ``modulus`` added back to a wrapped integer register."""
    t, wh = reading
    seen = [truth[s] for s in (round(t), round(t) + 1) if s in truth]
    found = [v for v in seen if abs(v - (wh + modulus)) <= tol]
    assert found, f"the hub read {wh} Wh at {t}; the meter published {seen}"
    return found[0]


def until_the_counter_drops(readings: queue.Queue, before: list, most: int) -> list:
    """Take readings into ``before`` until one shows a lower counter (a reset or a wrap,
    within ``most`` readings); return that one and the four after it."""
    for _ in range(most):
        if (r := readings.get(timeout=WAIT))[1] < before[-1][1]:
            return [r] + [readings.get(timeout=WAIT) for _ in range(4)]
        before.append(r)
    raise AssertionError(f"the counter did not drop within {most} readings")


def client_wh(port: int) -> float:
    """Meter 1's import counter read by a real client (`pm4324 read`, pymodbus), in Wh."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["read", "--tcp", f"127.0.0.1:{port}", "--json", "--meter", "1"]) == 0
    return meter1_wh(json.loads(out.getvalue()))


def test_reset_energy_mid_run_keeps_the_pre_reset_value_and_counts_from_zero(tmp_path):
    meter = SoftwareMeter(tmp_path / "m0", settings_extra=RESET_ALLOWED, record=True).start()
    try:
        client_wh(meter.port)  # the client's imports and first connection, out of the way
        with polling(tmp_path, meter) as (_, readings):
            before = [readings.get(timeout=WAIT) for _ in range(8)]  # ~80 Wh of Meter 1
            # at once after the hub's reading: the value a client reads, then the reset
            just_before = client_wh(meter.port)
            assert main(["reset-energy", "--tcp", f"127.0.0.1:{meter.port}", "--meter", "1"]) == 0
            after = until_the_counter_drops(readings, before, 30)
    finally:
        meter.stop()
    while not readings.empty():  # what the hub read until it stopped
        after.append(readings.get_nowait())
    lines = [meter1_wh(d) for d in meter.lines]
    k = next(i for i in range(1, len(lines)) if lines[i] < lines[i - 1])  # the meter's reset
    last_before_reset = lines[k - 1]
    truth = truth_of(meter)
    store, _, events, total = history(tmp_path)
    store.close()

    before, after = kept(before), kept(after)
    assert after[0][1] < before[-1][1] and after == sorted(after)
    for reading in before + after:  # float32 registers: the meter's values, unrounded
        published(reading, truth, 1e-3)
    assert {e[1] for e in events} == {"reset"}  # Meter 1 and its CTs; no rollover, no offline
    pre, post = counter_event(events, "reset")
    # the pre-reset value kept is the hub's last reading before the reset; the client read
    # the counter after that reading and before the reset (order, not timing: no bound on
    # how long a busy machine took in between)
    assert pre == pytest.approx(before[-1][1], abs=1e-3)
    assert pre - 0.01 <= just_before <= last_before_reset + 0.01
    assert post == pytest.approx(after[0][1], abs=1e-3)
    # energy after the reset counts from zero: (pre-reset - start) + (after - 0)
    start, end = before[0][1], after[-1][1]
    assert total == pytest.approx((pre - start) + end, abs=1e-3)
    # ... which is what the meter counted from the hub's first reading to its last, less only
    # the seconds between the hub's last reading before the reset and the reset (no reader
    # sees those)
    missed = last_before_reset - published(before[-1], truth, 1e-3)
    assert missed >= 0
    true_used = (last_before_reset - published(before[0], truth, 1e-3)) + published(after[-1], truth, 1e-3)
    assert total + missed == pytest.approx(true_used, abs=0.01)


def test_uint32_rollover_while_polled_is_energy_not_a_reset(tmp_path):
    tokens = f'\n[security.tokens.engineer]\nrole = "settings"\nhash = "{hash_token(TOKEN)}"\n'
    # speed 4: Meter 1 (~37 kW) adds ~40 Wh a wall-clock second, so 1 kWh wraps in ~25 s (time for a busy
    # machine to start the hub before it does)
    meter = SoftwareMeter(tmp_path / "m0", speed=4, settings_extra=tokens, http=True, record=True).start()
    try:
        meter.seconds.get(timeout=WAIT)  # it has measured a second
        assert main(["fault", "--http", meter.url, "--token", TOKEN, "set", "energy_rollover",
                     "meter1", "below_kwh=1.0"]) == 0
        for _ in range(1000):  # its counters jump to 1 kWh short of the register's rollover
            if meter1_wh(meter.seconds.get(timeout=WAIT)) > ROLLOVER_WH - 2000:
                break
        with polling(tmp_path, meter, poll_s=0.25, gap_s=30) as (_, readings):
            before = [readings.get(timeout=WAIT)]
            assert before[0][1] > ROLLOVER_WH - 2000, "the counter wrapped before the hub read it"
            after = until_the_counter_drops(readings, before, 1000)
    finally:
        meter.stop()
    while not readings.empty():  # what the hub read until it stopped
        after.append(readings.get_nowait())
    truth = truth_of(meter)  # the meter's own counters do not wrap
    store, m, events, total = history(tmp_path)
    gaps = query.gaps(store, m, 0, 2e9)
    store.close()

    before, after = kept(before), kept(after)
    assert len(before) >= 2 and after[0][1] < 1000  # read on both sides of the wrap
    # every reading is the meter's counter (the integer register, 0.01 kWh), the wrapped ones
    # less the register's modulus
    true_start = published(before[0], truth, U32_WH / 2 + 1e-3)
    for reading in before[1:]:
        published(reading, truth, U32_WH / 2 + 1e-3)
    for reading in after:
        true_end = published(reading, truth, U32_WH / 2 + 1e-3, modulus=ROLLOVER_WH)
    assert true_end > ROLLOVER_WH > true_start
    assert "reset" not in {e[1] for e in events}
    assert gaps == []
    pre, post = counter_event(events, "rollover")
    assert pre == pytest.approx(before[-1][1], abs=1e-3)
    assert post == pytest.approx(after[0][1], abs=1e-3)
    # continuous: the wrap adds the register's modulus (not a reset's "count from zero") ...
    start, end = before[0][1], after[-1][1]
    assert total == pytest.approx(end + ROLLOVER_WH - start, abs=1e-3)
    # ... and that is the true increase of the meter's counter, to the register's 0.01 kWh
    assert total == pytest.approx(true_end - true_start, abs=U32_WH)
