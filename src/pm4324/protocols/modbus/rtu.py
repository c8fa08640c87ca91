"""Modbus RTU on an RS-485 line: CRC, silence-based framing, unit filtering, and a server.

The line (Modbus over Serial Line V1.02 §2.5):

* **One master, many slaves.** Only the master starts a transaction. Every slave hears every
  request *and every other slave's response*, so a slave must stay silent for any frame that
  is not addressed to it (another unit id, a bad CRC, garbage). Answering anything else, even
  with an exception, collides with the addressed meter on the shared bus. Unit 0 is a
  broadcast: writes are executed by every slave and nobody answers; a broadcast read makes no
  sense and is ignored.
* **Frames are delimited by silence.** A frame starts after at least 3.5 character times of
  idle line (t3.5) and its characters follow each other with gaps below 1.5 character times
  (t1.5). Above 19200 baud the spec fixes t3.5 = 1.75 ms and t1.5 = 0.75 ms. A character is
  1 start + 8 data + parity (0 or 1) + stop (1 or 2) bits: 10 bits for N81, 11 for N82, E81
  and O81, 12 for E82 and O82.
* **We dispatch on length, and resync on silence.** Waiting for the closing t3.5 before
  answering would cost 4 ms at 9600 baud and break the 2 ms turnaround, so the request's
  length is derived from its function code (``request_pdu_length``) and a complete frame with
  a good CRC is served at once. Only a function code of unknown length waits for the silence.
  A bad CRC, an impossible length or more than 256 bytes make the rest of the burst garbage:
  everything is dropped until the line has been silent for t3.5. We do *not* "hunt" for a
  frame at a later offset, as pymodbus's framer does: inside another slave's response data a
  hunt could find a valid-looking write addressed to us.
* **t1.5 is not enforced by default.** Receive timestamps come from ``read()`` returns, and
  UART FIFOs and USB adapters deliver bytes in bursts (1 ms USB frames), so a gap measured
  between two reads says little about the gap on the wire. ``strict_t15=True`` enables the
  check (a gap above t1.5 inside a frame discards it) for ports where timestamps are exact.

``RtuFramer`` and ``serve_rtu_frame`` are sans-IO (bytes and timestamps in, frames out) and are
unit-tested with fake clocks. ``RtuServer`` glues them to a pyserial port in an asyncio loop:
``loop.add_reader`` on the port's fd, one ``os.read`` per wake-up, timestamps from
``time.monotonic()``, and the reply written from the same callback. We chose the event loop
over a reader thread because a thread waiting for the GIL can be held off for the interpreter's
5 ms switch interval while the loop thread runs Python code; in the loop the turnaround is the
wake-up plus the handler (tens of microseconds), provided no other callback blocks the loop
(run heavy DSP in an executor).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field, replace

import serial

from pm4324.config.settings import BAUD_RATES, DATA_FORMATS, ModbusSettings
from pm4324.protocols.modbus.pdu import WRITE_FUNCTIONS, handle_pdu, request_pdu_length
from pm4324.registers.backend import RegisterBackend
from pm4324.security.roles import MODBUS_RTU, Client

__all__ = [
    "RtuFramer",
    "RtuServer",
    "RtuTiming",
    "crc16",
    "serial_kwargs",
    "serve_rtu_frame",
    "with_crc",
]

log = logging.getLogger(__name__)

MAX_ADU = 256
BROADCAST = 0


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """``frame`` followed by its CRC, low byte first."""
    return frame + crc16(frame).to_bytes(2, "little")


def _crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame) == 0  # CRC over data+CRC is 0 when intact


def bits_per_char(data_format: str) -> int:
    """1 start + 8 data + parity bit (E/O) + stop bits, e.g. "N81" -> 10, "E82" -> 12."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format {data_format!r}: allowed {', '.join(DATA_FORMATS)}")
    return 1 + 8 + (0 if data_format[0] == "N" else 1) + int(data_format[2])


@dataclass(frozen=True)
class RtuTiming:
    """Character time and the t1.5 / t3.5 silences of one line setting, in seconds."""

    char_s: float
    t15_s: float
    t35_s: float

    @classmethod
    def for_line(cls, baud: int, data_format: str = "N81") -> RtuTiming:
        if baud <= 0:
            raise ValueError(f"baud {baud!r}: must be positive")
        char_s = bits_per_char(data_format) / baud
        if baud > 19200:  # fixed values, Modbus over Serial Line V1.02 §2.5.1.1
            return cls(char_s, 0.000750, 0.001750)
        return cls(char_s, 1.5 * char_s, 3.5 * char_s)


@dataclass
class RtuFramer:
    """Split a received byte stream into CRC-valid frames, by length and by silence.

    ``feed(data, now)`` returns the ``(unit, pdu)`` of every complete frame; ``expire(now)``
    must be called once ``deadline`` has passed, to close a frame whose length only the
    silence tells. ``now`` is a monotonic time in seconds.
    """

    timing: RtuTiming
    strict_t15: bool = False
    crc_errors: int = 0
    garbage_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _last: float | None = None
    _discarding: bool = False

    @property
    def deadline(self) -> float | None:
        """When ``expire`` next has something to do (None: nothing pending)."""
        if self._last is None or not (self._buf or self._discarding):
            return None
        return self._last + self.timing.t35_s

    def feed(self, data: bytes, now: float) -> list[tuple[int, bytes]]:
        frames: list[tuple[int, bytes]] = []
        if self._last is not None:
            gap = now - self._last
            if gap >= self.timing.t35_s:
                frames += self._close_on_silence()
            elif self.strict_t15 and self._buf and gap > self.timing.t15_s:
                self._drop()
        self._last = now
        if self._discarding:
            self.garbage_bytes += len(data)
            return frames
        self._buf += data
        self._split(frames)
        return frames

    def expire(self, now: float) -> list[tuple[int, bytes]]:
        if self._last is None or now - self._last < self.timing.t35_s:
            return []
        return self._close_on_silence()

    def _split(self, frames: list[tuple[int, bytes]]) -> None:
        buf = self._buf
        while len(buf) >= 2:
            pdu_len = request_pdu_length(memoryview(buf)[1:])
            if pdu_len is None:  # unknown function code: only the silence ends it
                if len(buf) > MAX_ADU:
                    self._drop()
                return
            if pdu_len == 0:  # need more bytes to tell
                return
            n = pdu_len + 3
            if n > MAX_ADU:
                self._drop()
                return
            if len(buf) < n:
                return
            frame = bytes(buf[:n])
            if not _crc_ok(frame):
                self.crc_errors += 1
                self._drop()
                return
            frames.append((frame[0], frame[1:-2]))
            del buf[:n]

    def _close_on_silence(self) -> list[tuple[int, bytes]]:
        frames: list[tuple[int, bytes]] = []
        buf = self._buf
        if buf and not self._discarding:
            # Only a frame of unknown length may end here; a known one is incomplete.
            if len(buf) >= 4 and request_pdu_length(memoryview(buf)[1:]) is None:
                if _crc_ok(buf):
                    frames.append((buf[0], bytes(buf[1:-2])))
                else:
                    self.crc_errors += 1
                    self.garbage_bytes += len(buf)
            else:
                self.garbage_bytes += len(buf)
        buf.clear()
        self._discarding = False
        return frames

    def _drop(self) -> None:
        self.garbage_bytes += len(self._buf)
        self._buf.clear()
        self._discarding = True


def serve_rtu_frame(backend: RegisterBackend, address: int, unit: int, pdu: bytes,
                    broadcast_backend: RegisterBackend | None = None) -> bytes | None:
    """The response ADU (with CRC) to one received frame, or None for silence.

    Silence for another unit id, for every broadcast (writes are executed first, through
    ``broadcast_backend`` when given: the guard never lets a broadcast reset energy; broadcast
    reads are ignored without touching the backend) and when ``handle_pdu`` has no answer.
    """
    if unit == address:
        rsp = handle_pdu(backend, pdu)
        return None if rsp is None else with_crc(bytes((address,)) + rsp)
    if unit == BROADCAST and pdu and pdu[0] in WRITE_FUNCTIONS:
        handle_pdu(broadcast_backend or backend, pdu)
    return None


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


class RtuServer:
    """Serve a backend as Modbus unit ``address`` on a serial port (see the module docstring).

    ``address`` may be changed while running; it applies to the next frame. ``silence_s``
    overrides t3.5 for adapters that deliver a frame in late pieces (an FTDI USB adapter
    with its default 16 ms latency timer splits frames over 62 bytes; set the timer to 1 ms,
    or pass e.g. ``silence_s=0.02``). ``local_echo=True`` is for 2-wire adapters that
    hear their own transmission: the echo of each reply is skipped, so that the echo of an
    FC06 reply (identical to its request) is not served again, and again.
    """

    def __init__(
        self,
        backend: RegisterBackend,
        port: str,
        address: int = 1,
        baud: int = 19200,
        data_format: str = "N81",
        *,
        strict_t15: bool = False,
        silence_s: float | None = None,
        local_echo: bool = False,
    ):
        if not 1 <= address <= 247:
            raise ValueError(f"address {address!r}: allowed 1..247")
        self._kwargs = serial_kwargs(baud, data_format)
        self.backend = backend
        self.port = port
        # what the guard sees: this line, and whether a frame was a broadcast
        for_client = getattr(backend, "for_client", None)
        client = Client(MODBUS_RTU, port)
        self._unicast = for_client(client) if for_client else backend
        self._broadcast = for_client(replace(client, broadcast=True)) if for_client else backend
        self.address = address
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
        log.info("Modbus RTU unit %d on %s at %d %s",
                 self.address, self.port, self.baud, self.data_format)

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
            rsp = serve_rtu_frame(self._unicast, self.address, unit, pdu, self._broadcast)
            if rsp is not None and self._serial is not None:
                try:
                    self._serial.write(rsp)
                except (OSError, serial.SerialException) as exc:
                    log.error("Modbus RTU: writing %s failed (%s); port closed", self.port, exc)
                    self._close()
                    return
                self.replies += 1
                if self.local_echo:
                    self._echo += rsp
