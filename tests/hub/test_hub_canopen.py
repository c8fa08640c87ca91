"""The hub polls a CANopen node (our node over a simulated meter, on a virtual bus) by SDO
into the same history as Modbus meters: each recorded second is one the meter measured,
offline/online do not fire, and the energy of the recorded span comes from the counters."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import replace
from datetime import date

import pytest

from pm4324.config.settings import CanopenSettings, Settings
from pm4324.device.meter import Meter
from pm4324.history import HistoryStore, query
from pm4324.hub import Hub, parse_hub
from pm4324.protocols.canopen import CanopenServer
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

WAIT = 60.0  # seconds: the bound on waiting for any one reading
SECONDS = 4


@pytest.fixture
def channel() -> str:
    return f"pm4324-hub-{uuid.uuid4().hex[:10]}"  # a private virtual bus


def test_hub_polls_a_canopen_node_into_history(channel, tmp_path):
    settings = replace(Settings(), canopen=CanopenSettings(node_id=9, interface="virtual",
                                                           channel=channel))
    meter = Meter(settings, SimulatorSource(load_scenario(None), settings),
                  start_time=float(int(time.time()) - 3600))
    snaps = {}
    with CanopenServer(meter, settings):
        s = meter.step()
        snaps[s.time] = s
        config = parse_hub({"hub": {"history": str(tmp_path / "hub.db"), "time_zone": "UTC",
                                    "flush_s": 1},
                            "meters": [{"key": "can9", "canopen": f"virtual:{channel}", "node": 9,
                                        "meters": [1, 2], "timeout_s": 2, "gap_s": 600,
                                        "names": {"meters": {"1": "Lifts"}}}]})
        store = HistoryStore.open(config.history, time_zone="UTC")
        said: list[str] = []
        hub = Hub(config, store, say=said.append)
        seen: queue.Queue[float] = queue.Queue()

        def next_second(key: str, snap) -> None:  # a new second after each reading
            seen.put(snap.time)
            if len(snaps) <= SECONDS:
                s = meter.step()
                snaps[s.time] = s

        hub.listeners.append(next_second)
        stop = threading.Event()
        runner = threading.Thread(target=hub.run, kwargs={"stop": stop})
        runner.start()
        try:
            times = {seen.get(timeout=WAIT)}
            while len(times) < SECONDS:
                times.add(seen.get(timeout=WAIT))
        finally:
            stop.set()
            runner.join(timeout=WAIT)
    store.close()
    assert said == ["can9: online"]
    store = HistoryStore.open(config.history, readonly=True)
    m = store.find_meter("can9")
    assert store.meters()[0]["names"]["meters"] == {"1": "Lifts"}
    tr = query.trend(store, m, "meter1", "p_w", 0, 2e9, "raw", None)
    assert len(tr) >= SECONDS and set(tr.t) <= set(snaps)
    for t, p in zip(tr.t, tr.mean, strict=True):
        # a reading spans SDO uploads: a step between them gives the next second's values
        options = [snaps[x].meter.p_w[0] for x in (t, t + 1) if x in snaps]
        assert any(p == pytest.approx(o, rel=1e-6) for o in options), (t, p, options)
    (day,) = query.energy(store, m, "meter2", date(2000, 1, 1), date(2100, 1, 1))
    assert day.energy["wh_import"] == pytest.approx(
        day.last["wh_import"] - day.first["wh_import"], abs=1e-6)
    assert day.last["wh_import"] == pytest.approx(snaps[max(tr.t)].meter_energy.wh_import[1],
                                                  abs=10.0)
    store.close()
