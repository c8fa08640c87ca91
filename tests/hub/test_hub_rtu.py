"""The hub on one RS-485 line with three software meters (unit ids 2, 3, 5): a pty per
device joined by a bus that, like RS-485, carries the master's frames to every slave and
every slave's answer back. One request at a time, each meter its own history."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import tty
from collections.abc import Iterator

from software_meter import SoftwareMeter

from pm4324.history import HistoryStore, query
from pm4324.hub import Hub, parse_hub

WAIT = 60.0
UNITS = (2, 3, 5)


@contextlib.contextmanager
def rs485_bus(drops: int) -> Iterator[tuple[str, list[str]]]:
    """(the master's device, the slaves' devices); bytes flow master -> all, slave -> master."""
    pairs = [os.openpty() for _ in range(drops + 1)]
    for _, slave in pairs:
        tty.setraw(slave)
    masters = [m for m, _ in pairs]
    stop = threading.Event()

    def carry() -> None:
        while not stop.is_set():
            ready, _, _ = select.select(masters, [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                targets = masters[1:] if fd == masters[0] else masters[:1]
                for t in targets:
                    os.write(t, data)

    thread = threading.Thread(target=carry, daemon=True)
    thread.start()
    try:
        yield os.ttyname(pairs[0][1]), [os.ttyname(s) for _, s in pairs[1:]]
    finally:
        stop.set()
        thread.join(timeout=5)
        for m, s in pairs:
            os.close(m)
            os.close(s)


def test_three_unit_ids_on_one_line(tmp_path):
    with rs485_bus(len(UNITS)) as (master, slaves):
        meters = [SoftwareMeter(tmp_path / f"u{u}", unit=u, rtu=dev) for u, dev in zip(UNITS, slaves)]
        try:
            for m in meters:
                m.start()
            config = parse_hub({
                "hub": {"history": str(tmp_path / "hub.db"), "time_zone": "UTC"},
                "meters": [{"key": f"unit{u}", "rtu": master, "unit": u, "baud": 115200,
                            "meters": [1], "timeout_s": 0.5} for u in UNITS]})
            assert len({m.line for m in config.meters}) == 1
            store = HistoryStore.open(config.history)
            said: queue.Queue[str] = queue.Queue()
            hub = Hub(config, store, say=said.put)
            stop = threading.Event()
            runner = threading.Thread(target=hub.run, kwargs={"stop": stop})
            runner.start()
            try:
                online: set[str] = set()
                while online != {f"unit{u}: online" for u in UNITS}:
                    got = said.get(timeout=WAIT)
                    if got.endswith("online"):
                        online.add(got)
                target = hub.readings + 3 * len(UNITS)
                while hub.readings < target:
                    runner.join(timeout=0.5)
                    assert runner.is_alive()
            finally:
                stop.set()
                runner.join(timeout=WAIT)
            for u in UNITS:
                m = store.find_meter(f"unit{u}")
                tr = query.trend(store, m, "ct1", "p_w", 0, 2e9, "raw", None)
                assert len(tr) >= 2 and abs(tr.mean[-1] - 12299.0) < 50  # the building's HVAC, CT1
            store.close()
        finally:
            for m in meters:
                m.kill()
