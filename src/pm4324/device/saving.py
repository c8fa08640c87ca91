"""The meter's durability half: commits through the committer thread, save failures, the
live status word and clock steps (a mixin of ``device.meter.Meter``, which owns the state
these methods read under its lock).

Why here: every path that changes what the meter would restore (the 1-s loop, relay and
reset writes, settings) ends in ``_request_commit``, which returns the future a protocol
server waits on before it answers (docs/energy-store.md, "Acknowledged means durable").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from pm4324.device.alarms import AlarmEngine
from pm4324.device.commit import CLOSE_WAIT_S, Committer
from pm4324.device.energy import EnergyRegisters
from pm4324.device.events import Event
from pm4324.device.record import copy_registers
from pm4324.device.relays import SupervisedDriver
from pm4324.device.store import EventsNotSaved, Store, StoreError
from pm4324.snapshot import Snapshot, Status

log = logging.getLogger("pm4324.device.meter")

CLOCK_STEP_S = 1.0  # a wall-clock jump larger than this against the monotonic clock is a step
CLOCK_STEP_HOLD_S = 60.0  # how long Status.CLOCK_STEPPED stays set after a step
_NO_DATA, _NOT_SAVED, _RELAY_DRIVER_FAILED, _CLOCK_STEPPED, _VOLTAGE_RANGE = (
    int(b) for b in (Status.NO_DATA, Status.NOT_SAVED, Status.RELAY_DRIVER_FAILED,
                     Status.CLOCK_STEPPED, Status.VOLTAGE_RANGE))
Durable = Future  # of bool: True once a change is on disk (None: no store, nothing to wait)


class Saving:
    """Commits, save failures, the status word and clock steps of a running meter."""

    store: Store | None
    driver: SupervisedDriver
    seq: int
    start_time: float
    _last_end: float
    ct_registers: EnergyRegisters
    meter_registers: EnergyRegisters
    alarms: AlarmEngine
    _committer: Committer | None
    _lock: threading.RLock
    _unsaved: deque[Event]
    _voltage_warnings: list[str]  # Meter's: nominal voltages outside the inputs' range
    _relays: tuple[bool, bool]
    _snapshot: Snapshot
    _not_saved: bool
    _shown_status: int
    _wall: Callable[[], float]
    _clock_offset: float
    _stepped_until: float
    _event: Callable[[str, str], None]  # Meter's: log one event

    @property
    def status(self) -> int:
        """The meter status word as of now (snapshot.Status), also between two seconds.
        Plain ints: the register image asks on every Modbus request."""
        bits = _NO_DATA if self._snapshot.seq < 0 else 0
        if self.driver.failing:
            bits |= _RELAY_DRIVER_FAILED
        if self._not_saved:
            bits |= _NOT_SAVED
        if self._stepped_until > 0 and time.monotonic() < self._stepped_until:
            bits |= _CLOCK_STEPPED
        if self._voltage_warnings:
            bits |= _VOLTAGE_RANGE
        return bits

    def _request_commit(self) -> Durable | None:
        """Ask the committer to save everything held now (None without a store)."""
        return self._committer.request() if self._committer is not None else None

    def _save_now(self) -> bool:
        """Commit and wait (power-up, shutdown): True when on disk."""
        done = self._request_commit()
        if done is None:
            self._unsaved.clear()
            return True
        try:
            return done.result(timeout=CLOSE_WAIT_S)
        except TimeoutError:  # a stalled disk: the status word says not_saved
            return False

    def _commit(self) -> bool:
        """The committer's work: copy the state under the lock, save it outside it."""
        assert self.store is not None
        with self._lock:
            events = list(self._unsaved)
            state = (self.seq - 1, copy_registers(self.ct_registers),
                     copy_registers(self.meter_registers), self._relays, self.alarms.latched())
        error: StoreError | None = None
        try:
            self.store.save(*state, events)
        except StoreError as exc:  # EventsNotSaved too: the events stay pending
            error = exc
        with self._lock:
            if error is None:
                for _ in events:
                    self._unsaved.popleft()
            self._saving(error)
        return error is None

    def _saving(self, error: StoreError | None) -> None:
        """Track save failures: NOT_SAVED, one event per failure streak and its end."""
        if error is not None and not self._not_saved:
            self._not_saved = True
            what = "the events are" if isinstance(error, EventsNotSaved) else "the state is"
            self._event("store_error", f"{error} ({what} kept in memory; retried at every "
                        "commit)")
        elif error is None and self._not_saved:
            self._not_saved = False
            self._event("store_error", "saving works again (events above were saved late)")
        self._show_status()

    def _show_status(self) -> None:
        """One console line each time the status word changes (the end of NO_DATA at the
        first second is expected and not shown)."""
        now = self.status & ~Status.NO_DATA
        if now != self._shown_status:
            self._shown_status = now
            names = ", ".join(Status(now).names()) or "ok"
            (log.error if now else log.warning)("meter status: %s", names)

    def _check_clock(self) -> None:
        """A step of the wall clock (set by hand, NTP sync on a box without RTC) is an
        event and a status bit; the snapshot timeline follows the wall clock from then on."""
        offset = self._wall() - time.monotonic()
        step = offset - self._clock_offset
        if abs(step) <= CLOCK_STEP_S:
            return
        self._clock_offset = offset
        self.start_time += step
        self._last_end += step  # the meter's clock (events, console) follows too
        self._stepped_until = time.monotonic() + CLOCK_STEP_HOLD_S
        self._event("clock_step", f"the wall clock stepped by {step:+.3f} s; times from now "
                    "on follow it (order events by boot and second)")
        self._show_status()


    def _check_clock_at_power_up(self) -> None:
        """A wall clock behind the last commit (set back while stopped, a box without RTC
        before its NTP sync) is a step too: event times of this boot come before the
        previous boot's."""
        if self.store is None:
            return
        last = self.store.restored
        behind = last.time - self._wall()
        if behind > CLOCK_STEP_S and last.seq > 0:
            self._stepped_until = time.monotonic() + CLOCK_STEP_HOLD_S
            self._event("clock_step", f"at power-up the wall clock is {behind:.0f} s before the "
                        f"last commit (boot {last.boot}, second {last.second}): set back, or "
                        "not yet synchronised (order events by boot and second)")


def power_up_text(store: Store | None) -> str:
    if store is None:
        return "no state store: counters start at zero and are not saved"
    r = store.restored
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time))
    return (f"boot {store.boot}; state from {store.path} and {store.ring_path.name}, commit "
            f"{r.seq} (boot {r.boot}, second {r.second}, saved {when})")
