"""A small truth-level fleet, run for a few seconds of its time, and register helpers."""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from pm4324.fleet.clock import TruthFleet
from pm4324.fleet.config import FleetConfig, parse_fleet
from pm4324.fleet.store import FleetStore

SPEED = 20.0  # seconds of the fleet per wall second: a test lasts a fraction of a second


def small_fleet(tmp_path: Path, **extra) -> FleetConfig:
    data = {"fleet": {"store": str(tmp_path / "var" / "fleet")},
            "meters": [{"key": "m{n}", "count": 3, "seeds": [5, 7], "ct_ratios": [100, 200, 400]},
                       {"key": "solo", "seeds": [1, 1], "load_scale": [2, 2]}],
            "modbus": {"port": 0}, **extra}
    return parse_fleet(data, "fleet.toml", tmp_path)


def open_fleet(config: FleetConfig) -> TruthFleet:
    return TruthFleet(config, FleetStore.open(config.store, [m.key for m in config.members]))


@contextlib.asynccontextmanager
async def serving(fleet: TruthFleet) -> AsyncIterator[list]:
    """The list a test starts the fleet's servers into; on leaving, every server stops, then
    the fleet closes (its last commit)."""
    servers: list = []
    try:
        yield servers
    finally:
        for s in servers:
            await s.stop()
        fleet.close()


def run_seconds(fleet: TruthFleet, seconds: int) -> None:
    """Run the clock for ``seconds`` seconds of the fleet, to the end (bounded by the count)."""
    stop = threading.Event()
    thread = threading.Thread(target=fleet.run, args=(stop, seconds, SPEED))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()


def f32(words: list[int], at: int = 0) -> float:
    """A float32 in the meter's default word order (low word first)."""
    return struct.unpack("<f", struct.pack("<HH", words[at], words[at + 1]))[0]


def ct_address(ct: int) -> int:
    """Input register of CT ``ct``'s RMS voltage (V, I, kW, kvar, kVA follow, 2 words each)."""
    return 0x1100 + 0x100 * ((ct - 1) // 3) + 0x12 * ((ct - 1) % 3)
