"""Helpers shared by the web tests (imported by name: every tests/ folder has a conftest).

A running meter for the web tests: the simulated building, its Modbus TCP server and the
web server on free loopback ports, in an event loop on a background thread.

The meter does not pace itself: the test calls ``step()`` to publish the next second, so the
page, the API and Modbus serve one and the same second while a test compares them.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pm4324.config.settings_parse import load_settings
from pm4324.device.meter import Meter
from pm4324.history import HistoryStore, HistoryWriter, names_of
from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.registers.image import MapBackend
from pm4324.security.audit import AuditLog
from pm4324.security.guard import Guard
from pm4324.security.identities import hash_token
from pm4324.snapshot import Snapshot
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource
from pm4324.web.server import WebServer

SETTINGS = Path(__file__).resolve().parents[2] / "src" / "pm4324" / "data" / "building-settings.toml"
TOKENS = {"hmi": ("relays", "relays-token-0123456789"), "engineer": ("settings", "settings-token-0123456789"),
          "billing": ("energy-reset", "energy-token-0123456789")}  # name: (role, token)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class LiveMeter:
    meter: Meter
    web: WebServer
    modbus: TcpServer
    loop: asyncio.AbstractEventLoop
    history: HistoryWriter | None = None  # as `run` keeps it, flushed each second of meter time
    first: Snapshot | None = None  # the first second the history saw

    @property
    def url(self) -> str:
        return self.web.url

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def step(self, n: int = 1) -> Snapshot:
        """Measure and publish the next ``n`` seconds; returns the last, once the web has it."""
        async def go() -> Snapshot:
            for _ in range(n):
                snap = self.meter.step()
            for _ in range(1000):  # the feed takes it on the next loop turn
                if self.web.service.feed.snapshot is snap:
                    break
                await asyncio.sleep(0)
            return snap

        return self.call(go())

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url.rstrip("/"), timeout=10.0)


def start_live_meter(settings_path: Path | None = None, history: Path | None = None
                     ) -> tuple[LiveMeter, threading.Thread]:
    """``history``: keep the meter's history in that file (UTC days) and serve it."""
    settings = load_settings(settings_path or SETTINGS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> LiveMeter:
        meter = Meter(settings, SimulatorSource(load_scenario(None), settings),
                      settings_path=str(settings_path) if settings_path else None)
        modbus = TcpServer(MapBackend(meter), unit_id=1, host="127.0.0.1", port=0)
        await modbus.start()
        writer = reader = None
        if history is not None:
            writer = HistoryWriter(HistoryStore.open(history, time_zone="UTC"), "local",
                                   model=settings.model, names=names_of(settings), flush_s=1)
            meter.add_listener(writer.add_snapshot)
            reader = HistoryStore.open(history, readonly=True)
        web = WebServer(meter, "127.0.0.1", 0, guard=Guard(settings.security, AuditLog()),
                        history=reader)
        await web.start()
        live = LiveMeter(meter, web, modbus, asyncio.get_running_loop(), writer)
        meter.add_listener(lambda snap: live.first or setattr(live, "first", snap))
        return live

    live = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    live.step(2)
    return live, thread


def stop_live_meter(live: LiveMeter, thread: threading.Thread) -> None:
    async def stop() -> None:
        await live.web.stop()
        await live.modbus.stop()
        if live.history is not None:
            live.history.close()
            live.history.store.close()

    live.call(stop())
    live.loop.call_soon_threadsafe(live.loop.stop)
    thread.join(10)


def settings_with_tokens() -> str:
    """The building's settings with the test's HTTP tokens (as `pm4324 token` writes them)."""
    lines = [f'\n[security.tokens.{name}]\nrole = "{role}"\nhash = "{hash_token(token)}"'
             for name, (role, token) in TOKENS.items()]
    return SETTINGS.read_text() + "\n".join(lines) + "\n"


def which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def interrupt(proc: subprocess.Popen) -> int:
    """Ctrl-C to a running `pm4324` process; its exit code (killed, and the test fails, when it
    does not stop within 30 s)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
