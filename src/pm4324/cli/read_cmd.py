"""`pm4324 read`: read a PM-4324 over Modbus TCP or RTU (or CANopen) and show it as `run` does.

Exit codes: 0 read, 1 connected but every request was refused, 2 cannot connect / timeout.
``--canopen INTERFACE:CHANNEL --node N`` reads a PM-4324-CPS instead (``client.canopen``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from pm4324.client.modbus import (
    DEFAULT_TCP_PORT,
    ReadError,
    modbus_reader,
    read_reading,
)
from pm4324.client.modbus import parse_host_port as _parse_host_port
from pm4324.config.settings import BAUD_RATES, DATA_FORMATS, WORD_ORDERS

#: every command that takes --tcp says the same (and uses the same default port)
TCP_PORT_HELP = (f"port {DEFAULT_TCP_PORT}, the Modbus standard, if not given; the software "
                 "meter listens on 127.0.0.1:5020")


def parse_host_port(text: str, default_port: int = DEFAULT_TCP_PORT) -> tuple[str, int]:
    """argparse type for ``HOST[:PORT]``."""
    try:
        return _parse_host_port(text, default_port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _unit(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"{text!r}: a unit id is 0..255")
    return int(text)


def _client(args: argparse.Namespace) -> tuple[Any, str]:
    from pymodbus.client import ModbusSerialClient, ModbusTcpClient

    if args.tcp:
        host, port = args.tcp
        client = ModbusTcpClient(host, port=port, timeout=args.timeout, retries=1)
        return client, f"{host}:{port}"
    fmt = args.data_format
    client = ModbusSerialClient(args.rtu, baudrate=args.baud, bytesize=8, parity=fmt[0],
                                stopbits=int(fmt[2]), timeout=args.timeout, retries=1)
    return client, args.rtu


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "read",
        help="read a PM-4324 (real or software) over Modbus or CANopen and show its values",
        description="Read a PM-4324 over Modbus TCP or RTU, or over CANopen (SDO), and show the "
        "same table as `run` (or, with --json, the same keys as `analyze --json`).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST[:PORT]", type=parse_host_port,
                       help=f"Modbus TCP device ({TCP_PORT_HELP})")
    where.add_argument("--rtu", metavar="DEVICE", help="Modbus RTU serial device, e.g. /dev/ttyUSB0")
    where.add_argument("--canopen", metavar="INTERFACE:CHANNEL", type=_canopen_bus,
                       help="CANopen over python-can, e.g. socketcan:can0 or "
                       "udp_multicast:239.74.163.2 (see docs/canopen.md)")
    p.add_argument("--node", type=_node_id, default=1, help="CANopen node-ID 1..127 (default 1)")
    p.add_argument("--baud", type=int, default=19200, choices=BAUD_RATES, help="RTU baud rate")
    p.add_argument("--format", dest="data_format", default="N81", choices=DATA_FORMATS,
                   help="RTU parity, data and stop bits (default N81)")
    p.add_argument("--unit", type=_unit, default=1, help="Modbus unit id / address (default 1)")
    p.add_argument("--meter", type=int, action="append", choices=range(1, 9), metavar="M",
                   help="read only these Meters (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object, keys as `analyze`")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per request (default 3)")
    p.add_argument("--word-order", choices=WORD_ORDERS, default=WORD_ORDERS[0],
                   help="32-bit word order the device uses (default low-first)")
    p.add_argument("--watch", action="store_true", help="read again every second, refreshing "
                   "the table in place (Ctrl-C stops)")
    p.add_argument("--count", type=_count, help="with --watch: stop after N readings")
    p.set_defaults(func=run)
    return p


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a count is 1 or more")
    return int(text)


def _canopen_bus(text: str) -> tuple[str, str]:
    from pm4324.client.canopen import parse_canopen

    try:
        return parse_canopen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _node_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 127:
        raise argparse.ArgumentTypeError(f"{text!r}: a CANopen node-ID is 1..127")
    return int(text)


def _show(d: dict[str, Any], as_json: bool, kwh_resolution: float | None = None) -> None:
    if as_json:
        print(json.dumps(d))
    else:
        from pm4324.cli.display import digits_for, render_table

        print(render_table(d, energy_digits=digits_for(kwh_resolution)))


def _has_values(d: Any) -> bool:
    """Whether any measured value (not a key or number) came back."""
    if isinstance(d, dict):
        return any(_has_values(v) for k, v in d.items() if k not in ("ct", "meter", "main"))
    if isinstance(d, list):
        return any(_has_values(v) for v in d)
    return d is not None and d != []


def run_canopen(args: argparse.Namespace) -> int:
    """`read --canopen`: SDO uploads from one node (exit codes as for Modbus)."""
    try:
        from pm4324.client.canopen import read_canopen
    except ImportError:
        print("pm4324 read: needs canopen (pip install canopen==2.4.1)", file=sys.stderr)
        return 2
    interface, channel = args.canopen
    try:
        d = read_canopen(interface, channel, args.node, args.meter, timeout=args.timeout)
    except ReadError as exc:
        print(f"pm4324 read: {exc}", file=sys.stderr)
        return 2
    if not _has_values(d):
        print(f"pm4324 read: node {args.node} on {interface}:{channel} refused every object "
              "(SDO aborts): is it a PM-4324-CPS?", file=sys.stderr)
        return 1
    _show(d, args.json)
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "watch", False):
        from pm4324.cli.read_watch import watch

        return watch(args)
    if getattr(args, "canopen", None):
        if not getattr(args, "verbose", False):  # aborts are reported in one line of ours
            logging.getLogger("canopen").setLevel(logging.CRITICAL)
        return run_canopen(args)
    try:
        client, where = _client(args)
    except ImportError:
        print("pm4324 read: needs pymodbus (pip install pymodbus==3.16.1)", file=sys.stderr)
        return 2
    pymodbus_log = logging.getLogger("pymodbus")
    level = pymodbus_log.level
    if not getattr(args, "verbose", False):
        pymodbus_log.setLevel(logging.CRITICAL)  # we report errors ourselves, in one line
    try:
        if not client.connect():
            print(f"pm4324 read: {_why_not_connected(args, where)}", file=sys.stderr)
            return 2
        reader = modbus_reader(client, args.unit, where)
        reading = read_reading(reader, args.meter, args.word_order)
    except ReadError as exc:
        print(f"pm4324 read: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
        pymodbus_log.setLevel(level)
    if reading is None:
        print(f"pm4324 read: {where} unit {args.unit} refused every request (exception "
              "responses): is it a PM-4324?", file=sys.stderr)
        return 1
    _show(reading.values, args.json, reading.kwh_resolution)
    return 0


def _why_not_connected(args: argparse.Namespace, where: str) -> str:
    """pymodbus only says it failed: open the port ourselves to learn why."""
    if args.tcp:
        return (f"cannot connect to {where} (nothing answers there: is the meter running? "
                "the software meter listens on 127.0.0.1:5020)")
    import serial

    from pm4324.cli.errors import serial_problem

    fmt = args.data_format
    try:
        serial.Serial(args.rtu, baudrate=args.baud, bytesize=8, parity=fmt[0],
                      stopbits=int(fmt[2])).close()
    except Exception as exc:  # SerialException, termios.error, ValueError: all say why
        return serial_problem(args.rtu, exc, f"{args.baud} {fmt}")
    return f"cannot open {args.rtu} ({args.baud} {fmt})"
