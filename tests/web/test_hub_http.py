"""`pm4324 hub --http` end to end: the hub serves its meters' pages and the history API from
its own store (a store with known energies), shows a meter that does not answer as offline,
warns on stderr when bound beyond loopback, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx
import pytest
from history_fixture import FIRST, LAST, day_wh, write_site
from web_helpers import interrupt


def test_hub_serves_its_meters_and_their_history(tmp_path):
    write_site(str(tmp_path / "hub.db"), key="m0").close()
    with socket.socket() as closed:  # the meter's address: nobody answers there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (tmp_path / "hub.toml").write_text(
        '[hub]\nhistory = "hub.db"\ntime_zone = "Europe/Berlin"\n\n'
        f'[[meters]]\nkey = "m0"\ntcp = "127.0.0.1:{port}"\ntimeout_s = 0.2\n'
        'names = { meters = { "1" = "Main board" } }\n')
    proc = subprocess.Popen([sys.executable, "-m", "pm4324.cli.cli", "hub", str(tmp_path / "hub.toml"),
                             "--http", "0.0.0.0:0", "--seconds", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        url = None
        for line in proc.stderr:  # bounded by the process: it says these or exits
            lines.append(line)
            if found := re.search(r"Dashboard and HTTP API of 1 meters on http://[\d.]+:(\d+)/", line):
                url = f"http://127.0.0.1:{found.group(1)}"
            if line.startswith("m0: offline"):
                break
        assert url and any("0.0.0.0 is not loopback" in x for x in lines), lines
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/api/fleet").json()[0] | {"last_seen": None} == {
                "key": "m0", "online": False, "last_seen": None, "seq": None, "model": None}
            rows = http.get("/api/history/energy", params={"element": "meter1", "first": FIRST.isoformat(),
                                                           "last": LAST.isoformat()}).json()["rows"]
            assert len(rows) == 4 and rows[3]["energy"]["wh_import"] == pytest.approx(day_wh(LAST), rel=1e-9)
            span = http.get("/api/history/span", params={"device": "m0"}).json()
            assert span["time_zone"] == "Europe/Berlin" and span["labels"][24]["label"] == "Main board"
            assert http.get("/trends").text.startswith("<!doctype html>")
            assert http.get("/api/cts/1").status_code == 503  # no live second from it yet
    finally:
        code = interrupt(proc)
    assert code == 0
