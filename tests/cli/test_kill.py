"""The kill test: SIGKILL `pm4324 run` at random moments, restart, and find every counter
intact. The harness is bench/soak_kill.py (its long run is the documented soak); here it
runs 50 cycles, as two independent meters killed side by side to halve the wall time."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _soak():
    spec = importlib.util.spec_from_file_location("soak_kill", ROOT / "bench" / "soak_kill.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fifty_random_kills_lose_at_most_the_second_being_measured(tmp_path):
    soak = _soak()
    with ThreadPoolExecutor(2) as pool:
        chains = list(pool.map(lambda seed: soak.run_cycles(tmp_path / f"meter{seed}", 25, seed),
                               (11, 12)))
    for r in chains:
        assert r.problems == []
        assert r.cycles == 25
        assert r.boots >= 15  # most kills came after the state file was opened
        assert set(r.ahead) <= {0, 1} and r.ahead.count(0) > 0
        assert r.final.meter.values()[0, 0] > 0 and r.final.ct.values()[3, 1] > 0  # import, export
    assert sum(r.cycles for r in chains) >= 50
