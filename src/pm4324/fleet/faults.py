"""Faults of fleet members, addressed per meter (docs/fleet.md, "Faults").

Each member has its own fault book (sources/faults.py): the faults its scenario schedules,
the fleet file's ``[[faults]]`` for it, and the ones set live (``set``/``clear``, by the
member's key). At the truth level a member with an active fault is computed on its own from
its scenario's faulted phasors (``Scenario.expected`` with those faults); at the physics
level its simulator applies them to the samples. Every start and end is one JSON line in the
fleet's fault log (faults/log.py): meter key, fault, target, parameters, times on the
fleet's clock. The device fault ``energy_rollover`` presets the member's counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pm4324.config.settings import N_CTS
from pm4324.device.energy import MICRO
from pm4324.faults.log import FaultLog
from pm4324.fleet.store import FleetRegisters
from pm4324.protocols.faults import FaultChange, ProtocolFaults
from pm4324.sources.faults import Fault, FaultBook, plain_params
from pm4324.sources.scenario import Scenario

ROLLOVER_KWH = 2**32 / 100  # the uint32 energy registers count 0.01 kWh


class FleetFaults:
    """The fault books of every member, their protocol faults, the log, the device faults."""

    def __init__(self, keys: list[str], scenarios: list[Scenario], now: Callable[[], float],
                 clock_at: Callable[[float], float], registers: FleetRegisters,
                 log: FaultLog | None = None,
                 scheduled: tuple[tuple[tuple[str, ...], str, dict, float, float], ...] = ()):
        self.keys, self.scenarios = keys, scenarios
        self.index = {k: j for j, k in enumerate(keys)}
        self.books = [FaultBook(s.faults, now) for s in scenarios]
        self.clock_at, self.log, self.registers = clock_at, log, registers
        self.with_faults = {j for j, b in enumerate(self.books) if b.faults}
        self.on_change: Callable[[int, tuple[Fault, ...]], None] | None = None  # physics
        self.lock: threading.RLock = threading.RLock()  # the physics level shares its own
        for j, book in enumerate(self.books):
            book.add_listener(lambda event, f, t, j=j: self._heard(j, event, f, t))
        # what the members' protocol servers do on the wire (protocols/faults.py), given to
        # every server of the member; starts and ends in the same log (wall-clock times)
        self.protocol = [ProtocolFaults(k) for k in keys]
        if log is not None:
            for pf in self.protocol:
                pf.add_listener(self._wire)
        # scheduled protocol faults: (keys, kind, parameters, start_s, end_s), not yet started
        self._schedule = [(tuple(self.index[k] for k in keys_), kind, params, a, b)
                          for keys_, kind, params, a, b in scheduled]
        self._running: list[tuple[tuple[int, ...], str, float]] = []

    def member(self, key: str) -> int:
        if key not in self.index:
            raise KeyError(f"no meter {key!r} in the fleet")
        return self.index[key]

    def set(self, key: str, kind: str, target: str, params: Mapping[str, Any] | None = None,
            duration_s: float | None = None) -> Fault:
        """Start a fault on member ``key`` at its next second (FaultError if invalid)."""
        j = self.member(key)
        with self.lock:
            fault = self.books[j].set(kind, target, params, duration_s)
            self.with_faults.add(j)
            self._changed(j)
        return fault

    def clear(self, key: str, fault_id: int | None = None) -> list[Fault]:
        j = self.member(key)
        with self.lock:
            ended = self.books[j].clear(fault_id)
            self._changed(j)
        return ended

    def _changed(self, j: int) -> None:
        if self.on_change is not None:
            self.on_change(j, self.books[j].faults)

    def faulted(self, rows: slice, t: float) -> dict[int, tuple[Scenario, tuple[Fault, ...]]]:
        """Members of a group (fleet rows) with faults active at t: row in the group ->
        (its scenario, its active faults)."""
        out = {}
        for j in self.with_faults:
            if rows.start <= j < rows.stop:
                active = self.books[j].active(t)
                if active:
                    out[j - rows.start] = (self.scenarios[j], active)
        return out

    def advance(self, t: float) -> None:
        """Starts and ends before scenario time t: logged, device faults applied, scheduled
        protocol faults switched."""
        for j in list(self.with_faults):
            self.books[j].advance(t)
        for item in [x for x in self._running if x[2] <= t]:
            self._running.remove(item)
            for j in item[0]:
                self.protocol[j].clear(item[1])
        for item in [x for x in self._schedule if x[3] < t]:
            self._schedule.remove(item)
            members, kind, params, _, end = item
            for j in members:
                self.protocol[j].set(kind, **params)
            self._running.append((members, kind, end))

    def _wire(self, c: FaultChange) -> None:
        assert self.log is not None
        self.log.write(c.state, c.meter, c.fault, "protocol", c.fault, dict(c.params), "live",
                       c.started, c.time if c.state == "end" else None)

    def _heard(self, j: int, event: str, f: Fault, t: float) -> None:
        if event == "start" and f.kind == "energy_rollover":
            self.preset(j, None if f.target.kind == "all" else f.target.index,
                        (ROLLOVER_KWH - f.params["below_kwh"]) * 1000.0)
        if self.log is not None:
            end = self.clock_at(f.end_s) if event == "end" else None
            self.log.write(event, self.keys[j], f.kind, str(f.target), f.id,
                           plain_params(f.params), "live" if f.live else "scenario",
                           self.clock_at(f.start_s), end, start_s=f.start_s,
                           end_s=f.end_s if event == "end" else None)

    def preset(self, j: int, meter: int | None, wh: float) -> None:
        """Every counter of one Meter (and its CTs), or of all, of member j set to ``wh``."""
        rows = slice(None) if meter is None else np.r_[3 * (meter - 1) : 3 * meter,
                                                       N_CTS + meter - 1]
        regs = self.registers
        with regs.lock:
            regs.micro[j, rows] = int(wh * MICRO)
            regs.remainder[j, rows] = 0.0

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
