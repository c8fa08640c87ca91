"""The truth-level fleet: every member's second computed ahead, committed, and published on
the second (docs/fleet.md).

One thread paces the fleet. During second k it computes second k of every group (arrays,
fleet/truth.py), adds the second's energies to the registers and commits them at once (one
commit for all members, fleet/store.py: the whole second is the budget for both, whatever
else the process does); at the second's end it publishes: one reference assignment makes
second k every member's snapshot, so each member's snapshot is out within the thread's
wake-up latency of its second, whatever the number of members. A member's energies shown
before the publish exclude the second committed ahead (the increments are held as pending
until then), so every value shown is on disk, and nothing is shown early.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from pm4324.config.settings import N_CTS
from pm4324.device.commit import Committer
from pm4324.device.energy import MICRO
from pm4324.device.recovery import StoreError
from pm4324.faults.log import FaultLog
from pm4324.fleet.config import FleetConfig
from pm4324.fleet.faults import FleetFaults
from pm4324.fleet.member import FleetMember, energies
from pm4324.fleet.store import FleetStore
from pm4324.fleet.truth import GroupTruth, Second, rated_currents
from pm4324.snapshot import Energies, Status


@dataclass
class _Group:
    truth: GroupTruth
    rows: slice  # the group's members in the fleet
    gain: np.ndarray  # (n, 24) live CT ratio / installed
    rated: np.ndarray  # (n, 24) rated primary current (live)


class TruthFleet:
    """Members computed from the truth, one commit and one publish a second."""

    def __init__(self, config: FleetConfig, store: FleetStore):
        self.config, self.store = config, store
        self.registers = store.registers
        n = len(config.members)
        self.group_of = np.array([m.group for m in config.members])
        self.row_of = np.zeros(n, dtype=np.int64)
        self.groups: list[_Group] = []
        for g, (settings, scenario) in enumerate(config.groups):
            idx = np.flatnonzero(self.group_of == g)
            rows = slice(int(idx[0]), int(idx[-1]) + 1)
            self.row_of[rows] = np.arange(len(idx))
            members = config.members[rows]
            scales = np.array([m.load_scale for m in members]).reshape(len(idx), -1)
            rated = np.array([rated_currents(m.settings) for m in members])
            self.groups.append(_Group(GroupTruth(scenario, settings, scales), rows,
                                      np.ones((len(idx), N_CTS)), rated))
        self.members = [FleetMember(self, j, m.settings) for j, m in enumerate(config.members)]
        self.listened: set[int] = set()
        self.current: list[Second | None] = [None] * len(self.groups)
        self.published_k = -1
        self._next_k = 0  # the next second to compute: a live fault starts there
        self._pending: list[np.ndarray | None] = [None] * len(self.groups)  # (n, 32, 7)
        self.not_saved = False
        self.start_time = time.time()
        self.jitter_s: deque[float] = deque(maxlen=3600)  # publish time - the second's end
        self.compute_s: deque[float] = deque(maxlen=3600)
        self.late = 0  # seconds whose commit was not done by their end
        self._committer = Committer(self._commit)
        self.faults = FleetFaults([m.key for m in config.members],
                                  [m.scenario for m in config.members],
                                  lambda: float(self._next_k),
                                  lambda t: self.start_time + t, self.registers,
                                  FaultLog(config.fault_log) if config.fault_log else None,
                                  config.protocol_faults)

    # -- what members ask --------------------------------------------------------------------

    def request_commit(self) -> Future:
        return self._committer.request()

    def _commit(self) -> bool:
        try:
            self.store.commit()
        except StoreError:
            self.not_saved = True
            return False
        self.not_saved = False
        return True

    def status_of(self, member: int) -> int:
        bits = int(Status.NO_DATA) if self.published_k < 0 else 0
        return bits | (int(Status.NOT_SAVED) if self.not_saved else 0)

    def second_of(self, member: int) -> tuple[Second | None, int]:
        return self.current[self.group_of[member]], int(self.row_of[member])

    def energies_of(self, member: int) -> tuple[Energies, Energies]:
        regs = self.registers
        g = self.group_of[member]
        with regs.lock:
            values = (regs.micro[member] + regs.remainder[member]) / MICRO
            pending = self._pending[g]
            if pending is not None:
                values = values - pending[self.row_of[member]]
        return energies(values)

    def reset_energy(self, member: int, meter: int | None) -> None:
        rows = slice(None) if meter is None else np.r_[3 * (meter - 1) : 3 * meter,
                                                       N_CTS + meter - 1]
        regs = self.registers
        with regs.lock:
            regs.micro[member, rows] = 0
            regs.remainder[member, rows] = 0.0
            pending = self._pending[self.group_of[member]]
            if pending is not None:
                pending[self.row_of[member], rows] = 0.0

    def set_gain(self, member: int, gain: np.ndarray, rated: np.ndarray) -> None:
        """A live CT ratio write: from the next computed second on."""
        g = self.groups[self.group_of[member]]
        g.gain[self.row_of[member]] = gain
        g.rated[self.row_of[member]] = rated

    # -- the clock -----------------------------------------------------------------------------

    def run(self, stop: threading.Event, seconds: float | None = None, speed: float = 1.0
            ) -> None:
        """Publish second after second until ``stop`` is set or ``seconds`` are out."""
        t0 = time.monotonic()
        self.start_time = time.time()
        k = 0
        while not stop.is_set() and (seconds is None or k < seconds):
            c0 = time.perf_counter()
            secs = self._compute(k)
            self.compute_s.append(time.perf_counter() - c0)
            due = t0 + (k + 1) / speed
            self.faults.advance(k + 1)  # log starts and ends; presets before the energy
            regs = self.registers
            with regs.lock:
                for j, (g, sec) in enumerate(zip(self.groups, secs)):
                    inc = np.concatenate((sec.ct_energy, sec.meter_energy), axis=1)
                    regs.add(inc, g.rows)
                    self._pending[j] = inc
            done = self.request_commit()
            done.result()
            if time.monotonic() > due:
                self.late += 1
            stop.wait(max(0.0, due - time.monotonic()))
            with regs.lock:
                self.current = secs
                self._pending = [None] * len(self.groups)
                self.published_k = k
            self.jitter_s.append(time.monotonic() - due)
            for n in list(self.listened):
                self.members[n].publish()
            k += 1

    def _compute(self, k: int) -> list[Second]:
        """Second ``k`` of every group."""
        with self.faults.lock:  # a fault set from now on starts at the next second
            faulted = [self.faults.faulted(g.rows, k + 0.5) for g in self.groups]
            self._next_k = k + 1
        return [g.truth.second(k, g.gain, g.rated, f) for g, f in zip(self.groups, faulted)]

    def close(self) -> None:
        self._committer.close()
        self.store.close()
        self.faults.close()
