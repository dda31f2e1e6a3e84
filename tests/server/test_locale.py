"""The agent's language reaches the owner: codes, trials, Stripe Checkout and the billing portal."""

from __future__ import annotations

from sqlalchemy import select

from server.mail.templates import render
from server.models import Customer, Trial
from tests.server.conftest import outbox_rows
from tests.server.test_billing_stripe import _buy, _client, stub  # noqa: F401 (stub is a fixture)


def test_a_greek_portal_opens_in_greek(
    settings,
    clock,
    database,
    mailer,
    stub,
    seed_subscription,
    login_code,
):
    seed_subscription(email="owner@cafe.gr")
    with _client(settings, clock, database, mailer, stub) as client:
        code = login_code(client, "owner@cafe.gr", "portal")
        response = client.post(
            "/v1/portal",
            json={
                "email": "owner@cafe.gr",
                "code": code,
                "locale": "el",
                "return_url": "http://testserver/portal/return",
            },
        )
        assert response.status_code == 200, response.text
    (call,) = stub.calls("POST", "/v1/billing_portal/sessions")
    assert call.params["locale"] == "el"


def test_a_greek_checkout_is_greek_at_stripe_and_in_the_customer_row(
    settings, clock, database, mailer, stub, make_machine
):
    with _client(settings, clock, database, mailer, stub) as client:
        machine = make_machine()
        response = machine.post(
            client,
            "/v1/checkout",
            {
                **machine.identity(),
                "email": "idioktitis@cafe.gr",
                "restaurant_name": "Καφέ",
                "quantity": 1,
                "locale": "el",
            },
            machine_id=None,
        )
        assert response.status_code == 200, response.text
    (call,) = stub.calls("POST", "/v1/checkout/sessions")
    assert call.params["locale"] == "el"
    with database.transaction() as session:
        locale = session.scalars(select(Customer.locale).where(Customer.email == "idioktitis@cafe.gr")).one()
    assert locale == "el"


def test_a_greek_code_email_and_trial_reminder_language(client, database, seed_subscription, make_machine):
    seed_subscription(email="owner@cafe.gr")
    assert (
        client.post(
            "/v1/codes", json={"email": "owner@cafe.gr", "purpose": "activate", "locale": "el"}
        ).status_code
        == 202
    )
    row = outbox_rows(database, to="owner@cafe.gr", template="activation_code")[-1]
    subject = render(row.template, row.locale, row.context).subject
    assert row.locale == "el" and any("α" <= ch <= "ω" for ch in subject.lower())
    machine = make_machine()
    assert machine.start_trial(client, locale="el").status_code == 200
    with database.transaction() as session:
        assert session.scalars(select(Trial.locale)).one() == "el"
