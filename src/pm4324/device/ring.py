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

**Why O_DIRECT.** Through the page cache, a 4 KiB write into a file the kernel holds in a
large folio (Linux 6.x does so for a file written or read in 64 KiB) dirties the whole
folio, and the sync writes all 64 KiB: measured 65,556 bytes per commit instead of 4,116.
Written with ``O_DIRECT`` from a page-aligned buffer, the commit writes its one page
whatever the cache holds. Filesystems without O_DIRECT (some tmpfs) fall back to the
page cache.
Because the file is preallocated, a full disk does not stop the energy registers from being
saved. The open file is locked with ``flock`` (by inode, whatever path reached it).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
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

    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self._lock_fd = lock_fd  # holds the flock; writes go through _fd
        try:
            self._fd, self.direct = os.open(path, os.O_RDWR | os.O_DIRECT), True
        except OSError:
            self._fd, self.direct = os.open(path, os.O_RDWR), False
        self._page = mmap.mmap(-1, SLOT)  # page-aligned, as O_DIRECT requires

    @classmethod
    def open(cls, path: Path) -> Ring:
        """Open for writing and lock; OSError (RingInUse when another meter holds it)."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RingInUse(f"{path} is locked") from None
        try:
            return cls(path, fd)
        except BaseException:
            os.close(fd)
            raise

    def write(self, record: Record) -> None:
        """Write one record into its slot and wait until it is on the disk (OSError if not)."""
        self._page.seek(0)
        self._page.write(record.encode().ljust(SLOT, b"\0"))
        offset = (record.seq % SLOTS) * SLOT
        try:
            written = os.pwrite(self._fd, self._page, offset)
        except OSError as exc:
            if not (self.direct and exc.errno == errno.EINVAL):
                raise
            self._buffered()  # this filesystem takes O_DIRECT opens but not the writes
            written = os.pwrite(self._fd, self._page, offset)
        if written != SLOT:
            raise OSError(f"{self.path}: short write")
        os.fdatasync(self._fd)

    def _buffered(self) -> None:
        fd = os.open(self.path, os.O_RDWR)
        os.dup2(fd, self._fd, inheritable=False)
        os.close(fd)
        self.direct = False

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock_fd)
        self._page.close()
