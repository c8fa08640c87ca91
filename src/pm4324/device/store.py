"""The state store: energy registers, relay states and alarm latches that survive a crash
or a power cut at any instant, plus the event log, in one SQLite file.

**Why SQLite, WAL mode, ``synchronous=FULL``, one commit per second.** Each second the meter
updates one record and commits before the second is published (the JSON line, the Modbus
image): a published second is on disk. In WAL mode a commit appends the changed page to the
write-ahead log and, with ``synchronous=FULL``, fsyncs the log before returning, so a commit
that returned survives a power cut. WAL frames carry cumulative checksums and a commit
marker; after a crash SQLite replays only complete, checksummed transactions and drops a
torn tail. So after a SIGKILL or a power loss at any instant the store holds the last
completed second, or the one before when the crash hit that second's commit: never a mix,
never zero. SQLite is the most widely tested storage engine there is, ships with Python,
and lets `pm4324 events` read while the meter writes. A home-made append-only journal
would need the same checksums, fsyncs and compaction, written and proven again.

**What a second costs.** One transaction updating one ~3.7 KB row in place (one 4 KB page):
one WAL frame of 4,120 bytes and one fsync. Every ``CHECKPOINT_PAGES`` commits SQLite copies
the few changed pages into the main file (one more fsync). docs/energy-store.md and
docs/benchmarks.md give measured numbers.

**Bounded size.** Records live in a ring of ``RING`` rows (commit n updates row n % RING),
the event table keeps the newest ``events.MAX_EVENTS`` rows, the WAL is checkpointed every
``CHECKPOINT_PAGES`` pages and truncated to ``WAL_LIMIT`` bytes: a few MB, whatever the
uptime.

**Every record is self-describing**: magic, format version, meter id, a commit number that
never repeats, and a CRC-32. Reading picks the newest intact record. If SQLite itself cannot
read the file (truncated, bit-flipped page, empty), the file and its WAL are searched byte
by byte for intact records of this meter (a record fits in one page, so it is stored in one
piece); the newest one is used, a new file is built from it and the damaged one is kept
beside it (``.damaged-<time>``). Only when no intact record exists does opening fail, with
a message; starting from zero then takes an explicit ``--reset-store``.

**Identity.** On first start a meter id (a UUID) is written beside the settings file
(``<settings stem>.meter-id``; for the built-in building, in the state directory). A state
file whose id differs (copied from another meter, or two settings files pointing at one
store) or whose format version differs is refused. A missing state file is a first start
only when there is no identity yet; if the identity exists the meter ran before and its
state is gone (a directory not mounted, a deleted file): that is an error, not a reset.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pm4324.config.settings import N_CTS, N_METERS, Settings
from pm4324.config.settings_file import fsync_directory, write_atomic
from pm4324.device.energy import EnergyRegisters
from pm4324.device.events import MAX_EVENTS, SCHEMA, Event
from pm4324.snapshot import ENERGY_KINDS

FORMAT_VERSION = 1
APPLICATION_ID = 0x504D3433  # "PM43" in the SQLite header: not just any SQLite file
MAGIC = b"PM4S"
RING = 8
PAGE_SIZE = 4096
CHECKPOINT_PAGES = 256  # ~1 MB of WAL between checkpoints
WAL_LIMIT = 1 << 20  # the WAL is truncated to this after a checkpoint
PRUNE_EVERY = 100  # events inserted between two prunes of the oldest ones

_HEAD = struct.Struct("<4sHH16sqqqdBB")  # magic version length id seq boot second time relays n
_LATCH = struct.Struct("<BI")  # slot, rule fingerprint
_SHAPES = ((N_CTS, len(ENERGY_KINDS)), (N_METERS, len(ENERGY_KINDS)))
_ARRAYS = sum(r * c for r, c in _SHAPES) * 16  # int64 micro-units + float64 remainders
_MIN_LEN = _HEAD.size + _ARRAYS + 4
_MAX_LEN = _MIN_LEN + 255 * _LATCH.size


class StoreError(Exception):
    """The state store cannot be used; the message says why and what to do."""


class _FormatError(ValueError):
    def __init__(self, version: int):
        self.version = version
        super().__init__(f"format version {version}")


class _Damaged(Exception):
    """SQLite cannot read the file as a state store; try to salvage records."""


@dataclass(frozen=True)
class Record:
    """Everything the meter restores at power-up (one row of the ring)."""

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
            raise _FormatError(version)
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


def store_location(settings: Settings, settings_path: str | None) -> tuple[Path, Path]:
    """(state file, identity file) of a meter run with these settings.

    A settings file ``DIR/NAME.toml`` gives ``DIR/var/NAME.state.db`` and
    ``DIR/NAME.meter-id``; the built-in building (no settings file) uses
    ``$XDG_STATE_HOME/pm4324/`` (default ``~/.local/state/pm4324/``). ``[store] path``
    overrides the state file, relative to the settings file's directory.
    """
    if settings_path:
        base = Path(settings_path).resolve()
        home, stem = base.parent, base.stem
        id_path, default = home / f"{stem}.meter-id", home / "var" / f"{stem}.state.db"
    else:
        home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "pm4324"
        id_path, default = home / "meter-id", home / "state.db"
    if not settings.store.path:
        return default, id_path
    path = Path(settings.store.path).expanduser()
    return (path if path.is_absolute() else home / path), id_path


def _connect(path: Path, create: bool = False) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None,
                           check_same_thread=False)  # calls are serialised by Meter's lock
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    return conn


def _read_id(id_path: Path) -> str | None:
    try:
        text = id_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read the meter identity {id_path}: {exc.strerror}") from None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise StoreError(f"{id_path} is not a meter identity (a UUID): {text[:40]!r}") from None


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in ("-wal", "-shm")]


def _move_aside(path: Path, tag: str) -> Path:
    """Rename the state file (and its WAL) out of the way, keeping it for inspection."""
    target = path.with_name(f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
    for src, dst in zip([path, *_sidecars(path)], [target, *_sidecars(target)]):
        if src.exists():
            os.replace(src, dst)
    fsync_directory(path.parent)
    return target


def _build(tmp: Path, first: Record) -> None:
    """Write a new state file at ``tmp`` holding ``first`` in every ring row, fsync'd."""
    for p in (tmp, *_sidecars(tmp)):
        p.unlink(missing_ok=True)
    conn = _connect(tmp, create=True)
    try:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE ring (slot INTEGER PRIMARY KEY, seq INTEGER NOT NULL,"
            " payload BLOB NOT NULL);" + SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("format_version", str(FORMAT_VERSION)), ("meter_id", first.meter_id),
            ("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))])
        payload = first.encode()
        conn.executemany("INSERT INTO ring VALUES (?, ?, ?)",
                         [(k, first.seq, payload) for k in range(RING)])
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints into the file and removes the WAL
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())


def _finish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_directory(path.parent)


def _create(path: Path, first: Record) -> None:
    """A new state file at ``path``, atomically (built aside, then renamed)."""
    tmp = _creating(path)
    _build(tmp, first)
    _finish(tmp, path)


def _creating(path: Path) -> Path:
    return path.with_name(path.name + ".creating")


def _meta_id(path: Path) -> str | None:
    """The meter id of a state file SQLite can read, else None."""
    try:
        conn = _connect(path)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'meter_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _newest(rows: list[tuple[int, bytes]]) -> tuple[Record | None, int]:
    """The newest intact record of (seq column, payload) rows, and how many rows were bad."""
    best, bad = None, 0
    for _, payload in rows:
        try:
            record = Record.decode(bytes(payload))
        except _FormatError:
            raise
        except ValueError:
            bad += 1
            continue
        if best is None or record.seq > best.seq:
            best = record
    return best, bad


def salvage(path: Path, meter_id: str) -> Record | None:
    """The newest intact record of ``meter_id`` found anywhere in the file or its WAL.

    Raises StoreError when the only intact records belong to another meter or version.
    """
    best, others, versions = None, set(), set()
    for p in (path, _sidecars(path)[0]):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        pos = data.find(MAGIC)
        while pos >= 0:
            try:
                record = Record.decode(data[pos : pos + _MAX_LEN])
            except _FormatError as exc:
                versions.add(exc.version)
            except ValueError:
                pass
            else:
                if record.meter_id != meter_id:
                    others.add(record.meter_id)
                elif best is None or record.seq > best.seq:
                    best = record
            pos = data.find(MAGIC, pos + 1)
    if best is None and others:
        raise StoreError(f"{path} belongs to another meter ({sorted(others)[0]}), not to "
                         f"this one ({meter_id})")
    if best is None and versions:
        raise StoreError(f"{path} was written in format version {sorted(versions)[0]}; this "
                         f"meter reads version {FORMAT_VERSION}")
    return best


class Store:
    """An open state file, locked against a second meter. Not thread-safe on its own."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int, last: Record,
                 notes: list[tuple[str, str]], power_up: bool):
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self.restored = last  # what the meter starts from
        self.last = last
        self.boot = last.boot + power_up  # records written now carry this boot number
        self.notes = notes  # (event kind, text) of what opening found or did
        self._unpruned = 0

    @classmethod
    def open(cls, path: Path, id_path: Path, *, reset: bool = False, power_up: bool = True
             ) -> Store:
        """Open (or create, on first start) the state file; StoreError says why not.

        ``power_up`` False: a tool (reset-energy) that is not a start of the meter.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot use {path.parent} for the state file: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise StoreError(f"{path} is in use by another running meter") from None
        try:
            last, notes = _open_state(path, Path(id_path), reset)
            conn = _connect(path)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, conn, lock_fd, last, notes, power_up)

    def save(self, second: int, ct: EnergyRegisters, meter: EnergyRegisters,
             relays: tuple[bool, bool], latched: dict[int, int], events: Sequence[Event] = ()
             ) -> Record:
        """Commit one record (and events) durably; StoreError if the disk refuses."""
        record = Record(self.last.meter_id, self.last.seq + 1, self.boot, second, time.time(),
                        ct, meter, tuple(relays), dict(latched))
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE ring SET seq = ?, payload = ? WHERE slot = ?",
                         (record.seq, record.encode(), record.seq % RING))
            if events:
                conn.executemany(
                    "INSERT INTO events (time, boot, second, kind, text) VALUES (?, ?, ?, ?, ?)",
                    [(e.time, e.boot, e.second, e.kind, e.text) for e in events])
                self._unpruned += len(events)
                if self._unpruned >= PRUNE_EVERY:
                    conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                                 (MAX_EVENTS,))
                    self._unpruned = 0
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: cannot save the state: {exc}") from None
        self.last = replace(record, ct=_copy(ct), meter=_copy(meter))
        return record

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            os.close(self._lock_fd)


def _copy(reg: EnergyRegisters) -> EnergyRegisters:
    out = EnergyRegisters(reg.micro.shape[0])
    out.micro, out.remainder = reg.micro.copy(), reg.remainder.copy()
    return out


def _open_state(path: Path, id_path: Path, reset: bool) -> tuple[Record, list[tuple[str, str]]]:
    """The record to start from, creating or repairing the file as the rules say."""
    meter_id = _read_id(id_path)
    creating = _creating(path)
    if reset:
        meter_id = meter_id or str(uuid.uuid4())
        kept = f"the old one is kept as {_move_aside(path, 'reset')}" if path.exists() else (
            "there was none")
        _create(path, Record(meter_id, 0, 0, -1, time.time()))
        write_atomic(id_path, meter_id + "\n")
        return Record(meter_id, 0, 0, -1, time.time()), [
            ("store_reset", f"new state file {path} on request (--reset-store); {kept}")]
    if not path.exists():
        if meter_id is None:  # first start (a leftover .creating is from one that crashed)
            meter_id = str(uuid.uuid4())
            first = Record(meter_id, 0, 0, -1, time.time())
            _build(creating, first)  # identity only after the file is whole, then rename:
            write_atomic(id_path, meter_id + "\n")  # a crash anywhere here is recoverable
            _finish(creating, path)
            return first, [("first_start", f"new state file {path}; meter id {meter_id} "
                            f"written to {id_path}")]
        if creating.exists() and _meta_id(creating) == meter_id:
            _finish(creating, path)  # the first start crashed between identity and rename
            return _open_state(path, id_path, reset)
        raise StoreError(
            f"{path} is missing, but this meter has run before (its identity {id_path} exists): "
            "its energy counters are in that file. Restore it (or mount the disk it is on), "
            "or start from zero with --reset-store")
    if meter_id is None:
        raise StoreError(
            f"{path} exists but the meter identity {id_path} is missing: copy the .meter-id file "
            "that belongs to this state file there, or start a new state file with --reset-store")
    try:
        return _read_state(path, meter_id)
    except _Damaged as why:
        record = salvage(path, meter_id)
        if record is None:
            raise StoreError(
                f"{path} is damaged ({why}) and holds no intact record of this meter. It is left "
                "as it is; start from zero with --reset-store (the file is then kept aside)") from None
        aside = _move_aside(path, "damaged")
        _create(path, record)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.time))
        return record, [("store_recovered",
                         f"{path} was damaged ({why}); recovered the newest intact record "
                         f"(commit {record.seq}, boot {record.boot}, second {record.second}, "
                         f"saved {when}); the damaged file is kept as {aside}")]


def _read_state(path: Path, meter_id: str) -> tuple[Record, list[tuple[str, str]]]:
    """Open a healthy file: identity, version, integrity, newest intact record."""
    if path.stat().st_size == 0:
        raise _Damaged("the file is empty (0 bytes)")
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise _Damaged(str(exc)) from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID or not {"meta", "ring", "events"} <= tables:
            raise _Damaged("not a pm4324 state file (wrong SQLite application id or tables)")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise StoreError(f"{path} was written in format version {meta.get('format_version')}"
                             f"; this meter reads version {FORMAT_VERSION}")
        if meta.get("meter_id") != meter_id:
            raise StoreError(f"{path} belongs to another meter ({meta.get('meter_id')}), not to "
                             f"this one ({meter_id})")
        check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise _Damaged("integrity check: " + "; ".join(check[:3]))
        rows = conn.execute("SELECT seq, payload FROM ring").fetchall()
        record, bad = _newest(rows)
    except sqlite3.Error as exc:
        raise _Damaged(str(exc)) from None
    except _FormatError as exc:
        raise StoreError(f"{path} holds records of format version {exc.version}; this meter "
                         f"reads version {FORMAT_VERSION}") from None
    finally:
        conn.close()
    if record is None:
        raise _Damaged(f"all {len(rows)} records fail their CRC")
    if record.meter_id != meter_id:
        raise StoreError(f"{path} holds records of another meter ({record.meter_id})")
    newest_seq = max(seq for seq, _ in rows)
    if record.seq < newest_seq:
        return record, [("store_recovered",
                         f"{path}: the newest record (commit {newest_seq}) is damaged; using "
                         f"commit {record.seq} (boot {record.boot}, second {record.second})")]
    notes = [("store_recovered", f"{path}: {bad} older record(s) damaged, newest intact")] if bad \
        else []
    return record, notes


def _query(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read from a state file without locking it (the meter may be running)."""
    if not Path(path).is_file():
        raise StoreError(f"{path}: no state file (the meter has not run with these settings)")
    try:
        conn = _connect(Path(path))
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the state file: {exc}") from None


def peek(path: Path) -> Record | None:
    """The newest intact record (None if none is intact)."""
    try:
        return _newest(_query(path, "SELECT seq, payload FROM ring"))[0]
    except _FormatError as exc:
        raise StoreError(f"{path}: format version {exc.version}") from None


def read_events(path: Path, last: int | None = None) -> list[Event]:
    """The event log, oldest first (the newest ``last`` only, when given)."""
    rows = _query(path, "SELECT time, boot, second, kind, text FROM events ORDER BY id DESC "
                  "LIMIT ?", (-1 if last is None else last,))
    return [Event(*row) for row in reversed(rows)]
