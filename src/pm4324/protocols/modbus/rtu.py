"""Modbus RTU server on a serial port: one meter, or several on one line (multi-drop).

``RtuServer`` glues the sans-IO framing of rtu_framing.py (the line rules are there) to a
pyserial port in an asyncio loop: ``loop.add_reader`` on the port's fd, one ``os.read`` per
wake-up, timestamps from ``time.monotonic()``, and the reply written from the same callback.
We chose the event loop over a reader thread because a thread waiting for the GIL can be held
off for the interpreter's 5 ms switch interval while the loop thread runs Python code; in the
loop the turnaround is the wake-up plus the handler (tens of microseconds), provided no other
callback blocks the loop (run heavy DSP in an executor).

Multi-drop (``backends={unit: backend}``): several meters on one RS-485 line, as an
integrator's bus has them. Each answers only its own unit id, and the line stays silent for
any other, as for one meter; a broadcast write (unit 0) is executed by every meter and
answered by none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

import serial

from pm4324.config.settings import BAUD_RATES, ModbusSettings
from pm4324.protocols.faults import ProtocolFaults
from pm4324.protocols.modbus.pdu import WRITE_FUNCTIONS, Deferred, handle_pdu
from pm4324.protocols.modbus.rtu_framing import (
    BROADCAST,
    RtuFramer,
    RtuTiming,
    bits_per_char,
    crc16,
    serve_rtu_frame,
    with_crc,
)
from pm4324.registers.backend import RegisterBackend
from pm4324.security.roles import MODBUS_RTU, Client

__all__ = [
    "RtuFramer",
    "RtuServer",
    "RtuTiming",
    "bits_per_char",
    "crc16",
    "serial_kwargs",
    "serve_rtu_frame",
    "with_crc",
]

log = logging.getLogger(__name__)


_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOPBITS = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}


def serial_kwargs(baud: int, data_format: str) -> dict[str, object]:
    """pyserial arguments for a line setting, e.g. (19200, "E81") -> 8 data, even, 1 stop."""
    if baud not in BAUD_RATES:
        raise ValueError(f"baud {baud!r}: allowed {', '.join(map(str, BAUD_RATES))}")
    bits_per_char(data_format)  # validates
    return {
        "baudrate": baud,
        "bytesize": serial.EIGHTBITS,
        "parity": _PARITY[data_format[0]],
        "stopbits": _STOPBITS[int(data_format[2])],
        "timeout": 0,
    }


class _Unit:
    """One meter on the line: how a unicast and a broadcast reach it (the guard sees the
    line and whether a frame was a broadcast), and its protocol faults."""

    __slots__ = ("unicast", "broadcast", "faults")

    def __init__(self, backend: RegisterBackend, port: str, faults: ProtocolFaults | None):
        for_client = getattr(backend, "for_client", None)
        client = Client(MODBUS_RTU, port)
        self.unicast = for_client(client) if for_client else backend
        self.broadcast = for_client(replace(client, broadcast=True)) if for_client else backend
        self.faults = faults


class RtuServer:
    """Serve one backend as Modbus unit ``address``, or several (``backends={unit: backend}``,
    ``backend=None``) as meters on one line, on a serial port (see the module docstring).

    ``address`` may be changed while running; it applies to the next frame. ``silence_s``
    overrides t3.5 for adapters that deliver a frame in late pieces (an FTDI USB adapter
    with its default 16 ms latency timer splits frames over 62 bytes; set the timer to 1 ms,
    or pass e.g. ``silence_s=0.02``). ``local_echo=True`` is for 2-wire adapters that
    hear their own transmission: the echo of each reply is skipped, so that the echo of an
    FC06 reply (identical to its request) is not served again, and again.
    """

    def __init__(
        self,
        backend: RegisterBackend | None,
        port: str,
        address: int = 1,
        baud: int = 19200,
        data_format: str = "N81",
        *,
        backends: Mapping[int, RegisterBackend] | None = None,
        faults: ProtocolFaults | Mapping[int, ProtocolFaults] | None = None,
        strict_t15: bool = False,
        silence_s: float | None = None,
        local_echo: bool = False,
    ):
        if (backend is None) == (backends is None):
            raise ValueError("give one backend (one meter) or backends={unit: backend}")
        units = [address] if backends is None else list(backends)
        bad = [u for u in units if not 1 <= u <= 247]
        if bad or not units:
            raise ValueError(f"unit address {bad or 'none'}: allowed 1..247")
        if isinstance(faults, ProtocolFaults) == (backends is not None) and faults is not None:
            raise ValueError("faults: one ProtocolFaults for one meter, {unit: "
                             "ProtocolFaults} for several")
        self._kwargs = serial_kwargs(baud, data_format)
        self.backend = backend
        self.port = port
        self.address = address
        # multi-drop: unit -> how frames reach that meter (one meter: ``_one``, by address)
        per_unit = faults if isinstance(faults, Mapping) else {}
        self._units = {u: _Unit(b, port, per_unit.get(u)) for u, b in backends.items()} \
            if backends else None
        one = faults if isinstance(faults, ProtocolFaults) else None
        self._one = _Unit(backend, port, one) if backend is not None else None
        self.faults_applied: Counter[str] = Counter()  # frames each kind of fault hit
        self.baud = baud
        self.data_format = data_format
        timing = RtuTiming.for_line(baud, data_format)
        if silence_s is not None:
            timing = replace(timing, t35_s=silence_s)
        self.framer = RtuFramer(timing, strict_t15=strict_t15)
        self.local_echo = local_echo
        self.requests = 0
        self.replies = 0
        self._echo = b""  # the part of our last reply whose echo is still expected
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(
        cls, backend: RegisterBackend, settings: ModbusSettings, port: str | None = None
    ) -> RtuServer:
        return cls(
            backend,
            port or settings.serial_port,
            address=settings.address,
            baud=settings.baud,
            data_format=settings.data_format,
        )

    @property
    def units(self) -> list[int]:
        """The unit ids this line answers."""
        return sorted(self._units) if self._units is not None else [self.address]

    @property
    def running(self) -> bool:
        return self._serial is not None

    async def start(self) -> None:
        """Open the port and start serving on the running loop."""
        if self._serial is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._serial = serial.Serial(port=self.port, **self._kwargs)
        self._fd = self._serial.fileno()
        self._serial.reset_input_buffer()
        self._loop.add_reader(self._fd, self._on_readable)
        units = self.units
        log.info("Modbus RTU unit%s %s on %s at %d %s", "s" if len(units) > 1 else "",
                 ", ".join(map(str, units)), self.port, self.baud, self.data_format)
    async def stop(self) -> None:
        self._close()

    async def __aenter__(self) -> RtuServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._serial is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            self._serial.close()
            self._serial = None

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # e.g. EIO: the other end of a pty went away
            log.error("Modbus RTU: reading %s failed (%s); port closed", self.port, exc)
            self._close()
            return
        now = time.monotonic()
        if self._echo:
            n = len(self._echo)
            if data[:n] == self._echo[:len(data)]:
                self._echo = self._echo[len(data):] if len(data) < n else b""
                data = data[n:]
            else:
                self._echo = b""  # not our echo after all: treat it as line traffic
        if not data:
            return
        self._serve(self.framer.feed(data, now))
        self._arm_timer(now)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.monotonic()
        self._serve(self.framer.expire(now))
        self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        deadline = self.framer.deadline
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None and self._serial is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - now), self._on_timer)

    def _serve(self, frames: list[tuple[int, bytes]]) -> None:
        for unit, pdu in frames:
            self.requests += 1
            if self._units is None:
                target = self._one
                assert target is not None
                address = self.address
            else:
                target = self._units.get(unit)
                address = unit
            if target is None or unit != address:  # another meter's, or a broadcast
                if unit == BROADCAST:
                    self._broadcast(pdu)
                continue
            faults = target.faults
            if faults is not None and faults.current:
                rsp = self._faulty(unit, pdu, target, faults)
            else:
                rsp = serve_rtu_frame(target.unicast, unit, unit, pdu)
            if not self._send(unit, rsp, faults):
                return

    def _broadcast(self, pdu: bytes) -> None:
        """Unit 0: a write is executed by every meter on the line that is not offline
        (through its guard, as a broadcast); nobody answers."""
        if not pdu or pdu[0] not in WRITE_FUNCTIONS:
            return
        for each in self._units.values() if self._units is not None else (self._one,):
            assert each is not None
            if each.faults is None or "offline" not in each.faults.current:
                handle_pdu(each.broadcast, pdu)

    def _faulty(self, unit: int, pdu: bytes, target: _Unit,
                faults: ProtocolFaults) -> bytes | Deferred | None:
        """The reply ADU as the meter's faults decide it (None: silence)."""
        current, fc = faults.current, pdu[0]
        if "offline" in current:
            self.faults_applied["offline"] += 1
            return None
        if faults.hit("no_answer"):
            self.faults_applied["no_answer"] += 1
            return None
        if faults.hit("exception"):
            self.faults_applied["exception"] += 1
            code = int(current["exception"]["code"])
            return with_crc(bytes((unit, fc | 0x80, code))) if 0 < fc < 0x80 else None
        if "stale" in current and fc not in WRITE_FUNCTIONS:
            self.faults_applied["stale"] += 1
            return faults.frozen(pdu, lambda: serve_rtu_frame(target.unicast, unit, unit, pdu))
        return serve_rtu_frame(target.unicast, unit, unit, pdu)

    def _send(self, unit: int, rsp: bytes | Deferred | None,
              faults: ProtocolFaults | None) -> bool:
        """Send a reply, once durable (a write), late or with a broken CRC as the faults
        say; False if the port failed (it is then closed)."""
        if rsp is None:
            return True
        if isinstance(rsp, Deferred):
            if self._loop is not None:
                head = bytes((unit,))
                rsp.send_when_durable(self._loop, lambda pdu: self._send(
                    unit, with_crc(head + pdu), faults) and None)
            return True
        if faults is not None and faults.current:
            if faults.hit("bad_crc"):
                self.faults_applied["bad_crc"] += 1
                rsp = rsp[:-2] + bytes((rsp[-2] ^ 0xFF, rsp[-1] ^ 0xFF))
            delay = faults.delay_s()
            if delay and self._loop is not None:
                self.faults_applied["latency"] += 1
                self._loop.call_later(delay, self._reply, rsp)
                return True
        return self._reply(rsp)

    def _reply(self, rsp: bytes) -> bool:
        """Send one response ADU; False if the port failed (it is then closed)."""
        if self._serial is None:
            return False
        try:
            self._serial.write(rsp)
        except (OSError, serial.SerialException) as exc:
            log.error("Modbus RTU: writing %s failed (%s); port closed", self.port, exc)
            self._close()
            return False
        self.replies += 1
        if self.local_echo:
            self._echo += rsp
        return True
