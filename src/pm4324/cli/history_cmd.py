"""`pm4324 history`: look into a meter's or a hub's history, export it, prune it, or fill it
with a scenario's exact truth (`synth`). docs/history.md.

The store is ``--store PATH|postgresql://URL``, else the one `pm4324 run --settings S` keeps
(``--settings``; the built-in building's without). Times: ``2026-03-29`` (local midnight in
the store's time zone), ``2026-03-29T06:30`` (local), or Unix seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date, datetime, timedelta

from pm4324.history import HistoryError, HistoryStore, query
from pm4324.history.layout import QUANTITIES, parse_element
from pm4324.history.names import label

DAY = 86400


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("history", help="show, export, prune or synthesize a meter's history",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)

    def action(name: str, text: str, func) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=text, description=text)
        a.add_argument("--store", help="history file or postgresql:// URL (default: the one "
                       "`pm4324 run --settings S` keeps)")
        a.add_argument("--settings", help="settings TOML of the meter whose history to use")
        a.add_argument("--meter-key", dest="key", help="which meter of a hub's history")
        a.set_defaults(func=lambda args: _guarded(func, args))
        return a

    show = action("show", "a trend as a table (mean, min, max per point)", _show)
    show.add_argument("element", help="ct1..ct24, meter1..meter8, main1, main2")
    show.add_argument("quantity", nargs="?", default=None, help="e.g. p_w (default), i_rms, v_ln_a")
    _range(show)
    show.add_argument("--resolution", default="auto", choices=["auto", *query.RESOLUTIONS])
    show.add_argument("--points", type=int, default=48, help="at most this many rows (default 48)")
    show.add_argument("--json", action="store_true")

    energy = action("energy", "energy per local day or month, per register", _energy)
    energy.add_argument("element", help="ct1..ct24 or meter1..meter8")
    energy.add_argument("--period", choices=["day", "month"], default="day")
    _range(energy)
    energy.add_argument("--json", action="store_true")

    demand = action("demand", "each day's or month's maximum 15-minute demand and when", _demand)
    demand.add_argument("element", help="ct1..ct24 or meter1..meter8")
    demand.add_argument("--period", choices=["day", "month"], default="day")
    _range(demand)

    stats = action("stats", "size, span, meters, gaps", _stats)
    stats.add_argument("--json", action="store_true")

    prune = action("prune", "delete what is older than the retention (or --before)", _prune)
    prune.add_argument("--before", help="delete minutes, intervals and days before this time")

    from pm4324.cli import history_export, history_synth

    history_export.add_arguments(action("export", "export a range as csv, parquet or json",
                                        history_export.run))
    history_synth.add_arguments(action("synth", "write a scenario's exact truth into a history",
                                       history_synth.run))
    return p


def _range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", help="start (default: a day, month or year before the "
                   "end, or the first data)")
    p.add_argument("--to", dest="end", help="end, exclusive (default: the newest data)")


class UsageError(Exception):
    """Bad input: one line on stderr, exit code 2."""


def _guarded(func, args: argparse.Namespace) -> int:
    try:
        return func(args)
    except (UsageError, HistoryError) as exc:
        print(f"pm4324 history: {exc}", file=sys.stderr)
        return 2


def open_store(args: argparse.Namespace, create: bool = False, time_zone: str | None = None
               ) -> HistoryStore:
    where = args.store
    if not where:
        from pm4324.app import history_location
        from pm4324.cli.cli import _default_settings_path
        from pm4324.config.settings import SettingsError
        from pm4324.config.settings_parse import load_settings

        try:
            settings = load_settings(args.settings or _default_settings_path())
        except SettingsError as exc:
            raise UsageError(str(exc)) from None
        where = history_location(settings, args.settings)
    return HistoryStore.open(where, time_zone=time_zone, readonly=not create)


def parse_time(text: str, store: HistoryStore) -> float:
    """Unix seconds, or an ISO date / local date-time in the store's time zone."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r}: expected a date (2026-03-29), a local time "
                         "(2026-03-29T06:30) or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=store.tz)
    return when.timestamp()


def time_range(args: argparse.Namespace, store: HistoryStore, meter: int, default_s: float
               ) -> tuple[float, float]:
    span = query.span(store, meter)
    end = parse_time(args.end, store) if args.end else (span[1] + 900 if span else 0.0)
    start = parse_time(args.start, store) if args.start else max(end - default_s, span[0] if span else 0)
    if not start < end:
        raise UsageError(f"--from ({args.start}) must be before --to ({args.end})")
    return start, end


def local(t: float, store: HistoryStore) -> str:
    return datetime.fromtimestamp(t, store.tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _element(text: str, kinds: tuple[str, ...] = ("ct", "meter", "main")) -> str:
    try:
        e = parse_element(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if e.kind not in kinds:
        raise UsageError(f"{text}: use " + " or ".join(kinds))
    return e.key


def _names(store: HistoryStore, meter: int) -> dict:
    return next(m["names"] for m in store.meters() if m["id"] == meter)


def _show(args: argparse.Namespace) -> int:
    store = open_store(args)
    meter = store.find_meter(args.key)
    element = _element(args.element)
    quantity = args.quantity or ("v_ln_a" if element.startswith("main") else "p_w")
    kind = parse_element(element).kind
    if quantity not in QUANTITIES[kind]:
        raise UsageError(f"{quantity!r}: a {kind} has " + ", ".join(QUANTITIES[kind]))
    if args.points < 1:
        raise UsageError("--points must be 1 or more")
    start, end = time_range(args, store, meter, DAY)
    tr = query.trend(store, meter, element, quantity, start, end, args.resolution, args.points)
    if args.json:
        print(json.dumps({"element": element, "name": label(_names(store, meter), element),
                          "quantity": quantity, "resolution": tr.resolution,
                          "t": tr.t.tolist(), "mean": _list(tr.mean), "min": _list(tr.min),
                          "max": _list(tr.max)}))
        return 0
    print(f"{label(_names(store, meter), element)} ({element}) {quantity}, {tr.resolution} data, "
          f"{local(start, store)} .. {local(end, store)}")
    print(f"{'time':<24} {'mean':>12} {'min':>12} {'max':>12}")
    for row in zip(tr.t, tr.mean, tr.min, tr.max):
        print(f"{local(row[0], store):<24} " + " ".join(_num(x) for x in row[1:]))
    for g in query.gaps(store, meter, start, end):
        print(f"gap {local(g[0], store)} .. {local(g[1], store)} ({g[2]})")
    return 0


def _num(x: float) -> str:
    return f"{'-':>12}" if not math.isfinite(x) else f"{x:>12.3f}"


def _list(a) -> list:
    return [None if not math.isfinite(x) else float(x) for x in a]


def _dates(args: argparse.Namespace, store: HistoryStore, meter: int, period: str) -> tuple[date, date]:
    default = DAY * (31 if period == "day" else 366)
    start, end = time_range(args, store, meter, default)
    first = datetime.fromtimestamp(start, store.tz).date()
    last = datetime.fromtimestamp(end - 1e-3, store.tz).date()
    return first, last


def _energy(args: argparse.Namespace) -> int:
    store = open_store(args)
    meter = store.find_meter(args.key)
    element = _element(args.element, ("ct", "meter"))
    first, last = _dates(args, store, meter, args.period)
    rows = query.energy(store, meter, element, first, last, args.period)
    if args.json:
        print(json.dumps([{"period": r.period, "seconds": r.seconds, "energy_wh": r.energy,
                           "first_wh": r.first, "last_wh": r.last} for r in rows]))
        return 0
    print(f"{label(_names(store, meter), element)} ({element}), energy per local {args.period} "
          f"({store.time_zone})")
    print(f"{'period':<11} {'hours':>6} {'kWh imp':>12} {'kWh exp':>12} {'kvarh Q+':>12} "
          f"{'kvarh Q-':>12} {'kVAh':>12}")
    for r in rows:
        e = r.energy
        cols = (e["wh_import"], e["wh_export"], e["varh_q1"] + e["varh_q2"],
                e["varh_q3"] + e["varh_q4"], e["vah"])
        print(f"{r.period:<11} {r.seconds / 3600:>6.2f} " + " ".join(f"{x / 1000:>12.3f}" for x in cols))
    return 0


def _demand(args: argparse.Namespace) -> int:
    store = open_store(args)
    meter = store.find_meter(args.key)
    element = _element(args.element, ("ct", "meter"))
    first, last = _dates(args, store, meter, args.period)
    print(f"{label(_names(store, meter), element)} ({element}), maximum 15-minute demand per "
          f"{args.period}")
    print(f"{'period':<11} {'kW':>10}  interval starting")
    for r in query.max_demand(store, meter, element, first, last, args.period):
        print(f"{r.period:<11} {r.kw:>10.3f}  {local(r.at, store)}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    out = {"size_bytes": store.db.size_bytes(), "backend": store.db.kind,
           "time_zone": store.time_zone, "meters": []}
    for m in store.meters():
        span = query.span(store, m["id"])
        gaps = query.gaps(store, m["id"], 0, 1e12)
        out["meters"].append({
            "key": m["key"], "model": m["model"], "names": m["names"],
            "first": span[0] if span else None, "last": span[1] + 900 if span else None,
            "gaps": len(gaps), "gap_seconds": round(sum(g[1] - g[0] for g in gaps), 3)})
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['backend']} history, {out['size_bytes'] / 1e6:.1f} MB, days cut at "
          f"{out['time_zone']} midnight")
    for m in out["meters"]:
        span = (f"{local(m['first'], store)} .. {local(m['last'], store)}" if m["first"] is not None
                else "empty")
        named = len(m["names"].get("meters", {})) + len(m["names"].get("cts", {}))
        print(f"  {m['key']} ({m['model'] or 'model unknown'}): {span}; {m['gaps']} gaps "
              f"({timedelta(seconds=round(m['gap_seconds']))}); {named} names")
    return 0


def _prune(args: argparse.Namespace) -> int:
    store = open_store(args, create=True)
    before = parse_time(args.before, store) if args.before else None
    counts = store.prune(before)
    print("deleted " + (", ".join(f"{n} {t} rows" for t, n in counts.items() if n) or "nothing"))
    return 0
