"""Store and forward: the minutes a broker missed, kept on disk until it is back.

SQLite (one small table, WAL, synchronous=NORMAL: one transaction a minute at most) because
the readings must survive a restart of the meter during a long outage, and must stay bounded:
past ``max_minutes`` the oldest minute is dropped and counted, never the newest.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any


class ForwardBuffer:
    def __init__(self, path: str | Path, max_minutes: int):
        self.path, self.max_minutes = Path(path), max_minutes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS minute (id INTEGER PRIMARY KEY, "
                         "time REAL NOT NULL, body BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")
        self.dropped = self._meta("dropped")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM minute").fetchone()[0])

    def append(self, reading: dict[str, Any]) -> None:
        """Keep one minute; drop the oldest beyond the bound (counted in ``dropped``)."""
        if self.max_minutes <= 0:
            return
        body = zlib.compress(json.dumps(reading, separators=(",", ":")).encode(), 6)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO minute (time, body) VALUES (?, ?)",
                             (float(reading.get("time") or 0), body))
            excess = len(self) - self.max_minutes
            if excess > 0:
                self._db.execute("DELETE FROM minute WHERE id IN "
                                 "(SELECT id FROM minute ORDER BY id LIMIT ?)", (excess,))
                self.dropped += excess
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)",
                                 (self.dropped,))

    def oldest(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` minutes, oldest first, as (id, reading)."""
        rows = self._db.execute("SELECT id, body FROM minute ORDER BY id LIMIT ?", (limit,))
        return [(i, json.loads(zlib.decompress(body))) for i, body in rows]

    def remove(self, ids: list[int]) -> None:
        """Forget minutes the broker has acknowledged."""
        if ids:
            self._db.execute("DELETE FROM minute WHERE id <= ?", (max(ids),))

    def close(self) -> None:
        self._db.close()
