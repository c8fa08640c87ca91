"""The running part of the CANopen node: its bus, its two threads, and the device loop.

Threads: one receives frames and hands each to ``handle``; one runs the timers (heartbeat,
event-driven TPDOs, SDO timeout, EMCY inhibit, life guarding) through ``_next_deadline`` and
``_tick``. Both work under one lock. The meter's snapshot listener only records the snapshot
and wakes the timer thread, so the device loop never waits for the bus. Writes that change
the meter (settings, relays, energy reset) are run in the device loop's own thread when the
server was started from it (``await start()``), as the Modbus servers' writes are.

Protocol faults (protocols/faults.py) act here, on the frames themselves: ``offline`` and
``bus_off`` make the node send and hear nothing, ``heartbeat_loss`` drops its life signal
on 0x700 + node-ID (heartbeats and node-guarding replies; the boot-up message still goes).
When one ends the node goes on where it was (no boot-up: it was off the bus, not reset).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

import can

from pm4324.config.settings import Settings
from pm4324.protocols.canopen.codes import HEARTBEAT_BASE
from pm4324.protocols.faults import ProtocolFaults

log = logging.getLogger(__name__)

RX_POLL_S = 0.1  # the receive thread checks for stop this often
MAX_IDLE_S = 1.0  # the timer thread wakes at least this often
CALL_TIMEOUT_S = 2.0  # a write waits this long for the device loop


class CanopenBusError(OSError):
    """The configured python-can bus cannot be opened (the message says which and why)."""


class BusNode:
    """Bus and threads of a node; ``node.CanopenServer`` adds the CANopen services."""

    node_id: int
    bitrate: int

    def __init__(self, settings: Settings, bus: can.BusABC | None,
                 faults: ProtocolFaults | None = None):
        self.settings = settings
        self.faults = faults
        self._bus = bus
        self._own_bus = bus is None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.frames_sent = 0
        self.send_errors = 0
        self.frames_unsent = 0  # not sent because of a protocol fault
        self.frames_unheard = 0  # received but ignored because of a protocol fault

    # -- what the node does ----------------------------------------------------------------

    def _boot(self) -> None:
        raise NotImplementedError

    def handle(self, msg: can.Message) -> None:
        raise NotImplementedError

    def _next_deadline(self) -> float | None:
        raise NotImplementedError

    def _tick(self, now: float) -> None:
        raise NotImplementedError

    def _internal_error(self, exc: BaseException) -> None:
        raise NotImplementedError

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the bus, send the boot-up message and serve (from the device loop)."""
        self._loop = asyncio.get_running_loop()
        self.open()

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def open(self) -> None:
        """Thread-based start (tests, scripts): meter writes run in the node's threads."""
        if self._started:
            return
        if self._bus is None:
            self._bus = self._open_bus(self.bitrate)
        self._stop.clear()
        self._started = True
        with self._lock:
            self._boot()
        for target, name in ((self._rx_loop, "rx"), (self._timer_loop, "timers")):
            t = threading.Thread(target=target, name=f"canopen-{self.node_id}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        if not self._started:
            return
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()
        self._started = False
        if self._own_bus and self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def _open_bus(self, bitrate: int) -> can.BusABC:
        co = self.settings.canopen
        try:
            return can.Bus(interface=co.interface, channel=co.channel or None, bitrate=bitrate)
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise CanopenBusError(f"CANopen: cannot open {co.interface}:{co.channel}: "
                                  f"{exc}") from exc

    def __enter__(self) -> BusNode:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call_in_loop(self, fn, *args):
        """Run ``fn(*args)`` in the device loop's thread (if started there) and return its result."""
        loop = self._loop
        if loop is None or loop.is_closed() or _in_thread_of(loop):
            return fn(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=CALL_TIMEOUT_S)

    # -- the bus and the threads ------------------------------------------------------

    def _off_bus(self) -> bool:
        """A fault has taken the node off the bus (offline, bus-off)."""
        faults = self.faults
        if faults is None or not faults.current:
            return False
        return "offline" in faults.current or "bus_off" in faults.current

    def _send(self, cob_id: int, data: bytes) -> None:
        faults = self.faults
        if faults is not None and faults.current and (self._off_bus() or (
                "heartbeat_loss" in faults.current and cob_id == HEARTBEAT_BASE + self.node_id
                and data != b"\x00")):
            self.frames_unsent += 1
            return
        msg = can.Message(arbitration_id=cob_id, data=data, is_extended_id=False)
        try:
            assert self._bus is not None
            self._bus.send(msg)
            self.frames_sent += 1
        except (can.CanError, OSError) as exc:
            self.send_errors += 1
            log.warning("CANopen: cannot send 0x%03X: %s", cob_id, exc)

    def _rx_loop(self) -> None:
        while not self._stop.is_set():
            try:
                assert self._bus is not None
                msg = self._bus.recv(RX_POLL_S)
            except Exception as exc:  # a broken datagram or driver error: log, go on
                log.warning("CANopen: receive failed: %s", exc)
                self._stop.wait(RX_POLL_S)
                continue
            if msg is not None:
                if self._off_bus():
                    self.frames_unheard += 1
                    continue
                self.handle(msg)

    def _timer_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                deadline = self._next_deadline()
            timeout = MAX_IDLE_S if deadline is None else deadline - time.monotonic()
            if timeout > 0:
                self._wake.wait(min(timeout, MAX_IDLE_S))
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                try:
                    self._tick(time.monotonic())
                except Exception as exc:
                    self._internal_error(exc)


def _in_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
