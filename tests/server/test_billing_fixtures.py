"""Real EU subscriptions against payloads built from Stripe's own fixtures (tests/server/stripe_fixtures.py).

3-D Secure renewals, `customer.updated`, disputes, e-mail in any letter case, Checkout's VAT id and
language, the pinned API version, and webhooks that never hold the database while Stripe answers.
Runs on SQLite and, when POSPAL_TEST_DATABASE_URL is set, PostgreSQL.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from server import licensing
from server.billing.base import CheckoutRequest
from server.billing.stripe import API_VERSION, StripeBilling
from server.billing.sync import WebhookContext, fetch_subscription_state, sync_subscription
from server.models import Customer, License, Outbox, StripeEvent, Subscription
from server.webhooks import process_event
from tests.server import stripe_fixtures as fx
from tests.server.stripe_stub import PRICE_ID, WEBHOOK_SECRET, event, start_stripe_stub, stripe_settings
from tests.server.test_webhooks import _customer, _deliver

SUB, CUS = "sub_1QfxEu2eZvKYlo2C", "cus_QXg1o8vcGmoR32"


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def stripe_client(settings, clock, database, mailer, stub):
    from fastapi.testclient import TestClient

    from server.app import create_app

    app = create_app(
        stripe_settings(settings, stub.url),
        clock=clock,
        db=database,
        mailer=mailer,
        billing=_billing(stub),
        start_worker=False,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _billing(stub) -> StripeBilling:
    return StripeBilling("sk_test_stub", WEBHOOK_SECRET, PRICE_ID, api_base=stub.url, max_network_retries=0)


def _mail(database) -> list[Outbox]:
    with database.transaction() as session:
        return list(session.scalars(select(Outbox).order_by(Outbox.id)))


def _row(database) -> Subscription:
    with database.transaction() as session:
        return session.scalars(select(Subscription).where(Subscription.provider_subscription_id == SUB)).one()


def _token_state(database, clock) -> dict:
    with database.transaction() as session:
        sub = session.scalars(select(Subscription).where(Subscription.provider_subscription_id == SUB)).one()
        lic = session.scalars(select(License).where(License.subscription_id == sub.id)).one()
        return licensing.subscription_state(lic, sub, clock.now())


def _renewal_needing_3ds(stub, inv_id: str = "in_1Qfx3DS") -> dict:
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS, status="past_due")
    intent = fx.payment_intent("pi_3Qfx3DS", CUS, status="requires_action")
    stub.payment_intents[intent["id"]] = intent
    stub.invoices[inv_id] = fx.invoice(inv_id, SUB, CUS, intent=intent)
    return stub.invoices[inv_id]


def test_checkout_from_stripe_fixtures_activates_with_the_period_from_the_item(
    stripe_client, stub, database, clock
):
    _customer(database, clock, stripe_id=CUS)
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS, quantity=2, period_end=1_800_000_000)
    session = fx.checkout_session("cs_test_fx1", CUS, SUB)
    assert (
        _deliver(stripe_client, event("checkout.session.completed", session)).json()["outcome"] == "processed"
    )
    row = _row(database)
    assert (row.status, row.quantity, int(row.current_period_end.timestamp())) == ("active", 2, 1_800_000_000)
    assert [m.template for m in _mail(database)] == ["welcome"]


def test_3ds_renewal_asks_to_confirm_not_to_change_the_card(stripe_client, stub, database, clock):
    _customer(database, clock, stripe_id=CUS, locale="el")
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS)
    _deliver(stripe_client, event("customer.subscription.created", stub.subscriptions[SUB]))
    inv = _renewal_needing_3ds(stub)
    # Stripe sends both, in no promised order; the failure first is the harder case.
    for kind in ("invoice.payment_failed", "invoice.payment_action_required"):
        assert _deliver(stripe_client, event(kind, inv)).status_code == 200
    row = _row(database)
    assert row.payment_action_url == inv["hosted_invoice_url"] and row.first_failed_at is not None
    mails = [m for m in _mail(database) if m.template != "welcome"]
    assert [m.template for m in mails] == ["payment_action_required"]
    assert mails[0].locale == "el" and mails[0].context["confirm_url"] == inv["hosted_invoice_url"]
    state = _token_state(database, clock)
    assert state["status"] == "past_due" and state["payment_action_url"] == inv["hosted_invoice_url"]
    assert state["payment_grace_end"] == int((row.first_failed_at + timedelta(days=7)).timestamp())

    # The owner confirms with the bank: the invoice is paid and the next sync is clean again.
    clock.advance(hours=3)
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS, status="active")
    stub.invoices[inv["id"]] = fx.invoice(
        inv["id"], SUB, CUS, status="paid", intent=fx.payment_intent("pi_3Qfx3DS", CUS, status="succeeded")
    )
    _deliver(stripe_client, event("invoice.paid", stub.invoices[inv["id"]]))
    assert _row(database).payment_action_url is None
    assert "payment_action_url" not in _token_state(database, clock)
    assert [m.template for m in _mail(database)][-1] == "payment_recovered"


def test_a_card_that_really_fails_gets_update_your_card(stripe_client, stub, database, clock):
    _customer(database, clock, stripe_id=CUS)
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS, status="past_due")
    intent = fx.payment_intent("pi_declined", CUS, status="requires_payment_method")
    stub.invoices["in_declined"] = fx.invoice("in_declined", SUB, CUS, intent=intent)
    _deliver(stripe_client, event("invoice.payment_failed", stub.invoices["in_declined"]))
    assert _row(database).payment_action_url is None
    assert [m.template for m in _mail(database)] == ["payment_failed"]


def test_payment_intent_requires_action_finds_its_invoice_through_invoice_payments(
    stripe_client, stub, database, clock
):
    _customer(database, clock, stripe_id=CUS)
    inv = _renewal_needing_3ds(stub)
    intent = stub.payment_intents["pi_3Qfx3DS"]
    assert "invoice" not in intent  # current API: a PaymentIntent does not name its invoice
    assert _deliver(stripe_client, event("payment_intent.requires_action", intent)).status_code == 200
    assert _row(database).payment_action_url == inv["hosted_invoice_url"]


def test_customer_updated_follows_the_new_email_in_any_case(stripe_client, stub, database, clock):
    owner = _customer(database, clock, stripe_id=CUS)
    _customer(database, clock, email="other@cafe.gr", stripe_id="cus_other")
    stub.customers[CUS] = fx.customer(CUS, "Owner.New@Cafe.GR")
    assert (
        _deliver(stripe_client, event("customer.updated", stub.customers[CUS])).json()["outcome"]
        == "processed"
    )
    with database.transaction() as session:
        assert session.get(Customer, owner).email == "owner.new@cafe.gr"
    # An address another customer already has is left for the operator, not merged by guess.
    stub.customers[CUS] = fx.customer(CUS, "OTHER@cafe.gr")
    assert (
        _deliver(stripe_client, event("customer.updated", stub.customers[CUS])).json()["outcome"] == "ignored"
    )
    with database.transaction() as session:
        assert session.get(Customer, owner).email == "owner.new@cafe.gr"


def test_dispute_names_the_customer_found_through_its_charge(stripe_client, stub, database, clock):
    _customer(database, clock, stripe_id=CUS)
    stub.charges["ch_3Qfx"] = fx.charge("ch_3Qfx", CUS)
    dispute = fx.dispute("dp_1Qfx", "ch_3Qfx")
    assert "customer" not in dispute
    assert _deliver(stripe_client, event("charge.dispute.created", dispute)).status_code == 200
    flag = [m for m in _mail(database) if m.template == "admin_flag"]
    assert flag[0].context["customer_email"] == "owner@cafe.gr"
    with database.transaction() as session:
        assert session.scalars(select(StripeEvent.flagged)).one() is True


def test_customer_typed_with_capitals_in_the_dashboard_is_reused(stub):
    stub.customers["cus_dash"] = fx.customer("cus_dash", "Info@Taverna.GR")
    billing = _billing(stub)
    assert billing.find_or_create_customer("info@taverna.gr", "Taverna", None) == "cus_dash"
    assert stub.calls("POST", "/v1/customers") == []


def test_checkout_collects_the_vat_id_and_address_in_the_owners_language(stub):
    stub.customers["cus_el"] = fx.customer("cus_el", "owner@taverna.gr")
    billing = _billing(stub)
    billing.create_checkout(
        CheckoutRequest(
            customer_id="cus_el",
            email="owner@taverna.gr",
            quantity=2,
            client_reference_id="chk_1",
            success_url="https://pospal.gr/ok",
            cancel_url="https://pospal.gr/no",
            locale="el",
        )
    )
    sent = stub.calls("POST", "/v1/checkout/sessions")[0]
    assert sent.params["tax_id_collection[enabled]"] == "true"
    assert sent.params["billing_address_collection"] == "required"
    assert (sent.params["customer_update[address]"], sent.params["customer_update[name]"]) == ("auto", "auto")
    assert sent.params["locale"] == "el"
    assert stub.customers["cus_el"]["preferred_locales"] == ["el"]  # invoices and receipts in Greek
    assert {r.headers["stripe-version"] for r in stub.requests} == {API_VERSION}


def test_webhook_does_not_hold_the_database_while_stripe_is_slow(stub, database, clock):
    _customer(database, clock, stripe_id=CUS)
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS)
    stub.hold = threading.Event()
    ctx = WebhookContext(clock=clock, public_url="http://testserver")
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            process_event(
                database,
                event("invoice.paid", fx.invoice("in_slow", SUB, CUS, status="paid")),
                _billing(stub),
                ctx,
            )
        )
    )
    worker.start()
    try:
        assert stub.held.wait(10)
        # Stripe has not answered yet; another write goes through at once (no lock is held meanwhile).
        with database.transaction() as session:
            session.add(Customer(email="walkin@cafe.gr", locale="en", created_at=clock.now()))
        assert worker.is_alive()
    finally:
        stub.hold.set()
        worker.join(30)
    assert outcome == ["processed"] and _row(database).status == "active"


def test_an_older_fetch_never_overwrites_a_newer_one(stub, database, clock):
    customer_id = _customer(database, clock, stripe_id=CUS)
    billing = _billing(stub)
    ctx = WebhookContext(clock=clock, public_url="http://testserver")
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS, status="past_due")
    old = fetch_subscription_state(billing, SUB, clock.now())
    clock.advance(seconds=5)
    stub.subscriptions[SUB] = fx.subscription(SUB, CUS, status="active", quantity=3)
    new = fetch_subscription_state(billing, SUB, clock.now())
    for fetched in (new, old):  # the slower delivery commits last
        with database.transaction() as session:
            sync_subscription(
                session, billing, SUB, ctx, clock.now(), customer_hint=customer_id, fetched=fetched
            )
    row = _row(database)
    assert (row.status, row.quantity, row.first_failed_at) == ("active", 3, None)


def test_a_subscription_whose_collection_is_paused_licenses_as_paused(stripe_client, stub, database, clock):
    _customer(database, clock, stripe_id=CUS)
    stub.subscriptions[SUB] = fx.subscription(
        SUB, CUS, pause_collection={"behavior": "void", "resumes_at": 1_900_000_000}
    )
    _deliver(stripe_client, event("customer.subscription.updated", stub.subscriptions[SUB]))
    state = _token_state(database, clock)
    paused = (state["status"], state.get("paused"), state.get("resumes_at"))
    assert paused == ("canceled", True, 1_900_000_000)
