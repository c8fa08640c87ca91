"""History fixtures: a store on SQLite, and on the machine's PostgreSQL when it answers."""

from __future__ import annotations

import pytest
from postgres import drop, pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Where a test's history lives: a SQLite file, or fresh tables on PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path / "h.sqlite")
        return
    url = pg_url()
    yield url
    drop(url)
