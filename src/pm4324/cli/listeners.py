"""Starting the protocol servers of `pm4324 run` with the security settings applied: the
plain Modbus/TCP listener, the one in the other word order, the Modbus/TCP Security (TLS)
listener, RTU and CANopen, all writing through one ``Guard`` (docs/security.md)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from pm4324.cli.errors import listen_problem, serial_problem
from pm4324.config.security_settings import ListenerAccess, TlsSettings
from pm4324.config.settings import Settings
from pm4324.device.meter import Meter
from pm4324.protocols.faults import ProtocolFaults
from pm4324.registers.map_backend import MapBackend
from pm4324.security import exposure


class ServerStartError(Exception):
    """A protocol server could not start (the message is one sentence for the user)."""


@dataclass(frozen=True)
class Listener:
    kind: str
    host: str
    port: int
    access: ListenerAccess
    tls: bool = False
    word_order: str | None = None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fail(text: str) -> NoReturn:
    """Bad settings or options: one line on stderr, exit code 2."""
    _say(text)
    raise SystemExit(2)


def _beside(tls: TlsSettings, settings: Settings) -> TlsSettings:
    """TLS file names relative to the settings file's directory (as ``[store] path``)."""
    home = Path(settings.source_path).resolve().parent if Path(settings.source_path).is_file() \
        else Path.cwd()
    return replace(tls, **{name: str(home / Path(getattr(tls, name)).expanduser())
                           for name in ("certificate", "key", "ca", "crl")
                           if getattr(tls, name)})


def plan_tcp(settings: Settings, args: argparse.Namespace) -> list[Listener]:
    """The TCP listeners these settings and options ask for (checked, not started)."""
    from pm4324.protocols.modbus.tcp import parse_listen

    mb, sec = settings.modbus, settings.security
    plan = []
    if mb.tcp_enabled and not args.no_modbus:
        if not sec.tls.enabled or sec.tls.plain_tcp:
            host, port = args.listen or parse_listen(mb.tcp_listen)
            plan.append(Listener("Modbus TCP", host, port, sec.tcp))
        if mb.tcp_listen_other_order:
            host, port = parse_listen(mb.tcp_listen_other_order)
            plan.append(Listener(f"Modbus TCP ({mb.other_word_order})", host, port, sec.tcp,
                                  word_order=mb.other_word_order))
        if sec.tls.enabled:
            tls = _beside(sec.tls, settings)
            for name in ("certificate", "key", "ca", "crl"):
                path = getattr(tls, name)
                if path and not Path(path).is_file():
                    _fail(f"pm4324 run: [security.tls] {name} = {getattr(sec.tls, name)!r}: no such"
                          f" file ({path})")
            host, port = parse_listen(sec.tls.listen)
            plan.append(Listener("Modbus/TCP Security (TLS)", host, port, sec.tls.access,
                                  tls=True))
    for listener in plan:
        for line in exposure.describe(listener.kind, listener.host, listener.port, sec,
                                      listener.access, listener.tls):
            _say(line)
        if exposure.needs_flag(listener.host, sec, listener.access, listener.tls) and \
                not getattr(args, "allow_exposed_writes", False):
            _fail(
                f"pm4324 run: {listener.kind} on {listener.host or '*'}:{listener.port} would let"
                f" any host in {', '.join(listener.access.allow)} write without TLS (modbus_tcp ="
                f" \"{sec.policy['modbus_tcp']}\"); pass --allow-exposed-writes if that is meant,"
                " or set [security] modbus_tcp = \"read-only\", or use [security.tls]")
    return plan


async def start_servers(meter: Meter, settings: Settings, args: argparse.Namespace,
                        backend: MapBackend, plan: list[Listener], servers: list,
                        faults: ProtocolFaults | None = None) -> None:
    """Modbus TCP by default, TLS and the other word order when set, RTU when a serial port
    is given, CANopen when an interface is (see docs/modbus.md, docs/security.md), all with
    the meter's protocol ``faults``. Each started server is appended to ``servers``, so the
    caller stops those that did start."""
    from pm4324.protocols.modbus.access import SourceControl
    from pm4324.protocols.modbus.rtu import RtuServer
    from pm4324.protocols.modbus.tcp import TcpServer
    mb = settings.modbus
    for listener in plan:
        ssl_context = None
        if listener.tls:
            from pm4324.protocols.modbus.tls import server_context

            try:
                ssl_context = server_context(_beside(settings.security.tls, settings))
            except OSError as exc:  # ssl.SSLError is an OSError
                raise ServerStartError(f"[security.tls]: {exc}") from None
        tcp = TcpServer(backend, unit_id=mb.address, host=listener.host, port=listener.port,
                        ssl_context=ssl_context, word_order=listener.word_order,
                        access=SourceControl(listener.access), faults=faults)
        try:
            await tcp.start()
        except OSError as exc:
            raise ServerStartError(listen_problem(listener.host, listener.port, exc)) from None
        _say(f"{listener.kind} on {listener.host}:{tcp.port} (unit {mb.address})")
        servers.append(tcp)
    port_name = args.rtu or mb.serial_port
    if port_name:
        rtu = RtuServer(backend, port_name, address=mb.address, baud=mb.baud,
                        data_format=mb.data_format, faults=faults)
        try:
            await rtu.start()
        except Exception as exc:  # pyserial: SerialException / ValueError around an OSError
            await rtu.stop()
            raise ServerStartError(serial_problem(port_name, exc,
                                                  f"{mb.baud} {mb.data_format}")) from None
        _say(f"Modbus RTU on {port_name} {mb.baud} {mb.data_format} (unit {mb.address})")
        servers.append(rtu)
    if settings.canopen.interface:  # CANopen (PM-4324-CPS): docs/canopen.md
        from pm4324.protocols.canopen import CanopenBusError, CanopenServer
        from pm4324.protocols.canopen.storage import node_files

        co = settings.canopen
        parameters, serial = node_files(settings, meter.settings_path)
        node = CanopenServer(meter, settings, backend=backend, serial_number=serial,
                             parameters=parameters, faults=faults)
        try:
            await node.start()
        except CanopenBusError as exc:
            raise ServerStartError(str(exc)) from None
        _say(f"CANopen node {node.node_id} on {co.interface}:{co.channel} ({node.bitrate} "
             f"bit/s, serial number 0x{serial:08X})")
        servers.append(node)
