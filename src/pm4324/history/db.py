"""The database under the history: SQLite (embedded default) or PostgreSQL by URL.

Both speak the same SQL here (``?`` placeholders are rewritten for psycopg); every write of
the history is one transaction (``Db.transaction``), so a crash leaves a batch whole or absent.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed batch survives a power cut.
PostgreSQL tables get a prefix (``?prefix=`` in the URL, e.g. one per site); when the
TimescaleDB extension is installed, the 15-minute table becomes a hypertable.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

_TABLES = ("meta", "meters", "minute_recent", "minute_block", "raw", "interval", "day", "gap",
           "event", "state", "pq")


class HistoryError(Exception):
    """The history store cannot be used; the message says why."""


def schema(p: str, blob: str, serial: str) -> list[str]:
    """CREATE statements with table prefix ``p``."""
    return [
        f"CREATE TABLE IF NOT EXISTS {p}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {p}meters (id {serial} PRIMARY KEY, key TEXT UNIQUE NOT NULL,"
        " model TEXT, names TEXT NOT NULL DEFAULT '{}')",
        f"CREATE TABLE IF NOT EXISTS {p}minute_recent (meter INTEGER NOT NULL, t BIGINT NOT NULL,"
        f" data {blob} NOT NULL, PRIMARY KEY (meter, t))",
        f"CREATE TABLE IF NOT EXISTS {p}minute_block (meter INTEGER NOT NULL, element TEXT NOT NULL,"
        f" day BIGINT NOT NULL, data {blob} NOT NULL, PRIMARY KEY (meter, element, day))",
        f"CREATE TABLE IF NOT EXISTS {p}raw (meter INTEGER NOT NULL, t BIGINT NOT NULL,"
        f" data {blob} NOT NULL, PRIMARY KEY (meter, t))",
        f"CREATE TABLE IF NOT EXISTS {p}interval (meter INTEGER NOT NULL, t BIGINT NOT NULL,"
        f" seconds INTEGER NOT NULL, agg {blob} NOT NULL, energy {blob} NOT NULL,"
        f" demand {blob} NOT NULL, PRIMARY KEY (meter, t))",
        f"CREATE TABLE IF NOT EXISTS {p}day (meter INTEGER NOT NULL, date TEXT NOT NULL,"
        f" seconds INTEGER NOT NULL, energy {blob} NOT NULL, PRIMARY KEY (meter, date))",
        f"CREATE TABLE IF NOT EXISTS {p}gap (meter INTEGER NOT NULL, start_t DOUBLE PRECISION NOT NULL,"
        " end_t DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (meter, start_t))",
        f"CREATE TABLE IF NOT EXISTS {p}event (meter INTEGER NOT NULL, t DOUBLE PRECISION NOT NULL,"
        " kind TEXT NOT NULL, text TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {p}event_t ON {p}event (meter, t)",
        f"CREATE TABLE IF NOT EXISTS {p}state (meter INTEGER PRIMARY KEY, data {blob} NOT NULL)",
        # power quality (history/pq.py): aggregates and voltage events as JSON records
        f"CREATE TABLE IF NOT EXISTS {p}pq (meter INTEGER NOT NULL, t DOUBLE PRECISION NOT NULL,"
        " main INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {p}pq_t ON {p}pq (meter, kind, t)",
    ]


class Db:
    """One connection; ``?`` placeholders; ``prefix`` before every table name."""

    prefix = ""
    kind = "sqlite"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover

    def size_bytes(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def t(self, name: str) -> str:
        return self.prefix + name


class SqliteDb(Db):
    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        try:
            if readonly:
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                            check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                self.conn.close()
                raise HistoryError(f"{path}: is another SQLite file, not a history")
            if not readonly:
                for stmt in schema("", "BLOB", "INTEGER"):
                    self.conn.execute(stmt)
        except sqlite3.Error as exc:
            raise HistoryError(f"{path}: cannot open the history: {exc}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def close(self) -> None:
        self.conn.close()


class PostgresDb(Db):
    """psycopg 3; ``?prefix=NAME_`` in the URL names the tables (default ``pm4324_``)."""

    kind = "postgresql"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise HistoryError("a postgresql:// history needs psycopg (pip install psycopg)") from None
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", ["pm4324_"])[0]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
            raise HistoryError(f"{url}: prefix {prefix!r} must be lower-case letters, digits, _")
        self.prefix = prefix
        rest = "&".join(f"{k}={v[0]}" for k, v in query.items())
        try:
            self.conn = psycopg.connect(urlunsplit(parts._replace(query=rest)), autocommit=True)
        except psycopg.Error as exc:
            raise HistoryError(f"{_safe(url)}: cannot connect: {exc}".strip()) from None
        with self.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(4324)")  # two hubs creating at once
            for stmt in schema(prefix, "BYTEA", "SERIAL"):
                self.conn.execute(stmt)
            self._hypertable()

    def _hypertable(self) -> None:
        have = self.conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchall()
        if have:
            self.conn.execute(f"SELECT create_hypertable('{self.prefix}interval', 't',"
                              " chunk_time_interval => 2592000, if_not_exists => TRUE,"
                              " migrate_data => TRUE)")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self.conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def size_bytes(self) -> int:
        rows = self.execute("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                            " WHERE c.relkind = 'r' AND c.relname LIKE ?", (self.prefix + "%",))
        return int(rows[0][0])

    def drop_all(self) -> None:
        """Drop this prefix's tables (tests, and `history prune --all`)."""
        with self.transaction():
            for name in _TABLES:
                self.conn.execute(f"DROP TABLE IF EXISTS {self.prefix}{name} CASCADE")

    def close(self) -> None:
        self.conn.close()


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


def open_db(where: str | Path, readonly: bool = False) -> Db:
    """A file path (SQLite) or a ``postgresql://`` URL."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDb(text)
    return SqliteDb(Path(text), readonly=readonly)
