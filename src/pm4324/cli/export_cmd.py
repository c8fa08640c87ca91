"""`pm4324 export KIND`: an integration file for a tool that polls the meter (docs/integrations.md).

Generated from the register table and the meter's settings (model, wiring, word order,
circuit names), so it lists exactly the registers this meter serves.
"""

from __future__ import annotations

import argparse
import sys


def _kinds() -> tuple[str, ...]:
    from pm4324.registers.exports.formats import KINDS

    return tuple(KINDS)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="write an integration file (Home Assistant, Telegraf, evcc, Node-RED, Grafana, map)",
        description="Write a configuration for a tool that polls this meter over Modbus TCP, "
        "generated from the register table and the settings (model, wiring, word order, names).")
    p.add_argument("kind", choices=_kinds(), help="what to write")
    p.add_argument("--settings", help="the meter's settings TOML (default: the simulated building's)")
    p.add_argument("--host", default="127.0.0.1", help="the meter's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5020, help="Modbus TCP port (default 5020)")
    p.add_argument("--unit", type=int, default=None, help="unit id (default: the settings' address)")
    p.add_argument("--name", default="pm4324", help="name of the meter in the file (default pm4324)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pm4324.cli.cli import _default_settings_path
    from pm4324.cli.registers_cmd import write_output
    from pm4324.config.settings_parse import load_settings
    from pm4324.registers.exports.formats import KINDS, Target

    settings = load_settings(args.settings or _default_settings_path())
    if not 0 < args.port < 65536:
        print(f"pm4324 export: --port {args.port}: a TCP port is 1..65535", file=sys.stderr)
        return 2
    unit = settings.modbus.address if args.unit is None else args.unit
    target = Target(host=args.host, port=args.port, unit=unit, name=args.name)
    make, _ = KINDS[args.kind]
    status = write_output(make(settings, target), args.output, "export")
    if status == 0 and args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return status
