"""The ring file: the per-second records, each written in place into a page of its own.

**Why a ring of pages and not SQLite for the per-second record.** A SQLite commit in WAL
mode costs a 4,120-byte WAL frame, its fsync, and every few hundred commits a checkpoint
copying pages again: 8-13 KB written per second (docs/benchmarks.md), a wear-out in a few
years on an SD card or eMMC. Here a commit is one ``pwrite`` of one 4 KiB page at a fixed
offset of a preallocated file, then ``fdatasync``: the file never grows and its metadata
never changes, so the data sync writes that one page and nothing else. That is the floor for
a commit every second.

**Why it is safe.** Commit ``n`` goes to slot ``n % SLOTS``, so it never overwrites the
commit before it. Every record carries its own CRC (device/record.py): a write torn by a
power cut, a flipped bit or a zeroed page makes that one slot unreadable, and reading takes
the newest intact slot, the commit before: one damaged byte costs at most one second.
Because the file is preallocated, a full disk does not stop the energy registers from being
saved. The open file is locked with ``flock`` (by inode, whatever path reached it).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from pm4324.device.record import SLOT, FormatError, Record

SLOTS = 16  # 64 KiB: sixteen seconds of history, fifteen spare copies


def ring_path(state_path: Path) -> Path:
    """``NAME.state.db`` -> ``NAME.state.ring`` (beside the SQLite file of the events)."""
    return state_path.with_suffix(".ring")


class RingInUse(OSError):
    """Another process holds the lock on this ring file (another running meter)."""


@dataclass
class RingScan:
    """What reading a ring file found."""

    records: list[Record] = field(default_factory=list)  # intact, any meter
    damaged: list[int] = field(default_factory=list)  # slots neither empty nor intact
    versions: set[int] = field(default_factory=set)  # other format versions seen
    size: int = 0

    @property
    def whole(self) -> bool:
        return not self.damaged and self.size == SLOTS * SLOT


def read_ring(path: Path) -> RingScan:
    """Decode every slot of a ring file (OSError if it cannot be read)."""
    data = Path(path).read_bytes()
    scan = RingScan(size=len(data))
    for k in range(0, max(len(data), 1), SLOT):
        chunk = data[k : k + SLOT]
        if not chunk.strip(b"\0"):
            continue  # an empty slot (never written, or preallocated)
        try:
            scan.records.append(Record.decode(chunk))
        except FormatError as exc:
            scan.versions.add(exc.version)
        except ValueError:
            scan.damaged.append(k // SLOT)
    return scan


def write_new_ring(path: Path, record: Record) -> None:
    """A preallocated ring at ``path`` holding ``record`` in its slot, fsync'd."""
    data = bytearray(SLOTS * SLOT)
    slot = (record.seq % SLOTS) * SLOT
    encoded = record.encode()
    data[slot : slot + len(encoded)] = encoded
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if os.write(fd, bytes(data)) != len(data):
            raise OSError(f"{path}: short write")
        os.fsync(fd)
    finally:
        os.close(fd)


class Ring:
    """An open, locked ring file. Only one thread writes (device/commit.py)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> Ring:
        """Open for writing and lock; OSError (RingInUse when another meter holds it)."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RingInUse(f"{path} is locked") from None
        return cls(path, fd)

    def write(self, record: Record) -> None:
        """Write one record into its slot and wait until it is on the disk (OSError if not)."""
        page = record.encode().ljust(SLOT, b"\0")
        if os.pwrite(self._fd, page, (record.seq % SLOTS) * SLOT) != SLOT:
            raise OSError(f"{self.path}: short write")
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
