"""`pm4324 reset-energy`: zero the energy registers of one Meter or of all, as an explicit,
logged command.

With ``--tcp`` it asks a running meter over Modbus (holding register ``energy_reset``,
0x1013); without, it changes the state file of a meter that is not running (the file is
locked while a meter runs, and the command then says to use ``--tcp``). Either way the
reset is an ``energy_reset`` event in the meter's log.
"""

from __future__ import annotations

import argparse
import sys
import time

RESET_REGISTER = 0x1013
NOT_DURABLE = 4  # exception 04: the meter could not save the reset within 50 ms
NOT_DURABLE_RETRIES = 3


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from pm4324.cli.read_cmd import TCP_PORT_HELP, parse_host_port

    p = subparsers.add_parser(
        "reset-energy",
        help="zero the energy registers of one Meter (and its CTs) or of all",
        description="Zero energy registers: in the state file of a stopped meter, or over "
        "Modbus TCP (--tcp) on a running one. Logged as an energy_reset event.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--meter", type=int, choices=range(1, 9), metavar="M",
                       help="Meter 1..8 (its three CTs too)")
    which.add_argument("--all", action="store_true", help="every Meter and CT")
    p.add_argument("--settings", help="settings TOML of the meter (default: the built-in "
                   "building's)")
    p.add_argument("--tcp", metavar="HOST[:PORT]", type=parse_host_port,
                   help=f"reset a running meter over Modbus TCP ({TCP_PORT_HELP})")
    p.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    value = 9 if args.all else args.meter
    what = "all Meters" if args.all else f"Meter {args.meter} (CT{3 * args.meter - 2}-CT{3 * args.meter})"
    try:
        where = _over_modbus(args, value) if args.tcp else _in_store(args, what)
    except _Failed as exc:
        print(f"pm4324 reset-energy: {exc}", file=sys.stderr)
        return 2
    print(f"energy of {what} reset ({where})")
    return 0


class _Failed(Exception):
    pass


def _over_modbus(args: argparse.Namespace, value: int) -> str:
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ModbusException

    host, port = args.tcp
    client = ModbusTcpClient(host, port=port, timeout=3, retries=1)
    try:
        if not client.connect():
            raise _Failed(f"cannot connect to {host}:{port} (nothing answers there: is the "
                          "meter running? the software meter listens on 127.0.0.1:5020)")
        for _ in range(NOT_DURABLE_RETRIES):
            try:
                rsp = client.write_register(RESET_REGISTER, value, device_id=args.unit)
            except ModbusException as exc:
                raise _Failed(f"{host}:{port}: {exc}") from None
            if not (rsp.isError() and getattr(rsp, "exception_code", None) == NOT_DURABLE):
                break  # 04: applied but not yet on disk within 50 ms; asking again is safe
        if rsp.isError() and getattr(rsp, "exception_code", None) == 1:
            raise _Failed(f"{host}:{port} refused the reset (exception 01): energy reset is not"
                          " permitted to this client; see docs/security.md ([security]"
                          " energy_reset, or a certificate with the role energy-reset)")
        if rsp.isError():
            raise _Failed(f"{host}:{port} refused the reset: {rsp}")
    finally:
        client.close()
    return f"meter at {host}:{port}"


def _in_store(args: argparse.Namespace, what: str) -> str:
    import numpy as np

    from pm4324.cli.cli import _default_settings_path
    from pm4324.config.settings_parse import load_settings
    from pm4324.device.events import Event
    from pm4324.device.store import Store, StoreError, store_location

    settings = load_settings(args.settings or _default_settings_path())
    path, id_path = store_location(settings, args.settings)
    if not path.exists():
        raise _Failed(f"{path}: no state file (the meter has not run with these settings)")
    try:
        store = Store.open(path, id_path, power_up=False)
    except StoreError as exc:
        hint = "; if the meter is running, use --tcp HOST:PORT" if "in use" in str(exc) else ""
        raise _Failed(f"{exc}{hint}") from None
    try:
        for kind, text in store.notes:
            print(f"  {kind}: {text}", file=sys.stderr)
        r = store.restored
        ct, meter = r.ct, r.meter
        if args.all:
            ct.reset()
            meter.reset()
        else:
            ct.reset(slice(3 * (args.meter - 1), 3 * args.meter))
            meter.reset(np.array([args.meter - 1]))
        event = Event(time.time(), r.boot, r.second, "energy_reset",
                      f"{what} (pm4324 reset-energy, meter stopped)")
        store.save(r.second, ct, meter, r.relays, r.latched, [event])
    except StoreError as exc:
        raise _Failed(str(exc)) from None
    finally:
        store.close()
    return f"state file {path}"
