"""`pm4324 certs`: a test CA, a server certificate and role client certificates for the
Modbus/TCP Security listener (docs/security.md)."""

from __future__ import annotations

import argparse
import sys

from pm4324.config.security_settings import DEFAULT_ROLES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "certs", help="make a test CA, server and role client certificates for Modbus/TCP Security",
        description="Write ca.pem/ca.key, server.pem/server.key and client-ROLE.pem/.key into "
        "DIR. For tests and commissioning; a site with its own PKI issues its own certificates "
        "with the role extension 1.3.6.1.4.1.50316.802.1 (UTF8String).")
    p.add_argument("directory", metavar="DIR", help="where to write the files (created)")
    p.add_argument("--role", action="append", metavar="ROLE",
                   help=f"a client certificate with this role (repeatable; default: "
                   f"{', '.join(DEFAULT_ROLES)})")
    p.add_argument("--host", action="append", metavar="NAME",
                   help="server host name or IP address (repeatable; default: 127.0.0.1, localhost)")
    p.add_argument("--days", type=int, default=825, help="validity of server and client "
                   "certificates (default 825)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pm4324.security.certs import make_set

    if not 1 <= args.days <= 36_500:
        print("pm4324 certs: --days must be 1..36500", file=sys.stderr)
        return 2
    roles = args.role or list(DEFAULT_ROLES)
    if any(not r or len(r.encode()) > 127 for r in roles):
        print("pm4324 certs: a role is 1..127 bytes", file=sys.stderr)
        return 2
    try:
        paths = make_set(Path(args.directory), roles, args.host or ["127.0.0.1", "localhost"],
                         args.days)
    except OSError as exc:
        print(f"pm4324 certs: {args.directory}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    print("[security.tls] certificate = server.pem, key = server.key, ca = ca.pem; give each "
          "client its client-ROLE.pem/.key and ca.pem", file=sys.stderr)
    return 0
