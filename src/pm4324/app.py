"""The composition root: wires source, meter, protocol servers and the live display.

Data flows one way (source -> metering -> device -> registers -> protocols/host); this is
the only module that knows all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from pm4324.cli.display import render_table
from pm4324.cli.listeners import plan_tcp, start_servers
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.device.relays import make_driver
from pm4324.device.store import Store, StoreError, store_location
from pm4324.security.audit import DAY_S, AuditLog, audit_path_for
from pm4324.security.guard import Guard
from pm4324.snapshot import Snapshot
from pm4324.sources.registry import source_class
from pm4324.sources.simulator import SimulatorSource, load_scenario


def _printer(args: argparse.Namespace):
    tty = sys.stdout.isatty() and not args.json

    def show(snap: Snapshot) -> None:
        d = {**snap.to_dict(args.meter), **snap.alarms_dict()}
        if args.json:
            print(json.dumps(d), flush=True)
        else:
            text = render_table(d)
            print(("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n"), flush=True)

    return show


def open_store(settings: Settings, settings_path: str | None, reset: bool) -> Store:
    """The state store of this meter; says on stderr where it is and what opening found."""
    path, id_path = store_location(settings, settings_path)
    store = Store.open(path, id_path, reset=reset)
    r = store.restored
    print(f"State file {path} (boot {store.boot}; restored commit {r.seq}, second {r.second} "
          f"of boot {r.boot})", file=sys.stderr, flush=True)
    for kind, text in store.notes:
        print(f"  {kind}: {text}", file=sys.stderr, flush=True)
    return store


async def run_meter(settings: Settings, args: argparse.Namespace,
                    settings_path: str | None = None) -> int:
    if args.source:
        source = source_class(args.source)(settings)
    else:
        source = SimulatorSource(load_scenario(args.scenario), settings)
    plan = plan_tcp(settings, args)  # refuses an exposed listener before anything is opened
    try:
        store = open_store(settings, settings_path, args.reset_store)
    except StoreError as exc:
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    try:
        meter = Meter(settings, source, settings_path=settings_path, store=store,
                      driver=make_driver(settings.relays.driver))
    except BaseException:
        store.close()
        raise
    meter.add_listener(_printer(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        audit = open_audit(settings, settings_path)
    except Exception:
        meter.close()
        raise
    meter.add_listener(lambda _snap: audit.flush())  # once a second, in the device loop
    try:
        servers = await start_servers(meter, settings, args, Guard(settings.security, audit), plan)
    except BaseException:
        meter.close()
        audit.close()
        raise
    try:
        await meter.run(speed=args.speed, seconds=args.seconds, stop=stop)
    finally:
        for server in servers:
            await server.stop()
        meter.close()
        audit.close()
    return 0


def audit_location(settings: Settings, settings_path: str | None) -> Path:
    """``[security] audit_path`` (relative to the settings file's directory), else beside
    the state file."""
    sec = settings.security
    if not sec.audit_path:
        return audit_path_for(store_location(settings, settings_path)[0])
    path = Path(sec.audit_path).expanduser()
    home = Path(settings_path).resolve().parent if settings_path else Path.cwd()
    return path if path.is_absolute() else home / path


def open_audit(settings: Settings, settings_path: str | None) -> AuditLog:
    """The audit log of this meter (docs/security.md): beside the state file by default."""
    sec = settings.security
    path = audit_location(settings, settings_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Audit log {path}", file=sys.stderr, flush=True)
    return AuditLog(path, max_entries=sec.audit_max_entries,
                    max_age_s=sec.audit_max_age_days * DAY_S)


