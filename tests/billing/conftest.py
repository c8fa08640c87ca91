"""The billing tests' month of history (billing_month.py), written once per session."""

from __future__ import annotations

import pytest
from billing_month import Month, write_month


@pytest.fixture(scope="session")
def month(tmp_path_factory) -> Month:
    return write_month(str(tmp_path_factory.mktemp("billing") / "history.sqlite"))
