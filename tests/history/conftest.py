"""History fixtures: a store on SQLite, and on the machine's PostgreSQL when it answers."""

from __future__ import annotations

import uuid

import pytest

from pm4324.history import HistoryError

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    """A URL with a table prefix of its own (dropped by ``drop``); skips without a server."""
    url = f"{PG_BASE}?prefix=t{uuid.uuid4().hex[:10]}_"
    from pm4324.history.db import PostgresDb

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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Where a test's history lives: a SQLite file, or fresh tables on PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path / "h.sqlite")
        return
    url = pg_url()
    yield url
    drop(url)
