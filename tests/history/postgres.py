"""The machine's PostgreSQL for history tests: fresh tables per test (a unique prefix),
dropped afterwards; a test skips, saying why, when no server answers."""

from __future__ import annotations

import uuid

import pytest

from pm4324.history import HistoryError

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    """A URL with a table prefix of its own (dropped by ``drop``); skips without a server."""
    from pm4324.history.db import PostgresDb

    url = f"{PG_BASE}?prefix=t{uuid.uuid4().hex[:10]}_"
    try:
        PostgresDb(url).close()
    except HistoryError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 (database test): {exc}")
    return url


def drop(url: str) -> None:
    from pm4324.history.db import PostgresDb

    db = PostgresDb(url)
    db.drop_all()
    db.close()
