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


def write_output(text: str, output: str | None, command: str) -> int:
    """``text`` to stdout, or to the file ``output`` (exit code 2 and one line if it cannot)."""
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"pm4324 {command}: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    return write_output(render(args.map_format), args.output, "registers")
