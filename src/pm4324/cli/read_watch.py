"""`pm4324 read --watch`: read a meter once a second and redraw the table in place.

The connection stays open between readings; a reading that fails prints one line and the
next second tries again (a meter that restarts comes back on its own). On a terminal the
screen is redrawn; otherwise each reading is printed after the previous one (or one JSON
line each with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from pm4324.client.modbus import ReadError, modbus_reader, read_meter


def _modbus_source(args: argparse.Namespace) -> tuple[Callable[[], dict[str, Any] | None], Callable]:
    from pm4324.cli.read_cmd import _client

    client, where = _client(args)

    def read() -> dict[str, Any] | None:
        if not client.connected and not client.connect():
            raise ReadError(f"cannot connect to {where}")
        return read_meter(modbus_reader(client, args.unit, where), args.meter, args.word_order)

    return read, client.close


def _canopen_source(args: argparse.Namespace) -> tuple[Callable[[], dict[str, Any] | None], Callable]:
    from pm4324.client.canopen import read_canopen

    interface, channel = args.canopen

    def read() -> dict[str, Any] | None:
        return read_canopen(interface, channel, args.node, args.meter, timeout=args.timeout)

    return read, lambda: None


def watch(args: argparse.Namespace) -> int:
    """Until Ctrl-C (or ``--count`` readings): exit 0, or 2 when no reading ever succeeded."""
    from pm4324.cli.display import render_table

    if not getattr(args, "verbose", False):
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        logging.getLogger("canopen").setLevel(logging.CRITICAL)
    read, close = (_canopen_source if args.canopen else _modbus_source)(args)
    tty = sys.stdout.isatty() and not args.json
    good = readings = 0
    next_due = time.monotonic()
    try:
        while args.count is None or readings < args.count:
            readings += 1
            try:
                d = read()
            except ReadError as exc:
                d, problem = None, str(exc)
            else:
                problem = "refused every request" if d is None else ""
            stamp = time.strftime("%H:%M:%S")
            if d is None:
                print(f"pm4324 read: {stamp} {problem}; trying again", file=sys.stderr, flush=True)
            elif args.json:
                good += 1
                print(json.dumps(d), flush=True)
            else:
                good += 1
                text = f"{stamp}  (--watch: every second, Ctrl-C stops)\n" + render_table(d)
                print(("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n"), flush=True)
            next_due += 1.0
            if args.count is None or readings < args.count:
                time.sleep(max(0.0, next_due - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        close()
    return 0 if good else 2
