"""Billing routes (server/api/billing.py): the checkout's per-address budget and "add this terminal"
never holding the database while the payment provider is slow."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import select

from server import seats
from server.api.billing import CHECKOUTS_PER_HOUR_PER_IP
from server.models import Customer, License

OWNER = "owner@taverna.gr"


def _checkout(client, machine, email):
    body = {**machine.identity(), "email": email, "restaurant_name": "Taverna"}
    return machine.post(client, "/v1/checkout", body, machine_id=None)


def test_ipv6_checkout_limit_is_per_64(app, make_machine):
    """One customer line (a /64) cannot get a fresh budget per address: one budget for the whole /64."""

    def checkout_from(address: str, n: int) -> int:
        with TestClient(app, client=(address, 40000)) as client:
            return _checkout(client, make_machine(), f"buyer{n}@cafe.gr").status_code

    statuses = [checkout_from(f"2001:db8:1:2::{n:x}", n) for n in range(1, CHECKOUTS_PER_HOUR_PER_IP + 2)]
    assert statuses[:-1] == [200] * CHECKOUTS_PER_HOUR_PER_IP
    assert statuses[-1] == 429
    assert checkout_from("2001:db8:1:3::1", 0) == 200  # the next /64 is someone else


def _subscribe(client, make_machine):
    first = make_machine(terminal_name="Bar")
    answer = _checkout(client, first, OWNER).json()
    page = answer["url"].removeprefix("http://testserver")
    client.post(page, data={"action": "pay"}, follow_redirects=False)
    assert first.activate(client, OWNER, checkout_id=answer["checkout_id"]).status_code == 200


def test_adding_a_terminal_holds_no_database_lock_while_the_provider_is_slow(
    client, app, database, clock, make_machine, login_code
):
    """While the provider takes its time raising the quantity, other requests write at once, even on the
    same license; the route then records the new quantity and activates the PC."""
    _subscribe(client, make_machine)
    kitchen = make_machine(terminal_name="Kitchen")
    code = login_code(client, OWNER, "owner")
    proof = {"email": OWNER, "code": code, "machine_public_key": kitchen.public_key}
    assert kitchen.post(client, "/v1/owner", proof, machine_id=None).status_code == 200
    billing = app.state.services.billing
    held, hold = threading.Event(), threading.Event()
    update_quantity = billing.update_quantity

    def slow_update(*args, **kwargs):
        held.set()
        hold.wait(30)
        return update_quantity(*args, **kwargs)

    billing.update_quantity = slow_update
    body = {**kitchen.identity(), "email": OWNER, "confirm": True, "expected_quantity": 2}
    answers = []
    worker = threading.Thread(
        target=lambda: answers.append(kitchen.post(client, "/v1/terminals/add", body, machine_id=None))
    )
    worker.start()
    try:
        assert held.wait(10)
        # The provider has not answered: a write, and the lock on this very license, are granted at once.
        with database.transaction() as session:
            session.add(Customer(email="walkin@cafe.gr", locale="en", created_at=clock.now()))
            license_id = session.scalars(select(License.id)).one()
            seats.lock_license(session, license_id)
        assert worker.is_alive()
    finally:
        hold.set()
        worker.join(30)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    assert (answers[0].json()["quantity_new"], answers[0].json()["token"] is not None) == (2, True)
