"""Relay drivers: what turns the meter's relay state into contacts on a real board.

The meter decides the state of its two Form-A relays (manual writes or alarm rules) and
calls ``driver.set(index, closed)`` on every change, and once at power-up. A driver must
return at once: it is called from the one-second loop. Three drivers:

* ``RecordingDriver`` (default, ``driver = "record"``): keeps the state only; it is what
  `pm4324 run`, the relay coils and CANopen show.
* ``CommandDriver`` (``driver = "command"``): runs a program per change, e.g.
  ``command = ["/usr/local/bin/relay", "{relay}", "{state}"]`` (``{relay}`` = 1 or 2,
  ``{state}`` = 1 closed / 0 open). Started without waiting; a run still going after
  ``timeout_s`` is killed, a failure is logged. At most one run per relay: a newer change
  kills the older run first, so the newest state always wins.
* ``GpioSysfsDriver`` (``driver = "gpio"``): writes "1"/"0" to
  ``/sys/class/gpio/gpioN/value`` (``gpio_lines = [N1, N2]``; ``gpio_active_low`` inverts).
  The lines must already be exported as outputs (e.g. by a udev rule or
  ``echo N > /sys/class/gpio/export; echo out > /sys/class/gpio/gpioN/direction``); the
  driver only writes the value file, which never blocks. No gpiod library needed.

A driver error never stops the meter: it raises ``RelayDriverError`` and the meter logs it as
an event while the recorded state stays what the meter decided.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Protocol

from pm4324.config.alarm_settings import N_RELAYS, DriverSettings

log = logging.getLogger(__name__)


class RelayDriverError(Exception):
    """The driver could not switch a relay (the message says which and why)."""


class RelayModeError(ValueError):
    """A manual write to a relay that is in alarm mode (its rules own it)."""


class RelayDriver(Protocol):
    def set(self, index: int, closed: bool) -> None:
        """Switch relay ``index`` (0 or 1); must not block."""
        ...

    def poll(self) -> list[str]:
        """Called once per second: problems found since the last call (for the event log)."""
        ...


class RecordingDriver:
    """Keeps the last state of each relay (and the history, for tests and tools)."""

    def __init__(self) -> None:
        self.states = [False] * N_RELAYS
        self.history: list[tuple[int, bool]] = []

    def set(self, index: int, closed: bool) -> None:
        self.states[index] = closed
        self.history.append((index, closed))

    def poll(self) -> list[str]:
        return []


class CommandDriver:
    """Runs ``argv`` (with ``{relay}``/``{state}`` filled in) per change, without waiting."""

    def __init__(self, argv: tuple[str, ...], timeout_s: float = 5.0):
        self.argv = argv
        self.timeout_s = timeout_s
        self._running: dict[int, tuple[subprocess.Popen, float]] = {}
        self._problems: list[str] = []

    def set(self, index: int, closed: bool) -> None:
        self._reap()
        old = self._running.pop(index, None)
        if old is not None:  # the newest state wins
            old[0].kill()
            old[0].wait()
        args = [a.replace("{relay}", str(index + 1)).replace("{state}", "1" if closed else "0")
                for a in self.argv]
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise RelayDriverError(f"relay {index + 1}: cannot run {args[0]}: {exc}") from None
        self._running[index] = (proc, time.monotonic())

    def poll(self) -> list[str]:
        """Collect finished runs and kill overdue ones; the problems since the last poll."""
        self._reap()
        problems, self._problems = self._problems, []
        return problems

    def _reap(self) -> None:
        now = time.monotonic()
        for index, (proc, started) in list(self._running.items()):
            code = proc.poll()
            if code is None and now - started > self.timeout_s:
                proc.kill()
                proc.wait()
                problem = f"relay {index + 1}: {self.argv[0]} killed after {self.timeout_s:g} s"
            elif code is None:
                continue
            else:
                problem = f"relay {index + 1}: {self.argv[0]} exited with {code}" if code else ""
            del self._running[index]
            if problem:
                log.error("relay driver: %s", problem)
                self._problems.append(problem)

    def wait(self, timeout_s: float) -> None:
        """Wait for the runs in flight (at shutdown, and in tests)."""
        for proc, _ in self._running.values():
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()


class GpioSysfsDriver:
    """Writes the relay state to ``<root>/gpio<N>/value``."""

    def __init__(self, lines: tuple[int, ...], active_low: bool = False,
                 root: str = "/sys/class/gpio"):
        self.paths = [Path(root) / f"gpio{n}" / "value" for n in lines]
        self.active_low = active_low

    def set(self, index: int, closed: bool) -> None:
        level = closed != self.active_low
        try:
            with open(self.paths[index], "w", encoding="ascii") as f:
                f.write("1" if level else "0")
        except OSError as exc:
            raise RelayDriverError(f"relay {index + 1}: cannot write {self.paths[index]}: "
                                   f"{exc.strerror or exc}") from None

    def poll(self) -> list[str]:
        return []


def make_driver(settings: DriverSettings) -> RelayDriver:
    """The driver the settings ask for."""
    if settings.kind == "command":
        return CommandDriver(settings.command)
    if settings.kind == "gpio":
        return GpioSysfsDriver(settings.gpio_lines, settings.gpio_active_low, settings.gpio_root)
    return RecordingDriver()
