"""`pm4324 fleet FLEET.toml`: many simulated meters on one host, each with its own identity
and energy counters, served over Modbus TCP/RTU, CANopen, HTTP and MQTT (docs/fleet.md).
Ctrl-C or SIGTERM stops it after the last commit."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("fleet", help="run many simulated meters (a BMS/SCADA test bed)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("config", metavar="FLEET.toml", help="the meters and their interfaces "
                   "(docs/fleet.md, examples/fleet/)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--speed", type=float, default=1.0, help="run N times faster than real time")
    p.add_argument("--reset-store", action="store_true",
                   help="start every counter from zero (the old state file is kept aside)")
    p.add_argument("--stats", action="store_true",
                   help="one JSON line a second: publish jitter, compute and commit times")
    p.set_defaults(func=run)
    return p


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from pm4324.app import GIL_SWITCH_INTERVAL_S, limit_blas_threads
    from pm4324.device.recovery import StoreError
    from pm4324.fleet.config import load_fleet
    from pm4324.fleet.store import FleetStore

    if not 0 < args.speed <= 1000 or (args.seconds is not None and args.seconds <= 0):
        _say("pm4324 fleet: --speed must be in (0, 1000] and --seconds positive")
        return 2
    config = load_fleet(args.config)  # SettingsError: one line, exit 2 (cli.main)
    limit_blas_threads()
    # the clock thread publishes on the second while the protocol loop builds register
    # images: each takes the GIL back within this interval (as `pm4324 run`)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        store = FleetStore.open(config.store, [m.key for m in config.members],
                                reset=args.reset_store)
    except StoreError as exc:
        _say(f"pm4324 fleet: {exc}")
        return 2
    r = store.restored
    _say(f"Fleet: {len(config.members)} meters ({config.fidelity} level), state {store.path} "
         f"(boot {store.boot}; restored commit {r.seq})")
    for note in r.notes:
        _say(f"  {note}")
    try:
        return asyncio.run(_serve(config, store, args))
    except KeyboardInterrupt:
        return 130


async def _serve(config, store, args: argparse.Namespace) -> int:
    from pm4324.fleet.clock import TruthFleet
    from pm4324.fleet.expose import Backends, ExposeError, start_canopen, start_rtu, start_tcp

    if config.fidelity == "physics":
        from pm4324.fleet.physics import PhysicsFleet

        _say(f"Physics level: {len(config.members)} meters simulated and measured at "
             f"{config.sample_rate_hz:g} S/s in {config.workers} worker processes")
        fleet = PhysicsFleet(config, store)
    else:
        fleet = TruthFleet(config, store)
    backends = Backends(fleet.members)
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    servers: list = []
    extras: list = []
    try:
        wire = fleet.faults.protocol
        await start_tcp(config, backends, servers, wire)
        await start_rtu(config, backends, servers, wire)
        await start_canopen(config, fleet.members, backends, servers, store.meter_ids, wire)
        extras = await _start_web_mqtt(config, fleet, servers)
    except ExposeError as exc:
        for server in servers:
            await server.stop()
        fleet.close()
        _say(f"pm4324 fleet: {_problem(exc)}")
        return 2
    clock = threading.Thread(target=fleet.run, args=(stop, args.seconds, args.speed),
                             name="fleet-clock", daemon=True)
    clock.start()
    try:
        shown = -1
        while clock.is_alive():
            await asyncio.sleep(0.05)
            if args.stats and fleet.published_k > shown:
                shown = fleet.published_k
                print(json.dumps(_stats(fleet)), flush=True)
    finally:
        stop.set()
        await asyncio.to_thread(clock.join)
        for server in servers:
            await server.stop()
        for stop_extra in extras:
            stop_extra()
        fleet.close()
    _say(f"Fleet stopped after {fleet.published_k + 1} seconds ({fleet.late} late)")
    return 0


def _problem(exc: Exception) -> str:
    """An interface's start failure in the words `pm4324 run` uses for the same one."""
    from pm4324.cli.errors import listen_problem, serial_problem
    from pm4324.fleet.expose import ListenFailed, SerialFailed

    if isinstance(exc, ListenFailed):
        return listen_problem(exc.host, exc.port, exc.error)
    if isinstance(exc, SerialFailed):
        return serial_problem(exc.device, exc.error, exc.line)
    return str(exc)


def _stats(fleet) -> dict:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"second": fleet.published_k, "meters": len(fleet.members),
            "jitter_ms": round(fleet.jitter_s[-1] * 1000, 2) if fleet.jitter_s else None,
            "compute_ms": round(fleet.compute_s[-1] * 1000, 1) if fleet.compute_s else None,
            "commit_ms": round(fleet.store.commit_s[-1] * 1000, 1) if fleet.store.commit_s
            else None, "late": fleet.late, "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "max_rss_mb": round(ru.ru_maxrss / 1024, 1), "time": round(time.time(), 3)}


async def _start_web_mqtt(config, fleet, servers: list) -> list:
    """The dashboard/API over every member, and MQTT (one node per member); stop hooks."""
    stops = []
    keys = [m.key for m in config.members]
    if config.http:
        from pm4324.fleet.expose import ExposeError
        from pm4324.protocols.modbus.tcp import parse_listen
        from pm4324.web.server import WebServer

        try:
            host, port = parse_listen(config.http)
        except ValueError as exc:
            raise ExposeError(f"[http] listen: {exc}") from None
        from pm4324.fleet.switch import FleetFaultControl

        security = config.members[0].settings.security
        control = FleetFaultControl(fleet.faults, lambda t: fleet.start_time + t, security)
        from pm4324.fleet.webview import MembersView
        from pm4324.security.guard import Guard

        web = WebServer(None, host, port, guard=Guard(security), keys=keys, faults=control)
        web.fleet = MembersView(fleet.members)  # type: ignore[assignment]  # read when asked
        try:
            await web.start()
        except OSError as exc:
            raise ExposeError(str(exc)) from None
        servers.append(web)
        # the live stream (/api/stream) follows the first member, as a hub's its first meter
        fleet.members[0].add_listener(lambda snap: web.publish(keys[0], snap))
        _say(f"Dashboard and HTTP API of {len(keys)} meters on {web.url}")
    if config.mqtt.enabled:
        from pathlib import Path

        from pm4324.mqtt.fleet import HubPublishers

        mqtt = HubPublishers(config.mqtt, keys, Path(config.store).parent / "mqtt-buffer")
        mqtt.start()
        for member in fleet.members:
            member.add_listener(lambda snap, key=member.key: mqtt.offer(
                key, {**snap.to_dict(), **snap.alarms_dict()}))
        stops.append(mqtt.stop)
        _say(f"MQTT to {config.mqtt.host}:{config.mqtt.port}: one node per meter")
    return stops
