"""Only our prices are adopted, and `pospal-server stripe reconcile` mirrors them all in one pass."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.billing.reconcile import reconcile
from server.billing.stripe import StripeBilling
from server.billing.sync import WebhookContext
from server.models import Customer, Outbox, StripeEvent, Subscription
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

OLD_PRICE = "price_pospal1_monthly"
QR_MENU_PRICE = "price_qr_menus"


def _priced(sub_id: str, customer: str, price: str, **kwargs) -> dict:
    sub = subscription(sub_id, customer, **kwargs)
    sub["items"]["data"][0]["price"] = {"id": price}
    return sub


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    stub.customers["cus_cafe"] = {"id": "cus_cafe", "object": "customer", "email": "Owner@Cafe.gr"}
    stub.customers["cus_bar"] = {"id": "cus_bar", "object": "customer", "email": "bar@ammos.gr"}
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def provider(stub):
    return StripeBilling("sk_test_stub", WEBHOOK_SECRET, PRICE_ID, api_base=stub.url, max_network_retries=0)


@pytest.fixture
def stripe_client(settings, clock, database, mailer, stub, provider):
    from server.app import create_app

    app = create_app(
        stripe_settings(settings, stub.url, stripe_allowed_prices=(OLD_PRICE,)),
        clock=clock,
        db=database,
        mailer=mailer,
        billing=provider,
        start_worker=False,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _deliver(client, evt: dict):
    raw = json.dumps(evt).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign(raw)}
    return client.post("/v1/webhooks/stripe", content=raw, headers=headers)


def _mirrored(database) -> dict[str, str]:
    with database.transaction() as session:
        return {s.provider_subscription_id: s.status for s in session.scalars(select(Subscription))}


def test_a_dashboard_subscription_of_another_product_is_not_adopted(stripe_client, stub, database):
    stub.subscriptions["sub_qr"] = _priced("sub_qr", "cus_cafe", QR_MENU_PRICE)

    answer = _deliver(stripe_client, event("customer.subscription.created", stub.subscriptions["sub_qr"]))

    assert answer.status_code == 200  # handled: Stripe must not retry it forever
    assert _mirrored(database) == {}
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 0
        assert session.scalars(select(StripeEvent)).one().processed_at is not None


def test_subscriptions_of_our_price_and_of_allow_listed_prices_are_adopted(stripe_client, stub, database):
    stub.subscriptions["sub_new"] = _priced("sub_new", "cus_cafe", PRICE_ID)
    stub.subscriptions["sub_old"] = _priced("sub_old", "cus_bar", OLD_PRICE)

    for sub_id in ("sub_new", "sub_old"):
        answer = _deliver(stripe_client, event("customer.subscription.updated", stub.subscriptions[sub_id]))
        assert answer.status_code == 200, answer.text

    assert _mirrored(database) == {"sub_new": "active", "sub_old": "active"}


def test_reconcile_mirrors_every_allow_listed_subscription_with_a_report(
    settings, stub, provider, database, clock, seed_subscription
):
    stub.subscriptions["sub_a"] = _priced("sub_a", "cus_cafe", PRICE_ID)
    stub.subscriptions["sub_b"] = _priced("sub_b", "cus_bar", OLD_PRICE, status="past_due")
    stub.subscriptions["sub_qr"] = _priced("sub_qr", "cus_cafe", QR_MENU_PRICE)
    ctx = WebhookContext(clock, "http://testserver", None, frozenset({PRICE_ID, OLD_PRICE}))

    first = reconcile(database, provider, sorted(ctx.adoptable_prices or ()), ctx, clock)

    assert first.text()[-1] == "2 created, 0 updated, 0 unchanged, 0 failed"
    assert _mirrored(database) == {"sub_a": "active", "sub_b": "past_due"}
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0  # created: nobody e-mailed

    stub.subscriptions["sub_b"]["status"] = "active"  # the card was updated while no webhook arrived
    clock.advance(60)
    second = reconcile(database, provider, sorted(ctx.adoptable_prices or ()), ctx, clock)

    assert second.text()[-1] == "0 created, 1 updated, 1 unchanged, 0 failed"
    assert ("updated", "sub_b", "active x1") in second.lines
    assert _mirrored(database)["sub_b"] == "active"


def test_the_reconcile_command(server_env, stub, monkeypatch, capsys):
    from server.cli import main

    stub.subscriptions["sub_a"] = _priced("sub_a", "cus_cafe", PRICE_ID)
    for name, value in {**server_env, **stripe_env(stub.url), "STRIPE_ALLOWED_PRICE_IDS": OLD_PRICE}.items():
        monkeypatch.setenv(name, value)

    assert main(["stripe", "reconcile"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1 created, 0 updated, 0 unchanged, 0 failed"
    assert out[0].startswith("created   sub_a")
