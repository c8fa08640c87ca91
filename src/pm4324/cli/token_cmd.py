"""`pm4324 token`: a new HTTP API token with a role; prints the token once and the settings
lines that store only its hash (docs/security.md)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "token", help="make an HTTP API token with a role (the settings keep only its hash)",
        description="Print a new random token on stdout and, on stderr, the [security.tokens] "
        "lines to add to the settings file. The token is shown once; the file holds a salted "
        "scrypt hash.")
    p.add_argument("name", help="who the token is for, e.g. hmi (letters, digits, - and _)")
    p.add_argument("--role", required=True, help="read, relays, settings, energy-reset, or a role "
                   "of [security.roles]")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pm4324.security.identities import hash_token, new_token

    if not args.name or not args.name.replace("-", "").replace("_", "").isalnum():
        print("pm4324 token: NAME may hold letters, digits, - and _ only", file=sys.stderr)
        return 2
    token = new_token()
    print(token)
    print(f'[security.tokens.{args.name}]\nrole = "{args.role}"\nhash = "{hash_token(token)}"',
          file=sys.stderr)
    return 0
