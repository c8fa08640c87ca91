"""`pm4324 check-wiring`: is every CT wired as the settings say? (docs/wiring-check.md)

Reads a few seconds of a running meter (ours or a real one) over Modbus TCP or RTU or
CANopen, or runs
the local simulation (a scenario and settings, as `pm4324 run` would), and gives a verdict
per main and CT in plain words with the settings change that fixes it where one can.
Exit codes: 0 no wiring fault, 1 faults found, 2 bad input or no connection.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pm4324.config.settings import BAUD_RATES, DATA_FORMATS, WORD_ORDERS
from pm4324.config.settings_parse import load_settings
from pm4324.snapshot import Snapshot
from pm4324.wiring_check import WiringReport, check_wiring


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from pm4324.cli.read_cmd import TCP_PORT_HELP, _canopen_bus, _node_id, _unit, parse_host_port

    p = subparsers.add_parser("check-wiring", help="check each CT's wiring (reversed, wrong "
                              "phase, open) from a few seconds of readings",
                              description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--tcp", metavar="HOST[:PORT]", type=parse_host_port,
                       help=f"a running meter over Modbus TCP ({TCP_PORT_HELP})")
    where.add_argument("--rtu", metavar="DEVICE", help="a running meter over Modbus RTU")
    where.add_argument("--canopen", metavar="INTERFACE:CHANNEL", type=_canopen_bus,
                       help="a running PM-4324-CPS over CANopen, e.g. socketcan:can0")
    p.add_argument("--node", type=_node_id, default=1, help="CANopen node-ID (default 1)")
    p.add_argument("--settings", help="settings TOML: the wiring as it should be, CT ratings "
                   "and [cts.N] expectations (default: the simulated building's)")
    p.add_argument("--scenario", help="without --tcp/--rtu: the scenario to simulate "
                   "(default: the built-in building)")
    p.add_argument("--seconds", type=int, default=3, choices=range(1, 61), metavar="N",
                   help="seconds of readings (default 3)")
    p.add_argument("--baud", type=int, default=19200, choices=BAUD_RATES)
    p.add_argument("--format", dest="data_format", default="N81", choices=DATA_FORMATS)
    p.add_argument("--unit", type=_unit, default=1, help="Modbus unit id (default 1)")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--word-order", choices=WORD_ORDERS, default=WORD_ORDERS[0])
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--all", action="store_true", help="also list CTs the wiring does not use")
    p.set_defaults(func=run)
    return p


class _Failed(Exception):
    pass


def _simulated(args: argparse.Namespace, settings_path: str) -> list[Snapshot]:
    from pm4324.app import limit_blas_threads
    from pm4324.device.meter import Meter
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.simulator import SimulatorSource

    limit_blas_threads()
    settings = load_settings(settings_path)
    meter = Meter(settings, SimulatorSource(load_scenario(args.scenario), settings),
                  start_time=0.0)
    snaps = [meter.step() for _ in range(args.seconds + 1)]
    return [s for s in snaps[1:] if s is not None]  # the first second settles the cycles


def _remote(args: argparse.Namespace) -> list[Snapshot]:
    import logging

    from pm4324.cli.read_cmd import _client, _why_not_connected
    from pm4324.client.modbus import ReadError, modbus_reader, read_meter
    from pm4324.client.snapshot import snapshot_from_dict

    client, where = _client(args)
    pymodbus_log = logging.getLogger("pymodbus")
    level = pymodbus_log.level
    pymodbus_log.setLevel(logging.CRITICAL)  # one line of ours instead, while we read
    snaps: list[Snapshot] = []
    try:
        if not client.connect():
            raise _Failed(_why_not_connected(args, where))
        reader = modbus_reader(client, args.unit, where)
        for n in range(args.seconds):
            if n:
                time.sleep(1.0)  # one reading per second of the meter
            d = read_meter(reader, None, args.word_order)
            if d is None:
                raise _Failed(f"{where} unit {args.unit} refused every request: is it a PM-4324?")
            snaps.append(snapshot_from_dict(d))
    except ReadError as exc:
        raise _Failed(str(exc)) from None
    finally:
        client.close()
        pymodbus_log.setLevel(level)
    return snaps


def _canopen(args: argparse.Namespace) -> list[Snapshot]:
    from pm4324.client.canopen import read_canopen
    from pm4324.client.modbus import ReadError
    from pm4324.client.snapshot import snapshot_from_dict

    interface, channel = args.canopen
    snaps = []
    try:
        for n in range(args.seconds):
            if n:
                time.sleep(1.0)  # one reading per second of the meter
            snaps.append(snapshot_from_dict(read_canopen(interface, channel, args.node,
                                                         timeout=args.timeout)))
    except ReadError as exc:
        raise _Failed(str(exc)) from None
    return snaps


def run(args: argparse.Namespace) -> int:
    from pm4324.cli.cli import _default_settings_path

    settings_path = args.settings or _default_settings_path()
    try:
        if args.tcp or args.rtu or args.canopen:
            snaps = _canopen(args) if args.canopen else _remote(args)
            # the wire carries the wiring modes; ratings and expectations come from the file
            report = check_wiring(snaps, load_settings(args.settings) if args.settings else None)
        else:
            report = check_wiring(_simulated(args, settings_path), load_settings(settings_path))
    except _Failed as exc:
        print(f"pm4324 check-wiring: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()) if args.json else render(report, args.all))
    return 1 if report.problems else 0


def render(report: WiringReport, show_unused: bool = False) -> str:
    lines = [f"Wiring check over {report.seconds} s"]
    lines += [m.text for m in report.mains]
    lines += [c.text for c in report.cts if show_unused or c.status != "unused"]
    fixes: dict[str, list[str]] = {}
    for c in report.cts:
        if c.status in ("reversed", "wrong_phase"):
            for f in c.fix:
                section, _, line = f.partition("] ")
                if line:
                    fixes.setdefault(section + "]", []).append(line)
    n = report.problems
    lines.append(f"{n} wiring problem{'s' if n != 1 else ''}" if n else "No wiring problem found")
    if fixes:
        lines.append("In the settings file, these fix what a setting can fix:")
        lines += [f"  {section}\n" + "\n".join(f"  {x}" for x in body)
                  for section, body in fixes.items()]
    return "\n".join(lines)


