"""The audit log: every accepted and every refused write, with who sent it, kept apart from
the event log so that no storm of routine events (or of writes) can push it out.

Why a separate SQLite file (beside the state file, ``<state>.audit.sqlite``): the event log
keeps the newest 10,000 events, which a write storm at 238 writes/s fills in under a minute;
the audit log is bounded by its own rules instead:

* by **age** (``max_age_s``, default 400 days: a billing year and a margin): older entries
  expire, which is retention, not loss;
* by **size**, separately for accepted writes and for refusals and for each right they
  needed (``max_entries`` per group), so a flood of refused writes cannot evict the record of
  the writes that did change the meter, nor relay switching that of an energy reset;
  an entry evicted for size before its age is *dropped*, and so is one that arrives while
  ``max_pending`` entries wait to be written: ``dropped`` counts both, persists across
  restarts and is served as a register (``audit_dropped``, ours);
* identical refusals (same client host, target and value) waiting in one batch become one
  entry with a ``count``: a client hammering one register costs one row per second.

Entries are queued in memory by ``record`` (any thread, no I/O) and written in one transaction
by ``flush``, which the meter calls once per second and at shutdown (``synchronous=NORMAL``
in WAL mode: a crash loses at most the last second, never the file). ``pm4324 audit`` reads.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

DAY_S = 86_400.0
PRUNE_IDLE_S = 3600.0  # without new entries, old ones are expired this often
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    outcome TEXT NOT NULL,
    interface TEXT NOT NULL,
    address TEXT NOT NULL,
    subject TEXT NOT NULL,
    role TEXT,
    target TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    "right" TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_group ON audit (outcome, "right", id);
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class AuditEntry:
    time: float
    outcome: str  # "accepted" or "refused"
    interface: str
    address: str
    subject: str
    role: str | None
    target: str  # e.g. "holding 0x1013 energy_reset"
    old: str
    new: str
    reason: str = ""
    count: int = 1
    right: str = ""  # the right the write needed: relays, settings, energy-reset

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        who = " ".join(x for x in (self.interface, self.address, self.subject and
                                   f"subject={self.subject}", self.role and f"role={self.role}") if x)
        times = f" (x{self.count})" if self.count > 1 else ""
        why = f"  [{self.reason}]" if self.reason else ""
        return f"{stamp}  {self.outcome:<8} {who}  {self.target}: {self.old} -> {self.new}{times}{why}"


def format_audit(entries: list[AuditEntry], as_json: bool) -> str:
    if as_json:
        return "".join(json.dumps(e.to_dict()) + "\n" for e in entries)
    return "".join(e.line() + "\n" for e in entries)


class AuditLog:
    """A bounded, persistent audit log (``path`` None: in memory, for tools and tests)."""

    def __init__(self, path: str | Path | None = None, *, max_entries: int = 100_000,
                 max_age_s: float = 400 * DAY_S, max_pending: int = 10_000,
                 clock: Callable[[], float] = time.time):
        self.path = None if path is None else Path(path)
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple, AuditEntry] = {}  # insertion-ordered; refusals coalesce
        self._serial = 0
        self._pruned = -PRUNE_IDLE_S
        self._db = sqlite3.connect(":memory:" if path is None else str(path),
                                   check_same_thread=False, isolation_level=None)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}
        if "right" not in columns:  # a log written before entries named their right
            self._db.execute('ALTER TABLE audit ADD COLUMN "right" TEXT NOT NULL DEFAULT \'\'')
        row = self._db.execute("SELECT value FROM audit_meta WHERE key = 'dropped'").fetchone()
        self._dropped = int(row[0]) if row else 0

    @classmethod
    def reader(cls, path: str | Path) -> AuditLog:
        """Open an existing log to read it (``pm4324 audit``, also while the meter runs)."""
        return cls(path)

    @property
    def dropped(self) -> int:
        """Entries lost so far: evicted for size before their age, or refused by a full queue."""
        return self._dropped

    def record(self, entry: AuditEntry) -> None:
        """Queue one entry (no I/O; safe from any thread)."""
        with self._lock:
            if entry.outcome == "refused":
                key: tuple = ("refused", entry.interface, _host(entry.address), entry.subject,
                              entry.target, entry.new)
                queued = self._pending.get(key)
                if queued is not None:
                    self._pending[key] = replace(queued, count=queued.count + entry.count)
                    return
            else:
                self._serial += 1
                key = ("accepted", self._serial)
            if len(self._pending) >= self.max_pending:
                self._dropped += 1
                return
            self._pending[key] = entry

    def flush(self) -> None:
        """Write the queued entries, expire old ones, evict beyond ``max_entries``.

        A write that fails (disk full, I/O error) is logged and its entries count as dropped:
        the meter goes on measuring, and the counter tells that the log has a gap."""
        try:
            self._flush()
        except sqlite3.Error as exc:
            log.error("audit log %s: %s; entries lost (counted in audit_dropped)",
                      self.path or "(memory)", exc)

    def _flush(self) -> None:
        with self._lock:
            now = self._clock()
            if not self._pending and now - self._pruned < PRUNE_IDLE_S:
                return  # nothing new: expire old entries only now and then
            self._pruned = now
            batch, self._pending = list(self._pending.values()), {}
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO audit (time, outcome, interface, address, subject, role, target,"
                    ' old, new, reason, count, "right") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)',
                    [(e.time, e.outcome, e.interface, e.address, e.subject, e.role, e.target,
                      e.old, e.new, e.reason, e.count, e.right) for e in batch])
                db.execute("DELETE FROM audit WHERE time < ?", (now - self.max_age_s,))
                groups = db.execute('SELECT DISTINCT outcome, "right" FROM audit').fetchall()
                for outcome, right in groups:
                    cur = db.execute(
                        'DELETE FROM audit WHERE outcome = ? AND "right" = ? AND id <= (SELECT id'
                        ' FROM audit WHERE outcome = ? AND "right" = ? ORDER BY id DESC LIMIT 1'
                        " OFFSET ?)", (outcome, right, outcome, right, self.max_entries))
                    self._dropped += max(cur.rowcount, 0)
                db.execute("INSERT OR REPLACE INTO audit_meta VALUES ('dropped', ?)", (self._dropped,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._dropped += sum(e.count for e in batch)
                raise

    def entries(self, limit: int | None = None, outcome: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` written entries (all when None), oldest first."""
        where, args = ("WHERE outcome = ?", [outcome]) if outcome else ("", [])
        with self._lock:
            rows = self._db.execute(
                "SELECT time, outcome, interface, address, subject, role, target, old, new, reason,"
                f' count, "right" FROM audit {where} ORDER BY id DESC LIMIT ?', (*args, limit or -1)
            ).fetchall()
        return [AuditEntry(*row) for row in reversed(rows)]

    def close(self) -> None:
        if self._pending:
            self.flush()
        with self._lock:
            self._db.close()


def _host(address: str) -> str:
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


def audit_path_for(state_path: Path) -> Path:
    """Where the audit log of a state file lives by default."""
    return state_path.with_name(state_path.name + ".audit.sqlite")
