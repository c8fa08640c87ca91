"""Test modules live in folders without ``__init__.py``, so pytest imports them by basename:
two files with one name break collection of the whole suite. Catch that here, where every
helper's pre-landing run sees it."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_module_basenames_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
