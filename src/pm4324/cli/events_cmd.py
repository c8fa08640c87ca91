"""`pm4324 events`: the meter's event log (relay changes, alarms, settings changes, energy
resets, power-ups), read from its state file; works while the meter runs."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "events",
        help="show the meter's event log (relays, alarms, settings, energy resets, power-ups)",
        description="Print the event log kept in the state file of the meter that runs with "
        "these settings (the same file `pm4324 run` names on stderr).",
    )
    p.add_argument("--settings", help="settings TOML the meter runs with (default: the built-in "
                   "building's, whose state is in $XDG_STATE_HOME/pm4324)")
    p.add_argument("--last", type=int, metavar="N", help="only the newest N events")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pm4324.cli.cli import _default_settings_path
    from pm4324.config.settings_parse import load_settings
    from pm4324.device.events import format_events
    from pm4324.device.store import StoreError, read_events, store_location

    if args.last is not None and args.last < 1:
        print("pm4324 events: --last must be 1 or more", file=sys.stderr)
        return 2
    settings = load_settings(args.settings or _default_settings_path())
    path, _ = store_location(settings, args.settings)
    try:
        events = read_events(path, args.last)
    except StoreError as exc:
        print(f"pm4324 events: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(format_events(events, args.json))
    return 0
