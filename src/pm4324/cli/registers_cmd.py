"""`pm4324 registers`: print or export the Modbus register map (from ``map.csv``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("md", "csv", "json")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "registers",
        help="print or export the Modbus register map",
        description="Print the register map as Markdown (as docs/registers.md), the CSV table "
        "the meter serves from, or JSON (as docs/registers.json).",
    )
    p.add_argument("--format", dest="map_format", choices=FORMATS, default="md",
                   help="output format (default md)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)
    return p


def render(map_format: str) -> str:
    from pm4324.registers.docs import render_json, render_markdown
    from pm4324.registers.table import load_map, map_text

    if map_format == "csv":
        return map_text()
    m = load_map()
    return render_json(m) if map_format == "json" else render_markdown(m)


def run(args: argparse.Namespace) -> int:
    text = render(args.map_format)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"pm4324 registers: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
