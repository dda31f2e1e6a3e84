"""`import-pospal1`: the old server's 50 customers from a D1 export, with Stripe's state winning.

The fixture `tests/fixtures/pospal1/d1-export.sql` is a D1 export as `wrangler d1 export` writes it, in
the old schema's shape (a deployment made from the first schema.sql and altered since: no CHECK on the
status), with made-up rows: 39 paying or lapsed customers whose Stripe subscription exists, two with no
subscription, two whose subscription Stripe does not know, five broken rows (no e-mail, an unknown
status, one address in two letter cases, not an address), a name with a bidi override, one without an
unlock token, and four trials (two still running on 2026-01-15).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from server.billing.stripe import StripeBilling
from server.billing.sync import WebhookContext
from server.models import (
    AuditLog,
    Customer,
    License,
    Outbox,
    Pospal1Import,
    Pospal1Trial,
    Subscription,
)
from server.pospal1 import load_export, run_import, token_hash
from tests.processes import new_group_kwargs
from tests.server.conftest import REPO
from tests.server.stripe_stub import PRICE_ID, WEBHOOK_SECRET, start_stripe_stub, stripe_env, subscription

EXPORT = REPO / "tests" / "fixtures" / "pospal1" / "d1-export.sql"


def _stripe_state(stub) -> None:
    """Stripe's side: what it says now, which differs from the old rows for 31-34, 38 and 39."""
    for i in list(range(1, 40)) + [45, 46, 47, 48, 49, 50]:
        status, quantity, customer = "active", 1, f"cus_Old{i:04d}"
        if i in (31, 32, 35, 36, 37):
            status = "canceled"
        if i == 33:
            status = "past_due"
        if i == 34:
            quantity = 3
        if i == 39:
            customer = "cus_NewStripe39"
        sub_id = f"sub_1Old{i:04d}"
        stub.subscriptions[sub_id] = subscription(sub_id, customer, status=status, quantity=quantity)


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    _stripe_state(stub)
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def provider(stub):
    return StripeBilling("sk_test_stub", WEBHOOK_SECRET, PRICE_ID, api_base=stub.url, max_network_retries=0)


def _import(database, provider, clock, path=EXPORT, **kwargs):
    ctx = WebhookContext(clock, "http://testserver")
    return run_import(database, provider, path, clock, ctx, **kwargs)


def _counts(database) -> dict[str, int]:
    with database.transaction() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Customer, Subscription, License, Pospal1Import, Pospal1Trial, Outbox, AuditLog)
        }


def _line(report, subject_start: str):
    found = [line for line in report.lines if (line.subject + " ").startswith(subject_start + " ")]
    assert len(found) == 1, (subject_start, [line.text() for line in report.lines])
    return found[0]


def test_the_report_is_exact_and_stripe_wins(database, provider, clock):
    report = _import(database, provider, clock)

    assert report.summary() == "41 imported, 2 skipped, 2 unmatched, 5 bad, 2 trial"
    assert _line(report, "row 31").detail.startswith("sub_1Old0031 canceled x1; Stripe wins over the old")
    assert "past_due" in _line(report, "row 33").detail
    assert _line(report, "row 34").detail == "sub_1Old0034 active x3"
    assert "Stripe wins over the old row's 'inactive'" in _line(report, "row 38").detail
    assert "Stripe's customer cus_NewStripe39, not the old row's cus_Old0039" in (
        _line(report, "row 39").detail
    )
    assert _line(report, "row 40").kind == "skipped"
    assert _line(report, "row 42").kind == "unmatched"
    assert (_line(report, "row 44").kind, _line(report, "row 44").detail) == ("bad", "no e-mail address")
    assert "unknown status 'suspended'" in _line(report, "row 45").detail
    assert "another letter case is in row(s) 47" in _line(report, "row 46").detail
    assert "another letter case is in row(s) 46" in _line(report, "row 47").detail
    assert _line(report, "row 48").detail == "not an e-mail address"
    assert "no unlock token" in _line(report, "row 50").detail
    assert [line.kind for line in report.lines if line.subject.startswith("row 3 ")] == ["imported"]

    with database.transaction() as session:
        by_email = {c.email: c for c in session.scalars(select(Customer))}
        assert len(by_email) == 41
        assert "owner03@cafe03.gr" in by_email  # stored lower-cased, as every e-mail here
        assert by_email["owner39@cafe39.gr"].stripe_customer_id == "cus_NewStripe39"
        assert by_email["owner49@cafe49.gr"].name is None  # the bidi override is not carried over
        assert by_email["owner01@cafe01.gr"].name == "Taverna Nikos 1"
        statuses = {
            s.provider_subscription_id: (s.status, s.quantity) for s in session.scalars(select(Subscription))
        }
        assert statuses["sub_1Old0031"] == ("canceled", 1)
        assert statuses["sub_1Old0034"] == ("active", 3)
        assert statuses["sub_1Old0038"] == ("active", 1)
        imported = session.get(Pospal1Import, by_email["owner02@cafe02.gr"].id)
        assert imported is not None and imported.old_id == 2 and imported.used_at is None
        assert len(imported.token_hash or "") == 64  # a hash, never the token itself
        assert session.get(Pospal1Import, by_email["owner50@cafe50.gr"].id).token_hash is None
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0  # nobody is e-mailed
        assert session.scalar(select(func.count()).select_from(Pospal1Trial)) == 2


def test_a_second_run_changes_nothing(database, provider, clock):
    _import(database, provider, clock)
    before = _counts(database)
    clock.advance(3600)

    again = _import(database, provider, clock)

    assert again.count("imported") == 0
    assert again.summary() == "0 imported, 45 skipped, 2 unmatched, 5 bad, 0 trial"
    assert _line(again, "row 1").detail == "already imported"
    assert _counts(database) == before


def test_a_failure_midway_leaves_nothing(database, provider, clock):
    def fail(index: int) -> None:
        if index == 20:
            raise RuntimeError("the machine lost power")

    with pytest.raises(RuntimeError):
        _import(database, provider, clock, after_row=fail)

    assert all(count == 0 for count in _counts(database).values()), _counts(database)


def test_a_dry_run_reports_the_same_and_writes_nothing(database, provider, clock):
    report = _import(database, provider, clock, dry_run=True)

    assert report.summary() == (
        "41 imported, 2 skipped, 2 unmatched, 5 bad, 2 trial (dry run: nothing written)"
    )
    assert all(count == 0 for count in _counts(database).values())


def test_the_sqlite_file_itself_imports_the_same(database, provider, clock, tmp_path):
    path = tmp_path / "pospal-subscriptions.sqlite"
    # The Worker's own database file, as a local `wrangler d1` keeps it.
    memory, conn = load_export(EXPORT), sqlite3.connect(path)
    memory.backup(conn)
    memory.close()
    conn.close()

    report = _import(database, provider, clock, path=path)

    assert report.summary() == "41 imported, 2 skipped, 2 unmatched, 5 bad, 2 trial"


def test_a_cut_off_export_is_refused_before_anything_is_written(database, provider, clock, tmp_path):
    from server.errors import ImportRefused

    cut = tmp_path / "cut.sql"
    cut.write_text(EXPORT.read_text()[:4000])

    with pytest.raises(ImportRefused):
        _import(database, provider, clock, path=cut)
    assert all(count == 0 for count in _counts(database).values())


def test_the_unlock_token_hash_is_what_the_old_row_held(database, provider, clock):
    _import(database, provider, clock)
    old = load_export(EXPORT)
    (token,) = old.execute("SELECT unlock_token FROM customers WHERE id = 7").fetchone()
    with database.transaction() as session:
        customer = session.scalars(select(Customer).where(Customer.email == "owner07@cafe07.gr")).one()
        assert session.get(Pospal1Import, customer.id).token_hash == token_hash(token)


def test_the_command_killed_while_stripe_answers_leaves_nothing_then_imports(
    server_env, database, stub, tmp_path
):
    import threading

    stub.hold = threading.Event()
    env = {**os.environ, **server_env, **stripe_env(stub.url)}
    command = [sys.executable, "-m", "server.cli", "import-pospal1", str(EXPORT)]
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, **new_group_kwargs()
    )
    try:
        assert stub.held.wait(60), "the import never asked Stripe"
        proc.kill()
        proc.wait(30)
    finally:
        stub.hold.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert all(count == 0 for count in _counts(database).values())

    stub.hold = None
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    # Run with the real clock (December 2026): the old trials have all ended by then.
    assert done.stdout.splitlines()[-1] == "41 imported, 2 skipped, 2 unmatched, 5 bad, 0 trial"
