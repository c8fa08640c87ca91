"""The real peers' executables (skip when absent)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

LIMIT = 10.0


@pytest.fixture
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.skip("mbpoll is not installed (apt-get install mbpoll; .ci/run installs it)")
    return path


@pytest.fixture
def socat() -> str:
    path = shutil.which("socat")
    if path is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    return path


@pytest.fixture
async def pty_pair(socat, tmp_path: Path):
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIMIT
        while not (a.exists() and b.exists()):  # bounded poll for socat's links
            if proc.poll() is not None or loop.time() > deadline:
                pytest.fail(f"socat did not create {a} and {b} (rc {proc.poll()})")
            await asyncio.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=LIMIT)
