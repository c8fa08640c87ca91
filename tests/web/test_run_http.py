"""`pm4324 run --http` end to end: the URL it prints serves the second it prints as JSON,
a busy port is one line and exit code 2, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import httpx
from web_helpers import SETTINGS, interrupt


def _settings(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(SETTINGS.read_text() + f'\n[store]\npath = "{tmp_path / "state.db"}"\n')
    return path


def test_run_serves_the_second_it_prints(tmp_path):
    cmd = [sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(_settings(tmp_path)),
           "--http", "127.0.0.1:0", "--no-modbus", "--json", "--seconds", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:  # bounded by the process: it prints the URL or exits
            found = re.search(r"Dashboard and HTTP API on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "no URL printed"
        with httpx.Client(base_url=url.rstrip("/"), timeout=10) as http:
            printed = json.loads(proc.stdout.readline())  # a second printed means one published
            served = http.get("/api/snapshot").json()
            for line in proc.stdout:  # the printed line of the served second (bounded: 30 lines)
                if printed["seq"] >= served["seq"]:
                    break
                printed = json.loads(line)
                assert printed["seq"] <= served["seq"] + 30
            assert printed["seq"] == served["seq"]
            assert served["meters"][0]["p_w"] == printed["meters"][0]["p_w"]
            assert served["cts"][23]["kwh_import"] == printed["cts"][23]["kwh_import"]
            assert http.get("/").text.startswith("<!doctype html>")
            span = http.get("/api/history/span").json()  # run keeps a history and serves it
            assert span["enabled"] and span["device"] == "local" and span["time_zone"]
            assert http.get("/api/history/today").status_code == 200
    finally:
        code = interrupt(proc)
    assert code == 0


def test_a_busy_http_port_is_one_line_and_exit_2(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    extra = ["--http", f"127.0.0.1:{busy.getsockname()[1]}"]
    with busy:
            r = subprocess.run([sys.executable, "-m", "pm4324.cli.cli", "run", "--settings",
                            str(_settings(tmp_path)), "--no-modbus", *extra, "--seconds", "1"],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot serve HTTP" in r.stderr
