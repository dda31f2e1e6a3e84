"""Seats follow the subscription (issue 13 item 3) and free themselves (issue 17 part 3).

The quantity changes go through the same `sync_subscription` a webhook runs, on the sandbox provider;
time moves with the FakeClock. Every refresh here goes through the app's refresh fast path, which hands
machines without a seat to the slow path.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import select

from server import seats
from server.billing.sync import WebhookContext, sync_subscription
from server.models import Machine, Subscription
from tests.server.conftest import outbox_rows, token_claims

OWNER = "owner@taverna.gr"
DAY = 86400


def _subscribe(client, make_machine, quantity):
    """Buy `quantity` seats in the sandbox from a first PC, pay, activate it; return (machine, sub id)."""
    first = make_machine(terminal_name="Till 1")
    body = {**first.identity(), "email": OWNER, "restaurant_name": "Taverna", "quantity": quantity}
    answer = first.post(client, "/v1/checkout", body, machine_id=None).json()
    page = answer["url"].removeprefix("http://testserver")
    client.post(page, data={"action": "pay"}, follow_redirects=False)
    assert first.activate(client, OWNER, checkout_id=answer["checkout_id"]).status_code == 200
    return first


def _more(client, make_machine, login_code, names):
    machines = []
    for name in names:
        machine = make_machine(terminal_name=name)
        response = machine.activate(client, OWNER, login_code(client, OWNER))
        assert response.status_code == 200, response.text
        machines.append(machine)
    return machines


def _set_quantity(app, database, clock, quantity):
    """The owner changes the quantity in the portal; the webhook's sync follows."""
    svc = app.state.services
    with database.transaction() as session:
        provider_id = session.scalars(select(Subscription.provider_subscription_id)).one()
    svc.billing.update_quantity(provider_id, quantity, f"test-{quantity}-{clock.now().timestamp()}")
    ctx = WebhookContext(clock=clock, public_url="http://testserver", system_admin_email=None)
    with database.transaction() as session:
        sync_subscription(session, svc.billing, provider_id, ctx, clock.now())


def _state(client, machine):
    claims = token_claims(machine.refresh(client).json()["token"])
    return claims["status"], claims.get("revoke_reason")


def test_lowering_the_quantity_from_3_to_1_kept_all_3_terminals_active(
    client, app, database, clock, make_machine, login_code
):
    """The two least recently seen get a signed seats_exceeded answer; the owner is emailed."""
    first = _subscribe(client, make_machine, 3)
    second, third = _more(client, make_machine, login_code, ("Till 2", "Till 3"))
    clock.advance(3600)
    third.refresh(client)  # Till 3 took an order a moment ago; Tills 1 and 2 an hour ago
    _set_quantity(app, database, clock, 1)
    assert _state(client, third) == ("active", None)
    assert _state(client, first) == ("revoked", "seats_exceeded")
    assert _state(client, second) == ("revoked", "seats_exceeded")
    (mail,) = outbox_rows(database, to=OWNER, template="seats_exceeded")
    assert mail.context["seats"] == 1 and set(mail.context["terminals"].split(", ")) == {"Till 1", "Till 2"}
    listed = third.post(client, "/v1/terminals", {}).json()
    assert listed["seats"] == 1
    rows = [(t["terminal_name"], t["active"], t["reason"]) for t in listed["terminals"]]
    assert rows[0] == ("Till 3", True, None)  # active ones first
    assert set(rows[1:]) == {("Till 1", False, "seats_exceeded"), ("Till 2", False, "seats_exceeded")}


def test_raising_the_quantity_again_restores_them(client, app, database, clock, make_machine, login_code):
    first = _subscribe(client, make_machine, 2)
    (second,) = _more(client, make_machine, login_code, ("Till 2",))
    _set_quantity(app, database, clock, 1)
    assert "seats_exceeded" in {_state(client, first)[1], _state(client, second)[1]}
    _set_quantity(app, database, clock, 2)
    assert _state(client, first) == ("active", None) and _state(client, second) == ("active", None)


def test_owner_chooses_which_terminals_stay(client, app, database, clock, make_machine, login_code):
    first = _subscribe(client, make_machine, 2)
    (second,) = _more(client, make_machine, login_code, ("Till 2",))
    clock.advance(60)
    second.refresh(client)
    _set_quantity(app, database, clock, 1)
    assert _state(client, first) == ("revoked", "seats_exceeded")
    code = login_code(client, OWNER, "owner")
    assert second.post(client, "/v1/owner", {"email": OWNER, "code": code}).status_code == 200
    too_many = second.post(
        client, "/v1/terminals/keep", {"machine_ids": [first.machine_id, second.machine_id]}
    )
    assert too_many.status_code == 422
    kept = second.post(client, "/v1/terminals/keep", {"machine_ids": [first.machine_id]})
    assert kept.status_code == 200, kept.text
    assert _state(client, first) == ("active", None)
    assert _state(client, second) == ("revoked", "seats_exceeded")


def test_dead_till_kept_its_seat_until_removed_by_hand(client, clock, make_machine, login_code, database):
    """A till unseen for 30 days frees its seat: the replacement activates with no manual removal; the old
    one, back later, finds no free seat; once a seat frees, it takes it again at its next sync."""
    dead = _subscribe(client, make_machine, 1)
    clock.advance(29 * DAY)
    early = make_machine(terminal_name="Too early")
    assert early.activate(client, OWNER, login_code(client, OWNER)).json()["error"] == "seats_full"
    clock.advance(DAY + 60)
    (replacement,) = _more(client, make_machine, login_code, ("Replacement",))
    listed = replacement.post(client, "/v1/terminals", {}).json()["terminals"]
    assert [(t["terminal_name"], t["active"], t["reason"]) for t in listed] == [
        ("Replacement", True, None),
        ("Till 1", False, "idle"),
    ]
    assert _state(client, dead) == ("revoked", "seats_exceeded")
    assert _state(client, replacement) == ("active", None)
    code = login_code(client, OWNER, "owner")
    assert replacement.post(client, "/v1/owner", {"email": OWNER, "code": code}).status_code == 200
    assert (
        replacement.post(client, "/v1/terminals/remove", {"machine_id": replacement.machine_id}).status_code
        == 200
    )
    assert _state(client, dead) == ("active", None)


def test_idle_till_coming_back_takes_a_free_seat(client, clock, make_machine, login_code, database):
    till = _subscribe(client, make_machine, 2)
    (other,) = _more(client, make_machine, login_code, ("Till 2",))
    clock.advance(31 * DAY)
    other.refresh(client)
    (third,) = _more(client, make_machine, login_code, ("Till 3",))  # takes the idle till's seat
    with database.transaction() as session:
        assert session.get(Machine, till.machine_id).seat_state == seats.IDLE
    assert _state(client, till) == ("revoked", "seats_exceeded")
    assert _state(client, third) == ("active", None)


def test_till_seen_within_the_idle_days_keeps_its_seat_and_the_lease_still_counts(
    client, clock, make_machine, login_code
):
    till = _subscribe(client, make_machine, 1)
    clock.advance(13 * DAY)  # offline but selling on its 14-day lease
    late = make_machine()
    assert late.activate(client, OWNER, login_code(client, OWNER)).status_code == 409
    assert _state(client, till) == ("active", None)


def test_seat_idle_days_is_a_setting(server_env):
    from server.config import Settings

    assert Settings.from_env(server_env).seat_idle_days == 30
    assert Settings.from_env({**server_env, "POSPAL_SEAT_IDLE_DAYS": "45"}).seat_idle_days == 45


def test_terminal_licensed_by_file_counts_until_its_file_ends():
    now = seats_now = __import__("datetime").datetime(2026, 6, 1, tzinfo=__import__("datetime").UTC)
    idle = seats.idle_after(30)
    by_file = SimpleNamespace(
        seat_state=None,
        last_seen_at=None,
        activated_at=now - timedelta(days=90),
        offline_until=seats_now + timedelta(days=10),
    )
    assert seats.describe(by_file, now, idle) == (True, "offline_license")
    assert seats.describe(by_file, now + timedelta(days=11), idle) == (False, "idle")


def test_second_pc_of_a_customer_bought_a_second_subscription(
    client, app, database, clock, make_machine, login_code
):
    """ "Add this terminal": the price first (prorated), then quantity +1 on the same subscription."""
    _subscribe(client, make_machine, 1)
    clock.advance(15 * DAY)  # half way through the period
    kitchen = make_machine(terminal_name="Kitchen")
    body = {**kitchen.identity(), "email": OWNER}
    refused = kitchen.post(client, "/v1/terminals/add", body, machine_id=None)
    assert (refused.status_code, refused.json()["error"]) == (403, "owner_proof_required")
    code = login_code(client, OWNER, "owner")
    proof = {"email": OWNER, "code": code, "machine_public_key": kitchen.public_key}
    assert kitchen.post(client, "/v1/owner", proof, machine_id=None).status_code == 200
    preview = kitchen.post(client, "/v1/terminals/add", body, machine_id=None).json()
    assert (preview["quantity_now"], preview["quantity_new"], preview["currency"]) == (1, 2, "eur")
    assert preview["amount_due"] == 1000 and preview["token"] is None  # EUR 20 for half a period
    with database.transaction() as session:
        assert session.scalars(select(Subscription.quantity)).one() == 1  # a preview changes nothing
    stale = kitchen.post(
        client, "/v1/terminals/add", {**body, "confirm": True, "expected_quantity": 3}, machine_id=None
    )
    assert (stale.status_code, stale.json()["error"]) == (409, "quantity_changed")
    added = kitchen.post(
        client, "/v1/terminals/add", {**body, "confirm": True, "expected_quantity": 2}, machine_id=None
    )
    assert added.status_code == 200, added.text
    claims = token_claims(added.json()["token"])
    assert (claims["status"], claims["seats"]) == ("active", 2) and claims["rn"]  # answers this request
    with database.transaction() as session:
        assert session.scalars(select(Subscription.quantity)).all() == [2]  # one subscription, not two


def test_admin_lists_terminals_with_last_seen_active_or_inactive_and_why(
    client, database, clock, make_machine, login_code
):
    import argparse

    from server import admin
    from server.models import License

    dead = _subscribe(client, make_machine, 1)
    clock.advance(31 * DAY)
    (replacement,) = _more(client, make_machine, login_code, ("Replacement",))
    printed = []
    with database.transaction() as session:
        license_id = session.scalars(select(License.id)).one()
        args = argparse.Namespace(entity="license", action="show", id=license_id, seat_idle_days=30)
        assert admin.run(session, args, clock.now(), printed.append) == 0
    rows = {m["terminal_name"]: m for m in printed[0]["machines"]}
    assert (rows["Replacement"]["active"], rows["Replacement"]["why"]) == (True, None)
    assert (rows["Till 1"]["active"], rows["Till 1"]["why"]) == (False, "idle")
    assert rows["Till 1"]["last_seen_at"] and rows["Till 1"]["id"] == dead.machine_id
