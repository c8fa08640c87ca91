"""`pm4324 history export`: a range of the history as CSV, Parquet or JSON Lines.

One row per interval (or minute) and element (CT, Meter, main), named as in the settings.
15-minute rows carry mean/min/max of every quantity, the energy in the interval and the
register values at its end; 1-minute rows carry the 1-minute series. Long exports show a
progress bar on stderr (when it is a terminal, or with ``--progress``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from datetime import UTC, datetime
from typing import IO, Any

from pm4324.history import query
from pm4324.history.layout import ELEMENTS, ENERGY_ELEMENTS, LAYOUT, QUANTITIES, REGISTERS
from pm4324.history.names import label

DAY = 86400
FORMATS = ("csv", "parquet", "json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", required=True, help="start (date, local time or Unix s)")
    p.add_argument("--to", dest="end", required=True, help="end, exclusive")
    p.add_argument("--format", choices=FORMATS, default="csv", help="csv (default), parquet, json "
                   "(one object per line)")
    p.add_argument("--resolution", choices=["15min", "1min"], default="15min")
    p.add_argument("-o", "--output", help="file to write (default: standard output; parquet "
                   "needs a file)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when "
                   "stderr is not a terminal")


def columns(resolution: str) -> list[str]:
    head = ["time_utc", "local_time", "meter", "element", "name"]
    if resolution == "1min":
        return head + [f"{q}_{st}" for (e, q, st) in LAYOUT.minute_series if e in ("ct1", "main1")]
    quantities = list(dict.fromkeys(q for kind in ("ct", "meter", "main") for q in QUANTITIES[kind]))
    return (head + ["seconds"] + [f"{q}_{st}" for q in quantities for st in ("mean", "min", "max")]
            + [f"{r}_wh" for r in REGISTERS] + [f"{r}_end_wh" for r in REGISTERS])


def _rows(store, meter: int, key: str, names: dict, start: float, end: float, resolution: str):
    idx = {e.key: n for n, e in enumerate(ENERGY_ELEMENTS)}
    if resolution == "1min":
        for t, values in query.minute_rows(store, meter, start, end):
            for element, series in values.items():
                row = _head(store, t, key, element, names)
                row.update({f"{q}_{st}": _v(x) for (q, st), x in series.items()})
                yield t, row
        return
    for t, seconds, stats, energy in query.interval_rows(store, meter, start, end):
        for e in ELEMENTS:
            row = _head(store, t, key, e.key, names)
            row["seconds"] = seconds
            for q in QUANTITIES[e.kind]:
                ch = LAYOUT.channels[(e.key, q)]
                for s, st in enumerate(("mean", "min", "max")):
                    row[f"{q}_{st}"] = _v(stats[s, ch])
            if e.key in idx:
                for j, r in enumerate(REGISTERS):
                    row[f"{r}_wh"] = _v(energy[0, idx[e.key], j])
                    row[f"{r}_end_wh"] = _v(energy[2, idx[e.key], j])
            yield t, row


def _head(store, t: float, key: str, element: str, names: dict) -> dict[str, Any]:
    return {"time_utc": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "local_time": datetime.fromtimestamp(t, store.tz).isoformat(), "meter": key,
            "element": element, "name": label(names, element)}


def _v(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class Progress:
    """A one-line bar on stderr: fraction of the time range done."""

    def __init__(self, start: float, end: float, show: bool):
        self.start, self.span, self.show, self.shown = start, end - start, show, -1

    def update(self, t: float) -> None:
        pct = int(100 * min(1.0, max(0.0, (t - self.start) / self.span)))
        if self.show and pct != self.shown:
            self.shown = pct
            bar = "#" * (pct // 4) + "." * (25 - pct // 4)
            print(f"\rexport [{bar}] {pct:3d} %", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.show:
            self.update(self.start + self.span)
            print(file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from pm4324.cli.history_cmd import UsageError, open_store, parse_time

    store = open_store(args)
    meter = store.find_meter(args.key)
    key = next(m for m in store.meters() if m["id"] == meter)
    start, end = parse_time(args.start, store), parse_time(args.end, store)
    if not start < end:
        raise UsageError("--from must be before --to")
    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output FILE")
    progress = Progress(start, end, args.progress or sys.stderr.isatty())
    out: IO[str] = open(args.output, "w", newline="", encoding="utf-8") if (
        args.output and args.format != "parquet") else sys.stdout
    count = 0
    try:
        writer = _writer(args.format, out, args.output, columns(args.resolution))
        day = start
        while day < end:  # a day at a time: memory stays bounded, the bar moves
            chunk = min(end, day + DAY)
            for t, row in _rows(store, meter, key["key"], key["names"], day, chunk, args.resolution):
                writer.write(row)
                count += 1
                progress.update(t)
            day = chunk
        writer.close()
    finally:
        if out is not sys.stdout:
            out.close()
    progress.done()
    print(f"{count} rows exported", file=sys.stderr)
    return 0


def _writer(fmt: str, out: IO[str], path: str | None, cols: list[str]):
    if fmt == "csv":
        return _Csv(out, cols)
    if fmt == "json":
        return _Json(out)
    return _Parquet(path or "", cols)


class _Csv:
    def __init__(self, out: IO[str], cols: list[str]):
        self.w = csv.DictWriter(out, cols, restval="")
        self.w.writeheader()

    def write(self, row: dict) -> None:
        self.w.writerow({k: "" if v is None else v for k, v in row.items()})

    def close(self) -> None:
        pass


class _Json:
    def __init__(self, out: IO[str]):
        self.out = out

    def write(self, row: dict) -> None:
        self.out.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.out.flush()


class _Parquet:
    """Row groups of ~50,000 rows, so a long export never holds everything in memory."""

    def __init__(self, path: str, cols: list[str]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        text = {"time_utc", "local_time", "meter", "element", "name"}
        self.pa = pa
        self.schema = pa.schema([(c, pa.string() if c in text else pa.int64() if c == "seconds"
                                  else pa.float64()) for c in cols])
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= 50_000:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
