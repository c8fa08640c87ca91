"""Software meters of this project as the hub's peers: `pm4324 run` in a subprocess, each
with its own settings and state, on Modbus TCP (a free port) or an RTU serial device."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / "building-settings.toml"


class SoftwareMeter:
    def __init__(self, home: Path, unit: int = 1, rtu: str | None = None, speed: float = 1.0):
        self.home, self.unit, self.rtu, self.speed = home, unit, rtu, speed
        home.mkdir(parents=True, exist_ok=True)
        text = SETTINGS.read_text().replace("address = 1 ", f"address = {unit} ")
        (home / "meter.toml").write_text(text)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> SoftwareMeter:
        """Start and wait until it says where it serves (its own stderr line)."""
        where = ["--rtu", self.rtu, "--no-modbus"] if self.rtu else ["--listen", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pm4324.cli.cli", "run", "--settings", str(self.home / "meter.toml"),
             "--json", "--speed", str(self.speed), *where],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(50):
            line = self.proc.stderr.readline()
            assert line, f"the meter in {self.home} exited"
            if m := re.search(r"Modbus TCP on [\d.]+:(\d+)", line):
                self.port = int(m.group(1))
                return self
            if "Modbus RTU on" in line:
                return self
        raise AssertionError("the meter never said where it serves")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=20)
            self.proc.stderr.close()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            finally:
                self.proc.stderr.close()
                self.proc = None


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
