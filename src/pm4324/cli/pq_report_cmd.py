"""`pm4324 pq-report`: an EN 50160-style weekly power-quality report per main, from the
history the meter keeps (docs/power-quality.md)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    text = "EN 50160-style weekly power-quality report of a main, from the history"
    p = subparsers.add_parser("pq-report", help=text, description=text)
    p.add_argument("--store", help="history file or postgresql:// URL (default: the one "
                   "`pm4324 run --settings S` keeps)")
    p.add_argument("--settings", help="settings file (Udin, nominal frequency; the store)")
    p.add_argument("--meter", default="local", help="meter key in the store (default: local)")
    p.add_argument("--main", type=int, default=1, choices=(1, 2), help="main 1 or 2")
    p.add_argument("--to", help="end of the week: Unix seconds or ISO date/time (default: the "
                   "newest record)")
    p.add_argument("--days", type=float, default=7.0, help="length of the period (default 7)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pm4324.cli.history_cmd import UsageError, open_store, parse_time
    from pm4324.config.settings import SettingsError
    from pm4324.config.settings_parse import load_settings
    from pm4324.history import HistoryError
    from pm4324.history.pq import read
    from pm4324.history.pq_report import render, weekly

    try:
        settings = load_settings(args.settings) if args.settings else None
        store = open_store(args)
        try:
            meter = store.find_meter(args.meter)
            db = store.db
            if args.to:
                t1 = parse_time(args.to, store)
            else:
                newest = db.execute(f"SELECT MAX(t) FROM {db.t('pq')} WHERE meter = ?", (meter,))
                if newest[0][0] is None:
                    raise UsageError("the history holds no power-quality records yet (the "
                                     "meter writes one per main every 10 minutes)")
                t1 = float(newest[0][0]) + 1e-3
            t0 = t1 - args.days * 86400
            rows = read(db, meter, t0, t1)
        finally:
            store.close()
    except (UsageError, HistoryError, SettingsError) as exc:
        print(f"pm4324 pq-report: {exc}", file=sys.stderr)
        return 2
    main = args.main
    ten = [d for _, m, k, d in rows if m == main and k == "10 min"]
    udin, nominal = _declared(settings, main, ten)
    report = weekly(rows, main, udin, nominal, t0, t1)
    print(json.dumps(report) if args.json else render(report))
    return 0


def _declared(settings, main: int, ten: list[dict]) -> tuple[float, float]:
    """Udin and the nominal frequency the meter used (its newest 10-minute record); with
    ``--settings``, the declared voltage and nominal frequency there."""
    if settings is not None:
        ms = settings.mains[main - 1]
        return settings.pq.declared_voltage_v or ms.nominal_voltage_v, ms.nominal_frequency_hz
    if ten:
        return float(ten[-1]["udin_v"]), float(ten[-1]["nominal_hz"])
    return 230.0, 50.0
