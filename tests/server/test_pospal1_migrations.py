"""`POST /v1/migrations`: the old unlock token buys one PC's first terminal, once, inside the window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.models import AuditLog, Machine, Pospal1Import
from server.pospal1 import token_hash
from tests.server.conftest import START, outbox_rows, token_claims

TOKEN = "k3j9x0q2m5v8b1n4c7z6l0p9aa"
EMAIL = "owner@kafe-thalassa.gr"


@pytest.fixture
def open_app(settings, clock, database, mailer):
    from server.app import create_app

    window = (START - timedelta(days=1), START + timedelta(days=30))
    return create_app(
        settings.with_changes(migration_window=window),
        clock=clock,
        db=database,
        mailer=mailer,
        start_worker=False,
    )


@pytest.fixture
def open_client(open_app):
    with TestClient(open_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def imported(database, clock, seed_subscription):
    customer_id, _, license_id = seed_subscription(email=EMAIL, seats=2)
    with database.transaction() as session:
        session.add(
            Pospal1Import(customer_id=customer_id, old_id=7, token_hash=token_hash(TOKEN), imported_at=START)
        )
    return license_id


def _migrate(client, machine, email=EMAIL, token=TOKEN, **extra):
    body = {**machine.identity(), "email": email, "unlock_token": token, "locale": "el", **extra}
    return machine.post(client, "/v1/migrations", body, machine_id=None)


def test_the_old_token_gives_this_pc_a_terminal_once_and_the_owner_hears_in_greek(
    open_client, imported, make_machine, database
):
    first = make_machine(terminal_name="Ταμείο μπαρ")
    answer = _migrate(open_client, first)

    assert answer.status_code == 200, answer.text
    claims = token_claims(answer.json()["token"])
    assert (claims["status"], claims["sub"], claims["terminal"]) == ("active", imported, "Ταμείο μπαρ")
    mails = outbox_rows(database, to=EMAIL)
    assert [m.template for m in mails] == ["pospal1_takeover"]
    assert mails[0].locale == "el" and mails[0].context["terminal_name"] == "Ταμείο μπαρ"

    second = _migrate(open_client, make_machine(terminal_name="Till 2"))
    assert second.status_code == 409 and second.json()["error"] == "migration_used"
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Machine)) == 1
        row = session.scalars(select(Pospal1Import)).one()
        assert row.used_machine_id == answer.json()["machine_id"]


def test_the_pc_that_took_over_gets_its_lost_answer_again_and_nothing_more(
    open_client, imported, make_machine, database
):
    """Its answer was lost (a cut line, the server killed after the commit): the same machine key asks
    again and gets the same terminal; no second seat, e-mail or take-over record. Once its terminal is
    removed, the old token moves nothing again."""
    first = make_machine(terminal_name="Ταμείο μπαρ")
    answer = _migrate(open_client, first)
    assert answer.status_code == 200, answer.text

    again = _migrate(open_client, first)
    assert again.status_code == 200, again.text
    assert again.json()["machine_id"] == answer.json()["machine_id"]
    assert token_claims(again.json()["token"])["status"] == "active"
    assert [m.template for m in outbox_rows(database, to=EMAIL)] == ["pospal1_takeover"]
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Machine)) == 1
        row = session.scalars(select(Pospal1Import)).one()
        used_at = row.used_at
        machine = session.get(Machine, answer.json()["machine_id"])
        machine.deactivated_at = used_at  # the owner removed the terminal
    removed = _migrate(open_client, first)
    assert removed.status_code == 409 and removed.json()["error"] == "migration_used"
    with database.transaction() as session:
        assert session.scalars(select(Pospal1Import)).one().used_at == used_at


def test_a_wrong_token_changes_nothing_and_counts_against_the_address(
    open_client, imported, make_machine, database
):
    with database.transaction() as session:
        audits = session.scalar(select(func.count()).select_from(AuditLog))
    for _ in range(5):
        wrong = _migrate(open_client, make_machine(), token="guess" + TOKEN)
        assert wrong.status_code == 401 and wrong.json()["error"] == "migration_refused"
    stranger = _migrate(open_client, make_machine(), email="nobody@else.gr")
    assert stranger.status_code == 429  # the sixth try from this address, whatever it gives

    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Machine)) == 0
        assert session.scalar(select(func.count()).select_from(AuditLog)) == audits
        assert session.scalars(select(Pospal1Import)).one().used_at is None
    assert outbox_rows(database, to=EMAIL) == []


def test_an_unknown_email_is_refused_like_a_wrong_token(open_client, imported, make_machine):
    answer = _migrate(open_client, make_machine(), email="nobody@else.gr")
    assert (answer.status_code, answer.json()["error"]) == (401, "migration_refused")


def test_outside_the_window_the_old_token_is_refused(client, imported, make_machine):
    # `client` has no POSPAL_MIGRATION_WINDOW: closed.
    answer = _migrate(client, make_machine())
    assert (answer.status_code, answer.json()["error"]) == (403, "migration_closed")


def test_after_the_window_closes_the_old_token_is_refused(open_client, imported, make_machine, clock):
    clock.advance(31 * 86400)
    answer = _migrate(open_client, make_machine())
    assert (answer.status_code, answer.json()["error"]) == (403, "migration_closed")


def test_a_cancelled_subscription_is_not_revived(
    open_client, database, clock, seed_subscription, make_machine
):
    customer_id, _, _ = seed_subscription(email=EMAIL, status="canceled")
    with database.transaction() as session:
        session.add(Pospal1Import(customer_id=customer_id, token_hash=token_hash(TOKEN), imported_at=START))
    answer = _migrate(open_client, make_machine())
    assert (answer.status_code, answer.json()["error"]) == (404, "no_subscription")


def test_the_window_setting_is_checked():
    from server.config import Settings
    from server.errors import ConfigError

    base = {"POSPAL_ENV": "development"}
    ok = Settings.from_env({**base, "POSPAL_MIGRATION_WINDOW": "2027-03-01T00:00Z/2027-05-01"})
    assert (
        ok.migration_window is not None and ok.migration_window[1].isoformat() == "2027-05-01T00:00:00+00:00"
    )
    for bad in (
        "2027-03-01",
        "2027-05-01/2027-03-01",
        "2027-01-01/2027-12-31",
        "2027-03-01T10:00/2027-04-01",
    ):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**base, "POSPAL_MIGRATION_WINDOW": bad})
        assert "POSPAL_MIGRATION_WINDOW" in str(caught.value)


def test_check_names_a_bad_migration_window(server_env, monkeypatch, capsys):
    from server.cli import main

    for name, value in {**server_env, "POSPAL_MIGRATION_WINDOW": "2027-05-01/2027-03-01"}.items():
        monkeypatch.setenv(name, value)

    assert main(["check"]) == 1
    assert "FAIL settings: POSPAL_MIGRATION_WINDOW ends before it starts" in capsys.readouterr().out
