"""Real peers shared by the tests: their executables (skip when absent), running one to
completion within a bound, and a socat pty pair for Modbus RTU. The fixtures built on these
(``mbpoll``, ``socat``, ``pty_pair``) are in tests/conftest.py; import the rest with
``from peers import ...`` (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest

LIMIT = 10.0  # seconds: the bound on one peer's run


def tool(name: str) -> str:
    """The path of an installed executable; skip the test when it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}; .ci/run installs it)")
    return path


async def run_peer(*args: str, merge: bool = False) -> tuple[int, str, str]:
    """Run a peer to completion (killed after ``LIMIT``): rc, stdout, stderr.

    ``merge``: its stderr is part of stdout (in order) and the third item is ""."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), (err or b"").decode()


@contextlib.asynccontextmanager
async def socat_pty_pair(socat: str) -> AsyncIterator[tuple[str, str]]:
    """Two linked ptys from socat; their names are read from socat's log (no polling)."""
    proc = subprocess.Popen([socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        names: list[str] = []
        while len(names) < 2:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), LIMIT)
            if not line:
                pytest.fail(f"socat exited (rc {proc.poll()})")
            if "PTY is " in line:
                names.append(line.rsplit("PTY is ", 1)[1].strip())
        yield names[0], names[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
