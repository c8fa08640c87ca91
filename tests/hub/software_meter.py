"""Software meters of this project as the hub's peers: `pm4324 run` in a subprocess, each
with its own settings and state, on Modbus TCP (a free port) or an RTU serial device.

Optional, for tests that need more of the meter: ``settings_extra`` (TOML appended to its
settings, e.g. a ``[security]`` section), ``http`` (also `--http` on a free port: ``url``)
and ``record`` (its `--json` stdout, one dict per measured second, on ``seconds`` and in
``lines``: the meter's own unwrapped counters, the truth a hub's reading is compared with)."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / "building-settings.toml"


class SoftwareMeter:
    def __init__(self, home: Path, unit: int = 1, rtu: str | None = None, speed: float = 1.0,
                 settings_extra: str = "", http: bool = False, record: bool = False):
        self.home, self.unit, self.rtu, self.speed = home, unit, rtu, speed
        self.http, self.record = http, record
        home.mkdir(parents=True, exist_ok=True)
        text = SETTINGS.read_text().replace("address = 1 ", f"address = {unit} ")
        (home / "meter.toml").write_text(text + settings_extra)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""  # with ``http``: the dashboard and API, "http://127.0.0.1:PORT/"
        self.seconds: queue.Queue[dict[str, Any]] = queue.Queue()  # with ``record``
        self.lines: list[dict[str, Any]] = []  # with ``record``: every second so far
        self._reader: threading.Thread | None = None

    def start(self) -> SoftwareMeter:
        """Start and wait until it says where it serves (its own stderr lines)."""
        where = ["--rtu", self.rtu, "--no-modbus"] if self.rtu else ["--listen", f"127.0.0.1:{self.port}"]
        if self.http:
            where += ["--http", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(self.home / "meter.toml"),
             "--json", "--speed", str(self.speed), *where],
            stdout=subprocess.PIPE if self.record else subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        if self.record:
            self._reader = threading.Thread(target=self._read_lines, args=(self.proc.stdout,),
                                            daemon=True)
            self._reader.start()
        serving = False
        for _ in range(50):
            line = self.proc.stderr.readline()
            assert line, f"the meter in {self.home} exited"
            if m := re.search(r"Modbus TCP on [\d.]+:(\d+)", line):
                self.port, serving = int(m.group(1)), True
            elif "Modbus RTU on" in line:
                serving = True
            elif m := re.search(r"Dashboard and HTTP API on (http://\S+)", line):
                self.url = m.group(1)
            if serving and (self.url or not self.http):
                return self
        raise AssertionError("the meter never said where it serves")

    def _read_lines(self, out: Any) -> None:
        for line in out:
            if line.startswith("{"):
                d = json.loads(line)
                self.lines.append(d)
                self.seconds.put(d)

    def _closed(self) -> None:
        assert self.proc is not None
        self.proc.stderr.close()
        if self._reader is not None:
            self._reader.join(timeout=20)
            self._reader = None
            self.proc.stdout.close()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=20)
            self._closed()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            finally:
                self._closed()


@contextlib.contextmanager
def software_meters(root: Path, count: int, speed: float = 1.0) -> Iterator[list[SoftwareMeter]]:
    """``speed`` > 1: the meters' clocks run faster, so minutes end (and are written) sooner."""
    meters = [SoftwareMeter(root / f"m{k}", speed=speed) for k in range(count)]
    try:
        for m in meters:
            m.start()
        yield meters
    finally:
        for m in meters:
            m.kill()
