"""`pm4324 hub` as a process: SIGKILLed after some flushes (no flushed minute lost, energy
exact after it restarts, the silence a gap), and two hubs writing to one PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from postgres import drop, pg_url
from software_meter import software_meters

from pm4324.history import HistoryStore, query

WRITTEN = "history of"  # the hub's log line (with -v) after each flush of a meter
SPEED = 10  # the software meters run 10x: a minute of theirs ends every 6 s


def write_hub(path: Path, history: str, meters: list[tuple[str, int]]) -> Path:
    lines = ["[hub]", f'history = "{history}"', 'time_zone = "UTC"', "flush_s = 2", ""]
    for key, port in meters:
        lines += ["[[meters]]", f'key = "{key}"', f'tcp = "127.0.0.1:{port}"', "meters = [1]",
                  "poll_s = 0.1", "gap_s = 10", ""]
    path.write_text("\n".join(lines))
    return path


def start_hub(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pm4324.cli.cli", "-v", "hub", str(config), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_written(hub: subprocess.Popen, count: int) -> None:
    seen = 0
    for _ in range(10_000):  # bounded: a hub that never writes fails, it does not hang
        line = hub.stderr.readline()
        assert line, "the hub exited"
        seen += WRITTEN in line
        if seen >= count:
            return
    raise AssertionError("the hub did not write its history")


def end(hub: subprocess.Popen, sig: int) -> None:
    os.kill(hub.pid, sig)
    hub.wait(timeout=30)
    hub.stderr.close()


def test_sigkilled_hub_loses_no_written_minute(tmp_path):
    with software_meters(tmp_path, 1, SPEED) as (meter,):
        config = write_hub(tmp_path / "hub.toml", str(tmp_path / "hub.db"), [("m0", meter.port)])
        hub = start_hub(config)
        wait_written(hub, 2)
        end(hub, signal.SIGKILL)
        store = HistoryStore.open(tmp_path / "hub.db", readonly=True)
        m = store.find_meter("m0")
        killed_at = store.load_state(m).last_time
        before = query.trend(store, m, "ct1", "p_w", 0, 2e9, "raw", None)
        assert killed_at is not None and len(before) >= 1 and before.t[-1] <= killed_at
        store.close()
        hub = start_hub(config)
        wait_written(hub, 2)
        end(hub, signal.SIGTERM)
    store = HistoryStore.open(tmp_path / "hub.db", readonly=True)
    after = query.trend(store, m, "ct1", "p_w", 0, 2e9, "raw", None)
    assert set(before.t) <= set(after.t)  # every second written before the kill is still there
    gaps = query.gaps(store, m, 0, 2e9)  # (a loaded machine may add "no data" ones)
    assert [g for g in gaps if g[2] == "restart"] == [g for g in gaps if g[0] == killed_at] != []
    days = query.energy(store, m, "meter1", date(2000, 1, 1), date(2100, 1, 1))
    total = sum(d.energy["wh_import"] for d in days)
    assert total == pytest.approx(days[-1].last["wh_import"] - days[0].first["wh_import"], abs=1e-6)
    store.close()


def test_two_hubs_write_to_one_postgresql(tmp_path):
    url = pg_url()
    try:
        with software_meters(tmp_path, 2, SPEED) as (a, b):
            hubs = [start_hub(write_hub(tmp_path / f"hub{k}.toml", url, [(f"site{k}", m.port)]))
                    for k, m in enumerate((a, b))]
            for hub in hubs:
                wait_written(hub, 2)
            for hub in hubs:
                end(hub, signal.SIGTERM)
        store = HistoryStore.open(url)
        assert sorted(m["key"] for m in store.meters()) == ["site0", "site1"]
        for key in ("site0", "site1"):
            tr = query.trend(store, store.find_meter(key), "meter1", "p_w", 0, 2e9, "raw", None)
            assert len(tr) >= 2 and abs(tr.mean[-1] - 36885.0) < 200  # the building's Meter 1
        store.close()
    finally:
        drop(url)
