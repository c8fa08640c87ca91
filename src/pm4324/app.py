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

from pm4324.cli.display import render_table
from pm4324.cli.errors import listen_problem, serial_problem
from pm4324.cli.precompile import kernels_cached
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.device.relays import make_driver
from pm4324.device.store import Store, StoreError, store_location
from pm4324.snapshot import Snapshot
from pm4324.sources.registry import source_class
from pm4324.sources.simulator import SimulatorSource, load_scenario


class ServerStartError(Exception):
    """A protocol server could not start (the message is one sentence for the user)."""


def _printer(args: argparse.Namespace, on_closed: Callable[[], None]):
    """The console listener; a closed stdout (``| head -1``) stops the meter like any filter."""
    tty = sys.stdout.isatty() and not args.json
    closed = False

    def show(snap: Snapshot) -> None:
        nonlocal closed
        if closed:
            return
        d = {**snap.to_dict(args.meter, harmonics=args.harmonics), **snap.alarms_dict()}
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
    print(f"State file {path} (boot {store.boot}; restored commit {r.seq}, second {r.second} "
          f"of boot {r.boot})", file=sys.stderr, flush=True)
    for kind, text in store.notes:
        print(f"  {kind}: {text}", file=sys.stderr, flush=True)
    return store


def limit_blas_threads() -> None:
    """One BLAS thread for the whole process.

    The simulator's one matrix product per second woke OpenBLAS's pool (a thread per core)
    every second, and its threads spin before they sleep: a real-time meter cost 60 ms of
    CPU per second, 8 ms with one thread, on 2 cores (bench/run_cpu_bench.py,
    docs/benchmarks.md).
    The products are small; one thread computes them as fast.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


async def run_meter(settings: Settings, args: argparse.Namespace,
                    settings_path: str | None = None) -> int:
    limit_blas_threads()
    if args.source:
        source = source_class(args.source)(settings)
    else:
        source = SimulatorSource(load_scenario(args.scenario), settings)
    try:
        store = open_store(settings, settings_path, args.reset_store)
    except StoreError as exc:
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    if not kernels_cached():
        print("Compiling the metering kernels (once after an install or update: 20-30 s; "
              "`make setup` does it ahead); the readings follow.", file=sys.stderr, flush=True)
    try:
        meter = Meter(settings, source, settings_path=settings_path, store=store,
                      driver=make_driver(settings.relays.driver),
                      harmonic_angles=args.harmonics)
    except BaseException:
        store.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    meter.add_listener(_printer(args, lambda: loop.call_soon_threadsafe(stop.set)))
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    servers: list = []
    try:
        await _start_servers(meter, settings, args, servers)
        await meter.run(speed=args.speed, seconds=args.seconds, stop=stop)
    except ServerStartError as exc:
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            await server.stop()
        meter.close()  # the energy registers are saved whatever stopped the meter
    return 0


async def _start_servers(meter: Meter, settings: Settings, args: argparse.Namespace,
                         servers: list) -> None:
    """Modbus TCP by default, RTU when a serial port is given (see docs/modbus.md); each
    started server is appended to ``servers`` (so the caller stops those that did start)."""
    try:
        from pm4324.protocols.modbus.rtu import RtuServer
        from pm4324.protocols.modbus.tcp import TcpServer, parse_listen
        from pm4324.registers.image import MapBackend
    except ImportError:
        return
    backend = MapBackend(meter)
    mb = settings.modbus
    if mb.tcp_enabled and not args.no_modbus:
        host, port = args.listen or parse_listen(mb.tcp_listen)
        tcp = TcpServer(backend, unit_id=mb.address, host=host, port=port)
        try:
            await tcp.start()
        except OSError as exc:
            raise ServerStartError(listen_problem(host, port, exc)) from None
        print(f"Modbus TCP on {host}:{tcp.port} (unit {mb.address})", file=sys.stderr, flush=True)
        servers.append(tcp)
    port_name = args.rtu or mb.serial_port
    if port_name:
        rtu = RtuServer(backend, port_name, address=mb.address, baud=mb.baud,
                        data_format=mb.data_format)
        try:
            await rtu.start()
        except Exception as exc:  # pyserial: SerialException / ValueError around an OSError
            await rtu.stop()
            raise ServerStartError(serial_problem(port_name, exc, f"{mb.baud} {mb.data_format}"
                                                  )) from None
        print(f"Modbus RTU on {port_name} {mb.baud} {mb.data_format} (unit {mb.address})",
              file=sys.stderr, flush=True)
        servers.append(rtu)
    if settings.canopen.interface:  # CANopen (PM-4324-CPS): docs/canopen.md
        from pm4324.protocols.canopen import CanopenBusError, CanopenServer
        from pm4324.protocols.canopen.storage import node_files

        co = settings.canopen
        parameters, serial = node_files(settings, meter.settings_path)
        node = CanopenServer(meter, settings, serial_number=serial, parameters=parameters)
        try:
            await node.start()
        except CanopenBusError as exc:
            raise ServerStartError(str(exc)) from None
        print(f"CANopen node {node.node_id} on {co.interface}:{co.channel} ({node.bitrate} bit/s, "
              f"serial number 0x{serial:08X})", file=sys.stderr, flush=True)
        servers.append(node)
