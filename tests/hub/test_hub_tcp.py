"""The hub against running software meters over Modbus TCP: one killed and restarted
mid-run (offline/online events, a recorded gap, energy across it exact from the counters),
the other undisturbed."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from datetime import date

import pytest
from software_meter import software_meters

from pm4324.history import HistoryStore, query
from pm4324.hub import Hub, parse_hub

WAIT = 60.0  # seconds: the bound on waiting for any one hub event


def hub_config(tmp_path, meters) -> dict:
    return {"hub": {"history": str(tmp_path / "hub.db"), "time_zone": "UTC", "flush_s": 5},
            "meters": [{"key": f"m{k}", "tcp": f"127.0.0.1:{m.port}", "meters": [1, 2],
                        "gap_s": 2.5 if k == 0 else 10.0,  # m1: no gap, even on a busy machine
                        "names": {"meters": {"1": f"HVAC {k}"}}} for k, m in enumerate(meters)]}


def read_kwh(port: int) -> float:
    """The meter's Meter 1 import register, read by a separate `pm4324 read` (pymodbus)."""
    out = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "read", "--tcp", f"127.0.0.1:{port}",
                          "--json", "--meter", "1"], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)["meters"][0]["kwh_import"]


def test_hub_records_a_killed_meter_as_a_gap_and_keeps_energy_exact(tmp_path):
    with software_meters(tmp_path, 2) as (a, b):
        config = parse_hub(hub_config(tmp_path, [a, b]))
        store = HistoryStore.open(config.history, time_zone="UTC")
        said: queue.Queue[str] = queue.Queue()
        hub = Hub(config, store, say=said.put)
        m0_times: queue.Queue[float] = queue.Queue()
        hub.listeners.append(lambda key, snap: m0_times.put(snap.time) if key == "m0" else None)
        stop = threading.Event()
        runner = threading.Thread(target=hub.run, kwargs={"stop": stop})
        runner.start()

        def wait_for(text: str) -> None:
            while not (got := said.get(timeout=WAIT)).startswith(text):
                assert "offline" not in got, got

        try:
            first = {said.get(timeout=WAIT), said.get(timeout=WAIT)}
            assert first == {"m0: online", "m1: online"}
            for _ in range(2):  # two measured seconds of m0 before it is killed
                m0_times.get(timeout=WAIT)
            a.kill()
            wait_for("m0: offline")
            a.start()  # same state file, same port: its counters went on from where they were
            wait_for("m0: online")
            while not m0_times.empty():
                m0_times.get_nowait()
            for _ in range(4):  # four measured seconds of the restarted meter
                m0_times.get(timeout=WAIT)
            assert said.empty() or "offline" not in said.get_nowait()
        finally:
            stop.set()
            runner.join(timeout=WAIT)
        final_kwh = read_kwh(a.port)
    store.close()
    store = HistoryStore.open(config.history, readonly=True)
    m0, m1 = store.find_meter("m0"), store.find_meter("m1")
    assert store.meters()[0]["names"] == {"meters": {"1": "HVAC 0"}, "cts": {}}
    assert store.meters()[0]["model"] == "PM-4324A"
    (gap,) = [g for g in query.gaps(store, m0, 0, 2e9) if g[2] == "offline"]
    assert gap[1] - gap[0] > 1.0
    assert [e[1] for e in query.events(store, m0, 0, 2e9)] == ["offline", "online"]
    assert query.gaps(store, m1, 0, 2e9) == []
    for m in (m1, m0):
        days = query.energy(store, m, "meter1", date(2000, 1, 1), date(2100, 1, 1))
        total = sum(d.energy["wh_import"] for d in days)
        assert total == pytest.approx(days[-1].last["wh_import"] - days[0].first["wh_import"], abs=1e-6)
    # the energy m0 counted while unread is in the hub's history, and nothing more
    assert 0 < days[-1].last["wh_import"] <= final_kwh * 1000 + 1e-6
    tr = query.trend(store, m0, "meter1", "p_w", 0, 2e9, "raw", None)
    assert not any(gap[0] < t < gap[1] for t in tr.t)  # nothing invented in the gap
    store.close()
