"""Terminals list/remove and the billing portal: a signed machine or an email code, never an email alone."""

from __future__ import annotations

from tests.server.conftest import outbox_rows, token_claims


def activated(client, seed_subscription, login_code, make_machine, seats=2, names=("Bar", "Terrace")):
    seed_subscription(email="owner@cafe.gr", seats=seats)
    machines = []
    for name in names:
        machine = make_machine(terminal_name=name)
        assert (
            machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
        )
        machines.append(machine)
        machine.clock.advance(60)
    return machines


def test_signed_machine_lists_terminals_and_knows_itself(client, seed_subscription, login_code, make_machine):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine)
    response = bar.post(client, "/v1/terminals", {})
    terminals = response.json()["terminals"]
    assert [(t["terminal_name"], t["this_machine"]) for t in terminals] == [("Bar", True), ("Terrace", False)]


def test_owner_with_code_removes_a_terminal_which_then_gets_revoked(
    client, seed_subscription, login_code, make_machine, database
):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine)
    code = login_code(client, "owner@cafe.gr", "terminals")
    listed = client.post("/v1/terminals", json={"email": "owner@cafe.gr", "code": code}).json()["terminals"]
    assert not any(t["this_machine"] for t in listed)
    response = client.post(
        "/v1/terminals/remove",
        json={"email": "owner@cafe.gr", "code": code, "machine_id": terrace.machine_id},
    )
    assert response.json() == {"ok": True}
    assert token_claims(terrace.refresh(client).json()["token"])["status"] == "revoked"
    assert token_claims(bar.refresh(client).json()["token"])["status"] == "active"
    assert outbox_rows(database, to="owner@cafe.gr")[-1].template == "terminal_removed"


def test_email_without_code_is_refused(client, seed_subscription, login_code, make_machine):
    bar, _ = activated(client, seed_subscription, login_code, make_machine)
    listed = client.post("/v1/terminals", json={"email": "owner@cafe.gr"})
    assert listed.status_code == 401
    removed = client.post(
        "/v1/terminals/remove", json={"email": "owner@cafe.gr", "machine_id": bar.machine_id}
    )
    assert removed.status_code == 401
    assert client.post("/v1/portal", json={"email": "owner@cafe.gr"}).status_code == 401


def test_cannot_remove_another_customers_terminal(client, seed_subscription, login_code, make_machine):
    bar, _ = activated(client, seed_subscription, login_code, make_machine)
    seed_subscription(email="rival@bar.gr")
    intruder = make_machine()
    intruder.activate(client, "rival@bar.gr", login_code(client, "rival@bar.gr"))
    proof = login_code(client, "rival@bar.gr", "owner")
    assert intruder.post(client, "/v1/owner", {"email": "rival@bar.gr", "code": proof}).status_code == 200
    response = intruder.post(client, "/v1/terminals/remove", {"machine_id": bar.machine_id})
    assert response.status_code == 404
    assert token_claims(bar.refresh(client).json()["token"])["status"] == "active"


def test_portal_needs_proof_and_returns_the_providers_url(
    client, seed_subscription, login_code, make_machine, app
):
    calls = []

    class Billing:
        def create_portal_session(self, customer_id, return_url):
            calls.append((customer_id, return_url))
            return "https://billing.example/session/1"

    app.state.services.billing = Billing()
    bar, _ = activated(client, seed_subscription, login_code, make_machine)
    assert bar.post(client, "/v1/portal", {}).status_code == 403  # a staff member at the till
    owner = login_code(client, "owner@cafe.gr", "owner")
    assert bar.post(client, "/v1/owner", {"email": "owner@cafe.gr", "code": owner}).status_code == 200
    signed = bar.post(client, "/v1/portal", {})
    assert signed.json() == {"url": "https://billing.example/session/1"}
    code = login_code(client, "owner@cafe.gr", "portal")
    by_code = client.post("/v1/portal", json={"email": "owner@cafe.gr", "code": code})
    assert by_code.status_code == 200
    # One-time: the same portal code does not open a second session.
    assert client.post("/v1/portal", json={"email": "owner@cafe.gr", "code": code}).status_code == 401
    assert len(calls) == 2 and calls[0][0].startswith("cus_")
    assert calls[0][1] == "http://testserver/portal/return"


def test_portal_refuses_foreign_return_urls(client, seed_subscription, login_code, make_machine):
    bar, _ = activated(client, seed_subscription, login_code, make_machine)
    owner = login_code(client, "owner@cafe.gr", "owner")
    assert bar.post(client, "/v1/owner", {"email": "owner@cafe.gr", "code": owner}).status_code == 200
    response = bar.post(client, "/v1/portal", {"return_url": "https://evil.example/phish"})
    assert response.status_code == 422


# -- issue 28 case 9: every code has one purpose and one use ----------------------------------------


def test_a_waiters_used_activation_code_removed_a_till(client, seed_subscription, login_code, make_machine):
    seed_subscription(email="owner@cafe.gr", seats=2)
    bar, waiter = make_machine(terminal_name="Bar"), make_machine(terminal_name="Waiter")
    assert bar.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    used = login_code(client, "owner@cafe.gr")
    assert waiter.activate(client, "owner@cafe.gr", used).status_code == 200
    body = {"email": "owner@cafe.gr", "code": used, "machine_id": bar.machine_id}
    assert client.post("/v1/terminals/remove", json=body).status_code == 401
    assert token_claims(bar.refresh(client).json()["token"])["status"] == "active"


def test_a_used_activation_code_was_accepted_by_keep(client, seed_subscription, login_code, make_machine):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine)
    used = login_code(client, "owner@cafe.gr")
    third = make_machine(terminal_name="Third")
    assert third.activate(client, "owner@cafe.gr", used).status_code == 409  # full: the code is not spent
    body = {"email": "owner@cafe.gr", "code": used, "machine_ids": [bar.machine_id]}
    assert client.post("/v1/terminals/keep", json=body).status_code == 401  # not a keep code, spent or not
    remove = {"email": "owner@cafe.gr", "code": used, "machine_id": terrace.machine_id}
    assert client.post("/v1/terminals/remove", json=remove).status_code == 200  # frees the seat it needs
    again = {"email": "owner@cafe.gr", "code": used, "machine_id": bar.machine_id}
    assert client.post("/v1/terminals/remove", json=again).status_code == 401  # but only that one seat
    assert third.activate(client, "owner@cafe.gr", used).status_code == 200
    assert client.post("/v1/terminals/keep", json=body).status_code == 401  # and spent by the activation


def test_an_owners_code_spent_proving_on_one_till_was_accepted_again(
    client, seed_subscription, login_code, make_machine
):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine)
    code = login_code(client, "owner@cafe.gr", "owner")
    assert bar.post(client, "/v1/owner", {"email": "owner@cafe.gr", "code": code}).status_code == 200
    assert terrace.post(client, "/v1/owner", {"email": "owner@cafe.gr", "code": code}).status_code == 401
    for path, extra in (
        ("/v1/terminals/remove", {"machine_id": terrace.machine_id}),
        ("/v1/terminals/keep", {"machine_ids": [terrace.machine_id]}),
    ):
        answer = client.post(path, json={"email": "owner@cafe.gr", "code": code, **extra})
        assert answer.status_code == 401, path
    assert token_claims(terrace.refresh(client).json()["token"])["status"] == "active"


def test_a_terminals_code_removes_once_then_still_lists(client, seed_subscription, login_code, make_machine):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine)
    code = login_code(client, "owner@cafe.gr", "terminals")
    body = {"email": "owner@cafe.gr", "code": code}
    assert (
        client.post("/v1/terminals/remove", json={**body, "machine_id": terrace.machine_id}).status_code
        == 200
    )
    assert client.post("/v1/terminals/remove", json={**body, "machine_id": bar.machine_id}).status_code == 401
    listed = client.post("/v1/terminals", json=body)  # `pospal-agent terminals --remove` lists afterwards
    assert [t["terminal_name"] for t in listed.json()["terminals"]] == ["Bar"]


def test_a_spent_activation_or_owners_code_lists_no_terminals(
    client, seed_subscription, login_code, make_machine
):
    bar, terrace = activated(client, seed_subscription, login_code, make_machine, seats=3)
    used = login_code(client, "owner@cafe.gr")
    assert make_machine().activate(client, "owner@cafe.gr", used).status_code == 200
    assert client.post("/v1/terminals", json={"email": "owner@cafe.gr", "code": used}).status_code == 401
    owner = login_code(client, "owner@cafe.gr", "owner")
    assert bar.post(client, "/v1/owner", {"email": "owner@cafe.gr", "code": owner}).status_code == 200
    assert client.post("/v1/terminals", json={"email": "owner@cafe.gr", "code": owner}).status_code == 401
