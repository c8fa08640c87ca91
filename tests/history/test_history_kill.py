"""A writer SIGKILLed mid-stream: every flushed minute is whole, and after a restart the
day's energy is the exact counter difference (the lost seconds' energy comes back)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date

import numpy as np
import pytest

from pm4324.history import HistoryStore, HistoryWriter, query
from pm4324.history.layout import LAYOUT, Frame

T0 = 1_780_000_200 // 86400 * 86400 + 3600  # 01:00 UTC
CHILD = """
import sys, numpy as np
from pm4324.history import HistoryStore, HistoryWriter
from pm4324.history.layout import LAYOUT, Frame
store = HistoryStore.open(sys.argv[1], time_zone="UTC")
w = HistoryWriter(store, "m", flush_s=60)
printed = 0
for s in range(10 ** 6):
    v = np.full(LAYOUT.n_channels, 3600.0)
    c = np.zeros((32, 7)); c[:, 0] = s  # 1 Wh per second on every CT and Meter
    w.add(Frame({t0} + s, v, c))
    if w.flushes != printed:
        printed = w.flushes
        print(printed, flush=True)
""".replace("{t0}", str(T0))


def frame(t: float) -> Frame:
    c = np.zeros((32, 7))
    c[:, 0] = t - T0
    return Frame(t, np.full(LAYOUT.n_channels, 3600.0), c)


@pytest.mark.parametrize("flushes", [1, 3])
def test_sigkill_loses_no_flushed_minute_and_no_energy(store_url, flushes):
    child = subprocess.Popen([sys.executable, "-c", CHILD, store_url], stdout=subprocess.PIPE,
                             text=True)
    try:
        for _ in range(flushes):
            assert child.stdout.readline(), "the writer died before flushing"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=20)
        child.stdout.close()
    store = HistoryStore.open(store_url)
    m = store.find_meter("m")
    tr = query.trend(store, m, "ct1", "p_w", T0, T0 + 86400, "1min")
    assert len(tr) >= flushes and np.all(tr.mean == 3600.0)  # whole minutes only
    stopped = store.load_state(m).last_time
    assert stopped is not None and stopped >= T0 + 60 * flushes - 1
    w = HistoryWriter(store, "m")
    resume = T0 + 7200
    for t in range(resume, resume + 600):
        w.add(frame(t))
    w.close()
    (day,) = query.energy(store, m, "ct1", date(2026, 5, 28), date(2026, 5, 28))
    assert day.energy["wh_import"] == pytest.approx(resume + 599 - T0)
    (gap,) = query.gaps(store, m, T0, T0 + 86400)
    assert gap[1] == resume and gap[2] == "restart"
    store.close()
