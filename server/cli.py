"""`pospal-server`: run, migrate, keys, backup, worker and admin commands for the operator.

    pospal-server run [--host H] [--port P] [--workers N]   serve (default 127.0.0.1:8000)
    pospal-server migrate                                    bring the schema to the newest revision
    pospal-server keys list | prepare | rotate [--out FILE]  signing keys
    pospal-server keys export [--out FILE]                   public JWKS for agents (trusted keys)
    pospal-server backup DIR                                 database (SQLite copy or pg_dump) + key dir
    pospal-server restore DIR                                put a backup back (servers stopped)
    pospal-server worker                                     deliver outbox email (no HTTP)
    pospal-server check                                      validate the configuration before a deploy
    pospal-server admin customer show|resend EMAIL
    pospal-server admin license show|revoke|extend ID
    pospal-server admin machine show|remove ID
    pospal-server admin machine clones                       machine keys seen on two computers
    pospal-server admin fleet versions|keysets|terminals     agent versions and key sets across the fleet
    pospal-server import-pospal1 FILE [--dry-run]            the old POSPal server's customers (D1 export)
    pospal-server stripe reconcile                           mirror every allow-listed subscription

Settings come from the environment (see server.config). Exit codes: 0 ok, 1 not found or refused
(`check` and `run` with a settings problem: one `FAIL settings:` line each), 2 configuration or usage
error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pospal_protocol.clock import SystemClock
from server.config import Settings
from server.db import Database, current_revision, head_revision, upgrade
from server.errors import ConfigError, Error


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# ------------------------------------------------------------------------------------------ serving


def prepare(settings: Settings) -> Database:
    """Check the schema (auto-creating a brand-new SQLite demo database if allowed) and the keys."""
    from server.app import check_schema
    from server.signing import SigningKeys, load_server_secret

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.sqlite_path
    is_new_file = path is not None and not path.exists()
    db = Database(settings.database_url, pool_size=2)
    if settings.auto_migrate and is_new_file:
        upgrade(db)
    check_schema(db)
    keys = SigningKeys(settings.signing_key_dir)
    with db.transaction() as session:
        keys.ensure_current(session, SystemClock().now())
    load_server_secret(
        settings.signing_key_dir, settings.server_secret.reveal() if settings.server_secret else None
    )
    return db


def uvicorn_options(host: str, port: int, workers: int) -> dict[str, Any]:
    """How `run` serves an app factory with uvicorn; the benchmark's sign-only ceiling serves the same way."""
    return {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "asyncio" if sys.platform == "win32" else "uvloop",  # uvloop has no Windows build
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 5,
    }


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the API with uvicorn (uvloop + httptools), `--workers` processes on one port."""
    import uvicorn

    prepare(settings).dispose()
    uvicorn.run("server.app:app_from_env", **uvicorn_options(args.host, args.port, args.workers))
    return 0


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    """Apply every pending migration; safe to run again."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url, pool_size=1)
    before = current_revision(db)
    upgrade(db)
    print(f"schema at {current_revision(db)} (was {before or 'empty'}; newest {head_revision()})")
    db.dispose()
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the outbox worker until SIGINT or SIGTERM."""
    from server.worker import run_worker

    db = prepare(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("outbox worker running; Ctrl+C stops it", file=sys.stderr)
    run_worker(settings, stop, db=db)
    return 0


# ------------------------------------------------------------------------------------------- keys


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """List or rotate the token signing keys."""
    from server.signing import SigningKeys

    db = Database(settings.database_url, pool_size=1)
    keys = SigningKeys(settings.signing_key_dir)
    now = SystemClock().now()
    with db.transaction() as session:
        if args.keys_command == "export":
            return _export_jwks(keys.jwks(session, now), args.out)
        if args.keys_command == "prepare":
            kid = keys.prepare()
            print(
                f"next signing key {kid} (not signing yet); put this key set in "
                "`publish_update.py keyset --jwks`, then `keys rotate`",
                file=sys.stderr,
            )
            return _export_jwks(keys.next_jwks(session, now), args.out)
        if args.keys_command == "rotate":
            kid, document = keys.rotate(session, now)
            print(f"new signing key {kid}", file=sys.stderr)
            if document is not None:
                if args.out:
                    Path(args.out).write_text(document + "\n")
                    print(
                        f"key-set document signed by the previous key written to {args.out}", file=sys.stderr
                    )
                else:
                    print(document)
            return 0
        current = keys.current_row(session)
        published = {r.kid for r in keys.published(session, now)}
        _print(
            [
                {
                    "kid": r.kid,
                    "created_at": r.created_at,
                    "retired_at": r.retired_at,
                    "current": current is not None and r.kid == current.kid,
                    "published": r.kid in published,
                    "private_key_file": keys.has_private_key(r.kid),
                }
                for r in keys.rows(session)
            ]
        )
    return 0


def _export_jwks(jwks: dict, out: str | None) -> int:
    """Print or write the public JWKS (what agents trust: agent/keys/trusted.json, POSPAL_TRUSTED_KEYS)."""
    if not jwks["keys"]:
        print(
            "error: there is no signing key yet; `pospal-server run` makes the first one "
            "(or `pospal-server keys rotate`)",
            file=sys.stderr,
        )
        return 1
    text = json.dumps(jwks, indent=2) + "\n"
    if not out:
        sys.stdout.write(text)
        return 0
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)  # a reader never sees half a file
    kids = ", ".join(k["kid"] for k in jwks["keys"])
    print(f"public keys {kids} written to {target}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ backup


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Back up the database and the signing key directory into a new directory (server.backup)."""
    from server.backup import backup

    manifest = backup(settings, Path(args.path))
    print(
        f"backed up the {manifest.database} database (schema {manifest.revision}) and "
        f"{len(manifest.key_files)} key files to {args.path}"
    )
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Restore a `backup` directory: the database and the key files (stop the servers first)."""
    from server.backup import restore

    manifest = restore(settings, Path(args.path))
    print(
        f"restored the {manifest.database} database (schema {manifest.revision}) and "
        f"{len(manifest.key_files)} key files from {args.path}; run `pospal-server migrate`, then start"
    )
    return 0


# ------------------------------------------------------------------------------------------- check


def cmd_check(settings: Settings, _args: argparse.Namespace) -> int:
    """Validate the configuration (Stripe, e-mail, database, keys, URL, Redis): one line each, 1 if any fails.

    Settings that do not load never get here: `main` prints one `FAIL settings:` line per problem instead.
    """
    from server.check import run_checks

    findings = run_checks(settings)
    for finding in findings:
        print(finding.line())
    return 0 if all(f.ok for f in findings) else 1


# ------------------------------------------------------------------------------------------- admin


def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    """Look up and fix customers, licenses and machines; every change is audited as `admin`."""
    from server import admin

    db = Database(settings.database_url, pool_size=1)
    now = SystemClock().now()
    args.seat_idle_days = settings.seat_idle_days  # terminals are listed active or idle by this rule
    with db.transaction() as session:
        return admin.run(session, args, now, _print)


# ------------------------------------------------------------------------------------ import-pospal1


def cmd_import_pospal1(settings: Settings, args: argparse.Namespace) -> int:
    """Import the old POSPal server's customers and trials (server/pospal1.py); one line per row."""
    from server.billing import make_provider
    from server.billing.sync import WebhookContext
    from server.pospal1 import run_import

    db = Database(settings.database_url, pool_size=1)
    clock = SystemClock()
    try:
        provider = make_provider(settings, db, clock)
        ctx = WebhookContext(clock, settings.public_url, settings.system_admin_email)
        report = run_import(db, provider, Path(args.file), clock, ctx, dry_run=args.dry_run)
    finally:
        db.dispose()
    for line in report.lines:
        print(line.text())
    print(report.summary())
    return 0


def cmd_stripe(settings: Settings, args: argparse.Namespace) -> int:
    """`stripe reconcile`: mirror every subscription of an allow-listed price; 1 when one failed."""
    from server.billing import make_provider
    from server.billing.reconcile import reconcile
    from server.billing.sync import WebhookContext

    db = Database(settings.database_url, pool_size=1)
    clock = SystemClock()
    prices = settings.adoptable_prices()
    try:
        provider = make_provider(settings, db, clock)
        ctx = WebhookContext(clock, settings.public_url, settings.system_admin_email, prices)
        report = reconcile(db, provider, sorted(prices) if prices is not None else [None], ctx, clock)
    finally:
        db.dispose()
    for line in report.text():
        print(line)
    return 1 if report.count("failed") else 0


# -------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests to check the commands exist)."""
    parser = argparse.ArgumentParser(prog="pospal-server", description="POSPal license server")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve the API")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1)
    run.set_defaults(func=cmd_run)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("worker", help="deliver outbox email").set_defaults(func=cmd_worker)
    sub.add_parser("check", help="validate the configuration before a deploy").set_defaults(func=cmd_check)

    keys = sub.add_parser("keys", help="signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("list")
    export = keys_sub.add_parser("export", help="the public JWKS agents trust (stdout, or --out FILE)")
    export.add_argument("--out", help="write it to this file instead of printing it")
    prepare = keys_sub.add_parser("prepare", help="make the next key; print the key set to publish with it")
    prepare.add_argument("--out", help="write that JWKS to this file instead of printing it")
    rotate = keys_sub.add_parser("rotate", help="make the prepared (or a new) key current")
    rotate.add_argument("--out", help="write the legacy key-set document here instead of stdout")
    keys.set_defaults(func=cmd_keys)

    backup = sub.add_parser("backup", help="back up the database and the signing keys into a new directory")
    backup.add_argument("path")
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser("restore", help="restore a backup directory (servers stopped)")
    restore.add_argument("path")
    restore.set_defaults(func=cmd_restore)

    admin = sub.add_parser("admin", help="look up and fix customers, licenses, machines")
    admin_sub = admin.add_subparsers(dest="entity", required=True)
    customer = admin_sub.add_parser("customer")
    customer.add_argument("action", choices=["show", "resend"])
    customer.add_argument("email")
    customer.add_argument("--outbox-id", type=int, help="resend this message (default: the newest)")
    license_ = admin_sub.add_parser("license")
    license_.add_argument("action", choices=["show", "revoke", "extend"])
    license_.add_argument("id", help="lic_... (or trial_... for extend)")
    license_.add_argument("--days", type=int, default=30, help="extend by this many days")
    license_.add_argument("--reason", default="", help="why (kept in the audit log)")
    machine = admin_sub.add_parser("machine")
    machine.add_argument("action", choices=["show", "remove", "clones"])
    machine.add_argument("id", nargs="?", default="", help="m_... (not for clones: that lists them all)")
    fleet = admin_sub.add_parser("fleet", help="agent versions: terminals per version, or each terminal's")
    fleet.add_argument("action", choices=["versions", "keysets", "terminals"])
    outbox = admin_sub.add_parser("outbox", help="e-mail that did not go out, and why")
    outbox.add_argument("--all", action="store_true", help="also list messages that failed for good")
    admin.set_defaults(func=cmd_admin)

    old = sub.add_parser("import-pospal1", help="import the old POSPal server's customers (D1 export)")
    old.add_argument("file", help="what `wrangler d1 export` wrote (SQL), or the SQLite file")
    old.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")
    old.set_defaults(func=cmd_import_pospal1)

    stripe_cmd = sub.add_parser("stripe", help="Stripe upkeep")
    stripe_sub = stripe_cmd.add_subparsers(dest="stripe_command", required=True)
    stripe_sub.add_parser("reconcile", help="mirror every subscription of an allow-listed price")
    stripe_cmd.set_defaults(func=cmd_stripe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pospal-server`."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        if args.command in ("check", "run"):
            # One FAIL line per problem, the same for both: `check` reports on stdout, `run` refuses on
            # stderr, and neither stops at the first.
            for problem in exc.problems:
                print(f"FAIL settings: {problem}", file=sys.stdout if args.command == "check" else sys.stderr)
            if args.command == "check":
                print("(the service checks run once the settings load)")
            return 1
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    try:
        return int(args.func(settings, args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
