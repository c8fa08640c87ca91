"""One state record: everything the meter restores at power-up, self-describing and checksummed.

A record carries magic, format version, meter id, a commit number that never repeats and a
CRC-32 over all of it, so it can be found and trusted wherever it lies (a ring slot, a
SQLite page, a byte-level salvage scan of a damaged file) without trusting the file around
it. It is at most ``SLOT`` bytes, so it always fits one 4 KiB page in one piece.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pm4324.config.alarm_settings import MAX_ALARMS
from pm4324.config.settings import N_CTS, N_METERS
from pm4324.device.energy import EnergyRegisters
from pm4324.snapshot import ENERGY_KINDS

FORMAT_VERSION = 1
MAGIC = b"PM4S"
SLOT = 4096  # one page: a record is written (and torn) as one unit

_HEAD = struct.Struct("<4sHH16sqqqdBB")  # magic version length id seq boot second time relays n
_LATCH = struct.Struct("<BI")  # slot, rule fingerprint
_SHAPES = ((N_CTS, len(ENERGY_KINDS)), (N_METERS, len(ENERGY_KINDS)))
_ARRAYS = sum(r * c for r, c in _SHAPES) * 16  # int64 micro-units + float64 remainders
_MIN_LEN = _HEAD.size + _ARRAYS + 4
MAX_LEN = _MIN_LEN + 255 * _LATCH.size
assert _MIN_LEN + MAX_ALARMS * _LATCH.size <= SLOT


class FormatError(ValueError):
    """An intact-looking record of another format version."""

    def __init__(self, version: int):
        self.version = version
        super().__init__(f"format version {version}")


@dataclass(frozen=True)
class Record:
    """Everything the meter restores at power-up."""

    meter_id: str
    seq: int  # commit number: the newest intact record wins
    boot: int  # power-ups so far (0 = the file was just created)
    second: int  # snapshot seq within that boot, -1 = before the first second
    time: float  # wall clock of the commit
    ct: EnergyRegisters = field(default_factory=lambda: EnergyRegisters(N_CTS))
    meter: EnergyRegisters = field(default_factory=lambda: EnergyRegisters(N_METERS))
    relays: tuple[bool, bool] = (False, False)
    latched: dict[int, int] = field(default_factory=dict)  # alarm slot -> rule fingerprint

    def encode(self) -> bytes:
        latched = b"".join(_LATCH.pack(k, v) for k, v in sorted(self.latched.items()))
        length = _MIN_LEN + len(latched)
        body = _HEAD.pack(MAGIC, FORMAT_VERSION, length, uuid.UUID(self.meter_id).bytes,
                          self.seq, self.boot, self.second, self.time,
                          int(self.relays[0]) | int(self.relays[1]) << 1, len(self.latched))
        body += b"".join(a.astype("<i8").tobytes() + b.astype("<f8").tobytes()
                         for a, b in ((self.ct.micro, self.ct.remainder),
                                      (self.meter.micro, self.meter.remainder)))
        body += latched
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def decode(cls, data: bytes) -> Record:
        """Parse one record from the start of ``data``; ValueError if it is not intact."""
        if len(data) < _HEAD.size or data[:4] != MAGIC:
            raise ValueError("no record")
        magic, version, length, mid, seq, boot, second, t, relays, n = _HEAD.unpack_from(data)
        if version != FORMAT_VERSION:
            raise FormatError(version)
        if length != _MIN_LEN + n * _LATCH.size or len(data) < length:
            raise ValueError("bad length")
        if zlib.crc32(data[: length - 4]) != struct.unpack_from("<I", data, length - 4)[0]:
            raise ValueError("CRC mismatch")
        regs, pos = [], _HEAD.size
        for rows, cols in _SHAPES:
            reg = EnergyRegisters(rows)
            size = rows * cols * 8
            reg.micro = np.frombuffer(data, "<i8", rows * cols, pos).reshape(rows, cols).copy()
            reg.remainder = np.frombuffer(data, "<f8", rows * cols, pos + size).reshape(
                rows, cols).copy()
            regs.append(reg)
            pos += 2 * size
        latched = dict(_LATCH.unpack_from(data, pos + k * _LATCH.size) for k in range(n))
        return cls(str(uuid.UUID(bytes=mid)), seq, boot, second, t, regs[0], regs[1],
                   (bool(relays & 1), bool(relays & 2)), latched)

    def copy(self) -> Record:
        """The same record with registers of its own (the meter goes on adding to its own)."""
        return Record(self.meter_id, self.seq, self.boot, self.second, self.time,
                      copy_registers(self.ct), copy_registers(self.meter), self.relays,
                      dict(self.latched))


def copy_registers(reg: EnergyRegisters) -> EnergyRegisters:
    out = EnergyRegisters(reg.micro.shape[0])
    out.micro, out.remainder = reg.micro.copy(), reg.remainder.copy()
    return out


def scan(data: bytes) -> Iterator[Record | FormatError]:
    """Every intact record anywhere in ``data`` (and every other-version record header)."""
    pos = data.find(MAGIC)
    while pos >= 0:
        try:
            yield Record.decode(data[pos : pos + MAX_LEN])
        except FormatError as exc:
            yield exc
        except ValueError:
            pass
        pos = data.find(MAGIC, pos + 1)
