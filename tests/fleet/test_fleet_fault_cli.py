"""`pm4324 fault --device KEY` against `pm4324 fleet`'s HTTP API: a member's measurement or
protocol fault is switched by key, needs a token with the settings right, and shows in that
member only."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from fleet_helpers import SPEED, open_fleet, serving

from pm4324.cli.cli import main
from pm4324.cli.fleet_cmd import _start_web_mqtt
from pm4324.fleet.config import parse_fleet
from pm4324.security.identities import hash_token

TOKEN = "settings-token-0123456789"
SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / \
    "building-settings.toml"


async def test_fault_command_switches_one_member(tmp_path, capsys):
    settings = tmp_path / "s.toml"
    settings.write_text(SETTINGS.read_text() + f'\n[security.tokens.engineer]\nrole = "settings"\n'
                        f'hash = "{hash_token(TOKEN)}"\n')
    config = parse_fleet({"fleet": {"store": str(tmp_path / "var" / "fleet")},
                          "meters": [{"key": "m{n}", "count": 3, "settings": str(settings)}],
                          "http": {"listen": "127.0.0.1:0"}, "modbus": {"mode": "off"}},
                         "fleet.toml", tmp_path)
    fleet = open_fleet(config)
    async with serving(fleet) as servers:
        await _start_web_mqtt(config, fleet, servers)
        url = f"http://127.0.0.1:{servers[0].port}"

        def fault(*args: str) -> int:
            return main(["fault", "--http", url, "--json", *args])

        assert await asyncio.to_thread(fault, "--device", "m2", "set", "reversed_ct", "ct1") == 2
        assert "401" in capsys.readouterr().err  # no token: refused
        base = ["--token", TOKEN, "--device"]
        assert await asyncio.to_thread(fault, *base, "m2", "set", "reversed_ct", "ct1") == 0
        assert await asyncio.to_thread(fault, *base, "m3", "set", "latency", "protocol",
                                       "ms=10") == 0
        assert await asyncio.to_thread(fault, *base, "nope", "list") == 2
        assert "no meter 'nope'" in capsys.readouterr().err
        await asyncio.to_thread(fleet.run, threading.Event(), 2, SPEED)
        snaps = [m.snapshot for m in fleet.members]
        assert snaps[1].ct.p_w[0] < 0 < snaps[0].ct.p_w[0] and snaps[2].ct.p_w[0] > 0
        assert set(fleet.faults.protocol[2].active()) == {"latency"}
        assert not fleet.faults.protocol[1].active()
        assert await asyncio.to_thread(fault, *base, "m2", "list") == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["kind"], r["target"], r["state"]) for r in rows] == [
            ("reversed_ct", "ct1", "active")]
        assert await asyncio.to_thread(fault, *base, "m3", "clear") == 0
        assert not fleet.faults.protocol[2].active()
