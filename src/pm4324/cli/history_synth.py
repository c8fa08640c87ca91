"""`pm4324 history synth`: write a scenario's exact truth into a history, a day per
transaction, without waveforms (``sources.truth``), so DST days, months and years of history
exist in seconds for tests, demos and the benchmark.

The range is whole local days; the time zone is ``--time-zone``, else the scenario's
``time_zone``, else the store's (a new store is created in it). ``--from`` defaults to the
scenario's ``start``. Writing continues the counters already stored for the meter, and
refuses to write before what is already there.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from pm4324.history.aggregate import batch_of_minutes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", help="scenario TOML (default: the built-in building)")
    p.add_argument("--from", dest="start", help="first local day (default: the scenario's start)")
    p.add_argument("--to", dest="end", required=True, help="last local day, inclusive")
    p.add_argument("--time-zone", help="IANA zone of the days (default: the scenario's, else the "
                   "store's)")
    p.add_argument("--progress", action="store_true", help="a progress line even when stderr "
                   "is not a terminal")


def _day(text: str | None, what: str) -> date:
    from pm4324.cli.history_cmd import UsageError

    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected a date like 2026-03-29") from None


def run(args: argparse.Namespace) -> int:
    from pm4324.cli.cli import _default_settings_path
    from pm4324.cli.history_cmd import UsageError, open_store
    from pm4324.config.settings_parse import load_settings
    from pm4324.history.names import names_of
    from pm4324.sources.scenario_parse import load_scenario
    from pm4324.sources.truth import Truth

    scenario = load_scenario(args.scenario)
    settings = load_settings(args.settings or _default_settings_path())
    if scenario.start == "" and not args.start:
        raise UsageError("give --from (the scenario has no start)")
    first, last = _day(args.start or scenario.start, "--from"), _day(args.end, "--to")
    if last < first:
        raise UsageError("--to must not be before --from")
    store = open_store(args, create=True, time_zone=args.time_zone or scenario.time_zone or None)
    tz = ZoneInfo(store.time_zone)
    key = args.key or "synth"
    meter = store.meter_id(key, settings.model, names_of(settings))
    state = store.load_state(meter)
    t_first = datetime.combine(first, time(0), tz).timestamp()
    if state.last_time is not None and state.last_time >= t_first:
        raise UsageError(f"meter {key!r} already has history up to "
                         f"{datetime.fromtimestamp(state.last_time, tz):%Y-%m-%d %H:%M}; "
                         "choose a later --from or another --meter-key")
    truth = Truth(scenario, settings, store.time_zone, t_first)
    counters = state.counters
    show = args.progress or sys.stderr.isatty()
    n_days = (last - first).days + 1
    day = first
    for k in range(n_days):
        lo = datetime.combine(day, time(0), tz).timestamp()
        day += timedelta(days=1)
        hi = datetime.combine(day, time(0), tz).timestamp()
        t = np.arange(lo, hi, 60, dtype=np.int64)
        m = truth.minutes(t)
        energy = np.concatenate([m.ct_energy, m.meter_energy], axis=1)
        batch = batch_of_minutes(t, {"ct": m.ct, "meter": m.meter, "main": m.main}, energy, counters)
        store.write(meter, batch, float(t[-1] + 59))
        counters = batch.counters[-1]
        if show:
            print(f"\rsynth {day - timedelta(days=1)} ({k + 1}/{n_days} days)", end="",
                  file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    print(f"wrote {n_days} days ({first} .. {last}, {store.time_zone}) of {scenario.name!r} "
          f"as meter {key!r}", file=sys.stderr)
    store.close()
    return 0
