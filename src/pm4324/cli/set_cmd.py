"""`pm4324 set`: configure a PM-4324 over Modbus or CANopen the way the vendor utility does.

``pm4324 set --tcp HOST[:PORT] meters.2.ct_ratio=200 meters.2.wiring=3P3W-3CT relays.1=closed``
``pm4324 set --canopen socketcan:can0 --node 5 meters.2.ct_ratio=200``

1. Every assignment is checked first, by the settings file's own validation (the same
   ranges, names and cross-key rules as a settings TOML): one bad key and nothing is sent.
2. Each is written to the register the register table gives it (holding registers for
   settings, coils for relay states), one request per key; over CANopen, by SDO download to
   the object our EDS gives that register (the same raw number).
3. Each is read back and compared. One line per key says what happened; a device that
   refuses (an exception response, e.g. a relay in alarm mode) gets a line saying so.

Exit codes: 0 all written and read back, 1 some refused or read back different, 2 bad input
or no connection. Keys: ``meters.N.ct_ratio``, ``meters.N.wiring``, ``mains.N.pt_ratio``,
``relays.N.mode|power_up|combine``, ``modbus.word_order``, ``relays.N=open|closed``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from dataclasses import dataclass
from typing import Any

from pm4324.config.settings import BAUD_RATES, DATA_FORMATS, Settings, SettingsError
from pm4324.config.settings_parse import parse_settings
from pm4324.registers.codecs import decode, encode
from pm4324.registers.image import _setting
from pm4324.registers.table import Point, load_map


@dataclass(frozen=True)
class Change:
    key: str
    text: str  # as the user wrote the value
    point: Point
    raw: int  # the register number to write (coil: 0/1)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from pm4324.cli.read_cmd import _canopen_bus, _node_id, _unit, parse_host_port

    p = subparsers.add_parser("set", help="change a PM-4324's settings or relays over Modbus "
                              "(validated first, read back after)",
                              description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST[:PORT]", type=parse_host_port)
    where.add_argument("--rtu", metavar="DEVICE", help="RS-485 serial device")
    where.add_argument("--canopen", metavar="INTERFACE:CHANNEL", type=_canopen_bus,
                       help="CANopen over python-can, e.g. socketcan:can0 (SDO)")
    p.add_argument("--node", type=_node_id, default=1, help="CANopen node-ID 1..127 (default 1)")
    p.add_argument("--baud", type=int, default=19200, choices=BAUD_RATES)
    p.add_argument("--format", dest="data_format", default="N81", choices=DATA_FORMATS)
    p.add_argument("--unit", type=_unit, default=1, help="Modbus unit id (default 1)")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(func=run)
    return p


class BadInput(Exception):
    pass


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: 3P3W-3CT, alarm, closed


def plan(assignments: list[str]) -> list[Change]:
    """Validate every assignment with the settings file's rules; raise BadInput on the first."""
    rm = load_map()
    fragment: dict[str, Any] = {}
    relay_states: list[tuple[str, str, int]] = []
    keys: list[tuple[str, str]] = []
    for item in assignments:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise BadInput(f"{item!r}: expected KEY=VALUE, e.g. meters.2.ct_ratio=200")
        parts = key.split(".")
        if len(parts) == 2 and parts[0] == "relays" and parts[1] in ("1", "2"):
            if text not in ("open", "closed"):
                raise BadInput(f"{key} = {text!r}: a relay is open or closed")
            relay_states.append((key, text, int(parts[1])))
            continue
        node = fragment
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BadInput(f"{key}: conflicts with another assignment")
        node[parts[-1]] = _value(text)
        keys.append((key, text))
    settings = Settings()
    if fragment:
        if "mains" in fragment and "model" not in fragment:
            fragment["model"] = "PM-4324A"  # allow mains.2 (the device refuses it if it has none)
        try:
            settings = parse_settings(fragment, "pm4324 set")
        except SettingsError as exc:
            raise BadInput(f"{exc.key} = {exc.value!r}: {exc.allowed}") from None
    changes = []
    for key, text in keys:
        point = next((p for p in rm.points if p.table == "holding" and p.source.text == f"setting:{key}"),
                     None)
        if point is None or not point.writable:
            raise BadInput(f"{key}: not a setting `set` can change (see docs/hub.md)")
        native = _setting(point.source, settings)
        changes.append(Change(key, text, point, round(native * point.factor / point.scale)))
    for key, text, k in relay_states:
        point = next(p for p in rm.points if p.table == "coil" and p.source.text == f"relay:{k}")
        changes.append(Change(key, text, point, int(text == "closed")))
    return changes


def run(args: argparse.Namespace) -> int:
    from pymodbus.exceptions import ModbusException

    from pm4324.cli.read_cmd import _client

    try:
        changes = plan(args.assignments)
    except BadInput as exc:
        print(f"pm4324 set: {exc} (nothing was sent)", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        logging.getLogger("canopen").setLevel(logging.CRITICAL)
    if getattr(args, "canopen", None):
        return _run_canopen(args, changes)
    client, where = _client(args)
    try:
        if not client.connect():
            print(f"pm4324 set: cannot connect to {where}", file=sys.stderr)
            return 2
        failed = 0
        for change in changes:
            try:
                ok, line = _apply(client, args.unit, change)
            except ModbusException:
                print(f"pm4324 set: {where}: no answer from unit {args.unit}", file=sys.stderr)
                return 2
            failed += not ok
            print(line, file=sys.stdout if ok else sys.stderr)
    finally:
        client.close()
    return 1 if failed else 0


def _apply(client: Any, unit: int, c: Change) -> tuple[bool, str]:
    p = c.point
    if p.table == "coil":
        rsp = client.write_coil(p.address, bool(c.raw), device_id=unit)
        if rsp.isError():
            return False, f"{c.key} = {c.text}: refused by the device ({_why(rsp)})"
        back = client.read_coils(p.address, count=1, device_id=unit)
        got = None if back.isError() else int(back.bits[0])
    else:
        words = encode(p.type, c.raw)
        rsp = client.write_registers(p.address, words, device_id=unit)
        if rsp.isError():
            return False, f"{c.key} = {c.text}: refused by the device ({_why(rsp)})"
        back = client.read_holding_registers(p.address, count=p.size, device_id=unit)
        got = None if back.isError() else int(decode(p.type, list(back.registers)))
    if got != c.raw:
        return False, f"{c.key} = {c.text}: written, but reads back {got} instead of {c.raw}"
    return True, f"{c.key} = {c.text}: written and read back ({p.name}, {p.table} 0x{p.address:04X})"


def _run_canopen(args: argparse.Namespace, changes: list[Change]) -> int:
    from canopen.sdo.exceptions import SdoCommunicationError

    from pm4324.client.canopen import remote_node
    from pm4324.client.modbus import ReadError

    interface, channel = args.canopen
    where = f"{interface}:{channel} node {args.node}"
    try:
        with remote_node(interface, channel, args.node, timeout=args.timeout) as (remote, od):
            failed = 0
            for change in changes:
                try:
                    ok, line = _apply_sdo(remote, od, change)
                except SdoCommunicationError:
                    print(f"pm4324 set: {where} stopped answering", file=sys.stderr)
                    return 2
                failed += not ok
                print(line, file=sys.stdout if ok else sys.stderr)
    except ReadError as exc:
        print(f"pm4324 set: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _apply_sdo(remote: Any, od: Any, c: Change) -> tuple[bool, str]:
    """Download the raw number to the point's object, upload it back and compare."""
    from canopen.sdo.exceptions import SdoAbortedError

    from pm4324.protocols.canopen.objects import decode as od_decode
    from pm4324.protocols.canopen.objects import encode as od_encode

    entry = od.by_point.get(c.point)
    if entry is None:
        return False, f"{c.key} = {c.text}: no CANopen object carries it"
    try:
        remote.sdo.download(entry.index, entry.sub, od_encode(entry.data_type, c.raw))
    except SdoAbortedError as exc:
        return False, f"{c.key} = {c.text}: refused by the device (SDO abort {exc})"
    try:
        got = int(od_decode(entry.data_type, remote.sdo.upload(entry.index, entry.sub)))
    except SdoAbortedError as exc:
        return False, f"{c.key} = {c.text}: written, but cannot be read back (SDO abort {exc})"
    if got != c.raw:
        return False, f"{c.key} = {c.text}: written, but reads back {got} instead of {c.raw}"
    return True, f"{c.key} = {c.text}: written and read back (0x{entry.index:04X}:{entry.sub})"


def _why(rsp: Any) -> str:
    code = getattr(rsp, "exception_code", None)
    texts = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
             4: "device failure"}
    return f"exception {code}: {texts.get(code, 'refused')}" if code else "refused"
