"""Shared fixtures: where the read-only recordings live, if they are here at all, a private
state directory for every test, and the real peers (tests/peers.py) every folder uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from peers import socat_pty_pair, tool

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory, monkeypatch) -> Path:
    """`pm4324 run` without --settings keeps its state in $XDG_STATE_HOME/pm4324: never the
    user's own in a test (subprocesses inherit the variable)."""
    state = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


WAVEFORMS = SHARED_DATA / "waveforms"


@pytest.fixture(scope="session")
def waveforms() -> Path:
    """The shared real recordings beside the checkout (read-only); skip when absent."""
    if not WAVEFORMS.is_dir():
        pytest.skip(f"shared waveform recordings not found at {WAVEFORMS}")
    return WAVEFORMS


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not available: {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def mbpoll() -> str:
    return tool("mbpoll")


@pytest.fixture
def socat() -> str:
    return tool("socat")


@pytest.fixture
async def pty_pair(socat: str):
    """Two linked ptys (server side, client side) for Modbus RTU."""
    async with socat_pty_pair(socat) as pair:
        yield pair
