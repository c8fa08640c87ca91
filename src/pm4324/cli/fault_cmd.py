"""`pm4324 fault`: switch faults of a running meter over its HTTP API (docs/faults.md).

    pm4324 fault list
    pm4324 fault kinds
    pm4324 fault set reversed_ct ct5 [--for 60]
    pm4324 fault set wrong_phase ct8 phase=c
    pm4324 fault set harmonic_rich ct4 'harmonics={"3": 0.3, "5": 0.2}'
    pm4324 fault set latency protocol ms=200 jitter_ms=50 --for 30
    pm4324 fault clear [ID | PROTOCOL-KIND]

The meter runs with `pm4324 run --http`; setting and clearing need a token whose role has
the ``settings`` right (``--token`` or the environment variable PM4324_TOKEN), and are
audited. Exit codes: 0 done, 2 bad input, refused or no connection (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("fault", help="list, set or clear faults of a running meter "
                              "(its HTTP API)", description=__doc__.split("\n\n")[0])
    p.add_argument("--http", default="http://127.0.0.1:8080", metavar="URL",
                   help="the meter's HTTP API (default http://127.0.0.1:8080)")
    p.add_argument("--token", help="token with the settings right (default: $PM4324_TOKEN)")
    p.add_argument("--device", metavar="KEY",
                   help="a member of `pm4324 fleet --http` by its key (docs/fleet.md)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the meter's faults (scheduled and live)")
    sub.add_parser("kinds", help="the kinds of fault, their targets and parameters")
    s = sub.add_parser("set", help="start a fault at the meter's next sample")
    s.add_argument("kind")
    s.add_argument("target", help="ctN, mainM, mainM.a|b|c, meterN, all; protocol for a "
                   "protocol fault")
    s.add_argument("params", nargs="*", metavar="KEY=VALUE",
                   help="parameters; a value is JSON where it parses (50, [\"a\",\"c\",\"b\"]),"
                   " else text")
    s.add_argument("--for", dest="duration_s", type=float, metavar="SECONDS",
                   help="end it after this long (default: until cleared)")
    c = sub.add_parser("clear", help="end one fault (its id; a protocol fault: its kind) or all")
    c.add_argument("id", nargs="?")
    p.set_defaults(func=run)
    return p


class _Failed(Exception):
    pass


def parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise _Failed(f"{item!r}: parameters are KEY=VALUE, e.g. clip_a=50")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = args.http.rstrip("/") + path
    if getattr(args, "device", None):
        from urllib.parse import quote

        url += f"?device={quote(args.device, safe='')}"
    if "://" not in url:
        url = "http://" + url
    headers = {"Content-Type": "application/json"}
    token = args.token or os.environ.get("PM4324_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (a URL we were given)
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("reason", exc.reason)
        except (ValueError, AttributeError):
            reason = exc.reason
        hint = " (give --token or set PM4324_TOKEN)" if exc.code == 401 else ""
        raise _Failed(f"{method} {url}: {exc.code} {reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise _Failed(f"cannot reach {url}: {why} (is `pm4324 run --http` running there?)") from None


def _line(f: dict[str, Any]) -> str:
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in f["parameters"].items())
    if f["start_s"] is None:  # a protocol fault: wall-clock times
        when = f"{f['start']} .. {f['end'] or 'until cleared'}"
    else:
        when = f"{f['start_s']:g} s .. " + (f"{f['end_s']:g} s" if f["end_s"] is not None
                                           else "until cleared")
    return (f"{f['id']:>3} {f['state']:<7} {f['kind']:<20} {f['target']:<8} "
            f"{when} ({f['origin']}) {params}").rstrip()


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            answer = _call(args, "GET", "/api/faults")
        elif args.action == "kinds":
            answer = _call(args, "GET", "/api/fault-kinds")
        elif args.action == "set":
            answer = _call(args, "POST", "/api/faults", {
                "kind": args.kind, "target": args.target, "parameters": parse_params(args.params),
                "duration_s": args.duration_s})
        else:
            answer = _call(args, "DELETE", "/api/faults" + (f"/{args.id}" if args.id else ""))
    except _Failed as exc:
        print(f"pm4324 fault: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer))
    elif args.action == "kinds":
        for name, k in answer.items():
            params = ", ".join(f"{p}={json.dumps(v)}" for p, v in k["parameters"].items())
            print(f"{name:<20} {'|'.join(k['targets']):<10} {params}\n    {k['text']}")
    elif isinstance(answer, list):
        if not answer:
            print("no faults" if args.action == "list" else "nothing to clear")
        for f in answer:
            print(_line(f))
    else:
        print(_line(answer))
    return 0
