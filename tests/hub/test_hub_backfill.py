"""A hub that was stopped for four minutes of a software meter's time fills the gap from the
meter's own history when it starts again (`web = URL` in HUB.toml): processes end to end,
`pm4324 run --http --speed 20` and `pm4324 hub`, compared with the meter's own store."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from pm4324.history import HistoryStore, query

SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / "building-settings.toml"
CLI = [sys.executable, "-m", "pm4324.cli.cli"]
MISSED_S = 240.0  # meter seconds the hub is away


def lines_until(proc: subprocess.Popen, pattern: str) -> re.Match:
    """Read the process's stderr up to a line matching ``pattern`` (bounded: it exits)."""
    for line in proc.stderr:
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"{proc.args[3]} ended without saying {pattern!r}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(30) == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def meter_time_after(url: str, t: float) -> float:
    """Follow the meter's stream until its clock passes ``t`` (no sleeping)."""
    with httpx.stream("GET", url + "api/stream", timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and (now := json.loads(line[6:])["time"]) > t:
                return now
    raise AssertionError("the stream ended")


def test_a_restarted_hub_backfills_what_it_missed(tmp_path):
    (tmp_path / "meter.toml").write_text(
        SETTINGS.read_text() + f'\n[store]\npath = "{tmp_path / "state.db"}"\n'
        '\n[history]\nflush_s = 5\ntime_zone = "UTC"\n')
    meter = subprocess.Popen([*CLI, "run", "--settings", str(tmp_path / "meter.toml"), "--speed", "20",
                              "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hub = None
    try:
        said = lines_until(meter, r"Modbus TCP on [\d.]+:(\d+)|Dashboard and HTTP API on (http://\S+)")
        other = lines_until(meter, r"Modbus TCP on [\d.]+:(\d+)|Dashboard and HTTP API on (http://\S+)")
        port, url = said.group(1) or other.group(1), said.group(2) or other.group(2)
        meter_time_after(url, 0)  # it has measured a second
        (tmp_path / "hub.toml").write_text(
            '[hub]\nhistory = "hub.db"\ntime_zone = "UTC"\nflush_s = 30\n\n'
            f'[[meters]]\nkey = "m0"\ntcp = "127.0.0.1:{port}"\npoll_s = 0.5\ngap_s = 30\nmeters = [1]\n'
            f'web = "{url.rstrip("/")}"\n')
        hub_cmd = [*CLI, "hub", str(tmp_path / "hub.toml"), "--seconds", "90"]
        hub = subprocess.Popen(hub_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines_until(hub, r"^m0: online")
        stop(hub)  # written: the readings so far
        store = HistoryStore.open(tmp_path / "hub.db", readonly=True)
        left = store.load_state(store.find_meter("m0")).last_time
        store.close()
        meter_time_after(url, left + MISSED_S)
        hub = subprocess.Popen(hub_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        filled = lines_until(hub, r"m0: backfilled (\d+) minutes")
        stop(hub)
        hub = None
    finally:
        if hub is not None:
            hub.kill()
        stop(meter)
    assert int(filled.group(1)) >= MISSED_S / 60 - 1
    hub_store = HistoryStore.open(tmp_path / "hub.db", readonly=True)
    own = HistoryStore.open(tmp_path / "history.db", readonly=True)
    m_hub, m_own = hub_store.find_meter("m0"), own.find_meter("local")
    (start, end, reason), = [g for g in query.gaps(hub_store, m_hub, 0, 4e9)]
    assert reason == "restart, backfilled" and end - start >= MISSED_S
    inside = (start // 60 + 1) * 60, end // 60 * 60  # the whole minutes the hub missed
    got = query.trend(hub_store, m_hub, "meter1", "p_w", *inside, resolution="1min", max_points=None)
    truth = query.trend(own, m_own, "meter1", "p_w", *inside, resolution="1min", max_points=None)
    assert len(got) == len(truth) >= MISSED_S / 60 - 2
    assert np.array_equal(got.t, truth.t) and np.array_equal(got.mean, truth.mean)
    hub_store.close()
    own.close()
