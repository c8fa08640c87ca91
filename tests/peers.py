"""Real peers shared by the tests: their executables (skip when absent), running one to
completion within a bound, a socat pty pair for Modbus RTU, and the meter's own command line
as a user runs it. The fixtures built on these (``mbpoll``, ``socat``, ``pty_pair``) are in
tests/conftest.py; import the rest with ``from peers import ...`` (tests/ is on pytest's
pythonpath)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

LIMIT = 10.0  # seconds: the bound on one peer's run
SMALL_SCENARIO = """[[loads]]
cts = [1, 2, 3]
current_a = 20.0
"""  # one 20 A load on Meter 1: a meter that counts energy from its first second


def pm4324(*args: str, timeout: float = 120, cwd: Path | None = None
           ) -> subprocess.CompletedProcess:
    """`pm4324 ARGS` in a new process, as a user runs it; its stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "pm4324.cli.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


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
