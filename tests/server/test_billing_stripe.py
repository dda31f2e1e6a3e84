"""`StripeBilling` through a local Stripe-shaped stub: Checkout and Portal request parameters.

localstripe has no Checkout Sessions or Billing Portal, so these go to `stripe_stub`, which records
every request the official SDK makes; the assertions read the exact form fields Stripe would receive.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.billing.stripe import StripeBilling, subscription_from_stripe
from server.errors import BillingError, WebhookSignatureInvalid
from server.models import Checkout, Customer
from tests.server.stripe_stub import PRICE_ID, WEBHOOK_SECRET, sign, start_stripe_stub, stripe_settings


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    yield stub
    server.shutdown()
    server.server_close()


def _client(settings, clock, database, mailer, stub, **changes):
    from server.app import create_app

    billing = StripeBilling(
        "sk_test_stub",
        WEBHOOK_SECRET,
        PRICE_ID,
        api_base=stub.url,
        max_network_retries=0,
        automatic_tax=changes.pop("automatic_tax", False),
    )
    app = create_app(
        stripe_settings(settings, stub.url, **changes),
        clock=clock,
        db=database,
        mailer=mailer,
        billing=billing,
        start_worker=False,
    )
    return TestClient(app, raise_server_exceptions=False)


def _buy(client, machine, email="Owner@Taverna.gr", quantity=3):
    body = {**machine.identity(), "email": email, "restaurant_name": "Taverna Nikos", "quantity": quantity}
    return machine.post(client, "/v1/checkout", body, machine_id=None)


def test_checkout_asks_stripe_for_a_subscription_of_the_price_and_quantity(
    settings, clock, database, mailer, stub, make_machine
):
    machine = make_machine()
    with _client(settings, clock, database, mailer, stub) as client:
        response = _buy(client, machine)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert client.get(f"/v1/checkout/{answer['checkout_id']}").json() == {"status": "open"}
    (search,) = stub.calls("GET", "/v1/customers")
    assert search.params["email"] == "owner@taverna.gr"
    (created,) = stub.calls("POST", "/v1/customers")
    assert created.params["email"] == "owner@taverna.gr" and created.params["name"] == "Taverna Nikos"
    (session,) = stub.calls("POST", "/v1/checkout/sessions")
    p = session.params
    checkout_id = answer["checkout_id"]
    assert p["mode"] == "subscription"
    assert p["line_items[0][price]"] == PRICE_ID and p["line_items[0][quantity]"] == "3"
    assert p["customer"] == stub.customers[next(iter(stub.customers))]["id"]
    assert p["client_reference_id"] == checkout_id
    assert p["metadata[pospal_checkout_id]"] == checkout_id
    assert p["subscription_data[metadata][pospal_checkout_id]"] == checkout_id
    assert p["success_url"] == f"http://testserver/billing/success?checkout_id={checkout_id}"
    assert p["cancel_url"] == f"http://testserver/billing/cancel?checkout_id={checkout_id}"
    assert p["allow_promotion_codes"] == "true" and p["billing_address_collection"] == "required"
    assert "automatic_tax[enabled]" not in p
    # Idempotent per checkout, so an SDK retry cannot open two sessions.
    assert session.headers["idempotency-key"] == f"pospal-checkout-{checkout_id}"
    assert answer["url"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    with database.transaction() as db:
        row = db.get(Checkout, checkout_id)
        assert row.provider_session_id.startswith("cs_test_")
        assert row.machine_public_key == machine.public_key and row.quantity == 3


def test_returning_customer_reuses_their_stripe_customer(
    settings, clock, database, mailer, stub, make_machine
):
    with database.transaction() as session:
        session.add(
            Customer(email="owner@taverna.gr", stripe_customer_id="cus_existing", created_at=clock.now())
        )
    with _client(settings, clock, database, mailer, stub) as client:
        assert _buy(client, make_machine(), quantity=1).status_code == 200
        assert _buy(client, make_machine(), quantity=2).status_code == 200
    assert stub.calls("POST", "/v1/customers") == [] and stub.calls("GET", "/v1/customers") == []
    sessions = stub.calls("POST", "/v1/checkout/sessions")
    assert [s.params["customer"] for s in sessions] == ["cus_existing", "cus_existing"]
    assert [s.params["line_items[0][quantity]"] for s in sessions] == ["1", "2"]


def test_customer_found_at_stripe_by_email_is_reused_and_remembered(
    settings, clock, database, mailer, stub, make_machine
):
    stub.customers["cus_at_stripe"] = {
        "id": "cus_at_stripe",
        "object": "customer",
        "email": "owner@taverna.gr",
    }
    with _client(settings, clock, database, mailer, stub) as client:
        assert _buy(client, make_machine()).status_code == 200
    assert stub.calls("POST", "/v1/customers") == []
    assert stub.calls("POST", "/v1/checkout/sessions")[0].params["customer"] == "cus_at_stripe"
    with database.transaction() as session:
        customer = session.scalars(select(Customer).where(Customer.email == "owner@taverna.gr")).one()
        assert customer.stripe_customer_id == "cus_at_stripe"


def test_automatic_tax_is_a_setting(settings, clock, database, mailer, stub, make_machine):
    with _client(
        settings, clock, database, mailer, stub, automatic_tax=True, stripe_automatic_tax=True
    ) as client:
        assert _buy(client, make_machine()).status_code == 200
    assert stub.calls("POST", "/v1/checkout/sessions")[0].params["automatic_tax[enabled]"] == "true"


def test_stripe_down_gives_503_not_a_stack_trace(settings, clock, database, mailer, stub, make_machine):
    stub.fail_next = 5
    with _client(settings, clock, database, mailer, stub) as client:
        response = _buy(client, make_machine())
    assert response.status_code == 503 and response.json()["error"] == "billing_unavailable"


def test_portal_session_for_a_proven_customer(
    settings, clock, database, mailer, stub, seed_subscription, login_code
):
    seed_subscription(email="owner@cafe.gr")
    with database.transaction() as session:
        stripe_id = session.scalars(
            select(Customer.stripe_customer_id).where(Customer.email == "owner@cafe.gr")
        ).one()
    with _client(settings, clock, database, mailer, stub) as client:
        code = login_code(client, "owner@cafe.gr", "portal")
        response = client.post(
            "/v1/portal",
            json={"email": "owner@cafe.gr", "code": code, "return_url": "http://testserver/portal/return"},
        )
        assert response.status_code == 200, response.text
        assert client.get("/portal/return").status_code == 200
    (call,) = stub.calls("POST", "/v1/billing_portal/sessions")
    assert call.params == {"customer": stripe_id, "return_url": "http://testserver/portal/return"}
    assert response.json()["url"].startswith("https://billing.stripe.test/p/session/bps_")


def test_subscriptions_are_read_in_old_and_new_api_shapes():
    old = {
        "id": "sub_1",
        "customer": "cus_1",
        "status": "past_due",
        "quantity": 2,
        "current_period_end": 1_800_000_000,
        "cancel_at_period_end": False,
        "cancel_at": None,
    }
    new = {
        "id": "sub_1",
        "customer": {"id": "cus_1"},
        "status": "past_due",
        "cancel_at_period_end": False,
        "items": {"data": [{"quantity": 2, "current_period_end": 1_800_000_000}]},
    }
    assert subscription_from_stripe(old) == subscription_from_stripe(new)
    with pytest.raises(BillingError):
        subscription_from_stripe({"id": "sub_1", "status": "active"})


def test_verify_webhook_checks_the_raw_body_and_tolerance():
    billing = StripeBilling("sk_test_x", WEBHOOK_SECRET, PRICE_ID, tolerance_s=300)
    raw = b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {}}}'
    assert billing.verify_webhook(raw, sign(raw))["id"] == "evt_1"
    for header in (None, "", sign(raw, secret="whsec_other"), sign(raw + b" ")):
        with pytest.raises(WebhookSignatureInvalid):
            billing.verify_webhook(raw, header)
    with pytest.raises(WebhookSignatureInvalid):
        billing.verify_webhook(b"[1, 2]", sign(b"[1, 2]"))
