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
from collections.abc import Mapping
from dataclasses import replace

import serial

from pm4324.config.settings import BAUD_RATES, ModbusSettings
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
    line and whether a frame was a broadcast)."""

    __slots__ = ("unicast", "broadcast")

    def __init__(self, backend: RegisterBackend, port: str):
        for_client = getattr(backend, "for_client", None)
        client = Client(MODBUS_RTU, port)
        self.unicast = for_client(client) if for_client else backend
        self.broadcast = for_client(replace(client, broadcast=True)) if for_client else backend


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
        self._kwargs = serial_kwargs(baud, data_format)
        self.backend = backend
        self.port = port
        self.address = address
        # multi-drop: unit -> how frames reach that meter (one meter: ``_one``, by address)
        self._units = {u: _Unit(b, port) for u, b in backends.items()} if backends else None
        self._one = _Unit(backend, port) if backend is not None else None
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
                one = self._one
                assert one is not None
                rsp = serve_rtu_frame(one.unicast, self.address, unit, pdu, one.broadcast)
            else:
                rsp = self._serve_multidrop(unit, pdu)
            if isinstance(rsp, Deferred) and self._loop is not None:
                head = bytes((unit,))
                rsp.send_when_durable(self._loop, lambda pdu, h=head: self._reply(with_crc(h + pdu)))
            elif isinstance(rsp, bytes) and not self._reply(rsp):
                return

    def _serve_multidrop(self, unit: int, pdu: bytes) -> bytes | Deferred | None:
        """What the line answers: the meter of that unit id, or (broadcast) nobody."""
        assert self._units is not None
        target = self._units.get(unit)
        if target is not None:
            return serve_rtu_frame(target.unicast, unit, unit, pdu)
        if unit == BROADCAST and pdu and pdu[0] in WRITE_FUNCTIONS:
            for each in self._units.values():
                handle_pdu(each.broadcast, pdu)
        return None

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
