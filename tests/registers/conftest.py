"""Fixtures for the register tests (helpers live in snapshot_factory.py)."""

from __future__ import annotations

import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.snapshot import Snapshot


@pytest.fixture
def snapshot() -> Snapshot:
    return make_snapshot()


@pytest.fixture
def meter(snapshot: Snapshot) -> FakeMeter:
    return FakeMeter(snapshot.settings, snapshot)
