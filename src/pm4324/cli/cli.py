"""`pm4324` command line: run the meter, analyze recordings, state expected values, read meters.

Every command turns bad input into one clear line on stderr and exit code 2; tracebacks are
for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
from collections.abc import Callable

from pm4324.config.settings import SettingsError
from pm4324.config.settings_parse import load_settings
from pm4324.sources.base import SourceError

DEFAULT_SETTINGS = "building-settings.toml"
HARMONICS_HELP = ("with --json: add the harmonic rms and angle of orders 0-50 of each phase"
                  " voltage and CT current (docs/json.md)")


def _default_settings_path() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent / "data" / DEFAULT_SETTINGS)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _seconds_into(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time from 0 seconds on, e.g. --at 5")
    return value


def _listen(text: str) -> tuple[str, int]:
    from pm4324.protocols.modbus.tcp import parse_listen

    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- run ---------------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the meter (the simulated building by default)")
    p.add_argument("--settings", help="settings TOML (default: the simulated building's)")
    p.add_argument("--scenario", help="simulator scenario TOML (default: the built-in building)")
    p.add_argument("--source", help="an installed ADC plug-in instead of the simulator")
    p.add_argument("--speed", type=_positive, default=1.0, help="run N times faster than real time")
    p.add_argument("--seconds", type=_positive, help="stop after this many seconds of measurement")
    p.add_argument("--json", action="store_true", help="one JSON object per second, no table")
    p.add_argument("--harmonics", action="store_true", help=HARMONICS_HELP)
    p.add_argument("--meter", type=int, action="append", choices=range(1, 9), metavar="M",
                   help="show only these Meters (repeatable)")
    p.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                   help="Modbus TCP address (default from settings: 127.0.0.1:5020)")
    p.add_argument("--no-modbus", action="store_true", help="do not start the Modbus TCP server")
    p.add_argument("--allow-exposed-writes", action="store_true",
                   help="allow plain Modbus TCP on every interface although other hosts may write"
                   " (docs/security.md)")
    p.add_argument("--rtu", metavar="DEVICE", help="serve Modbus RTU on this serial device")
    p.add_argument("--http", type=_listen, nargs="?", const=("127.0.0.1", 8080), metavar="HOST:PORT",
                   help="serve the dashboard, the HTTP API and /metrics (bare: 127.0.0.1:8080)")
    p.add_argument("--reset-store", action="store_true",
                   help="start a new state file with zero energy (the old one is kept aside)")
    p.add_argument("--mqtt", type=_mqtt_url, metavar="URL",
                   help="publish to this MQTT broker (mqtt://HOST[:PORT]; overrides [mqtt] url; "
                   "docs/mqtt.md)")
    p.add_argument("--fault-log", metavar="FILE",
                   help="append each fault's start and end to FILE as JSON lines (docs/faults.md)")
    p.set_defaults(func=_run)


def _harmonics_without_json(args: argparse.Namespace) -> bool:
    if args.harmonics and not args.json:
        print(f"pm4324 {args.command}: error: --harmonics adds to the JSON output: use it with"
              " --json", file=sys.stderr)
        return True
    return False


def _mqtt_url(text: str) -> str:
    from pm4324.config.mqtt_settings import url_problem

    if problem := url_problem(text):
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _run(args: argparse.Namespace) -> int:
    from pm4324.app import run_meter

    if _harmonics_without_json(args):
        return 2
    settings_path = args.settings or _default_settings_path()
    settings = load_settings(settings_path)
    if args.mqtt:
        from dataclasses import replace

        settings = replace(settings, mqtt=replace(settings.mqtt, url=args.mqtt))
    try:  # uvloop where installed: Modbus TCP with one client 12k -> 21k req/s (docs/benchmarks.md)
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    return run_loop(run_meter(settings, args, settings_path=args.settings))


# -- analyze -----------------------------------------------------------------------------------


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="replay a recording (COMTRADE or CSV) and print readings")
    p.add_argument("file", help="recording: .cfg/.cff (COMTRADE) or .csv")
    p.add_argument("--settings", required=True,
                   help="settings TOML with a [replay.inputs] map (see docs/replay.md)")
    p.add_argument("--json", action="store_true", help="one JSON object per reading")
    p.add_argument("--harmonics", action="store_true", help=HARMONICS_HELP)
    p.add_argument("--meter", type=int, action="append", choices=range(1, 9), metavar="M")
    p.set_defaults(func=_analyze)


def _analyze(args: argparse.Namespace) -> int:
    from pm4324.app import limit_blas_threads
    from pm4324.cli.display import render_table
    from pm4324.device.meter import Meter
    from pm4324.sources.recording import open_recording
    from pm4324.sources.replay import ReplaySource

    if _harmonics_without_json(args):
        return 2
    limit_blas_threads()
    settings = load_settings(args.settings)
    recording = open_recording(args.file)
    source = ReplaySource(recording, settings)
    start = recording.start_time.timestamp() if recording.start_time else 0.0
    meter = Meter(settings, source, start_time=start, harmonic_angles=args.harmonics)
    readings = 0
    while (snap := meter.step()) is not None:
        if snap.duration_s <= 0:
            continue
        readings += 1
        d = snap.to_dict(args.meter or _mapped_meters(settings), harmonics=args.harmonics)
        d["relays"] = []  # a replay drives no relays: their state would mean nothing
        print(json.dumps(d) if args.json else render_table(d) + "\n", flush=True)
    if readings == 0:
        raise SourceError(f"{args.file}: no whole cycle found: the recording is shorter than one"
                          " cycle or the mapped voltage is absent")
    return 0


def _mapped_meters(settings) -> list[int]:
    cts = [int(k[2:]) for k in settings.replay.inputs if k.startswith("CT")]
    return sorted({(c - 1) // 3 + 1 for c in cts}) or [1]


# -- expected ----------------------------------------------------------------------------------


def _add_expected(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("expected", help="print a scenario's exact expected per-CT values")
    p.add_argument("--scenario", help="scenario TOML (default: the built-in building)")
    p.add_argument("--settings", help="settings TOML (default: the simulated building's)")
    p.add_argument("--at", type=_seconds_into, default=0.0,
                   help="time into the scenario, seconds (default 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_expected)


def _expected(args: argparse.Namespace) -> int:
    from pm4324.sources.scenario_parse import load_scenario

    settings = load_settings(args.settings or _default_settings_path())
    rows = load_scenario(args.scenario).expected(settings, args.at)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'CT':>3} {'V rms':>10} {'I rms A':>10} {'P W':>12} {'Q1 var':>12}")
    for r in rows:
        print(f"{r['ct']:>3} {r['v_rms']:>10.3f} {r['i_rms']:>10.4f} {r['p_w']:>12.3f}"
              f" {r['q_var']:>12.3f}")
    return 0


# -- entry point -------------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pm4324")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pm4324", description="A software PM-4324 power meter")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the meter does")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_analyze(sub)
    _add_expected(sub)
    for module in ("read_cmd", "registers_cmd", "export_cmd", "events_cmd", "energy_cmd",
                   "audit_cmd", "certs_cmd", "token_cmd", "history_cmd", "hub_cmd", "set_cmd",
                   "bill_cmd", "fleet_cmd", "fault_cmd",
                   "check_wiring_cmd", "pq_report_cmd"):
        try:
            mod = __import__(f"pm4324.cli.{module}", fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (SettingsError, SourceError) as exc:
        print(f"pm4324: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
