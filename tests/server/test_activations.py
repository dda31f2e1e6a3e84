"""POST /v1/activations: code or checkout proof, seats enforced with the list of active terminals."""

from __future__ import annotations

from server.models import AuditLog, Checkout
from tests.server.conftest import outbox_rows, token_claims


def test_second_terminal_on_a_one_seat_subscription_gets_409_listing_the_first(
    client, seed_subscription, login_code, make_machine
):
    seed_subscription(email="owner@cafe.gr", seats=1)
    first = make_machine(terminal_name="Bar")
    assert first.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    second = make_machine(terminal_name="Terrace")
    response = second.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "seats_full"
    assert [(t["machine_id"], t["terminal_name"]) for t in body["terminals"]] == [(first.machine_id, "Bar")]
    assert body["terminals"][0]["last_seen"].endswith("Z")


def test_the_refused_code_still_removes_a_terminal_then_activation_succeeds(
    client, seed_subscription, login_code, make_machine
):
    seed_subscription(email="owner@cafe.gr", seats=1)
    first = make_machine()
    first.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    second = make_machine()
    code = login_code(client, "owner@cafe.gr")
    assert second.activate(client, "owner@cafe.gr", code).status_code == 409
    removed = client.post(
        "/v1/terminals/remove", json={"email": "owner@cafe.gr", "code": code, "machine_id": first.machine_id}
    )
    assert removed.json() == {"ok": True}
    assert second.activate(client, "owner@cafe.gr", code).status_code == 200


def test_activation_returns_a_license_token_and_audits(
    client, seed_subscription, login_code, make_machine, database
):
    _, _, license_id = seed_subscription(email="owner@cafe.gr", seats=2)
    machine = make_machine()
    response = machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    body = response.json()
    assert body["license_id"] == license_id
    claims = token_claims(body["token"])
    assert (claims["kind"], claims["status"], claims["seats"], claims["email"]) == (
        "license",
        "active",
        2,
        "owner@cafe.gr",
    )
    assert claims["fp"] == machine.fp
    with database.transaction() as session:
        actions = [
            a.action for a in session.query(AuditLog).filter(AuditLog.machine_id == machine.machine_id)
        ]
    assert actions == ["machine.activated"]
    assert [r.template for r in outbox_rows(database, to="owner@cafe.gr")][-1] == "terminal_added"


def test_activating_the_same_machine_again_takes_no_extra_seat(
    client, seed_subscription, login_code, make_machine
):
    seed_subscription(email="owner@cafe.gr", seats=1)
    machine = make_machine()
    first = machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    again = machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    assert again.status_code == 200
    assert again.json()["machine_id"] == first.json()["machine_id"]


def test_no_subscription_gets_404(client, login_code, make_machine, database, clock):
    from server.models import Customer

    with database.transaction() as session:
        session.add(Customer(email="lapsed@cafe.gr", created_at=clock.now()))
    response = make_machine().activate(client, "lapsed@cafe.gr", login_code(client, "lapsed@cafe.gr"))
    assert response.status_code == 404
    assert response.json()["error"] == "no_subscription"


def test_cancelled_subscription_cannot_activate(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr", status="canceled")
    response = make_machine().activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    assert response.json()["error"] == "no_subscription"


def test_neither_code_nor_checkout_is_invalid(client, make_machine):
    response = make_machine().activate(client, "owner@cafe.gr")
    assert response.status_code == 422


def test_activation_must_be_signed_by_the_key_in_the_body(
    client, seed_subscription, login_code, make_machine
):
    seed_subscription(email="owner@cafe.gr")
    machine, other = make_machine(), make_machine()
    code = login_code(client, "owner@cafe.gr")
    response = machine.activate(client, "owner@cafe.gr", code, machine_public_key=other.public_key)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"


def _checkout(database, clock, customer_id, machine, status):
    with database.transaction() as session:
        checkout = Checkout(
            customer_id=customer_id,
            status=status,
            quantity=1,
            machine_public_key=machine.public_key,
            fingerprint=machine.fp,
            terminal_name=machine.terminal_name,
            created_at=clock.now(),
        )
        session.add(checkout)
        session.flush()
        return checkout.id


def test_completed_checkout_activates_only_the_machine_that_started_it(
    client, seed_subscription, make_machine, database, clock
):
    customer_id, _, license_id = seed_subscription(email="owner@cafe.gr")
    buyer, stranger = make_machine(), make_machine()
    checkout_id = _checkout(database, clock, customer_id, buyer, "complete")
    assert stranger.activate(client, "owner@cafe.gr", checkout_id=checkout_id).status_code == 404
    response = buyer.activate(client, "owner@cafe.gr", checkout_id=checkout_id)
    assert response.status_code == 200
    assert response.json()["license_id"] == license_id


def test_open_checkout_cannot_activate_yet(client, seed_subscription, make_machine, database, clock):
    customer_id, _, _ = seed_subscription(email="owner@cafe.gr")
    buyer = make_machine()
    checkout_id = _checkout(database, clock, customer_id, buyer, "open")
    response = buyer.activate(client, "owner@cafe.gr", checkout_id=checkout_id)
    assert response.status_code == 409
    assert response.json()["error"] == "checkout_incomplete"


def test_single_component_activation_request_refused(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr")
    code = login_code(client, "owner@cafe.gr")
    response = make_machine(fp={"machine_id": "ab" * 32}).activate(client, "owner@cafe.gr", code)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    # The refused request did not use up the code.
    assert make_machine().activate(client, "owner@cafe.gr", code).status_code == 200
