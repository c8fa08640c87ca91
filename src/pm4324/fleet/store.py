"""The fleet's energy store: every member's energy registers and relays in one file, one
commit a second for all of them (docs/fleet.md, "Energy store").

The single meter's guarantees (docs/energy-store.md), for N meters at once:

* **Durable before shown.** A member's snapshot is published only once the commit holding
  its energies is on disk (the fleet commits each second's registers just before the
  second's end, fleet/clock.py); a write over Modbus is answered once its commit is.
* **Atomic and checksummed.** ``NAME.ring`` holds two slots; commit n goes to slot n mod 2,
  never over commit n - 1. A record carries magic, format version, the fleet id, its commit
  number, every member's key and meter id, and a CRC-32 over all of it: a torn or flipped
  slot is recognised and the other one used (one commit back), and the damage is said.
* **Identity.** ``NAME.fleet-id`` (a UUID) is written on first start; a ring of another
  fleet is refused, a missing ring with an existing identity is an error, and only
  ``--reset-store`` starts from zero (the old files moved aside as ``.reset-<time>``).
  Each member has its own meter id (a UUID in the record), kept for as long as its key is.
* **One writer.** The ring is locked with ``flock``: a second fleet on it is refused.

The registers are int64 micro-units plus a float64 remainder per register, as the single
meter's (device/energy.py): 32 rows (24 CTs, 8 Meters) of 7 kinds, 3.6 KB per member.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS
from pm4324.device.energy import MICRO
from pm4324.device.recovery import StoreError, read_identity
from pm4324.snapshot import ENERGY_KINDS

MAGIC = b"PM4F"
FORMAT_VERSION = 1
SLOTS = 2
PAGE = 4096
ROWS = N_CTS + N_METERS  # CT rows first, then Meter rows
KINDS = len(ENERGY_KINDS)
_HEAD = struct.Struct("<4sHH16sqdIIIQ")  # magic version pad fleet seq time boot n keys body


@dataclass
class Restored:
    """What opening found: the newest intact commit and what was said about it."""

    seq: int
    boot: int
    time: float
    notes: list[str]


class FleetRegisters:
    """Energy registers of every member: (n, 32, 7) micro-units and remainders, relays."""

    def __init__(self, n: int):
        self.micro = np.zeros((n, ROWS, KINDS), dtype=np.int64)
        self.remainder = np.zeros((n, ROWS, KINDS))
        self.relays = np.zeros((n, 2), dtype=bool)
        self.lock = threading.Lock()  # the clock thread adds, writes reset, the committer copies

    def add(self, increments_wh: np.ndarray, rows: slice | np.ndarray) -> None:
        """Add non-negative increments (Wh) to members ``rows`` (caller holds ``lock``)."""
        total = self.remainder[rows] + increments_wh * MICRO
        whole = np.floor(total)
        self.micro[rows] += whole.astype(np.int64)
        self.remainder[rows] = total - whole

    def values(self, member: int) -> np.ndarray:
        """(32, 7) register values of one member in Wh."""
        with self.lock:
            return (self.micro[member] + self.remainder[member]) / MICRO


def _record_size(n: int, keys: bytes) -> int:
    return _HEAD.size + len(keys) + n * 16 + n * ROWS * KINDS * 16 + n * 2 + 4


class FleetStore:
    """The open store of one fleet; ``commit()`` is called by one committer thread."""

    def __init__(self, path: Path, fd: int, fleet_id: bytes, keys: list[str], ids: list[bytes],
                 registers: FleetRegisters, restored: Restored):
        self.path = path
        self._fd = fd
        self.fleet_id = fleet_id
        self.keys = keys
        self.meter_ids = [str(uuid.UUID(bytes=b)) for b in ids]
        self.registers = registers
        self.restored = restored
        self.boot = restored.boot + 1
        self.seq = restored.seq
        key_blob = "\n".join(keys).encode()
        n = len(keys)
        size = _record_size(n, key_blob)
        self.slot_size = -(-size // PAGE) * PAGE
        self._buf = bytearray(size)
        off = _HEAD.size
        self._buf[off : off + len(key_blob)] = key_blob
        off += len(key_blob)
        self._buf[off : off + 16 * n] = b"".join(ids)
        off += 16 * n
        view = memoryview(self._buf)
        self._micro = np.frombuffer(view[off : off + n * ROWS * KINDS * 8], "<i8").reshape(
            n, ROWS, KINDS)
        off += n * ROWS * KINDS * 8
        self._rem = np.frombuffer(view[off : off + n * ROWS * KINDS * 8], "<f8").reshape(
            n, ROWS, KINDS)
        off += n * ROWS * KINDS * 8
        self._relays = np.frombuffer(view[off : off + 2 * n], np.uint8).reshape(n, 2)
        self._head = (len(key_blob), size - _HEAD.size - 4)
        self._write_lock = threading.Lock()
        self.commit_s: list[float] = []  # the last commits' durations (bench)

    @classmethod
    def open(cls, base: str | Path, keys: list[str], *, reset: bool = False) -> FleetStore:
        """Open (or create on first start) ``<base>.ring``; StoreError says why not."""
        base = Path(base).expanduser().resolve()
        path, id_path = base.with_name(base.name + ".ring"), base.with_name(base.name + ".fleet-id")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from None
        if reset:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for p in (path, id_path):
                if p.exists():
                    os.replace(p, p.with_name(f"{p.name}.reset-{stamp}"))
        fleet_id = _read_id(id_path)
        exists = path.exists()
        if exists and fleet_id is None:
            raise StoreError(f"{path} exists but its identity {id_path.name} is missing: copy "
                             "the .fleet-id that belongs to it, or start from zero with "
                             "--reset-store")
        if not exists and fleet_id is not None:
            raise StoreError(f"{path} is missing, but this fleet has run before (its identity "
                             f"{id_path.name} exists): its energy counters are in that file. "
                             "Restore it, or start from zero with --reset-store")
        notes: list[str] = []
        if fleet_id is None:
            fleet_id = uuid.uuid4().bytes
            tmp = id_path.with_name(id_path.name + ".creating")
            tmp.write_text(str(uuid.UUID(bytes=fleet_id)) + "\n", encoding="utf-8")
            os.replace(tmp, id_path)
            notes.append(f"first start: new fleet {uuid.UUID(bytes=fleet_id)}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{path} is in use by another running fleet") from None
        try:
            found = _newest(fd, path, fleet_id, notes) if exists else None
        except StoreError:
            os.close(fd)
            raise
        regs = FleetRegisters(len(keys))
        ids: list[bytes] = []
        if found is None:
            restored = Restored(0, 0, time.time(), notes)
            ids = [uuid.uuid4().bytes for _ in keys]
        else:
            seq, boot, t, old_keys, old_ids, micro, rem, relays = found
            where = {k: j for j, k in enumerate(old_keys)}
            new = 0
            for i, k in enumerate(keys):
                j = where.get(k)
                if j is None:
                    ids.append(uuid.uuid4().bytes)
                    new += 1
                    continue
                ids.append(old_ids[j])
                regs.micro[i], regs.remainder[i], regs.relays[i] = micro[j], rem[j], relays[j]
            if new:
                notes.append(f"{new} new member(s) start from zero")
            gone = len(set(old_keys) - set(keys))
            if gone:
                notes.append(f"{gone} member(s) of the last run are not in the fleet file: "
                             "their counters are dropped at the next commit")
            restored = Restored(seq, boot, t, notes)
        store = cls(path, fd, fleet_id, list(keys), ids, regs, restored)
        if found is None or store.slot_size * SLOTS != os.fstat(fd).st_size:
            try:
                os.ftruncate(fd, store.slot_size * SLOTS)
            except OSError as exc:
                os.close(fd)
                raise StoreError(f"cannot write {path}: {exc.strerror}") from None
        store.commit()  # the power-up commit: the new boot, every member's identity
        return store

    def commit(self) -> float:
        """Save every member's registers durably (one record); the seconds it took.
        StoreError if the disk refuses."""
        t0 = time.perf_counter()
        with self._write_lock:
            regs = self.registers
            with regs.lock:
                np.copyto(self._micro, regs.micro)
                np.copyto(self._rem, regs.remainder)
                np.copyto(self._relays, regs.relays)
            seq = self.seq + 1
            n = len(self.keys)
            _HEAD.pack_into(self._buf, 0, MAGIC, FORMAT_VERSION, 0, self.fleet_id, seq,
                            time.time(), self.boot, n, *self._head)
            body = memoryview(self._buf)[: len(self._buf) - 4]
            struct.pack_into("<I", self._buf, len(self._buf) - 4, zlib.crc32(body))
            try:
                os.pwrite(self._fd, self._buf, (seq % SLOTS) * self.slot_size)
                os.fdatasync(self._fd)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot save the state: {exc.strerror}") from None
            self.seq = seq
        took = time.perf_counter() - t0
        self.commit_s = (self.commit_s + [took])[-100:]
        return took

    def close(self) -> None:
        """The last commit, then release the file."""
        try:
            self.commit()
        finally:
            os.close(self._fd)


def _read_id(id_path: Path) -> bytes | None:
    found = read_identity(id_path, "fleet")
    return None if found is None else found.bytes


def _decode(data: bytes, fleet_id: bytes, path: Path):
    """One record from the start of ``data``; ValueError if it is not intact."""
    if len(data) < _HEAD.size or data[:4] != MAGIC:
        raise ValueError("no record")
    magic, version, _, fid, seq, t, boot, n, klen, blen = _HEAD.unpack_from(data)
    if version != FORMAT_VERSION:
        raise StoreError(f"{path}: format version {version}, this pm4324 reads "
                         f"{FORMAT_VERSION}")
    end = _HEAD.size + blen
    if end + 4 > len(data) or zlib.crc32(data[:end]) != struct.unpack_from("<I", data, end)[0]:
        raise ValueError("CRC mismatch")
    if fid != fleet_id:
        raise StoreError(f"{path} belongs to fleet {uuid.UUID(bytes=fid)}, not to "
                         f"{uuid.UUID(bytes=fleet_id)} (its .fleet-id): refused")
    off = _HEAD.size
    keys = data[off : off + klen].decode().split("\n") if n else []
    off += klen
    ids = [data[off + 16 * j : off + 16 * (j + 1)] for j in range(n)]
    off += 16 * n
    size = n * ROWS * KINDS
    micro = np.frombuffer(data, "<i8", size, off).reshape(n, ROWS, KINDS)
    rem = np.frombuffer(data, "<f8", size, off + 8 * size).reshape(n, ROWS, KINDS)
    relays = np.frombuffer(data, np.uint8, 2 * n, off + 16 * size).reshape(n, 2).astype(bool)
    return seq, boot, t, keys, ids, micro, rem, relays


def _newest(fd: int, path: Path, fleet_id: bytes, notes: list[str]):
    """The newest intact record of the ring; StoreError when there is none."""
    size = os.fstat(fd).st_size
    slot = size // SLOTS
    found, damaged = [], []
    for k in range(SLOTS):
        data = os.pread(fd, slot, k * slot) if slot else b""
        try:
            found.append(_decode(data, fleet_id, path))
        except ValueError as exc:
            damaged.append(f"slot {k}: {exc}")
    if not found:
        raise StoreError(f"{path}: no intact record ({'; '.join(damaged)}): the counters "
                         "cannot be restored. Restore the file from a backup, or start from "
                         "zero with --reset-store")
    best = max(found, key=lambda r: r[0])
    if damaged and best[0] > 1:
        notes.append(f"{path.name}: {'; '.join(damaged)}; restored commit {best[0]}")
    return best
