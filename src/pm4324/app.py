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

from pm4324.cli.display import render_table
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.device.relays import make_driver
from pm4324.device.store import Store, StoreError, store_location
from pm4324.snapshot import Snapshot
from pm4324.sources.registry import source_class
from pm4324.sources.simulator import SimulatorSource, load_scenario


def _printer(args: argparse.Namespace):
    tty = sys.stdout.isatty() and not args.json

    def show(snap: Snapshot) -> None:
        d = {**snap.to_dict(args.meter, harmonics=args.harmonics), **snap.alarms_dict()}
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
    try:
        store = open_store(settings, settings_path, args.reset_store)
    except StoreError as exc:
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    try:
        meter = Meter(settings, source, settings_path=settings_path, store=store,
                      driver=make_driver(settings.relays.driver),
                      harmonic_angles=args.harmonics)
    except BaseException:
        store.close()
        raise
    meter.add_listener(_printer(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    servers = await _start_servers(meter, settings, args)
    try:
        await meter.run(speed=args.speed, seconds=args.seconds, stop=stop)
    finally:
        for server in servers:
            await server.stop()
        meter.close()
    return 0


async def _start_servers(meter: Meter, settings: Settings, args: argparse.Namespace) -> list:
    """Modbus TCP by default, RTU when a serial port is given (see docs/modbus.md)."""
    try:
        from pm4324.protocols.modbus.rtu import RtuServer
        from pm4324.protocols.modbus.tcp import TcpServer, parse_listen
        from pm4324.registers.image import MapBackend
    except ImportError:
        return []
    servers = []
    backend = MapBackend(meter)
    mb = settings.modbus
    if mb.tcp_enabled and not args.no_modbus:
        host, port = args.listen or parse_listen(mb.tcp_listen)
        tcp = TcpServer(backend, unit_id=mb.address, host=host, port=port)
        await tcp.start()
        print(f"Modbus TCP on {host}:{tcp.port} (unit {mb.address})", file=sys.stderr, flush=True)
        servers.append(tcp)
    port_name = args.rtu or mb.serial_port
    if port_name:
        rtu = RtuServer(backend, port_name, address=mb.address, baud=mb.baud,
                        data_format=mb.data_format)
        await rtu.start()
        print(f"Modbus RTU on {port_name} {mb.baud} {mb.data_format} (unit {mb.address})",
              file=sys.stderr, flush=True)
        servers.append(rtu)
    if settings.canopen.interface:  # CANopen (PM-4324-CPS): docs/canopen.md
        from pm4324.protocols.canopen import CanopenBusError, CanopenServer

        co = settings.canopen
        node = CanopenServer(meter, settings)
        try:
            await node.start()
        except CanopenBusError as exc:
            for server in servers:
                await server.stop()
            raise SystemExit(f"pm4324 run: {exc}") from None
        print(f"CANopen node {co.node_id} on {co.interface}:{co.channel} ({co.bitrate} bit/s)",
              file=sys.stderr, flush=True)
        servers.append(node)
    return servers
