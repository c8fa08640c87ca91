"""The event log: what happened to the meter, with timestamps (relay changes, alarms,
settings changes, energy resets, power-ups, state-file problems, save failures, clock steps).

Events live in the SQLite file of the state store (device/eventlog.py); each row carries
the commit number of the record it belongs to and is committed together with a copy of
that record, before the record reaches the ring: after a crash the log never mentions a
reset the counters do not show, or the other way round. The table keeps the newest
``MAX_EVENTS`` rows, pruned at every start and every 100 events whatever the boot pattern,
so it stays under about 1 MB. `pm4324 events` reads it, also while the meter runs (SQLite
WAL readers do not block the writer).

Times are Unix times on the meter's clock, the one its snapshots show (``Meter.clock``):
the wall clock at start plus the seconds measured, so with `run --speed 50` an event at
second 100 is stamped 100 s after the start, as the console shows that second, and in a
replay it is the recording's time. When the wall clock steps (set back by hand, NTP sync on
a box without RTC) the meter's clock follows it, and the step is itself an event
(``clock_step``). ``boot`` counts power-ups of this meter (1 = first start) and ``second``
is the snapshot sequence number within that boot (-1 = before the first second): (boot,
second) is the order that never goes backwards, and lines events up with `run --json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

MAX_EVENTS = 10_000
KINDS = (
    "power_up",  # the meter started (text: how the state was restored)
    "first_start",  # no state file yet: counters start at zero
    "store_recovered",  # the state file was damaged; the last good record was used
    "store_reset",  # the user started a new state file (--reset-store)
    "store_error",  # a commit failed (disk full, I/O error ...)
    "relay",  # a relay opened or closed (text says why)
    "relay_driver",  # the relay driver reported a problem
    "alarm_raised",
    "alarm_cleared",
    "alarm_held",  # condition cleared, output latched until acknowledged
    "alarm_acknowledged",
    "settings",  # settings changed at run time (text: which keys)
    "settings_refused",  # a settings write refused: the operator edited that key on disk
    "settings_file",  # the settings file could not be saved, or an edit on disk was kept
    "energy_reset",
    "clock_step",  # the wall clock stepped (set back or forward, NTP sync) while running
    "voltage_dip",  # power quality (docs/power-quality.md): a dip ended (text: where, how deep)
    "voltage_swell",
    "voltage_interruption",
    "voltage_change",  # a rapid voltage change (IEC 61000-4-30 RVC)
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    boot INTEGER NOT NULL,
    second INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Event:
    time: float
    boot: int
    second: int
    kind: str
    text: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One human line: local time, boot/second, kind, text."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        return f"{stamp}  boot {self.boot:<3} s {self.second:<7} {self.kind:<19} {self.text}"


def format_events(events: list[Event], as_json: bool) -> str:
    if as_json:
        return "".join(json.dumps(e.to_dict()) + "\n" for e in events)
    return "".join(e.line() + "\n" for e in events)
