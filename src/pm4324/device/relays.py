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

A driver error never stops the meter. The meter drives every driver through
``SupervisedDriver``, which does what a careful relay board's host does: it keeps the state
each relay should have, retries a failed output after 1, 2, 4 … 60 s until it sticks, says
so once when it fails and once when it works again (a console line and an event), and
reports the failure in the meter status word (``Status.RELAY_DRIVER_FAILED``, Modbus input
0x1005, CANopen 0x2800) until then. The recorded state stays what the meter decided.
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


#: what a driver found out since the last poll: (relay index, None = the last switch of that
#: relay took effect, or the text of why it failed)
Outcome = tuple[int, str | None]


class RelayDriver(Protocol):
    def set(self, index: int, closed: bool) -> None:
        """Switch relay ``index`` (0 or 1); must not block; raises RelayDriverError."""
        ...

    def poll(self) -> list[Outcome]:
        """Called once per second: outcomes of switches whose result came later (commands)."""
        ...


class RecordingDriver:
    """Keeps the last state of each relay (and the history, for tests and tools)."""

    def __init__(self) -> None:
        self.states = [False] * N_RELAYS
        self.history: list[tuple[int, bool]] = []

    def set(self, index: int, closed: bool) -> None:
        self.states[index] = closed
        self.history.append((index, closed))

    def poll(self) -> list[Outcome]:
        return []


class CommandDriver:
    """Runs ``argv`` (with ``{relay}``/``{state}`` filled in) per change, without waiting."""

    confirms_later = True  # a started command has not switched anything yet: poll() tells

    def __init__(self, argv: tuple[str, ...], timeout_s: float = 5.0):
        self.argv = argv
        self.timeout_s = timeout_s
        self._running: dict[int, tuple[subprocess.Popen, float]] = {}
        self._outcomes: list[Outcome] = []

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

    def poll(self) -> list[Outcome]:
        """Collect finished runs and kill overdue ones; their outcomes since the last poll."""
        self._reap()
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

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
            self._outcomes.append((index, problem or None))

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

    def poll(self) -> list[Outcome]:
        return []


class SupervisedDriver:
    """Any driver, retried until each relay has the state the meter decided.

    ``poll()`` (once per meter second) returns the lines worth an event and a console line:
    the first failure of a streak and the recovery, never one per retry.
    """

    MAX_BACKOFF = 60  # seconds between retries, at most

    def __init__(self, inner: RelayDriver):
        self.inner = inner
        self._wanted: dict[int, bool] = {}
        self._failing: dict[int, list[int]] = {}  # relay -> [retries so far, seconds to next]
        self._news: list[str] = []

    @property
    def failing(self) -> bool:
        """A relay output has not taken its state (yet): Status.RELAY_DRIVER_FAILED."""
        return bool(self._failing)

    def set(self, index: int, closed: bool) -> None:
        self._wanted[index] = closed
        self._try(index)

    def poll(self) -> list[str]:
        for index, problem in self.inner.poll():
            self._outcome(index, problem)
        for index, retry in list(self._failing.items()):
            retry[1] -= 1
            if retry[1] <= 0:
                retry[0] += 1
                retry[1] = min(self.MAX_BACKOFF, 2 ** retry[0])
                self._try(index)
        return self.poll_news()

    def poll_news(self) -> list[str]:
        """The failure and recovery lines found so far, without polling the driver."""
        news, self._news = self._news, []
        return news

    def _try(self, index: int) -> None:
        try:
            self.inner.set(index, self._wanted[index])
        except RelayDriverError as exc:
            self._outcome(index, str(exc))
            return
        if not getattr(self.inner, "confirms_later", False):
            self._outcome(index, None)

    def _outcome(self, index: int, problem: str | None) -> None:
        if problem is None:
            retry = self._failing.pop(index, None)
            if retry is not None:
                self._report(f"relay {index + 1}: the driver works again (after {retry[0]} "
                             f"retr{'y' if retry[0] == 1 else 'ies'}); the output is "
                             f"{'closed' if self._wanted[index] else 'open'}")
        elif index not in self._failing:
            self._failing[index] = [0, 2]  # the next poll ends this second: retry after it
            self._report(f"{problem}; the output may not match: retrying (1, 2, 4 ... 60 s)")

    def _report(self, text: str) -> None:
        log.warning("relay driver: %s", text)
        self._news.append(text)


def make_driver(settings: DriverSettings) -> RelayDriver:
    """The driver the settings ask for."""
    if settings.kind == "command":
        return CommandDriver(settings.command)
    if settings.kind == "gpio":
        return GpioSysfsDriver(settings.gpio_lines, settings.gpio_active_low, settings.gpio_root)
    return RecordingDriver()
