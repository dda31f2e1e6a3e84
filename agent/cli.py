"""`pospal-agent` command line: a thin dispatcher, one small function per subcommand.

Each subcommand is registered by an `_add_<name>(subparsers)` function that sets `func` on its parser;
`main` parses and calls it. The function returns the process exit code. Subcommands that need the running
agent (run, status, trial, activate, buy, sync, deactivate) live next to `fingerprint` in the same shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from agent import __version__


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """Print each fingerprint component: name, whether its source worked, and its hash (never raw values)."""
    from agent import fingerprint

    fp = fingerprint.current()
    rows = [c.to_dict() for c in fp.components]
    if args.json:
        print(json.dumps({"components": rows, "working": fp.working_count()}, indent=2))
        return 0
    for row in rows:
        state = "ok" if row["ok"] else "unavailable"
        print(f"{row['name']:<18} {state:<12} {row['hash'] or '-'}")
    print(f"{fp.working_count()} of {len(rows)} components available")
    return 0


def _add_fingerprint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fingerprint", help="show this machine's fingerprint components (hashes only)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_fingerprint)


SUBCOMMANDS = [_add_fingerprint]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="pospal-agent", description="POSPal License Agent")
    parser.add_argument("--version", action="version", version=f"pospal-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pospal-agent`: parse `argv` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
