"""`pm4324 bill --period 2026-11 --tenants tenants.toml`: one invoice per tenant (PDF, CSV,
JSON) and the building summary, from the history's counters. docs/billing.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pm4324.billing.bill import BillingRun, PeriodError, period_bounds, run_billing
from pm4324.billing.config import BillingConfigError, load_building
from pm4324.billing.export import invoice_csv, invoice_json, run_json, summary_csv
from pm4324.history import HistoryError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bill", help="tenant invoices (PDF, CSV, JSON) for a month",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--period", required=True, help="the local month to bill, e.g. 2026-11")
    p.add_argument("--tenants", required=True, help="tenants TOML (building, tariffs, tenants, "
                   "common areas)")
    p.add_argument("--history", help="history file or postgresql:// URL (default: the one "
                   "`pm4324 run --settings S` keeps)")
    p.add_argument("--settings", help="settings TOML of the meter whose history to use")
    p.add_argument("--out", help="output folder (default: invoices/PERIOD)")
    p.add_argument("--no-pdf", action="store_true", help="CSV and JSON only")
    p.add_argument("--progress", action="store_true", help="a progress bar even when stderr is "
                   "not a terminal")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        building = load_building(args.tenants)
        period_bounds(args.period, building.tz)
        store = _open(args)
        try:
            show = args.progress or sys.stderr.isatty()
            result = run_billing(building, store, args.period, _bar if show else None)
        finally:
            store.close()
    except (BillingConfigError, PeriodError, HistoryError) as exc:
        print(f"pm4324 bill: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("invoices") / args.period)
    out.mkdir(parents=True, exist_ok=True)
    write_files(result, out, not args.no_pdf, _bar if show else None)
    _print_summary(result, out)
    return 0


def _open(args: argparse.Namespace):
    from pm4324.cli.history_cmd import UsageError, open_store

    try:
        return open_store(argparse.Namespace(store=args.history, settings=args.settings))
    except UsageError as exc:
        raise HistoryError(str(exc)) from None


def write_files(result: BillingRun, out: Path, pdf: bool, progress) -> None:
    """Each invoice as JSON, CSV (and PDF), and the summary, into ``out``."""
    tz = result.building.tz
    for n, inv in enumerate(result.invoices):
        stem = out / f"{inv.tenant.id}-{result.period}"
        stem.with_suffix(".json").write_text(invoice_json(inv, tz), encoding="utf-8")
        stem.with_suffix(".csv").write_text(invoice_csv(inv, tz), encoding="utf-8")
        if pdf:
            from pm4324.billing.pdf import write_pdf

            write_pdf(inv, result.building.name, tz, stem.with_suffix(".pdf"))
        if progress:
            progress(n + 1, len(result.invoices), f"wrote {stem.name}")
    (out / f"summary-{result.period}.json").write_text(run_json(result), encoding="utf-8")
    (out / f"summary-{result.period}.csv").write_text(summary_csv(result.summary), encoding="utf-8")


def _print_summary(result: BillingRun, out: Path) -> None:
    s = result.summary
    print(f"{result.building.name} {s.period} ({s.hours:g} h): invoices in {out}/")
    for inv in result.invoices:
        print(f"  {inv.tenant.id:<16} {inv.own_kwh + inv.common_kwh:>12} kWh  {inv.total:>12} "
              f"{inv.tariff.currency}")
    for kind, name, kwh in s.rows:
        if kind != "tenant":
            print(f"  {kind:<7} {name:<40} {kwh:>12} kWh")
    print(f"  Σ tenants + vacant + common {s.assigned_kwh:>12} kWh")
    if s.main_kwh is not None:
        pct = f" ({s.difference_kwh / s.main_kwh * 100:.2f} %)" if s.main_kwh else ""
        print(f"  main Meter(s)              {s.main_kwh:>12} kWh")
        print(f"  difference (main − Σ)      {s.difference_kwh:>12} kWh{pct}")


def _bar(done: int, total: int, what: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} {what:<40}", end=end,
          file=sys.stderr, flush=True)
