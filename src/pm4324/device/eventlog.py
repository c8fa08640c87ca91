"""The SQLite half of the state store: the event log, the meter's identity, and a backup
copy of the record.

SQLite is written only when there is something to log (a relay switched, an alarm, a
reset, a power-up) and at a clean stop, not every second: the per-second record lives in
the ring file (device/ring.py). Each event row carries the commit number of the record it
belongs to and is committed *before* that record: on open, rows of a commit that never
reached the ring (a crash between the two) are dropped, so the log never tells of a reset
or a relay change the restored state does not show. Every commit here also stores the
record itself (table ``ring``, a slot per ``seq % BACKUPS``): a second copy, in another
file, used when the ring is lost.

`pm4324 events` reads the file while the meter runs (SQLite WAL readers do not block the
writer).
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from collections.abc import Sequence
from pathlib import Path

from pm4324.device.events import SCHEMA, Event
from pm4324.device.record import Record

APPLICATION_ID = 0x504D3433  # "PM43" in the SQLite header: not just any SQLite file
DB_FORMAT = 2  # 1: records in SQLite only (read for migration); 2: records in the ring
PAGE_SIZE = 4096
BACKUPS = 8
CHECKPOINT_PAGES = 256
WAL_LIMIT = 1 << 20  # the WAL is truncated to this after a checkpoint
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB: the file is damaged, not the disk


class Damaged(Exception):
    """SQLite reads the file but it is not an intact pm4324 event log."""


def is_corruption(exc: sqlite3.Error) -> bool:
    """True for "the file is damaged", False for "the disk or the permissions refuse"."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT


def connect(path: Path, create: bool = False) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None,
                           check_same_thread=False)  # one thread at a time (the committer)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    return conn


def build(path: Path, record: Record) -> None:
    """A new event log at ``path`` (removed first if present), fsync'd."""
    for p in (path, *sidecars(path)):
        p.unlink(missing_ok=True)
    conn = connect(path, create=True)
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
            ("format_version", str(DB_FORMAT)), ("meter_id", record.meter_id),
            ("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))])
        payload = record.encode()
        conn.executemany("INSERT INTO ring VALUES (?, ?, ?)",
                         [(k, record.seq, payload) for k in range(BACKUPS)])
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints into the file and removes the WAL
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in ("-wal", "-shm")]


def check(path: Path) -> tuple[dict[str, str], list[Record], int]:
    """(meta, intact backup records, damaged backup rows) of an event log.

    Damaged: the file is not an intact pm4324 event log. sqlite3.Error that is not
    corruption (disk full, permissions) goes up as it is.
    """
    if path.stat().st_size == 0:
        raise Damaged("the file is empty (0 bytes)")
    try:
        conn = connect(path)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if app_id != APPLICATION_ID or not {"meta", "ring", "events"} <= tables:
                raise Damaged("not a pm4324 state file (wrong SQLite application id or tables)")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise Damaged("integrity check: " + "; ".join(problems[:3]))
            rows = conn.execute("SELECT payload FROM ring").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if is_corruption(exc):
            raise Damaged(str(exc)) from None
        raise
    records, bad = [], 0
    for (payload,) in rows:
        try:
            records.append(Record.decode(bytes(payload)))
        except ValueError:  # FormatError too: a backup we cannot use
            bad += 1
    return meta, records, bad


_WAL_MAGIC = (0x377F0682, 0x377F0683)  # little-, big-endian checksums (sqlite.org/fileformat)


def _wal_sum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack((">" if big else "<") + f"{len(data) // 4}I", data)
    for k in range(0, len(words), 2):
        s0 = (s0 + words[k] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[k + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_damage(wal: Path) -> str:
    """What is wrong with a WAL file, "" if nothing is.

    SQLite silently ignores a WAL whose header checksum fails, and every frame from the
    first one whose cumulative checksum fails: correct after a torn last write, but a bit
    flip in the middle would drop the newer events without a word. A checksum failure
    followed by more frames of the same generation (salt) is damage, not a torn tail.
    """
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return ""
    if len(data) < 32:
        return "" if not data else f"WAL header torn ({len(data)} bytes)"
    magic, _, page, _, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in _WAL_MAGIC or page < 512 or page & (page - 1):
        return "WAL header damaged (bad magic or page size)"
    big = magic == _WAL_MAGIC[1]
    s0, s1 = _wal_sum(data[:24], 0, 0, big)
    if (s0, s1) != (c1, c2):
        return "WAL header checksum fails: SQLite would ignore the whole WAL"
    size = 24 + page
    frames = (len(data) - 32) // size
    for k in range(frames):
        at = 32 + k * size
        head = data[at : at + 24]
        if struct.unpack(">2I", head[8:16]) != (salt1, salt2):
            return ""  # an older generation: frames SQLite has already checkpointed
        s0, s1 = _wal_sum(head[:8], s0, s1, big)
        s0, s1 = _wal_sum(data[at + 24 : at + size], s0, s1, big)
        if (s0, s1) != struct.unpack(">2I", head[16:24]):
            later = sum(1 for j in range(k + 1, frames) if struct.unpack(
                ">2I", data[32 + j * size + 8 : 32 + j * size + 16]) == (salt1, salt2))
            return (f"WAL frame {k} fails its checksum: SQLite would ignore it and the "
                    f"{later} newer frame(s) after it") if later else ""
    return ""


class EventLog:
    """An open event log. Not thread-safe: the committer thread is its only user."""

    def __init__(self, path: Path, max_events: int, prune_every: int):
        self.path = path
        self._conn = connect(path)
        self._max, self._prune_every = max_events, prune_every
        self._unpruned = 0
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(events)")}
        if "seq" not in columns:  # a format-1 file: events had no commit number
            self._conn.execute("ALTER TABLE events ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                               (str(DB_FORMAT),))

    def drop_after(self, seq: int) -> int:
        """Delete events of commits after ``seq`` (logged, but their record never made it)."""
        return self._conn.execute("DELETE FROM events WHERE seq > ?", (seq,)).rowcount

    def prune(self) -> None:
        """Keep the newest ``max_events`` rows (at every open, and as events arrive)."""
        self._conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                           (self._max,))
        self._unpruned = 0

    def commit(self, events: Sequence[Event], record: Record) -> None:
        """Insert ``events`` (as belonging to ``record``) and back the record up; durable when
        it returns. sqlite3.Error if the disk refuses."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (time, boot, second, kind, text, seq) VALUES (?, ?, ?, ?, ?, ?)",
                [(e.time, e.boot, e.second, e.kind, e.text, record.seq) for e in events])
            conn.execute("INSERT OR REPLACE INTO ring VALUES (?, ?, ?)",
                         (record.seq % BACKUPS, record.seq, record.encode()))
            self._unpruned += len(events)
            if self._unpruned >= self._prune_every:
                self.prune()
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()


def read_events(conn: sqlite3.Connection, last: int | None) -> list[Event]:
    rows = conn.execute("SELECT time, boot, second, kind, text FROM events ORDER BY id DESC "
                        "LIMIT ?", (-1 if last is None else last,)).fetchall()
    return [Event(*row) for row in reversed(rows)]
