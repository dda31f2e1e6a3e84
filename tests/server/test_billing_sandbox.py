"""Sandbox billing end to end: buy, fail, pay, activate, renewals, cancellation, portal; no money moves.

Every button drives the same event processing as a verified Stripe webhook, so these tests also show
the whole billing path as a user meets it. The last test holds the sandbox and `StripeBilling` to one
contract, so the fake cannot drift from the real provider.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from server.billing.base import CheckoutRequest
from server.billing.sandbox import SandboxBilling
from server.billing.stripe import StripeBilling
from server.errors import BillingError, WebhookSignatureInvalid
from server.models import StripeEvent, Subscription
from tests.server.conftest import outbox_rows, token_claims
from tests.server.stripe_stub import PRICE_ID, WEBHOOK_SECRET, start_stripe_stub

EMAIL = "owner@taverna.gr"


def _buy(client, machine, quantity=2):
    body = {
        **machine.identity(),
        "email": EMAIL,
        "restaurant_name": "Taverna <Nikos>",
        "quantity": quantity,
        "locale": "el",
    }
    response = machine.post(client, "/v1/checkout", body, machine_id=None)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["checkout_id"], answer["url"].removeprefix("http://testserver")


def _press(client, page: str, action: str, **fields):
    return client.post(page, data={"action": action, **fields}, follow_redirects=False)


def _subscription(database) -> Subscription:
    with database.transaction() as session:
        return session.scalars(select(Subscription)).one()


def test_checkout_must_be_signed_by_the_key_it_binds_and_cannot_be_replayed(client, make_machine, database):
    from server.models import Checkout, Customer

    machine, other = make_machine(), make_machine()
    body = {**machine.identity(), "email": EMAIL, "restaurant_name": "Taverna", "quantity": 1}
    unsigned = client.post("/v1/checkout", json=body)
    wrong_key = machine.post(client, "/v1/checkout", body, machine_id=None, key=other.key)
    assert (unsigned.status_code, unsigned.json()["error"]) == (401, "bad_signature")
    assert (wrong_key.status_code, wrong_key.json()["error"]) == (401, "bad_signature")
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Checkout)) == 0
        assert session.scalar(select(func.count()).select_from(Customer)) == 0
    raw, headers = machine.signed("/v1/checkout", body, machine_id=None)
    assert client.post("/v1/checkout", content=raw, headers=headers).status_code == 200
    replayed = client.post("/v1/checkout", content=raw, headers=headers)
    assert (replayed.status_code, replayed.json()["error"]) == (409, "replay")
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Checkout)) == 1


def test_buy_fail_then_pay_then_activate(client, make_machine, database):
    machine = make_machine()
    checkout_id, page = _buy(client, machine)
    html = client.get(page).text
    assert "Pay" in html and "Fail payment" in html and "&lt;" not in html  # name is not on the page
    assert "2 terminal(s)" in html
    # A declined card leaves the checkout open and says so; nothing is created.
    assert _press(client, page, "fail").status_code == 303
    assert "declined" in client.get(page).text
    assert client.get(f"/v1/checkout/{checkout_id}").json() == {"status": "open"}
    assert machine.activate(client, EMAIL, checkout_id=checkout_id).json()["error"] == "checkout_incomplete"
    paid = _press(client, page, "pay")
    assert paid.status_code == 303
    assert paid.headers["location"] == f"http://testserver/billing/success?checkout_id={checkout_id}"
    assert client.get("/billing/success").status_code == 200
    assert client.get(f"/v1/checkout/{checkout_id}").json() == {"status": "complete"}
    activated = machine.activate(client, EMAIL, checkout_id=checkout_id)
    assert activated.status_code == 200, activated.text
    claims = token_claims(activated.json()["token"])
    assert claims["status"] == "active" and claims["seats"] == 2 and claims["email"] == EMAIL
    (welcome,) = outbox_rows(database, template="welcome")
    assert welcome.locale == "el" and welcome.context["name"] == "Taverna <Nikos>"
    # Pressing "Pay" again (a double click) changes nothing.
    _press(client, page, "pay")
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1


def test_cancelled_checkout_stops_the_wait(client, make_machine):
    checkout_id, page = _buy(client, make_machine())
    response = _press(client, page, "cancel")
    assert response.status_code == 303
    assert response.headers["location"] == f"http://testserver/billing/cancel?checkout_id={checkout_id}"
    assert client.get(response.headers["location"].removeprefix("http://testserver")).status_code == 200
    assert client.get(f"/v1/checkout/{checkout_id}").json() == {"status": "expired"}
    assert "cancelled" in client.get(page).text


def test_renewal_failure_grace_recovery_and_cancellation(client, make_machine, database, clock):
    machine = make_machine()
    checkout_id, page = _buy(client, machine, quantity=1)
    _press(client, page, "pay")
    assert machine.activate(client, EMAIL, checkout_id=checkout_id).status_code == 200
    sub_id = _subscription(database).provider_subscription_id

    _press(client, page, "fail_renewal", subscription_id=sub_id)
    sub = _subscription(database)
    assert sub.status == "past_due" and sub.first_failed_at == clock.now()
    claims = token_claims(machine.refresh(client).json()["token"])
    assert claims["status"] == "past_due"
    assert claims["payment_grace_end"] == int(clock.now().timestamp()) + 7 * 86400

    _press(client, page, "pay_now", subscription_id=sub_id)
    assert _subscription(database).first_failed_at is None
    assert token_claims(machine.refresh(client).json()["token"])["status"] == "active"

    _press(client, page, "cancel_at_period_end", subscription_id=sub_id)
    claims = token_claims(machine.refresh(client).json()["token"])
    # Cancelling at period end keeps the license until then.
    assert claims["status"] == "active" and claims["cancel_at"] == claims["period_end"]

    _press(client, page, "cancel_now", subscription_id=sub_id)
    assert token_claims(machine.refresh(client).json()["token"])["status"] == "canceled"
    templates = [r.template for r in outbox_rows(database, to=EMAIL)]
    assert templates == [
        "welcome",
        "terminal_added",
        "payment_failed",
        "payment_recovered",
        "subscription_ending",
        "subscription_cancelled",
    ]


def test_portal_shows_only_the_customers_own_subscriptions(client, make_machine, database, login_code):
    checkout_id, page = _buy(client, make_machine())
    _press(client, page, "pay")
    sub_id = _subscription(database).provider_subscription_id
    code = login_code(client, EMAIL, "portal")
    response = client.post("/v1/portal", json={"email": EMAIL, "code": code})
    assert response.status_code == 200, response.text
    portal = response.json()["url"].removeprefix("http://testserver")
    assert re.fullmatch(r"/sandbox/portal/sbx_bps_[A-Za-z0-9_\-]{20,}", portal)
    assert sub_id in client.get(portal).text
    assert _press(client, portal, "cancel_now", subscription_id="sbx_sub_someone_else").status_code == 404
    assert _press(client, portal, "cancel_at_period_end", subscription_id=sub_id).status_code == 303
    assert _subscription(database).cancel_at_period_end


def test_sandbox_accepts_no_posted_webhooks(client, database):
    response = client.post(
        "/v1/webhooks/stripe",
        content=b'{"id": "evt_1", "type": "invoice.paid"}',
        headers={"Stripe-Signature": "t=1,v1=0"},
    )
    assert response.status_code == 400
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_unknown_sandbox_pages_are_404(client):
    assert client.get("/sandbox/checkout/sbx_cs_nope").status_code == 404
    assert client.get("/sandbox/portal/sbx_bps_nope").status_code == 404
    assert client.get("/v1/checkout/chk_nope").status_code == 404


@pytest.fixture(params=["sandbox", "stripe"])
def provider(request, database, clock):
    if request.param == "sandbox":
        sandbox = SandboxBilling(database, clock, "http://testserver")
        yield sandbox
        sandbox.close()
        return
    stub, server = start_stripe_stub()
    yield StripeBilling("sk_test_stub", WEBHOOK_SECRET, PRICE_ID, api_base=stub.url, max_network_retries=0)
    server.shutdown()
    server.server_close()


def test_providers_keep_one_contract(provider):
    customer = provider.find_or_create_customer("a@cafe.gr", "Cafe", None)
    assert customer and provider.find_or_create_customer("a@cafe.gr", "Cafe", customer) == customer
    assert provider.fetch_customer_email(customer) == "a@cafe.gr"
    request = CheckoutRequest(
        customer_id=customer,
        email="a@cafe.gr",
        quantity=2,
        client_reference_id="chk_1",
        success_url="http://testserver/billing/success",
        cancel_url="http://testserver/billing/cancel",
        metadata={"pospal_checkout_id": "chk_1"},
    )
    opened = provider.create_checkout(request)
    assert opened.status == "open" and opened.url.startswith(("http://", "https://"))
    fetched = provider.fetch_checkout(opened.id)
    assert (fetched.id, fetched.status, fetched.client_reference_id) == (opened.id, "open", "chk_1")
    assert provider.create_portal_session(customer, "http://testserver/portal/return").startswith(
        ("http", "https")
    )
    with pytest.raises(BillingError):
        provider.fetch_subscription("sub_does_not_exist")
    with pytest.raises(BillingError):
        provider.fetch_invoice("in_does_not_exist")
    found = provider.fetch_customer(customer)
    assert (found.id, found.email) == (customer, "a@cafe.gr")
    with pytest.raises(WebhookSignatureInvalid):
        provider.verify_webhook(b"{}", None)


def test_billing_emails_link_to_a_page_that_proves_the_email_first(client):
    english = client.get("/billing/manage")
    assert english.status_code == 200 and "Email me a code" in english.text
    # The page only uses the code-protected API: an email address alone opens nothing.
    assert (
        '"/v1/codes"' in english.text
        and '"/v1/portal"' in english.text
        and 'purpose: "portal"' in english.text
    )
    greek = client.get("/billing/manage", headers={"Accept-Language": "el-GR,el;q=0.9"})
    assert "Στείλτε μου κωδικό" in greek.text


def test_renewal_waiting_for_3d_secure_asks_to_confirm_then_clears(client, make_machine, database, clock):
    machine = make_machine()
    checkout_id, page = _buy(client, machine, quantity=1)
    _press(client, page, "pay")
    assert machine.activate(client, EMAIL, checkout_id=checkout_id).status_code == 200
    sub_id = _subscription(database).provider_subscription_id

    _press(client, page, "require_action", subscription_id=sub_id)
    sub = _subscription(database)
    assert sub.status == "past_due" and sub.payment_action_url
    claims = token_claims(machine.refresh(client).json()["token"])
    assert claims["status"] == "past_due" and claims["payment_action_url"] == sub.payment_action_url
    assert claims["payment_grace_end"] == int(clock.now().timestamp()) + 7 * 86400
    # The confirmation page is a real sandbox page where the owner can pay.
    confirm = client.get(sub.payment_action_url.removeprefix("http://testserver"))
    assert confirm.status_code == 200 and "pay_now" in confirm.text

    _press(client, page, "pay_now", subscription_id=sub_id)
    assert _subscription(database).payment_action_url is None
    assert "payment_action_url" not in token_claims(machine.refresh(client).json()["token"])
    templates = [r.template for r in outbox_rows(database, to=EMAIL)]
    assert templates[-2:] == ["payment_action_required", "payment_recovered"]
    assert "payment_failed" not in templates
