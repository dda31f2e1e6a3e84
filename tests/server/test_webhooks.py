"""`POST /v1/webhooks/stripe`: signature first, dedupe, re-fetch, apply, outbox, and retry on failure.

The provider is `StripeBilling` against a local Stripe-shaped stub; events are signed here exactly as
Stripe signs them.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pospal_protocol.clock import SystemClock
from server.billing.stripe import StripeBilling
from server.models import AuditLog, Checkout, Customer, License, Outbox, StripeEvent, Subscription
from server.outbox import OutboxWorker
from tests.server.conftest import outbox_rows
from tests.server.stripe_stub import (
    PRICE_ID,
    WEBHOOK_SECRET,
    event,
    sign,
    start_stripe_stub,
    stripe_env,
    stripe_settings,
    subscription,
)

PATH = "/v1/webhooks/stripe"
TABLES = (StripeEvent, Subscription, Customer, License, Outbox, AuditLog, Checkout)


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def stripe_client(settings, clock, database, mailer, stub):
    from server.app import create_app

    billing = StripeBilling(
        "sk_test_stub", WEBHOOK_SECRET, PRICE_ID, api_base=stub.url, max_network_retries=0
    )
    app = create_app(
        stripe_settings(settings, stub.url),
        clock=clock,
        db=database,
        mailer=mailer,
        billing=billing,
        start_worker=False,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _customer(database, clock, email="owner@cafe.gr", stripe_id="cus_known", locale="en") -> str:
    with database.transaction() as session:
        row = Customer(
            email=email,
            name="Cafe Nikos",
            stripe_customer_id=stripe_id,
            locale=locale,
            created_at=clock.now(),
        )
        session.add(row)
        session.flush()
        return row.id


def _deliver(client, evt: dict, header: str | None = "sign", **sign_kwargs):
    raw = json.dumps(evt).encode()
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        headers["Stripe-Signature"] = sign(raw, **sign_kwargs)
    elif header is not None:
        headers["Stripe-Signature"] = header
    return client.post(PATH, content=raw, headers=headers)


def _counts(database) -> dict[str, int]:
    with database.transaction() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) for t in TABLES}


def _subscription(database, provider_id: str) -> Subscription | None:
    with database.transaction() as session:
        return session.scalars(
            select(Subscription).where(Subscription.provider_subscription_id == provider_id)
        ).first()


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong_secret", "garbage", "too_old", "body_changed"],
)
def test_bad_signatures_get_400_and_change_nothing(stripe_client, stub, database, clock, case):
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    evt = event(
        "invoice.paid", {"object": "invoice", "id": "in_1", "customer": "cus_known", "subscription": "sub_1"}
    )
    before = _counts(database)
    if case == "missing":
        response = _deliver(stripe_client, evt, header=None)
    elif case == "wrong_secret":
        response = _deliver(stripe_client, evt, secret="whsec_someone_else")
    elif case == "garbage":
        response = _deliver(stripe_client, evt, header="t=abc,v1=00")
    elif case == "too_old":
        response = _deliver(stripe_client, evt, timestamp=int(time.time()) - 301)
    else:
        signature = sign(json.dumps(evt).encode())
        evt["data"]["object"]["subscription"] = "sub_other"
        response = _deliver(stripe_client, evt, header=signature)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert _counts(database) == before
    assert stub.requests == []  # nothing was even fetched


def test_paid_invoice_activates_license_and_queues_welcome(stripe_client, stub, database, clock):
    _customer(database, clock, locale="el")
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known", quantity=3)
    response = _deliver(
        stripe_client,
        event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"}),
    )
    assert response.status_code == 200 and response.json()["outcome"] == "processed"
    sub = _subscription(database, "sub_1")
    assert (
        sub.status == "active" and sub.quantity == 3 and sub.current_period_end.timestamp() == 1_800_000_000
    )
    with database.transaction() as session:
        license_ = session.scalars(select(License).where(License.subscription_id == sub.id)).one()
        assert license_.status == "active"
    (welcome,) = outbox_rows(database, template="welcome")
    assert welcome.to_email == "owner@cafe.gr" and welcome.locale == "el" and welcome.context["seats"] == 3


def test_new_api_shape_invoice_is_understood(stripe_client, stub, database, clock):
    _customer(database, clock)
    stub.subscriptions["sub_n"] = subscription("sub_n", "cus_known")
    invoice = {
        "object": "invoice",
        "customer": "cus_known",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_n"}},
    }
    assert _deliver(stripe_client, event("invoice.payment_succeeded", invoice)).status_code == 200
    assert _subscription(database, "sub_n").status == "active"


def test_stale_payload_loses_to_the_providers_current_state(stripe_client, stub, database, clock):
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known", status="past_due")
    stale = subscription("sub_1", "cus_known", status="active")
    assert _deliver(stripe_client, event("customer.subscription.updated", stale)).status_code == 200
    sub = _subscription(database, "sub_1")
    assert sub.status == "past_due" and sub.first_failed_at == clock.now()
    assert [r.template for r in outbox_rows(database)] == ["payment_failed"]


def test_same_event_delivered_twice_is_processed_once(stripe_client, stub, database, clock):
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    evt = event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"})
    assert _deliver(stripe_client, evt).json()["outcome"] == "processed"
    assert _deliver(stripe_client, evt).json()["outcome"] == "duplicate"
    assert len(stub.calls("GET", "/v1/subscriptions/sub_1")) == 1


def test_handler_failure_gives_500_keeps_event_unprocessed_and_redelivery_succeeds(
    stripe_client, stub, database, clock
):
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    evt = event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"})
    stub.fail_next = 1  # the re-fetch fails: Stripe is having a bad minute
    response = _deliver(stripe_client, evt)
    assert response.status_code == 500
    with database.transaction() as session:
        record = session.get(StripeEvent, evt["id"])
        assert record is not None and record.processed_at is None and "BillingError" in record.error
    assert _subscription(database, "sub_1") is None and outbox_rows(database) == []
    response = _deliver(stripe_client, evt)
    assert response.status_code == 200 and response.json()["outcome"] == "processed"
    with database.transaction() as session:
        record = session.get(StripeEvent, evt["id"])
        assert record.processed_at is not None and record.error is None
    assert _subscription(database, "sub_1").status == "active"
    assert len(outbox_rows(database, template="welcome")) == 1


def test_checkout_completed_completes_our_checkout(stripe_client, stub, database, clock):
    customer_id = _customer(database, clock)
    with database.transaction() as session:
        session.add(
            Checkout(
                id="chk_abc",
                customer_id=customer_id,
                provider_session_id="cs_1",
                quantity=2,
                machine_public_key="pk",
                created_at=clock.now(),
            )
        )
    stub.subscriptions["sub_2"] = subscription("sub_2", "cus_known", quantity=2)
    session_obj = {
        "object": "checkout.session",
        "id": "cs_1",
        "client_reference_id": "chk_abc",
        "customer": "cus_known",
        "subscription": "sub_2",
        "mode": "subscription",
    }
    assert _deliver(stripe_client, event("checkout.session.completed", session_obj)).status_code == 200
    assert stripe_client.get("/v1/checkout/chk_abc").json() == {"status": "complete"}
    assert _subscription(database, "sub_2").quantity == 2


def test_subscription_created_elsewhere_is_adopted_by_customer_email(stripe_client, stub, database, clock):
    stub.customers["cus_new"] = {"id": "cus_new", "object": "customer", "email": "New@Bar.gr"}
    stub.subscriptions["sub_3"] = subscription("sub_3", "cus_new")
    assert (
        _deliver(
            stripe_client, event("customer.subscription.created", stub.subscriptions["sub_3"])
        ).status_code
        == 200
    )
    with database.transaction() as session:
        customer = session.scalars(select(Customer).where(Customer.email == "new@bar.gr")).one()
        assert customer.stripe_customer_id == "cus_new"


def _license_token_state(database, clock, provider_id: str) -> dict:
    """The license row's status, and the status part a token for it would carry now (server.licensing)."""
    from server.licensing import subscription_state

    with database.transaction() as session:
        sub = session.scalars(
            select(Subscription).where(Subscription.provider_subscription_id == provider_id)
        ).one()
        license_ = session.scalars(select(License).where(License.subscription_id == sub.id)).one()
        state = subscription_state(license_, sub, clock.now())
        return {
            "license_status": license_.status,
            "status": state["status"],
            **({"cancel_at": state["cancel_at"]} if state.get("cancel_at") else {}),
        }


def test_cancel_at_period_end_keeps_license_then_deleted_cancels(stripe_client, stub, database, clock):
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    _deliver(
        stripe_client,
        event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"}),
    )
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known", cancel_at_period_end=True)
    _deliver(stripe_client, event("customer.subscription.updated", stub.subscriptions["sub_1"]))
    sub = _subscription(database, "sub_1")
    assert sub.status == "active" and sub.cancel_at_period_end and sub.cancel_at.timestamp() == 1_800_000_000
    # Until the paid period ends, what a terminal's token says is: licensed, ending at the period's end.
    assert _license_token_state(database, clock, "sub_1") == {
        "license_status": "active",
        "status": "active",
        "cancel_at": 1_800_000_000,
    }
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known", status="canceled")
    _deliver(stripe_client, event("customer.subscription.deleted", stub.subscriptions["sub_1"]))
    assert _subscription(database, "sub_1").status == "canceled"
    assert _license_token_state(database, clock, "sub_1")["status"] == "canceled"
    assert [r.template for r in outbox_rows(database)] == [
        "welcome",
        "subscription_ending",
        "subscription_cancelled",
    ]


def test_payment_failure_starts_grace_and_recovery_ends_it(stripe_client, stub, database, clock):
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    _deliver(
        stripe_client,
        event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"}),
    )
    clock.advance(days=30)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known", status="past_due")
    failed = event(
        "invoice.payment_failed",
        {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"},
        created=int(clock.now().timestamp()) - 3600,
    )
    _deliver(stripe_client, failed)
    sub = _subscription(database, "sub_1")
    # The grace starts at the failure (the event time), not at our later processing.
    assert sub.status == "past_due" and sub.first_failed_at.timestamp() == failed["created"]
    clock.advance(days=2)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    _deliver(
        stripe_client,
        event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"}),
    )
    assert _subscription(database, "sub_1").first_failed_at is None
    templates = [r.template for r in outbox_rows(database)]
    assert templates == ["welcome", "payment_failed", "payment_recovered"]
    (failed_mail,) = outbox_rows(database, template="payment_failed")
    assert failed_mail.context == {"portal_url": "http://testserver/billing/manage", "grace_days": 7}


@pytest.mark.parametrize("kind", ["charge.refunded", "charge.dispute.created"])
def test_refunds_and_disputes_are_recorded_flagged_and_mailed_to_the_admin(
    stripe_client, database, clock, kind
):
    _customer(database, clock)
    obj = (
        {
            "object": "charge",
            "id": "ch_1",
            "customer": "cus_known",
            "amount_refunded": 2000,
            "currency": "eur",
        }
        if kind == "charge.refunded"
        else {
            "object": "dispute",
            "id": "dp_1",
            "charge": "ch_1",
            "amount": 2000,
            "currency": "eur",
            "reason": "fraudulent",
        }
    )
    evt = event(kind, obj)
    assert _deliver(stripe_client, evt).status_code == 200
    with database.transaction() as session:
        record = session.get(StripeEvent, evt["id"])
        assert record.flagged and record.processed_at is not None
        assert (
            session.scalar(
                select(func.count()).select_from(AuditLog).where(AuditLog.action == "billing.flagged")
            )
            == 1
        )
    (mail,) = outbox_rows(database, template="admin_flag")
    assert mail.to_email == "ops@pospal.gr" and mail.context["amount"] == "20.00 EUR"
    assert mail.context["event_type"] == kind


def test_unknown_event_types_are_recorded_and_ignored(stripe_client, database):
    evt = event("customer.created", {"object": "customer", "id": "cus_x"})
    assert _deliver(stripe_client, evt).json()["outcome"] == "ignored"
    assert _deliver(stripe_client, evt).json()["outcome"] == "duplicate"


def test_same_event_delivered_8_times_concurrently_is_processed_once_and_sends_one_email(
    start_server, stub, database, clock, mailer, tmp_path
):
    # A real server process: the 8 deliveries race in its thread pool, each in its own transaction.
    server = start_server(env=stripe_env(stub.url))
    _customer(database, clock)
    stub.subscriptions["sub_1"] = subscription("sub_1", "cus_known")
    evt = event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_1"})
    raw = json.dumps(evt).encode()
    barrier = threading.Barrier(8)

    def post(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            barrier.wait(timeout=10)
            response = client.post(
                PATH, content=raw, headers={"Stripe-Signature": sign(raw), "Content-Type": "application/json"}
            )
            return response.status_code, response.json().get("outcome", "")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(8)))
    assert [code for code, _ in results] == [200] * 8, server.log()[-2000:]
    assert sorted(outcome for _, outcome in results) == ["duplicate"] * 7 + ["processed"]
    # Deliveries in flight together each fetch (before any transaction); one applies.
    assert 1 <= len(stub.calls("GET", "/v1/subscriptions/sub_1")) <= 8
    with httpx.Client(base_url=server.url, timeout=30) as client:
        fetches = len(stub.calls("GET", "/v1/subscriptions/sub_1"))
        again = client.post(PATH, content=raw, headers={"Stripe-Signature": sign(raw)})
        assert again.json()["outcome"] == "duplicate"
        assert len(stub.calls("GET", "/v1/subscriptions/sub_1")) == fetches  # a late duplicate asks nothing
    with database.transaction() as session:
        synced = session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "subscription.synced")
        )
        assert synced == 1
    assert len(outbox_rows(database)) == 1
    # The server process stamped the row with real time, so deliver by real time too.
    worker = OutboxWorker(database, mailer, SystemClock())
    assert worker.drain().sent == 1
    lines = (tmp_path / "mail" / "mail.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["to"] for line in lines] == ["owner@cafe.gr"]


def test_checkout_paid_later_still_completes_the_agents_checkout(stripe_client, stub, database, clock):
    customer_id = _customer(database, clock)
    with database.transaction() as session:
        session.add(
            Checkout(
                id="chk_3ds",
                customer_id=customer_id,
                provider_session_id="cs_3ds",
                machine_public_key="pk",
                created_at=clock.now(),
            )
        )
    pending = subscription("sub_4", "cus_known", status="incomplete")
    pending["metadata"] = {"pospal_checkout_id": "chk_3ds"}
    stub.subscriptions["sub_4"] = pending
    session_obj = {
        "object": "checkout.session",
        "id": "cs_3ds",
        "client_reference_id": "chk_3ds",
        "customer": "cus_known",
        "subscription": "sub_4",
    }
    _deliver(stripe_client, event("checkout.session.completed", session_obj))
    # The card still needs 3-D Secure: the agent keeps waiting.
    assert stripe_client.get("/v1/checkout/chk_3ds").json() == {"status": "open"}
    stub.subscriptions["sub_4"] = {**pending, "status": "active"}
    _deliver(
        stripe_client,
        event("invoice.paid", {"object": "invoice", "customer": "cus_known", "subscription": "sub_4"}),
    )
    assert stripe_client.get("/v1/checkout/chk_3ds").json() == {"status": "complete"}
