"""`pm4324 audit`: the audit log (every accepted and refused write, with its client), read
from the file beside the meter's state file; works while the meter runs."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "audit", help="show the audit log: accepted and refused writes, with the client",
        description="Print the audit log of the meter that runs with these settings "
        "(docs/security.md): time, outcome, interface, client, target, old -> new value.")
    p.add_argument("--settings", help="settings TOML the meter runs with (default: the built-in "
                   "building's)")
    p.add_argument("--last", type=int, metavar="N", help="only the newest N entries")
    p.add_argument("--refused", action="store_true", help="only refused writes")
    p.add_argument("--json", action="store_true", help="one JSON object per entry")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pm4324.app import audit_location
    from pm4324.cli.cli import _default_settings_path
    from pm4324.config.settings_parse import load_settings
    from pm4324.security.audit import AuditLog, format_audit

    if args.last is not None and args.last < 1:
        print("pm4324 audit: --last must be 1 or more", file=sys.stderr)
        return 2
    settings = load_settings(args.settings or _default_settings_path())
    path = audit_location(settings, args.settings)
    if not path.exists():
        print(f"pm4324 audit: {path}: no audit log yet (the meter has not run with these "
              "settings)", file=sys.stderr)
        return 2
    log = AuditLog.reader(path)
    try:
        entries = log.entries(args.last, "refused" if args.refused else None)
        sys.stdout.write(format_audit(entries, args.json))
        if not args.json:
            print(f"({log.dropped} entries dropped so far)", file=sys.stderr)
    finally:
        log.close()
    return 0
