"""Only the owner moves money and seats (issue 13 item 2): every owner route refuses a till without proof.

Each finding of the review is a test named after it, on SQLite and PostgreSQL. "Nothing changed" is
checked on the rows a user would notice: terminals, seat states, the customer's name, checkouts, the
subscription's quantity and the provider calls.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from server.errors import BillingError
from server.models import Checkout, Customer, Machine, Subscription
from tests.server.conftest import token_claims

OWNER = "owner@cafe.gr"


class FakePortal:
    """A billing provider stand-in that records portal sessions (and can refuse the first ones)."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def create_portal_session(self, customer_id: str, return_url: str) -> str:
        if self.fail:
            self.fail -= 1
            raise BillingError("provider refused")
        self.calls.append(customer_id)
        return "https://billing.example/session"


def _activated(client, seed_subscription, login_code, make_machine, seats=2, names=("Bar", "Terrace")):
    seed_subscription(email=OWNER, seats=seats)
    machines = []
    for name in names:
        machine = make_machine(terminal_name=name)
        response = machine.activate(client, OWNER, login_code(client, OWNER))
        assert response.status_code == 200, response.text
        machines.append(machine)
    return machines


def _prove(client, login_code, machine, email=OWNER, **extra):
    code = login_code(client, email, "owner")
    body = {"email": email, "code": code, **extra}
    signed = {} if machine.machine_id else {"machine_id": None}
    return machine.post(client, "/v1/owner", body, **signed)


def _snapshot(database):
    with database.transaction() as session:
        machines = sorted(
            (m.id, m.deactivated_at, m.seat_state) for m in session.scalars(select(Machine)).all()
        )
        customers = sorted((c.email, c.name) for c in session.scalars(select(Customer)).all())
        checkouts = session.scalar(select(func.count()).select_from(Checkout))
        quantities = sorted(s.quantity for s in session.scalars(select(Subscription)).all())
    return machines, customers, checkouts, quantities


ROUTES = [
    ("/v1/portal", lambda bar, terrace: {}),
    ("/v1/terminals/remove", lambda bar, terrace: {"machine_id": terrace.machine_id}),
    ("/v1/terminals/keep", lambda bar, terrace: {"machine_ids": [bar.machine_id]}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES, ids=[r[0] for r in ROUTES])
def test_any_staff_member_could_open_billing_or_free_a_seat(
    client, app, database, seed_subscription, login_code, make_machine, path, body
):
    """A signed till without the owner's proof gets 403, an email alone 401; nothing changes."""
    portal = app.state.services.billing = FakePortal()
    bar, terrace = _activated(client, seed_subscription, login_code, make_machine)
    before = _snapshot(database)
    signed = bar.post(client, path, body(bar, terrace))
    assert (signed.status_code, signed.json()["error"]) == (403, "owner_proof_required")
    email_only = client.post(path, json={"email": OWNER, **body(bar, terrace)})
    assert email_only.status_code == 401
    assert _snapshot(database) == before and portal.calls == []
    # The same till after the owner typed the emailed code on it: allowed.
    assert _prove(client, login_code, bar).status_code == 200
    assert bar.post(client, path, body(bar, terrace)).status_code == 200


def test_staff_may_still_see_status_sync_list_terminals_and_remove_their_own_till(
    client, seed_subscription, login_code, make_machine
):
    bar, terrace = _activated(client, seed_subscription, login_code, make_machine)
    assert bar.refresh(client).status_code == 200
    listed = bar.post(client, "/v1/terminals", {})
    assert sorted(t["terminal_name"] for t in listed.json()["terminals"]) == ["Bar", "Terrace"]
    assert terrace.post(client, "/v1/terminals/remove", {"machine_id": terrace.machine_id}).status_code == 200
    assert token_claims(terrace.refresh(client).json()["token"])["status"] == "revoked"


def test_owner_proof_lasts_15_minutes_on_that_terminal_only(
    client, app, clock, seed_subscription, login_code, make_machine
):
    app.state.services.billing = FakePortal()
    bar, terrace = _activated(client, seed_subscription, login_code, make_machine)
    answer = _prove(client, login_code, bar)
    assert answer.status_code == 200
    assert bar.post(client, "/v1/portal", {}).status_code == 200
    assert terrace.post(client, "/v1/portal", {}).status_code == 403  # proven on the bar's PC only
    clock.advance(16 * 60)
    assert bar.post(client, "/v1/portal", {}).status_code == 403


def test_owner_code_is_one_time_and_a_strangers_email_proves_nothing(
    client, seed_subscription, login_code, make_machine
):
    bar, _ = _activated(client, seed_subscription, login_code, make_machine)
    code = login_code(client, OWNER, "owner")
    body = {"email": OWNER, "code": code}
    assert bar.post(client, "/v1/owner", body).status_code == 200
    assert bar.post(client, "/v1/owner", body).status_code == 401
    stranger = bar.post(client, "/v1/owner", {"email": "nobody@else.gr", "code": "123456"})
    assert stranger.status_code == 401


def test_unauthenticated_checkout_with_a_customers_email_renamed_the_victim(
    client, database, seed_subscription, login_code, make_machine
):
    """The attacker's checkout is refused before anything is written: no rename, no checkout row."""
    _activated(client, seed_subscription, login_code, make_machine, names=("Bar",))
    before = _snapshot(database)
    attacker = make_machine()
    body = {**attacker.identity(), "email": OWNER, "restaurant_name": "Hacked", "quantity": 100}
    response = attacker.post(client, "/v1/checkout", body, machine_id=None)
    assert (response.status_code, response.json()["error"]) == (403, "owner_proof_required")
    assert _snapshot(database) == before


def test_attacker_could_reach_the_victims_portal_through_its_own_paid_checkout(
    client, app, database, seed_subscription, login_code, make_machine
):
    """Without the victim's code the attacker gets no checkout on the victim's customer, so no license,
    so no portal; the victim's terminal stays active."""
    portal = app.state.services.billing
    (bar,) = _activated(client, seed_subscription, login_code, make_machine, names=("Bar",))
    attacker = make_machine()
    body = {**attacker.identity(), "email": OWNER, "restaurant_name": "Mine now", "quantity": 1}
    assert attacker.post(client, "/v1/checkout", body, machine_id=None).status_code == 403
    guess = {"email": OWNER, "code": "000000", "machine_public_key": attacker.public_key}
    assert attacker.post(client, "/v1/owner", guess, machine_id=None).status_code == 401
    assert attacker.post(client, "/v1/portal", {}, machine_id=None).status_code == 401
    assert app.state.services.billing is portal
    assert token_claims(bar.refresh(client).json()["token"])["status"] == "active"


def test_proven_customer_with_a_subscription_is_offered_add_terminal_not_a_second_subscription(
    client, database, seed_subscription, login_code, make_machine
):
    _activated(client, seed_subscription, login_code, make_machine, names=("Bar",))
    new_pc = make_machine(terminal_name="Kitchen")
    assert _prove(client, login_code, new_pc, machine_public_key=new_pc.public_key).status_code == 200
    body = {**new_pc.identity(), "email": OWNER, "restaurant_name": "Cafe Renamed", "quantity": 1}
    refused = new_pc.post(client, "/v1/checkout", body, machine_id=None)
    assert (refused.status_code, refused.json()["error"]) == (409, "subscription_exists")
    asked = new_pc.post(client, "/v1/checkout", {**body, "new_subscription": True}, machine_id=None)
    assert asked.status_code == 200, asked.text
    with database.transaction() as session:
        assert session.scalars(select(Customer.name).where(Customer.email == OWNER)).one() == "Cafe Renamed"


def test_portal_code_was_spent_before_the_portal_session_existed(
    client, app, seed_subscription, login_code, make_machine
):
    """A provider refusal leaves the owner's emailed code usable for the retry."""
    app.state.services.billing = FakePortal(fail=1)
    _activated(client, seed_subscription, login_code, make_machine, names=("Bar",))
    code = login_code(client, OWNER, "portal")
    body = {"email": OWNER, "code": code}
    assert client.post("/v1/portal", json=body).json()["error"] == "billing_unavailable"
    assert client.post("/v1/portal", json=body).status_code == 200
    assert client.post("/v1/portal", json=body).status_code == 401  # then it is spent


def test_proofs_expire_and_are_purged(database, clock, seed_subscription):
    from server import authority

    customer_id, _, _ = seed_subscription(email=OWNER)
    with database.transaction() as session:
        authority.remember(session, customer_id, "k" * 43, clock.now())
        assert authority.holds(session, customer_id, "k" * 43, clock.now())
        later = clock.now() + timedelta(minutes=15)
        assert not authority.holds(session, customer_id, "k" * 43, later)
        assert authority.purge_expired(session, later) == 1


def test_a_buyer_whose_first_checkout_was_left_unpaid_may_retry_without_a_code_and_renames_nothing(
    client, database, make_machine
):
    buyer = make_machine()
    body = {**buyer.identity(), "email": "new@cafe.gr", "restaurant_name": "Cafe", "quantity": 1}
    assert buyer.post(client, "/v1/checkout", body, machine_id=None).status_code == 200
    retry = {**body, "restaurant_name": "Someone Else"}
    assert buyer.post(client, "/v1/checkout", retry, machine_id=None).status_code == 200
    with database.transaction() as session:
        assert session.scalars(select(Customer.name).where(Customer.email == "new@cafe.gr")).one() == "Cafe"
        assert session.scalar(select(func.count()).select_from(Checkout)) == 2
