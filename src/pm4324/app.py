"""The composition root: wires source, meter, protocol servers and the live display.

Data flows one way (source -> metering -> device -> registers -> protocols/host); this is
the only module that knows all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pm4324.cli.display import render_table
from pm4324.cli.listeners import ServerStartError, plan_tcp, start_servers
from pm4324.cli.precompile import kernels_cached
from pm4324.config.settings import Settings
from pm4324.device.faults import apply_device_faults
from pm4324.device.meter import Meter
from pm4324.device.relays import make_driver
from pm4324.device.store import Store, StoreError, store_location
from pm4324.faults.log import FaultLog
from pm4324.faults.switch import FaultSwitch, offline_while_off
from pm4324.history import HistoryError, HistoryStore, HistoryWriter, names_of
from pm4324.protocols.faults import ProtocolFaults
from pm4324.registers.backend import ACK_WAIT_S, AccessError, ExceptionCode, on_disk
from pm4324.registers.map_backend import MapBackend
from pm4324.security.audit import DAY_S, AuditLog, audit_path_for
from pm4324.security.guard import Guard
from pm4324.security.roles import Right
from pm4324.snapshot import Snapshot
from pm4324.sources.registry import source_class
from pm4324.sources.scenario_parse import load_scenario
from pm4324.sources.simulator import SimulatorSource

# The meter's step and Modbus writes run in worker threads (Python code, holding the GIL for
# milliseconds); a waiting thread takes the GIL back after this interval instead of Python's
# default 5 ms, so the protocol loop answers a read within about this long of its arrival
# (docs/benchmarks.md, "Modbus TCP under attack").
GIL_SWITCH_INTERVAL_S = 0.0005
RELAY_COILS, ALARM_ACK = 0x1000, 0x1026  # coil of relay 1; holding 'alarm_ack' (map.csv)


def _printer(args: argparse.Namespace, on_closed: Callable[[], None]):
    """The console listener; a closed stdout (``| head -1``) stops the meter like any filter."""
    tty = sys.stdout.isatty() and not args.json
    closed = False

    def show(snap: Snapshot) -> None:
        nonlocal closed
        if closed:
            return
        d = {**snap.to_dict(args.meter, harmonics=args.harmonics), **snap.alarms_dict(),
             **snap.pq_dict()}
        try:
            if args.json:
                print(json.dumps(d), flush=True)
            else:
                text = render_table(d)
                print(("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n"), flush=True)
        except BrokenPipeError:
            closed = True
            # Python would report the pipe again when it flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            on_closed()

    return show


def open_store(settings: Settings, settings_path: str | None, reset: bool) -> Store:
    """The state store of this meter; says on stderr where it is and what opening found."""
    path, id_path = store_location(settings, settings_path)
    store = Store.open(path, id_path, reset=reset)
    r = store.restored
    print(f"State file {path} with {store.ring_path.name} (boot {store.boot}; restored commit "
          f"{r.seq}, second {r.second} of boot {r.boot})", file=sys.stderr, flush=True)
    for kind, text in store.notes:
        print(f"  {kind}: {text}", file=sys.stderr, flush=True)
    return store


def history_location(settings: Settings, settings_path: str | None) -> str:
    """``[history] path`` (relative to the state file's directory), a postgresql:// URL, or
    beside the state file: ``NAME.state.db`` or ``NAME.db`` -> ``NAME.history.db``,
    ``state.db`` -> ``history.db``."""
    state, _ = store_location(settings, settings_path)
    path = settings.history.path
    if path.startswith(("postgresql://", "postgres://")):
        return path
    if path:
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else state.parent / p)
    name = state.name
    stem = name.removesuffix(".db").removesuffix(".state").removesuffix("state")
    return str(state.with_name(f"{stem}.history.db" if stem else "history.db"))


def open_history(settings: Settings, settings_path: str | None) -> HistoryWriter | None:
    """The meter's own history (None when ``[history] enabled = false``)."""
    h = settings.history
    if not h.enabled:
        return None
    where = history_location(settings, settings_path)
    store = HistoryStore.open(where, time_zone=h.time_zone or None, raw_days=h.raw_days,
                              keep_years=h.keep_years)
    print(f"History {where} (time zone {store.time_zone})", file=sys.stderr, flush=True)
    return HistoryWriter(store, "local", model=settings.model, names=names_of(settings),
                         flush_s=h.flush_s)


def limit_blas_threads() -> None:
    """One BLAS thread for the whole process.

    The simulator's one matrix product per second woke OpenBLAS's pool (a thread per core)
    every second, and its threads spin before they sleep: a real-time meter cost 60 ms of
    CPU per second, 8 ms with one thread, on 2 cores (bench/run_cpu_bench.py,
    docs/benchmarks.md).
    The products are small; one thread computes them as fast.
    """
    from threadpoolctl import threadpool_limits

    # a BLAS loaded later (numba imports scipy, whose own OpenBLAS loads on first use) reads
    # this at load time; threadpool_limits only reaches the ones already loaded
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    threadpool_limits(limits=1, user_api="blas")


async def run_meter(settings: Settings, args: argparse.Namespace,
                    settings_path: str | None = None) -> int:
    limit_blas_threads()
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
    if not kernels_cached():
        print("Compiling the metering kernels (once after an install or update: 20-30 s; "
              "`make setup` does it ahead); the readings follow.", file=sys.stderr, flush=True)
    try:
        history = open_history(settings, settings_path)
    except HistoryError as exc:
        store.close()
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    try:
        meter = Meter(settings, source, settings_path=settings_path, store=store,
                      driver=make_driver(settings.relays.driver),
                      harmonic_angles=args.harmonics)
    except BaseException:
        store.close()
        if history is not None:
            history.store.close()
        raise
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    book = source.faults if isinstance(source, SimulatorSource) else None
    if book is not None:
        apply_device_faults(meter, book)
    fault_log = FaultLog(args.fault_log) if getattr(args, "fault_log", None) else None
    protocol_faults = _protocol_faults(store.restored.meter_id, fault_log)
    switch = FaultSwitch(book, store.restored.meter_id, lambda t: meter.start_time + t, fault_log,
                         protocol_faults)
    offline_while_off(meter, protocol_faults)
    if history is not None:
        meter.add_listener(history.add_snapshot)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    meter.add_listener(_printer(args, lambda: loop.call_soon_threadsafe(stop.set)))
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        audit = open_audit(settings, settings_path)
    except Exception:
        meter.close()
        raise
    meter.add_listener(lambda _snap: audit.flush())  # once a second, in the device loop
    servers: list = []
    mqtt = None
    try:
        backend = MapBackend(meter, guard=Guard(settings.security, audit))
        await start_servers(meter, settings, args, backend, plan, servers, protocol_faults)
        if args.http:
            where = history_location(settings, settings_path) if history is not None else None
            servers.append(await _start_web(meter, args, backend.guard, where, switch))
        mqtt = _start_mqtt(meter, settings, store, backend, stop)
        await meter.run(speed=args.speed, seconds=args.seconds, stop=stop)
    except ServerStartError as exc:
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            await server.stop()
        if mqtt is not None:
            stop.set()
            await mqtt
        meter.close()  # the energy registers are saved whatever stopped the meter
        audit.close()
        if fault_log is not None:
            fault_log.close()
        if history is not None:
            history.close()
            history.store.close()
    return 0


def _protocol_faults(meter_id: str, fault_log: FaultLog | None) -> ProtocolFaults:
    """The meter's protocol faults (protocols/faults.py), given to every protocol server;
    their starts and ends go to the fault log (wall-clock times: they act on the wire)."""
    faults = ProtocolFaults(meter_id)
    if fault_log is not None:
        faults.add_listener(lambda c: fault_log.write(
            c.state, c.meter, c.fault, "protocol", c.fault, dict(c.params), "live", c.started,
            c.time if c.state == "end" else None))
    return faults


async def _start_web(meter: Meter, args: argparse.Namespace, guard: Guard, history: str | None,
                     faults: FaultSwitch | None = None):
    """The dashboard, the HTTP API and /metrics (docs/web.md); writes need a token of
    ``[security.tokens]`` whose role the guard allows (the same guard as Modbus and MQTT).
    ``history``: where the meter keeps its history (the server reads it on a connection of
    its own), or None."""
    from pm4324.web.server import WebServer, exposure_warning

    host, port = args.http
    store = HistoryStore.open(history, readonly=True) if history else None
    web = WebServer(meter, host, port, guard=guard, history=store, faults=faults)
    try:
        await web.start()
    except OSError as exc:
        web.history.close()
        raise ServerStartError(str(exc)) from None
    tokens = len(meter.settings.security.tokens)
    writes = f"writes with one of {tokens} token(s)" if tokens else "read-only: no [security.tokens]"
    print(f"Dashboard and HTTP API on {web.url} ({writes})", file=sys.stderr, flush=True)
    if warning := exposure_warning(host):
        print(warning, file=sys.stderr, flush=True)
    return web


def _start_mqtt(meter: Meter, settings: Settings, store: Store, backend: MapBackend,
                stop: asyncio.Event):
    """The MQTT publisher task when ``[mqtt] url`` is set (docs/mqtt.md), else None."""
    if not settings.mqtt.enabled:
        return None
    from importlib.metadata import version

    from pm4324.mqtt.publisher import MqttPublisher
    from pm4324.security.identities import Identities

    # A command acts with the role [security.mqtt_accounts] gives this connection's broker
    # account; the broker's ACL decides who may publish on the command topics.
    account = settings.mqtt.credentials[0] or ""
    client = Identities(settings.security).mqtt_client(account, settings.mqtt.host)

    def command(kind: str, number: int | None, closed: bool | None) -> None:
        try:
            if kind == "relay":
                done = backend.write_coils(RELAY_COILS + int(number or 1) - 1, [bool(closed)],
                                           client)
            else:
                done = backend.write_registers(ALARM_ACK, [number or 3], client)
        except AccessError as exc:
            if exc.code is ExceptionCode.ILLEGAL_FUNCTION:  # the guard refused: no right
                raise ValueError(f"broker account {account or '(anonymous)'!r} has no role that "
                                 f"allows this ([security.mqtt_accounts]): {exc}") from None
            raise ValueError(str(exc)) from None
        if not on_disk(done):  # the publisher calls this in a worker thread
            raise ValueError(f"applied but not saved to disk within {ACK_WAIT_S * 1000:.0f} ms")

    buffer = settings.mqtt.buffer_path or str(store.path.with_name("mqtt-buffer.db"))
    # relays are switches (and commands are listened to) only when the policy allows them
    allowed = Right.RELAYS in backend.guard.rights(client)
    publisher = MqttPublisher(settings.mqtt, meter_id=store.restored.meter_id,
                              model=settings.model, sw_version=version("pm4324"), buffer_path=buffer,
                              command=command if allowed else None)
    meter.add_listener(lambda snap: publisher.offer({**snap.to_dict(), **snap.alarms_dict()}))
    print(f"MQTT to {settings.mqtt.host}:{settings.mqtt.port} as {publisher.root}",
          file=sys.stderr, flush=True)

    async def run() -> None:
        try:
            await publisher.run(stop)
        except Exception as exc:  # a bug: say it in one line, the meter goes on measuring
            print(f"MQTT: stopped publishing: {exc!r}", file=sys.stderr, flush=True)
            raise
        finally:
            publisher.close()

    return asyncio.create_task(run())


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


