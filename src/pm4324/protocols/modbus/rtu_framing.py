"""Modbus RTU on an RS-485 line, sans-IO: CRC, silence-based framing, and what one slave answers.

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

``RtuFramer`` and ``serve_rtu_frame`` take bytes and timestamps and give frames and answers;
they are unit-tested with fake clocks. rtu.py glues them to a serial port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pm4324.config.settings import DATA_FORMATS
from pm4324.protocols.modbus.pdu import WRITE_FUNCTIONS, Deferred, handle_pdu, request_pdu_length
from pm4324.registers.backend import RegisterBackend

__all__ = [
    "BROADCAST",
    "MAX_ADU",
    "RtuFramer",
    "RtuTiming",
    "bits_per_char",
    "crc16",
    "serve_rtu_frame",
    "with_crc",
]

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
                    broadcast_backend: RegisterBackend | None = None) -> bytes | Deferred | None:
    """The response ADU (with CRC) to one received frame, or None for silence (a Deferred
    PDU for a write whose commit is still running).

    Silence for another unit id, for every broadcast (writes are executed first, through
    ``broadcast_backend`` when given: the guard never lets a broadcast reset energy; broadcast
    reads are ignored without touching the backend) and when ``handle_pdu`` has no answer.
    """
    if unit == address:
        rsp = handle_pdu(backend, pdu)
        if rsp is None or isinstance(rsp, Deferred):
            return rsp
        return with_crc(bytes((address,)) + rsp)
    if unit == BROADCAST and pdu and pdu[0] in WRITE_FUNCTIONS:
        handle_pdu(broadcast_backend or backend, pdu)
    return None
