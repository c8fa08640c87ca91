"""`pm4324 read --watch` against our Modbus TCP server: a reading a second, and a meter that
does not answer is one line per try, never a traceback."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from snapshot_factory import FakeMeter, make_snapshot

from pm4324.cli.cli import main
from pm4324.registers.image import MapBackend

LIMIT = 20.0


@pytest.fixture
async def server():
    from pm4324.protocols.modbus import TcpServer

    snap = make_snapshot()
    srv = TcpServer(MapBackend(FakeMeter(snap.settings, snap)), unit_id=1, port=0)
    await srv.start()
    yield srv, snap
    await srv.stop()


async def run_cli(argv: list[str]) -> int:
    return await asyncio.wait_for(asyncio.to_thread(main, argv), LIMIT)


async def test_watch_reads_every_second(server, capsys):
    srv, snap = server
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{srv.port}", "--watch", "--count", "3",
                        "--json", "--meter", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 3
    assert all(json.loads(x)["cts"][0]["p_w"] == pytest.approx(snap.ct.p_w[0], rel=1e-6)
               for x in lines)


async def test_watch_table_when_not_a_terminal(server, capsys):
    srv, _ = server
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{srv.port}", "--watch", "--count", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("--watch: every second") == 2 and "\x1b[2J" not in out


async def test_watch_without_a_meter_says_so_each_try(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    rc = await run_cli(["read", "--tcp", f"127.0.0.1:{port}", "--watch", "--count", "2",
                        "--timeout", "0.5"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 2 and all("trying again" in line for line in err)
